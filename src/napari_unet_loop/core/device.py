"""Choosing the compute device: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import platform

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


class DeviceError(RuntimeError):
    """The requested device is not available on this machine."""


def available_devices() -> list[str]:
    """Return the devices this machine offers, fastest first (``cpu`` always last)."""
    out = []
    if torch.cuda.is_available():
        out += [f"cuda:{i}" if i else "cuda" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    out.append("cpu")
    return out


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn a device request into a :class:`torch.device`.

    Parameters
    ----------
    name : str or torch.device or None
        ``"auto"`` (or ``None``) picks CUDA, then MPS, then CPU; ``"cpu"``,
        ``"cuda"``, ``"cuda:N"`` and ``"mps"`` ask for one.

    Returns
    -------
    torch.device
        The device to use.

    Raises
    ------
    DeviceError
        If the requested device does not exist here.
    """
    if name is None or str(name) == "auto":
        return torch.device(available_devices()[0])
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"unknown device {name!r}: use one of auto, cpu, cuda, cuda:N, mps") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was requested but no CUDA GPU is usable here (no NVIDIA GPU, driver, "
                "or a CPU-only build of PyTorch); choose the device cpu or auto"
            )
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"cuda:{index} was requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(
                "Apple MPS was requested but is not available (it needs an Apple-silicon Mac "
                "with macOS 12.3+); choose the device cpu or auto"
            )
    elif dev.type != "cpu":
        raise DeviceError(f"unsupported device {name!r}: use one of auto, cpu, cuda, cuda:N, mps")
    return dev


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Return the autocast dtype for ``precision`` on ``device`` (``None``: full fp32).

    Parameters
    ----------
    device : torch.device
        The compute device.
    precision : str
        ``"auto"`` (bf16 on CUDA if supported else fp16; fp32 elsewhere),
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware, so that bf16 autocast can pay on it.

    On x86, AVX-512 BF16 or AMX instructions. oneDNN also runs bf16 on AVX-512 CPUs without
    them (``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` says yes there), emulated: a
    training step of the shipped network then took 2.5x as long as in fp32 (0.74 against
    0.30 s for 8 patches of 128 px, a 2-core Xeon with AVX-512 but no BF16; docs/performance.md).
    Elsewhere (ARM), oneDNN's own answer, which needs the hardware's bf16 there.

    Returns
    -------
    bool
        ``True`` only where bf16 is known to run in hardware.
    """
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False  # a PyTorch that cannot say: fp32, which is never the slow choice
