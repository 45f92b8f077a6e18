"""Axis handling: which axes of an array are spatial, stacked or channels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .channels import is_colour
from .image import InputError

STACK_AXES = "TZ"


def guess_axes(shape: tuple[int, ...], rgb: bool | None = None) -> str:
    """Guess the axes of an image from its shape.

    ``YX`` for 2D; ``YXS`` (colour) for a last axis of 3 or 4 in 3D, and for a last
    axis of 1 or 2 (grey, grey + alpha) that is much shorter than the others; ``ZYX`` for
    other 3D arrays; ``ZYXS`` for 4D with a colour last axis when ``rgb`` says so.
    Other shapes are ambiguous.

    Parameters
    ----------
    shape : tuple of int
        Array shape.
    rgb : bool, optional
        Whether the last axis is colour (napari's ``rgb`` flag); guessed if ``None``.

    Raises
    ------
    InputError
        If the axes cannot be told from the shape alone.
    """
    nd = len(shape)
    if nd == 2:
        return "YX"
    if nd == 3:
        grey_alpha = rgb is None and shape[-1] in (1, 2) and min(shape[:2]) >= 8
        channels = is_colour(shape) if rgb is None else rgb  # napari's flag: a last axis of channels
        return "YXS" if channels or grey_alpha else "ZYX"
    if nd == 4 and rgb:
        return "ZYXS"
    raise InputError(
        f"cannot tell the axes of a {nd}D array of shape {shape}: give them explicitly "
        "(the axes setting, e.g. TZYX or ZCYX; Y and X are the image plane, C a channel axis, T/Z stacks)"
    )


def to_stack(data: np.ndarray, axes: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Reorder an array to ``(N, Y, X[, C])``: one 2D plane (with channels) per stack position.

    Parameters
    ----------
    data : numpy.ndarray
        The image.
    axes : str
        One letter per axis: ``Y`` and ``X`` (required), ``C`` or ``S`` (channels,
        at most one), ``T``, ``Z`` (stacked, any number).

    Returns
    -------
    tuple
        ``(stack, stack_shape)`` where ``stack_shape`` is the shape of the stacked
        axes in their original order (``()`` for a single plane).

    Raises
    ------
    InputError
        If ``axes`` does not fit the array.
    """
    axes = axes.upper()
    if len(axes) != data.ndim:
        raise InputError(f"axes {axes!r} name {len(axes)} axes but the array has {data.ndim}")
    if set(axes) - set("TZCYXS") or len(set(axes)) != len(axes):
        raise InputError(f"invalid axes {axes!r}: use each of T, Z, C (or S), Y, X at most once")
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"axes {axes!r} must contain Y and X")
    if "C" in axes and "S" in axes:
        raise InputError("give one channel axis (C or S), not both")
    stack = [i for i, a in enumerate(axes) if a in STACK_AXES]
    chan = [i for i, a in enumerate(axes) if a in "CS"]
    order = stack + [axes.index("Y"), axes.index("X")] + chan
    arr = np.transpose(data, order)
    stack_shape = tuple(data.shape[i] for i in stack)
    n = int(np.prod(stack_shape)) if stack_shape else 1
    return arr.reshape((n, *arr.shape[len(stack) :])), stack_shape


def z_stack_of(
    stack_shape: tuple[int, ...], z: int | None
) -> Callable[[tuple[int, ...]], list[tuple[int, ...]]] | None:
    """The planes normalised together with a plane: those of its Z stack.

    Parameters
    ----------
    stack_shape : tuple of int
        Shape of the stacked axes (e.g. ``(T, Z)``).
    z : int or None
        Which of them is Z (``None``: none is, every plane stands alone).

    Returns
    -------
    callable or None
        ``stack_of(index)``: the positions of every plane that shares all stack positions but
        Z with ``index`` (for :func:`napari_unet_loop.core.planes.iter_segment_planes`);
        ``None`` without a Z axis.

    Examples
    --------
    >>> z_stack_of((2, 3), 1)((1, 0))
    [(1, 0), (1, 1), (1, 2)]
    """
    if z is None:
        return None

    def stack_of(index: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(*index[:z], j, *index[z + 1 :]) for j in range(stack_shape[z])]

    return stack_of


@dataclass
class Planes:
    """The 2D planes of an array, by stack position: what the plane loop and training read.

    Attributes
    ----------
    stack : numpy.ndarray
        ``(N, Y, X[, C])``, as :func:`to_stack` gives it.
    shape : tuple of int
        Shape of the stacked axes (``()`` for a single plane).
    axes : str
        The stacked axes, in order (e.g. ``"TZ"``; ``""`` for a single plane).
    """

    stack: np.ndarray
    shape: tuple[int, ...]
    axes: str

    @classmethod
    def of(cls, data: np.ndarray, axes: str) -> Planes:
        """The planes of ``data`` read with ``axes`` (see :func:`to_stack` for what it refuses)."""
        stack, shape = to_stack(data, axes)
        return cls(stack, shape, "".join(a for a in axes.upper() if a in STACK_AXES))

    @property
    def indices(self) -> list[tuple[int, ...]]:
        """Every stack position, in order (``[()]`` for a single plane)."""
        return [tuple(int(i) for i in ix) for ix in np.ndindex(*self.shape)]

    def read(self, index: tuple[int, ...]) -> np.ndarray:
        """The plane at a stack position."""
        return self.stack[int(np.ravel_multi_index(index, self.shape)) if index else 0]

    def stack_of(self) -> Callable[[tuple[int, ...]], list[tuple[int, ...]]] | None:
        """The planes of each plane's Z stack (:func:`z_stack_of`); ``None`` without a Z axis."""
        return z_stack_of(self.shape, self.axes.index("Z") if "Z" in self.axes else None)
