"""napari-facing code: the dock widget, workers and layer helpers (the only package importing napari or Qt)."""
