"""Choosing the compute device: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

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
