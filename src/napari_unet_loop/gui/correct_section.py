"""The dock's Correct section: object-level proofreading tools and a review queue.

Every tool acts on one object (or a few) of the labels plane on screen, touches
only their bounding box, and is one undoable step (Ctrl+Z on the labels layer).
Tools work from the mouse cursor with keyboard shortcuts on the labels layer, or
from a click when a click action is chosen.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from ..core import proofread as pr
from .layers import HELPER, META_KEY, is_helper, labels_name, show_map, unwrap

if TYPE_CHECKING:
    from .session import Session

# action -> (button text, key on the labels layer, tooltip)
TOOLS: dict[str, tuple[str, str, str]] = {
    "delete": ("Delete", "D", "Delete the object under the cursor"),
    "pick": ("Pick to merge", "G", "Pick the object under the cursor for a merge"),
    "merge": ("Merge picked", "Shift-G", "Merge the picked objects into one"),
    "seed": ("Split seed", "S", "Put a split seed at the cursor (one per part, inside one object)"),
    "split": ("Split", "Shift-S", "Split the object at its seeds (watershed on the model's distance map)"),
    "cut": ("Cut point", "C", "Mark a cut-line end at the cursor; the second point cuts the object(s) across"),
    "fill": ("Fill holes", "H", "Fill the holes of the object under the cursor"),
    "grow": ("Grow", "U", "Grow the object under the cursor into the background"),
    "shrink": ("Shrink", "Shift-U", "Shrink the object under the cursor"),
    "new": ("New object", "N", "Paint a new object with the next free label"),
    "add": ("Add at cursor", "Shift-N", "Add the missed object under the cursor from the model's foreground map"),
    "accept": ("Accept", "A", "Mark the object under review as checked (it counts as annotated)"),
    "next": ("Next", "K", "Go to the next doubtful object"),
    "previous": ("Previous", "Shift-K", "Go to the previous doubtful object"),
}
PICKS = "proofreading picks"  # the helper Points layer showing merge picks, split seeds and cut points
QUEUE_DELAY_MS = 300  # re-rank the review queue this long after the last brush stroke
# click actions: text shown -> tool (the combo's item data; None: clicks do nothing)
CLICK_ACTIONS = {
    "off": None,
    "delete": "delete",
    "pick to merge": "pick",
    "split seed": "seed",
    "cut points": "cut",
    "fill holes": "fill",
    "grow": "grow",
    "shrink": "shrink",
    "add missed object": "add",
}


class CorrectSection(QGroupBox):
    """Proofreading tools for the labels layer of the current image.

    Parameters
    ----------
    session : Session
        The dock's session: the viewer, the kept probability maps, the chosen image and channel axis.
    """

    def __init__(self, session: Session) -> None:
        super().__init__("Correct")
        self.session = session
        self.viewer = session.viewer
        self.picks: list[tuple[tuple[int, ...], tuple[float, float]]] = []
        self.seeds: list[tuple[tuple[int, ...], tuple[float, float]]] = []
        self.cut_points: list[tuple[tuple[int, ...], tuple[float, float]]] = []
        self.queue: dict[str, np.ndarray] | None = None
        self.queue_pos = -1
        self.queue_plane: tuple[int, ...] = ()
        self.queue_layer: str | None = None
        self._bound: weakref.WeakSet = weakref.WeakSet()
        self._watched: weakref.WeakSet = weakref.WeakSet()  # labels layers whose edits refresh the queue
        self._picks_on: weakref.ref | None = None  # the labels layer the picks belong to
        self._uncertainty_name: str | None = None
        # brush strokes re-rank the queue once the user pauses (a stroke is one paint event)
        self._queue_timer = QTimer(self)
        self._queue_timer.setSingleShot(True)
        self._queue_timer.setInterval(QUEUE_DELAY_MS)
        self._queue_timer.timeout.connect(lambda: self.refresh_queue())
        lay = QVBoxLayout(self)
        form = QFormLayout()
        lay.addLayout(form)
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Labels layer to correct; shortcuts work while it is the selected layer")
        self.layer_combo.currentIndexChanged.connect(lambda i: self._bind_keys())
        form.addRow("Labels", self.layer_combo)
        self.click_combo = QComboBox()
        for text, action in CLICK_ACTIONS.items():
            self.click_combo.addItem(text, action)
        self.click_combo.setToolTip("What a click on an object does (pan/zoom mode); or use the keys")
        self.click_combo.currentIndexChanged.connect(lambda i: self._click_mode_changed())
        form.addRow("Click to", self.click_combo)
        self.buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        places = (  # rows of related tools
            ("delete", "fill", "cut"),
            ("new", "add", "grow"),
            ("pick", "merge", "shrink"),
            ("seed", "split"),
        )
        for row, names in enumerate(places):
            for col, name in enumerate(names):
                text, key, tip = TOOLS[name]
                btn = QPushButton(f"{text} ({key.replace('Shift-', 'Shift+')})")
                btn.setToolTip(f"{tip} [{key} on the labels layer]")
                btn.clicked.connect(lambda checked=False, name=name: self.run_tool(name))
                self.buttons[name] = btn
                grid.addWidget(btn, row, col)
        lay.addLayout(grid)
        row = QHBoxLayout()
        self.grow_spin = QSpinBox()
        self.grow_spin.setRange(1, 50)
        self.grow_spin.setValue(1)
        self.grow_spin.setSuffix(" px")
        self.grow_spin.setToolTip("Pixels to grow or shrink by")
        row.addWidget(QLabel("Grow/shrink by"))
        row.addWidget(self.grow_spin)
        self.clear_btn = QPushButton("Clear picks")
        self.clear_btn.clicked.connect(self.clear_picks)
        row.addWidget(self.clear_btn)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.min_size_spin = QSpinBox()
        self.min_size_spin.setRange(1, 1_000_000)
        self.min_size_spin.setValue(30)
        self.min_size_spin.setSuffix(" px")
        remove_btn = QPushButton("Remove smaller than")
        remove_btn.setToolTip("Remove every object smaller than this in the plane on screen")
        remove_btn.clicked.connect(lambda: self.run_tool("remove_small"))
        self.buttons["remove_small"] = remove_btn
        row.addWidget(remove_btn)
        row.addWidget(self.min_size_spin)
        relabel_btn = QPushButton("Relabel 1..N")
        relabel_btn.setToolTip("Renumber the objects of the plane on screen 1, 2, 3...")
        relabel_btn.clicked.connect(lambda: self.run_tool("relabel"))
        self.buttons["relabel"] = relabel_btn
        row.addWidget(relabel_btn)
        lay.addLayout(row)

        review = QGroupBox("Review queue")
        rlay = QVBoxLayout(review)
        row = QHBoxLayout()
        rank_btn = QPushButton("Rank objects by doubt")
        rank_btn.setToolTip(
            "Order the objects of the plane on screen by the model's uncertainty, a weak centre, "
            "low solidity and unusual size"
        )
        rank_btn.clicked.connect(lambda: self.rank())
        row.addWidget(rank_btn)
        self.uncertainty_check = QCheckBox("Uncertainty layer")
        self.uncertainty_check.setToolTip("Show the model's uncertainty (1 - |2p - 1|) as an image layer")
        self.uncertainty_check.toggled.connect(lambda on: self.show_uncertainty() if on else self.hide_uncertainty())
        row.addWidget(self.uncertainty_check)
        rlay.addLayout(row)
        self.queue_list = QListWidget()
        self.queue_list.setMaximumHeight(110)
        self.queue_list.itemDoubleClicked.connect(lambda item: self.go_to(self.queue_list.row(item)))
        rlay.addWidget(self.queue_list)
        row = QHBoxLayout()
        for name in ("previous", "next", "accept"):
            text, key, tip = TOOLS[name]
            btn = QPushButton(text)
            btn.setToolTip(f"{tip} [{key}]")
            btn.clicked.connect(lambda checked=False, name=name: self.run_tool(name))
            self.buttons[name] = btn
            row.addWidget(btn)
        rlay.addLayout(row)
        lay.addWidget(review)
        self.status = QLabel("Hover over an object and press a key, or choose a click action.")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.reset_choices()

    # ------------------------------------------------------------------ layers
    def reset_choices(self, event=None) -> None:
        """Refresh the labels layer list (prefers the current image's labels)."""
        current = self.layer_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        image = self.session.image_layer()
        preferred = labels_name(image) if image is not None else None
        if current in names:
            self.layer_combo.setCurrentText(current)
        elif preferred in names:
            self.layer_combo.setCurrentText(preferred)
        self.layer_combo.blockSignals(False)
        self._bind_keys()

    def follow(self, layer) -> None:
        """Correct ``layer`` (the labels layer the user selected, or the newest result)."""
        if not isinstance(layer, Labels) or is_helper(layer) or layer.name not in self.viewer.layers:
            return
        if self.layer_combo.findText(layer.name) < 0:
            self.reset_choices()
        self.layer_combo.setCurrentText(layer.name)

    def labels_layer(self) -> Labels | None:
        """The labels layer being corrected."""
        name = self.layer_combo.currentText()
        if name and name in self.viewer.layers and isinstance(self.viewer.layers[name], Labels):
            return self.viewer.layers[name]
        return None

    def _bind_keys(self) -> None:
        layer = self.labels_layer()
        if layer is None or unwrap(layer) in self._bound:
            return
        real = unwrap(layer)
        self._bound.add(real)
        for name, (_, key, _) in TOOLS.items():
            real.bind_key(key, lambda lyr, name=name: self.run_tool(name, layer=lyr), overwrite=True)
        real.mouse_drag_callbacks.append(self._on_click)

    def _click_mode_changed(self) -> None:
        layer = self.labels_layer()
        if layer is not None and self.click_combo.currentData():
            layer.mode = "pan_zoom"
            self.viewer.layers.selection.active = layer

    def _on_click(self, layer, event) -> None:
        action = self.click_combo.currentData()
        if action is None or layer.mode != "pan_zoom" or event.type != "mouse_press":
            return
        if layer.name != self.layer_combo.currentText():
            return
        self.run_tool(action, layer=layer, world=event.position)

    # ------------------------------------------------------------------ geometry
    def _plane_and_point(self, layer: Labels, world=None) -> tuple[tuple[int, ...], tuple[float, float]]:
        """The plane index on screen and the cursor (or ``world``) position in it."""
        pos = self.viewer.cursor.position if world is None else world
        data = np.asarray(layer.world_to_data(pos), float)
        nd = layer.data.ndim
        plane = tuple(int(np.clip(round(v), 0, layer.data.shape[i] - 1)) for i, v in enumerate(data[: nd - 2]))
        return plane, (float(data[-2]), float(data[-1]))

    def _current_plane(self, layer: Labels) -> tuple[int, ...]:
        data = np.asarray(layer.world_to_data(self.viewer.dims.point), float)
        nd = layer.data.ndim
        return tuple(int(np.clip(round(v), 0, layer.data.shape[i] - 1)) for i, v in enumerate(data[: nd - 2]))

    # ------------------------------------------------------------------ tools
    def run_tool(self, name: str, layer: Labels | None = None, world=None, point=None, plane=None) -> Any:
        """Run one tool; errors become a notification and change nothing.

        Parameters
        ----------
        name : str
            A key of :data:`TOOLS` (or ``remove_small``, ``relabel``).
        layer : napari.layers.Labels, optional
            The layer (default: the one chosen in the section).
        world : sequence of float, optional
            World position (default: the mouse cursor).
        point, plane : optional
            Data position ``(row, column)`` and plane index, instead of ``world`` (scripts and tests).

        Returns
        -------
        object
            The tool's result (an :class:`~napari_unet_loop.core.proofread.Edit`, or ``None``).
        """
        layer = layer if layer is not None else self.labels_layer()
        try:
            if layer is None:
                raise pr.ProofreadError("no labels layer to correct: segment an image first")
            image = self.session.image_layer()
            if image is not None and labels_name(image) == layer.name:
                expected = tuple(image.data.shape[:-1] if image.rgb else image.data.shape)
                if self.session.channel_axis() is None and tuple(layer.data.shape) != expected:
                    raise pr.ProofreadError(
                        f"'{layer.name}' has shape {tuple(layer.data.shape)} but its image {expected}"
                    )
            if point is None:
                plane, point = self._plane_and_point(layer, world)
            elif plane is None:
                plane = self._current_plane(layer)
            return getattr(self, f"_tool_{name}")(layer, plane, point)
        except pr.ProofreadError as exc:
            show_error(str(exc))
            self.status.setText(f"Nothing changed: {exc}")
            return None

    def apply(self, layer: Labels, plane: tuple[int, ...], edit: pr.Edit) -> pr.Edit:
        """Write an edit as one undoable step, if the box still holds what it was computed from.

        Raises
        ------
        ProofreadError
            If the layer changed meanwhile (nothing is written then).
        """
        data = layer.data
        full_box = (*plane, *edit.box)
        if not np.array_equal(np.asarray(data[full_box]), edit.before):
            raise pr.ProofreadError("the labels changed while the tool ran; nothing was changed, try again")
        changed = np.nonzero(edit.before != edit.after)
        count = int(changed[0].size)  # before writing: a whole-plane edit's ``before`` may be the layer's own data
        if count:
            idx = tuple(np.full(changed[0].size, i, np.intp) for i in plane)
            idx += (changed[0] + edit.box[0].start, changed[1] + edit.box[1].start)
            values = edit.after[changed].astype(data.dtype, copy=False)
            with layer.block_history():
                layer.data_setitem(idx, values)
            if self.queue is not None and layer.name == self.queue_layer:
                self.refresh_queue()
        self.status.setText(f"{edit.message[0].upper()}{edit.message[1:]} ({count} px). Ctrl+Z undoes it.")
        return edit

    def _plane(self, layer: Labels, plane: tuple[int, ...]) -> np.ndarray:
        return np.asarray(layer.data[plane]) if plane else np.asarray(layer.data)

    def _tool_delete(self, layer, plane, point):
        return self.apply(layer, plane, pr.delete(self._plane(layer, plane), point))

    def _tool_fill(self, layer, plane, point):
        return self.apply(layer, plane, pr.fill_holes(self._plane(layer, plane), point))

    def _tool_grow(self, layer, plane, point):
        return self.apply(layer, plane, pr.dilate(self._plane(layer, plane), point, self.grow_spin.value()))

    def _tool_shrink(self, layer, plane, point):
        return self.apply(layer, plane, pr.erode(self._plane(layer, plane), point, self.grow_spin.value()))

    def _tool_remove_small(self, layer, plane, point):
        return self.apply(layer, plane, pr.remove_small(self._plane(layer, plane), self.min_size_spin.value()))

    def _tool_relabel(self, layer, plane, point):
        return self.apply(layer, plane, pr.relabel_sequential(self._plane(layer, plane)))

    def _tool_add(self, layer, plane, point):
        maps = self._maps(layer, plane)
        if maps is None:
            raise pr.ProofreadError(
                "no probability maps kept for this plane: segment it with the plugin first, or paint with New object"
            )
        edit = pr.add_object(
            self._plane(layer, plane), point, maps[0], self._distance_map(layer, plane), next_label=self._free(layer)
        )
        return self.apply(layer, plane, edit)

    @staticmethod
    def _free(layer) -> int:
        """An id no object of the layer has, in any plane (a stack's 3D objects keep one id across planes)."""
        return pr.next_free_label(np.asarray(layer.data))

    def _tool_new(self, layer, plane, point):
        layer.selected_label = self._free(layer)
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self.status.setText(f"Paint the new object {layer.selected_label} (brush), then fill it if needed.")

    def _pick_list(self, which: str) -> list:
        return {"pick": self.picks, "seed": self.seeds, "cut": self.cut_points}[which]

    def _add_pick(self, which: str, layer, plane, point) -> None:
        owner = self._picks_on() if self._picks_on is not None else None
        if owner is not unwrap(layer):  # picks belong to one layer
            self.clear_picks()
            self._picks_on = weakref.ref(unwrap(layer))
        items = self._pick_list(which)
        if items and items[0][0] != plane:
            items.clear()  # picks belong to one plane
        if pr.label_at(self._plane(layer, plane), point) == 0 and which != "cut":
            raise pr.ProofreadError(f"no object under the cursor to {'merge' if which == 'pick' else 'split'}")
        items.append((plane, point))
        self._show_picks(layer)

    def _tool_pick(self, layer, plane, point):
        self._add_pick("pick", layer, plane, point)
        self.status.setText(f"{len(self.picks)} object(s) picked; Merge picked (Shift+G) joins them.")

    def _tool_merge(self, layer, plane, point):
        if not self.picks:
            raise pr.ProofreadError("pick at least two objects first (G over each, or click with 'pick to merge')")
        plane = self.picks[0][0]
        edit = pr.merge(self._plane(layer, plane), [p for _, p in self.picks])
        self.clear_picks()
        return self.apply(layer, plane, edit)

    def _tool_seed(self, layer, plane, point):
        self._add_pick("seed", layer, plane, point)
        self.status.setText(f"{len(self.seeds)} split seed(s); Split (Shift+S) divides the object.")

    def _tool_split(self, layer, plane, point):
        if not self.seeds:
            raise pr.ProofreadError("place two or more split seeds inside one object first (S over each part)")
        plane = self.seeds[0][0]
        labels = self._plane(layer, plane)
        edit = pr.split(
            labels, [p for _, p in self.seeds], landscape=self._distance_map(layer, plane), next_label=self._free(layer)
        )
        self.clear_picks()
        return self.apply(layer, plane, edit)

    def _tool_cut(self, layer, plane, point):
        self._add_pick("cut", layer, plane, point)
        if len(self.cut_points) < 2:
            self.status.setText("Cut: now the other end of the line (C or click).")
            return None
        (plane, a), (_, b) = self.cut_points[:2]
        self.clear_picks()
        return self.apply(layer, plane, pr.cut(self._plane(layer, plane), a, b, next_label=self._free(layer)))

    def clear_picks(self) -> None:
        """Forget merge picks, split seeds and cut points, and remove the layer that showed them."""
        self.picks.clear()
        self.seeds.clear()
        self.cut_points.clear()
        self._picks_on = None
        if PICKS in self.viewer.layers:
            active = self.viewer.layers.selection.active
            self.viewer.layers.remove(PICKS)
            if active is not None and active.name != PICKS and active.name in self.viewer.layers:
                self.viewer.layers.selection.active = active

    def _show_picks(self, layer: Labels) -> None:
        pts = [p for _, p in self.picks + self.seeds + self.cut_points]
        data = np.asarray(pts, float).reshape(-1, 2)
        kw = {"scale": layer.scale[-2:], "translate": layer.translate[-2:]}
        if PICKS in self.viewer.layers:
            self.viewer.layers[PICKS].data = data
        else:
            self.viewer.add_points(
                data,
                name=PICKS,
                size=6,
                face_color="yellow",
                border_color="black",
                metadata={META_KEY: {"role": HELPER}},
                **kw,
            )
            self.viewer.layers.selection.active = layer

    def _maps(self, layer: Labels, plane: tuple[int, ...]):
        return self.session.maps_of(layer).get(plane)

    def _distance_map(self, layer: Labels, plane):
        maps = self._maps(layer, plane)
        return None if maps is None else maps[1].astype(np.float32)

    # ------------------------------------------------------------------ review queue
    def rank(self, layer: Labels | None = None) -> dict[str, np.ndarray] | None:
        """Rank the objects of the plane on screen by doubt and list them."""
        layer = layer if layer is not None else self.labels_layer()
        if layer is None:
            show_error("no labels layer to review")
            return None
        plane = self._current_plane(layer)
        self.queue, maps = self._doubt_table(layer, plane)
        self.queue_plane = plane
        self.queue_layer = layer.name
        self.queue_pos = -1
        self._watch(layer)
        self._fill_queue_list(layer)
        source = "model uncertainty and shape" if maps is not None else "shape only (no probability maps kept)"
        self.status.setText(f"{self.queue['label'].size} objects ranked by {source}; Next (K) starts.")
        return self.queue

    def _doubt_table(self, layer: Labels, plane) -> tuple[dict[str, np.ndarray], tuple | None]:
        """The plane's objects ranked by doubt (with the kept probability maps, if any), and those maps."""
        maps = self._maps(layer, plane)
        fg, dist = (maps[0].astype(np.float32), maps[1].astype(np.float32)) if maps is not None else (None, None)
        return pr.doubt_table(self._plane(layer, plane), fg, dist), maps

    def _fill_queue_list(self, layer: Labels) -> None:
        reviewed = self._reviewed(layer)
        self.queue_list.clear()
        for i in range(self.queue["label"].size):
            lab = int(self.queue["label"][i])
            why = self.queue["reason"][i] or "-"
            done = " (accepted)" if (self.queue_plane, lab) in reviewed else ""
            item = QListWidgetItem(f"{lab}: {why}, doubt {self.queue['score'][i]:.2f}{done}")
            item.setData(Qt.UserRole, lab)
            self.queue_list.addItem(item)
        if self.queue_pos >= 0:
            self.queue_list.setCurrentRow(self.queue_pos)

    def _watch(self, layer: Labels) -> None:
        """Re-rank the queue when ``layer`` is painted or its data replaced."""
        real = unwrap(layer)
        if real in self._watched:
            return
        self._watched.add(real)
        ref = weakref.ref(self)

        def changed(event, ref=ref, layer=weakref.ref(real)):
            section, lyr = ref(), layer()
            if section is not None and lyr is not None and section.queue is not None:
                if lyr.name == section.queue_layer:
                    with contextlib.suppress(RuntimeError):  # the dock was closed: nothing to refresh
                        section._queue_timer.start()

        real.events.paint.connect(changed)
        real.events.data.connect(changed)

    def refresh_queue(self) -> dict[str, np.ndarray] | None:
        """Re-rank the review queue after the labels changed.

        Objects that no longer exist are dropped, new ones (split parts, painted objects)
        join, and every score is computed again. Objects up to the current one keep their
        place, so Next goes on from where the user is; the rest are ranked anew.

        Returns
        -------
        dict of numpy.ndarray or None
            The queue (``None`` if there is none, or its layer is gone).
        """
        self._queue_timer.stop()
        if self.queue is None or self.queue_layer not in self.viewer.layers:
            return None
        layer = self.viewer.layers[self.queue_layer]
        plane = self.queue_plane
        shape = layer.data.shape
        if not isinstance(layer, Labels) or len(shape) != len(plane) + 2 or any(i >= n for i, n in zip(plane, shape)):
            return None
        table, _ = self._doubt_table(layer, plane)
        now = [int(lab) for lab in table["label"]]
        where = {lab: i for i, lab in enumerate(now)}
        old = [int(lab) for lab in self.queue["label"]]
        kept = [lab for lab in old[: self.queue_pos + 1] if lab in where]
        seen = set(kept)
        order = [where[lab] for lab in kept] + [i for i, lab in enumerate(now) if lab not in seen]
        index = np.asarray(order, np.intp)
        self.queue = {key: np.asarray(col)[index] for key, col in table.items()}
        self.queue_pos = len(kept) - 1
        self._fill_queue_list(layer)
        return self.queue

    def _queue_layer(self) -> Labels:
        if self.queue_layer not in self.viewer.layers:
            raise pr.ProofreadError(f"the ranked layer '{self.queue_layer}' is gone or renamed: rank again")
        return self.viewer.layers[self.queue_layer]

    def go_to(self, pos: int) -> int | None:
        """Centre the view on the queue's object at ``pos`` and select its label."""
        if self.queue is None or not self.queue["label"].size:
            raise pr.ProofreadError("rank the objects first (Rank objects by doubt)")
        pos = int(np.clip(pos, 0, self.queue["label"].size - 1))
        layer = self._queue_layer()
        lab = int(self.queue["label"][pos])
        if not (self._plane(layer, self.queue_plane) == lab).any():  # changed without an event (e.g. undo)
            step = pos - self.queue_pos
            self.refresh_queue()
            if self.queue is None or not self.queue["label"].size:
                raise pr.ProofreadError("no objects left to review: rank again")
            pos = int(np.clip(self.queue_pos + (1 if step >= 0 else -1), 0, self.queue["label"].size - 1))
            lab = int(self.queue["label"][pos])
        self.queue_pos = pos
        data_pt = [*self.queue_plane, self.queue["centroid_y"][pos], self.queue["centroid_x"][pos]]
        world = layer.data_to_world(data_pt)
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9: viewer.camera is deprecated
        camera = scene.camera if scene is not None else self.viewer.camera
        camera.center = tuple(world[-2:])
        for ax, v in enumerate(world[:-2]):
            self.viewer.dims.set_point(ax + self.viewer.dims.ndim - layer.ndim, v)
        layer.selected_label = lab
        self.queue_list.setCurrentRow(pos)
        self.status.setText(f"Object {lab} ({self.queue['reason'][pos] or 'no flag'}): fix it, or Accept (A).")
        return lab

    def _tool_next(self, layer, plane, point):
        return self.go_to(self.queue_pos + 1)

    def _tool_previous(self, layer, plane, point):
        return self.go_to(self.queue_pos - 1)

    def _reviewed(self, layer: Labels) -> set[tuple[tuple[int, ...], int]]:
        meta = layer.metadata.get(META_KEY, {})
        return {(tuple(p), int(lab)) for p, lab in meta.get("reviewed", [])}

    def _tool_accept(self, layer, plane, point):
        if self.queue is None or self.queue_pos < 0:
            raise pr.ProofreadError("go to an object of the review queue first (Next)")
        layer = self._queue_layer()
        lab = int(self.queue["label"][self.queue_pos])
        meta = dict(layer.metadata.get(META_KEY, {}))
        reviewed = [list(x) for x in meta.get("reviewed", [])]
        entry = [list(self.queue_plane), lab]
        if entry not in reviewed:
            reviewed.append(entry)
        meta["reviewed"] = reviewed
        layer.metadata[META_KEY] = meta
        item = self.queue_list.item(self.queue_pos)
        if item is not None and "(accepted)" not in item.text():
            item.setText(item.text() + " (accepted)")
        show_info(f"Object {lab} accepted: it counts as annotated when fine-tuning on edited regions.")
        if self.queue_pos + 1 < self.queue["label"].size:
            self.go_to(self.queue_pos + 1)
        return lab

    def show_uncertainty(self) -> None:
        """Add the model's uncertainty of the corrected layer's planes as an image layer."""
        layer = self.labels_layer()
        maps = self.session.maps_of(layer) if layer is not None else {}
        if not maps:
            show_error("no probability maps for this layer: segment it with the plugin first")
            self.uncertainty_check.setChecked(False)
            return
        data = np.zeros(layer.data.shape, np.float32)
        for plane, (fg, *_) in maps.items():
            data[plane] = 1 - np.abs(2 * fg.astype(np.float32) - 1)
        self._uncertainty_name = f"{layer.name} uncertainty"
        show_map(self.viewer, self._uncertainty_name, data, layer, "inferno", opacity=0.5)

    def hide_uncertainty(self) -> None:
        """Remove the uncertainty layer the section added (it is shown again when ticked)."""
        name, self._uncertainty_name = self._uncertainty_name, None
        if name and name in self.viewer.layers and is_helper(self.viewer.layers[name]):
            self.viewer.layers.remove(name)
