"""Train the default model on a lent GPU in one call: pack the data here, train and score it there.

A GPU machine is lent to some sessions only, for 15 minutes in all, and it starts bare: the
data must travel with the working tree (64 MiB at most) and the whole run must fit one call.
This script does both halves with the project's own ``train``, ``tune`` and ``evaluate``:

``pack`` (here, once): the DSB2018 training and validation images (the test split stays
behind) in one compressed ``.npz``: grey images as one ``uint8`` plane (their R, G and B are
equal, so the network input is the same), colour images as RGB, labels as ``uint16``. Every
packed image is checked to give the network the very input its file gives (imaging kind
detected, converted and normalised as ``train`` does), so the packed data train the same model.

``run`` (there): unpacks to TIFF files, then runs each training variant (``--variant NAME=FLAGS``,
repeated, or one named ``model`` from the flags after ``--``) as its own process, all at once on
the one GPU: ``train`` (``--device cuda`` and the variant's flags), ``tune --write`` and
``evaluate --by-kind`` on the validation images (``--no-score``: train only). Each variant's log
goes to ``--out/NAME.log`` and, for the first ``--keep``, its model and card to
``--out/NAME.safetensors`` and ``.json`` (the device's ``$OUT`` returns 8 files of 16 MiB at most:
logs + 2 x keep <= 8, and only models of base width 16 fit; width 32 is 30 MiB).
Score the returned models on the test split here, with ``evaluate``.

    python benchmarks/gpu_train.py pack --out gpu/dsb2018.npz         # 47 MiB, 25 s
    # on the device, in one call (carry the folder holding the .npz):
    PYTHONPATH=src python3 benchmarks/gpu_train.py run gpu/dsb2018.npz --out $OUT --minutes 6.5 \\
        --variant 'cont=--from default --anchor 0 --update-norm --patch 256 --batch 32 --lr 1e-3' \\
        --variant 'w16=--from scratch --width 16 --patch 256 --batch 64 --lr 2e-3'

``lists`` (here): the packed images of one imaging kind as lists to train and validate on, for a
variant that learns that kind only (``--include KIND_all.txt --val-list KIND_val.txt``).

Dry run on this CPU (a minute): ``run ... --device cpu --minutes 0.3 -- --from scratch --width 8``.
The device has PyTorch, scikit-image, scipy, tifffile and safetensors, which is all ``train``,
``tune`` and ``evaluate`` compute with (no napari, Qt, dask or zarr); it lacks ``platformdirs``,
so ``run`` names the model folder itself (:func:`preflight`). A dry run here does not show what
the device lacks; ``preflight`` checks every variant's ``--from`` before the first one trains.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import ROOT, SPLITS, read_list

DATA = ROOT.parent / "shared" / "data" / "dsb2018"


def compact(image: np.ndarray) -> np.ndarray:
    """The image with nothing the network does not read: alpha dropped, equal R, G, B as one grey plane."""
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return np.ascontiguousarray(rgb[..., 0])
        return np.ascontiguousarray(rgb)
    return image


def network_input(image: np.ndarray) -> np.ndarray:
    """What ``train`` feeds the shipped model's architecture from ``image`` (kind detected, converted, normalised)."""
    from napari_unet_loop.core.image import Normalization, prepare_input
    from napari_unet_loop.core.modality import detect

    kind = detect(image).modality
    return prepare_input(image, 1, Normalization(), modality=kind)


def pack(args: argparse.Namespace) -> int:
    """Write the training and validation images and labels into one compressed ``.npz``."""
    from napari_unet_loop.io.images import pair_files, read_image

    test = set(read_list(SPLITS / "dsb2018-test.txt"))
    pairs = [(i, lab) for i, lab in pair_files(args.data / "images", args.data / "labels") if i.stem not in test]
    arrays: dict[str, np.ndarray] = {}
    names = []
    for n, (img_path, lab_path) in enumerate(pairs):
        image, labels = read_image(img_path), read_image(lab_path)
        small = compact(image)
        if n % args.check_every == 0 and not np.array_equal(network_input(image), network_input(small)):
            raise SystemExit(f"{img_path.name}: the packed image would reach the network differently")
        if labels.max() > np.iinfo(np.uint16).max:
            raise SystemExit(f"{lab_path.name}: more objects than uint16 holds")
        arrays[f"image_{n}"] = small.astype(np.uint8) if small.dtype != np.uint8 and small.max() < 256 else small
        arrays[f"labels_{n}"] = labels.astype(np.uint16)
        names.append(img_path.stem)
    arrays["names"] = np.array(names)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".part.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(args.out)
    size = args.out.stat().st_size / 2**20
    print(f"packed {len(names)} images (test split left out) into {args.out}: {size:.1f} MiB")
    return 0


