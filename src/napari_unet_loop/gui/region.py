"""Segment part of a plane: the visible region or a drawn rectangle, for images too large to segment whole.

A mixin of the dock widget (like :class:`.input_section.InputChoices`) adds the *Region* choice
of the Segment tab. With *Visible region* or *Inside the rectangle*, a run reads only that
part of the full-resolution plane (level 0 of a multiscale image) plus a context margin,
segments it as a whole plane would be, keeps the objects whose centroid lies in the region
and writes them to a labels layer of the region's size, placed over the image by its
translate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QComboBox

from ..core.image import InputError
from ..core.segment import LARGE_PIXELS
from ._segment_worker import PlaneResult
from .layers import META_KEY, Layout, current_index, layer_data, out_transform, plane_shape, unwrap

if TYPE_CHECKING:
    from .runs import SegmentRun

#: The Region choices: (text shown, key); "plane" is the whole plane, as before regions existed.
REGION_CHOICES = (
    ("Whole plane", "plane"),
    ("Visible region", "view"),
    ("Inside the rectangle", "rectangle"),
)
#: Context read around a region on each side (pixels): objects at its border see their surroundings.
MARGIN = 64
#: How to segment a whole large image block by block from a terminal.
BLOCKWISE_COMMAND = "napari-unet-loop segment IMAGE.ome.zarr -o out/ --format zarr"


class RegionError(InputError):
    """A region that cannot be segmented (nothing visible, no rectangle); the message says what to do."""


@dataclass(frozen=True)
class Region:
    """A rectangle of an image plane in full-resolution pixels: rows ``y0:y1``, columns ``x0:x1``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        """Height and width (pixels)."""
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def empty(self) -> bool:
        """Whether the rectangle holds no pixel."""
        return self.y1 <= self.y0 or self.x1 <= self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        """Rows and columns, to index a plane."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def grown(self, margin: int, shape: tuple[int, int]) -> Region:
        """The rectangle with ``margin`` pixels more on each side, clipped to a plane of ``shape``."""
        h, w = shape
        return Region(
            max(0, self.y0 - margin), min(h, self.y1 + margin), max(0, self.x0 - margin), min(w, self.x1 + margin)
        )

    def as_list(self) -> list[int]:
        """``[y0, y1, x0, x1]``, as recorded in the labels layer's metadata."""
        return [self.y0, self.y1, self.x0, self.x1]

    def __str__(self) -> str:
        return f"{self.y0}:{self.y1}, {self.x0}:{self.x1}"


@dataclass(frozen=True)
class RegionPlan:
    """What a region run reads and keeps.

    Attributes
    ----------
    region : Region
        The part of the plane segmented and kept.
    window : Region
        ``region`` with :data:`MARGIN` pixels of context on each side, clipped to the plane: what is read.
    index : tuple of int
        The plane of a stack (its position along the stacked axes; ``()`` for a 2D image).
    """

    region: Region
    window: Region
    index: tuple[int, ...] = ()

    @property
    def out_index(self) -> tuple[int, ...]:
        """The plane's index in the output layer, which holds that plane only (length 1 stack axes)."""
        return (0,) * len(self.index)

    def label(self) -> str:
        """``"[y0:y1, x0:x1]"``, with the plane's index first in a stack: the output layer's name ends with it."""
        where = "".join(f"{i}, " for i in self.index)
        return f"[{where}{self.region}]"


def pixel_region(corners: np.ndarray, shape: tuple[int, int]) -> Region:
    """The pixels a quadrilateral touches, clipped to a plane of ``shape``.

    Parameters
    ----------
    corners : numpy.ndarray
        ``(N, 2)`` corner positions ``(y, x)`` in the image's data coordinates (pixel centres
        at integers, so pixel ``i`` spans ``i - 0.5`` to ``i + 0.5``).
    shape : tuple of int
        Height and width of the plane.

    Returns
    -------
    Region
        Possibly empty (the corners lie outside the plane).
    """
    lo = np.min(corners, axis=0)
    hi = np.max(corners, axis=0)
    h, w = shape

    def bounds(a: float, b: float, n: int) -> tuple[int, int]:
        return int(min(max(math.floor(a + 0.5), 0), n)), int(min(max(math.ceil(b + 0.5), 0), n))

    y0, y1 = bounds(lo[0], hi[0], h)
    x0, x1 = bounds(lo[1], hi[1], w)
    return Region(y0, y1, x0, x1)


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9: viewer.camera is deprecated
    return scene.camera if scene is not None else viewer.camera


