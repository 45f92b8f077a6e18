"""Training data: annotated samples, validation stripes, kind balancing, and the augmented patch sampler."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .augment import jitter_intensity, mix_stains, random_blur, sampling_grid, warp
from .errors import TrainingError
from .targets import check_labels, make_targets
from .tiling import reflect_indices

if TYPE_CHECKING:
    from .train import TrainConfig

MIN_VAL_SIDE = 32
MAX_CENTRES = 1_000_000
VALIDATION_SUFFIX = "[validation]"  # a validation stripe's name: its sample's, with this after it


@dataclass
class Sample:
    """One annotated image.

    Attributes
    ----------
    image : numpy.ndarray
        Normalised ``(C, H, W)`` float32 image.
    labels : numpy.ndarray
        ``(H, W)`` instance labels.
    ignore : numpy.ndarray or None
        ``(H, W)`` boolean mask of pixels not reviewed (left out of the loss).
    weight : numpy.ndarray or None
        ``(H, W)`` extra loss weight (e.g. higher where the user corrected).
    name : str
        For messages and model cards.
    draw : float
        Relative chance of drawing training patches from this sample (on top of the
        square root of its annotated area), e.g. to show rare kinds of image more often.
    kind : str
        Kind of imaging (see :mod:`.modality`), for balancing and per-kind scores.
    """

    image: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray | None = None
    weight: np.ndarray | None = None
    name: str = ""
    draw: float = 1.0
    kind: str = ""

    def __post_init__(self) -> None:
        if self.image.ndim == 2:
            self.image = self.image[None]
        self.labels = check_labels(self.labels)
        if self.image.shape[-2:] != self.labels.shape:
            raise ValueError(
                f"{self.name or 'sample'}: labels shape {self.labels.shape} differs from "
                f"image shape {self.image.shape[-2:]}"
            )
        for what in ("ignore", "weight"):
            arr = getattr(self, what)
            if arr is not None and arr.shape != self.labels.shape:
                raise ValueError(f"{self.name or 'sample'}: {what} mask shape {arr.shape} != {self.labels.shape}")

    @property
    def n_annotated(self) -> int:
        """Number of pixels that count in the loss."""
        return int(self.labels.size if self.ignore is None else (~self.ignore).sum())


def split_validation(
    samples: Sequence[Sample], fraction: float = 0.15, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Hold out a stripe of every annotated sample for validation.

    The stripe (``fraction`` of the annotated extent along the longer side, at
    least 32 px, across the reviewed extent, placed where at least a quarter of its
    pixels are reviewed and an object lies; where some place cuts no object, the one of those
    holding the most whole objects, see :func:`clear_starts`) becomes a validation sample; in
    the training sample it is marked ignored, so no validation label is ever trained on. The
    stripe never takes the only example of an object's size: every object it holds for the most
    part has one of similar area (half to twice) left to train on (see :func:`_keeps_examples`),
    so a stripe may cut the edge of a one-of-a-kind object but not take most of it; where no
    place qualifies, the sample trains whole.

    Parameters
    ----------
    samples : sequence of Sample
        Annotated samples.
    fraction : float
        Share of each sample to hold out (0: no validation).
    seed : int
        Random seed for the stripe positions.

    Returns
    -------
    tuple of list
        ``(train, val)`` samples. ``val`` is empty when ``fraction`` is 0 or no
        sample is large enough to split.
    """
    if fraction <= 0:
        return list(samples), []
    rng = np.random.default_rng(seed)
    train, val = [], []
    for s in samples:
        valid = np.ones(s.labels.shape, bool) if s.ignore is None else ~s.ignore
        box = reviewed_box(s)
        if box is None:
            train.append(s)
            continue
        y0, y1, x0, x1 = box
        axis = 0 if (y1 - y0) >= (x1 - x0) else 1
        lo, hi = (y0, y1) if axis == 0 else (x0, x1)
        width = max(int(round(fraction * (hi - lo))), MIN_VAL_SIDE)
        if hi - lo < 2 * width:
            train.append(s)
            continue
        # a stripe across the reviewed extent, where at least a quarter of the pixels were reviewed and an
        # object lies: where some place cuts no object, the one of those holding the most whole objects, else
        # the first of a few random places
        order = rng.permutation(np.arange(lo, hi - width + 1))
        reviewed = np.where(valid, s.labels, 0)
        areas = np.bincount(reviewed.ravel())
        for a in [*clear_starts(reviewed, axis, order, width)[:64], *order[:64]]:
            sl = (slice(a, a + width), slice(x0, x1)) if axis == 0 else (slice(y0, y1), slice(a, a + width))
            v = valid[sl]
            if v.mean() >= 0.25 and (s.labels[sl][v] > 0).any() and _keeps_examples(s.labels, sl, v, areas):
                break
        else:
            train.append(s)  # nowhere to hold out: this sample trains, without validation from it
            continue
        held = np.zeros(s.labels.shape, bool)
        held[sl] = True
        ignore = held if s.ignore is None else (s.ignore | held)
        train.append(Sample(s.image, s.labels, ignore, s.weight, s.name, s.draw, s.kind))
        val.append(
            Sample(
                s.image[(slice(None), *sl)],
                s.labels[sl],
                None if s.ignore is None else s.ignore[sl],
                None,
                f"{s.name}{VALIDATION_SUFFIX}",
                kind=s.kind,  # a stripe is of its image's kind (per-kind scores, the kind a fine-tune starts from)
            )
        )
    return train, val


