import pytest
import torch

from napari_unet_loop.core.device import (
    DEVICE_CHOICES,
    DeviceError,
    autocast_dtype,
    available_devices,
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