def visible_region(viewer, image: Image) -> Region:
    """The part of ``image``'s plane on screen, in full-resolution pixels.

    Computed from the camera (``viewer.scene.camera``: ``center``, and ``zoom`` in canvas
    pixels per world unit) and the canvas size (``viewer.canvas.viewbox_size``): the
    canvas corners in world coordinates, taken to the image's data coordinates with
    ``image.world_to_data``. (``image.corner_pixels`` is not used: it is updated only
    when the canvas draws, and for multiscale images it covers the chunks loaded, which
    only grows while zooming in.)

    Raises
    ------
    RegionError
        In the 3D view, when the view shows other axes than the image's Y and X, or when no
        part of the image is on screen.
    """
    dims = viewer.dims
    if dims.ndisplay != 2:
        raise RegionError("Visible region works in the 2D view: switch the viewer to 2D, then segment again.")
    nw = dims.ndim
    shown = [int(d) for d in dims.displayed][-2:]
    if sorted(shown) != [nw - 2, nw - 1]:
        raise RegionError(
            "the view shows other axes than the image's Y and X (transposed or rolled axes): "
            "show Y and X again, or choose Region: Whole plane"
        )
    camera = _camera(viewer)
    zoom = float(camera.zoom)
    height, width = (float(s) for s in viewer.canvas.viewbox_size(viewer.layers))
    centre = [float(c) for c in camera.center[-2:]]
    half = (height / 2 / zoom, width / 2 / zoom)
    point = np.asarray(dims.point, dtype=float)
    corners = []
    for dv in (-half[0], half[0]):
        for dh in (-half[1], half[1]):
            p = point.copy()
            p[shown[0]], p[shown[1]] = centre[0] + dv, centre[1] + dh
            corners.append(np.asarray(image.world_to_data(p), dtype=float)[-2:])
    region = pixel_region(np.array(corners), plane_shape(image))
    if region.empty:
        raise RegionError(
            f"no part of '{image.name}' is visible: pan or zoom to the part to segment "
            "(View > Reset view shows the whole image), then segment again"
        )
    return region


def shapes_layer(viewer) -> Shapes | None:
    """The Shapes layer a rectangle is taken from: the selected one, else the top one in the layer list."""
    active = viewer.layers.selection.active
    if isinstance(active, Shapes):
        return active
    layers = list(viewer.layers)
    chosen = {id(unwrap(layer)) for layer in viewer.layers.selection}  # plugins may get proxies of the layers
    selected = [layer for layer in layers if isinstance(layer, Shapes) and id(unwrap(layer)) in chosen]
    if selected:
        return selected[-1]
    shapes = [layer for layer in layers if isinstance(layer, Shapes)]
    return shapes[-1] if shapes else None


def rectangle_region(viewer, image: Image) -> Region:
    """The bounding box of the selected shape (else the last one drawn) in ``image``'s full-resolution pixels.

    The shape's vertices go to world coordinates with the Shapes layer's ``data_to_world``,
    then to the image's data coordinates with ``image.world_to_data``, so both layers'
    scale and translate are respected. Several selected shapes give the box around them all.

    Raises
    ------
    RegionError
        Without a Shapes layer or a shape, or when the shape lies outside the image.
    """
    layer = shapes_layer(viewer)
    how = (
        "add a Shapes layer (Layers > New Shapes Layer, or the shapes button above the layer list), "
        "draw a rectangle over the part of the image to segment, then segment again"
    )
    if layer is None:
        raise RegionError(f"Region 'Inside the rectangle' needs a rectangle: {how}")
    if not len(layer.data):
        raise RegionError(f"the Shapes layer '{layer.name}' holds no shape: draw a rectangle in it, then segment again")
    chosen = sorted(int(i) for i in layer.selected_data) or [len(layer.data) - 1]
    vertices = np.concatenate([np.asarray(layer.data[i], dtype=float) for i in chosen])
    corners = [np.asarray(image.world_to_data(layer.data_to_world(v)), dtype=float)[-2:] for v in vertices]
    region = pixel_region(np.array(corners), plane_shape(image))
    if region.empty:
        raise RegionError(
            f"the rectangle in '{layer.name}' lies outside '{image.name}': draw it over the image, then segment again"
        )
    return region


