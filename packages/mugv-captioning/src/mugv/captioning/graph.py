"""Scene graphs -> padded node tensors and the TSG edge mask (TSG section 3.1).

A graph becomes the node sequence ``[objects | attributes | relations]``: one node per object,
one per (object, attribute) pair and one per relation. Each of the three blocks is padded to
the longest in the batch (at least one slot), so splitting the encoded sequence back into the
three memories is a slice. The edges are an attention mask (True = may attend): objects attend
to all objects, an attribute and its object attend to each other, a relation attends to its
subject and its object and they to it, and every node (padding included) attends to itself.

Malformed graphs: a relation naming an unknown object id raises :class:`GraphError`; labels
missing from the label vocabulary map to ``<unk>``; a graph without objects becomes a single
``<unk>`` object node (with a zero region feature), so an empty detection still gets a caption.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mugv.captioning._errors import GraphError
from mugv.captioning.vocab import UNK, Vocabulary
from mugv.data import SceneGraph, SceneObject

logger = logging.getLogger(__name__)

OBJECT, ATTRIBUTE, RELATION = 0, 1, 2


def graph_tokens(graph: SceneGraph) -> list[list[str]]:
    """Every label of a graph (object names, attributes, predicates), for building vocabularies."""
    labels = [o.name for o in graph.objects] + [a for o in graph.objects for a in o.attributes]
    return [labels + [r.predicate for r in graph.relations]]


@dataclass
class GraphBatch:
    """A batch of flattened scene graphs; ``O, A, R`` are the padded block sizes, ``N = O+A+R``."""

    object_labels: torch.Tensor  # (B, O) long
    object_features: torch.Tensor | None  # (B, O, F) float, when objects come from regions
    attribute_labels: torch.Tensor  # (B, A) long
    relation_labels: torch.Tensor  # (B, R) long
    object_mask: torch.Tensor  # (B, O) bool, True = a real node
    attribute_mask: torch.Tensor  # (B, A) bool
    relation_mask: torch.Tensor  # (B, R) bool
    edges: torch.Tensor  # (B, N, N) bool, True = row node attends to column node

    @property
    def batch_size(self) -> int:
        return self.object_labels.shape[0]

    def to(self, device: torch.device | str) -> GraphBatch:
        return GraphBatch(**{k: None if v is None else v.to(device) for k, v in vars(self).items()})

    def index_select(self, index: torch.Tensor) -> GraphBatch:
        """Rows ``index`` of every tensor (used to repeat graphs for beams or samples)."""
        return GraphBatch(**{k: None if v is None else v[index] for k, v in vars(self).items()})


def _flatten(graph: SceneGraph, labels: Vocabulary, feature_dim: int | None, name: str):
    objects: list[SceneObject] = list(graph.objects)
    if not objects:
        logger.warning("%s has no objects: encoded as one %s object node", name, UNK)
        objects = [SceneObject(object_id=-1, name=UNK)]
    index = {}
    for i, o in enumerate(objects):
        if o.object_id in index:
            raise GraphError(f"{name}: object id {o.object_id} appears twice; ids must be unique")
        index[o.object_id] = i
    features = None
    if feature_dim is not None:
        features = np.zeros((len(objects), feature_dim), np.float32)
        for i, o in enumerate(objects):
            if o.object_id == -1 and not graph.objects:
                continue
            f = None if o.feature is None else np.asarray(o.feature, np.float32).reshape(-1)
            if f is None or f.shape[0] != feature_dim:
                got = "no feature" if f is None else f"a feature of size {f.shape[0]}"
                raise GraphError(
                    f"{name}: object {o.object_id} ({o.name!r}) has {got}; the model takes "
                    f"region features of size {feature_dim} (or set object_input='label')"
                )
            features[i] = f
    attributes = [(i, a) for i, o in enumerate(objects) for a in o.attributes]
    relations = []
    for r in graph.relations:
        for role in ("subject", "object"):
            if getattr(r, role) not in index:
                raise GraphError(
                    f"{name}: relation {r.subject}-{r.predicate!r}-{r.object} names {role} id "
                    f"{getattr(r, role)}, not among the object ids {sorted(index)}; drop the "
                    "relation or add the object"
                )
        relations.append((index[r.subject], index[r.object], r.predicate))
    return objects, features, attributes, relations


def collate_graphs(
    graphs: Sequence[SceneGraph], labels: Vocabulary, *, feature_dim: int | None = None
) -> GraphBatch:
    """Pads and stacks ``graphs``; ``feature_dim`` set means objects carry region features."""
    if not graphs:
        raise GraphError("collate_graphs got no graphs; pass at least one SceneGraph")
    flat = [_flatten(g, labels, feature_dim, f"scene graph {i}") for i, g in enumerate(graphs)]
    B = len(flat)
    O = max(len(f[0]) for f in flat)  # noqa: E741
    A = max(1, max(len(f[2]) for f in flat))
    R = max(1, max(len(f[3]) for f in flat))
    N = O + A + R
    obj_lab = torch.zeros(B, O, dtype=torch.long)
    att_lab = torch.zeros(B, A, dtype=torch.long)
    rel_lab = torch.zeros(B, R, dtype=torch.long)
    obj_mask = torch.zeros(B, O, dtype=torch.bool)
    att_mask = torch.zeros(B, A, dtype=torch.bool)
    rel_mask = torch.zeros(B, R, dtype=torch.bool)
    feats = None if feature_dim is None else torch.zeros(B, O, feature_dim)
    edges = torch.eye(N, dtype=torch.bool).repeat(B, 1, 1)  # (B, N, N)
    for b, (objects, features, attributes, relations) in enumerate(flat):
        n = len(objects)
        obj_lab[b, :n] = torch.tensor([labels.id(o.name) for o in objects])
        obj_mask[b, :n] = True
        edges[b, :n, :n] = True
        if feats is not None:
            feats[b, :n] = torch.from_numpy(features)
        for j, (i, attr) in enumerate(attributes):
            att_lab[b, j], att_mask[b, j] = labels.id(attr), True
            edges[b, O + j, i] = edges[b, i, O + j] = True
        for r, (s, o, pred) in enumerate(relations):
            rel_lab[b, r], rel_mask[b, r] = labels.id(pred), True
            for end in (s, o):
                edges[b, O + A + r, end] = edges[b, end, O + A + r] = True
    return GraphBatch(obj_lab, feats, att_lab, rel_lab, obj_mask, att_mask, rel_mask, edges)
