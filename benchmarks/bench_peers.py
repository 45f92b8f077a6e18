"""Peers on the same data: a classical pipeline, our U-Net and Cellpose, side by side on DSB2018.

Every row is scored on the DSB2018 test split (``models/splits/dsb2018-test.txt``, 58
images never trained on), with the same pooled metrics (``core.metrics``: AP@0.5, AP@0.75,
F1, PQ, SEG) and AP@0.5 per kind of image (fluorescence, H&E-like, brightfield, as
``core.modality.detect`` sorts them). The rows:

1. **classical**: scikit-image only. The grey plane in which nuclei are bright
   (``to_fluorescence_like`` with the detected modality), an optional Gaussian blur, an
   Otsu threshold, holes filled, small objects removed, the Euclidean distance transform,
   ``peak_local_max`` seeds and a watershed on the negated distance. Its three parameters
   (blur, smallest object, ``min_distance``) are chosen on the validation split
   (``dsb2018-val.txt``) from a small grid, never on the test split.
2. **shipped**: the project's model ``dsb2018-nuclei``, for reference (it trained on the
   training split for far longer than any budget here).
3. **ours, scratch**: our U-Net trained from scratch for ``--minutes`` on the training
   split (every image in neither split), by the project's own command in a subprocess:
   ``napari-unet-loop train --from scratch --minutes N --exclude <test> --val-list <val>``
   (keep-best and threshold tuning on the validation split, as the command does).
4. **cellpose, scratch** (``--peer cellpose``): Cellpose 3's ``CPnet`` (``CellposeModel(
   pretrained_model=None)``) trained from scratch with ``cellpose.train.train_seg`` on the
   same training images, in the same grey plane, for the same budget. ``train_seg`` runs
   a fixed number of epochs, so the budget is turned into epochs: the flows are computed
   first (part of the budget), two batches are timed on a throw-away copy of the network
   (part of the budget too), and the rest of the budget sets the number of batches. Its two
   thresholds (``cellprob_threshold``, ``flow_threshold``) are chosen on the validation
   split from a small grid, as ours are. Cellpose 4 (Cellpose-SAM, a ViT) is not a
   from-scratch CPU peer, so this needs ``cellpose<4``.

All rows run on the CPU with ``--threads`` threads. The table gives the wall and CPU
seconds of training and the wall seconds of predicting the test split.
Run ``python benchmarks/bench_peers.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import SPLITS, cpu_name, find_dsb2018, imread, read_list, write_json
from napari_unet_loop.core.metrics import matching, pool
from napari_unet_loop.core.modality import MODALITIES, detect, to_fluorescence_like

TEST_LIST = SPLITS / "dsb2018-test.txt"
VAL_LIST = SPLITS / "dsb2018-val.txt"
SHIPPED = "dsb2018-nuclei"
SHORT = {"fluorescence": "fluo", "brightfield": "bf", "he": "H&E"}  # table headers
# classical pipeline: the grid searched on the validation split
CLASSICAL_SIGMA = (0.0, 1.0, 2.0)
CLASSICAL_MIN_SIZE = (20, 50)
CLASSICAL_MIN_DISTANCE = (3, 5, 7, 10, 14)
# cellpose: training settings (train_seg's defaults but the scale) and the threshold grid
CP_BATCH = 8
CP_LR = 0.005
CP_TARGET_EPOCHS = 120  # over 100 epochs train_seg anneals the learning rate at the end
CP_CELLPROB = (-1.0, 0.0, 1.0)
CP_FLOW = (0.4, 0.6)


@dataclass
class Item:
    """One DSB2018 image with its ground truth."""

    name: str
    image: np.ndarray  # (H, W, 4) uint8 as stored
    labels: np.ndarray  # (H, W) instance labels
    kind: str  # detected modality

    @property
    def grey(self) -> np.ndarray:
        """The grey plane in which nuclei are bright."""
        return to_fluorescence_like(self.image, self.kind)


class PeerUnavailable(RuntimeError):
    """The peer network cannot run here (not installed, or the wrong version)."""


# ----------------------------------------------------------------------------- data


def load_items(folder: Path, names: list[str]) -> list[Item]:
    items = []
    for n in names:
        img = imread(folder / "images" / f"{n}.png")
        items.append(Item(n, img, imread(folder / "labels" / f"{n}.png"), detect(img).modality))
    return items


# ----------------------------------------------------------------------------- scoring


def score(predict_fn: Callable[[Item], np.ndarray], items: list[Item]) -> dict[str, Any]:
    """Pooled scores of ``predict_fn`` on ``items``, AP@0.5 per kind, and the prediction time.

    Parameters
    ----------
    predict_fn : callable
        ``Item -> (H, W)`` instance labels.
    items : list of Item
        The images to score.

    Returns
    -------
    dict
        ``core.metrics.Scores`` fields, ``per_kind`` (``{kind: {"ap50", "n_images"}}``) and
        ``predict_s`` (wall seconds of ``predict_fn`` alone, summed over images).
    """
    results, kinds, seconds = [], {}, 0.0
    for it in items:
        t0 = time.perf_counter()
        pred = predict_fn(it)
        seconds += time.perf_counter() - t0
        m = matching(it.labels, pred)
        results.append(m)
        kinds.setdefault(it.kind, []).append(m)
    out = pool(results).to_dict()
    out["per_kind"] = {k: {"ap50": pool(v).ap50, "n_images": len(v)} for k, v in sorted(kinds.items())}
    out["predict_s"] = seconds
    return out


# ----------------------------------------------------------------------------- 1. classical


def _sizes_kept(lab: np.ndarray, min_size: int) -> np.ndarray:
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[lab]


def classical_mask(grey: np.ndarray, sigma: float, min_size: int) -> np.ndarray:
    """Foreground by Otsu's threshold, holes filled, objects under ``min_size`` px removed."""
    from scipy import ndimage as ndi
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label

    g = gaussian(grey.astype(np.float32), sigma, preserve_range=True) if sigma > 0 else grey.astype(np.float32)
    if float(g.max()) <= float(g.min()):
        return np.zeros(g.shape, bool)
    mask = ndi.binary_fill_holes(g > threshold_otsu(g))
    return _sizes_kept(label(mask), min_size)