def large_plane_hint(image: Image) -> str | None:
    """Advice for a whole-plane run of a lazy (dask, zarr, multiscale) image above 6144 x 6144 pixels.

    Returns
    -------
    str or None
        The message, or ``None`` for in-memory images and smaller planes.
    """
    h, w = plane_shape(image)
    lazy = bool(image.multiscale) or not isinstance(layer_data(image), np.ndarray)
    if not lazy or h * w <= LARGE_PIXELS:
        return None
    return (
        f"'{image.name}' is {h} x {w} pixels: segmenting the whole plane reads all of it into memory and makes a "
        "labels layer as large. To segment part of it, choose Region: Visible region or Inside the rectangle; "
        f"for the whole image block by block, from a terminal: {BLOCKWISE_COMMAND}"
    )


def keep_centred(labels: np.ndarray, plan: RegionPlan) -> np.ndarray:
    """Labels of the region from labels of its window: the objects centred in it, renumbered from 1.

    An object whose centroid lies outside the region (one cut by the window's margin,
    or belonging to the neighbouring area) is dropped; an object centred inside keeps the
    part of it that lies in the region.

    Parameters
    ----------
    labels : numpy.ndarray
        Instance labels of ``plan.window``.
    plan : RegionPlan
        The region and its window.

    Returns
    -------
    numpy.ndarray
        ``int32`` labels of ``plan.region``'s shape.
    """
    oy, ox = plan.region.y0 - plan.window.y0, plan.region.x0 - plan.window.x0
    h, w = plan.region.shape
    crop = labels[oy : oy + h, ox : ox + w]
    n = int(labels.max()) if labels.size else 0
    if n <= 0:
        return np.zeros((h, w), np.int32)
    flat = labels.ravel()
    wh, ww = labels.shape
    count = np.bincount(flat, minlength=n + 1)
    rows = np.bincount(flat, np.repeat(np.arange(wh, dtype=np.float64), ww), minlength=n + 1)
    cols = np.bincount(flat, np.tile(np.arange(ww, dtype=np.float64), wh), minlength=n + 1)
    ids = np.nonzero(count[1:])[0] + 1
    cy = np.floor(rows[ids] / count[ids] + 0.5)  # the pixel holding the centroid
    cx = np.floor(cols[ids] / count[ids] + 0.5)
    inside = (cy >= oy) & (cy < oy + h) & (cx >= ox) & (cx < ox + w)
    lut = np.zeros(n + 1, np.int32)
    lut[ids[inside]] = np.arange(1, int(inside.sum()) + 1, dtype=np.int32)
    return lut[crop]


def crop_result(res: PlaneResult, plan: RegionPlan) -> PlaneResult:
    """A window's :class:`PlaneResult` as the region's: labels by :func:`keep_centred`, maps cropped."""
    oy, ox = plan.region.y0 - plan.window.y0, plan.region.x0 - plan.window.x0
    h, w = plan.region.shape

    def crop(a):
        return None if a is None else np.ascontiguousarray(a[oy : oy + h, ox : ox + w])

    return replace(
        res, index=plan.out_index, labels=keep_centred(res.labels, plan), fg=crop(res.fg), dist=crop(res.dist)
    )


def segment_window(job: Callable[..., Generator], plan: RegionPlan, *args: Any, **kwargs: Any) -> Generator:
    """Run ``job`` (:func:`._segment_worker.segment_planes`) on a region's window and yield the region's results.

    ``args`` are ``job``'s, with a ``read`` that returns the window. Everything ``job``
    yields passes through, except each :class:`PlaneResult`, which becomes the region's
    (see :func:`crop_result`).

    Returns
    -------
    int
        What ``job`` returns (planes done).
    """
    gen = job(*args, **kwargs)
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        yield crop_result(item, plan) if isinstance(item, PlaneResult) else item


