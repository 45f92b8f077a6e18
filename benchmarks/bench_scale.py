"""Out-of-core segmentation: peak memory against image size, cluster vs one process, scheduler overhead.

One run prints:

1. **Peak memory against image size.** For each ``--sizes`` value it writes a square OME-Zarr image
   of synthetic nuclei (chunk by chunk, never whole in memory), then runs the real command
   ``napari-unet-loop segment IMAGE.ome.zarr -o OUT --format zarr --cluster none`` in a fresh
   process and reads that process's peak resident memory (``wait4``'s ``ru_maxrss``). The
   ratio to the smallest size must stay near 1 (the target: 1.25x plus 100 MB at 20,000 px).
2. **``--cluster none`` vs ``local``** on the ``--compare`` size: wall time, Mpx/s, the ratio, and
   whether the labels are byte-identical.
3. **The scheduler's overhead per task**: ``--tasks`` no-op tasks through the LocalCluster.
4. **The stitching's share**: phase 2 (merging blocks into chunks) over the whole run.

The nuclei are discs of ``--diameter`` px and the model is told so (``--diameter``), so the
network sees them at its own scale; large diameters make the network input small (fast), which
keeps the large sizes affordable on a CPU; memory per block does not depend on it by much.

Run ``python benchmarks/bench_scale.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import cpu_name, write_json

CHUNK = 1024


def nuclei_tile(side: int, diameter: float, seed: int) -> np.ndarray:
    """A ``side`` x ``side`` uint8 tile of bright discs (some touching) on a dim, noisy background."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    img = np.zeros((side, side), np.float32)
    r = diameter / 2
    n = int(side * side / (np.pi * r * r) * 0.3)
    for _ in range(n):
        rr = r * rng.uniform(0.8, 1.2)
        img[disk((rng.uniform(0, side), rng.uniform(0, side)), rr, shape=img.shape)] = rng.uniform(0.5, 1.0)
    img = img * 200 + rng.normal(15, 4, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def write_image(path: Path, side: int, diameter: float) -> None:
    """An NGFF 0.4 OME-Zarr image (one level) of ``side`` x ``side``, written one chunk at a time."""
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_multiscales_metadata

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    arr = root.create_array("0", shape=(side, side), chunks=(CHUNK, CHUNK), dtype="uint8", fill_value=0)
    tiles = [nuclei_tile(CHUNK, diameter, s) for s in range(4)]
    for y in range(0, side, CHUNK):
        for x in range(0, side, CHUNK):
            t = tiles[(y // CHUNK * 7 + x // CHUNK) % 4]
            arr[y : y + CHUNK, x : x + CHUNK] = t[: min(CHUNK, side - y), : min(CHUNK, side - x)]
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}]
    write_multiscales_metadata(root, datasets, fmt=FormatV04(), axes=axes, name="image")


def run_cli(args: list[str]) -> tuple[float, float, str]:
    """Run the command line in a fresh process: (wall seconds, peak RSS in MB, its stderr)."""
    cmd = [sys.executable, "-c", "import sys; from napari_unet_loop.cli import main; sys.exit(main())", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(args)}\n{err}")
    return wall, usage.ru_maxrss / 1024, err  # Linux: kB


def labels_of(path: Path) -> np.ndarray:
    import zarr

    group = zarr.open_group(str(path), mode="r")["labels"]
    return np.asarray(group[next(iter(group.group_keys()))]["0"])


def scheduler_overhead(n_tasks: int, workers: int) -> float:
    """Seconds per no-op task through a LocalCluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0", silence_logs=50) as cl:
        with Client(cl) as c:
            c.gather(c.map(int, range(20)))  # warm up
            t0 = time.perf_counter()
            c.gather(c.map(abs, range(n_tasks), pure=False))
            return (time.perf_counter() - t0) / n_tasks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4000, 8000, 16000, 20000], help="image sides (px)")
    p.add_argument("--compare", type=int, default=4096, help="side for the none-vs-local comparison")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes for the comparison")
    p.add_argument("--diameter", type=float, default=80.0, help="nuclei diameter (px), given to the model")
    p.add_argument("--block", type=int, default=2048)
    p.add_argument("--tasks", type=int, default=500, help="no-op tasks for the scheduler overhead")
    p.add_argument("--model", default="default")
    p.add_argument("--keep", default=None, help="folder to keep the images and outputs in (default: temporary)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    common = ["--model", args.model, "--diameter", str(args.diameter), "--block", str(args.block), "--device", "cpu"]
    report: dict = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "settings": vars(args) | {"json": str(args.json)},
        "memory": [],
    }
    print(f"{cpu_name()}, {os.cpu_count()} cores; block {args.block}, nuclei {args.diameter:.0f} px")
    print("\n1. peak memory of `segment IMAGE.ome.zarr --format zarr --cluster none` (fresh process each)")
    print(f"{'side':>7} {'Mpx':>7} {'blocks':>6} {'wall s':>8} {'Mpx/s':>7} {'peak MB':>8} {'x smallest':>10}")
    base = None
    try:
        for side in args.sizes:
            img = work / f"img{side}.ome.zarr"
            if not img.exists():
                write_image(img, side, args.diameter)
            out = work / f"out{side}"
            shutil.rmtree(out, ignore_errors=True)
            wall, peak, err = run_cli(
                ["segment", str(img), "-o", str(out), "--format", "zarr", "--cluster", "none"] + common
            )
            base = base or peak
            blocks = ((side + args.block - 1) // args.block) ** 2
            row = {"side": side, "mpx": side * side / 1e6, "blocks": blocks, "wall_s": wall, "peak_mb": peak}
            report["memory"].append(row)
            print(
                f"{side:>7} {side * side / 1e6:>7.0f} {blocks:>6} {wall:>8.1f} {side * side / 1e6 / wall:>7.2f} "
                f"{peak:>8.0f} {peak / base:>10.2f}"
            )
            shutil.rmtree(out, ignore_errors=True)
            if not args.keep and side != args.compare:
                shutil.rmtree(img, ignore_errors=True)
        largest = report["memory"][-1]
        limit = 1.25 * base + 100
        print(
            f"   largest/smallest peak {largest['peak_mb'] / base:.2f}x; target <= 1.25x + 100 MB = {limit:.0f} MB: "
            f"{'met' if largest['peak_mb'] <= limit else 'NOT met'}"
        )

        print(f"\n2. --cluster none vs local:{args.workers} on {args.compare} x {args.compare}")
        img = work / f"img{args.compare}.ome.zarr"
        if not img.exists():
            write_image(img, args.compare, args.diameter)
        rows = {}
        for cluster in ("none", f"local:{args.workers}"):
            out = work / f"cmp-{cluster.replace(':', '')}"
            shutil.rmtree(out, ignore_errors=True)
            wall, peak, err = run_cli(
                ["segment", str(img), "-o", str(out), "--format", "zarr", "--cluster", cluster] + common
            )
            rows[cluster] = {"wall_s": wall, "peak_mb": peak, "labels": labels_of(out / f"img{args.compare}.zarr")}
            note = " (the driver; the workers are other processes)" if cluster != "none" else ""
            print(
                f"   {cluster:>8}: {wall:6.1f} s, {args.compare**2 / 1e6 / wall:5.2f} Mpx/s, peak {peak:5.0f} MB{note}"
            )
        a, b = (rows[k]["labels"] for k in rows)
        same = bool(np.array_equal(a, b))
        ratio = rows["none"]["wall_s"] / rows[f"local:{args.workers}"]["wall_s"]
        print(f"   local/none speed {ratio:.2f}x; labels byte-identical: {same}")
        report["cluster"] = {k: {kk: vv for kk, vv in v.items() if kk != "labels"} for k, v in rows.items()}
        report["cluster"]["identical"] = same

        print("\n3. stitching share (phase 2: blocks merged into chunks), in this process")
        from napari_unet_loop.core import model_files
        from napari_unet_loop.io.lazy import open_lazy
        from napari_unet_loop.parallel import segment_to_zarr

        model = model_files.load(args.model)
        res = segment_to_zarr(
            open_lazy(img), model, work / "share.zarr", block=args.block, diameter=args.diameter, overwrite=True
        )
        t = res.timings
        share = t["stitch"] / res.seconds
        print(
            f"   plan {t['plan']:.1f} s, blocks {t['blocks']:.1f} s, stitch {t['stitch']:.1f} s "
            f"of {res.seconds:.1f} s: "
            f"stitching {100 * share:.1f} %"
        )
        report["stitch"] = {**t, "total_s": res.seconds, "share": share, "blocks": res.blocks}
        per_block = t["blocks"] / res.blocks
        report["per_block_s"] = per_block

        print(f"\n4. scheduler overhead: {args.tasks} no-op tasks on a LocalCluster of {args.workers}")
        overhead = scheduler_overhead(args.tasks, args.workers)
        print(
            f"   {1000 * overhead:.2f} ms per task = {100 * overhead / per_block:.3f} % of one block's "
            f"{per_block:.1f} s here"
        )
        report["overhead_s_per_task"] = overhead
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
