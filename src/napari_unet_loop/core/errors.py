"""The errors of the headless core, in one leaf module every other module may import."""

from __future__ import annotations


class InputError(ValueError):
    """An input the segmentation cannot work on; the message says why and what to do."""


class ConstantImageError(InputError):
    """The image (or plane) holds one value only: there is nothing to segment."""


class TrainingError(RuntimeError):
    """Training could not go on; the model it started from is unchanged."""


class ModelError(RuntimeError):
    """A model file is missing, unreadable or unusable; the message says which and why."""