def region_transform(image: Image, lay: Layout, plan: RegionPlan) -> dict:
    """Scale, translate and axis names of a region's labels layer, which puts it over the image.

    The image's :func:`.layers.out_transform`, with the translate moved by the region's
    first row and column (and, in a stack, by the plane's index), in world units.
    """
    kw = out_transform(image, lay)
    scale = [float(s) for s in kw["scale"]]
    translate = [float(t) for t in kw["translate"]]
    for k, offset in enumerate((*plan.index, plan.region.y0, plan.region.x0)):
        translate[k] += offset * scale[k]
    kw["scale"], kw["translate"] = scale, translate
    return kw


class RegionChoice:
    """The Region choice of :class:`~napari_unet_loop.gui.widget.UNetLoopWidget`'s Segment tab (a mixin)."""

    _run: SegmentRun  # the running or last job, set by the widget

    def _build_region(self) -> QComboBox:
        self.region_combo = QComboBox()
        for text, key in REGION_CHOICES:
            self.region_combo.addItem(text, key)
        self.region_combo.setToolTip(
            "What Segment does: the whole plane on screen, or only part of it, for large (e.g. whole-slide) "
            "images. Visible region: the part of the image on screen. Inside the rectangle: the selected "
            "shape (else the last one) of the selected (else the top) Shapes layer. Only that part is read, "
            f"with {MARGIN} px of context around it, into a labels layer of its size placed over the image."
        )
        return self.region_combo

    def region_choice(self) -> str:
        """The Region choice: ``"plane"``, ``"view"`` or ``"rectangle"``."""
        return str(self.region_combo.currentData() or "plane")

    def plan_region(self, image: Image, lay: Layout, stack: bool) -> RegionPlan | None:
        """The part of ``image`` the dock's Region choice asks for (``None``: the whole plane).

        Raises
        ------
        RegionError
            For a whole stack with a region, or a region that cannot be had (see
            :func:`visible_region`, :func:`rectangle_region`).
        """
        choice = self.region_choice()
        if choice == "plane":
            return None
        if stack:
            raise RegionError(
                "Segment stack does whole planes: for a region, use Segment slice (the plane on screen), "
                "or choose Region: Whole plane"
            )
        region = visible_region(self.viewer, image) if choice == "view" else rectangle_region(self.viewer, image)
        index = current_index(image, lay, self.viewer.dims.point) if lay.stack_axes else ()
        return RegionPlan(region, region.grown(MARGIN, plane_shape(image)), index)

    def _region_layer(self, run: SegmentRun) -> Labels:
        """A region run's labels layer: the region's earlier layer if unedited (or replacing is chosen), else new."""
        plan, image = run.region, run.image
        name = f"{image.name} labels {plan.label()}"
        shape = (*(1 for _ in plan.index), *plan.region.shape)
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if isinstance(existing, Labels) and existing.data.shape == shape:
            if not self.tracker.is_edited(existing) or self._replace_edited():
                return existing
            show_info(f"'{name}' holds your edits, so the result goes to a new layer.")
        meta: dict = {"region": plan.region.as_list()}
        if plan.index:
            meta["plane"] = list(plan.index)
        return self._add_labels(
            name, np.zeros(shape, np.int32), metadata={META_KEY: meta}, **region_transform(image, run.layout, plan)
        )

    def _last_region_output(self) -> Labels | None:
        """The labels layer of the last run when it segmented a region of the chosen image (for Apply thresholds)."""
        run = self._run
        target, image = run.target, self.image_layer()
        if run.region is None or target is None or image is None or run.image is None:
            return None
        if unwrap(run.image) is not unwrap(image) or target not in self.viewer.layers:
            return None
        return target


__all__ = [
    "MARGIN",
    "REGION_CHOICES",
    "Region",
    "RegionChoice",
    "RegionError",
    "RegionPlan",
    "keep_centred",
    "large_plane_hint",
    "pixel_region",
    "rectangle_region",
    "region_transform",
    "segment_window",
    "visible_region",
]
