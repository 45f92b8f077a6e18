"""Images read lazily, a window at a time: OME-Zarr (NGFF 0.4 and 0.5) and (Big)TIFF through ``tifffile.aszarr``.

:func:`open_lazy` reads only the metadata and returns a :class:`LazySource`: a small, picklable
description (path, which array, axes, scale) that any process, a cluster worker included, turns
into a :class:`PlaneView` with :meth:`LazySource.open`. The view shows the highest resolution as
``(Y, X)`` or ``(Y, X, C)`` and reads only the pixels a slice asks for, so memory follows the
window, not the image.
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .images import ReadError, is_zarr_dir
from .ngff import full_resolution


@dataclass(frozen=True)
class LazySource:
    """Where a large image lives and how to read it; opened anywhere with :meth:`open`.

    Attributes
    ----------
    path : str
        The ``.zarr`` folder or TIFF file.
    kind : str
        ``"zarr"`` or ``"tiff"``.
    array : str
        The highest-resolution array inside the zarr store (``"0"``); ``""`` for TIFF.
    axes : str
        Axes of the stored array (``"YX"``, ``"CYX"``, ``"YXS"``, ``"TCZYX"`` ...).
    shape : tuple of int
        Shape of the stored array.
    dtype : str
        Its data type.
    scale : list of float or None
        Pixel size along Y and X.
    unit : str or None
        Spatial unit along Y and X.
    at : tuple of (str, int)
        Fixed positions along other axes (``(("Z", 4),)``: plane 4 of a stack, see :meth:`plane`);
        axes not named there are read at 0.
    z_scale : float or None
        Spacing of the Z planes (same unit), for a stack.
    offset : list of float or None
        Where the image's first pixel lies (an OME-Zarr's ``translation``), ``[y, x]`` or, for a
        stack, ``[z, y, x]``, in the units of its scale; ``None`` at the origin.
    """

    path: str
    kind: str
    array: str
    axes: str
    shape: tuple[int, ...]
    dtype: str
    scale: list[float] | None = None
    unit: str | None = None
    at: tuple[tuple[str, int], ...] = ()
    z_scale: float | None = None
    offset: list[float] | None = None

    @property
    def depth(self) -> int:
        """Number of Z planes (1 without a Z axis)."""
        return self.shape[self.axes.index("Z")] if "Z" in self.axes else 1

    def plane(self, z: int) -> LazySource:
        """Plane ``z`` of a Z stack, as a source of its own."""
        if not 0 <= z < self.depth:
            raise IndexError(f"plane {z} of a stack of {self.depth}")
        return replace(self, at=(*((a, i) for a, i in self.at if a != "Z"), ("Z", int(z))))

    @property
    def plane_shape(self) -> tuple[int, int]:
        """``(Y, X)``."""
        return self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")]

    @property
    def channels(self) -> int:
        """Number of channels (``C`` or ``S``), 1 without a channel axis."""
        chan = [a for a in self.axes if a in "CS"]
        return self.shape[self.axes.index(chan[0])] if chan else 1

    def open(self) -> PlaneView:
        """The image as a lazily read ``(Y, X[, C])`` view."""
        return PlaneView(_open_array(self), self.axes, dict(self.at))


def _open_array(src: LazySource):
    """The stored array, read a window at a time.

    An uncompressed TIFF stored in one piece (one strip per plane, as ImageJ and tifffile write
    it) is memory-mapped: through ``aszarr`` its plane is one chunk, and every block would read the
    whole plane. Tiled or compressed TIFFs are read through their chunks (``aszarr``).
    """
    import zarr

    if src.kind == "tiff":
        import tifffile

        try:
            mapped = tifffile.memmap(src.path, mode="r")
        except (ValueError, OSError, TypeError):  # compressed, tiled or not contiguous
            mapped = None
        if mapped is not None and tuple(mapped.shape) == tuple(src.shape):
            return mapped
        return zarr.open(tifffile.imread(src.path, aszarr=True, level=0), mode="r")
    return zarr.open_group(src.path, mode="r")[src.array]


class PlaneView:
    """A stored array seen as ``(Y, X)`` or ``(Y, X, C)``: slicing reads only that window.

    Other axes are read at the position ``at`` gives them (0 when not given).

    Parameters
    ----------
    array : array-like
        A zarr (or numpy) array.
    axes : str
        Its axes.
    at : dict, optional
        Positions along other axes, e.g. ``{"Z": 4}``.
    """

    def __init__(self, array, axes: str, at: dict[str, int] | None = None) -> None:
        self.array = array
        self.axes = axes
        self.at = dict(at or {})
        chan = [a for a in axes if a in "CS"]
        self._chan = chan[0] if chan else None
        order = [axes.index("Y"), axes.index("X")] + ([axes.index(self._chan)] if self._chan else [])
        self.shape = tuple(int(array.shape[k]) for k in order)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        ys = key[0] if len(key) > 0 else slice(None)
        xs = key[1] if len(key) > 1 else slice(None)
        cs = key[2] if len(key) > 2 else slice(None)
        index = tuple({"Y": ys, "X": xs}.get(a, cs if a == self._chan else self.at.get(a, 0)) for a in self.axes)
        data = np.asarray(self.array[index])
        kept = [a for a, k in zip(self.axes, index) if not isinstance(k, numbers.Integral)]
        want = [a for a in ("Y", "X", self._chan) if a in kept]
        return np.transpose(data, [kept.index(a) for a in want])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)


def _multiscales(attrs: dict) -> list | None:
    """The ``multiscales`` list of NGFF 0.4 (top level) or 0.5 (under ``ome``) attributes."""
    if "multiscales" in attrs:
        return attrs["multiscales"]
    ome = attrs.get("ome")
    return ome.get("multiscales") if isinstance(ome, dict) else None


def open_lazy(path: str | os.PathLike, stack: bool = False) -> LazySource:
    """Describe a large image without reading its pixels.

    Parameters
    ----------
    path : path-like
        An OME-Zarr image folder (its first multiscale's highest resolution is used) or a TIFF
        file (BigTIFF, tiled or pyramidal: level 0 of its first series).
    stack : bool
        Accept a Z stack (read a plane at a time with :meth:`LazySource.plane`).

    Returns
    -------
    LazySource
        The description: a 2D plane (with optional channels), or with ``stack`` a Z stack of them.

    Raises
    ------
    ReadError
        A zarr store that is not an OME-Zarr image (no ``multiscales``), a resolution level that
        is listed but missing, a file that cannot be read, or an image with several planes
        along T (or along Z, without ``stack``).
    """
    import zarr

    p = Path(path)
    if p.is_dir():
        if not is_zarr_dir(p):
            raise ReadError(f"{p} is a folder, not a zarr store")
        try:
            node = zarr.open(str(p), mode="r")
        except Exception as exc:  # noqa: BLE001 - any zarr failure is reported the same way
            raise ReadError(f"cannot open {p} as zarr: {exc}") from exc
        if not isinstance(node, zarr.Group):
            raise ReadError(
                f"{p} is a plain zarr array, not an OME-Zarr image: it has no 'multiscales' metadata that says its "
                "axes and pixel size (write it as OME-Zarr, e.g. with ome-zarr-py)"
            )
        ms = _multiscales(dict(node.attrs))
        if not ms:
            raise ReadError(
                f"{p} is a zarr group but not an OME-Zarr image: its attributes have no 'multiscales' "
                "(open the image group inside it, or write it as OME-Zarr)"
            )
        try:
            level, names, units, scale, shift = _ngff_level(ms)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ReadError(f"{p}: its OME-Zarr multiscales metadata is malformed: {exc}") from None
        if level not in node:
            raise ReadError(f"{p}: resolution level '{level}' is listed in its multiscales metadata but missing")
        arr = node[level]
        if names is None:
            names = list("TCZYX"[-arr.ndim :])
            units = [None] * arr.ndim
        if len(names) != arr.ndim:
            raise ReadError(f"{p}: its metadata names {len(names)} axes but level '{level}' has {arr.ndim}")
        axes = "".join(names)
        src = LazySource(
            str(p),
            "zarr",
            level,
            axes,
            tuple(int(n) for n in arr.shape),
            str(arr.dtype),
            [scale[axes.index("Y")], scale[axes.index("X")]]
            if scale and len(scale) == len(axes) and "Y" in axes and "X" in axes
            else None,
            units[axes.index("Y")] if "Y" in axes else None,
            z_scale=scale[axes.index("Z")] if scale and len(scale) == len(axes) and "Z" in axes else None,
            offset=_offset(shift, axes),
        )
    else:
        src = _open_tiff(p)
    _check_plane(src, stack)
    return src


def _open_tiff(p: Path) -> LazySource:
    """The description of a TIFF file's first series, level 0."""
    import tifffile

    from .labels import tiff_scale_along

    if not p.is_file():
        raise ReadError(f"{p} does not exist or is not a file")
    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            level = series.levels[0] if series.levels else series
            axes = series.axes.upper().replace("I", "Z").replace("Q", "Z")
            shape = tuple(int(n) for n in level.shape)
            dtype = str(level.dtype)
            try:
                zyx, unit = tiff_scale_along(tif, "ZYX")
            except Exception:  # noqa: BLE001 - a file without readable resolution tags has no scale
                zyx, unit = None, None
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported the same way
        raise ReadError(f"cannot read {p} as a TIFF image: {exc}") from exc
    yx_scale = None if zyx is None else zyx[1:]
    z_scale = zyx[0] if zyx is not None and "Z" in axes else None  # a stack's spacing, as OME-Zarr's
    return LazySource(str(p), "tiff", "", axes, shape, dtype, yx_scale, unit, z_scale=z_scale)


_AXIS_TYPES = {"time": "T", "channel": "C"}


def _ngff_level(ms: list) -> tuple[str, list[str] | None, list, list[float] | None, list[float] | None]:
    """The highest resolution's path, axis letters (by name, else by type), units, scale and translation."""
    first = ms[0]
    datasets = first.get("datasets") or []
    if not datasets:
        raise ValueError("its multiscales metadata lists no resolution levels")
    level = str(datasets[0]["path"])
    names = units = None
    raw_axes = first.get("axes")
    if raw_axes:
        names, units = [], []
        for a in raw_axes:
            name = (a["name"] if isinstance(a, dict) else a).lower()
            kind = a.get("type") if isinstance(a, dict) else None
            letter = name.upper() if name in ("t", "c", "z", "y", "x") else _AXIS_TYPES.get(kind or "")
            if letter is None:
                raise ValueError(f"axis {name!r} is none of t, c, z, y, x")
            names.append(letter)
            units.append(a.get("unit") if isinstance(a, dict) else None)
    scale, shift = full_resolution(
        datasets[0].get("coordinateTransformations") or [], first.get("coordinateTransformations") or []
    )
    return level, names, units or [], scale, shift


def _offset(shift: list[float] | None, axes: str) -> list[float] | None:
    """An NGFF translation as ``[y, x]`` (``[z, y, x]`` with a Z axis), ``None`` when absent or zero."""
    if not shift or len(shift) != len(axes) or not any(shift[axes.index(a)] for a in "ZYX" if a in axes):
        return None
    return [float(shift[axes.index(a)]) for a in "ZYX" if a in axes]


def _check_plane(src: LazySource, stack: bool = False) -> None:
    """Refuse what the lazy path cannot segment: no Y/X, or several planes along other axes (but Z in a stack)."""
    if "Y" not in src.axes or "X" not in src.axes:
        raise ReadError(f"{src.path}: axes {src.axes} have no Y and X")
    allowed = "YXCS" + ("Z" if stack else "")
    extra = {a: n for a, n in zip(src.axes, src.shape) if a not in allowed and n > 1}
    if extra:
        shown = ", ".join(f"{n} along {a}" for a, n in extra.items())
        if set(extra) == {"Z"}:
            advice = "the command line (`napari-unet-loop segment`) reads Z stacks a plane at a time"
        else:
            advice = "write one time point per file"
        what = "2D planes and Z stacks" if stack else "one 2D plane at a time"
        raise ReadError(f"{src.path}: {shown}; large images are read lazily as {what} here ({advice})")


def source_record(src: LazySource) -> dict[str, Any]:
    """The source as JSON-safe data (for a job's record, which ``--resume`` compares).

    ``written`` tells an input rewritten in place since the run began (same name, shape and type;
    its blocks would not fit the blocks done): a TIFF's size and modification time; an OME-Zarr
    array's newest modification time of its folder, its metadata and two levels of chunk folders
    (a chunk replaced deeper in a nested layout, as a 3D array's in zarr v3, can go unnoticed).
    """
    return json.loads(
        json.dumps(
            {
                "path": str(Path(src.path).resolve()),
                "kind": src.kind,
                "array": src.array,
                "axes": src.axes,
                "shape": list(src.shape),
                "dtype": src.dtype,
                **({"at": [list(p) for p in src.at]} if src.at else {}),
                "written": _written(src),
            }
        )
    )


def _written(src: LazySource) -> list[int] | None:
    """The fingerprint of when ``src`` was last written (see :func:`source_record`); ``None`` if unreadable."""
    try:
        if src.kind == "tiff":
            st = os.stat(src.path)
            return [st.st_size, st.st_mtime_ns]
        folder = Path(src.path) / src.array
        newest = folder.stat().st_mtime_ns
        for entry in os.scandir(folder):  # its metadata and chunk folders, and theirs (v3: c/<row>)
            if entry.is_dir():
                newest = max(
                    newest, entry.stat().st_mtime_ns, *(e.stat().st_mtime_ns for e in os.scandir(entry) if e.is_dir())
                )
            elif entry.name in (".zarray", "zarr.json"):
                newest = max(newest, entry.stat().st_mtime_ns)
        return [newest]
    except OSError:
        return None
