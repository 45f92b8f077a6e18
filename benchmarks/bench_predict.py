"""Prediction speed: our tiled predictor and ``segment`` against a naive tile-by-tile loop.

One run measures, on the same model and the same image:

1. ``predict(net, image, device=..., tile=..., batch_size=...)``: normalised image to
   per-pixel probabilities (overlap-tiling with reflected indices, batched tiles);
2. the same through ``segment`` (raw grey image to instance labels, via
   ``run(iter_segment(...))``, which is exactly what ``segment()`` does), with the
   shares of input preparation and of post-processing (seeded watershed);
3. a naive baseline written here, the way simple plugins do it: tiles of the same
   core size with a fixed overlap, cut one at a time and mirror-padded with
   ``numpy.pad`` per tile, one network call per tile (batch size 1), each output
   tile copied back with ``.cpu().numpy()``, overlaps averaged uniformly; same
   network, same precision (autocast), same softmax / sigmoid on the outputs.

4. when MONAI is installed (a benchmark-only dependency): MONAI's
   ``sliding_window_inference`` at its defaults (overlap 0.25, batch 1, constant
   blending, image and output on the host), followed by our seeded watershed so it
   ends at instance labels too; and at its best settings here (image on the device,
   ``sw_batch_size`` = our batch, Gaussian blending, autocast), probabilities only.
   MONAI's window is our tile's network input (core + 2 halo).

The image is a real DSB2018 fluorescence image from the package's sample data,
made grey and normalised with ``prepare_input``, then mirror-tiled up to the
requested size. Run ``python benchmarks/bench_predict.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import cpu_name
from napari_unet_loop.core.device import DEVICE_CHOICES, autocast_dtype, resolve_device
from napari_unet_loop.core.errors import ModelError
from napari_unet_loop.core.image import prepare_input
from napari_unet_loop.core.model_files import Model, load, new_model
from napari_unet_loop.core.postprocess import instances
from napari_unet_loop.core.predict import auto_tile_size, model_halo, outputs_to_probabilities, predict
from napari_unet_loop.core.predict import run as run_progress
from napari_unet_loop.core.segment import iter_segment
from napari_unet_loop.core.tiling import TileGrid, round_up
from napari_unet_loop.core.unet import UNet, UNetConfig

SAMPLE = Path(__file__).resolve().parents[1] / "src/napari_unet_loop/sample_data/nuclei_fluorescence.png"
WARMUP_SIDE = 256


# ----------------------------------------------------------------------------- setup


def load_model(spec: str | None) -> tuple[Model, str]:
    """The model to benchmark and a line saying which it is."""
    if spec is not None:
        m = load(spec)
        return m, f"{m.name} ({m.path})"
    try:
        m = load("default")
        return m, f"shipped default model {m.name!r} ({m.path})"
    except ModelError as exc:
        m = new_model(UNetConfig(), name="untrained-default")
        return m, f"freshly initialised default UNetConfig() (shipped model did not load: {exc})"


def sample_grey(norm) -> np.ndarray:
    """The DSB2018 sample as a normalised ``(H, W)`` float32 grey image."""
    import imageio.v3 as iio

    rgba = np.asarray(iio.imread(SAMPLE))
    return prepare_input(rgba, 1, norm, rgb=True)[0]


def mirror_tile(grey: np.ndarray, side: int) -> np.ndarray:
    """Mirror-tile ``grey`` (reflect, repeated as needed) to a ``side x side`` image."""
    h, w = grey.shape
    out = np.pad(grey, ((0, max(0, side - h)), (0, max(0, side - w))), mode="reflect")
    return np.ascontiguousarray(out[:side, :side])


# ----------------------------------------------------------------------------- naive baseline


def naive_predict(
    net: UNet, image: np.ndarray, device: torch.device, core: int, overlap: int, precision: str
) -> np.ndarray:
    """One tile at a time, the way simple plugins predict large images.

    Windows of side ``core + overlap`` step by ``core`` over the image (so
    neighbours overlap by ``overlap`` pixels); each is cut from the image,
    mirror-padded with ``numpy.pad`` where it crosses the border, run through the
    network alone (batch size 1), copied back with ``.cpu().numpy()`` and added
    to an accumulator; overlapping predictions are averaged uniformly.
    """
    img = image[0] if image.ndim == 3 else image
    h, w = img.shape
    side = core + overlap
    off = overlap // 2
    n_cls = net.config.n_classes
    acc = np.zeros((net.config.out_channels, h, w), dtype=np.float32)
    cnt = np.zeros((h, w), dtype=np.float32)
    dtype = autocast_dtype(device, precision)
    net.eval().to(device)
    with torch.no_grad():
        for y0 in range(-off, h - off, core):
            for x0 in range(-off, w - off, core):
                ya, yb, xa, xb = max(y0, 0), min(y0 + side, h), max(x0, 0), min(x0 + side, w)
                pad = ((ya - y0, y0 + side - yb), (xa - x0, x0 + side - xb))
                patch = np.pad(img[ya:yb, xa:xb], pad, mode="reflect")
                x = torch.from_numpy(patch[None, None]).to(device)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    logits = net(x)
                logits = logits.float()
                probs = torch.cat([torch.softmax(logits[:, :n_cls], 1), torch.sigmoid(logits[:, n_cls:])], 1)
                out = probs.cpu().numpy()[0]
                acc[:, ya:yb, xa:xb] += out[:, ya - y0 : yb - y0, xa - x0 : xb - x0]
                cnt[ya:yb, xa:xb] += 1
    acc /= cnt
    return acc


# ----------------------------------------------------------------------------- measuring


def _rss_kib() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return None


def _maxrss_kib() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux


def _release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc), so the next method starts from a low RSS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any, dict[str, Any]]:
    """Run ``fn`` once: wall seconds, its result, and peak-memory figures."""
    _release_free_memory()
    reset = _reset_peak_rss()
    base = _rss_kib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    result = fn()
    _sync(device)
    dt = time.perf_counter() - t0
    peak = _maxrss_kib()
    mem: dict[str, Any] = {
        "host_peak_rss_mib": peak / 1024,
        "host_peak_is_per_method": reset,
        "host_rss_before_mib": None if base is None else base / 1024,
        "host_extra_mib": None if (base is None or not reset) else (peak - base) / 1024,
    }
    if device.type == "cuda":
        mem["gpu_peak_alloc_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return dt, result, mem


def timed_segment(model: Model, raw: np.ndarray, **kw) -> tuple[Any, dict[str, float]]:
    """``segment`` (as ``run(iter_segment(...))``) with stage times from its progress."""
    marks: dict[str, float] = {}
    device = torch.device(kw["device"])

    def callback(p) -> None:
        if p.stage == "predict" and p.done == 0 and "predict" not in marks:
            marks["predict"] = time.perf_counter()
        elif p.stage == "instances" and p.done == 0:
            _sync(device)
            marks["instances"] = time.perf_counter()

    t0 = time.perf_counter()
    seg = run_progress(iter_segment(model, raw, **kw), callback)
    t1 = time.perf_counter()
    stages = {
        "prepare_s": marks["predict"] - t0,
        "network_s": marks["instances"] - marks["predict"],
        "postprocess_s": t1 - marks["instances"],
    }
    return seg, stages


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=DEVICE_CHOICES, help="compute device (default cpu)")
    p.add_argument("--size", type=int, default=None, help="image side (default 2048; 8192 on CUDA)")
    p.add_argument("--tile", type=int, default=None, help="core tile side (default: auto_tile_size)")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per pass for ours (default: auto)")
    p.add_argument(
        "--model",
        default=None,
        help="model name or path (default: the shipped default, else a fresh UNetConfig())",
    )
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="autocast precision")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per method after warm-up (default 1)")
    p.add_argument(
        "--naive-overlap",
        type=int,
        default=None,
        help="overlap of neighbouring naive tiles in pixels (default 2 x halo: same network input "
        "size and tile count as ours; 0: non-overlapping core tiles)",
    )
    p.add_argument("--no-segment", action="store_true", help="skip the segment() measurement")
    p.add_argument("--no-monai", action="store_true", help="skip the MONAI comparison")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.size is not None and args.size < 16:
        p.error("--size must be >= 16")
    if args.naive_overlap is not None and args.naive_overlap < 0:
        p.error("--naive-overlap must be >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    size = args.size or (8192 if device.type == "cuda" else 2048)

    model, model_desc = load_model(args.model)
    net = model.net.eval().to(device)
    cfg = net.config
    if cfg.in_channels != 1:
        raise SystemExit(f"this benchmark feeds a grey image; the model wants {cfg.in_channels} channels")
    m = cfg.size_multiple
    halo = model_halo(net)
    auto_core, auto_batch = auto_tile_size(net, device, args.precision)
    core = auto_core if args.tile is None else round_up(args.tile, m)
    batch = args.batch_size or auto_batch
    grid = TileGrid((size, size), core, halo, m)
    eff_core = grid.core_shape[0]  # the tile core shrinks to the image on small images
    overlap = 2 * halo if args.naive_overlap is None else round_up(args.naive_overlap, m)
    amp = autocast_dtype(device, args.precision)
    precision_desc = f"{args.precision} -> {'fp32' if amp is None else str(amp).replace('torch.', '')}"

    grey = sample_grey(model.card.normalization)
    big = mirror_tile(grey, size)  # normalised grey, fed as is to predict / naive / segment
    x = big[None]
    mpx = size * size / 1e6

    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "model": model_desc,
        "architecture": cfg.to_dict(),
        "precision": precision_desc,
        "image": f"{SAMPLE.name} {grey.shape[0]}x{grey.shape[1]} mirror-tiled to {size}x{size}",
        "size": size,
        "megapixels": mpx,
        "tile_core": eff_core,
        "tile_core_requested": core,
        "auto_tile": [auto_core, auto_batch],
        "halo": halo,
        "network_input": grid.tile_shape[0],
        "n_tiles": len(grid),
        "batch_size": batch,
        "naive_tile_side": eff_core + overlap,
        "naive_overlap": overlap,
        "naive_n_tiles": math.ceil(size / eff_core) ** 2,
        "repeats": args.repeats,
    }
    print(f"model: {model_desc}", flush=True)

    kw = {"device": device, "tile": core, "batch_size": batch, "precision": args.precision}
    seg_kw = {**kw, "rgb": False}

    def run_ours(img: np.ndarray) -> np.ndarray:
        return predict(net, img, **kw)

    def run_naive(img: np.ndarray) -> np.ndarray:
        t = min(core, round_up(img.shape[-1], m))
        return naive_predict(net, img, device, t, overlap, args.precision)

    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        sliding_window_inference = None
        if not args.no_monai:
            print("MONAI is not installed (pip install monai): its rows are left out", flush=True)
    use_monai = sliding_window_inference is not None and not args.no_monai
    window = grid.tile_shape[0]
    amp = autocast_dtype(device, args.precision)

    def predictor(t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            y = net(t)
        return outputs_to_probabilities(y.float(), net.config.n_classes)

    def run_monai(img: np.ndarray, best: bool) -> np.ndarray:
        xt = torch.from_numpy(np.ascontiguousarray(img[None]))
        with torch.inference_mode():
            if best:
                y = sliding_window_inference(
                    xt.to(device), (window, window), batch, predictor, overlap=0.25, mode="gaussian"
                )
            else:
                y = sliding_window_inference(xt, (window, window), 1, predictor, sw_device=device, device="cpu")
        return y[0].float().cpu().numpy()

    def run_monai_labels(img: np.ndarray) -> np.ndarray:
        probs = run_monai(img, best=False)
        return instances(probs, model.card.postprocess)

    # warm-up on a small crop: thread pools, allocator, kernel selection
    t0 = time.perf_counter()
    small = np.ascontiguousarray(big[: min(WARMUP_SIDE, size), : min(WARMUP_SIDE, size)])
    run_ours(small[None])
    run_naive(small[None])
    if not args.no_segment:
        timed_segment(model, small, **seg_kw)
    if use_monai:
        run_monai(small[None], best=True)
    _sync(device)
    print(f"warm-up on {small.shape[0]}x{small.shape[1]}: {time.perf_counter() - t0:.2f} s", flush=True)

    times: dict[str, list[float]] = {"ours": [], "naive": [], "segment": [], "monai_labels": [], "monai_best": []}
    mems: dict[str, dict[str, Any]] = {}
    stages: list[dict[str, float]] = []
    p_ours = p_naive = None
    n_objects = None
    for r in range(args.repeats):
        # methods interleaved per repeat so background load drifts hit all of them alike
        p_ours = None
        dt, p_ours, mems["ours"] = measure(lambda: run_ours(x), device)
        times["ours"].append(dt)
        print(f"[{r + 1}/{args.repeats}] ours predict   {dt:8.2f} s", flush=True)
        p_naive = None
        dt, p_naive, mems["naive"] = measure(lambda: run_naive(x), device)
        times["naive"].append(dt)
        print(f"[{r + 1}/{args.repeats}] naive loop     {dt:8.2f} s", flush=True)
        if not args.no_segment:
            dt, (seg, st), mems["segment"] = measure(lambda: timed_segment(model, big, **seg_kw), device)
            n_objects = int(seg.labels.max())
            del seg
            times["segment"].append(dt)
            stages.append(st)
            print(f"[{r + 1}/{args.repeats}] ours segment   {dt:8.2f} s", flush=True)
        if use_monai:
            dt, _, mems["monai_labels"] = measure(lambda: run_monai_labels(x), device)
            times["monai_labels"].append(dt)
            print(f"[{r + 1}/{args.repeats}] MONAI defaults + watershed {dt:8.2f} s", flush=True)
            dt, _, mems["monai_best"] = measure(lambda: run_monai(x, best=True), device)
            times["monai_best"].append(dt)
            print(f"[{r + 1}/{args.repeats}] MONAI best (probs) {dt:8.2f} s", flush=True)

    # sanity: how far the naive average is from ours (seams of uniform averaging)
    diff_max = max(float(np.abs(p_ours[c] - p_naive[c]).max()) for c in range(p_ours.shape[0]))
    diff_mean = float(np.mean([np.abs(p_ours[c] - p_naive[c]).mean() for c in range(p_ours.shape[0])]))
    fg_agree = float(np.mean((p_ours[0] < 0.5) == (p_naive[0] < 0.5)))
    del p_ours, p_naive

    def summary(ts: list[float]) -> dict[str, Any]:
        med = statistics.median(ts)
        return {"times_s": ts, "median_s": med, "min_s": min(ts), "mpx_per_s": mpx / med}

    results: dict[str, Any] = {"ours_predict": summary(times["ours"]), "naive": summary(times["naive"])}
    results["ours_predict"]["memory"] = mems["ours"]
    results["naive"]["memory"] = mems["naive"]
    if times["segment"]:
        results["ours_segment"] = summary(times["segment"])
        results["ours_segment"]["memory"] = mems["segment"]
        results["ours_segment"]["stages_median_s"] = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
        results["ours_segment"]["postprocess_share"] = statistics.median(
            s["postprocess_s"] / t for s, t in zip(stages, times["segment"])
        )
        results["ours_segment"]["n_objects"] = n_objects
    results["ratio_ours_over_naive_mpx_per_s"] = results["ours_predict"]["mpx_per_s"] / results["naive"]["mpx_per_s"]
    for key in ("monai_labels", "monai_best"):
        if times[key]:
            results[key] = summary(times[key])
            results[key]["memory"] = mems[key]
    results["agreement"] = {
        "prob_max_abs_diff": diff_max,
        "prob_mean_abs_diff": diff_mean,
        "foreground_agreement": fg_agree,
    }
    report = {"info": info, "results": results}
    print_table(report, device)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return report


def _mem(mem: dict[str, Any], device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {mem['gpu_peak_alloc_mib']:8.0f} MiB"
    if mem["host_extra_mib"] is not None:
        return f"+{mem['host_extra_mib']:6.0f} MiB (peak RSS {mem['host_peak_rss_mib']:.0f})"
    return f"peak RSS {mem['host_peak_rss_mib']:.0f} MiB (process high-water)"


def print_table(report: dict[str, Any], device: torch.device) -> None:
    i, r = report["info"], report["results"]
    print()
    print("=" * 78)
    print(f"device        {i['device']} ({i['device_name']})")
    print(f"torch         {i['torch']}  (numpy {i['numpy']}, python {i['python']})")
    print(
        f"CPU threads   torch {i['torch_threads']} (interop {i['torch_interop_threads']}), "
        f"os.cpu_count {i['cpu_count']}, affinity {i['cpu_affinity']}"
    )
    print(f"model         {i['model']}")
    print(f"precision     {i['precision']}")
    print(f"image         {i['image']} ({i['megapixels']:.2f} Mpx)")
    print(
        f"ours          core {i['tile_core']} + halo {i['halo']} -> input {i['network_input']}, "
        f"{i['n_tiles']} tiles, batch {i['batch_size']} (auto: core {i['auto_tile'][0]}, "
        f"batch {i['auto_tile'][1]})"
    )
    print(
        f"naive         tile {i['naive_tile_side']} (core {i['tile_core']} + overlap "
        f"{i['naive_overlap']}), {i['naive_n_tiles']} tiles, batch 1"
    )
    print(f"repeats       {i['repeats']} (median shown)")
    print("-" * 78)
    mem_head = "peak GPU memory" if device.type == "cuda" else "peak host memory (extra over start)"
    print(f"{'method':<24}{'wall s':>9}{'Mpx/s':>9}   {mem_head}")
    rows = [("ours: predict -> probs", r["ours_predict"]), ("naive: 1 tile at a time", r["naive"])]
    if "ours_segment" in r:
        rows.append(("ours: segment -> labels", r["ours_segment"]))
    if "monai_labels" in r:
        rows.append(("MONAI defaults -> labels", r["monai_labels"]))
        rows.append(("MONAI best -> probs", r["monai_best"]))
    for name, s in rows:
        print(f"{name:<24}{s['median_s']:>9.2f}{s['mpx_per_s']:>9.3f}   {_mem(s['memory'], device)}")
    if "ours_segment" in r:
        s = r["ours_segment"]
        st = s["stages_median_s"]
        print(
            f"  segment stages: prepare {st['prepare_s']:.2f} s, network {st['network_s']:.2f} s, "
            f"post-processing {st['postprocess_s']:.2f} s "
            f"({100 * s['postprocess_share']:.0f}% of segment), {s['n_objects']} objects"
        )
    print("-" * 78)
    print(f"ratio ours / naive (Mpx/s, predict):  {r['ratio_ours_over_naive_mpx_per_s']:.2f}x")
    if "ours_segment" in r:
        seg_ratio = r["ours_segment"]["mpx_per_s"] / r["naive"]["mpx_per_s"]
        print(f"ratio segment / naive (Mpx/s):        {seg_ratio:.2f}x")
    if "ours_segment" in r and "monai_labels" in r:
        ours = r["ours_segment"]["mpx_per_s"]
        print(f"ratio segment / MONAI defaults to labels:  {ours / r['monai_labels']['mpx_per_s']:.2f}x")
        print(f"ratio segment (labels) / MONAI best (probs): {ours / r['monai_best']['mpx_per_s']:.2f}x")
    a = r["agreement"]
    print(
        f"ours vs naive probabilities: max |diff| {a['prob_max_abs_diff']:.3g}, "
        f"mean {a['prob_mean_abs_diff']:.3g}, foreground agreement {100 * a['foreground_agreement']:.3f}%"
    )
    print("=" * 78)


if __name__ == "__main__":
    main()
