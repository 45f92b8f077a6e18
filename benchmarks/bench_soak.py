"""Soak benchmark: memory over many segment -> edit -> fine-tune -> re-segment cycles in one viewer.

One napari viewer with the real dock (``UNetLoopWidget``) runs the user's loop again and
again, driven through the dock's own methods, with the Qt event loop run here (no qtbot):

1. **Segment** the sample image (Segment button: ``widget.segment()``), into
   ``"<image> labels"``.
2. **Edit** that labels layer as a user would: delete the largest object with the
   Correct section's delete tool (``run_tool("delete")``) and paint a new object with
   ``Labels.paint`` (one brush stroke, a ``paint`` event).
3. **Fine-tune** for ``--steps`` steps (``FineTuneSection.steps_override``) from the
   current model, saved as ``soak-NNN``. When validation says the new model is not
   better, press "Use it anyway" (``use_anyway()``), so that every cycle takes the
   same path.
4. **Re-segment**: the section segments the image again with the new model into
   ``"<image> labels (soak-NNN)"`` and compares it with the corrected layer.
5. **Clean up** as a user would: remove the corrected and the re-segmented labels
   layers (and anything else the cycle added), so the layer count stays flat.

After each cycle the script flushes Qt's deferred deletions, runs ``gc.collect()`` and
reads the resident memory (RSS, psutil), then again after glibc's ``malloc_trim(0)``
(freed heap that worker threads' arenas keep makes raw RSS jump by tens of MB). Growth
is judged on both by a least-squares line over the cycles after the warm-up: PASS when
each slope is at most 2 MB/cycle and each line rises at most 100 MB from the warm-up
cycle to the last (``--max-slope``, ``--max-total``). The exit status is 1 on FAIL.

    python benchmarks/bench_soak.py                       # 50 cycles, tiny model, a few s per cycle
    python benchmarks/bench_soak.py --cycles 4 --warmup 1  # smoke test
    python benchmarks/bench_soak.py --model default --steps 3 --json out/soak.json
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
import tracemalloc
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from _common import write_json

SAMPLE_DEFAULT = "nuclei_small"
TINY = "tiny"
MAX_SLOPE_MB = 2.0  # per cycle
MAX_TOTAL_MB = 100.0  # from the warm-up cycle to the last one
TIMEOUT_S = 600.0


# ----------------------------------------------------------------------------- Qt helpers


def flush(app) -> None:
    """Run pending Qt events, including deferred deletions (``deleteLater``)."""
    from qtpy.QtCore import QCoreApplication, QEvent

    app.processEvents()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    app.processEvents()


def wait_until(app, predicate, what: str, timeout: float = TIMEOUT_S) -> float:
    """Run the Qt event loop until ``predicate()`` is true.

    Returns
    -------
    float
        Seconds waited.

    Raises
    ------
    TimeoutError
        If ``predicate`` is still false after ``timeout`` seconds.
    """
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        app.processEvents()
        time.sleep(0.002)
    return time.perf_counter() - t0


def rss_mb() -> float:
    """Resident memory of this process in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def malloc_trim() -> bool:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim(0)``).

    Freed memory that glibc keeps in its arenas (worker threads get their own)
    counts in RSS and makes it jump by tens of MB between cycles; after a trim, RSS
    follows the memory in use much more closely.

    Returns
    -------
    bool
        Whether the trim ran (``False`` off glibc).
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


# ----------------------------------------------------------------------------- set-up


def make_tiny_model(folder: Path) -> Path:
    """A randomly initialised depth-2, width-4 model file, as the tests' ``tiny_model_path``."""
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.unet import UNetConfig

    model = model_files.new_model(UNetConfig(depth=2, base_width=4), name="soak-tiny", description="soak test model")
    path = folder / "soak-tiny.safetensors"
    model_files.save(model, path)
    return path


def choose_model(widget, spec: str, folder: Path) -> str:
    """Select ``spec`` in the dock: ``tiny``, ``default``, a model name or a model file.

    Returns
    -------
    str
        The name shown in the dock's model list.
    """
    from napari_unet_loop.core import model_files

    if spec == TINY:
        path: Path | None = make_tiny_model(folder)
    elif spec.endswith(model_files.SUFFIX) or os.sep in spec:
        path = Path(spec)
    else:
        path = None
    if path is not None:
        if widget.add_model_file(path) is None:
            raise SystemExit(f"cannot load the model file {path}")
    else:
        name = model_files.DEFAULT_MODEL if spec == "default" else spec
        widget.refresh_models(select=name)
        widget._reset_thresholds()
        if widget.model_combo.currentText() != name:
            raise SystemExit(f"no model named {spec!r}; known: {', '.join(model_files.list_models())}")
    widget.current_model()  # load it now, before the baseline measurement
    return widget.model_combo.currentText()


