"""Overlap-tile geometry with mirrored borders (Ronneberger et al., 2015, Fig. 2).

The image is cut into equal core tiles; each tile is read with a halo of at least
half the network's receptive field on every side, with the image mirrored
(``numpy.pad(mode="reflect")``) beyond its border. Core tile sizes and the halo
are multiples of ``2**depth``, so every tile's pooling grid lines up with the
whole image's, and the core of every tile sees exactly the pixels it would see
if the whole (mirror-padded) image went through the network at once: tiled
output equals whole-image output up to floating-point rounding.

Tiles are read straight from the image through reflected indices, so no padded
copy of a large image is ever made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def round_up(n: int, m: int) -> int:
    """Round ``n`` up to a multiple of ``m``."""
    return -(-n // m) * m


def reflect_indices(start: int, stop: int, n: int) -> np.ndarray:
    """Indices ``start..stop-1`` of an axis of length ``n`` mirrored at its ends.

    Same as the indices ``numpy.pad(..., mode="reflect")`` reads, for any reach.
    """
    idx = np.arange(start, stop)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


@dataclass(frozen=True)
class Tile:
    """One tile: where its core lies in the image.

    Attributes
    ----------
    y, x : int
        Top-left corner of the core in image coordinates.
    h, w : int
        Size of the core inside the image (smaller than the tile core at the
        bottom and right edges).
    """

    y: int
    x: int
    h: int
    w: int


@dataclass(frozen=True)
class TileGrid:
    """Overlap-tile layout of an image.

    Parameters
    ----------
    shape : tuple of int
        Image height and width.
    core : int
        Requested core tile side; shrunk to the image (rounded up to ``multiple``).
    halo : int
        Pixels read around each core on every side.
    multiple : int
        Core and halo are multiples of this (``2**depth`` of the network).
    """

    shape: tuple[int, int]
    core: int
    halo: int
    multiple: int = 16

    def __post_init__(self) -> None:
        if self.core % self.multiple or self.halo % self.multiple:
            raise ValueError(f"core ({self.core}) and halo ({self.halo}) must be multiples of {self.multiple}")
        if self.core <= 0:
            raise ValueError("core tile size must be positive")

    @property
    def core_shape(self) -> tuple[int, int]:
        """Core size of every tile (equal for all tiles)."""
        return tuple(min(self.core, round_up(s, self.multiple)) for s in self.shape)  # type: ignore[return-value]

    @property
    def tile_shape(self) -> tuple[int, int]:
        """Size of the network input for every tile (core plus two halos)."""
        cy, cx = self.core_shape
        return cy + 2 * self.halo, cx + 2 * self.halo

    @property
    def counts(self) -> tuple[int, int]:
        """Number of tiles along y and x."""
        return tuple(math.ceil(s / c) for s, c in zip(self.shape, self.core_shape))  # type: ignore[return-value]

    def __len__(self) -> int:
        ny, nx = self.counts
        return ny * nx

    def tiles(self) -> list[Tile]:
        """All tiles in row-major order."""
        (cy, cx), (ny, nx) = self.core_shape, self.counts
        h, w = self.shape
        return [Tile(j * cy, i * cx, min(cy, h - j * cy), min(cx, w - i * cx)) for j in range(ny) for i in range(nx)]

    def read(self, image: np.ndarray, tile: Tile) -> np.ndarray:
        """Read a tile's network input (core plus halo, mirrored beyond the border).

        Parameters
        ----------
        image : numpy.ndarray
            ``(..., H, W)`` image; leading axes are kept.
        tile : Tile
            The tile to read.

        Returns
        -------
        numpy.ndarray
            ``(..., tile_h, tile_w)`` array.
        """
        th, tw = self.tile_shape
        iy = reflect_indices(tile.y - self.halo, tile.y - self.halo + th, self.shape[0])
        ix = reflect_indices(tile.x - self.halo, tile.x - self.halo + tw, self.shape[1])
        # contiguous slices where possible (the common case inside the image)
        if iy[0] >= 0 and np.all(np.diff(iy) == 1):
            rows = image[..., iy[0] : iy[-1] + 1, :]
        else:
            rows = image[..., iy, :]
        if ix[0] >= 0 and np.all(np.diff(ix) == 1):
            return np.asarray(rows[..., ix[0] : ix[-1] + 1])
        return np.asarray(rows[..., ix])

    def core_of(self, output: np.ndarray, tile: Tile) -> np.ndarray:
        """Cut a tile's core, clipped to the image, out of the network output."""
        return output[..., self.halo : self.halo + tile.h, self.halo : self.halo + tile.w]


def halo_for(receptive_field: int, multiple: int) -> int:
    """Smallest halo (a multiple of ``multiple``) covering half the receptive field."""
    return round_up(math.ceil(receptive_field / 2), multiple)