def kind_lists(args: argparse.Namespace) -> int:
    """Write lists of the packed images of one imaging kind: ``KIND_train.txt``, ``KIND_val.txt``, ``KIND_all.txt``.

    The validation list holds the kind's images of the validation split and ``--hold`` of its
    training-split images drawn at random (``--seed``); the training list the rest of the
    training split's. What a variant trained on one kind passes as ``--include KIND_all.txt
    --val-list KIND_val.txt``.
    """
    from napari_unet_loop.core.modality import detect

    val_split = set(read_list(SPLITS / "dsb2018-val.txt"))
    train, val = [], []
    for name, image, _ in packed(args.npz):
        if detect(image).modality == args.kind:
            (val if name in val_split else train).append(name)
    train.sort()
    hold = set(np.random.default_rng(args.seed).choice(train, args.hold, replace=False)) if args.hold else set()
    lists = {
        "train": [n for n in train if n not in hold],
        "val": sorted(val) + sorted(hold),
    }
    lists["all"] = lists["train"] + lists["val"]
    args.out.mkdir(parents=True, exist_ok=True)
    for what, names in lists.items():
        path = args.out / f"{args.kind}_{what}.txt"
        path.write_text("".join(f"{n}\n" for n in names))
        print(f"{path}: {len(names)} images")
    return 0


