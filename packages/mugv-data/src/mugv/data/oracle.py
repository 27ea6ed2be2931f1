"""The oracle: parse a video of the synthetic world back into objects and score it against a spec.

Classical vision on numpy alone, built to survive what a generative model or a codec does to a
clip (blur, noise, colour shift, H.264 artefacts, 32x32 frames):

1. *Background and tint*: the per-frame median colour is the (grey) background; its deviation
   from grey is a global colour shift, removed from every pixel.
2. *Colour*: pixels with chroma well above the background's get the palette colour of nearest
   hue (hue survives blending with grey, so anti-aliased and blurred edges keep their colour).
3. *Components*: 4-connected pixels of one colour, labelled by min-label propagation with
   pointer jumping; tiny ones are noise.
4. *Coverage*: each pixel's chroma over its object's peak chroma estimates the fraction of it
   the object covers, so area and centroid are unbiased by blur (which only moves coverage).
5. *Tracks*: components linked frame to frame by colour and nearest centroid.
6. *Shape*: third and fourth cumulants of the coverage, which a Gaussian blur leaves
   unchanged: vertical skewness marks the upright triangle, the ratio of the fourth
   cumulants along the axes and along the diagonals tells square, circle and diamond apart.
   *Size*: the side the area implies for that shape. *Motion*: a line fitted to the centroids.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np

from mugv.data._errors import DataError
from mugv.data._schema import VideoClip
from mugv.data.world._spec import PALETTE, SIZE_FRACTIONS, ObjectSpec, SceneSpec

logger = logging.getLogger(__name__)

_AREA = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5}  # of side**2
_CENTROID_DROP = {"triangle": 1 / 6}  # centroid below the box centre, in sides
# log(axis / diagonal 4th cumulant): square log 2, diamond -log 2, circle and triangle 0;
# compression and low resolution pull every shape towards the circle, so the cuts sit near 0.
_DIAMOND_BELOW, _SQUARE_ABOVE = -0.1, 0.35
_TRIANGLE_SKEW = -0.2  # vertical skewness of an upright triangle is -0.57, others 0
SCORE_KEYS = ("colour", "shape", "size", "motion", "colour_shape", "all", "count")


class OracleError(DataError, ValueError):
    """The oracle was given something that is not a video (or image) of RGB frames."""


@dataclass
class DetectedObject:
    """One tracked object: attributes and its box ``(x, y, w, h)`` per frame (NaN when unseen)."""

    colour: str
    shape: str
    size: str
    motion: str
    boxes: np.ndarray  # (T, 4) float32
    displacement: tuple[float, float]  # centre travel over the clip, frame fractions (x, y)
    frames_seen: int

    @property
    def label(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True, kw_only=True)
class OracleConfig:
    """Thresholds, relative to the frame so that one setting serves 32x32 to 256x256."""

    min_chroma: float = 40.0  # above the background's, out of 255
    min_area: float = 0.25  # of the smallest object's area
    min_presence: float = 0.5  # fraction of frames a track must be seen in
    max_jump: float = 0.25  # of the shorter side, between consecutive sightings
    motion_threshold: float = 0.05  # of the frame, centre travel over the clip

    def __post_init__(self) -> None:
        for name in ("min_chroma", "min_area", "max_jump", "motion_threshold"):
            if not getattr(self, name) > 0:
                raise OracleError(
                    f"OracleConfig.{name} must be positive; got {getattr(self, name)}"
                )
        if not 0 < self.min_presence <= 1:
            raise OracleError(
                f"OracleConfig.min_presence must be in (0, 1]; got {self.min_presence}"
            )


def _hue(rgb: np.ndarray) -> np.ndarray:
    """HSV hue in degrees of float RGB ``(..., 3)``."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    c = np.maximum(mx - mn, 1e-6)
    h = np.where(mx == r, (g - b) / c, np.where(mx == g, 2.0 + (b - r) / c, 4.0 + (r - g) / c))
    return (h * 60.0) % 360.0


# RGB -> (Y, U, V) with chroma down-weighted: luma keeps full resolution through yuv420p.
_YUV_WEIGHTED = np.array(
    [[0.299, 0.587, 0.114], [-0.0845, -0.1655, 0.25], [0.25, -0.2095, -0.0405]], np.float32
)
_COLOUR_NAMES = tuple(PALETTE)
_PALETTE_HUES = _hue(np.array([PALETTE[c] for c in _COLOUR_NAMES], np.float32))  # (K,)


