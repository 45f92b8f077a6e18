"""Reading image and label files, and finding image/label pairs in folders."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


class ReadError(OSError):
    """A file could not be read as an image; the message says which and why."""


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has an image file suffix (case-insensitive) and is not hidden."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (TIFF through tifffile, others through imageio).

    Raises
    ------
    ReadError
        If the file is missing or is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise ReadError(f"{path} does not exist or is not a file")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported the same way
        raise ReadError(f"cannot read {path} as an image: {exc}") from exc


def file_axes(path: str | os.PathLike) -> str | None:
    """The axes a TIFF file declares (``YX``, ``CYX``, ``ZYXS``, ...), or ``None`` when unknown.

    Axes count as declared in OME-TIFF and ImageJ files, and in tifffile's own description
    when its writer named them; plain TIFFs give ``None``. Only letters this package
    understands count (``T``, ``Z``, ``C``, ``Y``, ``X``, ``S``): a file with other axes
    (``Q``, ``I``: unspecified) or not a TIFF gives ``None``, and the axes are then
    guessed from the shape.
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            declared = tif.is_ome or tif.is_imagej
            if not declared and tif.is_shaped:  # tifffile's own description, when the writer named the axes
                declared = "axes" in (tif.shaped_metadata or [{}])[0]
            axes = tif.series[0].axes.upper()
    except Exception:  # noqa: BLE001 - unreadable files are reported by read_image
        return None
    if not declared:  # axes tifffile guessed from the shape alone (e.g. 3 planes taken for planar RGB)
        return None
    if set(axes) - set("TZCYXS") or len(set(axes)) != len(axes) or not {"Y", "X"} <= set(axes):
        return None
    return axes


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a sorted list of image files.

    Raises
    ------
    ReadError
        If an input does not exist or a folder holds no image files.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and is_image_file(q))
            if not found:
                raise ReadError(f"folder {p} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ReadError(f"{p} does not exist")
    return out


_LABEL_AFFIXES = re.compile(
    r"^(?:man_seg[_-]?|(?:masks?|labels?|seg|gt)[_-])"
    r"|[_-](?:cp_masks|masks?|labels?|label_image|seg|gt|annotations?)$",
    re.IGNORECASE,
)
_TRAILING_NUMBER = re.compile(r"(\d+)\D*$")


def _by_stem(files: list[Path], key, unique: bool) -> dict:
    """Files keyed by ``key(stem)`` (None: skipped).

    A key shared by several files keeps the first of them, or none when ``unique``.
    """
    out: dict = {}
    seen: set = set()
    for q in files:
        k = key(q.stem)
        if k is None:
            continue
        if k in seen:
            if unique:
                out.pop(k, None)
        else:
            out[k] = q
        seen.add(k)
    return out


def _trailing_number(stem: str) -> int | None:
    m = _TRAILING_NUMBER.search(stem)
    return int(m.group(1)) if m else None


def pair_files(images_dir: str | os.PathLike, labels_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Match image and label files of two folders by name.

    Names are matched in the first of these ways that pairs any file: the same base
    name (any image suffix); the same base name once common label affixes are taken
    off the label file's name (``_mask``, ``_masks``, ``_cp_masks``, ``_label``,
    ``_labels``, ``_seg``, ``_gt``, or a ``man_seg``/``mask``/``seg`` prefix); the same
    frame number (the last number in the name: ``t012.tif`` and ``man_seg012.tif``, as
    in the Cell Tracking Challenge), when each number names one file on each side.
    Images without a label file are skipped.

    Returns
    -------
    list of tuple
        ``(image_path, label_path)`` pairs sorted by image name.

    Raises
    ------
    ReadError
        If a folder is missing or no names match.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise ReadError(f"{d} is not a folder")
    images = sorted(q for q in images_dir.iterdir() if q.is_file() and is_image_file(q))
    labels = sorted(q for q in labels_dir.iterdir() if q.is_file() and is_image_file(q))
    rules = (
        (lambda stem: stem, lambda stem: stem),
        (lambda stem: stem, lambda stem: _LABEL_AFFIXES.sub("", stem)),
        (_trailing_number, _trailing_number),
    )
    for i, (image_key, label_key) in enumerate(rules):
        by_key = _by_stem(labels, label_key, unique=i == len(rules) - 1)
        keys = [image_key(q.stem) for q in images]
        if i == len(rules) - 1:  # frame numbers must name one image each, too
            counts = Counter(keys)
            keys = [k if counts[k] == 1 else None for k in keys]
        pairs = [(q, by_key[k]) for q, k in zip(images, keys) if k is not None and k in by_key]
        if pairs:
            return pairs
    raise ReadError(
        f"no image in {images_dir} has a label file of the same name in {labels_dir} "
        "(matched by base name, by base name without _mask/_labels/..., or by frame number)"
    )
