"""Small helpers shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet_loop.core.edits import labelled_region
from napari_unet_loop.core.finetune import (
    LAYERS,
    augmentation,
    last_layer_only,
    layers_asked,
    own_kind_weights,
    preset,
    record_sizes,
    start_kind,
    start_model,
    to_network_scale,
)
from napari_unet_loop.core.image import InputError, prepare_input
from napari_unet_loop.core.metrics import matching, pool
from napari_unet_loop.core.modality import detect, input_modality, settle_doubt
from napari_unet_loop.core.model_files import Model
from napari_unet_loop.core.postprocess import PostprocessConfig
from napari_unet_loop.core.retune import retune, validation_objects
from napari_unet_loop.core.sampling import Sample, split_validation
from napari_unet_loop.core.scale import median_diameter
from napari_unet_loop.core.segment import segment
from napari_unet_loop.core.train import iter_train

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "src/napari_unet_loop/models/splits"  # the shipped model's test and validation lists
DATA_CANDIDATES = (ROOT.parent / "shared/data", Path("/work/shared/data"))
ISBI_MIN_SIZE = 30  # ISBI 2012 cells: interior components under this many pixels are dropped


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_list(path: Path) -> list[str]:
    """Names listed in a split file (one per line; ``#`` starts a comment line)."""
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    """Write a benchmark's report as JSON, atomically (folders made as needed); nothing without a path."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


def find_dsb2018(path: Path | None) -> Path:
    """The ``dsb2018`` folder (``images/``, ``labels/``) in ``path``, else in the usual data folders."""
    for p in [path] if path is not None else DATA_CANDIDATES:
        if (p / "dsb2018" / "images").is_dir():
            return p / "dsb2018"
    raise SystemExit(f"no DSB2018 data found (tried {', '.join(str(p) for p in DATA_CANDIDATES)}); use --data")


def imread(path: Path) -> np.ndarray:
    """An image file as an array, as the shared data's PNGs are stored."""
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def isbi_instances(mask: np.ndarray) -> np.ndarray:
    """ISBI 2012 cells as instances: 4-connected components of the interior (255), small ones dropped.

    Parameters
    ----------
    mask : numpy.ndarray
        An ISBI 2012 label slice (255 inside cells, 0 on membranes).

    Returns
    -------
    numpy.ndarray
        ``int32`` instance labels; components under :data:`ISBI_MIN_SIZE` pixels removed.
    """
    from skimage.measure import label
    from skimage.segmentation import relabel_sequential

    lab = label(mask == 255, connectivity=1)
    sizes = np.bincount(lab.ravel())
    small = sizes < ISBI_MIN_SIZE
    small[0] = False
    lab[small[lab]] = 0
    return relabel_sequential(lab)[0].astype(np.int32)


def score(
    model: Model, heldout: list, device: torch.device | str = "cpu", true_size: bool = False, **options
) -> dict[str, Any]:
    """Segment the held-out images as ``segment`` does (``options`` as its flags) and pool their scores.

    ``true_size``: each image at the median diameter of its true objects (the object size a user
    gives), not the model's default: scores that follow the weights, not the size the model assumes.
    """

    t0 = time.perf_counter()
    results = []
    for _, img, lab in heldout:
        size = {"diameter": median_diameter([lab])} if true_size else {}
        results.append(matching(lab, segment(model, img, device=device, **options, **size).labels))
    out = {k: round(float(v), 4) for k, v in pool(results).to_dict().items() if k in ("ap50", "ap75", "f1_50", "seg")}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def add_layers_args(p: argparse.ArgumentParser) -> None:
    """``--layers`` and ``--head-only``, as ``train`` has them (read back with :func:`layers_from`)."""
    p.add_argument(
        "--layers",
        choices=tuple(LAYERS),
        default=None,
        help="which layers the fine-tunes train, as train --layers (default auto: the last one for a kind's own "
        "weights)",
    )
    p.add_argument("--head-only", action="store_true", help="the same as --layers last")


def layers_from(args: argparse.Namespace, p: argparse.ArgumentParser) -> str:
    """The ``--layers`` asked for, as ``train`` reads them (``core.finetune.layers_asked``; contradictions refused)."""
    try:
        return layers_asked(args.layers, args.head_only)
    except InputError as exc:
        p.error(str(exc))


def finetune(
    start: Model,
    items: list,
    minutes: float,
    rescale: bool,
    seed: int,
    freeze_encoder: bool = False,
    device: torch.device | str = "cpu",
    steps: int | None = None,
    anchor: float | None = None,
    min_factor: float | None = None,
    batch: int | None = None,
    settle: bool = True,
    stain: float | None = None,
    retune_variants: dict[str, Callable[[PostprocessConfig], dict[str, Any]]] | None = None,
    partial: bool = False,
    val_whole: int | None = None,
    begin_out: list | None = None,
    layers: str = "auto",
) -> tuple[Model, dict[str, Any]]:
    """The ``train --from`` path on ``items`` (with ``--freeze-encoder`` when asked): the child, what the run did.

    ``items`` are ``(name, image, labels)``, or ``(name, image, labels, weight)`` with a per-pixel loss
    weight (the dock's extra weight on corrected pixels, ``core.edits.correction_weight``). ``steps``
    replaces the time budget by a step budget (results that do not follow the machine's load);
    ``anchor`` replaces the preset's (``None``: the preset's). ``min_factor`` shrinks images by at most
    that much (objects reach the network larger than its diameter; the child's default diameter then
    rescales held-out images by the same factor): an experiment, not what ``train`` does. ``batch``
    replaces the preset's batch size. ``settle=False``: grey images in doubt read each by the
    detection's line, as before ``kind_in_doubt`` (an experiment). ``stain`` replaces the preset's
    stain mix on colour patches (``core.augment.mix_stains``). ``retune_variants`` names other threshold
    searches to judge on the same stripes, each a function of the starting thresholds that gives the
    candidate values it searches (``core.retune.retune``'s ``search``): ``run["tuning_variants"][name]`` is
    what each would keep by the bars alone (no veto); the child keeps the shipped rule's. ``partial``: the
    labels mark only some objects, as ``train --partial-labels`` reads them (trusted around the marked objects only).
    ``val_whole``: an experiment: from this many images on, validate on whole images (one in five, at
    least one, drawn by ``seed``) instead of a stripe of each. ``begin_out``: a list that gets the model the
    fine-tune began from (the starting model's network and thresholds for the images' kind). ``layers``: which
    layers train, as ``train --layers`` (``"auto"``: the last one for the model's own weights for the images' kind).
    """
    if settle and start.card.modality == "auto" and start.card.architecture.in_channels == 1:
        # as train --from: grey images between fluorescence and brightfield are all read one way
        doubt = settle_doubt([detect(img) for _, img, *_ in items], start.card.kind_in_doubt)
        start = start.reading_in_doubt_as(doubt)

    def prepared(model: Model) -> list[Sample]:
        samples = []
        for name, img, lab, *weight in items:
            kind = input_modality(model, img)
            x = prepare_input(img, model.input_channels(kind), model.card.normalization, modality=kind)
            ignore = ~labelled_region(lab) if partial else None
            samples.append(Sample(x, lab, ignore, weight[0] if weight else None, name=name, kind=kind or ""))
        return samples

    samples = prepared(start)
    # as train --from: the parent's weights and thresholds for the images' kind to start from, none per kind kept
    kind = start_kind(samples)
    begin, ready = start_model(start, kind, samples)
    head_only = last_layer_only(layers, own_kind_weights(start, begin, kind), True, freeze_encoder)
    if not ready:  # as train --from: H&E images prepared for a colour network of their own, as the start reads them
        samples = prepared(begin)
    card = copy.deepcopy(begin.card)
    if begin_out is not None:
        begin_out.append(begin)
    t0 = time.perf_counter()
    diameter = None  # to_network_scale measures the labels
    if rescale and min_factor:
        diameter = median_diameter([s.labels for s in samples], [s.ignore for s in samples])
        if diameter and card.diameter and card.diameter / diameter < min_factor:
            diameter = card.diameter / min_factor  # "objects of this size" gives a factor of min_factor
    scaled = to_network_scale(samples, card, diameter) if rescale else None
    ready_samples = scaled.samples if scaled else samples
    if val_whole and len(ready_samples) >= val_whole:
        order = np.random.default_rng(seed).permutation(len(ready_samples))
        held = set(order[: max(1, round(len(ready_samples) / 5))].tolist())
        train = [s for i, s in enumerate(ready_samples) if i not in held]
        val = [s for i, s in enumerate(ready_samples) if i in held]
        whole = train  # the images trained on, as train --val-list checks re-tuned thresholds on them
    else:
        train, val = split_validation(ready_samples, 0.15, seed)
        whole = ready_samples  # stripes and all
    config = preset(
        True,
        None if steps else minutes,
        steps=steps,
        seed=seed,
        freeze_encoder=freeze_encoder or None,
        head_only=head_only or None,
        anchor=anchor,
        batch_size=batch,
        augment=augmentation(True, stain=stain),
    )
    net = copy.deepcopy(begin.net)
    gen = iter_train(net, train, val, config, device, card.postprocess)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        result = stop.value
    start_pp = card.postprocess
    tuned = None
    if val:  # the rule of the dock and train: re-tuned thresholds only when the gain clears the bar (and no veto)
        retuned = retune(net, val, device, card.postprocess, trust=result.trust, whole=whole)
        card.postprocess = retuned.postprocess
        tuned = retuned.to_dict()
    variants = {
        name: retune(net, val, device, start_pp, trust=result.trust, **search(start_pp)).to_dict()
        for name, search in (retune_variants or {}).items()
        if val
    }
    if scaled is not None:
        record_sizes(card, scaled)
    run = {
        "steps": result.steps,
        "patches": result.patches,
        "patches_per_s": round(result.patches / max(result.seconds, 1e-9), 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "diameter": None if scaled is None else round(float(scaled.diameter or 0), 1),
        "factor": None if scaled is None else round(scaled.factor, 3),
        "improved": result.improved,
        # the stripe's AP@0.5 of the starting and the kept weights, on how many objects
        "stripe_ap50": result.baseline and [round(v["ap50"], 4) for v in (result.baseline, result.best)],
        "validation_objects": validation_objects(val) if val else 0,
        "trust": round(result.trust, 4),
        "anchor_applied": round(result.anchor, 2),
        "head_only": head_only,
        "tuning": tuned,
        "start_postprocess": start_pp,
        **({"tuning_variants": variants} if variants else {}),
    }
    return Model(net.eval(), card), run


def save_heldout(child: Model, heldout: list, n_classes: int, arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Segment the held-out ``(name, image, labels)`` with ``child`` as ``segment`` does; put its foreground
    and distance maps and the labels in ``arrays`` (``h_fg_j``, ``h_d_j``, ``h_lab_j``, float16) and return
    each image's name and rescaling factor, so that any thresholds can be scored later (:func:`heldout_scorer`)."""
    held = []
    for j, (name, img, lab) in enumerate(heldout):
        seg = segment(child, img, device="cpu")
        arrays[f"h_fg_{j}"] = (1.0 - seg.probs[0]).astype(np.float16)
        arrays[f"h_d_{j}"] = seg.probs[n_classes].astype(np.float16)
        arrays[f"h_lab_{j}"] = lab.astype(np.int32)
        held.append({"name": name, "factor": seg.factor})
    return held


def heldout_scorer(z: Any, held: list[dict[str, Any]]):
    """What :func:`save_heldout` saved, read (decompressed) once: a function of thresholds that returns the
    held-out pooled ``(AP@0.5, SEG)``, rounded to 4 decimals."""
    from napari_unet_loop.core.postprocess import instances_from_maps
    from napari_unet_loop.core.scale import postprocess_at

    maps = [
        (z[f"h_fg_{j}"].astype(np.float32), z[f"h_d_{j}"].astype(np.float32), z[f"h_lab_{j}"], h["factor"])
        for j, h in enumerate(held)
    ]

    def scores(pp: Any) -> tuple[float, float]:
        pooled = pool([matching(lab, instances_from_maps(fg, d, postprocess_at(pp, f))) for fg, d, lab, f in maps])
        return round(pooled.ap50, 4), round(pooled.seg, 4)

    return scores


def case_benchmark(doc: str, cases: list[str], argv: list[str] | None, run_case: Any, report: Any,
                   line: Any, rules: dict[str, str]) -> int:  # fmt: skip
    """The main of the benchmarks that save one fine-tune per ``SET:K:SEED`` case and report offline.

    Each case's outputs are fine-tuned and saved (``run_case(case, start, steps, path, layers)``) when
    ``--out`` lacks them (unless ``--report``; a ``--layers`` other than auto saves to files of its own),
    then reported (``report(path)`` -> a row, printed by ``line(row)``); each rule's mean held-out
    ``(AP@0.5, SEG)`` follows (``rules``: row key -> label), and ``--json`` gets the rows.
    """
    from napari_unet_loop.core.model_files import load

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(cases), help="comma-separated SET:K:SEED (bench_cells' sets)")
    p.add_argument("--steps", type=int, default=900, help="fine-tuning steps per case (900: about 5 CPU minutes)")
    p.add_argument("--out", type=Path, required=True, help="folder for the saved outputs, one .npz per case")
    p.add_argument("--report", action="store_true", help="only report the cases already saved")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    add_layers_args(p)
    args = p.parse_args(argv)
    layers = layers_from(args, p)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    start, rows = None, []
    for case in [c for c in args.cases.split(",") if c]:
        path = args.out / (case.replace(":", "_") + ("" if layers == "auto" else f"_{layers}") + ".npz")
        if not path.exists():
            if args.report:
                continue
            start = start or load("default")
            run_case(case, start, args.steps, path, layers)
        rows.append(report(path))
        print(line(rows[-1]), flush=True)
    if rows:
        print(f"\nmean over {len(rows)} cases, held-out AP@0.5 / SEG:")
        for key, label in rules.items():
            ap, seg = (float(np.mean([r[key]["held"][i] for r in rows])) for i in (0, 1))
            print(f"  {label:<24} {ap:.4f} / {seg:.4f}")
    write_json(args.json, {"steps": args.steps, "layers": layers, "cases": rows})
    return 0


def stripe_band(trained_ignore: np.ndarray) -> tuple[int, int, int]:
    """``(axis, first, stop)``: where a trained sample's validation stripe lies, a band of rows (axis 0) or of
    columns (axis 1), read from its ignored pixels."""
    axis = 0 if trained_ignore.all(1).any() and not trained_ignore.all(0).any() else 1
    along = np.flatnonzero(trained_ignore.any(1 - axis))
    return axis, int(along[0]), int(along[-1]) + 1


def objects_scored(truths: list[np.ndarray], ignores: list[np.ndarray | None] | None = None) -> int:
    """The validation objects of saved labels (``core.retune.validation_objects``)."""
    from napari_unet_loop.core.retune import validation_objects

    ignores = ignores or [None] * len(truths)
    return validation_objects([Sample(np.zeros((1, *t.shape), np.float32), t, i) for t, i in zip(truths, ignores)])


def saved_maps(z: Any, tag: str, n: int) -> tuple[list, list, list]:
    """``(maps, truths, ignores)`` of ``n`` samples saved as ``{tag}_fg_i``, ``{tag}_d_i``, ``{tag}_lab_i`` and
    (when there are unreviewed pixels) ``{tag}_ig_i``."""
    maps, truths, ignores = [], [], []
    for i in range(n):
        maps.append((z[f"{tag}_fg_{i}"].astype(np.float32), z[f"{tag}_d_{i}"].astype(np.float32)))
        truths.append(z[f"{tag}_lab_{i}"])
        ignores.append(z[f"{tag}_ig_{i}"] if f"{tag}_ig_{i}" in z else None)
    return maps, truths, ignores


def watched_finetune(
    case: str, start: Model, steps: int, split: Any = None, layers: str = "auto"
) -> tuple[Model, dict, dict, list]:
    """One ``SET:K:SEED`` case (``bench_cells``' sets) fine-tuned on the ``train --from`` path, watched.

    Returns ``(child, run, seen, heldout)``: :func:`finetune`'s child and record, what the run used
    (``seen``: ``train`` and ``val``, the samples ``split_validation`` made; ``judged``, the
    validation samples keep-best and the re-tune scored; ``net``, the trained network; ``trust``) and
    the held-out ``(name, image, labels)``. ``split(samples, train, val)``, when given, returns the
    ``(train, val)`` to use instead of the shipped split. ``layers``: which layers train, as ``train --layers``.
    """
    import sys

    import bench_cells

    name, k, seed = case.split(":")
    root = next(d for d in DATA_CANDIDATES if d and d.is_dir())
    items, heldout, _ = bench_cells.load_set(name, root, 5, 10 if name.startswith("isbi") else 8, int(seed))
    seen: dict[str, Any] = {}
    module = sys.modules[__name__]
    plain_split, plain_retune = module.split_validation, module.retune

    def split_seen(samples, fraction, seed):
        seen["train"], seen["val"] = plain_split(samples, fraction, seed)
        return (seen["train"], seen["val"]) if split is None else split(samples, seen["train"], seen["val"])

    def retune_seen(net, val, device, pp, trust=0.0, **kwargs):
        seen.update(net=net, judged=val, trust=trust)
        return plain_retune(net, val, device, pp, trust=trust, **kwargs)

    module.split_validation, module.retune = split_seen, retune_seen
    try:
        child, run = finetune(start, items[: int(k)], 5.0, True, int(seed), device="cpu", steps=steps, layers=layers)
    finally:
        module.split_validation, module.retune = plain_split, plain_retune
    return child, run, seen, heldout


def save_maps(net: Any, samples: list, tag: str, n_classes: int, arrays: dict[str, np.ndarray]) -> None:
    """The network's foreground and distance maps on ``samples``, with their labels and unreviewed pixels, put in
    ``arrays`` as :func:`saved_maps` reads them."""
    from napari_unet_loop.core.predict import predict

    for i, s in enumerate(samples):
        p = predict(net, s.image, device="cpu")
        arrays[f"{tag}_fg_{i}"] = (1.0 - p[0]).astype(np.float16)
        arrays[f"{tag}_d_{i}"] = p[n_classes].astype(np.float16)
        arrays[f"{tag}_lab_{i}"] = s.labels.astype(np.int32)
        if s.ignore is not None:
            arrays[f"{tag}_ig_{i}"] = s.ignore
