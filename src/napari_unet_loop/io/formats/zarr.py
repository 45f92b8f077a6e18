"""OME-Zarr export: the image plus ``labels/<name>``, multiscale, NGFF 0.4 by default."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.atomic import atomic_dir
from ..conventions import (
    ExportError,
    ExportJob,
    ExportResult,
    _check_targets,
    _json_safe,
    check_labels,
    normalize_axes,
    normalize_scale,
    normalize_units,
    pyramid_levels,
    safe_name,
)

# --------------------------------------------------------------------------------------------------
# OME-Zarr
# --------------------------------------------------------------------------------------------------


def _pyramid_factors(shape_yx: Sequence[int], levels: int | None) -> tuple[int, ...]:
    """Downsampling factors (2, 4, ...) keeping the coarsest level at least MIN_LEVEL_SIZE pixels."""
    if levels is None:
        levels = pyramid_levels(shape_yx)
    return tuple(2**i for i in range(1, int(levels) + 1))


def _image_for_zarr(image: Any, labels_shape: tuple[int, ...], axes: str) -> tuple[np.ndarray, str]:
    """The image in OME-NGFF axis order (t, c, z, y, x) with its lower-case axes."""
    img = np.asarray(image)
    if img.shape == labels_shape:
        return img, axes.lower()
    if img.ndim == len(labels_shape) + 1 and img.shape[:-1] == labels_shape and img.shape[-1] <= 16:
        # channels last (RGB or a few channels) -> NGFF puts c after t
        c_pos = 1 if axes.startswith("T") else 0
        img = np.moveaxis(img, -1, c_pos)
        lower = axes.lower()
        return img, lower[:c_pos] + "c" + lower[c_pos:]
    raise ExportError(
        f"image shape {img.shape} does not match labels shape {labels_shape}; give the image the labels "
        "were made from (same shape, optionally with a trailing channel axis)"
    )


def write_ome_zarr(
    path: str | os.PathLike,
    labels: Any,
    image: Any | None = None,
    *,
    name: str = "labels",
    scale: Sequence[float] | None = None,
    units: str | Sequence[Any] | None = None,
    axes: str | None = None,
    overwrite: bool = False,
    levels: int | None = None,
    ngff_version: str = "0.4",
    attrs: Mapping[str, Any] | None = None,
    translation: Sequence[float] | None = None,
) -> ExportResult:
    """Write an OME-Zarr image with the labels in its ``labels/<name>`` group, through ome-zarr-py.

    Both are multiscale (labels downsampled by nearest neighbour). Without an image, an
    all-zero placeholder image (tiny on disk) holds the labels, since OME-Zarr labels belong
    to an image; the reader in :mod:`napari_unet_loop.io.readers` skips it.
    The store is written to a temporary sibling folder and renamed into place when complete.

    Parameters
    ----------
    path : path-like
        Target ``.zarr`` folder.
    labels : array-like
        Labels (``YX``, ``ZYX``, ``TYX``, ``TZYX``).
    image : array-like, optional
        The image, same shape as the labels or with a trailing channel axis.
    name : str
        Name of the labels group.
    scale : sequence of float, optional
        Pixel size per axis of the labels.
    units : str or sequence, optional
        Spatial unit (or one per axis); see :func:`normalize_units`.
    axes : str, optional
        Label axes (guessed from the dimensions if not given).
    overwrite : bool
        Whether an existing store may be replaced (only after the new one is complete).
    levels : int, optional
        Downsampled levels below full resolution (default: halve until the smaller side
        would drop below 64 pixels, at most 4).
    ngff_version : {"0.4", "0.5"}
        OME-NGFF version: 0.4 (Zarr v2, read by most tools today) or 0.5 (Zarr v3).
    attrs : mapping, optional
        Extra attributes stored under ``napari_unet_loop`` in the image group.
    translation : sequence of float, optional
        Where the first pixel lies, per label axis, in the units of ``scale``: every level of the
        image and the labels gets it as its ``translation``.

    Returns
    -------
    ExportResult
        The ``.zarr`` folder and notes.
    """
    import zarr
    from ome_zarr import writer as oz_writer
    from ome_zarr.format import FormatV04, FormatV05

    notes: list[str] = []
    data = check_labels(labels)
    axes = normalize_axes(axes, data.ndim)
    vals = normalize_scale(scale, data.ndim)
    unit_list = normalize_units(units, axes, vals, notes)
    fmt = {"0.4": FormatV04, "0.5": FormatV05}.get(str(ngff_version))
    if fmt is None:
        raise ExportError(f"unknown OME-NGFF version {ngff_version!r}; use '0.4' or '0.5'")
    group_name = safe_name(name).replace(" ", "_")
    lower = axes.lower()
    scale_map = {a: (vals[i] if vals else 1.0) for i, a in enumerate(lower)}
    axes_units = {a: u for a, u in zip(lower, unit_list, strict=True) if u is not None}
    placeholder = image is None
    if placeholder:
        img, img_axes = np.zeros(data.shape, np.uint8), lower
        notes.append("no image given: an empty placeholder image holds the labels in the OME-Zarr")
    else:
        img, img_axes = _image_for_zarr(image, data.shape, axes)
        if img.dtype == bool:  # a mask as the image: its pyramid cannot be smoothed as booleans
            img = img.astype(np.uint8)
    factors = _pyramid_factors(data.shape[-2:], levels)
    img_scale = {a: scale_map.get(a, 1.0) for a in img_axes}
    img_units = {a: u for a, u in axes_units.items() if a in img_axes}
    meta = {"placeholder_image": placeholder, "labels_name": group_name, **_json_safe(dict(attrs or {}))}
    path = Path(path)
    _check_targets([path], overwrite)
    chunk_yx = 512
    with atomic_dir(path, overwrite=overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2 if fmt is FormatV04 else 3)
        oz_writer.write_image(
            img,
            root,
            scale_factors=factors,
            fmt=fmt(),
            axes=list(img_axes),
            scale=img_scale,
            axes_units=img_units or None,
            storage_options={"chunks": _chunks(img.shape, img_axes, chunk_yx)},
        )
        oz_writer.write_labels(
            data,
            root,
            name=group_name,
            scaler=None,
            scale_factors=factors,
            fmt=fmt(),
            axes=list(lower),
            scale=scale_map,
            axes_units=axes_units or None,
            storage_options={"chunks": _chunks(data.shape, lower, chunk_yx)},
            label_metadata={"source": {"image": "../../"}},
        )
        if translation is not None:  # where the first pixel lies: added to each level's translation, per axis
            shift = dict(zip(lower, (float(t) for t in translation), strict=True))
            _add_translation(root, shift)
            _add_translation(root["labels"][group_name], shift)
        if fmt is FormatV04:
            root.attrs["napari_unet_loop"] = meta
        else:
            root.attrs.update({"napari_unet_loop": meta})
    return ExportResult(paths=[path], notes=notes)


def _add_translation(group: Any, shift: Mapping[str, float]) -> None:
    """Move every level of ``group``'s multiscale image by ``shift`` (axis name -> offset, in the scale's units).

    Added to each level's own translation (ome-zarr-py gives the lower levels the half-pixel shift
    of their downsampling, which readers and :class:`~napari_unet_loop.io.store_edits.StoreEditor`
    use to place them), so the whole pyramid moves together. Axes ``shift`` does not name (an
    image's channel axis) stay.
    """
    attrs = group.attrs.asdict()
    ome = attrs.get("ome")
    multiscales = (ome or attrs)["multiscales"]
    for ms in multiscales:
        names = [a["name"] if isinstance(a, dict) else str(a) for a in ms["axes"]]
        vector = [shift.get(n.lower(), 0.0) for n in names]
        for dataset in ms["datasets"]:
            transforms = list(dataset["coordinateTransformations"])
            own = next((t for t in transforms if t.get("type") == "translation"), None)
            if own is None:
                transforms.append({"type": "translation", "translation": vector})
            else:
                own["translation"] = [float(a) + b for a, b in zip(own["translation"], vector, strict=True)]
            dataset["coordinateTransformations"] = transforms
    group.attrs.update({"multiscales": multiscales} if ome is None else {"ome": {**ome, "multiscales": multiscales}})


def _chunks(shape: Sequence[int], axes: str, yx: int) -> tuple[int, ...]:
    """Chunks of one plane (up to ``yx`` square) per non-spatial-plane index."""
    return tuple(min(n, yx) if a in "yx" else 1 for n, a in zip(shape, axes, strict=True))


def export(job: ExportJob) -> ExportResult:
    """The OME-Zarr entry of the export registry (the store's attributes share the record's export id)."""
    return write_ome_zarr(
        job.target,
        job.data,
        job.image,
        name=job.name,
        scale=job.scale,
        units=job.units,
        axes=job.axes,
        overwrite=job.overwrite,
        attrs={"provenance": dict(job.provenance or {}), "export_id": job.extra["export_id"]},
        translation=job.extra.get("translate"),
    )
