"""napari-unet-loop: U-Net instance segmentation in napari with a correct / fine-tune loop."""

from .core import __version__

__all__ = ["__version__"]
