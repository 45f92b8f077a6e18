"""Proofreading speed: median time per object action on a 4096 x 4096 labels layer with ~5,000 objects.

Each action is measured end to end as the dock runs it: compute the edit on the plane
(bounding box only) and write it into a real napari Labels layer as one undoable step
(``block_history`` + ``data_setitem``), then undo it so every repeat starts from the same state.
Target: under 50 ms per action, so that it feels instant.

    python benchmarks/bench_proofread.py [--size 4096] [--repeats 25]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from skimage.draw import disk


def make_plane(size: int, spacing: int, radius: int, seed: int = 0) -> np.ndarray:
    """A grid of jittered discs: about (size / spacing)^2 objects."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((size, size), np.int32)
    n = 0
    for y in range(spacing // 2, size - spacing // 2, spacing):
        for x in range(spacing // 2, size - spacing // 2, spacing):
            n += 1
            r = radius + int(rng.integers(-4, 5))
            lab[disk((y + int(rng.integers(-5, 6)), x + int(rng.integers(-5, 6))), r, shape=lab.shape)] = n
    return lab


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args()

    from napari.layers import Labels

    from napari_unet_loop.core import proofread as pr

    spacing = max(20, int(args.size / np.sqrt(5000)))
    plane = make_plane(args.size, spacing, int(spacing * 0.38))
    n_objects = int(plane.max())
    layer = Labels(plane.copy())
    rng = np.random.default_rng(1)
    ids = rng.choice(np.arange(1, n_objects + 1), size=args.repeats, replace=False)
    centres = {}
    from scipy import ndimage as ndi

    for lab, c in zip(ids, ndi.center_of_mass(plane > 0, plane, ids), strict=True):
        centres[int(lab)] = (float(c[0]), float(c[1]))

    def neighbour(p):
        return (p[0], min(p[1] + spacing, args.size - 1))

    actions = {
        "delete": lambda p: pr.delete(plane, p),
        "merge (2 objects)": lambda p: pr.merge(plane, [p, neighbour(p)]),
        "split (2 seeds)": lambda p: pr.split(plane, [(p[0], p[1] - spacing * 0.2), (p[0], p[1] + spacing * 0.2)]),
        "cut line": lambda p: pr.cut(plane, (p[0], p[1] - spacing * 0.45), (p[0], p[1] + spacing * 0.45)),
        "fill holes": lambda p: pr.fill_holes(plane, p),
        "grow 2 px": lambda p: pr.dilate(plane, p, 2),
        "shrink 2 px": lambda p: pr.erode(plane, p, 2),
        "remove small (whole plane)": lambda p: pr.remove_small(plane, 30),
        "relabel 1..N (whole plane)": lambda p: pr.relabel_sequential(plane),
        "rank objects by doubt (whole plane)": None,
    }
    print(f"labels {args.size} x {args.size}, {n_objects} objects, {args.repeats} repeats per action")
    print(f"{'action':38s} {'median ms':>10s} {'max ms':>8s}  (compute + undoable write + undo)")
    rows = []
    for name, fn in actions.items():
        times = []
        reps = args.repeats if "whole plane" not in name else max(3, args.repeats // 5)
        for lab in ids[:reps]:
            p = centres[int(lab)]
            t0 = time.perf_counter()
            if fn is None:
                pr.doubt_table(plane)
            else:
                edit = fn(p)
                changed = np.nonzero(edit.before != edit.after)
                idx = (changed[0] + edit.box[0].start, changed[1] + edit.box[1].start)
                with layer.block_history():
                    layer.data_setitem(idx, edit.after[changed])
            times.append(time.perf_counter() - t0)
            if fn is not None:
                layer.undo()
        med = statistics.median(times) * 1000
        rows.append((name, med))
        print(f"{name:38s} {med:10.1f} {max(times) * 1000:8.1f}")
    per_object = [m for n, m in rows if "whole plane" not in n]
    worst = max(per_object)
    print(f"slowest per-object action: {worst:.1f} ms median -> {'PASS' if worst < 50 else 'FAIL'} (target < 50 ms)")


if __name__ == "__main__":
    main()