def classical_split(mask: np.ndarray, min_distance: int) -> np.ndarray:
    """Distance-transform watershed of a foreground mask, one seed per distance peak.

    Components that get no seed (smaller than the peak footprint) are kept whole.
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.segmentation import watershed

    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    dist = ndi.distance_transform_edt(mask)
    comps = label(mask)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=comps, exclude_border=False)
    seeds = np.zeros(mask.shape, bool)
    seeds[tuple(peaks.T)] = True
    markers = label(seeds)  # a flat peak may give several adjacent seed pixels: one marker
    lab = watershed(-dist, markers, mask=mask).astype(np.int32)
    missed = mask & (lab == 0)
    if missed.any():
        extra = label(missed)
        lab[missed] = extra[missed] + lab.max()
    return lab


def classical(grey: np.ndarray, sigma: float, min_size: int, min_distance: int) -> np.ndarray:
    """The whole classical pipeline on a grey plane with bright nuclei."""
    return classical_split(classical_mask(grey, sigma, min_size), min_distance)


def tune_classical(val: list[Item]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pick the classical parameters with the best pooled AP@0.5 on the validation images."""
    results: dict[tuple, list] = {}
    for it in val:
        grey = it.grey
        for sigma in CLASSICAL_SIGMA:
            for min_size in CLASSICAL_MIN_SIZE:
                mask = classical_mask(grey, sigma, min_size)
                for md in CLASSICAL_MIN_DISTANCE:
                    results.setdefault((sigma, min_size, md), []).append(matching(it.labels, classical_split(mask, md)))
    grid = [
        {"sigma": s, "min_size": ms, "min_distance": md, "val_ap50": pool(r).ap50} for (s, ms, md), r in results.items()
    ]
    best = max(grid, key=lambda g: g["val_ap50"])
    return best, grid


# ----------------------------------------------------------------------------- 2./3. our U-Net


def unet_predictor(model) -> Callable[[Item], np.ndarray]:
    from napari_unet_loop.core.segment import segment

    return lambda it: segment(model, it.image, device="cpu").labels


