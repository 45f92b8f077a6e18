"""Where a segmentation goes: the labels layer it writes (never over the user's edits), its provenance, the kept maps.

A mixin of the dock widget (like :class:`.model_manager.ModelManager`): the running job's
results arrive here plane by plane from the worker.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_info, show_warning

from ..core.modality import LABELS as MODALITY_LABELS
from ..core.model_card import card_summary
from ._segment_worker import PlaneResult
from .layers import (
    META_KEY,
    RESEGMENTED,
    labels_name,
    labels_of,
    out_transform,
    plane_shape,
    show_map,
    stack_shape,
    unwrap,
    write_plane_into_step,
)

if TYPE_CHECKING:
    from .runs import SegmentRun

IF_EDITED_NEW = "make a new layer"
IF_EDITED_REPLACE = "replace it (Ctrl+Z undoes)"
# "If labels were edited" choices: key (the combo's item data) -> text shown
IF_EDITED_CHOICES = {"new": IF_EDITED_NEW, "replace": IF_EDITED_REPLACE}


class SegmentOutput:
    """The output side of :class:`~napari_unet_loop.gui.widget.UNetLoopWidget` (a mixin)."""

    _run: SegmentRun  # the running or last job, set by the widget

    def _replace_edited(self) -> bool:
        """Whether the "If labels were edited" choice is to replace the edited layer (else: a new layer)."""
        return self.if_edited_combo.currentData() == "replace"

    def _output_layer(self) -> Labels:
        """The labels layer this run writes to, created or chosen on first use."""
        run = self._run
        target = run.target
        if target is not None and target in self.viewer.layers:
            return target
        image, lay = run.image, run.layout
        if image is None:  # re-threshold target removed meanwhile: write to a fresh layer
            run.target = self._replacement_layer(target, np.zeros(target.data.shape, np.int32))
            return run.target
        if run.region is not None:  # part of one plane: a layer of the region's size (see .region)
            run.target = self._region_layer(run)
            return run.target
        out_shape = (*stack_shape(image, lay), *plane_shape(image))
        if run.new_layer_name:
            target = self._add_labels(
                run.new_layer_name,
                np.zeros(out_shape, np.int32),
                metadata={META_KEY: {"role": RESEGMENTED}},
                **out_transform(image, lay),
            )
            run.target = target
            return target
        name = labels_name(image)
        existing = labels_of(self.viewer, image)
        if existing is not None and existing.data.shape == out_shape:
            if not self.tracker.is_edited(existing) or self._replace_edited():
                run.target = existing
                return existing
            show_info(f"'{name}' holds your edits, so the result goes to a new layer.")
        target = self._add_labels(name, np.zeros(out_shape, np.int32), **out_transform(image, lay))
        run.target = target
        return target

    def _add_labels(self, name: str, data: np.ndarray | None, **kwargs) -> Labels:
        if data is None:
            raise RuntimeError("no shape for the new labels layer")
        # napari adds " [1]", " [2]"... to repeated names: the user's layer is never replaced
        layer = self.viewer.add_labels(data, name=name, **kwargs)
        st = self.tracker.state(layer)
        st.ours, st.edited = True, False
        self._run.created = unwrap(layer)  # nothing to undo in it: planes are assigned directly
        # the newest result is what the user corrects and exports next
        self.correct_section.follow(layer)
        self.export_section.follow(layer)
        return layer

    def _replacement_layer(self, old: Labels, data: np.ndarray) -> Labels:
        """A new labels layer standing in for ``old``.

        It gets ``old``'s name (napari numbers it), transform, provenance, and kept
        probabilities for re-thresholding.
        """
        new = self._add_labels(old.name, data, **like_layer(old))
        maps = self._maps.get(unwrap(old))
        if maps:
            self._maps[unwrap(new)] = dict(maps)
        return new

    def _fits(self, target: Labels, labels: np.ndarray) -> bool:
        """Whether ``labels``' ids fit the data type of the layer they go to."""
        dtype = target.data.dtype
        return np.issubdtype(dtype, np.integer) and (not labels.size or int(labels.max()) <= np.iinfo(dtype).max)

    def _write_result(self, res: PlaneResult) -> None:
        run = self._run
        target = self._output_layer()
        if not self._fits(target, res.labels):
            # e.g. replacing a user's 8-bit mask layer with 300 objects: ids would wrap and merge objects
            old = target
            target = run.target = self._replacement_layer(old, np.asarray(old.data).astype(np.int32))
            show_warning(
                f"'{old.name}' ({old.data.dtype}) cannot hold ids up to {int(res.labels.max())}, so the result "
                f"goes to a new 32-bit layer '{target.name}' (a copy of it with the result written in)."
            )
        self.tracker.state(target)
        labels = res.labels.astype(target.data.dtype, copy=False)
        with self.tracker.writing(target):
            if run.created is unwrap(target):  # a layer made by this run: no undo copy needed
                target.data[res.index] = labels
                target.refresh()
            else:  # the run's planes make one undoable step (Ctrl+Z restores them all)
                step = run.undo_step if run.undo_layer is unwrap(target) else None
                run.undo_step = write_plane_into_step(target, res.index, labels, step)
                run.undo_layer = unwrap(target)
        self.tracker.record_output(target, res.index, res.labels)
        if res.fg is not None:
            self._maps.setdefault(unwrap(target), {})[res.index] = (res.fg, res.dist, res.factor)
        meta = dict(target.metadata.get(META_KEY, {}))
        model = run.model
        if model is not None:
            meta.update(
                model_name=model.name,
                model_path=str(model.path),
                model_card=card_summary(model.card),
                tile_size=run.tile or "auto",
            )
        if res.modality is not None:  # what the network saw the image as
            used = run.modalities
            used[res.index] = res.modality
            if len(set(used.values())) == 1:
                meta["modality"] = res.modality
                meta.pop("modality_planes", None)
            else:  # Auto in a stack whose planes look different
                meta["modality"] = "mixed"
                meta["modality_planes"] = [[list(ix), kind] for ix, kind in used.items()]
            meta["modality_setting"] = run.modality_setting or "auto"
        if res.diameter is not None:  # the object size the plane was segmented for
            meta["diameter"] = round(float(res.diameter), 2)
            meta["diameter_setting"] = run.diameter_setting or "model"
            if run.diameter_setting is None and res.factor > 1.0 and run.model is not None:
                if run.model.image_diameter is not None and res.diameter < run.model.image_diameter:
                    run.enlarged[res.index] = float(res.diameter)  # the model's upscale_small rule
        meta["thresholds"] = run.pp.to_dict()
        meta.pop("objects_3d", None)  # new planes have ids of their own: joined again after a stack run if asked
        target.metadata[META_KEY] = meta
        run.done += 1
        run.objects += int(res.labels.max())
        if self.show_maps_check.value:
            self._show_maps(target, res.index)

    def _show_maps(self, target: Labels, index: tuple[int, ...]) -> None:
        maps = self._maps.get(unwrap(target), {})
        if index not in maps:
            return
        shape = target.data.shape
        for which, name in ((0, f"{target.name} foreground probability"), (1, f"{target.name} distance map")):
            old = self.viewer.layers[name].data if name in self.viewer.layers else None
            data = old if old is not None and old.shape == shape else np.zeros(shape, np.float32)
            data[index] = maps[index][which].astype(np.float32)
            show_map(self.viewer, name, data, target, "magma", opacity=0.6, visible=which == 0).refresh()
        # keep the labels on top of the maps
        idx = self.viewer.layers.index(target)
        self.viewer.layers.move(idx, len(self.viewer.layers))

    def _summary(self, verb: str) -> str:
        run = self._run
        n, total = run.done, len(run.indices)
        secs = time.perf_counter() - run.t0
        target = run.target
        where = f" in '{target.name}'" if target is not None else ""
        planes = f"{n} of {total} planes, " if total > 1 else ""
        if run.region is not None and run.region.index:  # a region is segmented in one plane, never the stack
            where += " (the plane on screen only)"
        notes = self._modality_summary() + self._size_summary()
        return f"{verb}: {planes}{run.objects} objects{where} ({secs:.1f} s).{notes}"

    def _size_summary(self) -> str:
        """Planes of small objects the model enlarged on its own (no Object size set), for the status line."""
        enlarged = list(self._run.enlarged.values())
        if not enlarged:
            return ""
        d = float(np.median(enlarged))
        planes = f" in {len(enlarged)} plane(s)" if len(self._run.indices) > 1 else ""
        return f" Small objects (about {d:.0f} px){planes}: segmented enlarged; set Object size to choose."

    def _modality_summary(self) -> str:
        """How the network saw the image in this run, for the status line."""
        used = list(self._run.modalities.values())
        if not used:
            return ""

        def name(kind: str) -> str:
            return "as it is (no conversion)" if kind == "none" else MODALITY_LABELS.get(kind, kind)

        kinds = sorted(set(used), key=used.index)
        if kinds == ["none"]:
            return " Image taken as it is (no conversion)."
        if len(kinds) == 1:
            return f" Imaging: {name(kinds[0])}."
        return " Imaging: " + ", ".join(f"{name(k)} ({used.count(k)} planes)" for k in kinds) + "."


def like_layer(layer: Labels) -> dict:
    """Transform and provenance of a labels layer, for a new layer that replaces it."""
    kw = {"scale": layer.scale, "translate": layer.translate, "metadata": dict(layer.metadata)}
    for attr in ("axis_labels", "units"):
        value = getattr(layer, attr, None)
        if value is not None:
            kw[attr] = value
    return kw
