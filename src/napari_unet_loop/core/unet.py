"""The U-Net of Ronneberger, Fischer and Brox (2015), with same padding.

The network follows the paper: a contracting path of two 3x3 convolutions with
ReLU per level and 2x2 max-pooling between levels, an expanding path of 2x2
transposed convolutions, skip connections concatenated across channels, two 3x3
convolutions that merge context with detail, and a final 1x1 convolution to
per-pixel scores. Convolutions use zero "same" padding so that tiles line up
with the input grid; overlap-tiling (:mod:`napari_unet_loop.core.tiling`) with a
halo of half the receptive field makes tiled output equal whole-image output.

The outputs of the shipped models are ``n_classes`` class logits (background,
interior, boundary) followed by one distance-map channel; see
:mod:`napari_unet_loop.core.targets`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import Settings

NORMS = ("batch", "group", "none")
# upper bounds of the architecture fields: checked before anything is built, so a hostile or
# broken model card cannot make the plugin allocate until the machine gives up
LIMITS = {"in_channels": 64, "n_classes": 64, "n_dist": 16, "depth": 6, "base_width": 512}


@dataclass(frozen=True)
class UNetConfig(Settings):
    """Architecture of a :class:`UNet`.

    Parameters
    ----------
    in_channels : int
        Number of input channels (1 for grey images).
    n_classes : int
        Number of class logits (3: background, interior, boundary).
    n_dist : int
        Number of extra regression channels (1: normalised distance map).
    depth : int
        Number of 2x2 poolings; input sizes must be multiples of ``2**depth``.
    base_width : int
        Feature maps at the first level; doubled at each pooling.
    norm : str
        ``"batch"``, ``"group"`` or ``"none"``: normalisation after each conv.
    """

    _what = "architecture"

    in_channels: int = 1
    n_classes: int = 3
    n_dist: int = 1
    depth: int = 4
    base_width: int = 16
    norm: str = "batch"

    def __post_init__(self) -> None:
        for name, top in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            if value > top:
                raise ValueError(f"{name} {value} is larger than any real model (at most {top})")
        if self.in_channels < 1 or self.n_classes < 1 or self.n_dist < 0:
            raise ValueError(f"invalid channel counts in {self}")
        if not 1 <= self.depth <= 6:
            raise ValueError(f"depth must be 1..6, got {self.depth}")
        if self.base_width < 1:
            raise ValueError(f"base_width must be positive, got {self.base_width}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")

    @property
    def out_channels(self) -> int:
        """Total output channels (class logits then regression channels)."""
        return self.n_classes + self.n_dist

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this number."""
        return 2**self.depth


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and ReLU."""

    def __init__(self, c_in: int, c_out: int, norm: str) -> None:
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias),
            _norm(norm, c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=bias),
            _norm(norm, c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net with same padding and configurable depth and width.

    Parameters
    ----------
    config : UNetConfig
        The architecture.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.base_width * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList()
        c_in = config.in_channels
        for w in widths[:-1]:
            self.down.append(ConvBlock(c_in, w, config.norm))
            c_in = w
        self.pool = nn.MaxPool2d(2)
        self.bottom = ConvBlock(widths[-2], widths[-1], config.norm)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for i in range(config.depth - 1, -1, -1):
            self.up.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            self.merge.append(ConvBlock(2 * widths[i], widths[i], config.norm))
        self.head = nn.Conv2d(widths[0], config.out_channels, 1)

    @property
    def encoder(self) -> list[nn.Module]:
        """Modules of the contracting path (frozen by encoder freezing)."""
        return [*self.down, self.bottom]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` images to ``(N, out_channels, H, W)`` scores."""
        m = self.config.size_multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"input height and width must be multiples of {m}, got {tuple(x.shape[-2:])}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


def receptive_field(depth: int, convs_per_block: int = 2) -> int:
    """Return the receptive field (in pixels, one side to the other) of a :class:`UNet`.

    Every 3x3 convolution at level ``l`` widens the field by ``2 * 2**l``; a 2x2
    pooling into level ``l + 1`` by ``2**l``; a 2x2 transposed convolution from level
    ``l + 1`` to ``l`` by at most ``2**l`` (its two taps).

    Parameters
    ----------
    depth : int
        Number of poolings.
    convs_per_block : int
        3x3 convolutions per block (2 in the paper).

    Returns
    -------
    int
        The width of the square of input pixels that can influence one output pixel.
    """
    rf = 1
    for level in range(depth):  # contracting path: convs then pooling
        rf += convs_per_block * 2 * 2**level + 2**level
    rf += convs_per_block * 2 * 2**depth  # bottom block
    for level in range(depth - 1, -1, -1):  # expanding path: up-conv then convs
        rf += 2**level + convs_per_block * 2 * 2**level
    return rf
