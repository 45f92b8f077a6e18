"""Record in the shipped model's card the object sizes its H&E network learnt at their own scale.

The H&E network was fine-tuned on the training split's H&E images as they are (``rescaled_by``
1.0 in its record), nuclei of many sizes. Rescaling images of nuclei within those sizes costs it:
a fine-tune on one H&E image rescaled to the network's diameter loses more on the rest of the same
slide than one at the image's own scale (docs/model.md, *H&E fine-tunes at the images' own scale*).
This script measures the median object diameter of every H&E image of the training split (the
DSB2018 images in neither ``splits/dsb2018-val.txt`` nor ``splits/dsb2018-test.txt``), and writes
their 5th to 95th percentile into the card's ``weights_by_kind.he.native_diameters`` (with
``--write``); images whose objects are within it are then not rescaled, in fine-tunes starting
from those weights and in their children (``core.scale.scale_factor``). The weights are unchanged.

    python benchmarks/native_sizes.py [--write]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from skimage.io import imread

from napari_unet_loop.core.modality import detect
from napari_unet_loop.core.model_files import DEFAULT_MODEL, load, save, shipped_dir
from napari_unet_loop.core.scale import median_diameter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018"
PERCENTILES = (5, 95)


def training_diameters(kind: str = "he") -> np.ndarray:
    """Median object diameter of each training-split DSB2018 image of one imaging kind."""
    splits = shipped_dir() / "splits"
    held = {
        line.strip()
        for f in ("dsb2018-val.txt", "dsb2018-test.txt")
        for line in (splits / f).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    found = []
    for path in sorted((DATA / "images").glob("*.png")):
        if path.stem in held or detect(imread(path)).modality != kind:
            continue
        d = median_diameter([imread(DATA / "labels" / path.name)])
        if d:
            found.append(d)
    return np.array(found)


def main() -> None:
    """Measure, print, and with ``--write`` record the range in the shipped card."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="write the range into the shipped model's card")
    args = parser.parse_args()
    d = training_diameters()
    lo, hi = (round(float(v), 1) for v in np.percentile(d, PERCENTILES))
    print(
        f"{d.size} H&E training images: median object diameter {np.median(d):.1f} px, "
        f"{PERCENTILES[0]}th-{PERCENTILES[1]}th percentile {lo}-{hi} px (all: {d.min():.1f}-{d.max():.1f})"
    )
    if args.write:
        model = load(DEFAULT_MODEL)
        model.card.weights_by_kind["he"]["native_diameters"] = [lo, hi]
        print("written:", save(model, shipped_dir() / f"{DEFAULT_MODEL}.safetensors"))


if __name__ == "__main__":
    main()
