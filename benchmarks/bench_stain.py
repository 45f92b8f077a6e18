"""H&E images stained otherwise: how far a model's scores fall when a slide's dyes differ.

The shipped model's H&E weights learnt from DSB2018's H&E images, a few tissues from a few labs.
Other labs' slides take up more or less haematoxylin and eosin, and scanners render the dyes in
other hues. This benchmark re-stains the H&E images of a DSB2018 split in the haematoxylin-eosin-DAB
colour space (Ruifrok and Johnston's colour deconvolution, ``skimage.color.rgb2hed``): the amount
of each dye is scaled, then the image is turned back into RGB. Each model segments every image as
``segment`` does, under each staining; pooled AP@0.5 and SEG per staining, and the mean of the
re-stained ones.

The stainings (haematoxylin x, eosin x): ``as scanned`` (1, 1), ``pale nuclei`` (0.6, 1.5),
``dark nuclei`` (1.5, 0.6), ``pale slide`` (0.6, 0.6). They are another family than the stain mix
the colour network may train with (``core.augment.mix_stains``: a random 3x3 mix of the channels
near the identity), so a gain here is not the augmentation recognising itself.

Run ``python benchmarks/bench_stain.py --models default`` (about 1 minute for the 5 H&E images of
the validation split on a 2-core CPU); ``--split test`` reports on the 10 of the test split, once
the choice is made.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import SPLITS, cpu_name, find_dsb2018, imread, read_list, write_json
from napari_unet_loop.core.metrics import matching, pool
from napari_unet_loop.core.modality import detect
from napari_unet_loop.core.model_files import load
from napari_unet_loop.core.segment import segment

STAININGS = {
    "as scanned": (1.0, 1.0),
    "pale nuclei": (0.6, 1.5),
    "dark nuclei": (1.5, 0.6),
    "pale slide": (0.6, 0.6),
}


def restain(rgb: np.ndarray, haematoxylin: float, eosin: float) -> np.ndarray:
    """An RGB(A) H&E image with its haematoxylin and eosin amounts scaled (uint8 RGB).

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(Y, X, 3|4)`` uint8 image (alpha dropped).
    haematoxylin, eosin : float
        Factors on each dye's optical density (1: as it is).

    Returns
    -------
    numpy.ndarray
        ``(Y, X, 3)`` uint8; the image's own RGB when both factors are 1.
    """
    from skimage.color import hed2rgb, rgb2hed

    rgb = np.asarray(rgb)[..., :3]
    if haematoxylin == eosin == 1.0:
        return rgb
    hed = rgb2hed(rgb)
    hed[..., 0] *= haematoxylin
    hed[..., 1] *= eosin
    return np.clip(hed2rgb(hed) * 255 + 0.5, 0, 255).astype(np.uint8)


def he_images(data: Path, names: list[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The H&E images among ``names`` (as detected), with their labels."""
    out = []
    for name in names:
        image = imread(data / "images" / f"{name}.png")
        if detect(image).modality == "he":
            out.append((name, image, imread(data / "labels" / f"{name}.png")))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="shared data folder")
    p.add_argument("--models", default="default", help="comma-separated model names or files")
    p.add_argument("--split", default="val", choices=("val", "test"), help="DSB2018 split (choose on val)")
    p.add_argument(
        "--names",
        type=Path,
        default=None,
        help="a list of DSB2018 image names instead of the split (e.g. the H&E images held out of a colour fine-tune)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)
    names = read_list(args.names) if args.names else read_list(SPLITS / f"dsb2018-{args.split}.txt")
    items = he_images(find_dsb2018(args.data), names)
    print(f"cpu      {cpu_name()}; torch {torch.__version__}, python {platform.python_version()}")
    where = str(args.names) if args.names else f"the {args.split} split"
    print(f"images   {len(items)} H&E images of {where}, {len(STAININGS)} stainings")
    report: dict[str, Any] = {"split": where, "images": [n for n, *_ in items], "models": {}}
    for spec in [m for m in args.models.split(",") if m]:
        model = load(spec)
        rows: dict[str, Any] = {}
        for staining, (h, e) in STAININGS.items():
            stained = [(restain(img, h, e), lab) for _, img, lab in items]
            results = [matching(lab, segment(model, img).labels) for img, lab in stained]
            pooled = pool(results).to_dict()
            rows[staining] = {
                "ap50": round(float(pooled["ap50"]), 4),
                "seg": round(float(pooled["seg"]), 4),
                # a re-stained image no longer detected as H&E is read by the grey network
                "read_as_he": sum(detect(img).modality == "he" for img, _ in stained),
            }
        other = [rows[name] for name in STAININGS if name != "as scanned"]
        rows["re-stained mean"] = {k: round(float(np.mean([r[k] for r in other])), 4) for k in ("ap50", "seg")}
        report["models"][spec] = rows
        print(f"\n{spec}")
        for staining, r in rows.items():
            kind = f"  ({r['read_as_he']} of {len(items)} detected as H&E)" if "read_as_he" in r else ""
            print(f"  {staining:<18} AP50 {r['ap50']:.3f}  SEG {r['seg']:.3f}{kind}")
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
