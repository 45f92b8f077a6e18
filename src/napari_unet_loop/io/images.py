"""Reading image and label files, and finding image/label pairs in folders."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


class ReadError(OSError):
    """A file could not be read as an image; the message says which and why."""


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has an image file suffix (case-insensitive) and is not hidden."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


DEFAULT_MAX_PIXELS = 2**29  # about 23,000 x 23,000
MAX_PIXELS_ENV = "NAPARI_UNET_LOOP_MAX_PIXELS"


def max_pixels() -> int:
    """The largest image (pixels, all planes and channels) read into memory.

    ``NAPARI_UNET_LOOP_MAX_PIXELS`` overrides the default of 2**29 (about 23,000 x 23,000).
    """
    text = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        value = int(float(text)) if text.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ReadError(f"{MAX_PIXELS_ENV}={text!r} is not a number of pixels") from None
    return max(value, 1)


def declared_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The array shape a TIFF, PNG or JPEG file declares in its header, without decoding it.

    Returns ``None`` for formats whose size is not known until they are decoded.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return tuple(int(n) for n in tif.series[0].shape)
        from PIL import Image

        with Image.open(path) as im:  # reads the header only
            w, h = im.size
            return (h, w, len(im.getbands()))
    except Exception:  # noqa: BLE001 - unreadable headers are reported when the file is read
        return None


def check_declared_size(path: str | os.PathLike, limit: int | None = None) -> None:
    """Refuse files that declare more pixels than ``limit`` (decompression bombs), before decoding.

    Raises
    ------
    ReadError
        If the declared size is above the limit; the message says how to raise it.
    """
    limit = max_pixels() if limit is None else limit
    shape = declared_shape(path)
    if shape is None:
        return
    n = int(np.prod(shape, dtype=np.float64))
    if n > limit:
        raise ReadError(
            f"{Path(path).name} declares {' x '.join(str(d) for d in shape)} values ({n / 1e6:,.0f} M), more than "
            f"the limit of {limit / 1e6:,.0f} M read into memory: if the image is real, raise the limit "
            f"(environment variable {MAX_PIXELS_ENV}, e.g. {MAX_PIXELS_ENV}={2 * n}) or cut it into tiles"
        )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


PNG_PALETTE, PNG_GREY_ALPHA = 3, 4  # colour types of a PNG header


def _png_header(path: str | os.PathLike) -> tuple[int, int] | None:
    """Bit depth and colour type from a PNG's header (``None``: not a PNG)."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        return head[24], head[25]
    return None


def png_colour_type(path: str | os.PathLike) -> int | None:
    """A PNG header's colour type (0 grey, 2 RGB, 3 palette, 4 grey with alpha, 6 RGBA); ``None``: not a PNG."""
    try:
        header = _png_header(path)
    except OSError:
        return None
    return header[1] if header is not None else None


def read_png_pixels(path: str | os.PathLike, indices: bool = False) -> np.ndarray:
    """A PNG's pixels as this package reads them.

    A grey PNG with an alpha channel gives its grey plane (the alpha is transparency, not a
    channel of the sample). A palette (indexed-colour) PNG gives its colours, or with
    ``indices`` its palette indices: label masks are often saved so, one colour per object.

    Parameters
    ----------
    path : path-like
        The file.
    indices : bool
        Read a palette PNG as its indices (labels) rather than its colours (a picture).
    """
    import imageio.v3 as iio

    colour = png_colour_type(path)
    if colour == PNG_PALETTE and indices:
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            if im.mode == "P":  # the indices as stored (imageio re-quantises colours to a palette of its own)
                return np.asarray(im)
    data = np.asarray(iio.imread(path))
    if colour == PNG_GREY_ALPHA and data.ndim == 3 and data.shape[-1] == 2:
        return data[..., 0]
    return data


