"""The correct -> fine-tune -> re-segment loop, measured: what the model learns from a few corrections.

On DSB2018 images of one imaging kind, for each seed, one image is the user's:

1. the shipped model segments it;
2. a simulated proofreader (``core.proofread.correct_worst``) corrects the areas of the
   ``--corrections`` whole nuclei it got most wrong, drawing them as the ground truth has them;
3. the model is fine-tuned on that one corrected image as the dock's Fine-tune does: corrected
   pixels weighted as the dock's default (``core.edits.CORRECTION_WEIGHT``), rescaled to the
   network's object size, a 15 % validation stripe (keep-best), the shared preset for
   ``--minutes``, thresholds re-tuned only when the gain beats the noise;
4. the corrected image is segmented again: of the objects the user drew or reshaped, how many
   the new model gets right (IoU > 0.5), and how many the old one did (the dock's "before/after");
5. ``--heldout`` other images of the same kind, the user's next images, are segmented by the old
   and the new model, each at the median diameter of its true nuclei (the size a user of one
   experiment knows; a child's default size, learnt from one image, would shift other
   experiments' images): AP@0.5 and SEG, pooled.

Each seed's user image is drawn at random (with five H&E images, seeds 0-5 drew only two of them);
``--every-image`` makes the kind's k-th image the user's in turn k, so seeds 0 to n - 1 try each once.
Images come from the validation split (``--split val``, where choices are made); ``--split test``
reports on the test split. Brightfield has one validation image, so no held-out images.

Run ``python benchmarks/bench_loop.py --help``; the default (fluorescence and H&E, three seeds,
one minute each) takes about 15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import (
    SPLITS,
    add_layers_args,
    cpu_name,
    find_dsb2018,
    finetune,
    imread,
    layers_from,
    read_list,
    score,
    write_json,
)
from napari_unet_loop.core.device import DEVICE_CHOICES, resolve_device
from napari_unet_loop.core.edits import correction_weight
from napari_unet_loop.core.metrics import correction_agreement
from napari_unet_loop.core.modality import detect
from napari_unet_loop.core.model_files import load
from napari_unet_loop.core.proofread import correct_worst
from napari_unet_loop.core.segment import segment


def images_of_kind(folder: Path, split: str, kind: str) -> list[str]:
    """Names of the split's images detected as ``kind``, in the split file's order."""
    names = read_list(SPLITS / f"dsb2018-{split}.txt")
    return [n for n in names if detect(imread(folder / "images" / f"{n}.png")).modality == kind]


def turn_images(folder: Path, names: list[str], seed: int, heldout: int, every_image: bool = False) -> list[tuple]:
    """``(name, image, truth)`` of one turn: the user's image, then ``heldout`` others (only these are read).

    The images are drawn in an order shuffled by ``seed``; with ``every_image`` the user's image is
    instead the split's ``seed``-th of the kind (wrapping round), so seeds 0 to n - 1 make each image the
    user's once, and the held-out images are drawn from the rest.
    """
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    if every_image:
        user = names[seed % len(names)]
        order = [user] + [n for n in order if n != user]
    order = order[: 1 + heldout]
    return [(n, imread(folder / "images" / f"{n}.png"), imread(folder / "labels" / f"{n}.png")) for n in order]


def corrected_item(start, user: tuple, n_corr: int, device) -> tuple[np.ndarray, Any, tuple]:
    """The model's labels of the ``user`` image, the proofreader's edit, and the fine-tuning item.

    The item is ``(name, image, corrected labels, per-pixel weight)``, corrected pixels weighted as the
    dock weights them.
    """
    name, img, truth = user
    original = segment(start, img, device=device).labels
    edit = correct_worst(original, truth, n_corr)
    return original, edit, (name, img, edit.after, correction_weight(original, edit.after))


def loop_once(
    start,
    user: tuple,
    heldout: list,
    n_corr: int,
    minutes: float,
    steps: int | None,
    seed: int,
    device,
    anchor=None,
    layers: str = "auto",
) -> dict[str, Any]:
    """One turn of the loop on the ``user`` image ``(name, image, truth)``; the scores before and after.

    ``layers``: which layers the fine-tune trains (``train --layers``).
    """
    name, img, _ = user
    original, edit, item = corrected_item(start, user, n_corr, device)
    corrected = edit.after
    child, run = finetune(start, [item], minutes, True, seed, device=device, steps=steps, anchor=anchor, layers=layers)
    again = segment(child, img, device=device).labels
    new, old = correction_agreement(original, corrected, again), correction_agreement(original, corrected, original)
    row = {
        "image": name,
        "corrected": edit.message,
        "drawn_or_reshaped": new.n_fixed,
        "right_old": old.n_fixed_found,
        "right_new": new.n_fixed_found,
        "steps": run["steps"],
        "improved": run["improved"],
        "anchor_applied": run["anchor_applied"],
        "head_only": run["head_only"],
        "retuned": bool(run["tuning"] and run["tuning"]["kept"]),
    }
    if heldout:
        # at each image's true object size: the change the weights make, not the one-image default size
        old_held, new_held = (score(m, heldout, device, true_size=True) for m in (start, child))
        row["heldout_old"], row["heldout_new"] = old_held, new_held
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="shared data folder")
    p.add_argument("--kinds", default="fluorescence,he", help="imaging kinds (comma-separated)")
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--seeds", default="0,1,2", help="one turn of the loop per seed (comma-separated)")
    p.add_argument("--corrections", type=int, default=6, help="nuclei whose areas the proofreader corrects")
    p.add_argument("--minutes", type=float, default=1.0, help="fine-tuning budget per turn")
    p.add_argument("--steps", type=int, default=None, help="a step budget instead (steady on a busy machine)")
    p.add_argument("--anchor", type=float, default=None, help="the fine-tune's anchor (default: the preset's)")
    add_layers_args(p)
    p.add_argument("--heldout", type=int, default=5, help="other images of the kind scored before and after")
    p.add_argument(
        "--every-image",
        action="store_true",
        help="turn k's user image is the kind's k-th (seeds 0..n-1: each image once) instead of a random one",
    )
    p.add_argument("--device", default="cpu", choices=DEVICE_CHOICES)
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)
    args.layers = layers_from(args, p)
    folder = find_dsb2018(args.data)
    torch.set_num_threads(os.cpu_count() or 1)
    device = resolve_device(args.device)
    start = load("default")
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} min"
    print(f"cpu      {cpu_name()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
          f"python {platform.python_version()}")  # fmt: skip
    print(f"model    {start.name}; {args.corrections} corrections, {budget} per turn, layers {args.layers}, "
          f"{args.split} split")  # fmt: skip
    report: dict[str, Any] = {
        "split": args.split, "corrections": args.corrections, "budget": budget, "layers": args.layers,
        "every_image": args.every_image, "kinds": {}
    }  # fmt: skip
    for kind in [k for k in args.kinds.split(",") if k]:
        names = images_of_kind(folder, args.split, kind)
        print(f"\n{kind}: {len(names)} {args.split}-split images")
        rows = []
        for seed in [int(s) for s in args.seeds.split(",") if s]:
            items = turn_images(folder, names, seed, args.heldout, args.every_image)
            held_items = items[1:]
            row = loop_once(
                start,
                items[0],
                held_items,
                args.corrections,
                args.minutes,
                args.steps,
                seed,
                device,
                args.anchor,
                args.layers,
            )
            rows.append(row)
            held = ""
            if "heldout_old" in row:
                o, n = row["heldout_old"], row["heldout_new"]
                held = f"; {len(held_items)} held out: AP50 {o['ap50']:.3f} -> {n['ap50']:.3f}, "
                held += f"SEG {o['seg']:.3f} -> {n['seg']:.3f}"
            print(
                f"  seed {seed} {row['image'][:12]}: {row['corrected']}; {row['steps']} steps, "
                f"anchor {row['anchor_applied']:g}; "
                f"right {row['right_old']} -> {row['right_new']} of {row['drawn_or_reshaped']}{held}",
                flush=True,
            )
        report["kinds"][kind] = rows
        if rows:
            fixed = sum(r["drawn_or_reshaped"] for r in rows)
            print(
                f"  all: right {sum(r['right_old'] for r in rows)} -> {sum(r['right_new'] for r in rows)} of {fixed}"
                + (
                    f"; held out AP50 {np.mean([r['heldout_old']['ap50'] for r in rows]):.3f} -> "
                    f"{np.mean([r['heldout_new']['ap50'] for r in rows]):.3f} (mean of turns)"
                    if all("heldout_old" in r for r in rows)
                    else ""
                )
            )
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