def train_unet_scratch(
    folder: Path, minutes: float, threads: int, workdir: Path, limit: int | None, names: dict[str, list[str]]
) -> dict[str, Any]:
    """Train our U-Net from scratch with the project's ``train`` command in a subprocess.

    Returns the run's record: the model path, the command, wall and CPU seconds, and what the
    command stored in the model card (steps, patches, validation scores).
    """
    out = workdir / "unet-scratch.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "napari_unet_loop.cli",
        "train",
        str(folder / "images"),
        str(folder / "labels"),
        "--out",
        str(out),
        "--from",
        "scratch",
        "--minutes",
        f"{minutes:g}",
        "--device",
        "cpu",
        "--exclude",
        str(TEST_LIST),
        "--val-list",
        str(VAL_LIST),
        "--overwrite",
    ]
    if limit is not None:  # smoke runs: a few training images only
        include = workdir / "include.txt"
        include.write_text("\n".join(names["train"] + names["val"]) + "\n")
        val_list = workdir / "val.txt"
        val_list.write_text("\n".join(names["val"]) + "\n")
        cmd[cmd.index(str(VAL_LIST))] = str(val_list)
        cmd += ["--include", str(include)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    shown = " ".join(["napari-unet-loop", *cmd[3:]])
    print(f"[ours] {shown}", flush=True)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    log = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"train exited {proc.returncode}: " + " | ".join(log[-5:]))
    for line in log[-3:]:
        print(f"  {line}", flush=True)
    return {"path": out, "command": shown, "train_wall_s": wall, "train_cpu_s": cpu}


# ----------------------------------------------------------------------------- 4. cellpose


def _quiet() -> contextlib.AbstractContextManager:
    """Hide Cellpose's progress bars (tqdm on stderr); exceptions still propagate."""
    return contextlib.redirect_stderr(io.StringIO())


def cellpose_version() -> str:
    try:
        from importlib.metadata import version

        v = version("cellpose")
    except Exception as exc:  # noqa: BLE001 - any failure means "not installed"
        raise PeerUnavailable(f"cellpose is not installed ({exc}); `pip install 'cellpose<4'`") from None
    if int(v.split(".")[0]) >= 4:
        raise PeerUnavailable(
            f"cellpose {v} is Cellpose-SAM (a ViT-L image encoder), not a network to train from scratch on a "
            "CPU; install cellpose 3 (`pip install --no-deps 'cellpose<4'` keeps this torch)"
        )
    try:
        from cellpose import models, train  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - e.g. a missing dependency of cellpose
        raise PeerUnavailable(f"cellpose {v} is installed but does not import: {exc!r}") from None
    return v