def weights_size_mb(net) -> float:
    """Size of a network's parameters and buffers in MiB."""
    return sum(t.numel() * t.element_size() for t in net.state_dict().values()) / 2**20


class Messages:
    """napari notifications seen during the run, by severity."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, str]] = []
        self.cycle = 0

    def __call__(self, notification) -> None:
        severity = str(getattr(notification.severity, "value", notification.severity))
        self.seen.append((self.cycle, severity, str(notification.message)))

    def count(self, cycle: int, severity: str) -> int:
        """Notifications of ``severity`` (``"error"``, ``"warning"``, ``"info"``) in ``cycle``."""
        return sum(1 for c, s, _ in self.seen if c == cycle and s == severity)


# ----------------------------------------------------------------------------- one cycle


def edit(widget, layer, cycle: int) -> dict[str, Any]:
    """Delete the largest object (Correct section) and paint a new one (a brush stroke)."""
    data = np.asarray(layer.data)
    done: dict[str, Any] = {"deleted": None, "painted": None}
    counts = np.bincount(data.ravel().astype(np.int64))
    if counts.size > 1 and counts[1:].max() > 0:
        label = int(np.argmax(counts[1:]) + 1)
        pixels = np.argwhere(data == label)
        y, x = (int(v) for v in pixels[len(pixels) // 2])
        if widget.correct_section.run_tool("delete", layer=layer, point=(float(y), float(x)), plane=()) is not None:
            done["deleted"] = label
    h, w = data.shape[-2:]
    rng = np.random.default_rng(cycle)
    y, x = int(rng.integers(12, h - 12)), int(rng.integers(12, w - 12))
    layer.brush_size = 9
    new_label = int(np.asarray(layer.data).max()) + 1
    layer.paint((y, x), new_label)
    done["painted"] = new_label
    return done


def run_cycle(app, viewer, widget, image, cycle: int, messages: Messages) -> dict[str, Any]:
    """One segment -> edit -> fine-tune -> re-segment -> clean-up cycle."""
    ft = widget.finetune_section
    out: dict[str, Any] = {"cycle": cycle, "problems": []}
    t0 = time.perf_counter()

    # 1. segment
    if widget.segment(layer=image) is None:
        raise RuntimeError(f"segment refused: {widget.status.text()}")
    wait_until(app, lambda: widget._worker is None, "the segmentation")
    out["t_segment"] = time.perf_counter() - t0
    name = f"{image.name} labels"
    if name not in viewer.layers:
        raise RuntimeError(f"no '{name}' layer after segmenting: {widget.status.text()}")
    labels = viewer.layers[name]
    out["objects"] = int(np.asarray(labels.data).max())

    # 2. edit
    t1 = time.perf_counter()
    out["edit"] = edit(widget, labels, cycle)
    if not widget.tracker.is_edited(labels):
        out["problems"].append("the edit was not tracked")
    widget.autosaver.save_dirty()  # what the autosave timer does every minute
    flush(app)
    out["t_edit"] = time.perf_counter() - t1

    # 3. fine-tune (the section re-segments when it accepts the model)
    t2 = time.perf_counter()
    model_name = f"soak-{cycle:03d}"
    ft.name_edit.setText(model_name)
    if ft.start() is None:
        raise RuntimeError(f"fine-tune refused: {ft.result_label.text()}")
    wait_until(app, lambda: ft._worker is None, "the fine-tune")
    out["used_anyway"] = ft._rejected is not None
    if ft._rejected is not None:  # not better on validation: keep the loop going, as a user may
        ft.use_anyway()
    out["t_finetune"] = time.perf_counter() - t2

    # 4. re-segment (started by the section)
    t3 = time.perf_counter()
    wait_until(app, lambda: widget._worker is None, "the re-segmentation")
    new_name = f"{image.name} labels ({model_name})"
    if new_name not in viewer.layers:
        out["problems"].append(f"no re-segmented layer '{new_name}'")
    elif "Re-segmented" not in ft.result_label.text():
        out["problems"].append("no before/after comparison after re-segmenting")
    out["t_resegment"] = time.perf_counter() - t3
    out["model"] = widget.model_combo.currentText()
    out["layers_peak"] = len(viewer.layers)

    # 5. clean up: remove what the cycle added
    removed = [layer for layer in list(viewer.layers) if layer is not image]
    out["removed"] = [layer.name for layer in removed]
    refs = [weakref.ref(layer) for layer in removed]
    for layer in removed:
        viewer.layers.remove(layer)
    del removed, labels
    viewer.layers.selection.active = image
    flush(app)
    out["layers"] = len(viewer.layers)
    out["seconds"] = time.perf_counter() - t0
    out["errors"] = messages.count(cycle, "error")
    out["warnings"] = messages.count(cycle, "warning")
    out["_refs"] = refs
    return out


# ----------------------------------------------------------------------------- analysis


def fit_growth(cycles: list[int], values: list[float]) -> dict[str, float] | None:
    """Least-squares line through (cycle, value): the slope per cycle and the scatter around the line."""
    if len(cycles) < 3:
        return None
    x, y = np.asarray(cycles, float), np.asarray(values, float)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    return {"slope": float(slope), "intercept": float(intercept), "residual_sd": float(resid.std(ddof=2)), "n": len(x)}


def _delta(row: dict[str, Any], ref: dict[str, Any] | None, key: str) -> str:
    """``row[key] - ref[key]`` for the table (``-`` before the warm-up cycle or when not measured)."""
    if ref is None or row.get(key) is None or ref.get(key) is None:
        return "-"
    return f"{row[key] - ref[key]:+.1f}"


SERIES = {"rss_mb": "RSS", "rss_trimmed_mb": "RSS after malloc_trim"}


def verdict(rows: list[dict[str, Any]], warmup: int, max_slope: float, max_total: float) -> dict[str, Any]:
    """Judge the growth of each memory series after the warm-up.

    A series passes when the slope of its least-squares line over the cycles after
    the warm-up is at most ``max_slope`` MB/cycle and the line's rise from the warm-up
    cycle to the last cycle is at most ``max_total`` MB (the line, not the last
    reading, so that one allocator spike does not decide). The run passes when every
    measured series passes.
    """
    last = rows[-1]["cycle"]
    rule = (
        f"for RSS and (where glibc allows) RSS after malloc_trim: least-squares slope over the cycles after "
        f"warm-up cycle {warmup} <= {max_slope:g} MB/cycle, and that line's rise from cycle {warmup} to the "
        f"last cycle <= {max_total:g} MB"
    )
    after = [r for r in rows if r["cycle"] > warmup]
    ref = next((r for r in rows if r["cycle"] == max(warmup, 1)), None)
    series: dict[str, Any] = {}
    for key in SERIES:
        if any(r.get(key) is None for r in rows):
            continue
        fit = fit_growth([r["cycle"] for r in after], [r[key] for r in after])
        if fit is None or ref is None:
            continue
        rise = fit["slope"] * (last - warmup)
        series[key] = {
            "fit": fit,
            "rise_mb": rise,
            "measured_mb": rows[-1][key] - ref[key],
            "projected_50_cycles_mb": fit["slope"] * 50,
            "ok": fit["slope"] <= max_slope and rise <= max_total,
        }
    if not series:
        return {"status": "NOT CHECKED", "rule": rule, "series": {}, "why": "fewer than 3 cycles after the warm-up"}
    status = "PASS" if all(v["ok"] for v in series.values()) else "FAIL"
    return {"status": status, "rule": rule, "series": series}


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=50, help="segment/edit/fine-tune/re-segment cycles (50)")
    p.add_argument(
        "--model",
        default=TINY,
        help="tiny (default: a depth-2 width-4 random model made in a temp folder), default (the shipped "
        "model), a model name or a .safetensors path",
    )
    p.add_argument("--steps", type=int, default=5, help="fine-tuning steps per cycle (5)")
    p.add_argument("--warmup", type=int, default=5, help="cycles left out of the growth fit (5)")
    p.add_argument("--image", default=SAMPLE_DEFAULT, help=f"sample image name ({SAMPLE_DEFAULT})")
    p.add_argument("--device", default="cpu", help="the dock's device choice: auto, cpu, cuda, mps (cpu)")
    p.add_argument("--max-slope", type=float, default=MAX_SLOPE_MB, help=f"MB per cycle ({MAX_SLOPE_MB:g})")
    p.add_argument("--max-total", type=float, default=MAX_TOTAL_MB, help=f"MB since warm-up ({MAX_TOTAL_MB:g})")
    p.add_argument("--tracemalloc", action="store_true", help="also report Python allocations (slower)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.cycles < 1 or args.steps < 1 or args.warmup < 0:
        p.error("--cycles and --steps must be positive, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the soak and print one row per cycle, the fit and the verdict."""
    args = parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="bench-soak-")
    root = Path(tmp.name)
    # fine-tuned models and autosaves go to a private folder, never the user's
    os.environ["NAPARI_UNET_LOOP_MODELS"] = str(root / "models")
    os.environ["NAPARI_UNET_LOOP_AUTOSAVE"] = str(root / "autosave")
    (root / "models").mkdir()

    import napari
    import torch
    from napari.utils.notifications import notification_manager
    from qtpy.QtWidgets import QApplication

    from napari_unet_loop.gui.widget import UNetLoopWidget
    from napari_unet_loop.sample_data import SAMPLES, load_sample

    if args.image not in SAMPLES:
        raise SystemExit(f"--image: choose from {', '.join(SAMPLES)}")
    if args.tracemalloc:
        tracemalloc.start()
    t_start = time.perf_counter()
    rss_start = rss_mb()
    viewer = napari.Viewer(show=False)
    app = QApplication.instance()
    messages = Messages()
    notification_manager.notification_ready.connect(messages)
    widget = UNetLoopWidget(viewer)
    viewer.window.add_dock_widget(widget, name="U-Net Loop")
    model_name = choose_model(widget, args.model, root)
    if args.device in widget.device_combo.choices:
        widget.device_combo.value = args.device
    if widget.device_combo.value != args.device:
        raise SystemExit(f"--device {args.device} is not available here")
    ft = widget.finetune_section
    ft.steps_override = args.steps
    pixels, _ = load_sample(args.image)
    image = viewer.add_image(pixels, name=args.image, rgb=pixels.ndim == 3 and pixels.shape[-1] in (3, 4))
    flush(app)
    gc.collect()
    rss_ready = rss_mb()
    card = widget.current_model().card
    weights_mb = weights_size_mb(widget.current_model().net)
    print(
        f"model {model_name} (U-Net depth {card.architecture.depth}, width {card.architecture.base_width}, "
        f"{weights_mb:.2f} MB of weights); "
        f"image {args.image} {pixels.shape}; {args.steps} fine-tune steps per cycle; device "
        f"{widget.device_label.text().replace('Runs on: ', '')}; torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s); napari {napari.__version__}; Python {platform.python_version()}",
        flush=True,
    )
    print(f"RSS {rss_start:.1f} MB at start, {rss_ready:.1f} MB with the viewer, dock, model and image", flush=True)
    trims = malloc_trim()
    header = (
        f"{'cycle':>5}{'s':>6}{'RSS MB':>9}{'delta':>8}{'trim MB':>9}{'delta':>8}{'layers':>8}"
        f"{'py objects':>11}{'alive':>7}{'models':>7}{'err':>4}{'warn':>5}  notes"
    )
    print(header)
    print("-" * len(header))

    rows: list[dict[str, Any]] = []
    refs: list[weakref.ref] = []
    ref: dict[str, Any] | None = None
    for cycle in range(1, args.cycles + 1):
        messages.cycle = cycle
        row = run_cycle(app, viewer, widget, image, cycle, messages)
        refs.extend(row.pop("_refs"))
        gc.collect()
        flush(app)
        gc.collect()
        row["rss_mb"] = rss_mb()
        row["rss_trimmed_mb"] = rss_mb() if trims and malloc_trim() else None
        row["py_objects"] = len(gc.get_objects())
        row["alive_removed_layers"] = sum(r() is not None for r in refs)
        row["removed_layers"] = len(refs)
        row["cached_models"] = len(widget._models)
        row["model_list"] = widget.model_combo.count()
        row["notifications_kept"] = len(notification_manager.records)
        if args.tracemalloc:
            row["traced_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
        if cycle == max(args.warmup, 1):
            ref = row
        rows.append(row)

        trimmed = f"{row['rss_trimmed_mb']:.1f}" if row["rss_trimmed_mb"] is not None else "-"
        notes = []
        if row["used_anyway"]:
            notes.append("used anyway")
        notes.extend(row["problems"])
        if args.tracemalloc:
            notes.append(f"traced {row['traced_mb']:.1f} MB")
        print(
            f"{cycle:>5}{row['seconds']:>6.1f}{row['rss_mb']:>9.1f}{_delta(row, ref, 'rss_mb'):>8}{trimmed:>9}"
            f"{_delta(row, ref, 'rss_trimmed_mb'):>8}{row['layers_peak']:>4} ->{row['layers']:>2}"
            f"{row['py_objects']:>11}"
            f"{row['alive_removed_layers']:>4}/{row['removed_layers']:<3}{row['cached_models']:>6}"
            f"{row['errors']:>4}{row['warnings']:>5}  {'; '.join(notes)}",
            flush=True,
        )

    result = verdict(rows, args.warmup, args.max_slope, args.max_total)
    print("-" * len(header))
    print(
        "columns: seconds of the cycle; RSS after gc.collect(), and after malloc_trim(0) as well, each with its "
        f"change since cycle {max(args.warmup, 1)} (the warm-up); layers at the peak of the cycle -> after the "
        "clean-up; Python objects tracked by gc; removed layers still alive (weak references) / removed so far; "
        "models held by the dock; error and warning notifications"
    )
    times = [r["seconds"] for r in rows]
    print(
        f"cycle time: median {np.median(times):.1f} s (segment {np.median([r['t_segment'] for r in rows]):.2f} s, "
        f"fine-tune {np.median([r['t_finetune'] for r in rows]):.2f} s, re-segment "
        f"{np.median([r['t_resegment'] for r in rows]):.2f} s); 'use it anyway' in "
        f"{sum(r['used_anyway'] for r in rows)} of {len(rows)} cycles"
    )
    for key, v in result["series"].items():
        fit = v["fit"]
        print(
            f"{SERIES[key]}: {fit['slope']:+.3f} MB/cycle over cycles {args.warmup + 1}..{rows[-1]['cycle']} "
            f"(scatter around the line {fit['residual_sd']:.1f} MB); line rises {v['rise_mb']:+.1f} MB from "
            f"cycle {args.warmup} (measured {v['measured_mb']:+.1f} MB); {v['projected_50_cycles_mb']:+.1f} MB "
            f"over 50 cycles: {'ok' if v['ok'] else 'too much'}"
        )
    obj = fit_growth(
        [r["cycle"] for r in rows if r["cycle"] > args.warmup],
        [r["py_objects"] for r in rows if r["cycle"] > args.warmup],
    )
    if obj is not None:
        print(f"Python objects: {obj['slope']:+.0f} per cycle after the warm-up")
    errors = [(c, m) for c, s, m in messages.seen if s == "error"]
    for c, m in errors[:10]:
        print(f"error notification in cycle {c}: {m}")
    autosaves = sorted((root / "autosave").glob("*")) if (root / "autosave").is_dir() else []
    print(
        f"left at the end: {len(viewer.layers)} layer(s), {len(widget._models)} model(s) held by the dock, "
        f"{widget.model_combo.count() - 1} in its list, {len(list((root / 'models').glob('*.safetensors')))} "
        f"model file(s) and {len(autosaves)} autosave file(s) in the temp folders, "
        f"{len(notification_manager.records)} notification(s) kept by napari"
    )
    held = rows[-1]["cached_models"] - rows[0]["cached_models"]
    if held > 0:
        print(
            f"note: the dock's model cache grew by {held} model(s) over {len(rows) - 1} cycle(s), about "
            f"{held * weights_mb:.1f} MB of weights at {weights_mb:.2f} MB each"
            + ("; the tiny model hides this, the shipped one (--model default) shows it" if args.model == TINY else "")
        )
    print(f"rule: {result['rule']}")
    print(f"{result['status']}" + (f": {result['why']}" if "why" in result else ""))
    print(f"total wall time {(time.perf_counter() - t_start) / 60:.1f} min")

    report = {
        "info": {
            "model": args.model,
            "model_name": model_name,
            "image": args.image,
            "steps": args.steps,
            "cycles": args.cycles,
            "warmup": args.warmup,
            "device": args.device,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "napari": napari.__version__,
            "python": platform.python_version(),
            "platform": sys.platform,
            "rss_start_mb": rss_start,
            "rss_ready_mb": rss_ready,
            "model_weights_mb": weights_mb,
        },
        "cycles": rows,
        "errors": errors,
        "result": result,
    }
    notification_manager.notification_ready.disconnect(messages)
    viewer.close()
    tmp.cleanup()
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    raise SystemExit(1 if main()["result"]["status"] == "FAIL" else 0)
