"""Helpers between napari layers and the headless core: planes, outputs, edit tracking."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from napari.layers import Image, Labels, Layer

from ..core.image import MIN_SIDE, InputError, sample_step

META_KEY = "napari_unet_loop"


def unwrap(obj):
    """The real object behind napari's ``PublicOnlyProxy`` (plugins get proxied viewers and layers).

    Proxies are created on every attribute access, so they cannot serve as
    (weak) dictionary keys; the wrapped layer can.
    """
    return getattr(obj, "__wrapped__", obj)


def check_image_layer(layer: Layer | None) -> Image:
    """Return ``layer`` if it is an image layer the plugin can segment.

    Raises
    ------
    InputError
        If there is no layer, or it is not an Image layer, or its image plane is tiny.
    """
    if layer is None:
        raise InputError("no image layer: open an image (File > Open, or File > Open Sample) first")
    if not isinstance(layer, Image):
        kind = type(layer).__name__
        raise InputError(
            f"'{layer.name}' is a {kind} layer; choose an Image layer to segment "
            "(Labels, Shapes and Points layers hold annotations, not pixels)"
        )
    shape = plane_shape(layer)
    if min(shape) < MIN_SIDE:
        raise InputError(
            f"the image plane of '{layer.name}' (its last two axes) is {shape[0]}x{shape[1]} pixels; "
            f"need at least {MIN_SIDE}x{MIN_SIDE}. If the last two axes are not Y and X, "
            "reorder the axes (e.g. numpy.moveaxis) before segmenting."
        )
    return layer


def layer_data(layer: Image):
    """Full-resolution data of an image layer (level 0 of a multiscale image)."""
    return layer.data[0] if layer.multiscale else layer.data


def plane_shape(layer: Image) -> tuple[int, int]:
    """Height and width of the layer's image plane (of an image or labels layer)."""
    shape = layer_data(layer).shape
    return tuple(shape[-3:-1]) if getattr(layer, "rgb", False) else tuple(shape[-2:])  # type: ignore[return-value]


@dataclass(frozen=True)
class Layout:
    """How an image layer's axes map to stack, channel and plane axes.

    Attributes
    ----------
    ndim : int
        Number of non-colour axes of the layer (``layer.ndim``).
    channel_axis : int or None
        Layer axis holding channels (never one of the last two).
    stack_axes : tuple of int
        Layer axes stacked over (every other leading axis).
    """

    ndim: int
    channel_axis: int | None
    stack_axes: tuple[int, ...]

    @property
    def out_axes(self) -> tuple[int, ...]:
        """Layer axes the labels keep: stack axes then the image plane."""
        return (*self.stack_axes, self.ndim - 2, self.ndim - 1)


def layout(layer: Image, channel_axis: int | None = None) -> Layout:
    """Work out the stack and channel axes of ``layer``.

    Raises
    ------
    InputError
        If ``channel_axis`` is one of the image plane's axes or does not exist.
    """
    nd = layer.ndim
    if channel_axis is not None:
        if layer.rgb:
            raise InputError("an RGB layer has its colour channels already; leave the channel axis unset")
        if not 0 <= channel_axis < nd - 2:
            raise InputError(f"channel axis {channel_axis} must be one of the leading axes 0..{nd - 3}")
        if channel_axis != 0:
            # napari lines layers up by their last axes: labels without a channel axis in the middle would
            # sit on the wrong planes
            raise InputError(
                f"the channel axis must be the first axis (it is axis {channel_axis}); open the image with "
                "napari's channel_axis option (one layer per channel) or move the axis first, e.g. "
                "numpy.moveaxis(data, 1, 0) for ZCYX"
            )
    stack = tuple(i for i in range(nd - 2) if i != channel_axis)
    return Layout(nd, channel_axis, stack)


def stack_shape(layer: Image, lay: Layout) -> tuple[int, ...]:
    """Shape of the stacked axes."""
    shape = layer_data(layer).shape
    return tuple(shape[i] for i in lay.stack_axes)


TIME_NAMES = ("t", "time", "frame", "frames")


