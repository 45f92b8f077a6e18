"""Bounded, seeded fuzzing: any input gives a result or a one-line error, never a traceback.

Over the image readers (random and damaged files), the model-card loader (cards with random
fields and types) and the command line's argument paths (random option values).
"""

from __future__ import annotations

import json
import shutil
import string

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from napari_unet_loop.cli import main
from napari_unet_loop.core import model_files
from napari_unet_loop.core.unet import UNetConfig
from napari_unet_loop.io.images import ReadError, read_image
from napari_unet_loop.io.readers import read_labels
from napari_unet_loop.sample_data import sample_path

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _valid_bytes(suffix: str) -> bytes:
    image = np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) % 251
    path = f"<bytes>{suffix}"
    if suffix == ".tif":
        import io

        buf = io.BytesIO()
        tifffile.imwrite(buf, image.astype(np.uint8))
        return buf.getvalue()
    return iio.imwrite(path, image.astype(np.uint8), extension=suffix)


@seed(20261201)
@FUZZ
@given(
    suffix=st.sampled_from([".png", ".tif", ".jpg"]),
    data=st.binary(max_size=2048),
    damage=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 4096)),
)
def test_readers_give_an_image_or_a_read_error(tmp_path, suffix, data, damage, cut):
    raw = bytearray(_valid_bytes(suffix) if not data else data)
    for pos, value in damage:
        if raw:
            raw[pos % len(raw)] = value
    if cut is not None:
        raw = raw[:cut]
    path = tmp_path / f"f{suffix}"
    path.write_bytes(bytes(raw))
    try:
        out = read_image(path)
    except ReadError as exc:
        assert "\n" not in str(exc).strip()
    else:
        assert isinstance(out, np.ndarray)
    try:
        read_labels(str(path))
    except (ReadError, ValueError, OSError) as exc:
        assert str(exc)


_SMALL = UNetConfig(depth=2, base_width=4)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(string.printable, max_size=12),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(string.ascii_lowercase, max_size=6), st.integers(-3, 3), max_size=3),
)


@seed(20261202)
@FUZZ
@given(
    section=st.sampled_from(["architecture", "normalization", "postprocess", "top"]),
    key=st.sampled_from(
        [
            "depth",
            "base_width",
            "in_channels",
            "n_classes",
            "n_dist",
            "norm",
            "low",
            "high",
            "fg_threshold",
            "seed_threshold",
            "min_size",
            "dist_sigma",
            "training",
            "metrics",
            "modality",
            "name",
            "parent",
            "format_version",
            "description",
            "extra",
        ]
    ),
    value=_values,
)
def test_model_cards_load_or_give_a_model_error(tmp_path, section, key, value):
    model = model_files.new_model(_SMALL, name="fuzz")
    card = model.card.to_dict()
    if section == "top":
        card[key] = value
    else:
        card[section] = {**card[section], key: value}
    state = {k: v.contiguous() for k, v in model.net.state_dict().items()}
    path = tmp_path / "m.safetensors"
    save_file(state, str(path), metadata={model_files.CARD_KEY: json.dumps(card)})
    try:
        loaded = model_files.load(path)
    except model_files.ModelError as exc:
        assert str(exc)
    else:
        assert loaded.net.config == loaded.card.architecture


@pytest.fixture(scope="module")
def one_image(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_cli")
    image = iio.imread(sample_path("nuclei_small"))[:48, :56]
    iio.imwrite(folder / "img.png", image)
    labels = iio.imread(sample_path("nuclei_small", labels=True))[:48, :56]
    (folder / "labels").mkdir()
    tifffile.imwrite(folder / "labels" / "img.tif", labels)
    return folder


_option_values = st.one_of(
    st.sampled_from(["0", "-1", "1", "7", "64", "1e9", "nan", "inf", "-0.5", "0.5", "abc", "", "auto", "cuda:9"]),
    st.text(string.ascii_letters + string.digits + ".-:", max_size=6),
)


@seed(20261203)
@FUZZ
@given(
    command=st.sampled_from(["segment", "evaluate"]),
    options=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "--tile",
                    "--block",
                    "--fg-threshold",
                    "--seed-threshold",
                    "--min-size",
                    "--channel",
                    "--axes",
                    "--modality",
                    "--device",
                    "--precision",
                    "--model",
                ]
            ),
            _option_values,
        ),
        max_size=3,
    ),
)
def test_command_line_options_give_a_result_or_one_line(one_image, tiny_model_path, capsys, command, options):
    out = one_image / "out"
    shutil.rmtree(out, ignore_errors=True)
    if command == "segment":
        args = ["segment", str(one_image / "img.png"), "-o", str(out), "--overwrite"]
    else:
        args = ["evaluate", str(one_image), str(one_image / "labels"), "--json"]
    if not any(o == "--model" for o, _ in options):
        args += ["--model", str(tiny_model_path)]
    for option, value in options:
        args += [option, value]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own one-line usage error
        assert exc.code == 2
        code = 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 1, 2)
    if code != 0:
        assert "error" in err.lower()