def check_png_depth(path: str | os.PathLike) -> None:
    """Refuse a 16-bit colour PNG (RGB, RGBA, grey with alpha), which the PNG reader cuts to 8 bits.

    Pillow keeps only the high byte of such files: the pixels of a 10- or 12-bit camera would
    collapse to a few grey levels without a word. 16-bit grey PNGs are read whole.

    Raises
    ------
    ReadError
        For a 16-bit colour PNG; the message says to save it as TIFF.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        return
    header = _png_header(path)
    if header is not None:
        depth, colour = header
        if depth == 16 and colour in (2, 4, 6):
            kind = {2: "RGB", 4: "grey with alpha", 6: "RGBA"}[colour]
            raise ReadError(
                f"{path.name} is a 16-bit {kind} PNG, which can only be read here cut to 8 bits (most of its "
                "detail lost): save it as TIFF (16-bit colour TIFFs are read whole), or as 16-bit grey PNG"
            )


def read_image(path: str | os.PathLike, labels: bool = False) -> np.ndarray:
    """Read an image file (TIFF through tifffile, others through imageio).

    ``labels``: the file holds labels, so a palette PNG gives its indices (:func:`read_png_pixels`).

    Raises
    ------
    ReadError
        If the file is missing, is not a readable image, or declares more pixels than
        :func:`max_pixels` (checked before decoding).
    """
    path = Path(path)
    if not path.is_file():
        raise ReadError(f"{path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise ReadError(f"{path} is empty (0 bytes): not an image")
    check_declared_size(path)
    check_png_depth(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        if path.suffix.lower() == ".png":
            return read_png_pixels(path, indices=labels)
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported the same way
        raise ReadError(f"cannot read {path} as an image: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    """One line saying why a file could not be read (imageio's advice to install plugins left out)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    if "backend" in first.lower() or "pip install" in str(exc):
        return "the file is damaged, or not an image of the kind its name says"
    return first


def planar_colour(tif: Any) -> bool:
    """Whether an open TIFF is one colour image stored planar (``SYX``), not a stack of grey planes.

    Its ``SamplesPerPixel`` tag says so, except in files tifffile wrote without naming the axes:
    tifffile stores any ``(3, Y, X)`` or ``(4, Y, X)`` 8-bit array so by default, Z stacks
    included, so those stay stacks of planes (their axes guessed from the shape).
    """
    page = tif.pages[0]
    if len(tif.pages) != 1 or page.samplesperpixel <= 1 or tif.series[0].axes.upper() != "SYX":
        return False
    return not tif.is_shaped or "axes" in (tif.shaped_metadata or [{}])[0]


def file_axes(path: str | os.PathLike) -> str | None:
    """The axes a TIFF file declares (``YX``, ``CYX``, ``ZYXS``, ...), or ``None`` when unknown.

    Axes count as declared in OME-TIFF and ImageJ files, in tifffile's own description
    when its writer named them, and for the samples of a one-page TIFF (its
    ``SamplesPerPixel`` tag: ``YXS``, or ``SYX`` stored planar, see :func:`planar_colour`); other
    plain TIFFs give ``None``. Only letters this package understands count (``T``, ``Z``, ``C``, ``Y``, ``X``,
    ``S``): a file with other axes (``Q``, ``I``: unspecified) or not a TIFF gives ``None``,
    and the axes are then guessed from the shape.
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
            if not declared and (axes == "YXS" and len(tif.pages) == 1 and tif.pages[0].samplesperpixel > 1):
                declared = True  # samples per pixel is a tag of the file, not a guess from the shape
            declared = declared or planar_colour(tif)
    except Exception:  # noqa: BLE001 - unreadable files are reported by read_image
        return None
    if not declared:  # axes tifffile guessed from the shape alone (e.g. 3 planes taken for planar RGB)
        return None
    if set(axes) - set("TZCYXS") or len(set(axes)) != len(axes) or not {"Y", "X"} <= set(axes):
        return None
    return axes


def tiff_series(path: str | os.PathLike) -> int:
    """How many image series a TIFF holds (positions of a multi-position OME-TIFF...); 1 for other files.

    Readers here take the first series only, so more than one is worth a note.
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return 1
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return max(len(tif.series), 1)
    except Exception:  # noqa: BLE001 - unreadable files are reported by read_image
        return 1


def is_zarr_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr store (a folder with zarr v2 or v3 metadata): one image, not a folder of them."""
    p = Path(path)
    return p.is_dir() and any((p / f).is_file() for f in (".zgroup", ".zarray", ".zattrs", "zarr.json"))


def output_stem(path: str | os.PathLike) -> str:
    """The name outputs take from an input: ``cells`` for ``cells.tif`` and for ``cells.ome.zarr``."""
    p = Path(path)
    if is_zarr_dir(p):
        name = p.name[: -len(".zarr")] if p.name.lower().endswith(".zarr") else p.name
        return name[: -len(".ome")] if name.lower().endswith(".ome") else name
    return p.stem


def _image_store(path: Path) -> bool:
    """Whether a folder inside an input folder is an OME-Zarr image to segment.

    Not: hidden folders and ``.partial`` ones (runs in progress), and the label stores this package
    writes (the outputs of an earlier run, with or without a copy of the image); named one by one,
    any zarr folder is an input.
    """
    if path.name.startswith(".") or path.name.endswith(".partial") or not is_zarr_dir(path):
        return False
    ours = plugin_attrs(path)  # unreadable metadata ({}): an input, and the reader says what is wrong
    return not (ours and ("labels_name" in ours or ours.get("placeholder_image")))


def plugin_attrs(path: str | os.PathLike) -> dict | None:
    """What this package recorded in a zarr store's root attributes (``"napari_unet_loop"``).

    ``None`` for a store it did not write (no such entry), ``{}`` when the metadata cannot be read;
    read from the metadata files (zarr v2 ``.zattrs``, v3 ``zarr.json``), without opening the store.
    """
    for meta, key in ((".zattrs", None), ("zarr.json", "attributes")):
        f = Path(path) / meta
        if f.is_file():
            try:
                attrs = json.loads(f.read_text())
            except (OSError, ValueError):
                return {}
            attrs = attrs.get(key, {}) if key and isinstance(attrs, dict) else attrs
            ours = attrs.get("napari_unet_loop") if isinstance(attrs, dict) else None
            if isinstance(ours, dict):
                return ours
    return None


def expand_inputs(inputs: Iterable[str | os.PathLike], skipped: list[Path] | None = None) -> list[Path]:
    """Expand files and folders into a sorted list of image files.

    Parameters
    ----------
    inputs : iterable of path-like
        Files and folders.
    skipped : list, optional
        When given, label files found in folders beside their image (``cells_labels.png``
        beside ``cells.png``, see :func:`is_label_file_of`) are left out and appended here.
        Files named one by one are always kept.

    Raises
    ------
    ReadError
        If an input does not exist or a folder holds no image files.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if is_zarr_dir(p):
            out.append(p)
        elif p.is_dir():
            found = sorted(q for q in p.iterdir() if (q.is_file() and is_image_file(q)) or _image_store(q))
            if not found:
                kinds = ", ".join(IMAGE_SUFFIXES)
                raise ReadError(f"folder {p} holds no image files ({kinds}) or OME-Zarr images (.zarr)")
            if skipped is not None:
                stems = {q.stem for q in found}
                labels = [q for q in found if is_label_file_of(q.stem, stems)]
                skipped.extend(labels)
                found = [q for q in found if q not in labels]
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


_CTC_GOLD = re.compile(r"^man_seg[_-]?\d+$", re.IGNORECASE)


def is_ctc_gold_truth(path: str | Path) -> bool:
    """Whether a label file is named as the Cell Tracking Challenge's gold segmentation truth (``man_segNNN``).

    That truth may mark only some of the cells of a frame (the challenge: "very limited cell instance
    coverage"), so ``train`` reads such files as labels that mark only some objects unless told otherwise.
    """
    return bool(_CTC_GOLD.match(base_name(path)))


def base_name(path: str | os.PathLike) -> str:
    """A file's name without its image suffix, ``.ome`` included: ``cells`` for ``cells.tif`` and ``cells.ome.tif``."""
    stem = Path(path).stem
    return stem[: -len(".ome")] if stem.lower().endswith(".ome") else stem


def is_label_file_of(stem: str, stems: set[str]) -> bool:
    """Whether a file stem names the label image of another stem in ``stems``.

    ``cells_labels``, ``cells_masks``, ``cells_cp_masks``, ``mask_cells``... are label files
    when ``cells`` is among ``stems`` (the naming rules of :func:`pair_files`).
    """
    if not _LABEL_AFFIXES.search(stem):
        return False
    return _LABEL_AFFIXES.sub("", stem) in stems - {stem}


_TRAILING_NUMBER = re.compile(r"(\d+)\D*$")


def _by_stem(files: list[Path], key, unique: bool) -> dict:
    """Files keyed by ``key(stem)`` (None: skipped).

    A key shared by several files keeps the first of them, or none when ``unique``.
    """
    out: dict = {}
    seen: set = set()
    for q in files:
        k = key(base_name(q))
        if k is None:
            continue
        if k in seen:
            if unique:
                out.pop(k, None)
        else:
            out[k] = q
        seen.add(k)
    return out


# the Cell Tracking Challenge's 2D annotation of one slice of a 3D frame: man_seg_TTT_ZZZ (time, then slice)
_SLICE_OF_FRAME = re.compile(r"^man_seg_?\d+_\d+$", re.IGNORECASE)


def _trailing_number(stem: str) -> int | None:
    """The frame number a file pairs by: its name's last number (none for a slice of a frame, man_seg_TTT_ZZZ)."""
    if _SLICE_OF_FRAME.match(stem):  # its last number is the slice: by it, it would pair with another frame
        return None
    m = _TRAILING_NUMBER.search(stem)
    return int(m.group(1)) if m else None


def fit_labels(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``labels`` reshaped to ``shape`` when they differ only by axes of one value, else as they are.

    A ``(Y, X, 1)`` mask saved with a channel axis, or a ``(1, Y, X)`` one, fits a ``(Y, X)``
    image; labels of another shape are returned unchanged for the caller to refuse.
    """
    labels = np.asarray(labels)
    if labels.shape != tuple(shape) and np.squeeze(labels).shape == tuple(n for n in shape if n != 1):
        return labels.reshape(shape)
    return labels


def read_label_file(path: str | os.PathLike, notes: list[str] | None = None) -> np.ndarray:
    """A label file (ground truth, training labels) as whole-number object ids.

    Its shape is as stored; :func:`fit_labels` fits it to the image's once that is known. A
    binary mask (one id in separate pieces) gives each piece an id of its own
    (:func:`~napari_unet_loop.core.targets.separate_mask`).

    Parameters
    ----------
    path : path-like
        The file.
    notes : list of str, optional
        Where to say that the file was read as a mask.

    Returns
    -------
    numpy.ndarray
        The labels (integer dtype; ``bool`` masks as ``uint8``).

    Raises
    ------
    ReadError
        If the file cannot be read, or holds fractions or negative values (a probability map,
        -1 for background): those are not object ids, and scoring or training on them would
        silently count the wrong objects.
    """
    from ..core.targets import object_ids, separate_mask

    labels = read_image(path, labels=True)
    try:
        labels = object_ids(labels, str(path))
    except ValueError as exc:  # the same rule as training samples', said as a file's
        raise ReadError(str(exc)) from None
    labels, masks = separate_mask(labels)
    if masks and notes is not None:
        where = f"{masks} plane(s)" if labels.ndim > 2 else "it"
        notes.append(f"{Path(path).name} is a mask (one id in separate pieces): in {where}, each piece is one object")
    return labels


def pair_files(images_dir: str | os.PathLike, labels_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Match image and label files of two folders by name.

    Each image pairs with the label file of the same base name (any image suffix, ``.ome.tif``
    as ``.tif``), else with
    the one of the same base name once common label affixes are taken off the label file's
    name (``_mask``, ``_masks``, ``_cp_masks``, ``_label``, ``_labels``, ``_seg``, ``_gt``, or
    a ``man_seg``/``mask``/``seg`` prefix), so one folder may mix both namings; a label file
    pairs once. When no names pair, files pair by frame number (the last number in the
    name: ``t012.tif`` and ``man_seg012.tif``, as in the Cell Tracking Challenge), when each
    number names one file on each side; the Challenge's annotations of one slice of a 3D frame
    (``man_seg_012_004``: frame 12, slice 4) pair with none. Images without a label file are skipped
    (:func:`unpaired_note` names them). Given one folder for both, the files named as label
    files (those affixes) are the labels and the others the images: no file is its own label.

    Returns
    -------
    list of tuple
        ``(image_path, label_path)`` pairs sorted by image name.

    Raises
    ------
    ReadError
        If a folder is missing or no names match.
    """
    images, labels = _image_and_label_files(images_dir, labels_dir)
    # by name: the same base name, else the base name without label affixes; a label file pairs once
    exact = _by_stem(labels, lambda stem: stem, False)
    stripped = _by_stem(labels, lambda stem: _LABEL_AFFIXES.sub("", stem), False)
    found: dict[Path, Path] = {}
    taken: set[Path] = set()
    for by_name in (exact, stripped):  # every exact name first: a looser one never takes an image's own file
        for q in images:
            label = by_name.get(base_name(q))
            if q not in found and label is not None and label not in taken:
                found[q] = label
                taken.add(label)
    if found:
        return [(q, found[q]) for q in images if q in found]
    # by frame number, when no name pairs: each number must name one file on each side
    by_number = _by_stem(labels, _trailing_number, unique=True)
    keys = [_trailing_number(base_name(q)) for q in images]
    counts = Counter(keys)
    pairs = [(q, by_number[k]) for q, k in zip(images, keys) if k is not None and counts[k] == 1 and k in by_number]
    if pairs:
        return pairs
    slices = [q.name for q in labels if _SLICE_OF_FRAME.match(base_name(q))]
    raise ReadError(
        f"no image in {Path(images_dir)} has a label file of the same name in {Path(labels_dir)} "
        "(matched by base name, by base name without _mask/_labels/..., or by frame number)"
        + (
            f"; {slices[0]} and the like annotate one slice of a 3D frame (man_seg_TTT_ZZZ): cut that slice out "
            "of its frame into an image of its own to pair them"
            if slices
            else ""
        )
    )


def unpaired_note(images_dir: str | os.PathLike, labels_dir: str | os.PathLike, pairs: list) -> str | None:
    """A line naming the images of ``images_dir`` that :func:`pair_files` left without a label file, or None."""
    images, _ = _image_and_label_files(images_dir, labels_dir)
    paired = {q for q, _ in pairs}
    left = [q.name for q in images if q not in paired]
    if not left:
        return None
    shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
    return f"{len(left)} image(s) in {images_dir} have no label file and are left out: {shown}"


def _image_and_label_files(images_dir: str | os.PathLike, labels_dir: str | os.PathLike) -> tuple[list, list]:
    """The image files and the label files to pair, sorted (one folder for both: told apart by their names)."""
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise ReadError(f"{d} is not a folder")
    images = sorted(q for q in images_dir.iterdir() if q.is_file() and is_image_file(q))
    labels = sorted(q for q in labels_dir.iterdir() if q.is_file() and is_image_file(q))
    if images_dir.resolve() == labels_dir.resolve():  # one folder: its label files are told by their names
        labels = [q for q in images if _LABEL_AFFIXES.search(base_name(q))]
        images = [q for q in images if not _LABEL_AFFIXES.search(base_name(q))]
        if not labels or not images:
            raise ReadError(
                f"the images and the labels are both {images_dir}, and no file there is named as the label "
                "file of an image (cells.png with cells_mask.png, cells_labels.tif, man_seg012.tif ...): "
                "give the folder of the label files"
            )
    return images, labels


def read_with_axes(
    path: str | Path, axes: str | None = None, in_channels: int = 1, channel: int | None = None
) -> tuple[np.ndarray, str]:
    """An image file and its axes: ``axes`` if given, else what the file declares, else guessed from the shape.

    Raises
    ------
    InputError
        If the axes do not fit the image, or it has a channel axis, the model takes one
        channel and no channel was chosen.
    napari_unet_loop.io.images.ReadError
        If the file cannot be read.
    """
    from ..core.axes import guess_axes
    from ..core.channels import check_channel_choice
    from ..core.image import InputError

    data = read_image(path)
    if data.size == 0:  # e.g. a TIFF of no planes
        raise ReadError(f"{path} holds no pixels (shape {data.shape}): the file may be truncated or damaged")
    axes = (axes or file_axes(path) or guess_axes(data.shape)).upper()
    if len(axes) != data.ndim:
        raise InputError(f"axes {axes!r} name {len(axes)} axes but the image has {data.ndim} (shape {data.shape})")
    check_channel_choice(axes, data.shape, in_channels, channel)
    return data, axes
