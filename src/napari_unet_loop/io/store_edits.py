"""Corrections to a labels OME-Zarr on disk, written back chunk by chunk and safe against crashes.

A labels store larger than memory is corrected a window at a time: :meth:`StoreEditor.window`
reads a rectangle of the full-resolution labels (of a Z stack: a box, a range of planes deep)
into memory, :meth:`StoreWindow.write_back` writes it back. Only the pixels that changed since
the window was read (or last written back) are written, so two windows that overlap do not undo
each other; only the chunks they fall in are touched, and every multiscale level of those chunks
is brought up to date (nearest neighbour: level ``k`` holds every ``f``-th pixel of level 0, as
the store was built).

What keeps corrections safe lives in ``<store>/_edits/``:

``pending/<row>_<col>.npy`` (``<plane>_<row>_<col>.npy`` in a Z stack)
    A chunk's new content, written (atomically) before the chunk itself and removed once every
    level of it is written. A crash in between leaves it behind; the next :class:`StoreEditor`
    on the store writes it again (:meth:`StoreEditor.recover`) before anything else, so a
    half-written chunk never stays.
``originals/<row>_<col>.npy`` (as above)
    A chunk as it was before its first correction: the way back (:meth:`StoreEditor.revert`).
``log.jsonl``
    One line per write-back: when, the window, the chunks and the pixels changed.

A store holding several labels groups (``nuclei``, ``cells``) keeps these for its first group
there and for each other group in ``_edits/groups/<name>/``, and the largest id of each other
group as ``max_label:<name>``: correcting or reverting one group never touches another.

New objects: an id drawn in a window that the window did not hold when it was read (napari's
*new label* counts from the window's own largest id) gets an id above the store's largest, the
same one for the window's whole life. The store's largest id is kept in the root's
``napari_unet_loop`` attributes (``max_label``) and raised *before* a chunk with a new id is
written.

Within one process, the write-backs, reverts and recoveries of one store take turns
(:func:`store_lock`): two windows written back from two threads at once would each read a
chunk, write it whole and so undo the other's pixels, and take the same new id. Two processes
editing one store are not guarded against.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import _fsync_dir, atomic_path
from .conventions import ExportError

#: Folder inside the store that holds the edit journal, the originals and the log.
EDITS = "_edits"
#: Attribute group of this plugin in the store's root attributes.
ATTRS = "napari_unet_loop"

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def store_lock(path: str | os.PathLike) -> threading.RLock:
    """The lock that the changes to one store (by its resolved path) take turns under, in this process."""
    key = str(Path(path).resolve())
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


class StoreEditError(ExportError):
    """A store that cannot be corrected in place (not an OME-Zarr labels store, not 2D or 3D, read-only)."""


@dataclass
class WriteReport:
    """What one write-back did.

    Attributes
    ----------
    pixels : int
        Pixels whose label changed.
    chunks : list of tuple of int
        Level-0 chunks written, as ``(row, column)`` chunk indices (``(plane, row, column)`` in a Z stack).
    new_ids : dict
        Ids drawn in the window mapped to the ids they got in the store (this write-back only).
    """

    pixels: int = 0
    chunks: list[tuple[int, ...]] = field(default_factory=list)
    new_ids: dict[int, int] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.pixels:
            return "no change to write"
        new = f", {len(self.new_ids)} new object id(s)" if self.new_ids else ""
        return f"{self.pixels} pixel(s) in {len(self.chunks)} chunk(s){new}"


def _key(chunk: tuple[int, ...]) -> str:
    return "_".join(str(int(i)) for i in chunk)


def _unkey(name: str) -> tuple[int, ...]:
    return tuple(int(i) for i in name.split("_"))


def _save_npy(path: Path, data: np.ndarray) -> None:
    """Write an array atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, data, allow_pickle=False)


