import pytest
import torch

from napari_unet_loop.core import device
from napari_unet_loop.core.device import (
    DEVICE_CHOICES,
    DeviceError,
    autocast_dtype,
    available_devices,
    cpu_bf16_native,
    resolve_device,
)

HAS_CUDA = torch.cuda.is_available()
_mps = getattr(torch.backends, "mps", None)
HAS_MPS = bool(_mps is not None and _mps.is_available())


def test_cpu_always_works():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert available_devices()[-1] == "cpu"


def test_auto_picks_the_fastest_available():
    expected = torch.device(available_devices()[0])
    assert resolve_device("auto") == expected
    assert resolve_device(None) == expected
    if not HAS_CUDA and not HAS_MPS:
        assert resolve_device() == torch.device("cpu")
    if HAS_CUDA:
        assert resolve_device().type == "cuda"


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_unavailable_is_a_clear_error(name):
    with pytest.raises(DeviceError, match="CUDA was requested") as info:
        resolve_device(name)
    assert "cpu" in str(info.value)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_index_out_of_range():
    n = torch.cuda.device_count()
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(DeviceError, match=f"only {n} GPU"):
        resolve_device(f"cuda:{n}")


@pytest.mark.skipif(HAS_MPS, reason="MPS is available here")
def test_mps_unavailable_is_a_clear_error():
    with pytest.raises(DeviceError, match="MPS was requested") as info:
        resolve_device("mps")
    assert "cpu" in str(info.value)


@pytest.mark.parametrize("name", ["gpu", "banana", "", "cuda:x", "meta", "xpu"])
def test_unknown_devices_are_device_errors(name):
    with pytest.raises(DeviceError, match="device"):
        resolve_device(name)


def test_device_error_is_a_runtime_error():
    assert issubclass(DeviceError, RuntimeError)
    assert set(DEVICE_CHOICES) == {"auto", "cpu", "cuda", "mps"}


def test_autocast_dtype():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "auto") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert autocast_dtype(cpu, "fp16") is torch.float16
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(cpu, "fp8")


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_autocast_dtype_on_cuda():
    assert autocast_dtype(torch.device("cuda"), "auto") in (torch.bfloat16, torch.float16)


@pytest.mark.parametrize(
    ("machine", "avx512_bf16", "amx", "onednn", "native"),
    [
        ("x86_64", False, False, True, False),  # AVX-512 without BF16: oneDNN emulates bf16, slowly
        ("x86_64", True, False, True, True),
        ("AMD64", False, True, True, True),
        ("aarch64", False, False, True, True),  # ARM: oneDNN's answer needs the hardware there
        ("aarch64", False, False, False, False),
    ],
)
def test_cpu_bf16_native_needs_bf16_in_hardware(monkeypatch, machine, avx512_bf16, amx, onednn, native):
    monkeypatch.setattr(device.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    assert cpu_bf16_native() is native


def test_cpu_bf16_native_is_false_when_pytorch_cannot_say(monkeypatch):
    monkeypatch.setattr(device.platform, "machine", lambda: "x86_64")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert cpu_bf16_native() is False
