"""The dock's session: the state its sections share, and what they may ask of the dock.

The dock widget (:class:`~napari_unet_loop.gui.widget.UNetLoopWidget`) makes one
:class:`Session` and hands it to its sections (Correct, Fine-tune) instead of itself. The
session owns the shared state (the edit tracker, the kept probability maps, whether a
segmentation or a fine-tune is running) and reaches the dock's controls and actions only
through the callables the widget registers (:class:`DockCalls`), so a section never touches
a widget attribute and this module never imports the widget.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Signal

from .layers import LabelsTracker, unwrap

if TYPE_CHECKING:
    import napari
    import torch
    from napari.layers import Image, Labels

    from ..core.model_files import Model
    from ..core.postprocess import PostprocessConfig
    from .layers import Layout


@dataclass(frozen=True)
class DockCalls:
    """What the sections may ask of the dock: callables registered by the dock widget.

    Each reads the dock's controls when called (never a copy made at registration), so a
    section sees the choices on screen at that moment.

    Attributes
    ----------
    image_layer : callable
        ``() -> Image | None``: the image layer chosen in the Input section.
    image_layout : callable
        ``(image) -> Layout``: the axes of an image, with the dock's channel axis when it is
        the dock's image.
    image_channel : callable
        ``(image) -> int | None``: the dock's channel choice for an image.
    channel_axis : callable
        ``() -> int | None``: the Channel axis choice (``None``: no channel axis).
    modality_choice : callable
        ``() -> str | None``: the Imaging choice (``None``: the model's setting).
    diameter_choice : callable
        ``() -> float | str | None``: the Object size choice.
    current_model : callable
        ``() -> Model``: the chosen model, loaded once; raises ``ModelError``.
    model_name : callable
        ``() -> str``: the name shown in the Model list.
    model_names : callable
        ``() -> list[str]``: every name in the Model list (model files opened included).
    device_choice : callable
        ``() -> str``: the Device choice as shown (``"auto"``, ``"cpu"``, ``"cuda"``...).
    postprocess_config : callable
        ``() -> PostprocessConfig``: the thresholds of the Instances section.
    tile_size : callable
        ``() -> int | None``: the Tile size choice (``None``: automatic).
    tta_choice : callable
        ``() -> bool | str``: the Test-time aug. choice (``True``, ``False`` or ``"auto"``).
    cache_model : callable
        ``(name, model) -> None``: keep a loaded model for reuse.
    select_model : callable
        ``(name) -> None``: refresh the Model list, select ``name`` and take its thresholds.
    segment : callable
        The dock's :meth:`~napari_unet_loop.gui.widget.UNetLoopWidget.segment`.
    rethreshold : callable
        The dock's :meth:`~napari_unet_loop.gui.widget.UNetLoopWidget.rethreshold`.
    region_choice : callable
        ``() -> str``: the Region choice (``"plane"``, ``"view"`` or ``"rectangle"``).
    stitch_choice : callable
        ``() -> float | None``: the IoU that joins planes into 3D objects (``None``: not asked for).
    thresholds_kind : callable
        ``() -> str | None``: the imaging kind the Instances thresholds follow (``None``: unknown).
    """

    image_layer: Callable[[], Image | None]
    image_layout: Callable[[Image], Layout]
    image_channel: Callable[[Image], int | None]
    channel_axis: Callable[[], int | None]
    modality_choice: Callable[[], str | None]
    diameter_choice: Callable[[], float | str | None]
    current_model: Callable[[], Model]
    model_name: Callable[[], str]
    device_choice: Callable[[], str]
    postprocess_config: Callable[[], PostprocessConfig]
    tile_size: Callable[[], int | None]
    cache_model: Callable[[str, Model], None]
    select_model: Callable[[str], None]
    segment: Callable[..., Any]
    rethreshold: Callable[..., Any]
    region_choice: Callable[[], str] = lambda: "view"
    stitch_choice: Callable[[], float | None] = lambda: None
    thresholds_kind: Callable[[], str | None] = lambda: None
    model_names: Callable[[], list[str]] = lambda: []
    tta_choice: Callable[[], bool | str] = lambda: "auto"


class Session(QObject):
    """The state the dock's sections share, with signals, and the dock's choices and actions.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the dock is docked in.
    tracker : LabelsTracker, optional
        The edit tracker (a new one by default).
    parent : QObject, optional
        Qt parent (the dock widget): the session lives as long as it.

    Attributes
    ----------
    viewer : napari.viewer.Viewer
        The viewer.
    tracker : LabelsTracker
        Which labels layers the plugin wrote, which were edited, and the planes as written.
    maps : weakref.WeakKeyDictionary
        The kept probabilities, per labels layer (unwrapped, weakly held):
        ``{plane index: (foreground probability, distance map, factor)}``, for
        re-thresholding, splits and the uncertainty map.
    busy_changed : Signal(bool)
        A segmentation or re-thresholding job of the dock started (``True``) or ended.
    training_changed : Signal(bool)
        A fine-tune started (``True``) or ended; the dock disables its Segment buttons meanwhile.
    model_changed : Signal(str)
        Another model was chosen in the Model list (its name).
    """

    busy_changed = Signal(bool)
    training_changed = Signal(bool)
    model_changed = Signal(str)

    def __init__(
        self, viewer: napari.viewer.Viewer, tracker: LabelsTracker | None = None, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.tracker = tracker if tracker is not None else LabelsTracker()
        self.maps: weakref.WeakKeyDictionary[Labels, dict] = weakref.WeakKeyDictionary()
        self._worker = None
        self._training = False
        self._model: str | None = None
        self._dock: DockCalls | None = None

    def register(self, calls: DockCalls) -> None:
        """Take the dock's choices and actions (the dock widget calls this once, before making its sections)."""
        self._dock = calls

    @property
    def dock(self) -> DockCalls:
        """The registered :class:`DockCalls`.

        Raises
        ------
        RuntimeError
            If no dock registered yet.
        """
        if self._dock is None:
            raise RuntimeError("no dock registered with this session")
        return self._dock

    # ------------------------------------------------------------------ state
    @property
    def worker(self):
        """The dock's running segmentation or re-thresholding worker (``None`` when idle).

        Setting it emits :attr:`busy_changed` when the session turns busy or idle.
        """
        return self._worker

    @worker.setter
    def worker(self, worker) -> None:
        was = self._worker is not None
        self._worker = worker
        if (worker is not None) != was:
            self.busy_changed.emit(worker is not None)

    @property
    def busy(self) -> bool:
        """Whether a segmentation or re-thresholding job of the dock is running."""
        return self._worker is not None

    @property
    def training(self) -> bool:
        """Whether a fine-tune is running."""
        return self._training

    def set_training(self, training: bool) -> None:
        """Say a fine-tune started or ended; emits :attr:`training_changed` on a change."""
        if bool(training) != self._training:
            self._training = bool(training)
            self.training_changed.emit(self._training)

    def note_model(self, name: str) -> None:
        """Say which model the Model list shows; emits :attr:`model_changed` when it is another one."""
        if name != self._model:
            self._model = name
            self.model_changed.emit(name)

    def maps_of(self, layer: Labels) -> dict:
        """The kept probabilities of ``layer``'s planes (empty when none are kept)."""
        return self.maps.get(unwrap(layer), {})

    # ------------------------------------------------------------------ the dock's choices
    def image_layer(self) -> Image | None:
        """The image layer chosen in the Input section (``None`` when there is none)."""
        return self.dock.image_layer()

    def image_layout(self, image: Image) -> Layout:
        """The axes of ``image``, with the dock's channel axis when it is the dock's image."""
        return self.dock.image_layout(image)

    def image_channel(self, image: Image) -> int | None:
        """The dock's channel choice for ``image`` (``None``: another image, or nothing to choose)."""
        return self.dock.image_channel(image)

    def channel_axis(self) -> int | None:
        """The Channel axis choice (``None``: no channel axis)."""
        return self.dock.channel_axis()

    def modality_choice(self) -> str | None:
        """The Imaging choice: ``None`` for Auto (the model's setting), else a kind or ``"none"``."""
        return self.dock.modality_choice()

    def diameter_choice(self) -> float | str | None:
        """The Object size choice: ``None`` (the model's), pixels, or ``"auto"``."""
        return self.dock.diameter_choice()

    def current_model(self) -> Model:
        """The model chosen in the Model list, loaded once.

        Raises
        ------
        ModelError
            If the model file cannot be loaded.
        """
        return self.dock.current_model()

    def model_name(self) -> str:
        """The name shown in the Model list."""
        return self.dock.model_name()

    def model_names(self) -> list[str]:
        """Every name in the Model list (shipped, user and opened model files)."""
        return self.dock.model_names()

    def device_choice(self) -> str:
        """The Device choice as shown (``"auto"`` or a device name)."""
        return self.dock.device_choice()

    def device(self) -> torch.device:
        """The device chosen in the Model section.

        Raises
        ------
        DeviceError
            If the chosen device is not usable here.
        """
        from ..core.device import resolve_device

        return resolve_device(self.device_choice())

    def postprocess_config(self) -> PostprocessConfig:
        """The thresholds set in the Instances section."""
        return self.dock.postprocess_config()

    def thresholds_kind(self) -> str | None:
        """The imaging kind the Instances thresholds follow (the chosen image's; ``None``: unknown)."""
        return self.dock.thresholds_kind()

    def tile_size(self) -> int | None:
        """The chosen core tile size (``None``: automatic)."""
        return self.dock.tile_size()

    def tta(self) -> bool | str:
        """The Test-time aug. choice: ``True``, ``False`` or ``"auto"`` (small images only)."""
        choice = self.dock.tta_choice()
        return "auto" if choice is None else choice

    def region_choice(self) -> str:
        """The Region choice: ``"plane"``, ``"view"`` or ``"rectangle"``."""
        return self.dock.region_choice()

    def stitch_choice(self) -> float | None:
        """The IoU that joins planes into 3D objects (``None``: *Join planes* is off)."""
        return self.dock.stitch_choice()

    # ------------------------------------------------------------------ the dock's actions
    def cache_model(self, name: str, model: Model) -> None:
        """Keep a loaded model for reuse (the dock keeps a few)."""
        self.dock.cache_model(name, model)

    def select_model(self, name: str) -> None:
        """Refresh the Model list, select ``name`` in it and take its thresholds."""
        self.dock.select_model(name)

    def segment(self, **kwargs):
        """Segment with the dock's settings; see :meth:`~napari_unet_loop.gui.widget.UNetLoopWidget.segment`.

        Returns
        -------
        napari.qt.threading.GeneratorWorker or None
            The started worker, or ``None`` when the input was refused.
        """
        return self.dock.segment(**kwargs)

    def rethreshold(self, labels_layer: Labels | None = None):
        """Recompute labels from the kept maps with the dock's thresholds (see the widget's ``rethreshold``).

        Returns
        -------
        napari.qt.threading.GeneratorWorker or None
            The started worker, or ``None`` if there is nothing to re-threshold.
        """
        return self.dock.rethreshold(labels_layer)


__all__ = ["DockCalls", "Session"]
