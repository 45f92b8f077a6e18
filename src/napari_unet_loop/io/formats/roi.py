"""ImageJ ROI sets (``.zip``): one traced polygon per object, for Fiji's ROI Manager."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...core.atomic import atomic_path
from ..conventions import ExportJob, ExportResult, _check_targets, _planes, check_labels, compact_ids, normalize_axes

# --------------------------------------------------------------------------------------------------
# ImageJ ROIs
# --------------------------------------------------------------------------------------------------


def outline_polygons(mask: np.ndarray) -> list[tuple[bool, np.ndarray]]:
    """Trace the pixel-edge outlines of a 2D mask (like ImageJ's wand, 8-connected).

    Vertices lie on pixel corners, so filling a polygon by pixel centres gives back
    exactly the pixels it was traced from.

    Parameters
    ----------
    mask : numpy.ndarray
        2D boolean mask.

    Returns
    -------
    list of tuple
        ``(is_outer, vertices)`` per closed outline; ``vertices`` is an ``(N, 2)`` int array of
        ``(y, x)`` corner coordinates without the closing repeat and without collinear points.
        Outer outlines come first, largest first; holes follow.
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    inside = m[1:-1, 1:-1]
    sides = (
        (inside & ~m[:-2, 1:-1], (0, 1), (0, 0)),  # top: (r, c+1) -> (r, c)
        (inside & ~m[1:-1, :-2], (0, 0), (1, 0)),  # left: (r, c) -> (r+1, c)
        (inside & ~m[2:, 1:-1], (1, 0), (1, 1)),  # bottom: (r+1, c) -> (r+1, c+1)
        (inside & ~m[1:-1, 2:], (1, 1), (0, 1)),  # right: (r+1, c+1) -> (r, c+1)
    )
    starts, ends = [], []
    for sel, (sy, sx), (ey, ex) in sides:
        r, c = np.nonzero(sel)
        starts.append(np.stack([r + sy, c + sx], axis=1))
        ends.append(np.stack([r + ey, c + ex], axis=1))
    start = np.concatenate(starts)
    end = np.concatenate(ends)
    if not len(start):
        return []
    width = m.shape[1] + 1
    skey = (start[:, 0] * width + start[:, 1]).tolist()
    ekey = (end[:, 0] * width + end[:, 1]).tolist()
    out_edges: dict[int, list[int]] = {}
    for i, k in enumerate(skey):
        out_edges.setdefault(k, []).append(i)
    used = [False] * len(skey)
    dirs = (end - start).tolist()
    loops: list[tuple[bool, np.ndarray, float]] = []
    # start each walk at a vertex with a single outgoing edge, so closing it is unambiguous
    order = sorted(range(len(skey)), key=lambda i: len(out_edges[skey[i]]))
    for first in order:
        if used[first]:
            continue
        path = [first]
        used[first] = True
        cur = first
        while ekey[cur] != skey[first]:
            cands = [j for j in out_edges[ekey[cur]] if not used[j]]
            if not cands:  # pragma: no cover - cannot happen for edges traced from a mask
                break
            if len(cands) > 1:  # a diagonal touch: turn towards the other pixel (8-connectivity)
                dy, dx = dirs[cur]
                cands.sort(key=lambda j: -(dx * dirs[j][0] - dy * dirs[j][1]))
            cur = cands[0]
            used[cur] = True
            path.append(cur)
        verts = start[path]
        d = np.diff(np.vstack([verts, verts[:1]]), axis=0)
        turn = np.any(d != np.roll(d, 1, axis=0), axis=1)
        verts = verts[turn]
        y, x = verts[:, 0].astype(np.float64), verts[:, 1].astype(np.float64)
        signed = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
        loops.append((signed < 0, verts, abs(signed)))
    loops.sort(key=lambda t: (not t[0], -t[2]))
    return [(outer, verts) for outer, verts, _ in loops]


def _roi_name(label: int, idx: tuple[int, ...], stack_axes: str) -> str:
    """ROI name: the label id, plus 1-based plane positions for stacks (``7-z3``)."""
    return "-".join([str(label)] + [f"{a.lower()}{i + 1}" for a, i in zip(stack_axes, idx, strict=True)])


def write_imagej_rois(
    path: str | os.PathLike, labels: Any, *, axes: str | None = None, overwrite: bool = False
) -> ExportResult:
    """Write one traced polygon ROI per object (and plane) as an ImageJ ROI set ``.zip``.

    Each ROI is named by its label id (``"7"``; ``"7-z3"`` / ``"7-t2-z3"`` in stacks, 1-based
    like Fiji) and carries the id as the ``label`` property; stack ROIs get their
    position (z/t). Fiji's ROI Manager opens the file; the outlines follow pixel edges,
    so filling them gives back the labels exactly, except for objects with holes or several
    separate pieces, whose ROI is the outer outline of their largest piece (a note counts them).

    Parameters
    ----------
    path : path-like
        Target ``.zip`` file.
    labels : array-like
        Labels (``YX``, ``ZYX``, ``TYX``, ``TZYX``).
    axes : str, optional
        Label axes (guessed from the dimensions if not given).
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    ExportResult
        The file and notes.
    """
    from roifile import ROI_TYPE, ImagejRoi, roiwrite
    from scipy import ndimage as ndi

    data = check_labels(labels)
    axes = normalize_axes(axes, data.ndim)
    stack_axes = axes[:-2]
    notes: list[str] = []
    rois = []
    inexact = 0
    for idx, plane in _planes(data, axes):
        plane, ids = compact_ids(plane)
        for i, sl in enumerate(ndi.find_objects(plane)):
            if sl is None:
                continue
            label = i + 1 if ids is None else int(ids[i])
            loops = outline_polygons(plane[sl] == i + 1)
            outers = [v for outer, v in loops if outer]
            if len(outers) > 1 or len(outers) != len(loops):
                inexact += 1
            verts = outers[0] + [sl[0].start, sl[1].start]
            points = verts[:, ::-1].astype(np.int32)  # ImageJ wants (x, y)
            pos: dict[str, int] = {}
            if len(stack_axes) == 1:
                pos["position"] = idx[0]
            elif len(stack_axes) == 2:
                pos["t"], pos["z"] = idx
                pos["position"] = idx[0] * data.shape[1] + idx[1]
            roi = ImagejRoi.frompoints(points, name=_roi_name(label, idx, stack_axes), **pos)
            roi.roitype = ROI_TYPE.TRACED
            roi.right, roi.bottom = int(points[:, 0].max()), int(points[:, 1].max())
            roi.properties = {"label": label}
            rois.append(roi)
    if inexact:
        notes.append(
            f"{inexact} object outline(s) have holes or several pieces: their ROI is the outer outline of "
            "the largest piece, so reading the ROIs back fills the holes and drops the smaller pieces"
        )
    if not rois:
        notes.append("the labels hold no objects: the ROI set is empty")
    path = Path(path)
    _check_targets([path], overwrite)
    with atomic_path(path, overwrite=overwrite) as tmp:
        roiwrite(tmp, rois, mode="w")
    return ExportResult(paths=[path], notes=notes)


def export(job: ExportJob) -> ExportResult:
    """The ImageJ ROI entry of the export registry."""
    result = write_imagej_rois(job.target, job.data, axes=job.axes, overwrite=job.overwrite)
    if job.scale is not None:
        job.notes.append("ImageJ ROIs hold pixel coordinates: the scale is kept in the sidecar JSON")
    return result
