"""Data augmentation on batches of patches, on whatever device the tensors live.

One sampling grid per patch combines a random flip, a rotation (multiples of 90
degrees, or any angle), a zoom and the U-Net paper's elastic deformation: a
coarse 3x3 grid of random displacements (standard deviation 10 px) upsampled
bicubically to a smooth field. The grid is applied with ``grid_sample`` to the
image (bicubic), the continuous targets (bilinear) and the class map (nearest),
with mirrored borders. Intensity jitter (gamma, contrast, brightness, noise), a
random Gaussian blur and, on colour patches, a random stain mix apply to the image
only.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .config import Settings


@dataclass(frozen=True)
class AugmentConfig(Settings):
    """What augmentation does; every field can be switched off.

    Parameters
    ----------
    flip : bool
        Random horizontal and vertical flips and 90-degree rotations.
    rotate : bool
        Rotation by any angle (on top of the 90-degree ones).
    zoom : tuple of float
        Range of the random zoom factor (``(1, 1)``: none).
    elastic_sigma : float
        Standard deviation of the elastic displacements in pixels (0: none).
    elastic_grid : int
        Size of the coarse displacement grid (3 in the paper).
    intensity : float
        Strength of the intensity jitter, 0 to 1 (0: none).
    blur : float
        Largest standard deviation (pixels) of a random Gaussian blur applied to half
        of the patches (0: none): out-of-focus and low-resolution nuclei.
    stain : float
        Strength of the random stain mix on colour (3-channel) patches, 0 to 1 (0: none): the
        hue of H&E and other stained slides, which differs from lab to lab (see :func:`mix_stains`).
        Grey patches are left as they are.
    """

    _what = "augmentation"

    flip: bool = True
    rotate: bool = True
    zoom: tuple[float, float] = (0.75, 1.33)
    elastic_sigma: float = 10.0
    elastic_grid: int = 3
    intensity: float = 0.5
    blur: float = 0.0
    stain: float = 0.0

    @classmethod
    def _convert(cls, data: dict[str, Any]) -> dict[str, Any]:
        """JSON stores the zoom range as a list."""
        if "zoom" in data:
            data["zoom"] = tuple(data["zoom"])
        return data


NO_AUGMENT = AugmentConfig(
    flip=False, rotate=False, zoom=(1.0, 1.0), elastic_sigma=0.0, intensity=0.0, blur=0.0, stain=0.0
)


def sampling_grid(
    n: int,
    out_size: int,
    src_size: int,
    config: AugmentConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Return ``grid_sample`` grids mapping output patches to source crops.

    Parameters
    ----------
    n : int
        Number of patches.
    out_size : int
        Side of the output patches in pixels.
    src_size : int
        Side of the source crops in pixels (at least ``out_size``).
    config : AugmentConfig
        The geometric augmentation to draw.
    generator : torch.Generator, optional
        Random generator (on the CPU) for reproducible draws.
    device : torch.device or str, optional
        Where the grid is computed and returned (default the CPU); the random draws are made
        on the CPU with ``generator`` whatever the device.

    Returns
    -------
    torch.Tensor
        ``(n, out_size, out_size, 2)`` grid in normalised source coordinates.
    """

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    scale = out_size / src_size
    lo, hi = config.zoom
    # log-uniform zoom; zoom > 1 magnifies (samples a smaller source area)
    zoom = torch.exp(math.log(lo) + rand(n) * (math.log(hi) - math.log(lo)))
    angle = rand(n) * 2 * math.pi if config.rotate else torch.zeros(n)
    if config.flip:
        angle = angle + torch.randint(0, 4, (n,), generator=generator) * (math.pi / 2)
        flip = torch.where(rand(n) < 0.5, -1.0, 1.0)
    else:
        flip = torch.ones(n)
    cos, sin = torch.cos(angle), torch.sin(angle)
    s = scale / zoom
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = s * cos * flip
    theta[:, 0, 1] = -s * sin
    theta[:, 1, 0] = s * sin * flip
    theta[:, 1, 1] = s * cos
    # the draws above are few numbers on the CPU (reproducible); the grids are large and
    # are built where they are used (64 grids of 256 px: 0.36 s on 2 CPU cores)
    grid = F.affine_grid(theta.to(device), [n, 1, out_size, out_size], align_corners=False)
    if config.elastic_sigma > 0:
        k = config.elastic_grid
        # displacement in source pixels -> normalised source units (2 / src_size per px)
        coarse = torch.randn(n, 2, k, k, generator=generator) * (config.elastic_sigma * 2 / src_size)
        w = _cubic_weights(k, out_size, torch.device(device))
        field = torch.einsum("yi,ncij,xj->nyxc", w, coarse.to(device), w)  # bicubic upsampling, axis by axis
        grid = grid + field
    return grid


@functools.lru_cache(maxsize=8)
def _cubic_weights(k: int, size: int, device: torch.device) -> torch.Tensor:
    """``(size, k)`` weights of bicubic upsampling (corners aligned) along one axis, on ``device``.

    Bicubic upsampling is separable, so ``W @ C @ W.T`` equals ``F.interpolate(C, mode="bicubic",
    align_corners=True)`` for a ``k x k`` grid ``C``: two small matrix products (3x faster on a CPU),
    and no bicubic upsampling kernel needed on the device (some devices, e.g. older Apple MPS
    builds, have none). Cached: never modify the returned tensor.
    """
    eye = torch.eye(k).reshape(k, 1, k, 1)
    w = F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=True)[:, 0, :, 0].T.contiguous()
    return w.to(device)


