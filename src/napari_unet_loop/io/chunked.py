"""An OME-Zarr labels store written chunk by chunk, by any number of processes, and resumable.

The store is built in ``<name>.zarr.partial`` beside its final place and renamed to
``<name>.zarr`` only when every chunk is written, so a folder named ``.zarr`` is always complete.
Work is recorded by small marker files written *after* the data they vouch for (``_progress/``,
each replaced atomically): a chunk or block without its marker is redone, so a half-written
chunk is never taken for a finished one. ``job.json`` holds what the run was (input, model,
settings); a resumed run must match it.

Layout (NGFF 0.4, Zarr v2, as :func:`napari_unet_loop.io.formats.zarr.write_ome_zarr` writes):
an empty placeholder image at the root (no chunks on disk), the labels in ``labels/<name>`` with
multiscale levels (nearest neighbour, chunks of one block, halved per level), and the run's
provenance in the root's ``napari_unet_loop`` attributes. While the run goes on,
``_scratch/blocks`` holds each block's own labels for the cores that need them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import _fsync_dir, temp_prefix
from .conventions import ExportError, TargetExistsError, _json_safe, pyramid_levels, safe_name, sidecar_path
from .units import unit_name

PARTIAL = ".partial"


class JobMismatchError(ExportError):
    """A partial store exists but belongs to another run."""


def partial_path(target: str | os.PathLike) -> Path:
    """Where a store is built before it is complete: ``<target>.partial``."""
    target = Path(target)
    return target.with_name(target.name + PARTIAL)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a small JSON file atomically (temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(_json_safe(dict(data)), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class LabelsStore:
    """A labels OME-Zarr under construction (see the module docstring).

    Open it with :meth:`create` (a new run, or ``resume``) in the process that plans the run,
    and with :meth:`attach` in the workers.

    Parameters
    ----------
    target : path-like
        The final ``.zarr`` folder.
    """

    def __init__(self, target: str | os.PathLike) -> None:
        self.target = Path(target)
        self.partial = partial_path(self.target)
        job = self.partial / "job.json"
        self.job: dict[str, Any] = json.loads(job.read_text()) if job.is_file() else {}

    # ---------------------------------------------------------------- creation

    @classmethod
    def create(
        cls,
        target: str | os.PathLike,
        *,
        job: Mapping[str, Any],
        shape: tuple[int, ...],
        block: int,
        region: int,
        n_blocks: int,
        dtype: str = "uint32",
        name: str = "labels",
        scale: Sequence[float] | None = None,
        unit: str | None = None,
        overwrite: bool = False,
        resume: bool = False,
        z_scale: float | None = None,
        offset: Sequence[float] | None = None,
    ) -> LabelsStore:
        """Start a store, or pick up the partial one of the same run.

        Parameters
        ----------
        target : path-like
            The final ``.zarr`` folder.
        job : mapping
            What the run is (input, model, settings): kept in ``job.json`` and compared on resume.
        shape : tuple of int
            ``(Y, X)`` of the labels, or ``(Z, Y, X)`` for a stack (written a plane at a time:
            :meth:`write_plane`; chunks of one plane).
        block : int
            Core side: the chunk of the full-resolution labels.
        region : int
            Largest side of a block's region (core plus margins), for the scratch array.
        n_blocks : int
            Number of blocks.
        dtype : str
            Label data type.
        name : str
            Name of the labels group.
        scale : sequence of float, optional
            Pixel size along Y and X.
        unit : str, optional
            Spatial unit.
        overwrite : bool
            Whether an existing complete ``target`` may be replaced (when this run finishes).
        resume : bool
            Continue the partial store of an interrupted run (it must be the same run).
        z_scale : float, optional
            Spacing of the planes of a stack.
        offset : sequence of float, optional
            Where the labels' first pixel lies (the image's), ``[y, x]`` or ``[z, y, x]``, in the
            units of the scale: every level's ``translation``.

        Raises
        ------
        FileExistsError
            ``target`` exists and ``overwrite`` is False.
        JobMismatchError
            A partial store exists: without ``resume``, or with a different job.
        """
        import zarr

        target = Path(target)
        if target.exists() and not overwrite:
            raise TargetExistsError(f"{target} exists.", [target])
        partial = partial_path(target)
        record = {
            **_json_safe(dict(job)),
            "shape": list(shape),
            "block": int(block),
            "region": int(region),
            "n_blocks": int(n_blocks),
            "dtype": dtype,
            "name": name,
        }
        if partial.exists():
            if not resume:
                raise JobMismatchError(
                    f"{partial} holds an interrupted run of this output: resume it, or delete the folder to start over"
                )
            old = json.loads((partial / "job.json").read_text()) if (partial / "job.json").is_file() else None
            if old != record:
                diff = sorted(k for k in set(record) | set(old or {}) if (old or {}).get(k) != record.get(k))
                raise JobMismatchError(
                    f"{partial} belongs to another run (it differs in: {', '.join(diff) or 'everything'}); "
                    "delete it to start over"
                )
            return cls(target)
        partial.mkdir(parents=True)
        stack = shape[:-2]  # (Z,) for a stack
        yx = shape[-2:]
        levels = pyramid_levels(yx, block)
        root = zarr.open_group(str(partial), mode="w", zarr_format=2)
        group = safe_name(name).replace(" ", "_")
        labels = root.require_group("labels").require_group(group)
        for k in range(levels + 1):
            f = 2**k
            lvl_shape = (*stack, -(-yx[0] // f), -(-yx[1] // f))
            chunks = (*(1 for _ in stack), min(block // f, lvl_shape[-2]), min(block // f, lvl_shape[-1]))
            root.create_array(str(k), shape=lvl_shape, chunks=chunks, dtype="uint8", fill_value=0)
            labels.create_array(str(k), shape=lvl_shape, chunks=chunks, dtype=dtype, fill_value=0)
        if stack:  # each plane's own labels until its final ids are written
            root.create_array(
                "_scratch", shape=tuple(shape), chunks=(1, min(block, yx[0]), min(block, yx[1])), dtype="uint32",
                fill_value=0,
            )  # fmt: skip
        else:
            root.create_array(
                "_scratch", shape=(n_blocks, region, region), chunks=(1, region, region), dtype="uint32", fill_value=0
            )
        for sub in ("planes", "final") if stack else ("blocks", "cores"):
            (partial / "_progress" / sub).mkdir(parents=True)
        _write_meta(root, labels, group, shape, levels, scale, unit, z_scale, offset)
        _write_json(partial / "job.json", record)
        return cls(target)

    @classmethod
    def attach(cls, target: str | os.PathLike) -> LabelsStore:
        """Open the partial store of a run in progress (in a worker)."""
        store = cls(target)
        if not store.job:
            raise ExportError(f"{store.partial} is not a run in progress (no job.json)")
        return store

    # ---------------------------------------------------------------- progress

    def _marker(self, kind: str, i: int) -> Path:
        return self.partial / "_progress" / kind / f"{i}.json"

    def done(self, kind: str) -> dict[int, dict]:
        """Finished items of one kind (``"blocks"`` or ``"cores"``) with what their markers record."""
        out = {}
        folder = self.partial / "_progress" / kind
        for f in folder.glob("*.json"):
            try:
                out[int(f.stem)] = json.loads(f.read_text())
            except (ValueError, OSError):  # an unreadable marker counts as not done
                continue
        return out

    def _group(self):
        import zarr

        return zarr.open_group(str(self.partial), mode="r+")

    @property
    def labels_name(self) -> str:
        """The labels group's name."""
        return safe_name(self.job["name"]).replace(" ", "_")

    # ---------------------------------------------------------------- data

    def write_block(self, i: int, local: np.ndarray) -> int:
        """Keep block ``i``'s own labels (its region) until the cores that need them are written; return its count."""
        root = self._group()
        r = self.job["region"]
        buf = np.zeros((1, r, r), np.uint32)
        buf[0, : local.shape[0], : local.shape[1]] = local
        root["_scratch"][i : i + 1] = buf
        n = int(local.max()) if local.size else 0
        _write_json(self._marker("blocks", i), {"n": n, "shape": list(local.shape)})
        return n

    def read_block(self, i: int, shape: Sequence[int]) -> np.ndarray:
        """Block ``i``'s labels over its region of ``shape``."""
        return np.asarray(self._group()["_scratch"][i, : shape[0], : shape[1]])

    def block_view(self, i: int, shape: Sequence[int]) -> _BlockView:
        """Block ``i``'s labels over its region of ``shape``, read only where sliced."""
        return _BlockView(self._group()["_scratch"], i, (int(shape[0]), int(shape[1])))

    def write_core(self, origin: tuple[int, int], labels: np.ndarray, i: int) -> None:
        """Write one core (a chunk of every level) and mark it done."""
        root = self._group()
        group = root["labels"][self.labels_name]
        y0, x0 = origin
        level = 0
        while str(level) in group:
            f = 2**level
            arr = group[str(level)]
            sub = labels[::f, ::f]
            arr[y0 // f : y0 // f + sub.shape[0], x0 // f : x0 // f + sub.shape[1]] = sub
            level += 1
        _write_json(self._marker("cores", i), {"max": int(labels.max()) if labels.size else 0})

    def write_plane(self, z: int, labels: np.ndarray, final: bool, record: Mapping[str, Any]) -> None:
        """Write plane ``z`` of a stack and mark it done.

        With ``final`` False the plane's own labels go to the scratch array (marker
        ``planes/z``); with ``final`` True its labels with their ids over the whole stack go
        into every level (marker ``final/z``). ``record`` is what the marker keeps.
        """
        root = self._group()
        if not final:
            root["_scratch"][z] = labels
            _write_json(self._marker("planes", z), dict(record))
            return
        group = root["labels"][self.labels_name]
        level = 0
        while str(level) in group:
            f = 2**level
            group[str(level)][z] = labels[::f, ::f]
            level += 1
        _write_json(self._marker("final", z), dict(record))

    def read_plane(self, z: int, final: bool) -> np.ndarray:
        """Plane ``z`` of a stack: its own labels (scratch) or, with ``final``, as written into the labels."""
        root = self._group()
        arr = root["labels"][self.labels_name]["0"] if final else root["_scratch"]
        return np.asarray(arr[z])

    def finish(self, attrs: Mapping[str, Any] | None = None) -> Path:
        """Record ``attrs``, move the store into place (replacing an older one), then drop the scratch data.

        The rename comes first: a crash before it leaves a partial store whose markers are all
        there (a resume finishes it at once), a crash after it a complete store with some
        scratch folders inside (ignored by readers).
        """
        import zarr

        root = zarr.open_group(str(self.partial), mode="r+")
        meta = dict(root.attrs.get("napari_unet_loop") or {})
        meta.update(_json_safe(dict(attrs or {})))
        root.attrs["napari_unet_loop"] = meta
        old = None
        if self.target.exists():
            old = self.target.with_name(f"{temp_prefix(self.target.name, 'old')}x")
            os.replace(self.target, old)
        os.replace(self.partial, self.target)
        _fsync_dir(self.target.parent)
        for leftover in ("_scratch", "_progress"):
            shutil.rmtree(self.target / leftover, ignore_errors=True)
        (self.target / "job.json").unlink(missing_ok=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            # an in-memory export's record of the store replaced: it describes that store, not this one
            sidecar_path(self.target).unlink(missing_ok=True)
        return self.target


class _BlockView:
    """One block's labels in the scratch array, read a window at a time (``shape`` and 2D slicing)."""

    def __init__(self, scratch, i: int, shape: tuple[int, int]) -> None:
        self.scratch, self.i, self.shape = scratch, i, shape

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        ys, xs = key
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        return np.asarray(self.scratch[self.i, y0:y1, x0:x1])


def _write_meta(root, labels, group: str, shape, levels: int, scale, unit, z_scale=None, offset=None) -> None:
    """NGFF 0.4 multiscales of the placeholder image and of the labels, and the labels' listing.

    Every level is a subsample from the first pixel on (``[::2^k]``), so all share the ``offset``.
    """
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_label_metadata, write_multiscales_metadata

    sy, sx = (float(scale[0]), float(scale[1])) if scale else (1.0, 1.0)
    stack = len(shape) == 3
    unit = unit_name(unit)  # NGFF's names (micrometer), whatever the source wrote (um, µm)
    axes = [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in ("zyx" if stack else "yx")]
    z = [float(z_scale or 1.0)] if stack else []
    shift = [float(v) for v in list(offset)[-len(shape) :]] if offset is not None and any(offset) else None
    if shift is not None and len(shift) < len(shape):  # a plane of a stack placed in Y and X only
        shift = [0.0] * (len(shape) - len(shift)) + shift
    moved = [{"type": "translation", "translation": shift}] if shift else []
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": [{"type": "scale", "scale": [*z, sy * 2**k, sx * 2**k]}, *moved],
        }
        for k in range(levels + 1)
    ]
    fmt = FormatV04()
    write_multiscales_metadata(root, datasets, fmt=fmt, axes=axes, name="image")
    write_multiscales_metadata(labels, datasets, fmt=fmt, axes=axes, name=group)
    write_label_metadata(root["labels"], group, fmt=fmt, source={"image": "../../"})
    root.attrs["napari_unet_loop"] = {"placeholder_image": True, "labels_name": group}