def z_position(layer: Image, lay: Layout) -> int | None:
    """Which stacked axis is Z (its position in a plane's stack index), ``None`` when none is.

    An axis named ``z`` (napari's axis labels, or the axes a reader noted in the layer's
    metadata, e.g. ``"TYX"`` from a TIFF's ImageJ or OME metadata) is Z; otherwise the stacked
    axis just before the image plane is, as for joining planes into 3D objects, unless it is
    named as time (``t``, ``time``, ``frame``). Planes of one Z stack are normalised together.
    """
    if not lay.stack_axes:
        return None
    labels = [str(n).strip().lower() for n in (getattr(layer, "axis_labels", None) or ())]
    noted = str((getattr(layer, "metadata", None) or {}).get("axes") or "").lower()
    for names in (labels, list(noted)):
        if len(names) != lay.ndim:
            continue
        named = [k for k, i in enumerate(lay.stack_axes) if names[i] in ("z", "depth")]
        if named:
            return named[0]
        if names[lay.stack_axes[-1]] in TIME_NAMES:
            return None
    return len(lay.stack_axes) - 1


def current_index(layer: Image, lay: Layout, world_point) -> tuple[int, ...]:
    """Index along the stacked axes of the plane the viewer shows now."""
    data_pt = np.asarray(layer.world_to_data(world_point))
    shape = layer_data(layer).shape
    return tuple(int(np.clip(np.round(data_pt[i]), 0, shape[i] - 1)) for i in lay.stack_axes)


def read_plane(
    layer: Image, lay: Layout, index: tuple[int, ...], window: tuple[slice, slice] | None = None, step: int = 1
) -> np.ndarray:
    """Read one 2D plane (``(Y, X)``, ``(Y, X, 3|4)`` or ``(Y, X, C)``) into memory.

    Parameters
    ----------
    layer : napari.layers.Image
        The image layer (level 0 of a multiscale one).
    lay : Layout
        Its axes.
    index : tuple of int
        Position along the stacked axes.
    window : tuple of slice, optional
        Rows and columns to read (full-resolution pixels); the whole plane when omitted.
        Only that part is read from lazy (dask, zarr) data.
    step : int
        Read every ``step``-th row and column only (a strided sample).

    Returns
    -------
    numpy.ndarray
        The plane, or its window.
    """
    data = layer_data(layer)
    key: list = [slice(None)] * data.ndim
    for ax, i in zip(lay.stack_axes, index):
        key[ax] = i
    if window is not None:
        key[lay.ndim - 2], key[lay.ndim - 1] = window
    if step != 1:
        key[lay.ndim - 2] = slice(key[lay.ndim - 2].start, key[lay.ndim - 2].stop, step)
        key[lay.ndim - 1] = slice(key[lay.ndim - 1].start, key[lay.ndim - 1].stop, step)
    plane = np.asarray(data[tuple(key)])
    if lay.channel_axis is not None:
        # the channel axis is the only leading axis left: move it last
        plane = np.moveaxis(plane, 0, -1)
    return plane


def sample_plane(
    layer: Image, lay: Layout, index: tuple[int, ...], max_pixels: int, window: tuple[slice, slice] | None = None
) -> np.ndarray:
    """About ``max_pixels`` pixels of a plane (or its window), strided as a sample of the plane in memory would be.

    The sampler :func:`napari_unet_loop.core.planes.stack_settings` takes: lazy (dask, zarr)
    data is read at the stride only, not whole.
    """
    h, w = plane_shape(layer)
    if window is not None:
        h = len(range(*window[0].indices(h)))
        w = len(range(*window[1].indices(w)))
    return read_plane(layer, lay, index, window, step=sample_step((h, w), max_pixels))


LAZY_SAMPLE_PIXELS = 64_000_000  # lazy (dask, zarr) planes above this are not sampled on the main thread


def plane_sample(layer: Image, lay: Layout, index: tuple[int, ...], max_pixels: int = 1_000_000) -> np.ndarray | None:
    """A strided subsample of one plane (about ``max_pixels`` pixels), read without loading the plane.

    The stride is the one :func:`napari_unet_loop.core.modality.detect` uses, so detecting on
    the sample gives what detecting on the whole plane gives.

    Parameters
    ----------
    layer : napari.layers.Image
        The image layer.
    lay : Layout
        Its axes.
    index : tuple of int
        Position along the stacked axes.
    max_pixels : int
        About how many pixels to read.

    Returns
    -------
    numpy.ndarray or None
        ``(y, x)``, ``(y, x, 3|4)`` or ``(y, x, C)``; ``None`` for planes of lazy (non-NumPy)
        images above :data:`LAZY_SAMPLE_PIXELS`, where a strided read would touch every chunk.
    """
    data = layer_data(layer)
    h, w = plane_shape(layer)
    if not isinstance(data, np.ndarray) and h * w > LAZY_SAMPLE_PIXELS:
        return None
    step = sample_step((h, w), max_pixels)  # the stride detect() uses, so the sample detects the same
    key: list = [slice(None)] * data.ndim
    for ax, i in zip(lay.stack_axes, index):
        key[ax] = i
    key[lay.ndim - 2] = key[lay.ndim - 1] = slice(None, None, step)
    plane = np.asarray(data[tuple(key)])
    if lay.channel_axis is not None:
        plane = np.moveaxis(plane, 0, -1)
    return plane