def clear_starts(labels: np.ndarray, axis: int, starts: np.ndarray, width: int) -> np.ndarray:
    """The stripe starts among ``starts`` whose stripe cuts no object and holds a whole one, most whole objects first.

    A stripe whose two edges run through background holds whole objects, as a new image does, and
    takes none from the training part. Ties keep the order of ``starts``. Counted with per-object
    extents along ``axis`` (one pass over the pixels), then in time linear in objects and places.

    Parameters
    ----------
    labels : numpy.ndarray
        The sample's instance labels (2D), 0 where not reviewed.
    axis : int
        The axis the stripe's position runs along.
    starts : numpy.ndarray
        Candidate first rows (``axis`` 0) or columns (``axis`` 1) of the stripe.
    width : int
        The stripe's width.

    Returns
    -------
    numpy.ndarray
        The starts that cut no object (empty where every place cuts one, as in packed cells).
    """
    lab = labels.T if axis == 1 else labels  # rows: the places along the stripe's axis
    if lab.max(initial=0) > 4 * lab.size + (1 << 16):  # ids far above their number (uint32 ids): renumbered
        ids, inverse = np.unique(lab, return_inverse=True)
        lab = inverse.reshape(lab.shape) + int(ids[0] != 0)
    first = np.full(int(lab.max(initial=0)) + 1, -1, np.int64)
    last = first.copy()
    for y, row in enumerate(lab):  # one pass over the rows: no array of every labelled pixel's coordinates
        here = row[row > 0]
        if here.size:
            first[here[first[here] < 0]] = y
            last[here] = y
    found = first >= 0
    found[0] = False
    first, last = first[found], last[found]
    if first.size == 0:
        return np.zeros(0, int)
    size = lab.shape[0] + 2 * width + 2

    def count(begin: np.ndarray, end: np.ndarray) -> np.ndarray:
        """How many of the intervals [begin, end] hold each place (shifted by ``width``)."""
        keep = begin <= end
        diff = np.zeros(size, np.int64)
        np.add.at(diff, begin[keep] + width, 1)
        np.add.at(diff, end[keep] + width + 1, -1)
        return np.cumsum(diff)

    cut = count(first + 1, last) + count(first + 1 - width, last - width)  # objects across either edge
    whole = count(last - width + 1, first)  # objects inside the stripe from first to last
    at = np.asarray(starts, np.int64) + width
    ok = (cut[at] == 0) & (whole[at] > 0)
    return np.asarray(starts)[ok][np.argsort(-whole[at][ok], kind="stable")]


