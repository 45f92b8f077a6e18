"""Headless commands: ``napari-unet-loop segment | evaluate | train | tune | export | models | gui``.

They run on the same core as the napari dock widget, so a model trained in napari
segments a folder on a cluster, and a model trained here opens in napari.
"""

from ..parallel.files import count_objects
from ._common import CLIError
from .main import build_parser, main

__all__ = ["CLIError", "build_parser", "count_objects", "main"]
