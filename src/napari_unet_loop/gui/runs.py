"""The state of the dock's running (or last) jobs: a segmentation and a fine-tune, as typed records.

Kept apart from the widget and its sections so that the widget, its output mixin
(:mod:`.segment_output`) and the Fine-tune section can all import them without an
import circle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..core.postprocess import PostprocessConfig

if TYPE_CHECKING:
    import torch
    from napari.layers import Image, Labels

    from ..core.finetune import Scaled
    from ..core.model_card import ModelCard
    from ..core.model_files import Model
    from ..core.train import TrainConfig, TrainResult
    from ..core.unet import UNet
    from .layers import Layout
    from .region import RegionPlan

SegmentKind = Literal["idle", "segment", "rethreshold"]


@dataclass
class SegmentRun:
    """A segmentation or re-thresholding job of the dock, from its start until the next one.

    ``SegmentRun()`` (every field at its default, ``kind`` ``"idle"``) stands for "no job
    yet": the output helpers may still create layers then, and mark them in ``created``.
    A finished job's record stays until the next job starts.

    Attributes
    ----------
    kind : {"idle", "segment", "rethreshold"}
        What the job does: run the network, or recompute labels from kept maps.
    image : napari.layers.Image or None
        The image segmented (``None`` when re-thresholding).
    layout : Layout or None
        Its stack and channel axes (``None`` when re-thresholding).
    model : Model or None
        The model segmenting (``None`` when re-thresholding).
    pp : PostprocessConfig
        Thresholds that turn the network's maps into labels.
    indices : list of tuple of int
        Stack indices of the planes to do (``()`` for a single plane).
    target : napari.layers.Labels or None
        The labels layer written to; chosen or created with the first plane when ``None``.
    t0 : float
        When the job started (:func:`time.perf_counter`).
    done : int
        Planes written so far.
    objects : int
        Objects found so far (sum of the planes' largest ids).
    tile : int or None
        Core tile size chosen (``None``: automatic).
    modality_setting : str or None
        The Imaging choice as set in the dock (``None``: Auto).
    diameter_setting : float or str or None
        The Object size choice: ``None`` (the model's), pixels, or ``"auto"``.
    modalities : dict
        Per plane index, how the network saw that plane (a modality kind or ``"none"``).
    enlarged : dict
        Per plane index, the object diameter of a plane the model chose to enlarge (its card's
        ``upscale_small``: objects much smaller than it knows), with no Object size set.
    new_layer_name : str or None
        Write to a new labels layer of this name instead of the image's labels layer.
    on_done : callable or None
        Called with ``target`` when the job finishes successfully.
    created : napari.layers.Labels or None
        The (unwrapped) layer created by this job: its planes are assigned directly, without undo copies.
    region : RegionPlan or None
        The part of one plane segmented (Region: Visible region or Inside the rectangle); ``None``
        for whole planes.
    failed : bool
        A plane or the worker failed.
    aborted : bool
        The user cancelled the job.
    undo_step : list or None
        The undo step of ``undo_layer`` holding the planes this job wrote into a layer it did not
        create: one step for the whole job (:func:`.layers.write_plane_into_step`).
    undo_layer : napari.layers.Labels or None
        The (unwrapped) layer ``undo_step`` belongs to.
    """

    kind: SegmentKind = "idle"
    image: Image | None = None
    layout: Layout | None = None
    model: Model | None = None
    pp: PostprocessConfig = field(default_factory=PostprocessConfig)
    indices: list[tuple[int, ...]] = field(default_factory=list)
    target: Labels | None = None
    t0: float = field(default_factory=time.perf_counter)
    done: int = 0
    objects: int = 0
    tile: int | None = None
    modality_setting: str | None = None
    diameter_setting: float | str | None = None
    modalities: dict[tuple[int, ...], str] = field(default_factory=dict)
    enlarged: dict[tuple[int, ...], float] = field(default_factory=dict)
    new_layer_name: str | None = None
    on_done: Callable[[Labels], Any] | None = None
    created: Labels | None = None
    region: RegionPlan | None = None
    failed: bool = False
    aborted: bool = False
    undo_step: list | None = None
    undo_layer: Labels | None = None


@dataclass
class FinetuneRun:
    """A fine-tune of the Fine-tune section, from its start until the next one.

    The section holds ``None`` before its first fine-tune.

    Attributes
    ----------
    parent : Model
        The model training started from (its card seeds the new model's card).
    net : UNet
        The network being trained (a copy of ``parent``'s).
    config : TrainConfig
        Training settings.
    described : dict
        Description of the training data, for the new model's training record.
    device : torch.device
        Where training runs.
    pp : PostprocessConfig
        Thresholds used for validation.
    pairs : list of tuple
        The ticked ``(image name, labels name)`` pairs and ``("folder", images, labels)`` entries.
    train_names, val_names : list of str
        Names of the training and validation samples.
    started : str
        Start time, ISO 8601 with the time zone.
    modality : str
        How the training images reached the network (a modality kind, ``"auto"`` or ``"none"``).
    scaled : Scaled
        The training samples at the network's scale (object diameter and rescaling factor).
    t0 : float
        When training started (:func:`time.perf_counter`).
    failed : str or None
        The failure message, if training failed.
    start_weights : str or None
        The imaging kind whose own weights of the parent the run started from (``None``: its
        general weights).
    only_kind : str or None
        The imaging kind the trained weights will answer for inside the parent (the parent's
        own weights for that kind; its other images keep its weights), or ``None``: the
        trained network becomes a model of its own.
    """

    parent: Model
    net: UNet
    config: TrainConfig
    described: dict
    device: torch.device
    pp: PostprocessConfig
    pairs: list[tuple]
    train_names: list[str]
    val_names: list[str]
    started: str
    modality: str
    scaled: Scaled
    t0: float = field(default_factory=time.perf_counter)
    failed: str | None = None
    start_weights: str | None = None
    only_kind: str | None = None

    def model_card(
        self, name: str, result: TrainResult, postprocess: PostprocessConfig, validation: dict | None, tuned: Any
    ) -> ModelCard:
        """The card of the model the run trained: the parent's, with the command line's training record.

        Parameters
        ----------
        name : str
            The new model's name.
        result : TrainResult
            The run's outcome.
        postprocess : PostprocessConfig
            The thresholds chosen for the trained weights.
        validation : dict or None
            The validation scores of the weights the network holds.
        tuned : Retuned or None
            The threshold search and its verdict (recorded as ``threshold_tuning``).
        """
        from ..core.finetune import finetuned_modality, record_sizes, training_record
        from ..core.model_card import ModelCard
        from ..core.unet import UNetConfig

        parent = self.parent
        # a kind's own colour network (H&E in a grey model) makes a colour model: it reads the image as it is
        colour = self.net.config.in_channels != parent.card.architecture.in_channels
        card = ModelCard(
            name=name,
            architecture=UNetConfig.from_dict(self.net.config.to_dict()),
            normalization=parent.card.normalization,
            modality=finetuned_modality(parent.card.modality, self.modality, colour),
            kind_in_doubt=None if colour else self.described.get("kind_in_doubt", parent.card.kind_in_doubt),
            postprocess=postprocess,
            diameter=parent.card.diameter,
            default_diameter=parent.card.default_diameter,
            native_diameters=parent.card.native_for(self.start_weights),  # the starting weights' unscaled sizes
            upscale_small=parent.card.upscale_small,  # as train --from keeps its starting card's
            description=f"{parent.card.description or parent.name}, fine-tuned in napari",
            parent=parent.name,
            training=training_record(  # the same record as the command line's train
                self.config,
                self.device,
                self.train_names,
                self.val_names,
                steps=result.steps,
                seconds=result.seconds,
                patches=result.patches,
                stopped=result.stopped,
                modality=self.modality,
                started=self.started,
                data=dict(self.described),
                object_diameter=self.scaled.diameter,
                rescaled_by=self.scaled.factor,
                anchor_applied=round(result.anchor, 3),
                start_weights=self.start_weights,
            ),
            metrics={"validation": validation, "validation_start": result.baseline},
        )
        if not self.only_kind:  # weights for one kind join the parent, at its object sizes
            record_sizes(card, self.scaled)
        if tuned is not None:
            card.metrics["threshold_tuning"] = tuned.to_dict()
        return card


__all__ = ["FinetuneRun", "SegmentRun"]
