"""Visual Genome ``scene_graphs.json`` and SGAE-style per-image ``.npy`` scene-graph dicts."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mugv.data._errors import FormatError, SchemaError
from mugv.data._schema import Relation, SceneGraph, SceneObject
from mugv.data.formats._common import Records


@dataclass
class SceneGraphRecord:
    """The scene graph of one image (`key`: the image id or file stem)."""

    key: str
    scene_graph: SceneGraph


def load_visual_genome(path: str | os.PathLike[str]) -> list[SceneGraphRecord]:
    """``[{"image_id", "objects": [{"object_id", "x", "y", "w", "h", "names", "attributes"?}],
    "relationships": [{"relationship_id", "predicate", "subject_id", "object_id"}]}]``.

    An object's name is the first of its ``names``; its box is ``(x, y, w, h)``.
    """
    r = Records(path)
    records = []
    for i, image in enumerate(r.items(r.load_json(), "top level")):
        where = f"[{i}]"
        key = r.key(image, "image_id", where)
        objects = []
        for j, obj in enumerate(r.get(image, "objects", list, where)):
            at = f"{where}.objects[{j}]"
            names = r.get(obj, "names", list, at)
            if not names or not all(isinstance(n, str) for n in names):
                raise r.fail(f"{at}.names", f"expected a non-empty list of strings, got {names!r}")
            attributes = r.get(obj, "attributes", list, at, default=[])
            if not all(isinstance(a, str) for a in attributes):
                raise r.fail(f"{at}.attributes", f"expected strings, got {attributes!r}")
            box = tuple(float(r.get(obj, c, (int, float), at)) for c in ("x", "y", "w", "h"))
            objects.append(
                SceneObject(
                    object_id=r.get(obj, "object_id", int, at),
                    name=names[0].strip(),
                    attributes=[a.strip() for a in attributes],
                    box=box,
                )
            )
        ids = {o.object_id for o in objects}
        relations = []
        for j, rel in enumerate(r.get(image, "relationships", list, where)):
            at = f"{where}.relationships[{j}]"
            r.get(rel, "relationship_id", int, at)
            subject, obj = (r.get(rel, f, int, at) for f in ("subject_id", "object_id"))
            for name, value in (("subject_id", subject), ("object_id", obj)):
                if value not in ids:
                    raise r.fail(
                        f"{at}.{name}", f"object {value} is not among image {key}'s objects"
                    )
            relations.append(Relation(subject, r.get(rel, "predicate", str, at).strip(), obj))
        try:
            graph = SceneGraph(objects=objects, relations=relations)
        except SchemaError as exc:
            raise r.fail(f"{where}.objects", str(exc)) from exc
        records.append(SceneGraphRecord(key=key, scene_graph=graph))
    return records


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays, dtypes and scalars: a scene-graph file cannot run code."""

    _CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
    _ALLOWED = frozenset(
        {
            (f"{_CORE}.multiarray", "_reconstruct"),
            (f"{_CORE}.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        # Files name numpy's core module as the numpy that wrote them did.
        module = module.replace("numpy._core", "numpy.core").replace("numpy.core", self._CORE)
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _load_npy_dict(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise FormatError(f"{path}: unsupported .npy format version {version}")
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(f)
            if not dtype.hasobject or shape != ():
                raise FormatError(
                    f"{path}: expected a saved dict (0-d object array), got {dtype} {shape}"
                )
            value = _ArrayUnpickler(f, encoding="latin1").load().item()
    except FileNotFoundError as exc:
        raise FormatError(f"{path}: no such file") from exc
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError) as exc:
        raise FormatError(f"{path}: not a .npy scene-graph dict: {exc}") from exc
    if not isinstance(value, dict):
        raise FormatError(f"{path}: expected a dict, got {type(value).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in value.items()}


def _int_matrix(value: Any, path: Path, name: str) -> np.ndarray:
    array = np.asarray(value)
    if array.size == 0:
        return np.zeros((0, 3 if name == "rela_matrix" else 2), np.int64)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise FormatError(
            f"{path}: field {name!r}: expected a 2-d numeric array, got {array.dtype} {array.shape}"
        )
    if not np.array_equal(array, np.round(array)):
        raise FormatError(f"{path}: field {name!r}: holds non-integer labels")
    return array.astype(np.int64)


def load_sgae(
    path: str | os.PathLike[str], vocab: Mapping[int, str] | Sequence[str] | None = None
) -> SceneGraphRecord:
    """One SGAE-style ``.npy`` dict: ``rela_matrix`` rows ``(subject box, object box, label)``,
    ``obj_attr`` rows ``(box, object label, attribute labels...)`` with -1 for empty slots.

    Labels become words through `vocab` (SGAE's ``ix_to_word``); without it, the label
    number as text. Object ids are box indices; the key is the file's stem.
    """
    path = Path(path)
    data = _load_npy_dict(path)
    for name in ("rela_matrix", "obj_attr"):
        if name not in data:
            raise FormatError(f"{path}: missing field {name!r} (has {sorted(data)})")
    rela = _int_matrix(data["rela_matrix"], path, "rela_matrix")
    obj_attr = _int_matrix(data["obj_attr"], path, "obj_attr")
    if rela.shape[1] != 3 or obj_attr.shape[1] < 2:
        raise FormatError(
            f"{path}: rela_matrix must be N x 3 and obj_attr N x K (K >= 2); got "
            f"{rela.shape} and {obj_attr.shape}"
        )

    def word(label: int, field: str, row: int) -> str:
        if vocab is None:
            return str(label)
        try:
            return vocab[label]
        except (KeyError, IndexError) as exc:
            raise FormatError(
                f"{path}: {field}[{row}]: label {label} is not in the vocabulary"
            ) from exc

    objects = []
    for row, (box, label, *attributes) in enumerate(obj_attr.tolist()):
        if label < 0:
            raise FormatError(f"{path}: obj_attr[{row}]: box {box} has no object label")
        objects.append(
            SceneObject(
                object_id=box,
                name=word(label, "obj_attr", row),
                attributes=[word(a, "obj_attr", row) for a in attributes if a >= 0],
            )
        )
    ids = {o.object_id for o in objects}
    relations = []
    for row, (subject, obj, label) in enumerate(rela.tolist()):
        for role, box in (("subject", subject), ("object", obj)):
            if box not in ids:
                raise FormatError(
                    f"{path}: rela_matrix[{row}]: {role} box {box} is not in obj_attr"
                )
        relations.append(Relation(subject, word(label, "rela_matrix", row), obj))
    try:
        graph = SceneGraph(objects=objects, relations=relations)
    except SchemaError as exc:
        raise FormatError(f"{path}: obj_attr: {exc}") from exc
    return SceneGraphRecord(key=path.stem, scene_graph=graph)
