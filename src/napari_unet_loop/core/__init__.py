"""Headless core of napari-unet-loop: no napari, no Qt.

Everything here runs in scripts, on clusters and in tests without a display.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-unet-loop")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