def _labels_group(root, name: str | None):
    """The labels group ``name`` (or the first one listed) of an OME-Zarr root, with its name."""
    try:
        labels = root["labels"]
    except KeyError:
        raise StoreEditError("the store holds no labels group (labels/)") from None
    listed = list(dict(labels.attrs).get("labels") or [])
    if name is None:
        if not listed:
            listed = sorted(k for k, _ in labels.groups())
        if not listed:
            raise StoreEditError("the store's labels/ group lists no labels")
        name = str(listed[0])
    try:
        return labels[name], name
    except KeyError:
        raise StoreEditError(f"the store has no labels named {name!r} (it has: {', '.join(listed)})") from None


def _datasets(group) -> list[dict]:
    """The multiscale levels of an NGFF group (0.4 in the attributes, 0.5 under ``ome``)."""
    attrs = dict(group.attrs)
    attrs = attrs.get("ome", attrs)
    try:
        datasets = [dict(d) for d in attrs["multiscales"][0]["datasets"]]
        if not all("path" in d for d in datasets):
            raise KeyError("path")
    except (KeyError, IndexError, TypeError):
        raise StoreEditError("the labels group has no multiscales metadata") from None
    return datasets


def read_labels(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """The full-resolution labels of an OME-Zarr store, read whole and read-only.

    Of the labels group ``name`` (the first listed when ``None``), at the level its multiscales
    metadata lists first: ``0`` in a block-wise store, ``s0`` in one written whole.

    Raises
    ------
    StoreEditError
        The store holds no such labels group, or it has no multiscales metadata.
    """
    import zarr

    group, _ = _labels_group(zarr.open_group(str(path), mode="r"), name)
    return np.asarray(group[str(_datasets(group)[0]["path"])])


def _transform(dataset: dict, ndim: int) -> tuple[np.ndarray | None, np.ndarray]:
    """A level's NGFF scale (``None`` when not given) and translation (zero when not given)."""
    scale, shift = None, np.zeros(ndim)
    for t in dataset.get("coordinateTransformations") or []:
        if t.get("type") == "scale" and "scale" in t:
            scale = np.asarray(t["scale"], float)[-ndim:]
        elif t.get("type") == "translation" and "translation" in t:
            shift = np.asarray(t["translation"], float)[-ndim:]
    return scale, shift


def _sampling(n0: int, n: int, scale0, shift0, scale, shift) -> np.ndarray:
    """For each pixel of a level along one axis, the level-0 pixel it shows (nearest pixel centre).

    From the NGFF transforms: level pixel ``j`` sits at ``shift + j * scale``, level-0 pixel
    ``i`` at ``shift0 + i * scale0``. Without transforms the level is every ``n0 / n``-th pixel.
    """
    j = np.arange(n)
    if scale is None or scale0 is None or scale0 <= 0:
        return np.minimum(j * max(1, round(n0 / max(n, 1))), n0 - 1)
    return np.clip(np.floor((shift + j * scale - shift0) / scale0 + 0.5), 0, n0 - 1).astype(np.int64)


def _resized(transforms: list[tuple[np.ndarray | None, np.ndarray]]) -> bool:
    """Whether the levels were made by resizing (a translation of half a level pixel less half a level-0 one)."""
    scale0, shift0 = transforms[0]
    if scale0 is None or len(transforms) < 2:
        return False
    for scale, shift in transforms[1:]:
        if scale is None or not np.allclose(shift - shift0, (scale - scale0) / 2, rtol=1e-6, atol=1e-9):
            return False
    return bool(np.any(transforms[1][1] != shift0))


def _level_sampling(datasets: list[dict], shapes: list[tuple[int, ...]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each level and axis, which level-0 pixel each of its pixels shows.

    Levels built by taking every f-th pixel (this plugin's stores) are described exactly by their
    NGFF transforms. Levels resized one from the other (ome-zarr-py's writer, which this plugin's
    OME-Zarr export uses: nearest neighbour at pixel centres, level k from level k-1) are
    recognised by their translations and followed level by level, since their transforms give the
    geometry, not the pixels picked.
    """
    ndim = len(shapes[0])
    transforms = [_transform(d, ndim) for d in datasets]
    n0 = shapes[0]
    if _resized(transforms):
        out = [tuple(np.arange(n) for n in n0)]
        for prev, shape in zip(shapes[:-1], shapes[1:], strict=False):
            step = []
            for a in range(ndim):
                j = np.arange(shape[a])
                src = np.minimum(np.floor((j + 0.5) * prev[a] / shape[a]).astype(np.int64), prev[a] - 1)
                step.append(out[-1][a][src])
            out.append(tuple(step))
        return out  # type: ignore[return-value]
    scale0, shift0 = transforms[0]
    return [
        tuple(  # type: ignore[misc]
            _sampling(
                n0[a], shape[a], None if scale0 is None else scale0[a], shift0[a],
                None if scale is None else scale[a], shift[a],
            )
            for a in range(ndim)
        )
        for (scale, shift), shape in zip(transforms, shapes, strict=True)
    ]  # fmt: skip


class StoreEditor:
    """Correct the labels of an OME-Zarr store in place (see the module docstring).

    Opening it finishes any write-back a crash interrupted.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` folder.
    name : str, optional
        The labels group (default: the first one listed).

    Raises
    ------
    StoreEditError
        The folder is not a finished OME-Zarr labels store of 2D or 3D (Z stack) labels, or cannot
        be written.
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None) -> None:
        import zarr

        self.path = Path(path)
        if self.path.name.endswith(".partial"):
            raise StoreEditError(f"{self.path} is an unfinished run: finish it (resume) before correcting it")
        if not os.access(self.path, os.W_OK):
            raise StoreEditError(f"{self.path} cannot be written (read-only): copy the store to correct it")
        try:
            self.root = zarr.open_group(str(self.path), mode="r+")
        except Exception as exc:  # noqa: BLE001 - any zarr failure means: not a store we can edit
            raise StoreEditError(f"{self.path} is not a zarr store: {exc}") from exc
        self.group, self.name = _labels_group(self.root, name)
        datasets = _datasets(self.group)
        self.levels = [self.group[str(d["path"])] for d in datasets]
        base = self.levels[0]
        if base.ndim not in (2, 3):
            raise StoreEditError(
                f"only 2D labels and Z stacks are corrected in place (these have {base.ndim} dimensions)"
            )
        self.shape: tuple[int, ...] = tuple(int(n) for n in base.shape)
        self.chunks: tuple[int, ...] = tuple(int(n) for n in base.chunks)
        self.dtype = np.dtype(base.dtype)
        self.sampling = _level_sampling(datasets, [tuple(int(n) for n in a.shape) for a in self.levels])
        # each labels group keeps its own journal and largest id: a revert of one never writes another's
        # pixels (the first group's stay where stores of one group have always kept them)
        first = _labels_group(self.root, None)[1] == self.name
        self.folder = self.path / EDITS if first else self.path / EDITS / "groups" / self.name
        self._max_key = "max_label" if first else f"max_label:{self.name}"
        # every level's folder takes the corrected chunks, and the journal's folder its entries: a store whose
        # root is writable but whose arrays are not (a shared or copied store) is refused here, not mid-write
        for folder in [*(self.path / a.path for a in self.levels), self.path / EDITS, self.folder]:
            if folder.is_dir() and not os.access(folder, os.W_OK):
                raise StoreEditError(
                    f"{self.path} cannot be written ({folder.relative_to(self.path)} is read-only): copy the store "
                    "to correct it"
                )
        self.recovered = self.recover()

    # ---------------------------------------------------------------- reading

    @property
    def ndim(self) -> int:
        """2 for a plane, 3 for a Z stack."""
        return len(self.shape)

    def read(self, *bounds: int) -> np.ndarray:
        """Part of the full-resolution labels.

        ``read(y0, y1, x0, x1)``: rows ``y0:y1``, columns ``x0:x1``; in a Z stack
        ``read(z0, z1, y0, y1, x0, x1)``.
        """
        where = tuple(slice(a, b) for a, b in zip(bounds[::2], bounds[1::2], strict=True))
        return np.asarray(self.levels[0][where])

    def _attrs(self) -> dict[str, Any]:
        """The plugin's root attributes as they are on disk now (other editors of the store may have moved them)."""
        import zarr

        return dict(dict(zarr.open_group(str(self.path), mode="r").attrs).get(ATTRS) or {})

    def recorded_max_label(self) -> int | None:
        """The largest id as the store's attributes record it (``None``: not recorded, a store of another tool)."""
        meta = self._attrs()
        return int(meta[self._max_key]) if self._max_key in meta else None

    def max_label(self) -> int:
        """The largest id in the store (recorded in its attributes, else found chunk by chunk once).

        Finding it reads every chunk of the full resolution: a store of another tool costs one pass
        over its labels, the first time; the answer is recorded then.
        """
        with store_lock(self.path):
            recorded = self.recorded_max_label()
            if recorded is not None:
                return recorded
            top = 0
            for chunk in np.ndindex(*self.grid):
                top = max(top, int(np.max(self.levels[0][self._chunk_slices(chunk)], initial=0)))
            self._set_max_label(top)
            return top

    def _set_max_label(self, value: int) -> None:
        """Raise the recorded largest id to ``value`` (never lower it)."""
        import zarr

        with store_lock(self.path):
            root = zarr.open_group(str(self.path), mode="r+")
            meta = dict(dict(root.attrs).get(ATTRS) or {})
            meta[self._max_key] = max(int(value), int(meta.get(self._max_key, 0)))
            root.attrs[ATTRS] = meta

    def window(self, y0: int, y1: int, x0: int, x1: int, planes: tuple[int, int] | None = None) -> StoreWindow:
        """A window of the labels to correct in memory and write back (clipped to the store).

        Parameters
        ----------
        y0, y1, x0, x1 : int
            Rows and columns.
        planes : tuple of int, optional
            In a Z stack, the planes ``z0:z1`` (all of them when omitted).
        """
        wanted = [(int(y0), int(y1)), (int(x0), int(x1))]
        if self.ndim == 3:
            wanted.insert(0, (0, self.shape[0]) if planes is None else (int(planes[0]), int(planes[1])))
        elif planes is not None:
            raise StoreEditError("planes are for Z stacks; these labels are one 2D plane")
        bounds = [(max(0, a), min(n, b)) for (a, b), n in zip(wanted, self.shape, strict=True)]
        if any(b <= a for a, b in bounds):
            shown = ", ".join(f"{a}:{b}" for a, b in bounds)
            raise StoreEditError(f"the window {shown} holds no pixel of the {self.shape} labels")
        return StoreWindow(self, tuple(a for a, _ in bounds), self.read(*(v for ab in bounds for v in ab)))

    # ---------------------------------------------------------------- writing

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of chunks along each axis."""
        return tuple(-(-n // c) for n, c in zip(self.shape, self.chunks, strict=True))

    def _chunk_slices(self, chunk: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(chunk, self.chunks, self.shape, strict=True))

    def _level_spans(self, chunk: tuple[int, ...]) -> list[list[tuple[int, int]]]:
        """For each level, the pixel span along each axis that shows one of a level-0 chunk's pixels."""
        where = self._chunk_slices(chunk)
        return [
            [
                (int(np.searchsorted(p, w.start)), int(np.searchsorted(p, w.stop)))
                for p, w in zip(picks, where, strict=True)
            ]
            for picks in self.sampling
        ]

    def _check_chunk_files(self, chunks: Iterable[tuple[int, ...]]) -> None:
        """Refuse, before anything is journaled, a write-back whose chunk files' folders are read-only.

        The editor checked each level's top folder when it opened; a store that nests its chunks in
        folders (``0/1/2``, ``c/0/1``) may hold a read-only one deeper down (a store copied in part,
        or shared). Only the files this change writes are checked: a walk of the whole store would
        cost seconds on a network share.

        Raises
        ------
        StoreEditError
            Naming the first folder that cannot be written.
        """
        seen: set[Path] = set()
        for chunk in chunks:
            for arr, spans in zip(self.levels, self._level_spans(chunk), strict=True):
                if not all(b > a for a, b in spans):
                    continue
                files = getattr(arr, "shards", None) or arr.chunks  # a sharded array's files hold whole shards
                ranges = [range(a // c, -(-b // c)) for (a, b), c in zip(spans, files, strict=True)]
                for coords in itertools.product(*ranges):
                    target = self.path / arr.path / arr.metadata.encode_chunk_key(tuple(coords))
                    if target in seen:
                        continue
                    seen.add(target)
                    # the deepest folder that exists takes the file (zarr replaces a chunk file by renaming a
                    # new one over it: the folder's permission counts, not the file's) or its new folders
                    folder = target.parent
                    while not folder.is_dir() and folder != self.path:
                        folder = folder.parent
                    if folder not in seen and not os.access(folder, os.W_OK):
                        raise StoreEditError(
                            f"{self.path} cannot be written ({folder.relative_to(self.path)} is read-only): "
                            "copy the store to correct it; nothing was changed"
                        )
                    seen.add(folder)

    def _write_chunk(self, chunk: tuple[int, ...], data: np.ndarray) -> None:
        """Write a level-0 chunk's content into every level (the level pixels that show one of its pixels)."""
        where = self._chunk_slices(chunk)
        for arr, picks, spans in zip(self.levels, self.sampling, self._level_spans(chunk), strict=True):
            if all(b > a for a, b in spans):
                arr[tuple(slice(a, b) for a, b in spans)] = data[
                    np.ix_(*(p[a:b] - s.start for p, (a, b), s in zip(picks, spans, where, strict=True)))
                ]

    def _commit(
        self, chunks: dict[tuple[int, ...], np.ndarray], keep_originals: bool, journaled: Callable[[], None] | None
    ) -> None:
        """Journal every chunk, then write them (see :meth:`recover`).

        Once the whole journal is on disk the change is made: ``journaled`` is called, and the
        chunks are written from the journal, now or (after a failure or a crash) by the next
        write-back or editor. A failure while journaling leaves no entry of this change. The callers
        check first that the store can take the chunks (:meth:`_check_chunk_files`).
        """
        pending = self.folder / "pending"
        originals = self.folder / "originals"
        pending.mkdir(parents=True, exist_ok=True)
        originals.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        try:
            for chunk, data in chunks.items():
                original = originals / f"{_key(chunk)}.npy"
                if keep_originals and not original.exists():
                    _save_npy(original, self.read(*_flat(self._chunk_slices(chunk))))
                entry = pending / f"{_key(chunk)}.npy"
                _save_npy(entry, data)
                written.append(entry)
            _fsync_dir(originals)
            _fsync_dir(pending)
        except BaseException:
            for entry in written:  # not all of the change is journaled: none of it is
                entry.unlink(missing_ok=True)
            raise
        if journaled is not None:
            journaled()
        self.recover()

    def recover(self) -> int:
        """Write the chunks the journal holds into the store, then clear them; return how many.

        Entries are left by a crash or a failed write (a full disk) in the middle of a
        write-back; every write-back and every new editor writes them first, so the journal is
        always applied before anything newer is read or written.
        """
        with store_lock(self.path):
            return self._recover()

    def _recover(self) -> int:
        pending = self.folder / "pending"
        todo = sorted(pending.glob("*.npy")) if pending.is_dir() else []
        for f in todo:
            try:
                data = np.load(f, allow_pickle=False)
            except (OSError, ValueError):  # a journal entry is renamed into place whole: never half
                f.unlink(missing_ok=True)
                continue
            self._write_chunk(_unkey(f.stem), data)
        if todo and hasattr(os, "sync"):
            os.sync()  # the chunks are on disk before their entries go (a power cut, not only a crash)
        for f in todo:
            f.unlink(missing_ok=True)
        return len(todo)

    def pending(self) -> bool:
        """Whether the journal holds chunks not yet written into the store."""
        folder = self.folder / "pending"
        return folder.is_dir() and any(folder.glob("*.npy"))

    def edited_chunks(self) -> list[tuple[int, ...]]:
        """Chunks corrected since the store was written (those with an original kept)."""
        originals = self.folder / "originals"
        return sorted(_unkey(f.stem) for f in originals.glob("*.npy")) if originals.is_dir() else []

    def revert(self) -> int:
        """Put every corrected chunk back as the segmentation wrote it; return how many chunks."""
        with store_lock(self.path):
            return self._revert()

    def _revert(self) -> int:
        chunks = {c: np.load(self.folder / "originals" / f"{_key(c)}.npy") for c in self.edited_chunks()}
        self._check_chunk_files(chunks)
        self._commit(chunks, keep_originals=False, journaled=None)
        for c in chunks:
            (self.folder / "originals" / f"{_key(c)}.npy").unlink()
        self._log({"reverted": [list(c) for c in chunks]})
        return len(chunks)

    def _log(self, entry: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = {"time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), **entry}
        log = self.folder / "log.jsonl"
        cut = False  # a line cut by a crash: this entry starts on a line of its own, not glued to it
        if log.is_file() and log.stat().st_size:
            with open(log, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                cut = fh.read(1) != b"\n"
        with open(log, "a") as fh:
            fh.write(("\n" if cut else "") + json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def history(self) -> list[dict[str, Any]]:
        """The write-backs and reverts so far (oldest first)."""
        log = self.folder / "log.jsonl"
        if not log.is_file():
            return []
        out = []
        for line in log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut by a crash
                continue
        return out


def _flat(slices: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(v for s in slices for v in (s.start, s.stop))


class StoreWindow:
    """A rectangle of a store's labels (a box of a Z stack's) held in memory, to correct and write back.

    Parameters
    ----------
    editor : StoreEditor
        The store.
    origin : tuple of int
        Row and column of the window's first pixel in the store (plane, row and column in a Z stack).
    labels : numpy.ndarray
        The window's labels as read; :attr:`data` is a copy to edit.
    """

    def __init__(self, editor: StoreEditor, origin: tuple[int, ...], labels: np.ndarray) -> None:
        if len(origin) != editor.ndim or labels.ndim != editor.ndim:
            raise StoreEditError(
                f"a window of {editor.ndim}D labels needs a {editor.ndim}D origin and labels "
                f"(got {len(origin)} and {labels.ndim})"
            )
        self.editor = editor
        self.origin = tuple(int(o) for o in origin)
        self.data = labels.copy()
        self._written = labels.copy()  # what the store holds for the window, as far as this window knows
        self._known = set(np.unique(labels).tolist())  # ids the window held when read: not new objects
        self.remap: dict[int, int] = {}  # ids drawn here -> their ids in the store

    @property
    def bounds(self) -> tuple[int, ...]:
        """``(y0, y1, x0, x1)`` of the window in the store (``(z0, z1, y0, y1, x0, x1)`` in a Z stack)."""
        return tuple(v for o, n in zip(self.origin, self.data.shape, strict=True) for v in (o, o + n))

    def next_id(self, scan: bool = True) -> int:
        """An id no object of the store has: the one to draw a new object with.

        Parameters
        ----------
        scan : bool
            Whether to find the store's largest id chunk by chunk when its attributes do not
            record it (:meth:`StoreEditor.max_label`). ``False`` (a quick answer for the viewer's
            brush): the window's largest id + 1 then, which may be an id elsewhere in the store;
            :meth:`write_back` gives an id the window did not hold when read a free one anyway.
        """
        top = self.editor.max_label() if scan else self.editor.recorded_max_label()
        if top is None:
            top = int(self.data.max(initial=0))
        return max(top, max(self.remap.values(), default=0)) + 1

    def write_back(self, data: np.ndarray | None = None) -> WriteReport:
        """Write the pixels changed since the last write-back into the store (every level).

        Parameters
        ----------
        data : numpy.ndarray, optional
            The window's labels now (default :attr:`data`), e.g. a napari layer's data.

        Returns
        -------
        WriteReport
            What was written.
        """
        data = self.data if data is None else np.asarray(data)
        if data.shape != self._written.shape:
            raise StoreEditError(
                f"the labels are {data.shape}, the window {self._written.shape}: they must not change shape"
            )
        with store_lock(self.editor.path):  # another window's write-back reads and writes the same chunks
            return self._write_back(data)

    def _write_back(self, data: np.ndarray) -> WriteReport:
        self.editor.recover()  # what an earlier failed write-back journaled goes in first: chunks are read below
        changed = data != self._written
        report = WriteReport()
        if not changed.any():
            return report
        where = [i + o for i, o in zip(np.nonzero(changed), self.origin, strict=True)]  # in the store
        which = np.ravel_multi_index(
            [g // c for g, c in zip(where, self.editor.chunks, strict=True)], self.editor.grid
        )  # each changed pixel's chunk
        codes = np.unique(which)
        touched = [tuple(int(i) for i in np.unravel_index(int(c), self.editor.grid)) for c in codes]
        # before the new ids are recorded: a store that cannot take the chunks is left as it was
        self.editor._check_chunk_files(touched)
        values = data[changed].astype(self.editor.dtype, copy=False)
        fresh = [int(v) for v in np.unique(values) if v and int(v) not in self._known and int(v) not in self.remap]
        if fresh:
            top = self.next_id() - 1
            if top + len(fresh) > np.iinfo(self.editor.dtype).max:
                raise StoreEditError(
                    f"the store's {self.editor.dtype} labels have no id left for {len(fresh)} new object(s) "
                    f"(largest id {top}): export the labels as 32-bit to add objects"
                )
            for k, v in enumerate(fresh, start=1):
                self.remap[v] = report.new_ids[v] = top + k
            self.editor._set_max_label(top + len(fresh))  # before any chunk holds the new ids
        if self.remap:
            keys = np.fromiter(self.remap, dtype=np.int64)
            hit = np.isin(values, keys)
            if hit.any():
                lookup = dict(self.remap)
                values = values.copy()
                values[hit] = [lookup[int(v)] for v in values[hit]]
        chunks: dict[tuple[int, ...], np.ndarray] = {}
        for code, chunk in zip(codes, touched, strict=True):
            sel = which == code
            slices = self.editor._chunk_slices(chunk)
            content = self.editor.read(*_flat(slices)).copy()
            content[tuple(g[sel] - s.start for g, s in zip(where, slices, strict=True))] = values[sel]
            chunks[chunk] = content

        report.pixels, report.chunks = int(changed.sum()), sorted(chunks)

        def journaled() -> None:  # the change is made: later write-backs compare with it
            self._written = data.copy()
            self.editor._log(
                {"window": list(self.bounds), "pixels": report.pixels, "chunks": [list(c) for c in report.chunks],
                 "new_ids": {str(k): v for k, v in report.new_ids.items()}}
            )  # fmt: skip

        self.editor._commit(chunks, keep_originals=True, journaled=journaled)
        return report

    def reload(self) -> np.ndarray:
        """Read the window's labels from the store again (after :meth:`StoreEditor.revert`); return them.

        What was drawn in the window and not written back is dropped; ids handed out before stay
        used (the store's largest id never goes down).
        """
        self.editor.recover()
        fresh = self.editor.read(*self.bounds)
        self.data, self._written = fresh.copy(), fresh.copy()
        self._known = set(np.unique(fresh).tolist())
        self.remap = {}
        return self.data

    def dirty(self, data: np.ndarray | None = None) -> bool:
        """Whether the labels differ from what was last written back, or a write-back is still in the journal."""
        data = self.data if data is None else np.asarray(data)
        return bool((data != self._written).any()) or self.editor.pending()
