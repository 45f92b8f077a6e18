"""Overlap-tiled prediction: normalised image -> per-pixel network outputs.

:func:`iter_predict` is a generator that yields :class:`Progress` after every
batch of tiles (so a GUI worker can show progress and cancel between batches) and
returns the ``(C, H, W)`` outputs: class probabilities (softmax) followed by the
distance map (sigmoid). :func:`predict` runs it to the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import torch

from .device import autocast_dtype
from .tiling import TileGrid, halo_for, round_up
from .unet import UNet, receptive_field

TILE_CHOICES = (128, 256, 384, 512, 768, 1024, 1536, 2048)
# test-time augmentation "auto": on for images of at most this many pixels as the network sees them
# (after rescaling to the model's object size), where 4x the network time is a fraction of a second
# on a CPU; chosen on its own decision set (docs/model.md, *Test-time augmentation for small images*)
TTA_AUTO_PIXELS = 512 * 512
TTA_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class Progress:
    """Progress of a long computation.

    Attributes
    ----------
    done, total : int
        Units finished and units in all.
    stage : str
        What is being done, for display.
    """

    done: int
    total: int
    stage: str = "predict"


def bytes_per_pixel(net: UNet, dtype: torch.dtype | None) -> int:
    """Rough peak memory per input pixel of one forward pass (measured on CPU: ~44 x width)."""
    return (48 if dtype is None else 26) * net.config.base_width


def free_memory(device: torch.device) -> int:
    """Bytes of memory free for prediction on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        try:
            rec = torch.mps.recommended_max_memory()
            return int(rec - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return 4 << 30
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def auto_tile_size(
    net: UNet, device: torch.device, precision: str = "auto", memory: int | None = None
) -> tuple[int, int]:
    """Choose the core tile side and batch size from free memory.

    Parameters
    ----------
    net : UNet
        The network.
    device : torch.device
        Where it runs.
    precision : str
        As for :func:`napari_unet_loop.core.device.autocast_dtype`.
    memory : int, optional
        Bytes free; measured when omitted.

    Returns
    -------
    tuple of int
        ``(core_tile_side, batch_size)``.
    """
    if memory is None:
        memory = free_memory(device)
    # a quarter of free memory on the CPU (the image and labels need the rest), half on GPUs
    budget = memory // (4 if device.type == "cpu" else 2)
    if device.type == "cpu":
        budget = min(budget, 3 << 30)
    per_px = bytes_per_pixel(net, autocast_dtype(device, precision))
    halo = halo_for(receptive_field(net.config.depth), net.config.size_multiple)
    max_core = 1024 if device.type == "cpu" else 2048
    core = TILE_CHOICES[0]
    for c in TILE_CHOICES:
        if c <= max_core and (c + 2 * halo) ** 2 * per_px <= budget:
            core = c
    tile_px = (core + 2 * halo) ** 2 * per_px
    batch = 1 if device.type == "cpu" else int(max(1, min(32, budget // tile_px)))
    return core, batch


def model_halo(net: UNet) -> int:
    """Halo (pixels each side) that makes tiled output equal whole-image output."""
    return halo_for(receptive_field(net.config.depth), net.config.size_multiple)


def auto_tta(tta: bool | str, pixels: float) -> bool:
    """Whether to average over flips: ``tta`` as given (``"on"``/``"off"`` as ``True``/``False``).

    ``"auto"``: on images of at most :data:`TTA_AUTO_PIXELS` pixels as the network sees them (``pixels``).

    Raises
    ------
    ValueError
        For a setting that is none of ``True``, ``False``, ``"auto"``, ``"on"``, ``"off"``.

    Examples
    --------
    >>> auto_tta("auto", 256 * 256), auto_tta("auto", 1024 * 1024), auto_tta(False, 100)
    (True, False, False)
    """
    if isinstance(tta, bool):
        return tta
    if tta not in TTA_CHOICES:
        raise ValueError(f"test-time augmentation must be one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    return tta == "on" or (tta == "auto" and pixels <= TTA_AUTO_PIXELS)


def iter_predict(
    net: UNet,
    image: np.ndarray,
    device: torch.device | str = "cpu",
    tile: int | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    out_dtype: np.dtype | type = np.float32,
    tta: bool = False,
) -> Generator[Progress, None, np.ndarray]:
    """Predict per-pixel outputs for one normalised image, tile by tile.

    Parameters
    ----------
    net : UNet
        The network (put in eval mode and moved to ``device`` here).
    image : numpy.ndarray
        Normalised ``(H, W)`` or ``(C, H, W)`` float image.
    device : torch.device or str
        Compute device.
    tile : int, optional
        Core tile side, a multiple of ``2**depth``; automatic when omitted. Any
        tile size gives the same result, to floating-point rounding.
    batch_size : int, optional
        Tiles per forward pass; automatic when omitted.
    precision : str
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).
    out_dtype : numpy dtype
        Data type of the returned outputs.
    tta : bool
        Test-time augmentation: average the outputs of the four flips of each tile
        (4x the work; smoother maps, fewer spurious splits). Flips keep the pooling grid,
        so tiled still equals whole-image output.

    Yields
    ------
    Progress
        After each batch of tiles.

    Returns
    -------
    numpy.ndarray
        ``(n_classes + n_dist, H, W)`` class probabilities then sigmoid distances.
    """
    device = torch.device(device)
    if image.ndim == 2:
        image = image[None]
    cfg = net.config
    if image.shape[0] != cfg.in_channels:
        raise ValueError(f"the model expects {cfg.in_channels} input channel(s), the image has {image.shape[0]}")
    m = cfg.size_multiple
    if tile is None or batch_size is None:
        auto_core, auto_batch = auto_tile_size(net, device, precision)
    core = auto_core if tile is None else round_up(int(tile), m)
    batch = batch_size or auto_batch
    out = np.empty((cfg.out_channels, *image.shape[-2:]), dtype=out_dtype)
    dtype = autocast_dtype(device, precision)
    net.eval().to(device)
    if device.type in ("cuda", "cpu"):
        # channels-last convolutions: on a 2-core CPU 1.7x faster in fp32 (docs/performance.md)
        net.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one tile shape per run: autotuning pays off
    while True:
        try:
            yield from _predict_tiles(net, image, out, device, core, batch, dtype, tta)
            return out
        except torch.OutOfMemoryError as exc:
            # retry smaller: halve the batch, then the tile; the result is the same
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch > 1:
                batch //= 2
            elif core > 2 * m:
                core = max(m, round_up(core // 2, m))
            else:
                raise MemoryError(
                    f"out of memory on {device} even with one {core} px tile; use the CPU or close other programs"
                ) from exc


def _predict_tiles(
    net: UNet,
    image: np.ndarray,
    out: np.ndarray,
    device: torch.device,
    core: int,
    batch: int,
    dtype: torch.dtype | None,
    tta: bool,
) -> Generator[Progress, None, None]:
    """Fill ``out`` tile batch by tile batch; yields progress after each batch."""
    cfg = net.config
    grid = TileGrid(tuple(image.shape[-2:]), core, model_halo(net), cfg.size_multiple)
    tiles = grid.tiles()
    cuda = device.type == "cuda"
    yield Progress(0, len(tiles))
    for start in range(0, len(tiles), batch):
        chunk = tiles[start : start + batch]
        x = torch.from_numpy(np.stack([grid.read(image, t) for t in chunk]).astype(np.float32, copy=False))
        # inference mode only around the computation, never across a yield: it is thread-local state,
        # and a generator abandoned while suspended inside it would leave it on in the worker thread
        with torch.inference_mode():
            if cuda:  # pinned memory: the copy to the card overlaps with reading the next tiles
                x = x.pin_memory().to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            else:
                x = x.to(device)
                if device.type == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
            y = _forward(net, x, dtype, cfg.n_classes, tta).cpu().numpy()
        for t, yt in zip(chunk, y):
            out[:, t.y : t.y + t.h, t.x : t.x + t.w] = grid.core_of(yt, t)
        yield Progress(min(start + batch, len(tiles)), len(tiles))


FLIPS = ((), (-1,), (-2,), (-2, -1))


def _forward(net: UNet, x: torch.Tensor, dtype: torch.dtype | None, n_classes: int, tta: bool) -> torch.Tensor:
    """Probabilities of a batch of tiles, averaged over flips with ``tta``."""
    out = None
    for dims in FLIPS if tta else ((),):
        xi = torch.flip(x, dims) if dims else x
        with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            y = net(xi)
        y = outputs_to_probabilities(y.float(), n_classes)
        y = torch.flip(y, dims) if dims else y
        out = y if out is None else out + y
    return out / (len(FLIPS) if tta else 1)


def outputs_to_probabilities(logits: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Softmax over the class logits, sigmoid over the regression channels."""
    cls = torch.softmax(logits[:, :n_classes], dim=1)
    if logits.shape[1] == n_classes:
        return cls
    return torch.cat([cls, torch.sigmoid(logits[:, n_classes:])], dim=1)


def run(gen: Generator[Progress, None, np.ndarray], callback: Callable[[Progress], None] | None = None):
    """Run a progress generator to the end and return its value.

    Parameters
    ----------
    gen : generator
        A generator yielding :class:`Progress` and returning a result.
    callback : callable, optional
        Called with every :class:`Progress`.
    """
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(p)


def predict(net: UNet, image: np.ndarray, **kwargs) -> np.ndarray:
    """Run :func:`iter_predict` to the end and return the outputs."""
    return run(iter_predict(net, image, **kwargs))