def reviewed_box(sample: Sample) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` of the box around a sample's reviewed pixels (``None``: none reviewed)."""
    valid = np.ones(sample.labels.shape, bool) if sample.ignore is None else ~sample.ignore
    rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _keeps_examples(labels: np.ndarray, sl: tuple[slice, slice], valid: np.ndarray, areas: np.ndarray) -> bool:
    """Whether holding out ``labels[sl]`` leaves, for each object it mostly holds, one of similar size to train on.

    Parameters
    ----------
    labels : numpy.ndarray
        The sample's labels.
    sl : tuple of slice
        The stripe.
    valid : numpy.ndarray
        Reviewed pixels of the stripe.
    areas : numpy.ndarray
        Reviewed pixels of each object in the whole sample (``bincount`` by id).

    Returns
    -------
    bool
        ``False`` when an object mostly inside the stripe is the only one of its size (area
        within half to twice) in the sample, so validation would take away its only example.
    """
    inside = np.bincount(np.where(valid, labels[sl], 0).ravel(), minlength=areas.size)
    ids = np.flatnonzero(inside[1:] * 2 > areas[1 : inside.size]) + 1  # objects mostly in the stripe
    if ids.size == 0:
        return True
    held = np.zeros(areas.size, bool)
    held[ids] = True
    left = areas[1:][~held[1:] & (areas[1:] > 0)]
    for area in areas[ids]:
        if not np.any((left >= area / 2) & (left <= area * 2)):
            return False
    return True


def balance_kinds(samples: list[Sample], shares: dict[str, float]) -> dict[str, float]:
    """Set each sample's ``draw`` so rare kinds of image get about a given share of the patches.

    Each kind's natural share (the square root of its annotated area, as the sampler draws) is
    raised to the share asked for, then all shares are scaled to sum to 1 (so a raised share
    ends a little under the number asked when other kinds are raised too).

    Parameters
    ----------
    samples : list of Sample
        Training samples with their ``kind``.
    shares : dict
        Share of training patches wanted per kind, e.g. ``{"he": 0.2, "brightfield": 0.15}``;
        kinds not named keep their natural share.

    Returns
    -------
    dict
        The share of patches each kind now gets.
    """
    weight: dict[str, float] = {}
    for s in samples:
        weight[s.kind] = weight.get(s.kind, 0.0) + float(np.sqrt(s.n_annotated))
    total = sum(weight.values())
    target = {k: max(w / total, shares.get(k, 0.0)) for k, w in weight.items()}
    norm = sum(target.values())
    target = {k: v / norm for k, v in target.items()}
    for s in samples:
        s.draw = target[s.kind] / (weight[s.kind] / total)
    return target


class PatchSampler:
    """Draws augmented training batches from samples held on the training device.

    Parameters
    ----------
    samples : sequence of Sample
        Training samples.
    config : TrainConfig
        Patch size, augmentation, border weight map settings.
    device : torch.device
        Where patches are cut and augmented.
    """

    def __init__(self, samples: Sequence[Sample], config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.gen = torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.items = []
        areas, draws = [], []
        for s in samples:
            t = make_targets(s.labels, s.ignore, w0=config.w0, sigma=config.sigma)
            weight = t.weight if s.weight is None else t.weight * s.weight.astype(np.float32)
            valid = weight > 0
            n_valid = int(valid.sum())
            if n_valid == 0:
                continue
            fg = valid & (s.labels > 0)
            self.items.append(
                dict(
                    image=torch.from_numpy(np.ascontiguousarray(s.image, np.float32)).to(device),
                    cont=torch.from_numpy(np.stack([weight, t.distance])).to(device),
                    cls=torch.from_numpy(t.classes).to(device),
                    valid=None if s.ignore is None else self._subsample(np.flatnonzero(valid)),
                    fg=self._subsample(np.flatnonzero(fg)),
                    shape=s.labels.shape,
                )
            )
            areas.append(n_valid)
            draws.append(s.draw)
        if not self.items:
            raise TrainingError("no annotated pixels to train on: every pixel is ignored")
        p = np.sqrt(np.asarray(areas, np.float64)) * np.asarray(draws, np.float64)
        self.p = p / p.sum()
        aug = config.augment
        reach = config.patch_size / min(aug.zoom[0], 1.0) * (1.45 if aug.rotate else 1.0)
        self.src = int(math.ceil(reach + 4 * aug.elastic_sigma)) // 2 * 2 + 2

    def get_state(self) -> dict[str, Any]:
        """The random generators' state (for checkpoints)."""
        return {"torch": self.gen.get_state(), "numpy": json.dumps(self.rng.bit_generator.state)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore the random generators from :meth:`get_state`."""
        self.gen.set_state(state["torch"])
        self.rng.bit_generator.state = json.loads(state["numpy"])

    def _subsample(self, idx: np.ndarray) -> np.ndarray:
        if idx.size > MAX_CENTRES:
            idx = self.rng.choice(idx, MAX_CENTRES, replace=False)
        return idx.astype(np.int64)

    def _centre(self, item: dict) -> tuple[int, int]:
        h, w = item["shape"]
        pool_ = item["fg"] if item["fg"].size and self.rng.random() < self.config.fg_fraction else item["valid"]
        if pool_ is None:
            return int(self.rng.integers(h)), int(self.rng.integers(w))
        i = int(pool_[self.rng.integers(pool_.size)])
        return divmod(i, w)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``n`` augmented patches: image, classes, loss weight, distance target."""
        s, half = self.src, self.src // 2
        imgs, conts, clss = [], [], []
        for k in self.rng.choice(len(self.items), size=n, p=self.p):
            item = self.items[k]
            cy, cx = self._centre(item)
            h, w = item["shape"]
            y0, x0 = cy - half, cx - half
            if y0 >= 0 and x0 >= 0 and y0 + s <= h and x0 + s <= w:  # inside the image: a view (stack copies it)
                imgs.append(item["image"][:, y0 : y0 + s, x0 : x0 + s])
                conts.append(item["cont"][:, y0 : y0 + s, x0 : x0 + s])
                clss.append(item["cls"][y0 : y0 + s, x0 : x0 + s])
                continue
            iy = torch.from_numpy(reflect_indices(y0, y0 + s, h)).to(self.device)
            ix = torch.from_numpy(reflect_indices(x0, x0 + s, w)).to(self.device)
            imgs.append(item["image"].index_select(1, iy).index_select(2, ix))
            conts.append(item["cont"].index_select(1, iy).index_select(2, ix))
            clss.append(item["cls"].index_select(0, iy).index_select(1, ix))
        grid = sampling_grid(n, self.config.patch_size, s, self.config.augment, self.gen, self.device)
        x, cont, cls = warp(grid, torch.stack(imgs), torch.stack(conts), torch.stack(clss))
        x = random_blur(x, self.config.augment.blur, self.gen)
        x = mix_stains(x, self.config.augment.stain, self.gen)
        x = jitter_intensity(x, self.config.augment.intensity, self.gen)
        assert cont is not None and cls is not None
        return x, cls, cont[:, 0], cont[:, 1].clamp(0, 1)
