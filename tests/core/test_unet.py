import pytest
import torch

from napari_unet_loop.core.tiling import halo_for
from napari_unet_loop.core.unet import UNet, UNetConfig, receptive_field


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 0},
        {"depth": 7},
        {"base_width": 0},
        {"norm": "layer"},
        {"in_channels": 0},
        {"n_classes": 0},
        {"n_dist": -1},
    ],
)
def test_config_rejects_invalid_values(kwargs):
    with pytest.raises(ValueError):
        UNetConfig(**kwargs)


def test_config_defaults_and_derived_sizes():
    cfg = UNetConfig()
    assert (cfg.depth, cfg.base_width, cfg.norm) == (4, 16, "batch")
    assert cfg.out_channels == 4
    assert cfg.size_multiple == 16
    assert UNetConfig(depth=2, n_classes=2, n_dist=0).out_channels == 2
    assert UNetConfig(depth=3).size_multiple == 8


def test_config_dict_round_trip_and_unknown_keys():
    cfg = UNetConfig(in_channels=2, depth=3, base_width=8, norm="group")
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown architecture keys"):
        UNetConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_forward_shape(norm):
    torch.manual_seed(0)
    cfg = UNetConfig(in_channels=2, n_classes=3, n_dist=1, depth=2, base_width=4, norm=norm)
    net = UNet(cfg).eval()
    with torch.no_grad():
        y = net(torch.randn(3, 2, 16, 24))
    assert y.shape == (3, 4, 16, 24)
    assert torch.isfinite(y).all()


def test_forward_rejects_sizes_not_multiple_of_two_to_depth():
    net = UNet(UNetConfig(depth=3, base_width=4)).eval()
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 1, 16, 20))


def test_norm_layers_and_bias():
    batch = UNet(UNetConfig(depth=1, base_width=4, norm="batch"))
    group = UNet(UNetConfig(depth=1, base_width=4, norm="group"))
    plain = UNet(UNetConfig(depth=1, base_width=4, norm="none"))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in batch.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in group.modules())
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) for m in plain.modules())
    # convolutions followed by a normalisation need no bias; without one they do
    assert batch.down[0][0].bias is None
    assert plain.down[0][0].bias is not None


def test_encoder_is_the_contracting_path():
    net = UNet(UNetConfig(depth=3, base_width=4))
    enc = net.encoder
    assert len(enc) == 4
    assert enc[-1] is net.bottom
    enc_params = {id(p) for m in enc for p in m.parameters()}
    assert not any(id(p) in enc_params for p in net.merge.parameters())
    assert not any(id(p) in enc_params for p in net.head.parameters())


def test_receptive_field_values():
    # depth 1 by hand: 1 + (2 convs * 2 + pool 1) + bottom (2 convs * 2 * 2) + (up 1 + 2 convs * 2)
    assert receptive_field(1) == 1 + 5 + 8 + 5
    assert receptive_field(2, convs_per_block=1) < receptive_field(2)
    values = [receptive_field(d) for d in range(1, 7)]
    assert values == sorted(values) and len(set(values)) == 6


def _empirical_reach(depth: int, size: int) -> int:
    """Largest distance (either axis) from an output pixel to an input pixel that influences it."""
    torch.manual_seed(depth)
    net = UNet(UNetConfig(depth=depth, base_width=4, norm="none")).double().eval()
    reach = 0
    m = 2**depth
    centre = size // 2
    for k in range(m):  # every position relative to the pooling grid
        p = centre + k
        x = torch.randn(1, 1, size, size, dtype=torch.float64, requires_grad=True)
        net(x)[0, 0, p, p].backward()
        ys, xs = torch.nonzero(x.grad[0, 0], as_tuple=True)
        assert ys.numel() > 0
        reach = max(reach, int((ys - p).abs().max()), int((xs - p).abs().max()))
    return reach


@pytest.mark.parametrize("depth, size", [(2, 80), (3, 144)])
def test_receptive_field_bounds_the_empirical_field(depth, size):
    rf = receptive_field(depth)
    assert size // 2 + 2**depth + rf // 2 < size  # the field fits inside the input
    reach = _empirical_reach(depth, size)
    # nothing outside rf / 2 of an output pixel influences it ...
    assert reach <= rf / 2
    # ... and the bound is not absurdly loose (the gradient really spreads out)
    assert reach >= rf / 2 - 2**depth
    # the halo used for tiling covers it
    assert halo_for(rf, 2**depth) >= reach
