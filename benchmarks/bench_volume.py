"""Z stacks a plane at a time: peak memory of the real command against the number of planes.

For each ``--depths`` value it writes an OME-Zarr Z stack of ``--size``^2 planes (synthetic nuclei,
chunk by chunk), then runs ``napari-unet-loop segment STACK.ome.zarr -o OUT --format zarr
--stitch-z 0.5`` in a fresh process and reads its peak resident memory (``wait4``). Memory must
follow one plane, not the stack: the ratio to the smallest depth stays near 1.

Run ``python benchmarks/bench_volume.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr


def write_stack(path: Path, depth: int, size: int, seed: int = 0) -> None:
    """An NGFF 0.4 ``ZYX`` stack of nuclei (discs of 10 px radius), written plane by plane."""
    rng = np.random.default_rng(seed)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    arr = group.create_array("0", shape=(depth, size, size), chunks=(1, 512, 512), dtype="uint8", fill_value=0)
    yy, xx = np.mgrid[:size, :size]
    plane = np.full((size, size), 20, np.uint8)
    for _ in range(size * size // 3500):
        cy, cx = rng.integers(0, size, 2)
        plane[(yy - cy) ** 2 + (xx - cx) ** 2 <= 100] = 200
    for z in range(depth):
        arr[z] = plane
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": "space"} for a in "zyx"],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]}],
        }
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[8, 32], help="planes per stack (8 32)")
    parser.add_argument("--size", type=int, default=1024, help="plane side in pixels (1024)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-volume-"))
    rows = []
    try:
        for depth in args.depths:
            path = tmp / f"stack{depth}.ome.zarr"
            write_stack(path, depth, args.size)
            cmd = [sys.executable, "-m", "napari_unet_loop.cli", "segment", str(path), "-o", str(tmp / f"out{depth}"),
                   "--format", "zarr", "--stitch-z", "0.5", "--block", "512"]  # fmt: skip
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            err = proc.stderr.read()
            if status:
                print(err, file=sys.stderr)
                return 1
            rows.append((depth, usage.ru_maxrss / 1024, time.perf_counter() - t0))
            shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first = rows[0][1]
    print(f"planes of {args.size}^2 | peak memory | x {rows[0][0]} planes | wall")
    for depth, mb, wall in rows:
        print(f"{depth:6d} planes | {mb:8.0f} MB | {mb / first:5.2f} | {wall:6.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