def _smooth(x: np.ndarray) -> np.ndarray:
    """[1, 2, 1] / 4 along height and width of ``(T, H, W, C)``, edges replicated."""
    p = np.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0)), mode="edge")
    x = 0.25 * (p[:, :-2] + p[:, 2:]) + 0.5 * p[:, 1:-1]
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)), mode="edge")
    return 0.25 * (p[:, :, :-2] + p[:, :, 2:]) + 0.5 * p[:, :, 1:-1]


def _components(classes: np.ndarray) -> np.ndarray:
    """Labels of 4-connected same-class pixels per frame; -1 for background.

    ``classes`` is int (T, H, W) with -1 for background. Works on the foreground pixels only:
    each edge between equal neighbours hooks the larger root under the smaller, then pointer
    jumping flattens the trees, until no edge joins two trees. A label is the flat index of
    one pixel of its component.
    """
    W = classes.shape[2]
    fg = classes >= 0
    pixels = np.flatnonzero(fg)  # (N,)
    position = np.full(classes.size, -1, np.int64)
    position[pixels] = np.arange(len(pixels))
    same_x = np.zeros_like(fg)
    same_x[:, :, :-1] = fg[:, :, 1:] & (classes[:, :, 1:] == classes[:, :, :-1])
    same_y = np.zeros_like(fg)
    same_y[:, :-1, :] = fg[:, 1:, :] & (classes[:, 1:, :] == classes[:, :-1, :])
    left, top = np.flatnonzero(same_x), np.flatnonzero(same_y)
    a = position[np.concatenate([left, top])]  # (E,) edge ends, as positions in `pixels`
    b = position[np.concatenate([left + 1, top + W])]
    root = np.arange(len(pixels))
    while True:
        ra, rb = root[a], root[b]
        joined = ra != rb
        if not joined.any():
            break
        ra, rb = ra[joined], rb[joined]
        np.minimum.at(root, np.maximum(ra, rb), np.minimum(ra, rb))  # hook
        while True:  # pointer jumping
            up = root[root]
            if np.array_equal(up, root):
                break
            root = up
    labels = np.full(classes.shape, -1, np.int64)
    labels.reshape(-1)[pixels] = pixels[root]
    return labels


@dataclass
class _Blob:
    frame: int
    colour: int
    mass: float  # coverage-weighted pixel count
    cx: float
    cy: float
    kurtosis_ratio: float  # log(axis / diagonal 4th cumulant), NaN when undefined
    skew: float  # vertical skewness