def labels_name(image: Image) -> str:
    """The name of an image's labels layer, as Segment names it (``"<image> labels"``)."""
    return f"{image.name} labels"


def labels_of(viewer, image: Image | None) -> Labels | None:
    """The labels layer Segment writes for ``image`` (:func:`labels_name`), if the viewer holds one."""
    if image is None:
        return None
    name = labels_name(image)
    layer = viewer.layers[name] if name in viewer.layers else None
    return layer if isinstance(layer, Labels) else None


def out_transform(layer: Image, lay: Layout) -> dict:
    """Scale, translate and axis names for a labels layer that matches ``layer``."""
    axes = list(lay.out_axes)
    kw = {
        "scale": [layer.scale[i] for i in axes],
        "translate": [layer.translate[i] for i in axes],
    }
    names = getattr(layer, "axis_labels", None)
    if names is not None and len(names) == lay.ndim:
        kw["axis_labels"] = [names[i] for i in axes]
    units = getattr(layer, "units", None)
    if units is not None and len(units) == lay.ndim:
        kw["units"] = [units[i] for i in axes]
    return kw


@dataclass
class EditState:
    """What the plugin knows about one labels layer.

    Attributes
    ----------
    edited : bool
        Whether the user changed the layer since the plugin wrote it.
    n_edits : int
        Edit events seen (strokes, fills, data replacements).
    ours : bool
        Whether the plugin created the layer.
    originals : dict
        Plane index -> labels as the plugin wrote them (to tell what the user corrected).
    edits_at_write : dict
        Plane index -> ``n_edits`` when the plugin wrote it (to tell undo of its write from edits).
    dirty : bool
        Edited since the last autosave.
    """

    edited: bool = False
    n_edits: int = 0
    ours: bool = True
    originals: dict = field(default_factory=dict)
    edits_at_write: dict = field(default_factory=dict)
    dirty: bool = False


class LabelsTracker:
    """Tracks user edits of labels layers, telling them apart from the plugin's own writes.

    napari emits ``Labels.events.paint`` once per brush stroke, fill or erase (with
    the changed pixels) and ``events.data`` when the whole array is replaced. Writes
    made inside :meth:`writing` are the plugin's own and do not count as edits.
    """

    def __init__(self) -> None:
        self._states: weakref.WeakKeyDictionary[Labels, EditState] = weakref.WeakKeyDictionary()
        self._writing: set[int] = set()
        self.listeners: list = []  # called with the layer after every user edit

    def state(self, layer: Labels) -> EditState:
        """The edit state of ``layer`` (tracking starts on first use)."""
        layer = unwrap(layer)
        st = self._states.get(layer)
        if st is None:
            st = EditState(ours=False)
            self._states[layer] = st
            ref = weakref.ref(layer)
            layer.events.paint.connect(lambda event, ref=ref: self._on_edit(ref()))
            layer.events.data.connect(lambda event, ref=ref: self._on_edit(ref()))
        return st

    def _on_edit(self, layer: Labels | None) -> None:
        if layer is None or id(layer) in self._writing:
            return
        st = self._states.get(layer)
        if st is not None:
            st.edited = True
            st.dirty = True
            st.n_edits += 1
            for listener in self.listeners:
                listener(layer)

    @contextlib.contextmanager
    def writing(self, layer: Labels) -> Iterator[None]:
        """Context in which changes to ``layer`` are the plugin's, not the user's."""
        key = id(unwrap(layer))
        self._writing.add(key)
        try:
            yield
        finally:
            self._writing.discard(key)

    def record_output(self, layer: Labels, index: tuple[int, ...], labels: np.ndarray) -> None:
        """Remember a plane as the plugin wrote it; later differences are the user's corrections."""
        st = self.state(layer)
        st.originals[index] = np.array(labels, copy=True)
        st.edits_at_write[index] = st.n_edits

    def corrections(self, layer: Labels) -> dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]:
        """``{plane index: (labels as written, labels now)}`` for every plane the plugin wrote.

        A plane that changed although no user edit arrived since the plugin wrote it was
        changed by undoing or redoing the plugin's own replacement (napari's undo sends no
        event): that is not a correction, and the plane as it is now becomes the reference.
        """
        st = self._states.get(unwrap(layer))
        if st is None:
            return {}
        out = {}
        for i, orig in st.originals.items():
            now = np.asarray(layer.data[i])
            if st.n_edits == st.edits_at_write.get(i, -1) and not np.array_equal(orig, now):
                st.originals[i] = orig = np.array(now, copy=True)
            out[i] = (orig, now)
        return out

    def tracked(self) -> list[Labels]:
        """Labels layers being tracked (alive)."""
        return list(self._states.keys())

    def is_edited(self, layer: Labels) -> bool:
        """Whether the user changed ``layer`` since the plugin made it (unknown layers: yes)."""
        st = self._states.get(unwrap(layer))
        return st is None or not st.ours or st.edited


