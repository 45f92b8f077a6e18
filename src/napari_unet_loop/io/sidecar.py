"""Provenance records beside exports (``<file>.json``): written atomically, checked against their data.

While an export replaces its data the old record is moved aside, so no record ever describes other
data; records carry the SHA-256 of each file written (or, for OME-Zarr, the store's export id).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core import __version__
from ..core.atomic import atomic_path, temp_prefix
from ..core.edits import changed_mask, edited_region
from .conventions import _json_safe, check_writable, sidecar_path

# --------------------------------------------------------------------------------------------------
# provenance sidecar
# --------------------------------------------------------------------------------------------------


def write_provenance(path: str | os.PathLike, provenance: Mapping[str, Any], *, overwrite: bool = True) -> Path:
    """Write a provenance record as JSON, atomically.

    ``date`` (UTC, ISO 8601), ``plugin`` and ``plugin_version`` are added when missing.
    Values that JSON cannot hold (numpy numbers and arrays, paths) are converted.

    Parameters
    ----------
    path : path-like
        The JSON file (see :func:`sidecar_path` for the name beside an export).
    provenance : mapping
        The record, e.g. ``model_name``, ``model_card``, ``thresholds``, ``tile_size``.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    record = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "plugin": "napari-unet-loop",
        "plugin_version": __version__,
    }
    record.update(_json_safe(dict(provenance)))
    path = Path(path)
    check_writable(path.parent)
    try:
        text = json.dumps(record, indent=2, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not valid UTF-8: escaped, still valid JSON
        text = json.dumps(record, indent=2, ensure_ascii=True).encode("utf-8")
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(text + b"\n")
    return path


def edit_summary(original: Any, current: Any, margin: int = 16) -> dict[str, Any]:
    """How one plane of labels changed since the plugin wrote it, in brief, for a provenance record.

    Objects are matched by overlap (IoU above 0.5, as in
    :func:`napari_unet_loop.core.metrics.correction_agreement`), not by id: an object whose
    pixels changed and that still matches one of before is *reshaped*; one that matches
    none is *added*; an object of before that no object matches any more is *removed*.
    Renumbered objects (the same pixels under another id) do not count. A merge of two
    objects of equal size counts as two removed and one added; a split as one reshaped
    (the larger part) and one added.

    Parameters
    ----------
    original : array-like
        The labels as the plugin wrote them.
    current : array-like
        The labels now, same shape.
    margin : int
        Pixels around the edited objects that count as reviewed (as for fine-tuning on edited
        regions, :func:`napari_unet_loop.core.edits.edited_region`).

    Returns
    -------
    dict
        ``objects_added``, ``objects_removed``, ``objects_reshaped``, ``pixels_changed``,
        ``reviewed_pixels`` (the edited objects plus ``margin``) and ``reviewed_box``
        (``[y0, x0, y1, x1]`` of that region, end exclusive; ``None`` when nothing changed).

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    original, current = np.asarray(original), np.asarray(current)
    changed = changed_mask(original, current)
    out: dict[str, Any] = {
        "objects_added": 0,
        "objects_removed": 0,
        "objects_reshaped": 0,
        "pixels_changed": int(np.count_nonzero(changed)),
        "reviewed_pixels": 0,
        "reviewed_box": None,
    }
    if not out["pixels_changed"]:
        return out
    before, after = np.unique(original[changed]), np.unique(current[changed])
    # an object that only lost pixels keeps its id on the other side: it was touched too
    touched_o = np.union1d(before, after[np.isin(after, original)])
    touched_c = np.union1d(after, before[np.isin(before, current)])
    touched_o, touched_c = touched_o[touched_o > 0], touched_c[touched_c > 0]
    in_o, in_c = np.isin(original, touched_o), np.isin(current, touched_c)
    area_o = dict(zip(*(a.tolist() for a in np.unique(original[in_o], return_counts=True))))
    area_c = dict(zip(*(a.tolist() for a in np.unique(current[in_c], return_counts=True))))
    both = in_o & in_c
    pairs, inter = np.unique(np.stack([original[both], current[both]]), axis=1, return_counts=True)
    matched_o: set[int] = set()
    match_c: dict[int, bool] = {}  # current id -> same pixels as its match
    for o, c, n in zip(pairs[0].tolist(), pairs[1].tolist(), inter.tolist()):
        if n / (area_o[o] + area_c[c] - n) > 0.5:
            matched_o.add(o)
            match_c[c] = n == area_o[o] == area_c[c]
    for c in touched_c.tolist():
        if c not in match_c:
            out["objects_added"] += 1
        elif not match_c[c]:
            out["objects_reshaped"] += 1
    out["objects_removed"] = sum(o not in matched_o for o in touched_o.tolist())
    # the reviewed region, computed in the box of the touched objects (plus the margin) only
    rows, cols = np.nonzero(in_o | in_c | changed)
    y0, x0 = max(int(rows.min()) - margin, 0), max(int(cols.min()) - margin, 0)
    y1, x1 = int(rows.max()) + margin + 1, int(cols.max()) + margin + 1
    box = (slice(y0, y1), slice(x0, x1))
    region = edited_region(original[box], current[box], margin)
    if region.any():
        ry, rx = np.nonzero(region.any(1))[0], np.nonzero(region.any(0))[0]
        out["reviewed_pixels"] = int(np.count_nonzero(region))
        out["reviewed_box"] = [y0 + int(ry[0]), x0 + int(rx[0]), y0 + int(ry[-1]) + 1, x0 + int(rx[-1]) + 1]
    return out


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The provenance sidecar of an export (``<file>.json``), or ``None`` if absent or unreadable.

    For one plane of a per-slice PNG set (``cells_z003.png``) the set's sidecar
    (``cells.png.json``) is returned when it lists the file.
    """
    path = Path(path)
    candidates = [sidecar_path(path)]
    m = re.match(r"^(?P<base>.+?)((_t\d+)?(_z\d+)?)$", path.stem)
    if m and m.group(2):
        candidates.append(path.with_name(m.group("base") + path.suffix + ".json"))
    for cand in candidates:
        if not cand.is_file():
            continue
        try:
            record = json.loads(cand.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        if cand != candidates[0] and path.name not in record.get("files", []):
            continue
        return record
    return None


def _sidecar_record(
    fmt: str,
    files: Sequence[Path],
    labels: np.ndarray,
    axes: str,
    name: str,
    scale: list[float] | None,
    units: list[str | None],
    image: np.ndarray | None,
    notes: list[str],
    provenance: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """The sidecar JSON content for an export."""
    top = int(labels.max()) if labels.size else 0
    if top < 2**24:  # a histogram is one pass; np.unique sorts
        n_objects = int(np.count_nonzero(np.bincount(labels.ravel(), minlength=top + 1)[1:]))
    else:
        n_objects = int(np.count_nonzero(np.unique(labels)))
    record: dict[str, Any] = {
        "export_format": fmt,
        "files": [p.name for p in files],
        "labels": {
            "name": name,
            "shape": list(labels.shape),
            "dtype": str(labels.dtype),
            "axes": axes,
            "n_objects": n_objects,
            "max_label": top,
        },
        "scale": scale,
        "units": units,
        "image": None if image is None else {"shape": list(image.shape), "dtype": str(image.dtype)},
        "notes": list(notes),
    }
    if extra:
        record.update(extra)
    record["provenance"] = dict(provenance or {})
    return record


def _move_aside(path: Path) -> Path | None:
    """Rename ``path`` to a hidden name that :func:`clean_leftovers` recognises; ``None`` if absent."""
    if not path.is_file():
        return None
    aside = path.with_name(f"{temp_prefix(path.name)}{uuid.uuid4().hex[:8]}")
    os.replace(path, aside)
    return aside


# checksums already computed in this process, by what the file system says of the file (path, device,
# inode, size, modification and change times): each read of an export checks its record, and hashing
# a large file on a network drive each time costs seconds
_HASHES: OrderedDict[tuple, str] = OrderedDict()
_HASHES_KEPT = 256
# a file changed this recently is hashed every time: two writes within one tick of the file system's
# clock can leave the same times and size behind (git's "racily clean" files)
_SETTLED_NS = 2_000_000_000


def file_state(st: os.stat_result) -> tuple:
    """What the file system says of a file that changes whenever its bytes may have.

    Device, inode, size, modification and change times: a file replaced (a new inode), written
    in place or resized shows a different state.
    """
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (to tell whether a record still describes the file).

    A file that has not changed since this process last hashed it (same inode, size, modification
    and change times, and not changed within the last two seconds) is not read again. The times
    come from the opened file, so a network drive's client checks them with the server first.
    """
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        key = (os.path.realpath(path), *file_state(st))
        known = _HASHES.get(key)
        if known is not None:
            with contextlib.suppress(KeyError):  # another thread may have let it go meanwhile
                _HASHES.move_to_end(key)
            return known
        h = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        _HASHES[key] = digest
        while len(_HASHES) > _HASHES_KEPT:
            _HASHES.popitem(last=False)
    return digest


def sidecar_matches(path: str | os.PathLike) -> bool | None:
    """Whether an export's sidecar still describes it (file checksums, or the OME-Zarr's export id).

    Returns
    -------
    bool or None
        ``None`` when there is no sidecar, or it predates checksums.
    """
    record = read_sidecar(path)
    return None if record is None else _describes(Path(path), record)


def _describes(path: Path, record: dict) -> bool | None:
    """Whether ``record`` describes the file or store at ``path`` (``None``: it keeps no checksum of it)."""
    if path.is_dir():
        try:
            import zarr

            attrs = dict(zarr.open_group(str(path), mode="r").attrs)
        except Exception:  # noqa: BLE001 - unreadable store: it does not match
            return False
        ours = (attrs.get("napari_unet_loop") or {}).get("export_id")
        return None if "export_id" not in record else ours == record["export_id"]
    sums = record.get("sha256")
    if not isinstance(sums, dict) or path.name not in sums:
        return None
    return file_sha256(path) == sums[path.name]


def current_sidecar(path: str | os.PathLike) -> dict | None:
    """The sidecar of ``path`` as readers take it: provenance only while it still describes the file.

    A sidecar whose checksum (or OME-Zarr export id) no longer matches belongs to an earlier
    file: labels corrected in another program and saved again (an ImageJ ROI set from Fiji), an
    image written over the export, or a failed export that put the old record back beside new
    data. How the file was made is then unknown: the record comes back without its provenance
    and marked ``"stale"`` (the data decides whether it holds labels, :func:`.readers._is_label_array`),
    keeping what the file itself may lack (pixel size, units, axes, a ROI set's image shape), with
    a warning (napari shows it as a notification).

    Returns
    -------
    dict or None
        The record; ``None`` when there is none.
    """
    path = Path(path)
    record = read_sidecar(path)
    if record is not None and _describes(path, record) is False:
        warnings.warn(
            f"{path.name} changed since {sidecar_path(path).name} was written: how it was made is not known "
            "any more (its pixel size and shape are still taken from there)",
            UserWarning,
            stacklevel=2,
        )
        kept = {k: v for k, v in record.items() if k not in ("provenance", "sha256", "export_id")}
        return {**kept, "stale": True}
    return record
