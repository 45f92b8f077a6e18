"""Fine-tuning the shipped model on new kinds of image and on cells larger than its nuclei, measured.

The one fine-tuning benchmark: new kinds of image and new *sizes*, on the path a user takes.
Sets made from the shared data:

* **dsb-x6**: DSB2018 fluorescence images of one common kind, wide fields of small nuclei
  (median diameter 9-14 px, up to 520 px wide), upscaled 6 times (nuclei of 54-84 px instead of
  the model's 20, as cells 3-4 times larger than nuclei are): fine-tuning pool from the
  validation split, held-out images from the test split. One size band, as cells of one
  experiment are: a model fine-tuned on one image of small nuclei and scored on images of all
  sizes learns one default diameter that fits few of them (measured once on DSB fluorescence
  x3 of all sizes: k = 1, 5 min, held-out AP@0.5 0.541 -> 0.467).
* **isbi-x2**: ISBI 2012 EM slices upscaled 2 times (cells of about 56 px: a new kind and a new
  size): pool from slices 0-19, held out the last 10 (cells: 4-connected components of the interior
  mask, those under 30 px dropped; ``_common.isbi_instances``).
* **phc-x6** (not run by default): the dsb-x6 images' nuclei rendered as positive phase contrast
  (:func:`phase_contrast`: each object a dome of optical path length, the image that minus its blur,
  after Yin et al. 2012's imaging model: dark bodies, bright halos, a mid-grey field), a stand-in
  for phase-contrast cells of 54-84 px. Such frames lie between fluorescence and brightfield for
  the imaging detection; ``--no-settle`` reads each by the detection's line, as the plugin did
  before ``kind_in_doubt``.
* **dic-x6** (not run by default): the same nuclei rendered as DIC (:func:`dic_contrast`: the
  slope of the path length along a diagonal shear); sparse fields of such relief lie on either side
  of the detection's line.
* **phc-isbi** and **dic-isbi** (not run by default): the isbi-x2 cells rendered the same two ways:
  packed cells touching across thin gaps, of all sizes (median about 58 px).
* **phc-frames** and **dic-frames** (not run by default): camera frames of a few large cells, the
  regime of the Cell Tracking Challenge's phase-contrast and DIC sets: each phc-x6 image cut to the
  520 x 696 px window with the most nuclei (2-26 of 46-116 px), each ISBI slice upscaled 4 times
  and cut to the 512 x 512 px window with the most cells (18-26 of 71-96 px), rendered as DIC.
  Shrunk to the model's object size, a frame is a small image (about 110-200 px), with few objects
  to learn from and a validation stripe of a handful of them.
* **isbi** and **dsb-colour** (not run by default): new kinds of image: the ISBI slices as they are
  (cells of about 28 px), and the DSB2018 colour (H&E-like) images, the shipped model's weakest kind
  (pool: validation-split colour images first, then training-split ones; held out: the test-split
  colour images).

Each run takes the path of ``napari-unet-loop train --from default`` then ``evaluate``, with
the same core functions: k annotated images read as the model reads them, rescaled to the
model's object diameter (measured on the labels: ``core.finetune.to_network_scale``), a 15 %
validation stripe of each (keep-best), the shared fine-tune preset for ``--minutes``,
thresholds re-tuned on the stripes and kept when the gain beats the noise (``core.retune.retune``),
the child's object sizes recorded; then the held-out
images are segmented as ``segment`` does (``core.segment.segment``: rescaled by the child's
default diameter) and scored (AP@0.5, SEG, pooled). ``--no-rescale`` rows repeat the run as the
plugin did before object sizes (images at their own scale): "today's" baseline.

``--steps`` replaces the time budget by a step budget; ``--seeds`` repeats every row with other
pools and training seeds and prints each row's mean and spread.

The held-out images above are test images: scores to report. To choose a rule (a threshold bar, a
stripe placement) without looking at them, ``--heldout-from choice`` holds out more of the seed's
choice images instead (the next ``--heldout`` after the pool's first max(k, 5); phc-frames and
dsb-x6 have 6 such): the decision sets of docs/model.md from stop 54 on (2026-12-06) were drawn this way.

Run ``python benchmarks/bench_cells.py --help``; the default (k = 1, 2, 5 and the baseline at
k = 2, 5 minutes each, both sets) takes about 45 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import (
    DATA_CANDIDATES,
    SPLITS,
    add_layers_args,
    cpu_name,
    finetune,
    imread,
    isbi_instances,
    layers_from,
    read_list,
    score,
    write_json,
)
from napari_unet_loop.core.device import DEVICE_CHOICES, resolve_device
from napari_unet_loop.core.modality import GREY_KINDS, detect, input_modality
from napari_unet_loop.core.model_files import Model, load
from napari_unet_loop.core.retune import tuning_noise
from napari_unet_loop.core.scale import median_diameter

SETS = ("dsb-x6", "isbi-x2")  # the default
RENDERED_SETS = ("phc-x6", "dic-x6", "phc-isbi", "dic-isbi", "phc-frames", "dic-frames")  # see RENDERED
ALL_SETS = (*SETS, *RENDERED_SETS, "isbi", "isbi-x4", "dsb-colour")
BAND = (9.0, 14.0)  # dsb-x6: median nucleus diameter of the images, pixels
HELDOUT_FROM = ("test", "choice")  # --heldout-from
CHOICE_POOL = 5  # --heldout-from choice: the seed's first choice images kept for the pool (at least)


def upscale(a: np.ndarray, n: int) -> np.ndarray:
    """Each pixel becomes n x n (labels stay labels; images get blocky edges like a zoomed camera)."""
    return np.repeat(np.repeat(a, n, axis=0), n, axis=1)


def path_length(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Optical path length of instance labels: each object a dome (square root of the distance to its
    edge), of a random height of 0.7-1.3."""
    from scipy import ndimage as ndi

    path = np.zeros(labels.shape, np.float32)
    for i, box in enumerate(ndi.find_objects(labels), 1):
        if box is None:
            continue
        inside = labels[box] == i
        d = ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        path[box][inside] = (np.sqrt(d / max(d.max(), 1.0)) * rng.uniform(0.7, 1.3))[inside]
    return path


