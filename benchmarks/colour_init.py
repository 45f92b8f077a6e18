"""A colour (R, G, B) copy of a grey model, as the start of a colour network for H&E images.

The shipped network reads an H&E image as its haematoxylin plane (``core.modality``). This
script fits that plane, as the network receives it, by a linear function of the image's R, G and
B, each normalised on its own as a 3-channel model reads them (least squares over pixels of the
given images), and writes a 3-channel model whose first convolution computes that function:
its weights are the grey weights times each channel's coefficient, and the batch norm after it
absorbs the constant. Every other weight, the thresholds for H&E and the object size are the
grey model's. On H&E images it segments about as the grey model does, and a fine-tune on colour
images (``train --from THIS``) starts from a network that knows nuclei instead of from scratch
(docs/model.md, *The second lent GPU*).

    python benchmarks/colour_init.py --images gpu/he_train.txt --out he-colour-init.safetensors
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from _common import DATA_CANDIDATES, read_list


def haematoxylin_fit(
    images: list[np.ndarray], norm, pixels: int = 20000, seed: int = 0
) -> tuple[np.ndarray, float, float]:
    """Least-squares ``a, b`` with ``haematoxylin plane ~ a . (R, G, B) + b`` on the network's inputs; and R^2."""
    from napari_unet_loop.core.image import prepare_input

    rng = np.random.default_rng(seed)
    xs, hs = [], []
    for img in images:
        x = prepare_input(img, 3, norm).reshape(3, -1)
        h = prepare_input(img, 1, norm, modality="he").reshape(-1)
        idx = rng.choice(h.size, min(h.size, pixels), replace=False)
        xs.append(x[:, idx].T)
        hs.append(h[idx])
    x, h = np.concatenate(xs), np.concatenate(hs)
    design = np.c_[x, np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(design, h, rcond=None)
    r2 = 1 - float(((h - design @ coef) ** 2).sum() / ((h - h.mean()) ** 2).sum())
    return coef[:3], float(coef[3]), r2


def colour_copy(model, a: np.ndarray, b: float):
    """``model`` (one input channel) as a 3-channel model reading ``a . (R, G, B) + b`` where it read the grey plane."""
    from napari_unet_loop.core.model_files import Model
    from napari_unet_loop.core.unet import UNet

    arch = replace(model.card.architecture, in_channels=3)
    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    first = "down.0.0.weight"  # (width, 1, 3, 3), no bias: a batch norm follows
    w = state[first]
    state[first] = torch.cat([w * float(c) for c in a], dim=1)
    # conv(w, a.x) = conv(w, h) - b sum(w) away from the borders: the batch norm's mean moves with it
    state["down.0.1.running_mean"] = state["down.0.1.running_mean"] - b * w.sum(dim=(1, 2, 3))
    net = UNet(arch)
    net.load_state_dict(state)
    card = replace(
        model.card,
        name="he-colour-init",
        architecture=arch,
        modality="none",
        kind_in_doubt=None,
        postprocess=model.card.thresholds("he"),
        postprocess_by_kind={},
        weights_by_kind={},
        description=f"{model.name}, its first convolution reading R, G and B (a linear fit of the haematoxylin plane)",
        parent=model.name,
        metrics={},
    )
    return Model(net.eval(), card)


def main(argv: list[str] | None = None) -> int:
    """Fit, build and write the colour copy."""
    from napari_unet_loop.core.model_files import load, save
    from napari_unet_loop.io.images import read_image

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="the grey model to copy (default: the shipped one)")
    p.add_argument(
        "--images", type=Path, required=True, help="list of H&E image names to fit on (e.g. gpu/he_train.txt)"
    )
    p.add_argument("--data", type=Path, default=None, help="the DSB2018 folder (images/)")
    p.add_argument("--out", type=Path, required=True, help="the model file to write")
    args = p.parse_args(argv)
    data = args.data or next(d / "dsb2018" for d in DATA_CANDIDATES if (d / "dsb2018").is_dir())
    model = load(args.model)
    if model.card.architecture.in_channels != 1:
        raise SystemExit(f"{model.name}: give a grey model")
    if model.card.weights_by_kind:  # the shipped model since its colour H&E weights
        kinds = ", ".join(model.card.weights_by_kind)
        print(f"{model.name}: copying its general grey network (its own weights for {kinds} are left out)")
        model = model.for_kind(None)
    images = [read_image(data / "images" / f"{n}.png") for n in read_list(args.images)]
    a, b, r2 = haematoxylin_fit(images, model.card.normalization)
    fit = f"{a[0]:.3f} R + {a[1]:.3f} G + {a[2]:.3f} B + {b:.3f}"
    print(f"haematoxylin plane ~ {fit} (R^2 {r2:.3f}, {len(images)} images)")
    print("wrote", save(colour_copy(model, a, b), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