def packed(npz: Path, limit: int | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """The ``(name, image, labels)`` that :func:`pack` wrote, in order (the first ``limit`` of them)."""
    data = np.load(npz)
    for n, name in enumerate([str(n) for n in data["names"]][:limit]):
        yield name, data[f"image_{n}"], data[f"labels_{n}"]


def unpack(npz: Path, folder: Path) -> int:
    """Write a packed ``.npz`` back as ``images/NAME.tif`` and ``labels/NAME.tif``; returns the image count."""
    import tifffile

    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for name, image, labels in packed(npz):
        tifffile.imwrite(folder / "images" / f"{name}.tif", image)
        tifffile.imwrite(folder / "labels" / f"{name}.tif", labels)
        names.append(name)
    return len(names)


def cli(*argv: str, log: Path) -> None:
    """Run ``napari-unet-loop ARGV`` with this interpreter, its output appended to ``log``; stop on failure."""
    cmd = [sys.executable, "-m", "napari_unet_loop.cli", *argv]
    tag = log.stem
    print(f"[{tag}] $ napari-unet-loop " + " ".join(argv), flush=True)
    with log.open("a") as fh:
        fh.write("$ napari-unet-loop " + " ".join(argv) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            fh.write(line)
            fh.flush()
            print(f"[{tag}] {line}", end="", flush=True)
    if proc.wait():
        raise SystemExit(f"napari-unet-loop {argv[0]} failed (exit {proc.returncode}); see {log}")


def variant(name: str, flags: list[str], args: argparse.Namespace, keep: bool) -> float:
    """Train, tune and evaluate one variant on the validation images; returns its wall time in seconds.

    The log goes to ``--out/NAME.log``; the model to ``--out/NAME.safetensors`` when ``keep``, else
    beside the unpacked data (a device call returns 8 files of 16 MiB at most).
    """
    t0 = time.time()
    work, out = args.work, args.out
    model = (out if keep else work) / f"{name}.safetensors"
    log = out / f"{name}.log"
    log.write_text("")  # train, tune and evaluate append to it
    val = str(SPLITS / "dsb2018-val.txt")
    images, labels = str(work / "images"), str(work / "labels")
    cli(
        "train", images, labels, "--out", str(model), "--val-list", val, "--device", args.device,
        "--minutes", str(args.minutes), "--modality", "auto", "--no-tune", "--overwrite", *flags, log=log,
    )  # fmt: skip
    if not args.score:  # scored here afterwards, on images of the variant's choosing
        return time.time() - t0
    cli("tune", images, labels, "--model", str(model), "--include", val, "--device", args.device, "--write",
        log=log)  # fmt: skip
    val_dir = work / "val"
    cli("evaluate", str(val_dir / "images"), str(val_dir / "labels"), "--model", str(model), "--by-kind", "--json",
        "--device", args.device, log=log)  # fmt: skip
    return time.time() - t0


def preflight(variants: list[Variant], work: Path) -> None:
    """Fail before any training when a variant's ``--from`` model cannot be found there.

    The device's Python holds the packages ``train`` computes with but not the package's own
    dependencies (``platformdirs``, which names the user's model folder): the folder is set here
    through ``NAPARI_UNET_LOOP_MODELS``, for the variants' processes too.
    """
    from napari_unet_loop.core.model_files import load

    os.environ.setdefault("NAPARI_UNET_LOOP_MODELS", str(work / "models"))
    starts = argparse.ArgumentParser(prog="train", add_help=False)
    starts.add_argument("--from", dest="start", default="default")
    for v in variants:
        try:
            start = starts.parse_known_args(v.flags)[0].start  # as train reads it: --from=X, the last one
        except SystemExit:
            raise SystemExit(f"variant {v.name}: --from needs a model name, a path or scratch") from None
        if start != "scratch":
            load(start)  # reads the weights too: a broken file fails here, not minutes in


def run(args: argparse.Namespace) -> int:
    """Unpack, then train, tune and evaluate every variant at once (one process each, one GPU shared)."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.time()
    work = args.work
    preflight(args.variants, work)
    n = unpack(args.npz, work)
    val_dir = work / "val"
    for sub in ("images", "labels"):
        (val_dir / sub).mkdir(parents=True, exist_ok=True)
        for name in read_list(SPLITS / "dsb2018-val.txt"):
            src = work / sub / f"{name}.tif"
            dst = val_dir / sub / src.name
            if src.exists() and not dst.exists():
                dst.symlink_to(src)
    print(f"unpacked {n} images into {work} in {time.time() - t0:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    variants = [(v.name, v.flags) for v in args.variants]
    with ThreadPoolExecutor(len(variants)) as pool:
        jobs = {
            name: pool.submit(variant, name, flags, args, k < args.keep) for k, (name, flags) in enumerate(variants)
        }
        failed = 0
        for name, job in jobs.items():
            try:
                print(f"[{name}] done in {job.result():.0f} s", flush=True)
            except (SystemExit, Exception) as exc:  # the others run on
                failed += 1
                print(f"[{name}] {exc}", flush=True)
    print(f"all done in {time.time() - t0:.0f} s" + (f"; {failed} variant(s) failed" if failed else ""), flush=True)
    return 1 if failed else 0


@dataclass
class Variant:
    """One training run: a name for its files and the flags for ``train``."""

    name: str
    flags: list[str]

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``NAME=FLAGS`` (FLAGS split as a shell would)."""
        name, sep, flags = text.partition("=")
        if not sep or not name.isidentifier():
            raise argparse.ArgumentTypeError(f"{text!r}: give NAME=FLAGS, e.g. 'w16=--from scratch --width 16'")
        return cls(name, shlex.split(flags))


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run ``pack``, ``lists`` or ``run``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="run ... -- FLAGS: FLAGS go to train")
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="pack the training and validation images (here)")
    pk.add_argument("--data", type=Path, default=DATA, help="the DSB2018 folder (images/, labels/)")
    pk.add_argument("--out", type=Path, required=True, help="the .npz to write")
    pk.add_argument("--check-every", type=int, default=1, help="check every Nth image's network input")
    kl = sub.add_parser("lists", help="lists of one imaging kind's packed images, to train on that kind (here)")
    kl.add_argument("npz", type=Path)
    kl.add_argument("--kind", default="he", help="the imaging kind (default he)")
    kl.add_argument("--hold", type=int, default=15, help="training-split images held out to validate (default 15)")
    kl.add_argument("--seed", type=int, default=14)
    kl.add_argument("--out", type=Path, default=Path("gpu"), help="the folder to write the lists in (default gpu)")
    rn = sub.add_parser("run", help="unpack, train, tune and evaluate (on the device)")
    rn.add_argument("npz", type=Path)
    rn.add_argument("--out", type=Path, required=True, help="where the model and logs go ($OUT)")
    rn.add_argument("--work", type=Path, default=Path("/tmp/dsb2018"), help="where to unpack")
    rn.add_argument("--minutes", type=float, default=6.5, help="training budget, wall time (default 6.5)")
    rn.add_argument("--device", default="cuda")
    rn.add_argument(
        "--variant", dest="variants", action="append", type=Variant.parse, default=[], metavar="NAME=FLAGS",
        help="a training run of its own, all at once on the one GPU (repeat); FLAGS go to train",
    )  # fmt: skip
    rn.add_argument("--keep", type=int, default=2, help="return the models of the first KEEP variants (default 2)")
    rn.add_argument(
        "--no-score", dest="score", action="store_false",
        help="train only: no tune and evaluate on the 30 validation images (e.g. variants trained on one kind)",
    )  # fmt: skip
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # what follows -- goes to train as it is
    args = p.parse_args(argv[:cut])
    if args.cmd == "run" and cut < len(argv):
        args.variants.insert(0, Variant("model", argv[cut + 1 :]))
    if args.cmd == "run" and not args.variants:
        p.error("run needs FLAGS after -- or at least one --variant")
    if args.cmd == "run" and len({v.name for v in args.variants}) < len(args.variants):
        p.error("each --variant needs a name of its own (the flags after -- are named 'model')")
    if args.cmd in ("pack", "lists") and cut < len(argv):
        p.error(f"{args.cmd} takes no flags after --")
    return {"pack": pack, "lists": kind_lists, "run": run}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
