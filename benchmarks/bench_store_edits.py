"""Corrections written back into a labels OME-Zarr: the cost the dock's autosave tick pays.

One run builds a square labels store (``--size``, chunks of ``--chunk`` px, synthetic objects,
written chunk by chunk as a block-wise run writes it), then, as *Correct region in store* does:

1. reads a ``--window`` square window of level 0 (what opening a store window costs);
2. compares the window with what was written (the autosave's check, every minute);
3. writes back four strokes, one in each of the four chunks the window's centre touches;
4. writes back one more stroke (the usual autosave: one stroke since the last one).

It prints seconds for each and checks the store against the edited window (every level).

Run ``python benchmarks/bench_store_edits.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from napari_unet_loop.io.chunked import LabelsStore
from napari_unet_loop.io.store_edits import StoreEditor


def build(path: Path, size: int, chunk: int, seed: int = 0) -> int:
    """A finished store of ``size``^2 labels with squares of 24 px; returns the largest id."""
    rng = np.random.default_rng(seed)
    per_row = -(-size // chunk)
    n = per_row * per_row
    store = LabelsStore.create(path, job={"input": "bench"}, shape=(size, size), block=chunk, region=chunk, n_blocks=n)
    top = 0
    for i in range(n):
        y0, x0 = (i // per_row) * chunk, (i % per_row) * chunk
        lab = np.zeros((min(chunk, size - y0), min(chunk, size - x0)), np.uint32)
        for _ in range(lab.size // 10_000):
            y, x = rng.integers(0, max(lab.shape[0] - 24, 1)), rng.integers(0, max(lab.shape[1] - 24, 1))
            top += 1
            lab[y : y + 24, x : x + 24] = top
        store.write_core((y0, x0), lab, i)
    store.finish({"max_label": top})
    return top


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="side of the labels store (px)")
    parser.add_argument("--chunk", type=int, default=2048, help="chunk side (the block of a block-wise run)")
    parser.add_argument("--window", type=int, default=4096, help="side of the window corrected (the dock's largest)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-edits-"))
    try:
        path = tmp / "big.zarr"
        t = time.perf_counter()
        build(path, args.size, args.chunk)
        t_build = time.perf_counter() - t
        y0 = x0 = max(0, args.size // 2 - args.window // 2)
        t = time.perf_counter()
        editor = StoreEditor(path)
        win = editor.window(y0, y0 + args.window, x0, x0 + args.window)
        t_read = time.perf_counter() - t
        data = win.data.copy()
        c = args.size // 2 - y0  # the store's centre in the window: four chunks meet there
        for dy in (-200, 160):
            for dx in (-200, 160):
                data[c + dy : c + dy + 40, c + dx : c + dx + 40] = int(data[c + dy, c + dx]) or 1
        t = time.perf_counter()
        win.dirty(data)
        t_dirty = time.perf_counter() - t
        t = time.perf_counter()
        four = win.write_back(data)
        t_four = time.perf_counter() - t
        data[c - 20 : c + 20, c - 20 : c + 20] = 1  # one stroke across the corner of four chunks
        t = time.perf_counter()
        one = win.write_back(data)
        t_one = time.perf_counter() - t
        stored = data.copy()  # ids new to the window went into the store as fresh ids
        for local, fresh in win.remap.items():
            stored[data == local] = fresh
        group = zarr.open_group(str(path), mode="r")["labels"]["labels"]
        for k in range(len(list(group.arrays()))):
            f = 2**k
            lvl = group[str(k)]
            a, b = -(-y0 // f), -(-(y0 + args.window) // f)
            got = np.asarray(lvl[a:b, a:b])
            want = stored[a * f - y0 :: f, a * f - x0 :: f][: got.shape[0], : got.shape[1]]
            assert np.array_equal(got, want), f"level {k} differs from the window"
        print(f"store {args.size}^2 in chunks of {args.chunk} px (built in {t_build:.1f} s)")
        print(f"read a {args.window}^2 window:             {t_read:7.2f} s")
        print(f"compare it with what was written:  {t_dirty * 1000:7.0f} ms")
        print(f"write back four strokes ({four}): {t_four:7.2f} s")
        print(f"write back one stroke ({one}):   {t_one:7.2f} s")
        print("every level of the store matches the window: yes")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