def warp(
    grid: torch.Tensor,
    image: torch.Tensor,
    continuous: torch.Tensor | None = None,
    classes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Apply sampling grids to an image batch and its targets.

    Parameters
    ----------
    grid : torch.Tensor
        ``(N, h, w, 2)`` sampling grids from :func:`sampling_grid`.
    image : torch.Tensor
        ``(N, C, H, W)`` images, sampled bicubically.
    continuous : torch.Tensor, optional
        ``(N, K, H, W)`` continuous targets (weights, distances), sampled bilinearly.
    classes : torch.Tensor, optional
        ``(N, H, W)`` integer class maps, sampled by nearest neighbour.

    Returns
    -------
    tuple
        The warped ``image``, ``continuous`` and ``classes`` (``None`` where not given).
    """
    kw = dict(padding_mode="reflection", align_corners=False)
    out_img = F.grid_sample(image, grid, mode="bicubic", **kw)
    out_cont = None
    if continuous is not None:
        out_cont = F.grid_sample(continuous, grid, mode="bilinear", **kw)
    out_cls = None
    if classes is not None:
        c = F.grid_sample(classes[:, None].float(), grid, mode="nearest", **kw)
        out_cls = c[:, 0].round().long()
    return out_img, out_cont, out_cls


def jitter_intensity(image: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly change gamma, contrast and brightness and add noise.

    Parameters
    ----------
    image : torch.Tensor
        ``(N, C, H, W)`` images normalised to about ``[0, 1]``.
    strength : float
        0 (no change) to 1 (strong jitter).
    generator : torch.Generator, optional
        Random generator (on the CPU).

    Returns
    -------
    torch.Tensor
        The jittered images.
    """
    if strength <= 0:
        return image
    n = image.shape[0]
    dev = image.device

    def rand() -> torch.Tensor:
        return torch.rand(n, 1, 1, 1, generator=generator).to(dev)

    gamma = torch.exp((rand() * 2 - 1) * 0.4 * strength)
    out = image.clamp(0, None) ** gamma + (image - image.clamp(0, None))
    contrast = 1 + (rand() * 2 - 1) * 0.4 * strength
    brightness = (rand() * 2 - 1) * 0.2 * strength
    out = out * contrast + brightness
    noise = rand() * 0.05 * strength
    gen = generator if dev.type == "cpu" or generator is None else device_generator(generator, dev)
    out = out + noise * torch.randn(out.shape, generator=gen, device=dev)
    return out


def device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator | None:
    """A generator on ``device`` seeded from one draw of the CPU ``generator``.

    Noise drawn where the patches live (not made on the CPU and copied) stays reproducible from the
    run's seed: the device's global generator would follow whatever else drew from it. ``None``
    where the device has no generator of its own (its global one is used then).
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    try:
        out = torch.Generator(device=device)
    except RuntimeError:
        return None
    return out.manual_seed(seed)


def mix_stains(image: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mix the colour channels of stained-slide patches at random, as other stains and scanners do.

    Each channel is normalised on its own before the network, which removes a slide's per-channel
    gain and offset; what is left of a stain change is its hue: how much of each dye each channel
    sees. Each patch's absorbance-like planes ``1 - x`` (white background at 0, dye > 0) are
    multiplied by a random 3x3 matrix whose rows sum to one: every channel takes in up to
    ``0.3 * strength`` of each other channel (or gives it up), so neutral greys and the white
    background stay as they are while the dyes' colours change.

    Parameters
    ----------
    image : torch.Tensor
        ``(N, C, H, W)`` patches normalised to about ``[0, 1]``; changed only when ``C == 3``.
    strength : float
        0 (no change) to 1 (strong mixing).
    generator : torch.Generator, optional
        Random generator (on the CPU).

    Returns
    -------
    torch.Tensor
        The mixed patches (the input itself when nothing changes).
    """
    n, c = image.shape[:2]
    if strength <= 0 or c != 3:
        return image
    off = (torch.rand(n, 3, 3, generator=generator) * 2 - 1) * 0.3 * strength
    off = off * (1 - torch.eye(3))
    mix = (off + torch.diag_embed(1 - off.sum(2))).to(image.device, image.dtype)
    return 1 - torch.einsum("ncd,ndhw->nchw", mix, 1 - image)


def random_blur(image: torch.Tensor, max_sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Blur half of the patches with a Gaussian of random width (the others unchanged).

    Parameters
    ----------
    image : torch.Tensor
        ``(N, C, H, W)`` images.
    max_sigma : float
        Largest standard deviation in pixels (0: no change).
    generator : torch.Generator, optional
        Random generator (on the CPU).

    Returns
    -------
    torch.Tensor
        The images, half of them blurred (mirrored borders).
    """
    if max_sigma <= 0:
        return image
    n, c = image.shape[:2]
    sigma = torch.rand(n, generator=generator) * max_sigma
    sigma = torch.where(torch.rand(n, generator=generator) < 0.5, sigma, torch.zeros(n))
    r = int(math.ceil(3 * max_sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(x[None] ** 2) / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    k = torch.where(sigma[:, None] > 0.05, k, (x[None] == 0).float())  # no blur: identity kernel
    k = (k / k.sum(1, keepdim=True)).to(image.device, image.dtype)
    k = k.repeat_interleave(c, 0)  # one kernel per (patch, channel)
    h, w = image.shape[-2:]
    out = F.pad(image.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    out = F.conv2d(out, k[:, None, None, :], groups=n * c)
    out = F.conv2d(out, k[:, None, :, None], groups=n * c)
    return out.reshape(n, c, h, w)
