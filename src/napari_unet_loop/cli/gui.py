"""``napari-unet-loop gui``: napari with the plugin docked."""

from __future__ import annotations

import argparse

from ._common import CLIError


def cmd_gui(args: argparse.Namespace) -> int:
    """Open napari with the dock widget, on the given images or a sample image."""
    try:
        import napari
    except ImportError as exc:  # pragma: no cover - napari is a dependency
        raise CLIError(f"napari is not installed ({exc}); pip install 'napari-unet-loop[all]'") from exc
    from ..io.readers import napari_get_reader

    samples = _sample_keys()
    if not args.images and args.sample not in samples:
        raise CLIError(f"no sample named {args.sample!r}; choose one of {', '.join(samples)}")
    viewer = napari.Viewer(title="napari-unet-loop")
    if args.images:
        for path in args.images:
            # the plugin's reader first for what it reads (its label stores, label files): napari's own
            # reader would refuse a labels store ("No arrays found") or open label TIFFs as images
            viewer.open(path, plugin="napari-unet-loop" if napari_get_reader(path) is not None else None)
    else:
        viewer.open_sample("napari-unet-loop", args.sample)
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-loop", "U-Net Loop")
    # napari's first window is small: the dock's Segment button would sit below the fold
    from qtpy.QtWidgets import QApplication

    screen = QApplication.primaryScreen().availableGeometry()
    viewer.window.resize(min(1500, screen.width()), min(950, screen.height()))
    if args.segment:
        widget.segment()
    napari.run()
    return 0


def _sample_keys() -> list[str]:
    """The samples File > Open Sample offers (the manifest's keys)."""
    from npe2 import PluginManager

    manager = PluginManager.instance()
    manager.discover()
    return [sample.key for sample in manager.get_manifest("napari-unet-loop").contributions.sample_data or []]