def write_plane(layer: Labels, index: tuple[int, ...], labels: np.ndarray) -> int:
    """Write ``labels`` into one plane of ``layer`` as one undoable step (Ctrl+Z restores).

    Returns
    -------
    int
        Number of pixels changed.
    """
    current = np.asarray(layer.data[index])
    changed = np.nonzero(current != labels)
    if not changed[0].size:
        return 0
    full = tuple(np.full(changed[0].size, i, dtype=np.intp) for i in index) + changed
    with layer.block_history():
        layer.data_setitem(full, labels[changed])
    return int(changed[0].size)


def write_plane_into_step(layer: Labels, index: tuple[int, ...], labels: np.ndarray, step: list | None) -> list | None:
    """Write one plane like :func:`write_plane`, adding the change to the undo step ``step``.

    A job that writes a stack plane by plane makes one undoable step of all its planes this way:
    napari keeps only its last 100 undo steps, so a step per plane would push the user's own
    edits out of reach in a stack of 100 planes or more. The change joins ``step`` only while
    ``step`` is still the layer's newest (nothing undone, painted or written since); else it
    starts a step of its own.

    Parameters
    ----------
    layer : napari.layers.Labels
        The layer written to.
    index : tuple of int
        Stack index of the plane.
    labels : numpy.ndarray
        The plane's new labels (the layer's data type).
    step : list or None
        The undo step returned for the job's previous plane (``None`` for its first).

    Returns
    -------
    list or None
        The undo step now holding this job's changes, to pass with its next plane (``None`` where
        nothing was written yet, or this napari keeps its undo history otherwise).
    """
    history = getattr(unwrap(layer), "_undo_history", None)  # napari's deque of undo steps (lists of atoms)
    if not hasattr(history, "pop") or not hasattr(history, "append"):
        write_plane(layer, index, labels)  # another napari: a step per plane
        return None
    joined = step is not None and len(history) > 0 and history[-1] is step
    if joined:
        history.pop()  # taken off while the plane is written, so a full queue drops none of the user's steps
    changed = 0
    try:
        changed = write_plane(layer, index, labels)
    finally:
        if joined:
            if changed and history and history[-1] is not step:
                step.extend(history.pop())
            history.append(step)
    if joined:
        return step
    return history[-1] if changed and history else None


HELPER = "helper"  # metadata role of layers the plugin shows (maps, previews): never inputs or training data
RESEGMENTED = "resegmented"  # labels made by re-segmenting after a fine-tune: unreviewed model output


def role(layer) -> str | None:
    """What the plugin made a layer for (``None`` for the user's layers)."""
    return (getattr(layer, "metadata", None) or {}).get(META_KEY, {}).get("role")


def is_helper(layer) -> bool:
    """Whether ``layer`` is a display layer of the plugin (probability map, uncertainty, preview)."""
    return role(layer) == HELPER


def show_map(viewer, name: str, data: np.ndarray, like: Labels, colormap: str, **kwargs):
    """Add (or update) a float image layer in [0, 1] over a labels layer, e.g. a probability map."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        return layer
    active = viewer.layers.selection.active
    layer = viewer.add_image(
        data,
        name=name,
        colormap=colormap,
        contrast_limits=(0, 1),
        blending="additive",
        scale=like.scale,
        translate=like.translate,
        metadata={META_KEY: {"role": HELPER}},
        **kwargs,
    )
    if active is not None:
        viewer.layers.selection.active = active  # napari activates new layers: keep the user's
    return layer