def train_cellpose(
    train_items: list[Item], val: list[Item], minutes: float, workdir: Path, mkldnn: bool
) -> tuple[Callable[[Item], np.ndarray], dict[str, Any]]:
    """Train Cellpose 3 from scratch for a time budget; choose its thresholds on ``val``.

    Returns
    -------
    predict_fn, record
        ``Item -> labels`` with the chosen thresholds, and the run's record.
    """
    import logging
    import warnings

    from cellpose import dynamics, models, train

    logging.getLogger("cellpose").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Sparse invariant checks", category=UserWarning)
    cpu0, t0 = time.process_time(), time.perf_counter()
    budget = minutes * 60.0
    # grey plane -> (2, H, W) normalised as train_seg would, once (not again in the probe)
    norm = {**models.normalize_default, "normalize": True}
    data = train._reshape_norm([it.grey for it in train_items], channels=[0, 0], normalize_params=norm)
    with _quiet():
        flows = dynamics.labels_to_flows([it.labels.astype(np.int32) for it in train_items], device=torch.device("cpu"))
    flows_s = time.perf_counter() - t0
    model = models.CellposeModel(gpu=False, pretrained_model=None, nchan=2, mkldnn=mkldnn)
    common = {
        "train_data": data,
        "train_labels": flows,
        "normalize": {"normalize": False},  # done above (a dict: train_seg mutates its default otherwise)
        "batch_size": CP_BATCH,
        "learning_rate": CP_LR,
        "rescale": False,  # no per-image object size: train at the native scale, as ours does
        "save_path": str(workdir),
        "save_every": 10**9,
    }
    # time two batches on a throw-away copy (epoch 0 has learning rate 0 in train_seg)
    t1 = time.perf_counter()
    with _quiet():
        train.train_seg(copy.deepcopy(model.net), n_epochs=1, nimg_per_epoch=2 * CP_BATCH, model_name="probe", **common)
    probe_s = time.perf_counter() - t1
    per_batch = probe_s / 2
    batches = max(1, int((budget - (time.perf_counter() - t0)) / per_batch))
    per_epoch = max(1, -(-batches // CP_TARGET_EPOCHS))
    n_epochs = max(1, batches // per_epoch)
    print(
        f"[cellpose] inputs and flows {flows_s:.0f} s, probe {per_batch:.1f} s per batch of {CP_BATCH}: "
        f"{n_epochs} epochs x {per_epoch} batches",
        flush=True,
    )
    with _quiet():
        _, losses, _ = train.train_seg(
            model.net, n_epochs=n_epochs, nimg_per_epoch=per_epoch * CP_BATCH, model_name="cellpose-scratch", **common
        )
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0

    # thresholds on the validation split: the network once per image, the masks per setting
    outs = []
    for it in val:
        _, fl, _ = model.eval(it.grey, channels=[0, 0], rescale=1.0, compute_masks=False)
        outs.append((it.labels, fl[1], fl[2]))
    grid = []
    for cp in CP_CELLPROB:
        for ft in CP_FLOW:
            res = []
            for lab, dp, prob in outs:
                pred = dynamics.resize_and_compute_masks(
                    dp, prob, niter=200, cellprob_threshold=cp, flow_threshold=ft, min_size=15, device=model.device
                )
                res.append(matching(lab, np.asarray(pred)))
            grid.append({"cellprob_threshold": cp, "flow_threshold": ft, "val_ap50": pool(res).ap50})
    best = max(grid, key=lambda g: g["val_ap50"])
    kw = {"cellprob_threshold": best["cellprob_threshold"], "flow_threshold": best["flow_threshold"]}

    def predict_fn(it: Item) -> np.ndarray:
        return np.asarray(model.eval(it.grey, channels=[0, 0], rescale=1.0, **kw)[0])

    record = {
        "train_wall_s": wall,
        "train_cpu_s": cpu,
        "flows_s": flows_s,
        "probe_s": probe_s,
        "n_epochs": n_epochs,
        "batches": n_epochs * per_epoch,
        "patches": n_epochs * per_epoch * CP_BATCH,
        "batch_size": CP_BATCH,
        "patch": 224,
        "mkldnn": mkldnn,
        "thresholds": kw,
        "val_grid": grid,
        "loss_first_last": [float(losses[0]), float(losses[-1])],
    }
    return predict_fn, record


# ----------------------------------------------------------------------------- report


def _f(v: float | None, w: int = 6, p: int = 3) -> str:
    return f"{'-':>{w}}" if v is None else f"{v:>{w}.{p}f}"


def _s(v: float | None, p: int = 0) -> str:
    return f"{'-':>8}" if v is None else f"{v:>8.{p}f}"


def print_table(report: dict[str, Any]) -> None:
    i = report["info"]
    print()
    print("=" * 118)
    print(
        f"data          {i['data']}: test {i['n_test']} images {i['test_kinds']}, "
        f"validation {i['n_val']}, training {i['n_train']}"
    )
    print(f"CPU           {i['cpu']}, {i['threads']} thread(s); torch {i['torch']}, python {i['python']}")
    limited = f"; LIMITED to {i['limit']} images per split (smoke run)" if i["limit"] else ""
    budget = "no training (--skip-train)" if i["skip_train"] else f"{i['minutes']:g} min of training per network"
    print(f"budget        {budget}{limited}")
    print("-" * 118)
    kinds = [k for k in MODALITIES if k in i["test_kinds"]]
    head = "".join(f"{'AP50 ' + SHORT[k]:>10}" for k in kinds)
    print(
        f"{'method':<25}{'AP50':>6}{'AP75':>7}{'F1':>7}{'PQ':>7}{'SEG':>7}{head}{'train s':>9}{'CPU s':>8}{'pred s':>8}"
    )
    for r in report["rows"]:
        if "scores" not in r:
            print(f"{r['method']:<25}not run: {r['error']}")
            continue
        s = r["scores"]
        pk = "".join(_f(s["per_kind"].get(k, {}).get("ap50"), 10) for k in kinds)
        print(
            f"{r['method']:<25}{_f(s['ap50'])}{_f(s['ap75'], 7)}{_f(s['f1_50'], 7)}{_f(s['pq'], 7)}{_f(s['seg'], 7)}"
            f"{pk}{_s(r.get('train_wall_s'))}{_s(r.get('train_cpu_s'))}{_s(s['predict_s'], 1)}"
        )
    print("-" * 118)
    for r in report["rows"]:
        if r.get("detail"):
            print(f"{r['method']:<25}{r['detail']}")
    print("-" * 118)
    v = report["verdict"]
    print(f"{v['status']}: {v['summary']}")
    print(f"total wall time {report['total_wall_s'] / 60:.1f} min")
    print("=" * 118)


def verdict(rows: list[dict[str, Any]], minutes: float, limited: bool = False) -> dict[str, str]:
    """PASS when ours from scratch beats the classical pipeline and the peer at the same budget.

    INFO otherwise: no network trained, no peer, a smoke run (``limited``), or ours behind.
    """
    by = {r["key"]: r for r in rows if "scores" in r}
    ours = by.get("ours")
    rivals = [by[k] for k in ("classical", "cellpose") if k in by]
    if ours is None:
        best = max(rivals, key=lambda r: r["scores"]["ap50"]) if rivals else None
        ship = by.get("shipped")
        text = "no network trained here (--skip-train or it failed)"
        if best is not None and ship is not None:
            text += f"; shipped AP50 {ship['scores']['ap50']:.3f} vs {best['method']} {best['scores']['ap50']:.3f}"
        return {"status": "INFO", "summary": text}
    a = ours["scores"]["ap50"]
    parts = [f"ours from scratch ({minutes:g} min) AP50 {a:.3f}"]
    for r in rivals:
        parts.append(f"{r['method']} {r['scores']['ap50']:.3f} ({a - r['scores']['ap50']:+.3f})")
    won = all(a > r["scores"]["ap50"] for r in rivals)
    peer_ran = "cellpose" in by
    status = "PASS" if won and peer_ran and not limited else "INFO"
    tail = "" if peer_ran else "; no peer network ran, so only the classical pipeline is compared"
    tail += "; smoke run on a few images (--limit): no verdict" if limited else ""
    return {"status": status, "summary": "; ".join(parts) + tail}


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=20.0, help="CPU training budget per network (default 20)")
    p.add_argument("--skip-train", action="store_true", help="only the classical pipeline and the shipped model")
    p.add_argument("--peer", default="cellpose", choices=("cellpose", "none"), help="peer network (cellpose)")
    p.add_argument(
        "--peer-no-mkldnn",
        action="store_true",
        help="keep Cellpose off its MKL-DNN layout on the CPU (on by default in Cellpose when available)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all CPU cores)")
    p.add_argument("--limit", type=int, default=None, help="smoke runs: only the first N images of each split")
    p.add_argument("--data", type=Path, default=None, help="folder holding dsb2018/ (default ../shared/data)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.minutes <= 0 or (args.limit is not None and args.limit < 1):
        p.error("--minutes and --limit must be positive")
    if args.threads is None:
        args.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    folder = find_dsb2018(args.data)
    test_names, val_names = read_list(TEST_LIST), read_list(VAL_LIST)
    held = set(test_names) | set(val_names)
    train_names = [p.stem for p in sorted((folder / "images").glob("*.png")) if p.stem not in held]
    if args.limit is not None:
        test_names, val_names = test_names[: args.limit], val_names[: args.limit]
        train_names = train_names[: 4 * args.limit]
    names = {"train": train_names, "val": val_names, "test": test_names}
    test, val = load_items(folder, test_names), load_items(folder, val_names)
    test_kinds = {k: sum(it.kind == k for it in test) for k in MODALITIES}
    print(
        f"DSB2018 from {folder}: {len(test)} test, {len(val)} validation, {len(train_names)} training images; "
        f"test kinds {test_kinds}; {args.threads} torch thread(s)",
        flush=True,
    )
    rows: list[dict[str, Any]] = []

    # 1. classical
    t0 = time.perf_counter()
    best, grid = tune_classical(val)
    tune_s = time.perf_counter() - t0
    params = {k: best[k] for k in ("sigma", "min_size", "min_distance")}
    print(f"[classical] chosen on validation (AP50 {best['val_ap50']:.3f}, {tune_s:.0f} s): {params}", flush=True)
    sc = score(lambda it: classical(it.grey, **params), test)
    rows.append(
        {
            "key": "classical",
            "method": "classical (skimage)",
            "params": params,
            "val_grid": grid,
            "tune_s": tune_s,
            "scores": sc,
            "detail": f"Otsu + distance watershed; on validation {len(grid)} settings in {tune_s:.0f} s, chose "
            f"blur sigma {params['sigma']:g}, smallest object {params['min_size']} px, min_distance "
            f"{params['min_distance']} (val AP50 {best['val_ap50']:.3f})",
        }
    )
    print(f"[classical] test AP50 {sc['ap50']:.3f} ({sc['predict_s']:.0f} s)", flush=True)

    # 2. shipped
    from napari_unet_loop.core.errors import ModelError
    from napari_unet_loop.core.model_files import load

    try:
        shipped = load(SHIPPED)
        sc = score(unet_predictor(shipped), test)
        rows.append(
            {
                "key": "shipped",
                "method": f"shipped {SHIPPED}",
                "scores": sc,
                "detail": "the project's model, trained on the training split for far longer (reference)",
            }
        )
        print(f"[shipped] test AP50 {sc['ap50']:.3f} ({sc['predict_s']:.0f} s)", flush=True)
    except ModelError as exc:
        rows.append({"key": "shipped", "method": f"shipped {SHIPPED}", "error": str(exc)})

    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        workdir = Path(tmp)
        if not args.skip_train:
            # 3. ours from scratch
            row: dict[str, Any] = {"key": "ours", "method": f"ours, scratch {args.minutes:g}m"}
            try:
                rec = train_unet_scratch(folder, args.minutes, args.threads, workdir, args.limit, names)
                model = load(rec.pop("path"))
                tr = model.card.training or {}
                row.update(rec)
                row.update({k: tr.get(k) for k in ("steps", "patches", "seconds")})
                row["thresholds"] = model.card.postprocess.to_dict()
                row["scores"] = score(unet_predictor(model), test)
                cfg = tr.get("config", {})
                row["detail"] = (
                    f"napari-unet-loop train --from scratch: {tr.get('steps')} steps, {tr.get('patches')} patches "
                    f"of {cfg.get('patch_size')} px (batch {cfg.get('batch_size')}), keep-best and thresholds "
                    "on validation"
                )
                print(f"[ours] test AP50 {row['scores']['ap50']:.3f}", flush=True)
            except (RuntimeError, ModelError) as exc:
                row["error"] = str(exc)
                print(f"[ours] failed: {exc}", flush=True)
            rows.append(row)

            # 4. peer
            if args.peer == "cellpose":
                row = {"key": "cellpose", "method": f"cellpose, scratch {args.minutes:g}m"}
                try:
                    version = cellpose_version()
                    row["method"] = f"cellpose {version.split('.')[0]}, scratch {args.minutes:g}m"
                    row["version"] = version
                    train_items = load_items(folder, train_names)
                    predict_fn, rec = train_cellpose(train_items, val, args.minutes, workdir, not args.peer_no_mkldnn)
                    del train_items
                    row.update(rec)
                    row["scores"] = score(predict_fn, test)
                    th = rec["thresholds"]
                    row["detail"] = (
                        f"cellpose {version} train_seg, CPnet from scratch: {rec['n_epochs']} epochs, "
                        f"{rec['patches']} patches of 224 px (batch {CP_BATCH}, lr {CP_LR}, no rescale), inputs "
                        f"and flows {rec['flows_s']:.0f} s; chosen on validation: cellprob "
                        f"{th['cellprob_threshold']:g}, flow {th['flow_threshold']:g}"
                    )
                    lf, ll = rec["loss_first_last"]
                    row["detail"] += f"; training loss {lf:.3f} -> {ll:.3f}"
                    if rec["n_epochs"] < 10:
                        row["detail"] += " (under 10 epochs: train_seg's learning-rate warm-up never ended)"
                    print(f"[cellpose] test AP50 {row['scores']['ap50']:.3f}", flush=True)
                except PeerUnavailable as exc:
                    row["error"] = str(exc)
                    print(f"[cellpose] not run: {exc}", flush=True)
                rows.append(row)

    report = {
        "info": {
            "data": str(folder),
            "n_test": len(test),
            "n_val": len(val),
            "n_train": len(train_names),
            "test_kinds": {k: v for k, v in test_kinds.items() if v},
            "minutes": args.minutes,
            "threads": args.threads,
            "limit": args.limit,
            "cpu": cpu_name(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "skip_train": args.skip_train,
            "peer": args.peer,
        },
        "rows": rows,
        "verdict": verdict(rows, args.minutes, args.limit is not None),
        "total_wall_s": time.perf_counter() - t_start,
    }
    print_table(report)
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
