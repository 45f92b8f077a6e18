"""Reading image and label files, and finding image/label pairs in folders."""

from __future__ import annotations

import os
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


def pair_files(images_dir: str | os.PathLike, labels_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Match image and label files of two folders by base name (any image suffix).

    Returns
    -------
    list of tuple
        ``(image_path, label_path)`` pairs sorted by name.

    Raises
    ------
    ReadError
        If a folder is missing or no names match.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise ReadError(f"{d} is not a folder")
    labels = {q.stem: q for q in labels_dir.iterdir() if q.is_file() and is_image_file(q)}
    pairs = [
        (q, labels[q.stem])
        for q in sorted(images_dir.iterdir())
        if q.is_file() and is_image_file(q) and q.stem in labels
    ]
    if not pairs:
        raise ReadError(f"no image in {images_dir} has a label file of the same base name in {labels_dir}")
    return pairs