class Oracle:
    """Parses frames into `DetectedObject`s and scores them against a `SceneSpec`."""

    def __init__(self, config: OracleConfig | None = None) -> None:
        self.config = config or OracleConfig()

    def parse(self, frames: np.ndarray | VideoClip) -> list[DetectedObject]:
        """Objects in uint8 ``(T, H, W, 3)`` frames (or one ``(H, W, 3)`` image), longest-seen first."""
        frames = self._check(frames)
        T, H, W, _ = frames.shape
        short = min(H, W)
        x = _smooth(frames.astype(np.float32))  # (T, H, W, 3)
        step = max(1, short // 64)  # the median of a pixel subsample is as good and faster
        background = np.median(x[:, ::step, ::step].reshape(T, -1, 3), axis=1)  # (T, 3)
        tint = background - background.mean(-1, keepdims=True)
        x = x - tint[:, None, None, :]
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)  # (T, H, W)
        base = np.median(chroma[:, ::step, ::step].reshape(T, -1), axis=1)[:, None, None]
        fg = chroma > base + self.config.min_chroma
        d = np.abs(_hue(x[fg])[:, None] - _PALETTE_HUES)  # (N, K)
        classes = np.full(fg.shape, -1, np.int64)  # (T, H, W)
        classes[fg] = np.minimum(d, 360 - d).argmin(-1)
        labels = _components(classes)
        # coverage from the unsmoothed pixels: extra blur only spreads small shapes further
        raw = frames.astype(np.float32) - tint[:, None, None, :]
        alpha, labels = self._coverage(raw, background - tint, chroma - base, labels)
        blobs = self._blobs(alpha, labels, classes, 0.5 * _AREA["triangle"] * (0.2 * short) ** 2)
        tracks = self._track(blobs, short, T)
        objects = [self._describe(track, (T, H, W)) for track in tracks]
        objects.sort(key=lambda o: -o.frames_seen)
        logger.debug("oracle: %d components, %d tracks", len(blobs), len(objects))
        return objects

    def score(self, frames: np.ndarray | VideoClip, spec: SceneSpec) -> dict[str, float]:
        """Per-attribute accuracy over the spec's objects, each matched to a detection.

        Spec objects and detections are paired one-to-one to agree on the most attributes
        (an unmatched spec object counts as wrong); "count" is 1.0 when the numbers agree.
        """
        if not isinstance(spec, SceneSpec):
            raise OracleError(f"Oracle.score needs a SceneSpec; got {type(spec).__name__}")
        detected = self.parse(frames)[:8]
        wanted = spec.objects
        slots: list[int | None] = list(range(len(detected))) + [None] * len(wanted)
        best, best_hits = None, -1
        for choice in set(itertools.permutations(slots, len(wanted))):
            hits = sum(self._agree(o, detected[k]) for o, k in zip(wanted, choice) if k is not None)
            if hits > best_hits:
                best, best_hits = choice, hits
        rows = []
        for o, k in zip(wanted, best):
            d = detected[k] if k is not None else None
            rows.append(
                {
                    a: d is not None and getattr(d, a) == getattr(o, a)
                    for a in ("colour", "shape", "size", "motion")
                }
            )
        out = {
            a: float(np.mean([r[a] for r in rows])) for a in ("colour", "shape", "size", "motion")
        }
        out["colour_shape"] = float(np.mean([r["colour"] and r["shape"] for r in rows]))
        out["all"] = float(np.mean([all(r.values()) for r in rows]))
        out["count"] = float(len(detected) == len(wanted))
        return out

    @staticmethod
    def _agree(o: ObjectSpec, d: DetectedObject) -> int:
        return sum(getattr(o, a) == getattr(d, a) for a in ("colour", "shape", "size", "motion"))

    def _check(self, frames: np.ndarray | VideoClip) -> np.ndarray:
        if isinstance(frames, VideoClip):
            frames = frames.frames
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = frames[None]
        if (
            not isinstance(frames, np.ndarray)
            or frames.dtype != np.uint8
            or frames.ndim != 4
            or frames.shape[-1] != 3
            or 0 in frames.shape
        ):
            got = f"{type(frames).__name__} {getattr(frames, 'dtype', '')} {getattr(frames, 'shape', '')}"
            raise OracleError(
                f"Oracle needs uint8 frames of shape (T, H, W, 3) or an (H, W, 3) image; got {got}"
                " (convert floats with (x * 255).round().astype(np.uint8))"
            )
        if min(frames.shape[1:3]) < 8:
            raise OracleError(
                f"Oracle needs frames of at least 8x8 pixels; got {frames.shape[1:3]}"
            )
        return frames

    @staticmethod
    def _coverage(
        x: np.ndarray, background: np.ndarray, chroma: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel coverage of its component, with labels grown 2 px to take in faint edges.

        Pixels are modelled as ``background + coverage * (colour - background)`` (how the world
        and most renderers anti-alias), with ``colour`` the mean of the component's most
        saturated pixels; the projection weighs luma over chroma, which H.264 keeps at full
        resolution. Returns float32 coverage (T, H, W) and the grown labels.
        """
        size = labels.size
        grown = np.where(labels >= 0, labels, size)
        for _ in range(2):
            g = grown.copy()
            for axis in (1, 2):
                for shift in (1, -1):
                    n = np.roll(grown, shift, axis=axis)
                    edge = [slice(None)] * 3
                    edge[axis] = 0 if shift == 1 else -1
                    n[tuple(edge)] = size
                    g = np.where(g == size, n, g)
            grown = g
        grown = np.where(grown < size, grown, -1)
        g = grown.reshape(-1)
        pixels = np.flatnonzero(g >= 0)  # (M,) every pixel of a grown component
        ids, component = np.unique(g[pixels], return_inverse=True)  # (C,), (M,)
        c = chroma.reshape(-1)[pixels]
        inside = labels.reshape(-1)[pixels] >= 0
        peak = np.zeros(len(ids), np.float32)
        np.maximum.at(peak, component[inside], c[inside])
        core = inside & (c >= 0.75 * peak[component])
        frame = pixels // (size // len(background))  # pixel -> its frame index
        d = (x.reshape(-1, 3)[pixels] - background[frame]) @ _YUV_WEIGHTED.T  # (M, 3)
        count = np.maximum(np.bincount(component[core], minlength=len(ids)), 1)
        colour = (
            np.stack(
                [np.bincount(component[core], d[core, k], minlength=len(ids)) for k in range(3)], -1
            )
            / count[:, None]
        )  # (C, 3): mean object colour minus background
        e = colour[component]
        alpha = np.zeros(size, np.float32)
        alpha[pixels] = np.clip((d * e).sum(-1) / np.maximum((e * e).sum(-1), 1e-3), -0.5, 1.5)
        return alpha.reshape(labels.shape), grown

    def _blobs(self, alpha, labels, classes, smallest_area: float) -> list[_Blob]:
        """Area, centroid and shape cumulants of each component, from coverage.

        Cumulants of order 3 and 4 are unchanged by any Gaussian blur (cumulants of a
        convolution add, and a Gaussian has none past order 2), which is what makes them a
        shape signature that survives blurry or compressed video.
        """
        H, W = labels.shape[1:]
        flat = labels.reshape(-1)
        keep = np.nonzero(flat >= 0)[0]
        ids, inverse = np.unique(flat[keep], return_inverse=True)
        w = alpha.reshape(-1)[keep].astype(np.float64)
        yy, xx = np.divmod(keep % (H * W), W)

        def total(v: np.ndarray) -> np.ndarray:
            return np.bincount(inverse, w * v, minlength=len(ids))

        mass = np.maximum(total(np.ones_like(w)), 1e-6)
        cx, cy = total(xx + 0.5) / mass, total(yy + 0.5) / mass
        dx, dy = xx + 0.5 - cx[inverse], yy + 0.5 - cy[inverse]
        u, v = (dx + dy) / math.sqrt(2), (dx - dy) / math.sqrt(2)

        def k4(d: np.ndarray) -> np.ndarray:
            return total(d**4) / mass - 3 * (total(d**2) / mass) ** 2

        axis, diagonal = k4(dx) + k4(dy), k4(u) + k4(v)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where((axis < 0) & (diagonal < 0), np.log(axis / diagonal), np.nan)
            skew = total(dy**3) / mass / (total(dy**2) / mass) ** 1.5
        colour = classes.reshape(-1)[ids]
        return [
            _Blob(int(lab) // (H * W), int(colour[k]), mass[k], cx[k], cy[k], ratio[k], skew[k])
            for k, lab in enumerate(ids)
            if mass[k] >= self.config.min_area * smallest_area
        ]

    def _track(self, blobs: list[_Blob], short: int, num_frames: int) -> list[list[_Blob]]:
        """Greedy frame-to-frame linking by colour and nearest centroid."""
        tracks: list[list[_Blob]] = []
        for t in sorted({b.frame for b in blobs}):
            used: set[int] = set()
            for b in sorted((b for b in blobs if b.frame == t), key=lambda b: -b.mass):
                best, best_d = None, math.inf
                for k, track in enumerate(tracks):
                    last = track[-1]
                    if k in used or last.colour != b.colour or last.frame >= t:
                        continue
                    d = math.hypot(b.cx - last.cx, b.cy - last.cy)
                    if d <= self.config.max_jump * short * (t - last.frame) and d < best_d:
                        best, best_d = k, d
                if best is None:
                    tracks.append([b])
                    used.add(len(tracks) - 1)
                else:
                    tracks[best].append(b)
                    used.add(best)
        return [tr for tr in tracks if len(tr) >= self.config.min_presence * num_frames]

    def _describe(self, track: list[_Blob], shape_thw: tuple[int, int, int]) -> DetectedObject:
        T, H, W = shape_thw
        short = min(H, W)
        ratio = (
            np.nanmedian([b.kurtosis_ratio for b in track])
            if any(np.isfinite(b.kurtosis_ratio) for b in track)
            else 0.0
        )
        if np.nanmedian([b.skew for b in track]) < _TRIANGLE_SKEW:
            shape = "triangle"
        elif ratio < _DIAMOND_BELOW:
            shape = "diamond"
        elif ratio > _SQUARE_ABOVE:
            shape = "square"
        else:
            shape = "circle"
        mass = float(np.median([b.mass for b in track]))
        side = math.sqrt(mass / _AREA[shape])
        small_large = math.sqrt(SIZE_FRACTIONS["small"] * SIZE_FRACTIONS["large"])
        size = "small" if side / short < small_large else "large"
        drop = _CENTROID_DROP.get(shape, 0.0) * side
        boxes = np.full((T, 4), np.nan, np.float32)
        for b in track:
            boxes[b.frame] = (b.cx - side / 2, b.cy - drop - side / 2, side, side)
        dx = dy = 0.0
        if len(track) >= 2:
            t = np.array([b.frame for b in track], np.float64)
            vx = np.polyfit(t, [b.cx for b in track], 1)[0]
            vy = np.polyfit(t, [b.cy for b in track], 1)[0]
            dx, dy = vx * (T - 1) / W, vy * (T - 1) / H
        if max(abs(dx), abs(dy)) < self.config.motion_threshold:
            motion = "static"
        elif abs(dx) >= abs(dy):
            motion = "right" if dx > 0 else "left"
        else:
            motion = "down" if dy > 0 else "up"
        return DetectedObject(
            colour=_COLOUR_NAMES[track[0].colour],
            shape=shape,
            size=size,
            motion=motion,
            boxes=boxes,
            displacement=(float(dx), float(dy)),
            frames_seen=len(track),
        )