def phase_contrast(labels: np.ndarray, seed: int) -> np.ndarray:
    """Instance labels rendered as a positive phase-contrast image (``uint8``).

    A mid-grey field minus the optical path length (:func:`path_length`) less its blur over a
    third of the median object diameter (Yin et al. 2012, ``g = C - (delta - airy) * f``, with a
    Gaussian for the airy pattern): bodies darker than the field, bright halos around them, plus
    camera noise.
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    path = path_length(labels, rng)
    sigma = (median_diameter([labels]) or 20.0) / 3
    image = 110.0 - 80.0 * (path - ndi.gaussian_filter(path, sigma)) + rng.normal(0.0, 3.0, labels.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def dic_contrast(labels: np.ndarray, seed: int) -> np.ndarray:
    """Instance labels rendered as a DIC image (``uint8``): a mid-grey field plus the slope of the
    (slightly blurred) optical path length along the diagonal shear, the relief of differential
    interference contrast (one side of each object bright, the other dark), plus camera noise."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    p = ndi.gaussian_filter(path_length(labels, rng), 1.5)
    slope = np.roll(p, -2, 1) - np.roll(p, 2, 1) + np.roll(p, -2, 0) - np.roll(p, 2, 0)
    image = 120.0 + 150.0 * slope + rng.normal(0.0, 3.0, labels.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


# sets rendered from another set's labels: (renderer, source set, crop). From dsb-x6, scattered nuclei of
# 54-84 px; from isbi-x2, packed cells touching across thin gaps, some of them hundreds of px long. The
# "frames" sets cut each image to a camera frame of few cells (the window with the most): phc-frames 520 x 696 px of
# scattered cells, dic-frames 512 x 512 px of about 15-25 packed cells of about 115 px (ISBI x4), the
# frame sizes of the Cell Tracking Challenge's phase-contrast and DIC sets. Shrunk to the model's object
# size, such a frame is a small image (about 110 px for dic-frames): little to learn from, narrow stripes
RENDERED = {
    "phc-x6": (phase_contrast, "dsb-x6", None),
    "dic-x6": (dic_contrast, "dsb-x6", None),
    "phc-isbi": (phase_contrast, "isbi-x2", None),
    "dic-isbi": (dic_contrast, "isbi-x2", None),
    "phc-frames": (phase_contrast, "dsb-x6", (520, 696)),
    "dic-frames": (dic_contrast, "isbi-x4", (512, 512)),
}


def frame(labels: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    """The ``shape`` window of instance labels that holds the most object centres (on a 32 px grid; all
    of them for ``None``), ids renumbered 1..n: a camera frame of a field of cells."""
    from scipy import ndimage as ndi
    from skimage.segmentation import relabel_sequential

    if shape is None:
        return labels
    h, w = (min(m, n) for m, n in zip(shape, labels.shape))
    centres = np.zeros(labels.shape, np.int64)
    for box in ndi.find_objects(labels):
        if box is not None:
            centres[tuple((b.start + b.stop) // 2 for b in box)] += 1
    table = np.pad(centres.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # summed-area table

    def count(o: tuple[int, int]) -> int:
        (y, x), (y1, x1) = o, (o[0] + h, o[1] + w)
        return int(table[y1, x1] - table[y, x1] - table[y1, x] + table[y, x])

    grid = [(y, x) for y in range(0, labels.shape[0] - h + 1, 32) for x in range(0, labels.shape[1] - w + 1, 32)]
    top, left = max(grid, key=count)
    return relabel_sequential(labels[top : top + h, left : left + w])[0]


def drop_objects(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``labels`` with ``share`` of its objects erased (at least one kept): ground truth marking only some cells."""
    ids = np.unique(labels[labels > 0])
    rng = np.random.default_rng(seed)
    erase = rng.permutation(ids)[: min(int(round(share * ids.size)), ids.size - 1)]
    out = labels.copy()
    out[np.isin(out, erase)] = 0
    return out


def load_set(
    name: str, root: Path, n_pool: int, n_heldout: int, seed: int, heldout_from: str = "test"
) -> tuple[list, list, str]:
    """``(pool, heldout, description)``: lists of ``(name, image, labels)`` at the set's scale.

    ``heldout_from="test"`` holds out the set's test images (test split, ISBI slices 20-29): scores to
    report. ``"choice"`` holds out none of them: the pool is the first ``n_pool`` of the seed's choice
    images and the held-out images are the next ``n_heldout`` after the first ``max(n_pool,``
    :data:`CHOICE_POOL` ``)`` (so a run with k = 1 and one with k = 5 hold out the same images): scores
    to choose a rule on, away from the test split.
    """
    if heldout_from not in HELDOUT_FROM:
        raise SystemExit(f"unknown --heldout-from {heldout_from!r}; known: {', '.join(HELDOUT_FROM)}")
    if name in RENDERED:
        render, source, crop = RENDERED[name]
        pool, heldout, desc = load_set(source, root, n_pool, n_heldout, seed, heldout_from)

        def again(items: list) -> list:
            cut = [(n, frame(labels, crop)) for n, _, labels in items]
            return [(n, render(labels, seed=int(n[:8], 16)), labels) for n, labels in cut]

        cut_to = f", each cut to the {crop[0]} x {crop[1]} px window with the most cells" if crop else ""
        return again(pool), again(heldout), f"{name[:3].upper()} rendered from {desc}{cut_to}"
    rng = np.random.default_rng(seed)
    choice = heldout_from == "choice"
    reserve = max(n_pool, CHOICE_POOL)

    def split(drawn: list[str], test: list[str]) -> tuple[list[str], list[str]]:
        """The pool and the held-out names: from the seed's drawn choice images, or the test images."""
        if not choice:
            return drawn[:n_pool], test[:n_heldout]
        held = drawn[reserve : reserve + n_heldout]
        if not held and n_heldout:  # an empty held-out set would score 1.0
            raise SystemExit(f"{name}: {len(drawn)} choice images leave none to hold out after a pool of {reserve}")
        if len(held) < n_heldout:
            print(f"{name}: {len(held)} choice images held out (of --heldout {n_heldout}): no more after the pool")
        return drawn[:n_pool], held

    if name == "dsb-x6":
        folder = root / "dsb2018"
        test, val = read_list(SPLITS / "dsb2018-test.txt"), read_list(SPLITS / "dsb2018-val.txt")

        def band(names: list[str]) -> list[str]:
            out = []
            for n in names:
                img = imread(folder / "images" / f"{n}.png")
                if detect(img).modality != "fluorescence" or max(img.shape[:2]) > 520:
                    continue
                d = median_diameter([imread(folder / "labels" / f"{n}.png")])
                if d is not None and BAND[0] <= d <= BAND[1]:
                    out.append(n)
            return out

        candidates = band(val)
        drawn = [candidates[i] for i in rng.permutation(len(candidates))]
        pool_names, held_names = split(drawn, [] if choice else band(test))

        def item(n: str):
            image, labels = (imread(folder / sub / f"{n}.png") for sub in ("images", "labels"))
            return n, upscale(image, 6), upscale(labels, 6)

        desc = (
            f"DSB2018 fluorescence, "
            f"nuclei {BAND[0]:g}-{BAND[1]:g} px, x6: pool {len(pool_names)} of "
            f"{len(candidates)} validation-split images, held out {len(held_names)} "
            + ("more of them" if choice else "test-split images")
        )
    elif name in ("isbi-x2", "isbi", "isbi-x4"):
        folder = root / "isbi2012"
        names = sorted((p.stem for p in (folder / "images").glob("*.png")), key=int)
        pool_names, held_names = split([names[:20][i] for i in rng.permutation(20)], names[-10:])
        times = int(name.split("-x")[1]) if "-x" in name else 1

        def item(n: str):
            return (
                n,
                upscale(imread(folder / "images" / f"{n}.png"), times),
                upscale(isbi_instances(imread(folder / "labels" / f"{n}.png")), times),
            )

        desc = f"ISBI 2012 EM x{times}: pool slices 0-19, held out {len(held_names)} of slices " + (
            "0-19" if choice else "20-29"
        )
    elif name == "dsb-colour":
        folder = root / "dsb2018"
        test, val = read_list(SPLITS / "dsb2018-test.txt"), set(read_list(SPLITS / "dsb2018-val.txt"))
        colour = [p.stem for p in sorted((folder / "images").glob("*.png")) if detect(imread(p)).modality == "he"]
        others = [n for n in colour if n not in test]
        firsts, rest = [n for n in others if n in val], [n for n in others if n not in val]
        # validation-split images first: the shipped model never trained on them
        drawn = [firsts[i] for i in rng.permutation(len(firsts))] + [rest[i] for i in rng.permutation(len(rest))]
        pool_names, held_names = split(drawn, [n for n in colour if n in test])

        def item(n: str):
            return n, imread(folder / "images" / f"{n}.png"), imread(folder / "labels" / f"{n}.png")

        desc = (
            f"DSB2018 colour (H&E-like): pool {len(pool_names)} non-test images "
            f"({sum(n in val for n in pool_names)} from the validation split), "
            f"held out {len(held_names)} " + ("more non-test images" if choice else "test-split images")
        )
    else:
        raise SystemExit(f"unknown set {name!r}; known: {', '.join(ALL_SETS)}")
    return [item(n) for n in pool_names], [item(n) for n in held_names], desc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="shared data folder")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(ALL_SETS)}")
    p.add_argument("--k", default="1,2,5", help="annotated images per run (comma-separated)")
    p.add_argument("--minutes", default="5", help="fine-tuning budget per run (comma-separated for a sweep)")
    p.add_argument("--baseline-k", type=int, default=2, help="k of the run without rescaling (0: none)")
    p.add_argument("--heldout", type=int, default=8, help="held-out images per set")
    p.add_argument(
        "--heldout-from",
        default="test",
        choices=HELDOUT_FROM,
        help="test: hold out the sets' test images (scores to report); choice: the seed's choice images "
        f"after the first {CHOICE_POOL} (or k), no test image (scores to choose a rule on)",
    )
    p.add_argument("--seed", type=int, default=0, help="pool choice and training seed (see --seeds)")
    p.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds: each row is run once per seed (another pool of k "
        "images, another training seed) and the table ends with each row's mean and spread",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="a step budget per run instead of --minutes (results that do not "
        "follow the machine's load; validation at ten fixed steps, as train --steps)",
    )
    p.add_argument(
        "--min-factor",
        type=float,
        default=None,
        help="an experiment: shrink images by at most this factor (e.g. 0.5) when rescaling to the model's size",
    )
    p.add_argument("--batch", type=int, default=None, help="patches per step instead of the preset's 8")
    p.add_argument(
        "--anchor",
        type=float,
        default=None,
        help="an experiment: the pull toward the starting weights instead of the preset's (0: none)",
    )
    p.add_argument(
        "--stain",
        type=float,
        default=None,
        help="the strength of the random stain mix on colour patches instead of the preset's (0: none)",
    )
    p.add_argument(
        "--no-settle",
        action="store_true",
        help="an experiment: read each grey image between fluorescence and brightfield by the detection's line, "
        "not all of a fine-tune's one way (the plugin before kind_in_doubt)",
    )
    p.add_argument("--freeze-encoder", action="store_true", help="train only the expanding path (as train's flag)")
    add_layers_args(p)
    p.add_argument(
        "--start",
        default="default",
        help="an experiment: the model every run starts from (a name or a file) instead of the shipped one",
    )
    p.add_argument(
        "--crossed",
        action="store_true",
        help="also score each child with the held-out frames read as the other grey kind (fluorescence <-> "
        "brightfield): what a frame that falls on the other side of the detection's line costs",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="also score each child with test-time augmentation on and off (segment --tta on|off: the 4 flips "
        "averaged or not; the main scores are segment's default, auto: on for images small at the network's scale)",
    )
    p.add_argument(
        "--drop-labels",
        type=float,
        default=0.0,
        metavar="F",
        help="erase this share of the objects from the training labels (seeded): ground truth that marks only "
        "some cells, as the Cell Tracking Challenge's gold segmentation truth can; held-out labels stay whole",
    )
    p.add_argument(
        "--partial-labels",
        action="store_true",
        help="train as train --partial-labels does: only around the marked objects",
    )
    p.add_argument(
        "--val-whole",
        type=int,
        default=None,
        metavar="K",
        help="an experiment: with K or more annotated images, validate on whole images (one in five) instead "
        "of a stripe of each",
    )
    p.add_argument("--device", default="cpu", choices=DEVICE_CHOICES, help="fine-tune and segment here")
    p.add_argument("--no-auto", action="store_true", help="skip scoring each child with --diameter auto (faster)")
    p.add_argument(
        "--weights-bar",
        action="store_true",
        help="an experiment: also score what each child would be if the fine-tuned weights were kept only when "
        "their stripe AP@0.5 gain clears the threshold bar (noise of the validation objects x (1 + trust)): "
        "else the starting weights and thresholds, with the child's object sizes",
    )
    p.add_argument(
        "--true-size",
        action="store_true",
        help="also score each child with every held-out image at its true objects' size (as the start's second "
        "score): what the weights learnt, apart from the object size the child assumes",
    )
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)
    args.layers = layers_from(args, p)
    root = next((d for d in ([args.data] if args.data else DATA_CANDIDATES) if d and d.is_dir()), None)
    if root is None:
        raise SystemExit("no shared data folder found; use --data")
    torch.set_num_threads(os.cpu_count() or 1)
    device = resolve_device(args.device)
    ks = [int(k) for k in args.k.split(",") if k]
    budgets = [float(m) for m in args.minutes.split(",") if m]
    start = load(args.start)
    print(f"cpu      {cpu_name()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
          f"python {platform.python_version()}")  # fmt: skip
    if device.type == "cuda":
        print(f"device   {torch.cuda.get_device_name(device)}")
    frozen = (", encoder frozen" if args.freeze_encoder else "") + f", layers {args.layers}"
    each = f"{args.steps} steps" if args.steps else ", ".join(f"{m:g}" for m in budgets) + " min"
    print(f"model    {start.name}: object diameter {start.card.diameter} px; {each} per run{frozen}")
    seeds = [int(x) for x in args.seeds.split(",") if x] if args.seeds else [args.seed]
    report: dict[str, Any] = {
        "minutes": [] if args.steps else budgets, "steps": args.steps, "seeds": seeds,
        "freeze_encoder": args.freeze_encoder, "layers": args.layers, "min_factor": args.min_factor,
        "batch": args.batch,
        "anchor": args.anchor, "settle": not args.no_settle, "stain": args.stain,
        "heldout_from": args.heldout_from, "drop_labels": args.drop_labels,
        "partial_labels": args.partial_labels, "val_whole": args.val_whole,
        "device": str(device), "sets": {},
    }  # fmt: skip
    budgets = [None] if args.steps else budgets
    starts: dict[tuple, dict[str, Any]] = {}  # the start's scores per held-out set (seeds change only the pool)
    for name in [s for s in args.sets.split(",") if s]:
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            rows += run_set(name, root, ks, budgets, seed, start, device, args, starts)
        report["sets"][name] = {"description": rows[0]["description"], "rows": rows}
        if len(seeds) > 1:
            print_spread(rows)
    write_json(args.json, report)
    return 0


def print_spread(rows: list[dict[str, Any]]) -> None:
    """Each run's mean and spread (lowest-highest) over the seeds."""
    print("  over the seeds:")
    for label in dict.fromkeys(r["run"] for r in rows):
        same = [r for r in rows if r["run"] == label]
        ap, seg = np.array([r["ap50"] for r in same]), np.array([r["seg"] for r in same])
        print(
            f"    {label:<30} AP50 {ap.mean():.3f} ({ap.min():.3f}-{ap.max():.3f})  "
            f"SEG {seg.mean():.3f} ({seg.min():.3f}-{seg.max():.3f})  n={len(same)}"
        )


def run_set(
    name: str,
    root: Path,
    ks: list[int],
    budgets: list[float | None],
    seed: int,
    start: Any,
    device: torch.device,
    args: argparse.Namespace,
    starts: dict[tuple, dict[str, Any]],
) -> list[dict[str, Any]]:
    """One set with one seed (its pool of images and its training seed): the start's scores, then each run's.

    ``starts`` keeps the start's scores per held-out set, so that seeds drawing other pools from the
    same set do not segment its held-out images again.
    """
    n_pool = max(ks + [args.baseline_k])
    pool_items, heldout, desc = load_set(name, root, n_pool, args.heldout, seed, args.heldout_from)
    print(f"\n{name} (seed {seed}): {desc}")
    held = (name, *(item[0] for item in heldout))
    if held not in starts:
        # as segment does (the model's object size), and with each image at its true objects' size: what
        # the start knows of these images when a user gives their object size
        starts[held] = {**score(start, heldout, device), "true_size": score(start, heldout, device, true_size=True)}
    base = starts[held]
    sized = base["true_size"]
    print(
        f"  start                                             AP50 {base['ap50']:.3f}  SEG {base['seg']:.3f}"
        f"   at the true object size AP50 {sized['ap50']:.3f}  SEG {sized['seg']:.3f}"
    )
    rows: list[dict[str, Any]] = [{"run": "start", "seed": seed, "description": desc, **base}]
    plan = [
        (minutes, k, rescale)
        for minutes in budgets
        for k, rescale in ([(args.baseline_k, False)] if args.baseline_k else []) + [(k, True) for k in ks]
    ]
    if args.drop_labels:
        pool_items = [(n, img, drop_objects(lab, args.drop_labels, seed)) for n, img, lab in pool_items]
    for minutes, k, rescale in plan:
        began: list = []
        child, run = finetune(
            start,
            pool_items[:k],
            minutes,
            rescale,
            seed,
            args.freeze_encoder,
            device,
            steps=args.steps,
            min_factor=args.min_factor,
            batch=args.batch,
            settle=not args.no_settle,
            anchor=args.anchor,
            stain=args.stain,
            partial=args.partial_labels,
            val_whole=args.val_whole,
            begin_out=began,
            layers=args.layers,
        )
        s = score(child, heldout, device)
        # the same child with its starting thresholds (was re-tuning worth it?) and with --diameter auto
        untuned = copy.copy(child)
        untuned.card = copy.deepcopy(child.card)
        untuned.card.postprocess = run.pop("start_postprocess")
        s["untuned"] = score(untuned, heldout, device)
        if args.tta:
            s["tta"] = score(child, heldout, device, tta=True)
            s["no_tta"] = score(child, heldout, device, tta=False)
        if rescale and not args.no_auto:
            s["auto"] = score(child, heldout, device, diameter="auto")
        if args.true_size:
            s["true_size"] = score(child, heldout, device, true_size=True)
        if args.weights_bar and run["stripe_ap50"]:
            before, after = run["stripe_ap50"]
            bar = tuning_noise(before, run["validation_objects"]) * (1 + run["trust"])
            kept = not run["improved"] or after - before > bar
            if kept:
                s["weights_bar"] = {"kept": "child", "bar": round(bar, 4), **{k_: s[k_] for k_ in ("ap50", "seg")}}
            else:
                card = copy.deepcopy(child.card)
                card.postprocess = began[0].card.postprocess
                start_again = Model(began[0].net, card)
                s["weights_bar"] = {"kept": "start", "bar": round(bar, 4), **score(start_again, heldout, device)}
        if args.crossed:  # every held-out frame read as the other grey kind: a frame that crossed the line
            kinds = [input_modality(child, img) for _, img, _ in heldout]
            read = max(set(kinds), key=kinds.count)
            if read in GREY_KINDS:
                other = next(k for k in GREY_KINDS if k != read)
                s["crossed"] = {"read_as": other, **score(child, heldout, device, modality=other)}
        budget = f"{args.steps} steps" if args.steps else f"{minutes:g} min"
        label = f"{budget} k={k} {'rescaled' if rescale else 'as is (before)'}"
        size = f"d {run['diameter']:.0f} px x{run['factor']:.2f}" if rescale else "no rescaling"
        print(
            f"  {label:<30} {run['steps']:4d} steps {run['patches_per_s']:5.1f} patch/s {size:<16}"
            f" AP50 {s['ap50']:.3f}  SEG {s['seg']:.3f}   untuned AP50 {s['untuned']['ap50']:.3f}"
            + (f"  auto AP50 {s['auto']['ap50']:.3f} SEG {s['auto']['seg']:.3f}" if "auto" in s else "")
            + (
                f"  true size AP50 {s['true_size']['ap50']:.3f} SEG {s['true_size']['seg']:.3f}"
                if "true_size" in s
                else ""
            )
            + (
                f"  weights bar ({s['weights_bar']['kept']}) AP50 {s['weights_bar']['ap50']:.3f} "
                f"SEG {s['weights_bar']['seg']:.3f}"
                if "weights_bar" in s
                else ""
            )
            + (f"  crossed AP50 {s['crossed']['ap50']:.3f} SEG {s['crossed']['seg']:.3f}" if "crossed" in s else "")
            + (f"  tta AP50 {s['tta']['ap50']:.3f} SEG {s['tta']['seg']:.3f}" if "tta" in s else "")
            + (f"  no tta AP50 {s['no_tta']['ap50']:.3f} SEG {s['no_tta']['seg']:.3f}" if "no_tta" in s else ""),
            flush=True,
        )
        rows.append({"run": label, "seed": seed, "minutes": minutes, "k": k, "rescale": rescale, **run, **s})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
