"""Segmentation time against the object diameter: what rescaling costs or saves on a large image.

``segment`` rescales an image by ``card.diameter / diameter`` before the network and resizes the
probabilities back, so large objects (a small factor) mean a smaller network input, while the
post-processing always runs on the image's own grid. One run times ``core.segment.segment`` on
one square image (a DSB2018 sample image mirror-tiled up to ``--size``) at the model's own
diameter and at each ``--diameters`` value, and prints the times and their ratio to the first.

Run ``python benchmarks/bench_diameter.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from _common import cpu_name, write_json
from napari_unet_loop.core.model_files import load
from napari_unet_loop.core.segment import segment
from napari_unet_loop.sample_data import sample_path


def grey_image(side: int) -> np.ndarray:
    """The fluorescence sample image as grey uint8, mirror-tiled to ``side`` x ``side``."""
    import imageio.v3 as iio

    img = np.asarray(iio.imread(sample_path("nuclei_fluorescence")))
    grey = img[..., :3].mean(-1).astype(np.uint8) if img.ndim == 3 else img
    reps = (side // grey.shape[0] + 2, side // grey.shape[1] + 2)
    tiled = np.block([[grey if (i + j) % 2 == 0 else grey[::-1, ::-1] for j in range(reps[1])] for i in range(reps[0])])
    return np.ascontiguousarray(tiled[:side, :side])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=4096, help="image side in pixels (default 4096)")
    p.add_argument("--diameters", default="30,90", help="object diameters to time besides the model's")
    p.add_argument("--model", default="default")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    model = load(args.model)
    image = grey_image(args.size)
    print(f"cpu    {cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}, python "
          f"{platform.python_version()}")  # fmt: skip
    print(f"model  {model.name} (object diameter {model.card.diameter} px); image {args.size} x {args.size}")
    segment(model, image[:512, :512], device="cpu")  # warm-up
    rows = []
    for d in [None, *(float(v) for v in args.diameters.split(",") if v)]:
        t0 = time.perf_counter()
        seg = segment(model, image, device="cpu", diameter=d)
        dt = time.perf_counter() - t0
        rows.append({"diameter": seg.diameter, "factor": round(seg.factor, 3), "seconds": round(dt, 1),
                     "objects": int(seg.labels.max())})  # fmt: skip
        ratio = dt / rows[0]["seconds"]
        print(
            f"diameter {seg.diameter:6.1f} px  factor {seg.factor:5.3f}  {dt:7.1f} s  x{ratio:4.2f} of the model's"
            f"  {int(seg.labels.max())} objects",
            flush=True,
        )
    write_json(args.json, {"size": args.size, "model": model.name, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
