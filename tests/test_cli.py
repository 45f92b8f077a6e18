"""The headless commands, as a user runs them (in-process through ``main``)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_unet_loop.cli import main
from napari_unet_loop.sample_data import SAMPLES, sample_path


@pytest.fixture
def folders(tmp_path):
    """Sample images and their ground truth in two folders (labels as TIFF, images as PNG)."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for name in ("nuclei_small", "nuclei_he_stain"):
        shutil.copy(sample_path(name), images / f"{name}.png")
        tifffile.imwrite(labels / f"{name}.tif", iio.imread(sample_path(name, labels=True)))
    return images, labels


def test_segment_writes_one_label_tiff_per_input(tmp_path, folders, tiny_model_path, capsys):
    images, _ = folders
    out = tmp_path / "out"
    assert main(["segment", str(images), "-o", str(out), "--model", str(tiny_model_path), "--tile", "128"]) == 0
    for name in ("nuclei_small", "nuclei_he_stain"):
        with tifffile.TiffFile(out / f"{name}.tif") as tif:
            data = tif.asarray()
            assert tif.is_imagej
        assert data.dtype == np.uint16
        assert data.shape == iio.imread(images / f"{name}.png").shape[:2]


def test_a_truncated_tiff_is_one_line_that_says_so(tmp_path, tiny_model_path, capsys):
    bad = tmp_path / "trunc.tif"
    bad.write_bytes(b"II*\x00\x08\x00\x00\x00\x00\x00")  # a header and nothing after it
    assert main(["segment", str(bad), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path)]) == 1
    err = capsys.readouterr().err
    assert "trunc.tif holds no pixels" in err and "truncated or damaged" in err
    assert "<tifffile" not in err  # tifffile's own warnings, line after line


def test_one_bad_file_of_a_folder_fails_alone(tmp_path, folders, tiny_model_path, capsys, monkeypatch):
    """A TIFF of no planes, or any failure of one file, is that file's error: the others are written, exit 1
    (it ended the batch with 'need at least one array to stack', exit 2)."""
    import napari_unet_loop.parallel.files as files_mod

    images, _ = folders
    tifffile.imwrite(images / "empty.tif", np.zeros((0, 40, 40), np.uint8))
    out = tmp_path / "o"
    assert main(["segment", str(images), "-o", str(out), "--model", str(tiny_model_path)]) == 1
    err = capsys.readouterr().err
    assert "error: " in err and "empty.tif holds no pixels" in err and "1 of 3 image(s) could not" in err
    assert sorted(p.name for p in out.glob("*.tif")) == ["nuclei_he_stain.tif", "nuclei_small.tif"]
    real = files_mod.segment_file

    def fails_once(job, *args, **kwargs):
        if "nuclei_small" in job.path:
            raise RuntimeError("something unforeseen")
        return real(job, *args, **kwargs)

    (images / "empty.tif").unlink()
    monkeypatch.setattr(files_mod, "segment_file", fails_once)
    assert main(["segment", str(images), "-o", str(tmp_path / "p"), "--model", str(tiny_model_path)]) == 1
    assert "something unforeseen" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "p").glob("*.tif")] == ["nuclei_he_stain.tif"]


def test_segment_refuses_to_overwrite(tmp_path, folders, tiny_model_path, capsys):
    images, _ = folders
    args = ["segment", str(images / "nuclei_small.png"), "-o", str(tmp_path), "--model", str(tiny_model_path)]
    assert main(args) == 0
    before = (tmp_path / "nuclei_small.tif").read_bytes()
    assert main(args) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert (tmp_path / "nuclei_small.tif").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0


def test_segment_never_writes_over_its_input_images_even_with_overwrite(tmp_path, folders, tiny_model_path, capsys):
    """Labels written into the images' own folder in their own format would replace the images."""
    import shutil

    images, _ = folders
    shutil.copytree(images, tmp_path / "in")
    image = tmp_path / "in" / "nuclei_small.png"
    before = image.read_bytes()
    args = ["segment", str(image), "-o", str(tmp_path / "in"), "--model", str(tiny_model_path), "--format", "png"]
    assert main([*args, "--overwrite"]) == 2
    assert "would replace the input image" in capsys.readouterr().err and image.read_bytes() == before
    # -o naming one file: one image may be written there (again with --overwrite), several may not
    one = ["segment", str(image), "-o", str(tmp_path / "out" / "x.tif"), "--model", str(tiny_model_path)]
    assert main(one) == 0 and main([*one, "--overwrite"]) == 0
    two = [*one[:2], str(tmp_path / "in" / "nuclei_he_stain.png"), *one[2:], "--overwrite"]
    assert main(two) == 2
    assert "names one file, and 2 image(s) x 1 format(s) would all be written to it" in capsys.readouterr().err


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_bf16_hardware_says_it_is_slower(
    tmp_path, folders, tiny_model_path, capsys, monkeypatch, native
):
    import importlib

    monkeypatch.setattr(importlib.import_module("napari_unet_loop.cli.main"), "cpu_bf16_native", lambda: native)
    images, _ = folders
    args = ["segment", str(images / "nuclei_small.png"), "-o", str(tmp_path), "--model", str(tiny_model_path)]
    assert main([*args, "--device", "cpu", "--precision", "bf16"]) == 0
    assert ("runs emulated, slower than fp32" in capsys.readouterr().err) is not native
    assert main([*args, "--device", "cpu", "--overwrite"]) == 0  # auto: nothing to say
    assert "emulated" not in capsys.readouterr().err


def test_segment_other_formats(tmp_path, folders, tiny_model_path):
    images, _ = folders
    args = ["segment", str(images / "nuclei_small.png"), "-o", str(tmp_path), "--model", str(tiny_model_path)]
    assert main([*args, "--format", "png,csv", "--format", "roi"]) == 0
    for suffix in (".png", ".csv", ".zip"):
        assert (tmp_path / f"nuclei_small{suffix}").exists()
        assert (tmp_path / f"nuclei_small{suffix}.json").exists()
    header = (tmp_path / "nuclei_small.csv").read_text().splitlines()[0]
    assert "mean_intensity" in header  # the segmented image gives the intensities


def test_segment_z_stack_tiff(tmp_path, tiny_model_path):
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, (3, 64, 80), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    out = tmp_path / "o"
    assert main(["segment", str(tmp_path / "stack.tif"), "-o", str(out), "--model", str(tiny_model_path)]) == 0
    assert tifffile.imread(tmp_path / "o" / "stack.tif").shape == (3, 64, 80)


def test_evaluate_json(folders, tiny_model_path, capsys):
    images, labels = folders
    shutil.copy(images / "nuclei_small.png", images / "no_truth.png")  # left out, and said so
    assert main(["evaluate", str(images), str(labels), "--model", str(tiny_model_path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert f"1 image(s) in {images} have no label file and are left out: no_truth.png" in err
    report = json.loads(out)
    for key in ("n_images", "ap50", "ap75", "f1_50", "pq", "seg", "per_image"):
        assert key in report
    assert report["n_images"] == 2
    assert {p["name"] for p in report["per_image"]} == {"nuclei_small", "nuclei_he_stain"}
    assert 0 <= report["ap50"] <= 1


def test_evaluate_reads_truth_as_object_ids_fitted_to_the_image(tmp_path, folders, tiny_model_path, capsys):
    """A (Y, X, 1) mask scores as the 2D truth it is; -1 background or a probability map is refused."""
    images, labels = folders
    args = ["evaluate", str(images), str(labels), "--model", str(tiny_model_path), "--json"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    for f in labels.glob("*.tif"):
        tifffile.imwrite(f, tifffile.imread(f)[..., None])
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["ap50"] == plain["ap50"]
    f = labels / "nuclei_small.tif"
    truth = tifffile.imread(f)[..., 0]
    tifffile.imwrite(f, np.where(truth > 0, 255, 0).astype(np.uint8))  # a binary mask: every nucleus one id
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "nuclei_small.tif is a mask (one id in separate pieces)" in captured.err
    masked = json.loads(captured.out)
    small = next(e for e in masked["per_image"] if e["name"] == "nuclei_small")
    assert 1 < small["n_true"] <= len(np.unique(truth)) - 1  # its nuclei (touching ones as one), not one object
    tifffile.imwrite(f, truth.astype(np.int32) - 1)
    assert main(args) == 2
    assert "nuclei_small.tif holds negative values (down to -1)" in capsys.readouterr().err


def test_a_planar_rgb_tiff_segments_as_one_colour_image(tmp_path, folders, tiny_model_path):
    images, _ = folders
    rgb = iio.imread(images / "nuclei_he_stain.png")[..., :3]
    planar = np.moveaxis(rgb, -1, 0)  # as other software writes it (tifffile's own may be a Z stack: left so)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate", metadata=None)
    out = tmp_path / "o"
    assert main(["segment", str(tmp_path / "planar.tif"), "-o", str(out), "--model", str(tiny_model_path)]) == 0
    assert tifffile.imread(out / "planar.tif").shape == rgb.shape[:2]  # not three grey planes


def test_segment_notes_a_tiff_of_several_image_series(tmp_path, folders, tiny_model_path, capsys):
    """Only the first series of a multi-position TIFF is segmented, and the log says so."""
    images, _ = folders
    grey = iio.imread(images / "nuclei_small.png")
    grey = grey[..., 0] if grey.ndim == 3 else grey
    with tifffile.TiffWriter(tmp_path / "positions.ome.tif", ome=True) as tif:
        tif.write(grey)
        tif.write(grey[:64, :64])
    args = ["segment", str(tmp_path / "positions.ome.tif"), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path)]
    assert main(args) == 0
    assert "positions.ome.tif holds 2 image series; only the first was segmented" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "one.tif", grey)
    assert main(["segment", str(tmp_path / "one.tif"), "-o", str(tmp_path / "p"), "--model", str(tiny_model_path)]) == 0
    assert "series" not in capsys.readouterr().err


def test_shipped_model_segments_sample_images_well(folders, shipped_model_available, capsys):
    if not shipped_model_available:
        pytest.skip("no shipped model in this checkout")
    images, labels = folders
    assert main(["evaluate", str(images), str(labels), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # both samples are in the held-out test split of the shipped model
    assert report["ap50"] > 0.7, report  # measured 0.76 (he_stain 0.60, small 0.84)


def test_shipped_model_uses_its_brightfield_thresholds_on_the_brightfield_sample(
    tmp_path, shipped_model_available, capsys
):
    if not shipped_model_available:
        pytest.skip("no shipped model in this checkout")
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    shutil.copy(sample_path("nuclei_brightfield"), images / "bf.png")
    shutil.copy(sample_path("nuclei_brightfield", labels=True), labels / "bf.png")
    assert main(["evaluate", str(images), str(labels), "--json", "--by-kind"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["per_image"][0]["kind"] == "brightfield"
    assert report["thresholds_by_kind"]["brightfield"]["fg_threshold"] > report["thresholds"]["fg_threshold"]
    # measured 0.871 with the brightfield thresholds, 0.774 with the general ones (background texture)
    assert report["ap50"] > 0.8, report


def test_train_from_scratch_then_segment_with_it(tmp_path, folders, capsys):
    images, labels = folders
    model = tmp_path / "mine.safetensors"
    args = [
        "train",
        str(images),
        str(labels),
        "--out",
        str(model),
        "--from",
        "scratch",
        "--steps",
        "3",
        "--depth",
        "2",
        "--width",
        "4",
        "--patch",
        "64",
        "--batch",
        "2",
    ]
    assert main(args) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["architecture"]["depth"] == 2 and card["training"]["steps"] == 3
    # what "auto" trained in, said and recorded: bf16 only where the CPU computes it in hardware
    used = card["training"]["precision_used"]
    assert used in ("fp32", "bf16") and f"training from scratch on cpu ({used})" in capsys.readouterr().err
    assert main(["segment", str(images), "-o", str(tmp_path / "o"), "--model", str(model)]) == 0
    assert main(args) == 2  # no silent overwrite of a model file
    assert "--overwrite" in capsys.readouterr().err


def test_a_colour_model_trains_and_segments_on_rgba_pngs(tmp_path, folders, capsys):
    """``train --in-channels 3`` on the sample PNGs (RGBA, as most exported slides), then ``segment`` with it."""
    images, labels = folders
    model = tmp_path / "colour.safetensors"
    tiny = ["--steps", "3", "--depth", "2", "--width", "4", "--patch", "64", "--batch", "2"]
    assert main(["train", str(images), str(labels), "--out", str(model), "--from", "scratch", "--in-channels", "3",
                 *tiny]) == 0  # fmt: skip
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["architecture"]["in_channels"] == 3 and card["modality"] == "none"  # R, G and B as they are
    out = tmp_path / "o"
    assert main(["segment", str(images / "nuclei_he_stain.png"), "-o", str(out), "--model", str(model)]) == 0
    assert tifffile.imread(out / "nuclei_he_stain.tif").shape == (256, 320)
    add = ["models", "--add-kind", f"fluorescence={model}", "--model", "default", "--out", str(tmp_path / "j")]
    assert main(add) == 2  # grey images have no colour to read: it stays a model of its own
    assert re.search(r"reads 3 input channel\(s\), \S+ 1; only H&E images may", capsys.readouterr().err)


def test_export_command(tmp_path, folders):
    _, labels = folders
    out = tmp_path / "exp"
    src = labels / "nuclei_small.tif"
    assert main(["export", str(src), "-o", str(out), "--format", "png,zarr", "--pixel-size", "0.5"]) == 0
    np.testing.assert_array_equal(iio.imread(out / "nuclei_small.png"), tifffile.imread(src))
    assert (out / "nuclei_small.zarr").is_dir()


# ---------------------------------------------------------------- bad input
def test_missing_model_file(tmp_path, folders, capsys):
    images, _ = folders
    assert main(["segment", str(images), "-o", str(tmp_path), "--model", str(tmp_path / "nope.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_corrupt_model_file(tmp_path, folders, capsys):
    images, _ = folders
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    assert main(["segment", str(images), "-o", str(tmp_path / "o"), "--model", str(bad)]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_model_for_another_channel_count(tmp_path, folders, capsys):
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.unet import UNetConfig

    path = model_files.save(model_files.new_model(UNetConfig(in_channels=3, depth=2, base_width=4)), tmp_path / "rgb3")
    images, _ = folders
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, iio.imread(images / "nuclei_small.png")[..., 0])
    assert main(["segment", str(grey), "-o", str(tmp_path / "o"), "--model", str(path)]) == 1
    assert "expects 3 channels" in capsys.readouterr().err


def test_device_that_is_not_there(tmp_path, folders, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    images, _ = folders
    assert main(["segment", str(images), "-o", str(tmp_path), "--device", "cuda"]) == 2
    assert "CUDA was requested" in capsys.readouterr().err


@pytest.mark.parametrize(
    "array, words",
    [
        (np.ones((1, 1), np.float32), "too small"),
        (np.where(np.eye(32, dtype=bool), np.nan, 1.0).astype(np.float32), "NaN"),
        (np.zeros((2, 3, 4, 32, 32), np.uint8), "cannot tell the axes"),
    ],
)
def test_unusable_images(tmp_path, tiny_model_path, capsys, array, words):
    tifffile.imwrite(tmp_path / "bad.tif", array)
    code = main(["segment", str(tmp_path / "bad.tif"), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path)])
    assert code != 0
    assert words in capsys.readouterr().err
    assert not (tmp_path / "o" / "bad.tif").exists()


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["segment", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    assert "holds no image files" in capsys.readouterr().err


def test_evaluate_without_matching_names(tmp_path, folders, capsys):
    images, _ = folders
    (tmp_path / "other").mkdir()
    iio.imwrite(tmp_path / "other" / "x.png", np.zeros((8, 8), np.uint16))
    assert main(["evaluate", str(images), str(tmp_path / "other"), "--json"]) == 2
    assert "no image" in capsys.readouterr().err


def test_sample_names_are_known():
    assert set(SAMPLES) == {"nuclei_fluorescence", "nuclei_he_stain", "nuclei_small", "nuclei_brightfield"}


def test_export_keeps_the_provenance_of_a_segmentation(tmp_path, folders, tiny_model_path):
    images, _ = folders
    seg = tmp_path / "seg"
    assert main(["segment", str(images / "nuclei_small.png"), "-o", str(seg), "--model", str(tiny_model_path)]) == 0
    assert main(["export", str(seg / "nuclei_small.tif"), "-o", str(tmp_path / "exp"), "--format", "png"]) == 0
    side = json.loads((tmp_path / "exp" / "nuclei_small.png.json").read_text())
    assert side["provenance"]["model_name"] == "tiny"


def test_tune_writes_thresholds_into_the_model(tmp_path, folders, tiny_model_path, capsys):
    from napari_unet_loop.core import model_files

    images, labels = folders
    model = tmp_path / "t.safetensors"
    m = model_files.load(tiny_model_path)
    m.card.metrics = {"test": {"ap50": 0.5}}
    model_files.save(m, model)
    assert main(["tune", str(images), str(labels), "--model", str(model), "--write"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["after"] >= out["before"]
    assert model_files.load(model).card.postprocess.to_dict() == out["thresholds"]
    assert out["objects"] > 0 and out["noise"] > 0  # one standard error of AP@0.5 on that many objects
    assert ("within the noise" in captured.err) == (out["after"] - out["before"] <= out["noise"])
    assert "test" not in model_files.load(model).card.metrics  # scores for other thresholds are dropped


def test_tune_for_one_imaging_kind_and_segment_with_it(tmp_path, folders, tiny_model_path, capsys):
    """``tune --kind he --write`` tunes on the H&E images only; segment then records what each kind uses."""
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.postprocess import PostprocessConfig

    images, labels = folders
    model = tmp_path / "t.safetensors"
    m = model_files.load(tiny_model_path)
    m.card.modality = "auto"
    model_files.save(m, model)
    assert main(["tune", str(images), str(labels), "--model", str(model), "--kind", "he", "--write"]) == 0
    out = json.loads(capsys.readouterr().out)
    card = model_files.load(model).card
    assert out["kind"] == "he" and card.metrics["threshold_tuning_by_kind"]["he"]["images"] == 1  # of 2
    assert card.thresholds("he").to_dict() == out["thresholds"] and card.postprocess == m.card.postprocess
    assert main(["tune", str(images), str(labels), "--model", str(model), "--kind", "brightfield"]) == 2
    assert "none of the images is detected as brightfield" in capsys.readouterr().err
    # a setting given on the command line replaces that setting in each kind's thresholds
    card.postprocess_by_kind = {"he": PostprocessConfig(0.6, 0.5, 40, 1.0)}
    model_files.save(model_files.Model(m.net, card), model, overwrite=True)
    seg = tmp_path / "seg"
    args = ["segment", str(images / "nuclei_he_stain.png"), "-o", str(seg), "--model", str(model), "--min-size", "5"]
    assert main(args) == 0
    prov = json.loads((seg / "nuclei_he_stain.tif.json").read_text())["provenance"]
    assert prov["modality"] == "he"
    assert prov["thresholds_by_kind"]["he"] == PostprocessConfig(0.6, 0.5, 5, 1.0).to_dict()
    assert prov["thresholds"] == {**m.card.postprocess.to_dict(), "min_size": 5}
    # a child fine-tuned on H&E images starts from the parent's H&E thresholds (as the dock, whose
    # thresholds follow its image's kind) and keeps none per kind: it tunes its own
    child = tmp_path / "child.safetensors"
    (tmp_path / "he.txt").write_text("nuclei_he_stain\n")
    train = ["train", str(images), str(labels), "--out", str(child), "--from", str(model), "--steps", "1"]
    train += ["--include", str(tmp_path / "he.txt"), "--val-fraction", "0.3"]
    assert main([*train, "--patch", "64", "--batch", "2", "--no-tune"]) == 0
    grown = model_files.load(child).card
    assert grown.postprocess_by_kind == {} and grown.postprocess == PostprocessConfig(0.6, 0.5, 40, 1.0)


def test_a_model_with_its_own_weights_for_he_images(tmp_path, folders, tiny_model_path, capsys, monkeypatch):
    """``models --add-kind he=FILE`` gives a model H&E weights; segment, tune and train --from use them."""
    import torch

    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.postprocess import PostprocessConfig
    from napari_unet_loop.core.unet import UNetConfig

    images, labels = folders
    base, spec, combo = tmp_path / "base.safetensors", tmp_path / "he.safetensors", tmp_path / "combo.safetensors"
    model_files.save(model_files.new_model(UNetConfig(depth=2, base_width=4), name="base", modality="auto"), base)
    he_pp = PostprocessConfig(0.6, 0.45, 12, 1.0)
    net = model_files.new_model(UNetConfig(depth=2, base_width=4), seed=5, modality="auto", postprocess=he_pp)
    model_files.save(net, spec)
    add = ["models", "--add-kind", f"he={spec}", "--model", str(base)]
    assert main(add) == 2 and "needs --out" in capsys.readouterr().err
    assert main(["models", "--add-kind", f"phase={spec}", "--model", str(base), "--out", str(combo)]) == 2
    assert "KIND one of" in capsys.readouterr().err
    assert main([*add, "--out", str(combo)]) == 0
    assert "own weights and thresholds for he images" in capsys.readouterr().err
    assert main([*add, "--out", str(combo)]) == 2  # exists
    loaded = model_files.load(combo)
    assert loaded.name == "combo" and set(loaded.nets_by_kind) == {"he"} and loaded.card.thresholds("he") == he_pp

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))

    # segment: the H&E image goes to the H&E network, the fluorescence one to the general network
    seg = tmp_path / "seg"
    assert main(["segment", str(images), "-o", str(seg), "--model", str(combo)]) == 0
    said = capsys.readouterr().err
    assert "(as H&E / stained tissue, the model's own weights for them)" in said
    assert "(as fluorescence)" in said
    prov = json.loads((seg / "nuclei_he_stain.tif.json").read_text())["provenance"]
    assert prov["modality"] == "he" and prov["thresholds_by_kind"]["he"] == he_pp.to_dict()
    assert prov["weights_by_kind"] == ["he"]
    # tune: the general thresholds leave the H&E image out; --kind he tunes the H&E network's
    seen = []
    from napari_unet_loop.core import retune as retune_mod

    real = retune_mod.tune_thresholds
    monkeypatch.setattr(
        retune_mod,
        "tune_thresholds",
        lambda net, samples, *a, **k: seen.append((net, samples)) or real(net, samples, *a, **k),
    )
    assert main(["tune", str(images), str(labels), "--model", str(combo)]) == 0
    assert "1 image(s) left out: the model has its own weights and thresholds for he images" in capsys.readouterr().err
    assert same(seen[-1][0], loaded.net) and [s.kind for s in seen[-1][1]] == ["fluorescence"]
    assert main(["tune", str(images), str(labels), "--model", str(combo), "--kind", "he", "--write"]) == 0
    assert same(seen[-1][0], loaded.net_for("he")) and [s.kind for s in seen[-1][1]] == ["he"]
    assert "he" in model_files.load(combo).card.postprocess_by_kind  # own weights keep own thresholds
    # train --from: a fine-tune on H&E images starts from the H&E weights and thresholds
    (tmp_path / "he.txt").write_text("nuclei_he_stain\n")
    child = tmp_path / "child.safetensors"
    train = ["train", str(images), str(labels), "--out", str(child), "--from", str(combo), "--steps", "1"]
    train += ["--include", str(tmp_path / "he.txt"), "--val-fraction", "0.3", "--patch", "64", "--batch", "2"]
    assert main([*train, "--no-tune", "--anchor", "0"]) == 0
    assert "most of these images are he: starting from combo's own weights" in capsys.readouterr().err
    grown = model_files.load(child)
    assert grown.card.training["start_weights"] == "he"
    assert grown.nets_by_kind == {} and grown.card.weights_by_kind == {} and grown.card.postprocess_by_kind == {}
    start = model_files.load(combo)
    assert grown.card.postprocess == start.card.thresholds("he")

    def dist(a, b):
        return sum(float((x - y).abs().sum()) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    assert dist(grown.net, start.net_for("he")) < 0.1 * dist(grown.net, start.net)


def test_a_colour_network_for_he_images_segments_and_fine_tunes_from_the_cli(tmp_path, folders, capsys):
    """A grey model with a colour network for H&E: segment, train --from on H&E, on a mix, --only-kind he."""
    from dataclasses import replace

    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.unet import UNetConfig

    images, labels = folders
    tiny = UNetConfig(depth=2, base_width=4)
    base, colour, combo = (tmp_path / f"{n}.safetensors" for n in ("base", "colour", "combo"))
    model_files.save(model_files.new_model(tiny, name="base", modality="auto"), base)
    model_files.save(model_files.new_model(replace(tiny, in_channels=3), seed=5, modality="none"), colour)
    assert main(["models", "--add-kind", f"he={colour}", "--model", str(base), "--out", str(combo)]) == 0
    assert model_files.read_card(combo).weights_by_kind["he"]["in_channels"] == 3
    capsys.readouterr()
    assert main(["models", "--add-kind", f"he={colour}", "--model", str(base), "--out", str(combo)]) == 2
    assert "Use --overwrite to replace" in capsys.readouterr().err  # it said "allow overwriting", naming no flag
    seg = tmp_path / "seg"
    assert main(["segment", str(images), "-o", str(seg), "--model", str(combo)]) == 0
    assert "(as H&E / stained tissue, the model's own weights for them)" in capsys.readouterr().err
    he_list = tmp_path / "he.txt"
    he_list.write_text("nuclei_he_stain\n")
    train = ["train", str(images), str(labels), "--from", str(combo), "--steps", "1", "--val-fraction", "0.3"]
    train += ["--patch", "64", "--batch", "2", "--no-tune", "--anchor", "0"]
    # on H&E images: the child is the colour network, a colour model of its own
    child = tmp_path / "child.safetensors"
    assert main([*train, "--out", str(child), "--include", str(he_list), "--stain", "0.5"]) == 0
    assert "the new model is one network" not in capsys.readouterr().err  # it started from those weights
    grown = model_files.load(child)
    assert grown.card.training["config"]["augment"]["stain"] == 0.5  # --stain: the colour patches' stain mix
    assert grown.card.architecture.in_channels == 3 and grown.card.modality == "none"
    assert grown.card.training["start_weights"] == "he" and grown.card.training["kinds"]["he"] == 1
    # on a fluorescence and an H&E image: the general grey network, the H&E image as its haematoxylin plane
    both = tmp_path / "both.safetensors"
    capsys.readouterr()
    assert main([*train, "--out", str(both), "--stain", "0.5"]) == 0
    said = capsys.readouterr().err
    assert "--stain: this network reads grey images, so there is no stain to mix" in said
    # said before it trains: the colour weights stay in the parent, the child reads H&E with its one network
    assert "own weights for H&E / stained tissue images stay in" in said and "(1 of the images trained on" in said
    with pytest.raises(SystemExit):  # a strength out of 0-1 is refused before anything runs
        main([*train, "--out", str(tmp_path / "strong.safetensors"), "--stain", "2"])
    assert "must be from 0 (none) to 1 (strong), got 2" in capsys.readouterr().err
    grey = model_files.load(both)
    assert grey.card.architecture.in_channels == 1 and grey.card.modality == "auto"
    assert grey.card.training["kinds"] == {"fluorescence": 1, "brightfield": 0, "he": 1}
    # mostly H&E and one fluorescence image: the colour network cannot read the grey one
    shutil.copy(images / "nuclei_he_stain.png", images / "he_again.png")
    shutil.copy(labels / "nuclei_he_stain.tif", labels / "he_again.tif")
    assert main([*train, "--out", str(tmp_path / "refused.safetensors")]) == 2
    said = capsys.readouterr().err
    assert "colour network for H&E / stained tissue images, which reads colour images only" in said
    assert (
        "1 of its images are of other kinds (nuclei_small)" in said and not (tmp_path / "refused.safetensors").exists()
    )
    # --only-kind he: the fine-tuned colour network joins the model again
    joined = tmp_path / "joined.safetensors"
    assert main([*train, "--out", str(joined), "--include", str(he_list), "--only-kind", "he"]) == 0
    assert "the new model is one network" not in capsys.readouterr().err
    again = model_files.load(joined)
    assert again.input_channels("he") == 3 and again.input_channels("fluorescence") == 1


def test_models_lists_shipped_and_user_models_and_their_own_weights(tmp_path, tiny_model_path, capsys, monkeypatch):
    from napari_unet_loop.core import kind_weights, model_files

    folder = tmp_path / "user-models"
    folder.mkdir()
    monkeypatch.setenv("NAPARI_UNET_LOOP_MODELS", str(folder))
    combo = model_files.load(tiny_model_path)
    combo.card.modality = "auto"
    kind_weights.add_kind_weights(combo, "he", combo.for_kind(None))
    model_files.save(combo, folder / "combo.safetensors")
    (folder / "broken.safetensors").write_bytes(b"not a model")
    assert main(["models"]) == 0
    plain = capsys.readouterr().out
    assert "combo\t" in plain and "broken\t" in plain and "own weights" not in plain
    assert main(["models", "-v"]) == 0
    lines = {line.split("\t")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["combo"].endswith("own weights for: he") and "cannot be read" in lines["broken"]
    assert main(["models", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "go with --add-kind" in capsys.readouterr().err


def test_train_and_tune_on_z_stacks_take_their_annotated_planes(tmp_path, tiny_model_path, capsys):
    """A folder of Z stacks (as Cell Tracking Challenge 3D sets ship) trains on each annotated plane."""
    images, labels = tmp_path / "01", tmp_path / "01_GT"
    images.mkdir()
    labels.mkdir()
    yy, xx = np.mgrid[:64, :64]
    for t in range(2):
        stack = np.random.default_rng(t).normal(10, 2, (4, 64, 64)).astype(np.float32)
        lab = np.zeros((4, 64, 64), np.uint16)
        for z in (1, 2):
            disc = (yy - 20 - 10 * t) ** 2 + (xx - 30) ** 2 <= 81
            stack[z][disc] += 100
            lab[z][disc] = 1
        tifffile.imwrite(images / f"t00{t}.tif", stack, metadata={"axes": "ZYX"})
        tifffile.imwrite(labels / f"man_seg00{t}.tif", lab)
    out = tmp_path / "m.safetensors"
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path), "--steps", "1"]
    assert main([*args, "--patch", "32", "--batch", "2", "--no-tune"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["data"]["n_train"] + card["training"]["data"]["n_val"] >= 4  # 2 planes of 2 stacks
    assert main(["tune", str(images), str(labels), "--model", str(out)]) == 0
    assert "4 images" in capsys.readouterr().err


def test_tune_uses_the_chosen_channel(tmp_path, folders, tiny_model_path, capsys):
    from napari_unet_loop.io.images import read_image

    images, labels = folders
    grey = tmp_path / "grey"
    multi = tmp_path / "multi"
    grey.mkdir()
    multi.mkdir()
    for path in images.iterdir():
        plane = read_image(path)[..., :3].mean(-1).astype(np.float32)
        noise = np.random.default_rng(0).random(plane.shape, dtype=np.float32) * 255
        tifffile.imwrite(grey / f"{path.stem}.tif", plane)
        tifffile.imwrite(multi / f"{path.stem}.tif", np.stack([noise, plane], axis=0), metadata={"axes": "CYX"})
    assert main(["tune", str(grey), str(labels), "--model", str(tiny_model_path)]) == 0
    want = json.loads(capsys.readouterr().out)
    assert (
        main(["tune", str(multi), str(labels), "--model", str(tiny_model_path), "--channel", "1", "--axes", "CYX"]) == 0
    )
    got = json.loads(capsys.readouterr().out)
    assert got["before"] == pytest.approx(want["before"])
    assert got["thresholds"] == want["thresholds"]
    assert main(["tune", str(multi), str(labels), "--model", str(tiny_model_path)]) == 2
    assert "choose the one to segment with --channel" in capsys.readouterr().err


def test_train_tunes_thresholds_on_the_validation_data(tmp_path, folders, tiny_model_path, capsys, monkeypatch):
    from napari_unet_loop.cli import train as train_cli
    from napari_unet_loop.core import model_files

    images, labels = folders
    wholes, real = [], train_cli.retune

    def spy(net, val, *args):
        wholes.append(args[-1])  # the training images the thresholds are checked on (core.retune.veto)
        return real(net, val, *args)

    monkeypatch.setattr(train_cli, "retune", spy)
    out = tmp_path / "ft.safetensors"
    args = [
        "train",
        str(images),
        str(labels),
        "--out",
        str(out),
        "--from",
        str(tiny_model_path),
        "--steps",
        "2",
        "--patch",
        "64",
        "--batch",
        "2",
    ]
    assert main(args) == 0
    assert "thresholds tuned on the validation data" in capsys.readouterr().err
    card = model_files.load(out).card
    record = card.metrics["threshold_tuning"]
    assert record["ap50_after"] >= record["ap50_before"]
    for_seg = record["seg_bar"] is not None and record["ap50_after"] >= record["ap50_before"]
    for_seg = for_seg and record["seg_after"] - record["seg_before"] > record["seg_bar"]
    searched = record["ap50_after"] - record["ap50_before"] > record["bar"] or for_seg
    # else the start with only its foreground threshold moved, past its paired SEG noise alone
    moved = record["found_for_reach"] != model_files.load(tiny_model_path).card.postprocess.to_dict()
    for_reach = moved and record["reach_bar"] is not None
    for_reach = for_reach and record["reach_seg"] - record["seg_before"] > record["reach_bar"]
    cleared = searched or for_reach
    assert record["by_reach"] == (for_reach and not searched)
    kept_on_stripe = cleared and not record["vetoed"]
    # else the training images chose the foreground threshold, kept past its paired noise there
    assert record["kept"] == (kept_on_stripe or record["by_training"]) and not (
        kept_on_stripe and record["by_training"]
    )
    # thresholds that cleared the bar were checked on the training images, whole (stripes not cut out); where the
    # start's stayed, the foreground threshold was looked for there
    trained = record["on_training_images"]
    assert trained is not None and ("found" in trained) == cleared
    assert record["by_training"] == (record["found_on_training"] is not None and record["kept"] and not kept_on_stripe)
    ((whole),) = wholes
    truths = sorted(tifffile.imread(f).shape for f in sorted(labels.iterdir()))
    assert sorted(s.labels.shape for s in whole) == truths
    assert all(s.ignore is None or not s.ignore.any() for s in whole)
    assert record["bar"] == pytest.approx(record["noise"] * (1 + record["trust"]), abs=1e-3)
    assert record["trust"] == pytest.approx(card.training["baseline"]["ap50"], abs=1e-4)  # the start's stripe AP@0.5
    if not record["kept"]:  # a gain within the noise of the validation objects: the starting thresholds stay
        assert card.postprocess == model_files.load(tiny_model_path).card.postprocess
    assert main([*args, "--overwrite", "--no-tune"]) == 0
    assert "threshold_tuning" not in model_files.load(out).card.metrics


def test_train_and_tune_say_which_label_files_they_read_as_masks(tmp_path, folders, tiny_model_path, capsys):
    """A binary mask trains as its separate pieces: the run says so once, not silently and not twice."""
    images, labels = folders
    f = labels / "nuclei_small.tif"
    tifffile.imwrite(f, np.where(tifffile.imread(f) > 0, 255, 0).astype(np.uint8))
    assert main(["tune", str(images), str(labels), "--model", str(tiny_model_path)]) == 0
    err = capsys.readouterr().err
    assert err.count("nuclei_small.tif is a mask (one id in separate pieces)") == 1
    assert "touching objects stay one" in err and "nuclei_he_stain" not in err.split("is a mask")[0]
    out = tmp_path / "ft.safetensors"
    args = ["train", str(images), str(labels), "--from", str(tiny_model_path), "--out", str(out), "--steps", "1"]
    assert main([*args, "--patch", "64", "--batch", "2", "--no-tune"]) == 0
    assert capsys.readouterr().err.count("nuclei_small.tif is a mask") == 1


def test_tune_does_not_write_into_a_shipped_model(folders, shipped_model_available, capsys):
    if not shipped_model_available:
        pytest.skip("no shipped model in this checkout")
    images, labels = folders
    assert main(["tune", str(images), str(labels), "--write"]) == 2
    assert "shipped model" in capsys.readouterr().err


def test_export_keeps_the_files_unit_and_z_spacing(tmp_path, capsys):
    from napari_unet_loop.io.readers import read_labels

    lab = np.zeros((3, 32, 32), np.uint16)
    lab[:, 4:12, 4:12] = 1
    src = tmp_path / "nm.tif"
    tifffile.imwrite(
        src, lab, imagej=True, resolution=(1 / 40, 1 / 40), metadata={"unit": "nm", "axes": "ZYX", "spacing": 100}
    )
    assert main(["export", str(src), "-o", str(tmp_path / "a"), "--format", "tif,csv"]) == 0
    _, kwargs, _ = read_labels(tmp_path / "a" / "nm.tif")[0]
    assert kwargs["metadata"]["units"][-1] == "nanometer"
    np.testing.assert_allclose(kwargs["scale"], [100, 40, 40])
    side = json.loads((tmp_path / "a" / "nm.csv.json").read_text())
    assert side["columns"]["area"] == "nm^2"
    assert (tmp_path / "a" / "nm.csv").read_text().splitlines()[1].split(",")[2] == str(64 * 40.0**2)
    assert main(["export", str(src), "-o", str(tmp_path / "b"), "--pixel-size", "20"]) == 0
    _, kwargs, _ = read_labels(tmp_path / "b" / "nm.tif")[0]
    np.testing.assert_allclose(kwargs["scale"], [100, 20, 20])
    assert kwargs["metadata"]["units"][-1] == "nanometer"
    assert "--pixel-size taken in nanometer, the file's unit" in capsys.readouterr().err
    assert main(["export", str(src), "-o", str(tmp_path / "c"), "--pixel-size", "20", "30"]) == 0  # Y and X
    _, kwargs, _ = read_labels(tmp_path / "c" / "nm.tif")[0]
    np.testing.assert_allclose(kwargs["scale"], [100, 20, 30])  # Z kept (it was reset to 1)
    assert main(["export", str(src), "-o", str(tmp_path / "d"), "--pixel-size", "1", "2", "3", "4"]) == 2
    assert "4 values" in capsys.readouterr().err


def test_export_takes_a_boolean_mask_as_one_object(tmp_path):
    mask = np.zeros((24, 24), bool)
    mask[4:12, 6:14] = True
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    assert main(["export", str(tmp_path / "mask.tif"), "-o", str(tmp_path / "out"), "--format", "tif,csv"]) == 0
    assert np.array_equal(tifffile.imread(tmp_path / "out" / "mask.tif"), mask.astype(np.uint16))
    assert (tmp_path / "out" / "mask.csv").read_text().splitlines()[1].startswith("1,64.0,")


def test_export_of_an_ome_zarr_keeps_where_its_labels_lie(tmp_path, capsys):
    from napari_unet_loop.io.export import write_ome_zarr
    from napari_unet_loop.io.readers import read_labels

    lab = np.zeros((32, 32), np.uint16)
    lab[4:12, 4:12] = 1
    src = write_ome_zarr(tmp_path / "crop.zarr", lab, scale=[0.5, 0.5], translation=[100.0, 250.0]).paths[0]
    assert main(["export", str(src), "-o", str(tmp_path / "out"), "--format", "zarr,tif"]) == 0
    _, kwargs, _ = read_labels(tmp_path / "out" / "crop.zarr")[-1]
    np.testing.assert_allclose(kwargs["translate"], [100.0, 250.0])
    assert "offset (Y 100, X 250) is in the sidecar only" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "crop.tif.json").read_text())["translate"] == [100.0, 250.0]
    # a new pixel size: the labels start at the same pixel of the image (200, 500 pixels in)
    assert main(["export", str(src), "-o", str(tmp_path / "px"), "--format", "zarr", "--pixel-size", "0.25"]) == 0
    _, kwargs, _ = read_labels(tmp_path / "px" / "crop.zarr")[-1]
    np.testing.assert_allclose(kwargs["scale"], [0.25, 0.25])
    np.testing.assert_allclose(kwargs["translate"], [50.0, 125.0])


def test_export_of_ome_zarr_labels_read_as_levels_writes_the_full_resolution(tmp_path, capsys, monkeypatch):
    """Labels over 2 GiB are read as their multiscale levels: export stopped with numpy's 'inhomogeneous shape'."""
    from napari_unet_loop.io import readers
    from napari_unet_loop.io.export import write_ome_zarr

    monkeypatch.setattr(readers, "LAZY_LABELS_BYTES", 1000)  # this small store counts as large
    lab = np.zeros((256, 256), np.uint16)
    lab[4:120, 4:120] = 1
    lab[150:200, 150:250] = 2
    src = write_ome_zarr(tmp_path / "big.zarr", lab).paths[0]
    assert isinstance(readers.read_labels(src)[-1][0], list)  # read as levels
    assert main(["export", str(src), "-o", str(tmp_path / "out"), "--format", "tif"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "big.tif"), lab)


def test_fiji_escaped_micro_sign_is_read_as_micrometres(tmp_path):
    from napari_unet_loop.io.readers import read_labels

    lab = np.zeros((16, 16), np.uint8)
    lab[2:6, 2:6] = 1
    tifffile.imwrite(tmp_path / "um.tif", lab, imagej=True, resolution=(2, 2), metadata={"unit": "\\u00B5m"})
    _, kwargs, _ = read_labels(tmp_path / "um.tif")[0]
    assert kwargs["metadata"]["units"] == ["micrometer", "micrometer"]


def test_os_errors_are_clear_messages(tmp_path, folders, capsys):
    images, labels = folders
    args = ["train", str(images), str(labels), "--out", str(tmp_path / "m"), "--include", str(tmp_path / "no.txt")]
    assert main(args) == 2
    assert "no.txt" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["segment", str(images), "-o", str(tmp_path / "afile" / "sub")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--block", "--tile"])
def test_sizes_must_be_positive(tmp_path, folders, option, capsys):
    images, _ = folders
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(images), "-o", str(tmp_path / "out"), option, "-5"])
    assert exc.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_blank_plane_in_a_stack(tmp_path, tiny_model_path, capsys):
    rng = np.random.default_rng(0)
    stack = rng.random((3, 64, 64)).astype(np.float32)
    stack[1] = 0
    tifffile.imwrite(tmp_path / "zs.tif", stack)
    assert (
        main(["segment", str(tmp_path / "zs.tif"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path)]) == 0
    )
    assert "1 blank plane(s) of 3" in capsys.readouterr().err
    assert tifffile.imread(tmp_path / "out" / "zs.tif")[1].max() == 0


def test_channel_axis_declared_in_an_imagej_tiff(tmp_path, folders, tiny_model_path, capsys):
    from napari_unet_loop.io.images import read_image

    images, _ = folders
    grey = read_image(images / "nuclei_small.png")[..., :3].mean(-1).astype(np.uint16)
    noise = np.random.default_rng(0).integers(0, 255, grey.shape).astype(np.uint16)
    tifffile.imwrite(tmp_path / "two.tif", np.stack([noise, grey]), imagej=True, metadata={"axes": "CYX"})
    out = tmp_path / "out"
    base = ["segment", str(tmp_path / "two.tif"), "-o", str(out), "--model", str(tiny_model_path)]
    assert main(base) == 1  # not taken for a 2-plane stack: the channel must be chosen
    assert "2 channels (axes CYX)" in capsys.readouterr().err
    assert main([*base, "--channel", "1"]) == 0
    assert tifffile.imread(out / "two.tif").shape == grey.shape


def test_axes_that_do_not_fit_are_a_clear_error(tmp_path, folders, tiny_model_path, capsys):
    images, _ = folders
    out = tmp_path / "out"
    args = ["segment", str(images / "nuclei_small.png"), "-o", str(out), "--model", str(tiny_model_path)]
    assert main([*args, "--axes", "YX"]) == 1  # the PNG is Y, X and RGBA
    assert "name 2 axes but the image has 3" in capsys.readouterr().err


def test_multichannel_model_takes_all_declared_channels(tmp_path, tiny_model_path):
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.unet import UNetConfig

    two = model_files.new_model(UNetConfig(depth=2, base_width=4, in_channels=2))
    model_files.save(two, tmp_path / "two.safetensors")
    data = np.random.default_rng(0).integers(0, 4000, (2, 64, 64)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cyx.tif", data, imagej=True, metadata={"axes": "CYX"})
    args = ["segment", str(tmp_path / "cyx.tif"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "two")]
    assert main([*args[:-1], str(tmp_path / "two.safetensors")]) == 0  # no --channel needed
    assert tifffile.imread(tmp_path / "out" / "cyx.tif").shape == (64, 64)


def test_grey_alpha_png_measures_the_grey_channel(tmp_path, folders, tiny_model_path):
    import csv

    images, _ = folders
    grey = (iio.imread(images / "nuclei_small.png")[..., :3].mean(-1) * 0.3).astype(np.uint8)  # at most 76
    la = np.stack([grey, np.full_like(grey, 255)], axis=-1)
    iio.imwrite(tmp_path / "la.png", la)
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "la.png"), "-o", str(out), "--model", str(tiny_model_path), "--format", "csv"]
    assert main([*args, "--min-size", "1"]) == 0
    rows = list(csv.DictReader((out / "la.csv").open()))
    assert rows and max(float(r["max_intensity"]) for r in rows) <= grey.max()  # alpha (255) not mixed in


@pytest.mark.gui
def test_gui_opens_napari_docked_on_a_sample_with_the_segment_button_in_view(qtbot, monkeypatch):
    import napari
    from qtpy.QtWidgets import QApplication

    monkeypatch.setattr(napari, "run", lambda *a, **k: None)
    real_viewer = napari.Viewer

    def small_first_window(*args, **kwargs):  # napari's first window on a fresh machine (no saved geometry)
        viewer = real_viewer(*args, **kwargs)
        viewer.window.resize(800, 500)
        return viewer

    monkeypatch.setattr(napari, "Viewer", small_first_window)
    assert main(["gui", "--sample", "nuclei_small"]) == 0
    viewer = napari.current_viewer()
    try:
        assert [layer.name for layer in viewer.layers] == ["nuclei_small"]
        assert "U-Net Loop (napari-unet-loop)" in viewer.window.dock_widgets
        screen = QApplication.primaryScreen().availableGeometry()
        assert viewer.window.geometry()[3] == min(950, screen.height())  # not napari's small first window
    finally:
        viewer.close()


def test_gui_opens_every_sample_napari_offers_and_label_files_as_labels(tmp_path, qtbot, monkeypatch):
    """``--sample nuclei_fluorescence_with_truth`` was refused; a label file opened through napari's own reader."""
    import napari

    from napari_unet_loop.io.export import export_labels

    monkeypatch.setattr(napari, "run", lambda *a, **k: None)
    assert main(["gui", "--sample", "nuclei_fluorescence_with_truth"]) == 0
    viewer = napari.current_viewer()
    try:
        assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels"]
    finally:
        viewer.close()
    labels = np.zeros((64, 64), np.uint16)
    labels[10:20, 10:20] = 3
    (tif,) = export_labels(labels, tmp_path, "tif", name="cells").paths
    assert main(["gui", str(tif)]) == 0
    viewer = napari.current_viewer()
    try:
        assert [type(layer).__name__ for layer in viewer.layers] == ["Labels"]
    finally:
        viewer.close()


def _cut_run(folders, tiny_model_path, out, monkeypatch, steps=5, extra=()):
    """Run ``train --from`` on the folders (with ``extra`` flags) and kill it right after the checkpoint at step 2."""
    import napari_unet_loop.cli.train as cli_mod

    images, labels = folders
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path), *extra]
    args += ["--steps", str(steps), "--patch", "64", "--batch", "2", "--checkpoint-every", "0", "--no-tune"]
    real_save = cli_mod.save_checkpoint

    def save_then_die(state, path, extra):
        real_save(state, path, extra)
        if state["step"] == 2:
            raise KeyboardInterrupt  # as a Ctrl-C (or a killed session) right after the checkpoint

    monkeypatch.setattr(cli_mod, "save_checkpoint", save_then_die)
    assert main(args) == 130
    monkeypatch.setattr(cli_mod, "save_checkpoint", real_save)
    return out.with_suffix(".ckpt")


def test_train_resume_continues_a_cut_run(tmp_path, folders, tiny_model_path, capsys, monkeypatch):
    """A run killed after a checkpoint goes on with --resume: same settings, the step count carries on."""
    from napari_unet_loop.core import model_files

    out = tmp_path / "ft.safetensors"
    parent = model_files.load(tiny_model_path)
    parent.card.created = "2020-01-01T00:00:00+00:00"
    model_files.save(parent, tmp_path / "tiny.safetensors")
    ckpt = _cut_run(folders, tmp_path / "tiny.safetensors", out, monkeypatch)
    assert ckpt.exists() and f"--resume {ckpt}" in capsys.readouterr().err

    assert main(["train", "--resume", str(ckpt)]) == 0
    err = capsys.readouterr().err
    assert "resuming at step 2" in err and "resumed at step 2" in err
    assert "goes on with the settings it began with" not in err  # nothing changed since
    card = model_files.load(out).card
    assert card.training["steps"] == 5 and card.training["final"] is True
    assert {"data", "config", "device", "precision_used", "steps", "seconds", "validated", "modality"} <= set(
        card.training
    )
    assert card.parent == "tiny" and card.training["config"]["steps"] == 5
    # how it was trained is the command it began with (it was "train --resume CHECKPOINT", a file now gone), and
    # the child is dated when it was made (it carried its parent's date)
    assert card.training["command"].startswith("napari-unet-loop train ") and "--resume" not in card.training["command"]
    assert "2020-01-01T00:00:00+00:00" < card.created <= card.training["started"]
    assert not ckpt.exists()  # a finished run leaves no checkpoint behind
    assert main(["train", "--resume", str(ckpt)]) == 2  # gone: a clear error, no traceback
    assert "cannot read the training checkpoint" in capsys.readouterr().err


def test_train_resume_keeps_a_file_put_at_out_meanwhile(tmp_path, folders, tiny_model_path, capsys, monkeypatch):
    """A run begun without --overwrite writes --out only at its end: a file there when it resumes is someone
    else's, and stays (it was replaced without a word)."""
    out = tmp_path / "ft.safetensors"
    ckpt = _cut_run(folders, tiny_model_path, out, monkeypatch)
    out.write_bytes(Path(tiny_model_path).read_bytes())
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(ckpt)]) == 2
    assert "ft.safetensors exists, and the run being resumed began without --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before and ckpt.exists()


@pytest.mark.parametrize("colour", [False, True])
def test_train_resume_of_an_only_kind_run_writes_the_joined_model(tmp_path, folders, capsys, monkeypatch, colour):
    """A cut ``--only-kind`` run resumes, and what it writes is still the --from model plus the kind's weights.

    ``colour``: the model has a colour network for H&E that learnt some sizes unscaled (as the shipped one):
    the run was refused (the colour network, which detects no kinds, was asked whether it does), and the
    joined record lost the sizes.
    """
    from dataclasses import replace

    from napari_unet_loop.core import kind_weights, model_files
    from napari_unet_loop.core.unet import UNetConfig

    tiny = UNetConfig(depth=2, base_width=4)
    start = model_files.new_model(tiny, name="tinyauto", modality="auto", seed=0)
    if colour:
        kind_weights.add_kind_weights(start, "he", model_files.new_model(replace(tiny, in_channels=3), seed=5))
        start.card.weights_by_kind["he"]["native_diameters"] = [5.0, 60.0]
    path = model_files.save(start, tmp_path / "tinyauto")
    only_he = tmp_path / "he.txt"
    only_he.write_text("nuclei_he_stain\n")
    out = tmp_path / "joined.safetensors"
    ckpt = _cut_run(folders, path, out, monkeypatch, extra=("--only-kind", "he", "--include", str(only_he)))
    assert ckpt.exists()
    assert main(["train", "--resume", str(ckpt)]) == 0
    assert "answer for he images only, other images keep tinyauto's" in capsys.readouterr().err
    joined = model_files.load(out)
    assert (joined.card.parent, set(joined.card.weights_by_kind)) == ("tinyauto", {"he"})
    assert joined.card.weights_by_kind["he"]["training"]["steps"] == 5 and not ckpt.exists()
    assert joined.for_kind("he").card.native_diameters == ((5.0, 60.0) if colour else None)
    assert joined.input_channels("he") == (3 if colour else 1)


def test_train_resume_keeps_the_settings_the_run_began_with(tmp_path, folders, tiny_model_path, capsys, monkeypatch):
    """A release that changes the fine-tune preset does not strand a cut run: it goes on as it began."""
    import napari_unet_loop.core.finetune as ft_mod
    from napari_unet_loop.core import model_files

    out = tmp_path / "ft.safetensors"
    ckpt = _cut_run(folders, tiny_model_path, out, monkeypatch, steps=4)
    # the next release: another learning rate and anchor in the preset
    monkeypatch.setitem(ft_mod.FINE_TUNE, "learning_rate", 1e-4)
    monkeypatch.setitem(ft_mod.FINE_TUNE, "anchor", 5.0)
    capsys.readouterr()
    assert main(["train", "--resume", str(ckpt)]) == 0
    err = capsys.readouterr().err
    assert "goes on with the settings it began with (anchor, learning_rate differ" in err
    config = model_files.load(out).card.training["config"]
    assert config["learning_rate"] == 2e-3 and config["anchor"] == 30.0 and config["steps"] == 4


def test_a_failed_run_leaves_the_model_it_would_replace_as_it_was(
    tmp_path, folders, tiny_model_path, monkeypatch, capsys
):
    """The loss going NaN mid-run (after a best-so-far snapshot) leaves ``--out`` byte for byte as it was."""
    import napari_unet_loop.core.train as train_mod
    from napari_unet_loop.core import model_files

    out = tmp_path / "m.safetensors"
    shutil.copy(tiny_model_path, out)
    before = out.read_bytes()
    real, calls = train_mod.loss_terms, []

    def nan_from_the_fourth_step(*args, **kwargs):
        calls.append(1)
        l_cls, l_dist = real(*args, **kwargs)
        return (l_cls * float("nan"), l_dist) if len(calls) > 3 else (l_cls, l_dist)

    monkeypatch.setattr(train_mod, "loss_terms", nan_from_the_fourth_step)
    images, labels = folders
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path), "--overwrite"]
    assert main([*args, "--steps", "8", "--patch", "64", "--batch", "2", "--val-every", "0", "--no-tune"]) == 2
    err = capsys.readouterr().err
    partial = tmp_path / "m.partial.safetensors"
    assert "(best so far, saved)" in err and "not a number" in err and f"best weights before it are in {partial}" in err
    assert out.read_bytes() == before  # the previous model, untouched
    assert model_files.load(partial).card.training["final"] is False


def test_a_fresh_run_neither_drops_nor_reuses_a_cut_runs_checkpoint(
    tmp_path, folders, tiny_model_path, monkeypatch, capsys
):
    """A new run at a cut run's ``--out`` refuses without --overwrite; with it, the old checkpoint goes first."""
    from napari_unet_loop.core import model_files

    out = tmp_path / "ft.safetensors"
    ckpt = _cut_run(folders, tiny_model_path, out, monkeypatch)
    capsys.readouterr()
    images, labels = folders
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path)]
    args += ["--steps", "3", "--patch", "64", "--batch", "2", "--no-tune"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"continue it with --resume {ckpt}" in err and "--overwrite" in err and ckpt.exists()
    assert main([*args, "--overwrite", "--no-checkpoint"]) == 0
    assert f"removed {ckpt}, left by an earlier cut run" in capsys.readouterr().err
    assert not ckpt.exists() and not (tmp_path / "ft.partial.safetensors").exists()
    assert model_files.load(out).card.training["steps"] == 3


def test_resume_reads_and_writes_where_the_run_began_and_takes_no_new_settings(
    tmp_path, folders, tiny_model_path, monkeypatch, capsys
):
    """Resumed from another folder, a run started with relative paths still trains on its data into its --out."""
    from napari_unet_loop.core import model_files

    images, labels = folders
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "start.safetensors"
    shutil.copy(tiny_model_path, model)
    args = ["train", images.name, labels.name, "--out", "rel", "--from", model.name, "--steps", "5"]
    args += ["--patch", "64", "--batch", "2", "--checkpoint-every", "0", "--no-tune"]
    import napari_unet_loop.cli.train as cli_mod

    real_save = cli_mod.save_checkpoint

    def save_then_die(state, path, extra):
        real_save(state, path, extra)
        if state["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_mod, "save_checkpoint", save_then_die)
    assert main(args) == 130
    monkeypatch.setattr(cli_mod, "save_checkpoint", real_save)
    ckpt = tmp_path / "rel.ckpt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["train", "--resume", str(ckpt), "--steps", "9", "--out", "x"]) == 2
    assert "leave out --steps, --out (only --device and --log-every may change)" in capsys.readouterr().err
    assert main(["train", "--resume", str(ckpt), "--dev", "cpu"]) == 0  # argparse's abbreviation of --device
    assert f"(in {tmp_path})" in capsys.readouterr().err
    card = model_files.load(tmp_path / "rel.safetensors").card
    assert card.training["steps"] == 5 and card.training["data"]["images"] == str(images.resolve())
    assert list(elsewhere.iterdir()) == []  # nothing written where it was resumed from


def test_train_refuses_what_it_could_only_find_out_after_training(
    tmp_path, folders, tiny_model_path, monkeypatch, capsys
):
    """A folder as --out, an unwritable folder, a user's JSON in the card's place, bad intervals: before any step."""
    import os

    import napari_unet_loop.cli.train as cli_mod

    monkeypatch.setattr(cli_mod, "iter_train", lambda *a, **k: pytest.fail("trained"))
    images, labels = folders
    base = ["train", str(images), str(labels), "--from", str(tiny_model_path), "--steps", "2"]
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    (tmp_path / "cells.json").write_text('{"experiment": 7}')
    for extra, said in [
        (["--out", str(locked)], "is a folder: give the model file to write"),
        (["--out", str(locked / "m")], f"folder {locked} is not writable"),
        (["--out", str(tmp_path / "cells")], "cells.json is not a model card"),
        (["--out", str(tmp_path / "m"), "--checkpoint-every", "-1"], "--checkpoint-every must be 0 or more"),
        (["--out", str(tmp_path / "m"), "--val-every", "nan"], "--val-every must be 0 or more, got nan"),
        (["--out", str(tmp_path / "m.partial")], "names ending in .partial are where runs keep their best weights"),
    ]:
        assert main([*base, *extra]) == 2
        assert said in capsys.readouterr().err
    assert (tmp_path / "cells.json").read_text() == '{"experiment": 7}'


def test_resume_of_a_file_that_is_no_checkpoint_is_one_line(tmp_path, tiny_model_path, capsys):
    """A model file, a text file or a damaged checkpoint given to --resume: one line saying what it is."""
    import torch

    from napari_unet_loop.core.checkpoint import CHECKPOINT_FORMAT

    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    damaged = tmp_path / "damaged.ckpt"
    torch.save({"format": CHECKPOINT_FORMAT, "json": "{}", "step": 3}, damaged)
    odd = tmp_path / "odd.ckpt"
    torch.save({"format": CHECKPOINT_FORMAT, "json": 5}, odd)
    cut = tmp_path / "cut.ckpt"  # a copy cut short (torch says "Invalid argument" for some)
    torch.save({"format": CHECKPOINT_FORMAT, "net": torch.zeros(4000)}, cut)
    cut.write_bytes(cut.read_bytes()[:5000])
    for path, said in [
        (tiny_model_path, "is not a training checkpoint"),
        (text, "is not a training checkpoint"),
        (damaged, "is a damaged training checkpoint: it lacks net, optimizer"),
        (odd, "is a damaged training checkpoint: its settings cannot be read"),
        (tmp_path, "is a folder, not a training checkpoint"),
        (cut, "is not a training checkpoint"),
    ]:
        assert main(["train", "--resume", str(path)]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1 and "weights_only" not in err


def test_resume_device_given_wins_even_auto_else_the_runs_own(monkeypatch):
    """``--resume X --device auto`` runs on auto, whatever device the cut run named; without --device, on its own."""
    import importlib

    main_mod = importlib.import_module("napari_unet_loop.cli.main")  # the module (the package exports main())
    argv = ["train", "im", "lab", "--out", "m", "--device", "cuda:1"]
    monkeypatch.setattr(main_mod, "load_checkpoint", lambda p: ({"step": 3}, {"argv": argv, "card": "{}", "cwd": "/d"}))
    monkeypatch.setattr(main_mod.ModelCard, "from_dict", staticmethod(lambda d: None))
    parser = main_mod.build_parser()
    for given, device in ([], "cuda:1"), (["--device", "auto"], "auto"), (["--device", "cpu"], "cpu"):
        cli = ["train", "--resume", "x.ckpt", *given]
        args = main_mod._train_args(parser, parser.parse_args(cli), cli)
        assert args.device == device and args.out == "/d/m"


def test_old_checkpoints_resume_with_settings_added_since_off():
    """A setting that did not exist when the checkpoint was written takes its default, which is off."""
    from napari_unet_loop.core.checkpoint import CHECKPOINT_FORMAT, run_settings, setting_differences
    from napari_unet_loop.core.errors import TrainingError
    from napari_unet_loop.core.finetune import preset
    from napari_unet_loop.core.train import TrainConfig

    stored = preset(True, minutes=3).to_dict()
    for added in ("anchor", "val_every_steps"):
        del stored[added]
    del stored["augment"]["blur"], stored["augment"]["stain"]
    own = run_settings({"format": CHECKPOINT_FORMAT, "config": stored}, TrainConfig)
    assert own.anchor == 0.0 and own.val_every_steps is None and own.augment.blur == own.augment.stain == 0.0
    assert setting_differences(own, preset(True, minutes=3)) == ["anchor"]
    with pytest.raises(TrainingError, match="cannot be read"):
        run_settings({"format": CHECKPOINT_FORMAT, "config": {"patch": 3}}, TrainConfig)
    with pytest.raises(TrainingError, match="not a training checkpoint"):
        run_settings({"format": -1}, TrainConfig)


def test_train_needs_data_or_a_checkpoint(capsys):
    assert main(["train"]) == 2
    assert "IMAGES, LABELS and --out" in capsys.readouterr().err


def test_evaluate_by_kind_scores_each_kind_of_image_apart(folders, tiny_model_path, capsys):
    images, labels = folders
    args = ["evaluate", str(images), str(labels), "--model", str(tiny_model_path), "--json", "--by-kind"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    kinds = {p["name"]: p["kind"] for p in report["per_image"]}
    assert kinds == {"nuclei_small": "fluorescence", "nuclei_he_stain": "he"}
    assert set(report["by_kind"]) == {"fluorescence", "he"}
    for kind, scores in report["by_kind"].items():
        (one,) = [p for p in report["per_image"] if p["kind"] == kind]
        assert scores["n_images"] == 1 and scores["ap50"] == one["ap50"] and scores["n_true"] == one["n_true"]
    assert sum(k["n_true"] for k in report["by_kind"].values()) == report["n_true"]
    assert main(args[:-1]) == 0 and "by_kind" not in json.loads(capsys.readouterr().out)  # only when asked


def test_evaluate_errors_sort_every_miss_by_kind(folders, tiny_model_path, capsys):
    images, labels = folders
    args = ["evaluate", str(images), str(labels), "--model", str(tiny_model_path), "--json", "--by-kind", "--errors"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    e = report["errors"]
    # every true object has one fate and every unmatched prediction one kind: the counts add up to the scores
    assert e["found"] == round(report["recall_50"] * report["n_true"])
    assert e["found"] + e["missed"] + e["split"] + e["merged"] + e["outline"] == report["n_true"]
    assert e["found"] + e["invented"] + e["pieces"] == report["n_pred"]
    for kind, scores in report["by_kind"].items():
        (one,) = [p for p in report["per_image"] if p["kind"] == kind]
        assert scores["errors"] == one["errors"]
    assert sum(p["errors"]["missed"] for p in report["per_image"]) == e["missed"]
    assert main(args[:3] + ["--model", str(tiny_model_path), "--by-kind", "--errors"]) == 0  # as text
    out = capsys.readouterr().out
    assert out.count("errors: ") == 3 and "merged" in out and "invented" in out
    assert main(args[:-1]) == 0 and "errors" not in json.loads(capsys.readouterr().out)  # only when asked


def test_segment_modality_auto_and_override(tmp_path, folders, tiny_model_path, capsys):
    images, _ = folders
    he = images / "nuclei_he_stain.png"
    args = ["segment", str(he), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path), "--overwrite"]
    assert main([*args, "--modality", "auto"]) == 0
    assert "(as H&E / stained tissue)" in capsys.readouterr().err  # detected: stained tissue
    assert main([*args, "--modality", "brightfield"]) == 0
    assert "(as brightfield)" in capsys.readouterr().err  # the user's choice wins
    assert main(args) == 0
    assert "(as " not in capsys.readouterr().err  # the tiny model's card: grey as it is
    with pytest.raises(SystemExit):
        main([*args, "--modality", "phase"])  # argparse refuses an unknown kind
    assert "invalid choice: 'phase'" in capsys.readouterr().err


def test_train_records_modality_and_kind_balance(tmp_path, folders, tiny_model_path, capsys):
    from napari_unet_loop.core import model_files

    images, labels = folders
    out = tmp_path / "m.safetensors"
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path), "--steps", "1"]
    args += ["--patch", "64", "--batch", "2", "--no-tune", "--modality", "auto", "--balance-kinds", "he=0.6"]
    assert main(args) == 0
    assert "patches per kind of image" in capsys.readouterr().err
    card = model_files.load(out).card
    assert card.modality == "auto"
    assert card.training["kinds"]["he"] + card.training["kinds"]["fluorescence"] == 2
    assert card.training["kind_shares"]["he"] >= 0.5
    assert main([*args[:-1], "he=2", "--overwrite"]) == 2
    assert "KIND=SHARE" in capsys.readouterr().err


def test_train_reads_frames_in_doubt_alike_and_the_child_keeps_reading_them_so(
    tmp_path, tiny_model_path, capsys, phase_like
):
    """Phase-contrast-like frames on either side of the fluorescence/brightfield line: one kind for all."""
    import imageio.v3 as iio

    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.modality import input_modality

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    for n, background in enumerate((0.33, 0.41)):
        image, lab = phase_like(background, seed=n)
        iio.imwrite(images / f"t{n}.png", image)
        iio.imwrite(labels / f"t{n}.png", lab)
    out = tmp_path / "child.safetensors"
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path), "--steps", "1"]
    assert main([*args, "--patch", "64", "--batch", "2", "--no-tune", "--modality", "auto"]) == 0
    err = capsys.readouterr().err
    assert "2 of 2 training images lie between fluorescence and brightfield" in err
    assert "all are read as brightfield" in err
    child = model_files.load(out)
    assert child.card.kind_in_doubt == "brightfield"  # the median frame, 0.37, lies above the line
    assert input_modality(child, phase_like(0.30)[0]) == "brightfield"  # a frame below the line too
    assert input_modality(child, np.full((8, 8), 9, np.uint8)) == "fluorescence"  # nothing to tell: as before


@pytest.mark.parametrize("value", [0, 7])
def test_a_blank_image_gets_empty_labels_not_an_error(tmp_path, tiny_model_path, capsys, value):
    """A blank field of view is normal in a plate: empty labels, a note, exit 0 (as a blank plane in a stack)."""
    tifffile.imwrite(tmp_path / "blank.tif", np.full((64, 64), value, np.uint16))
    out = tmp_path / "o"
    assert main(["segment", str(tmp_path / "blank.tif"), "-o", str(out), "--model", str(tiny_model_path)]) == 0
    err = capsys.readouterr().err
    assert "blank" in err and "blank.tif: 0 objects" in err
    labels = tifffile.imread(out / "blank.tif")
    assert labels.shape == (64, 64) and not labels.any()
    assert (out / "blank.tif.json").exists()
    # block by block (an OME-Zarr) the same: it was "error: image is constant", exit 1
    src = _write_ome_zarr(tmp_path / "blank.ome.zarr", np.full((200, 150), value, np.uint8))
    args = ["segment", str(src), "-o", str(tmp_path / "z"), "--format", "zarr,tif", "--block", "128"]
    assert main([*args, "--model", str(tiny_model_path)]) == 0
    err = capsys.readouterr().err
    assert "blank" in err and "blank.ome.zarr: 0 objects" in err and "error" not in err
    assert "blank.ome.zarr: 0 objects, " in err  # seen as no kind of imaging: nothing was there to tell
    assert _zarr_labels(tmp_path / "z" / "blank.zarr").shape == (200, 150)
    assert (
        not _zarr_labels(tmp_path / "z" / "blank.zarr").any()
        and not tifffile.imread(tmp_path / "z" / "blank.tif").any()
    )
    # a blank Z stack, a plane at a time: the same words (it said "(as none)")
    from napari_unet_loop.io.export import write_ome_zarr

    stack = write_ome_zarr(
        tmp_path / "stack.zarr", np.zeros((3, 64, 64), np.uint8), np.full((3, 64, 64), value, np.uint8)
    ).paths[0]
    args = ["segment", str(stack), "-o", str(tmp_path / "s"), "--format", "zarr", "--block", "128"]
    assert main([*args, "--model", str(tiny_model_path)]) == 0
    err = capsys.readouterr().err
    assert "stack.zarr: 0 objects, " in err and "as none" not in err


@pytest.mark.parametrize(
    "names",
    [("a:b.png", "a?b.png"), ("x .png", "x.png"), ("Cells.png", "cells.png")],
)
def test_segment_refuses_inputs_whose_cleaned_names_collide(tmp_path, tiny_model_path, capsys, names):
    image = iio.imread(sample_path("nuclei_small"))
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(names):
        (src / str(i)).mkdir()
        iio.imwrite(src / str(i) / name, image)
    inputs = [str(src / str(i) / n) for i, n in enumerate(names)]
    out = tmp_path / "o"
    args = ["segment", *inputs, "-o", str(out), "--model", str(tiny_model_path), "--overwrite"]
    assert main(args) == 2
    assert "would collide" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())  # refused before anything was written


def test_export_refuses_files_of_the_same_name_from_two_folders(tmp_path, folders, capsys):
    _, labels = folders
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        shutil.copy(labels / "nuclei_small.tif", tmp_path / d / "x.tif")
    out = tmp_path / "o"
    args = ["export", str(tmp_path / "a" / "x.tif"), str(tmp_path / "b" / "x.tif"), "-o", str(out)]
    assert main([*args, "--format", "csv", "--overwrite"]) == 2
    assert "would collide" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def _stub(make):
    """A stand-in for ``iter_segment``: a generator that yields nothing and returns ``make(...)``."""

    def gen(*args, **kwargs):
        return make(*args, **kwargs)
        yield  # a generator function

    return gen


def test_segment_counts_objects_not_the_largest_id(tmp_path, monkeypatch, tiny_model_path, capsys):
    import napari_unet_loop.cli as cli_mod
    import napari_unet_loop.core.planes as planes_mod
    from napari_unet_loop.core.segment import Segmentation

    labels = np.zeros((64, 64), np.int32)
    labels[5:10, 5:10], labels[20:30, 20:30] = 1, 9  # two objects, largest id 9
    monkeypatch.setattr(planes_mod, "iter_segment", _stub(lambda *a, **k: Segmentation(labels, None)))
    iio.imwrite(tmp_path / "img.png", iio.imread(sample_path("nuclei_small"))[:64, :64])
    assert main(["segment", str(tmp_path / "img.png"), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path)]) == 0
    assert "img.png: 2 objects" in capsys.readouterr().err
    assert cli_mod.count_objects(np.stack([labels, labels[::-1]])) == 4  # a stack: per plane, summed


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--val-fraction", "1.0"], "--val-fraction must be"),
        (["--val-fraction", "-0.5"], "--val-fraction must be"),
        (["--minutes", "nan"], "positive number of minutes"),
        (["--minutes", "-1"], "positive number of minutes"),
        (["--lr", "nan", "--steps", "1"], "learning rate"),
        (["--anchor", "-1", "--steps", "1"], "anchor must be"),
        (["--patch", "30", "--steps", "1"], "must be a multiple of 4"),  # before the starting validation
    ],
)
def test_train_refuses_nonsense_settings(tmp_path, folders, tiny_model_path, capsys, extra, words):
    images, labels = folders
    out = tmp_path / "m.safetensors"
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path), *extra]
    assert main(args) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_train_refuses_unmatched_val_list_and_empty_labels(tmp_path, folders, tiny_model_path, capsys):
    images, labels = folders
    out = tmp_path / "m.safetensors"
    base = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path), "--steps", "1"]
    (tmp_path / "val.txt").write_text("no_such_image\n")
    assert main([*base, "--val-list", str(tmp_path / "val.txt")]) == 2
    assert "no image matches" in capsys.readouterr().err
    empty = tmp_path / "empty_labels"
    empty.mkdir()
    for f in labels.iterdir():
        tifffile.imwrite(empty / f.name, np.zeros_like(tifffile.imread(f)))
    assert main(["train", str(images), str(empty), *base[3:]]) == 2
    assert "hold no objects" in capsys.readouterr().err
    assert not out.exists()
    # validation images without objects: AP would only say whether a speck was found
    tifffile.imwrite(labels / "nuclei_small.tif", np.zeros_like(tifffile.imread(labels / "nuclei_small.tif")))
    (tmp_path / "val.txt").write_text("nuclei_small\n")
    assert main([*base, "--val-list", str(tmp_path / "val.txt")]) == 2
    assert "--val-list" in (err := capsys.readouterr().err) and "hold no objects" in err
    assert not out.exists()


def test_train_without_validation_says_so_and_records_it(tmp_path, folders, tiny_model_path, capsys):
    from napari_unet_loop.core import model_files

    images, labels = folders
    out = tmp_path / "m.safetensors"
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path), "--steps", "1"]
    assert main([*args, "--val-fraction", "0", "--patch", "64", "--batch", "2"]) == 0
    assert "WARNING: no validation data" in capsys.readouterr().err
    assert model_files.load(out).card.training["validated"] is False


def test_ctrl_c_while_starting_is_one_line(monkeypatch, folders, tmp_path, capsys):
    import napari_unet_loop.cli.train as cli_mod

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_mod, "resolve_device", interrupt)
    images, labels = folders
    assert main(["train", str(images), str(labels), "--out", str(tmp_path / "m")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_segment_skips_ground_truth_files_beside_their_images(tmp_path, tiny_model_path, capsys):
    """``segment sample_data/``: the *_labels.png files are ground truth, not images to segment."""
    src = tmp_path / "data"
    src.mkdir()
    for name in ("nuclei_small", "nuclei_he_stain"):
        shutil.copy(sample_path(name), src / f"{name}.png")
        shutil.copy(sample_path(name, labels=True), src / f"{name}_labels.png")
    out = tmp_path / "o"
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path)]) == 0
    assert "skipped 2 label file(s)" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.tif")) == ["nuclei_he_stain.tif", "nuclei_small.tif"]
    out2 = tmp_path / "o2"
    assert main(["segment", str(src), "-o", str(out2), "--model", str(tiny_model_path), "--include-labels"]) == 0
    assert len(list(out2.glob("*.tif"))) == 4
    # a label file named on its own is segmented as asked
    one = ["segment", str(src / "nuclei_small_labels.png"), "-o", str(tmp_path / "o3"), "--model", str(tiny_model_path)]
    assert main(one) == 0 and (tmp_path / "o3" / "nuclei_small_labels.tif").exists()


def test_odd_file_names_do_not_stop_a_batch(tmp_path, tiny_model_path, capsys):
    """A valid 250-byte name and a name that is not UTF-8 are segmented with the rest, each with its record."""
    import os

    src = tmp_path / "in"
    src.mkdir()
    image = iio.imread(sample_path("nuclei_small"))[:64, :64]
    long_name = "n" * 246 + ".png"
    iio.imwrite(src / long_name, image)
    odd = os.fsencode(str(src)) + b"/caf\xe9.png"  # Latin-1 bytes: not valid UTF-8
    try:
        with open(odd, "wb") as fh:
            fh.write(iio.imwrite("<bytes>", image, extension=".png"))
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    iio.imwrite(src / "plain.png", image)
    out = tmp_path / "o"
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path)]) == 0
    err = capsys.readouterr().err
    assert "caf\\xe9.png" in err  # named, escaped
    tifs = sorted(os.listdir(os.fsencode(str(out))))
    assert b"caf\xe9.tif" in tifs and b"caf\xe9.tif.json" in tifs
    assert ("n" * 246 + ".tif").encode() in tifs and b"plain.tif" in tifs
    record = json.loads((out / "plain.tif.json").read_text())
    assert record["provenance"]["input"].endswith("plain.png")
    # the command given (called from Python too: it recorded the interpreter's sys.argv, here pytest's)
    assert record["provenance"]["command"] == f"napari-unet-loop segment {src} -o {out} --model {tiny_model_path}"


def test_segment_stitch_z_gives_one_3d_object_per_nucleus(tmp_path, monkeypatch, tiny_model_path, capsys):
    """``--stitch-z 0.5`` on a Z stack of separated nuclei: one 3D object each (per-plane labels stubbed)."""
    import napari_unet_loop.core.planes as planes_mod
    from napari_unet_loop.core.segment import Segmentation

    zz, yy, xx = np.mgrid[:9, :64, :64]
    balls = np.zeros((9, 64, 64), np.int32)
    for i, (cy, cx) in enumerate([(16, 16), (16, 46), (46, 30)], 1):
        balls[(zz - 4) ** 2 + (yy - cy) ** 2 / 9 + (xx - cx) ** 2 / 9 <= 16] = i
    planes = iter(list(balls))

    def per_plane(model, plane, **kw):  # a 2D segmentation numbers every plane anew
        lab = next(planes)
        return Segmentation(np.where(lab > 0, 4 - lab, 0).astype(np.int32), None)

    monkeypatch.setattr(planes_mod, "iter_segment", _stub(per_plane))
    tifffile.imwrite(tmp_path / "stack.tif", (balls > 0).astype(np.uint8) * 200, metadata={"axes": "ZYX"})
    out = tmp_path / "o"
    args = ["segment", str(tmp_path / "stack.tif"), "-o", str(out), "--model", str(tiny_model_path)]
    assert main([*args, "--stitch-z", "0.5", "--format", "tif,csv"]) == 0
    assert "stack.tif: 3 objects" in capsys.readouterr().err  # 3D objects counted once, not per plane
    labels = tifffile.imread(out / "stack.tif")
    assert labels.shape == (9, 64, 64) and len(np.unique(labels[labels > 0])) == 3
    for i in (1, 2, 3):
        assert len(np.unique(labels[balls == i])) == 1
    with pytest.raises(SystemExit):
        main([*args, "--stitch-z", "2", "--overwrite"])


def test_segment_gives_a_calibrated_stack_its_pixel_size_and_z_spacing(tmp_path, tiny_model_path):
    """The labels of an ImageJ stack (0.5 um pixels, 3 um planes) carry its sizes: the TIFF, the record and
    the CSV's areas in um^2 (they were in pixels)."""
    import csv

    stack = np.zeros((2, 48, 48), np.uint8)
    stack[:, 10:30, 12:28] = 200
    meta = {"unit": "um", "spacing": 3.0, "axes": "ZYX"}
    tifffile.imwrite(tmp_path / "cal.tif", stack, imagej=True, resolution=(2.0, 2.0), metadata=meta)
    out = tmp_path / "o"
    args = ["segment", str(tmp_path / "cal.tif"), "-o", str(out), "--model", str(tiny_model_path)]
    assert main([*args, "--format", "tif,csv"]) == 0
    with tifffile.TiffFile(out / "cal.tif") as tif:
        assert tif.imagej_metadata["spacing"] == pytest.approx(3.0)
        assert 1 / (tif.pages[0].tags["XResolution"].value[0] / tif.pages[0].tags["XResolution"].value[1]) == 0.5
    assert json.loads((out / "cal.tif.json").read_text())["scale"] == [3.0, 0.5, 0.5]
    labels = tifffile.imread(out / "cal.tif")
    with open(out / "cal.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows, "the tiny model found no object"
    first = rows[0]
    pixels = np.count_nonzero(labels[int(first["z"])] == int(first["label"]))
    assert float(first["area"]) == pytest.approx(pixels * 0.25)


def test_stitched_stack_is_measured_in_3d(tmp_path, monkeypatch, tiny_model_path):
    import csv

    import napari_unet_loop.core.planes as planes_mod
    from napari_unet_loop.core.segment import Segmentation

    stack = np.zeros((5, 32, 32), np.int32)
    stack[1:4, 8:16, 8:16] = 1
    stack[:, 20:28, 18:30] = 2
    planes = iter(list(stack))
    monkeypatch.setattr(planes_mod, "iter_segment", _stub(lambda m, p, **k: Segmentation(next(planes).copy(), None)))
    tifffile.imwrite(tmp_path / "s.tif", (stack > 0).astype(np.uint8) * 100, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "o"
    args = ["segment", str(tmp_path / "s.tif"), "-o", str(out), "--model", str(tiny_model_path)]
    assert main([*args, "--stitch-z", "0.5", "--format", "csv"]) == 0
    rows = list(csv.DictReader((out / "s.csv").read_text().splitlines()))
    assert len(rows) == 2  # one row per 3D object, not per plane
    vols = sorted(float(r["volume"]) for r in rows)
    assert vols == [3 * 64.0, 5 * 96.0]
    assert {"centroid_z", "bbox_z0", "bbox_z1"} <= set(rows[0])
    assert json.loads((out / "s.csv.json").read_text())["objects_3d"] is True


def test_export_onto_existing_files_names_the_flag(tmp_path, folders, capsys):
    _, labels = folders
    args = ["export", str(labels / "nuclei_small.tif"), "-o", str(tmp_path / "o"), "--format", "png"]
    assert main(args) == 0
    assert main(args) == 2
    assert "Use --overwrite to replace" in capsys.readouterr().err


def test_running_out_of_memory_is_said_in_words(tmp_path, folders, capsys, monkeypatch):
    """A bare MemoryError has no message: the line was an empty "error: "."""
    from napari_unet_loop.io.formats import csv as csv_format

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(csv_format, "measure_table", no_memory)
    _, labels = folders
    args = ["export", str(labels / "nuclei_small.tif"), "-o", str(tmp_path / "o"), "--format", "csv"]
    assert main(args) == 2
    assert "error: out of memory" in capsys.readouterr().err


def test_train_from_a_model_uses_the_docks_fine_tune_settings(tmp_path, folders, tiny_model_path):
    """``train --from MODEL`` and the dock's Fine-tune share one preset (batch, patch, rate, statistics)."""
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.finetune import preset

    images, labels = folders
    out = tmp_path / "ft.safetensors"
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path)]
    assert main([*args, "--minutes", "0.02", "--no-tune", "--seed", "0"]) == 0
    config = model_files.load(out).card.training["config"]
    dock = json.loads(json.dumps(preset(True, minutes=0.02).to_dict()))
    for key in (
        *("patch_size", "batch_size", "learning_rate", "freeze_norm", "anchor"),
        *("val_every_s", "augment", "weight_decay"),
    ):
        assert config[key] == dock[key], key


def test_train_anchor_is_for_fine_tuning(tmp_path, folders, tiny_model_path, capsys):
    """``--anchor`` sets the pull toward the starting model; from scratch there is none to pull toward."""
    from napari_unet_loop.core import model_files

    images, labels = folders
    out = tmp_path / "ft.safetensors"
    args = ["train", str(images), str(labels), "--out", str(out), "--steps", "2", "--no-tune"]
    assert main([*args, "--from", "scratch", "--anchor", "5"]) == 2
    assert "pulls toward a starting model's weights: start from a trained model (--from MODEL), not from scratch" in (
        capsys.readouterr().err
    )
    assert not out.exists()
    assert main([*args, "--from", str(tiny_model_path), "--anchor", "7"]) == 0
    record = model_files.load(out).card.training
    assert record["config"]["anchor"] == 7.0
    # the pull applied: the anchor times the starting model's validation AP@0.5
    assert record["anchor_applied"] == pytest.approx(7.0 * record["baseline"]["ap50"], abs=1e-3)


def test_train_only_kind_gives_the_starting_model_weights_of_its_own(tmp_path, folders, tiny_model_path, capsys):
    """``--only-kind he``: the --from model with new weights for H&E images, as the dock's Only for this kind."""
    import torch

    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.unet import UNetConfig

    images, labels = folders
    out = tmp_path / "joined.safetensors"
    args = ["train", str(images), str(labels), "--out", str(out), "--steps", "2", "--only-kind", "he"]
    assert main([*args, "--from", "scratch"]) == 2
    assert "--only-kind adds weights to a trained model: start from a trained model" in capsys.readouterr().err
    assert main([*args, "--from", str(tiny_model_path)]) == 2  # it takes every image as grey: no kinds
    assert "--only-kind: tiny does not detect each image's kind" in capsys.readouterr().err
    start = model_files.new_model(UNetConfig(depth=2, base_width=4), name="tinyauto", modality="auto", seed=0)
    path = model_files.save(start, tmp_path / "tinyauto")
    assert main([*args, "--from", str(path)]) == 2  # one of the two images is fluorescence
    assert "--only-kind: weights for H&E / stained tissue images only" in capsys.readouterr().err and not out.exists()
    only_he = tmp_path / "he.txt"
    only_he.write_text("nuclei_he_stain\n")
    assert main([*args, "--from", str(path), "--include", str(only_he)]) == 0
    assert "answer for he images only, other images keep tinyauto's" in capsys.readouterr().err
    base, joined = model_files.load(path), model_files.load(out)
    assert (joined.name, joined.card.parent, set(joined.card.weights_by_kind)) == ("joined", "tinyauto", {"he"})
    assert joined.card.metrics == {} and "he" in joined.card.postprocess_by_kind
    general = joined.net.state_dict()
    assert all(torch.equal(general[k], v) for k, v in base.net.state_dict().items())  # other images keep tiny's
    own = joined.nets_by_kind["he"].state_dict()
    assert not all(torch.equal(own[k], v) for k, v in base.net.state_dict().items())  # trained
    assert joined.card.weights_by_kind["he"]["training"]["steps"] == 2


@pytest.mark.parametrize(
    "alias, suffix", [("rois", ".zip"), ("imagej", ".zip"), ("ome.zarr", ".zarr"), ("TIFF", ".tif")]
)
def test_format_aliases_are_the_exporters(tmp_path, folders, tiny_model_path, alias, suffix):
    """The command line accepts every format name the exporter does (one parser)."""
    images, labels = folders
    out = tmp_path / "o"
    assert main(["export", str(labels / "nuclei_small.tif"), "-o", str(out), "--format", alias]) == 0
    assert (out / f"nuclei_small{suffix}").exists()
    args = ["segment", str(images / "nuclei_small.png"), "-o", str(tmp_path / "s"), "--model", str(tiny_model_path)]
    assert main([*args, "--format", alias]) == 0
    assert main([*args, "--format", "bmp", "--overwrite"]) == 2


def test_a_tiff_with_many_samples_per_pixel_is_not_taken_for_a_stack(tmp_path, tiny_model_path, capsys):
    """64 x 64 pixels of 1,000 samples each: one image with 1,000 channels, not 64 planes of 64 x 1000."""
    data = np.random.default_rng(0).integers(0, 255, (64, 64, 1000), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "many.tif", data, planarconfig="contig", photometric="minisblack")
    args = ["segment", str(tmp_path / "many.tif"), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1000 channels" in err and "--channel" in err
    assert main([*args, "--channel", "3"]) == 0
    assert tifffile.imread(tmp_path / "o" / "many.tif").shape == (64, 64)


def test_tiny_tiles_are_refused(tmp_path, folders, capsys):
    images, _ = folders
    with pytest.raises(SystemExit):
        main(["segment", str(images), "-o", str(tmp_path), "--tile", "1"])
    assert "almost all overlap" in capsys.readouterr().err


def test_a_full_disk_is_called_so_and_names_the_file(tmp_path, folders, tiny_model_path, monkeypatch, capsys):
    import errno

    import napari_unet_loop.parallel.files as files_mod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "nuclei_small.tif"))

    monkeypatch.setattr(files_mod, "export_labels", full)
    images, _ = folders
    args = ["segment", str(images / "nuclei_small.png"), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "disk full while writing" in err and "nuclei_small.tif)" in err


def test_tune_reads_images_as_the_model_does(tmp_path, folders, tiny_model_path, monkeypatch):
    """``tune`` prepares the images with the model's imaging modality, exactly as segment and train do."""
    import napari_unet_loop.io.training as training_mod
    from napari_unet_loop.core import model_files

    model = model_files.load(tiny_model_path)
    model.card.modality = "auto"
    path = model_files.save(model, tmp_path / "auto.safetensors")
    seen = []
    real = training_mod.prepare_input

    def spy(*args, **kwargs):
        seen.append(kwargs.get("modality"))
        return real(*args, **kwargs)

    monkeypatch.setattr(training_mod, "prepare_input", spy)
    images, labels = folders
    assert main(["tune", str(images), str(labels), "--model", str(path)]) == 0
    assert sorted(seen) == ["fluorescence", "he"]  # each image converted as detected, not taken as it is


def test_tune_for_a_kind_takes_its_images_at_the_sizes_segment_does(tmp_path, folders, monkeypatch):
    """A kind's own network that learnt its sizes unscaled: tune --kind scored its images rescaled, segment does not."""
    from dataclasses import replace

    from napari_unet_loop.core import kind_weights, model_files
    from napari_unet_loop.core import retune as retune_mod
    from napari_unet_loop.core.unet import UNetConfig

    tiny = UNetConfig(depth=2, base_width=4)
    combo = model_files.new_model(tiny, name="combo", modality="auto", seed=0)
    kind_weights.add_kind_weights(combo, "he", model_files.new_model(replace(tiny, in_channels=3), seed=5))
    combo.card.diameter, combo.card.default_diameter = 10.0, 14.0  # other images: rescaled x0.71
    combo.card.weights_by_kind["he"]["native_diameters"] = [5.0, 60.0]
    path = model_files.save(combo, tmp_path / "combo.safetensors")
    seen = []

    class Seen(Exception):
        """The samples tune scores thresholds on were seen: nothing more to run."""

    def spy(net, samples, *a, **k):
        seen.extend(samples)
        raise Seen

    monkeypatch.setattr(retune_mod, "tune_thresholds", spy)
    images, labels = folders
    with pytest.raises(Seen):
        main(["tune", str(images), str(labels), "--model", str(path), "--kind", "he"])
    he = iio.imread(images / "nuclei_he_stain.png")
    assert [s.image.shape[1:] for s in seen] == [he.shape[:2]]


def test_ctrl_c_while_tuning_thresholds_is_one_true_line(tmp_path, folders, tiny_model_path, monkeypatch, capsys):
    """Interrupted after training, while tuning: one line saying where the best weights are, exit 130."""
    import napari_unet_loop.core.retune as retune_mod

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(retune_mod, "tune_thresholds", interrupt)
    images, labels = folders
    out = tmp_path / "m.safetensors"
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path), "--steps", "2"]
    assert main([*args, "--patch", "64", "--batch", "2", "--val-every", "0"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted while tuning the thresholds")
    assert f"{out} not written" in last and not out.exists()  # only a finished run writes --out
    partial = tmp_path / "m.partial.safetensors"
    if "best model so far is in" in last:
        from napari_unet_loop.core import model_files

        assert str(partial) in last
        model_files.load(partial)  # what the line says is true: the file is there and loads
    for line in err.splitlines():
        if "(best so far, saved)" in line:
            assert partial.exists()  # "saved" is printed only once the file is written


@pytest.fixture
def sized_model_path(tmp_path):
    """The tiny model, recording objects of 10 px at the network's scale."""
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.unet import UNetConfig

    model = model_files.new_model(UNetConfig(depth=2, base_width=4), name="sized", seed=0, diameter=10.0)
    return model_files.save(model, tmp_path / "sized.safetensors")


def test_the_segment_log_says_when_objects_were_taken_as_they_are(sized_model_path):
    """Objects of a size the network learnt unscaled are named as such: the image was not rescaled."""
    import dataclasses

    from napari_unet_loop.cli.segment import _seen_as
    from napari_unet_loop.core import model_files

    model = model_files.load(sized_model_path)
    assert _seen_as(None, 30.0, model) == " (objects 30 px)"
    model.card = dataclasses.replace(model.card, native_diameters=(5.0, 40.0))
    assert _seen_as(None, 30.0, model) == " (objects 30 px, as they are)"
    assert _seen_as(None, 50.0, model) == " (objects 50 px)"


def test_train_head_only_trains_the_last_layer_only(tmp_path, tiny_model_path, folders, capsys):
    """``--head-only``: the rest of the network, normalisation statistics included, stays the start's."""
    import torch

    from napari_unet_loop.core import model_files

    images, labels = folders
    base = ["train", str(images), str(labels), "--from", str(tiny_model_path), "--steps", "3", "--no-tune"]
    before = model_files.load(tiny_model_path).net.state_dict()
    for head in (True, False):
        out = tmp_path / f"ft{head}.safetensors"
        assert main([*base, "--out", str(out), "--val-every", "0", *(["--head-only"] if head else [])]) == 0
        assert ("only the network's last layer trains (--layers last)" in capsys.readouterr().err) is head
        child = model_files.load(out)
        assert child.card.training["config"]["head_only"] is head
        changed = {k.split(".")[0] for k, v in child.net.state_dict().items() if not torch.equal(v, before[k])}
        assert changed == ({"head"} if head else {"head", "down", "bottom", "up", "merge"})
    # a network of random weights has nothing to recalibrate
    scratch = ["train", str(images), str(labels), "--from", "scratch", "--out", str(tmp_path / "s"), "--head-only"]
    assert main(scratch) == 2
    assert (
        "--head-only recalibrates what a trained model makes of what it sees: start from a trained model (--from MODEL)"
        in (capsys.readouterr().err)
    )
    both = ["train", str(images), str(labels), "--from", str(tiny_model_path), "--out", str(tmp_path / "b")]
    assert main([*both, "--head-only", "--update-norm"]) == 2  # the statistics would stay as they are: said
    assert "--update-norm with --layers last" in capsys.readouterr().err and not (tmp_path / "b.safetensors").exists()
    assert main([*both, "--head-only", "--layers", "all"]) == 2
    assert "--head-only is --layers last: it contradicts --layers all" in capsys.readouterr().err


def test_train_layers_auto_trains_the_last_layer_of_a_kinds_own_weights(tmp_path, folders, capsys):
    """``--layers auto`` (the default): the last layer only when the run starts from the model's own weights
    for its images' kind (H&E here); ``--layers all`` and ``--update-norm`` train every layer."""
    from dataclasses import replace

    from napari_unet_loop.core import kind_weights, model_files
    from napari_unet_loop.core.unet import UNetConfig

    tiny = UNetConfig(depth=2, base_width=4)
    start = model_files.new_model(tiny, name="tinyauto", modality="auto", seed=0)
    kind_weights.add_kind_weights(start, "he", model_files.new_model(replace(tiny, in_channels=3), seed=5))
    path = model_files.save(start, tmp_path / "tinyauto")
    images, labels = folders
    only_he = tmp_path / "he.txt"
    only_he.write_text("nuclei_he_stain\n")
    base = ["train", str(images), str(labels), "--steps", "2", "--val-every", "0", "--no-tune"]
    child = tmp_path / "auto.safetensors"
    for name, start_from, extra, head in (
        ("auto", path, ["--include", str(only_he)], True),
        ("all", path, ["--include", str(only_he), "--layers", "all"], False),
        ("norm", path, ["--include", str(only_he), "--update-norm"], False),
        ("freeze", path, ["--include", str(only_he), "--freeze-encoder"], False),  # the expanding path, as asked
        ("grey", path, ["--exclude", str(only_he)], False),  # the general weights: every layer
        ("second", child, ["--include", str(only_he)], True),  # the child's colour network: the loop's next turn
    ):
        out = tmp_path / f"{name}.safetensors"
        assert main([*base, "--from", str(start_from), "--out", str(out), *extra]) == 0, name
        said = "only the network's last layer trains (chosen automatically for weights trained on H&E"
        assert (said in capsys.readouterr().err) is head, name
        assert model_files.load(out).card.training["config"]["head_only"] is head, name


def test_train_measures_the_object_size_and_the_child_rescales_by_default(tmp_path, sized_model_path, capsys):
    """Objects 3x the model's: training images shrink to its scale; the child segments such images by default."""
    from napari_unet_loop.core import model_files

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    yy, xx = np.mgrid[:192, :192]
    for i in range(2):
        lab = np.zeros((192, 192), np.uint16)
        for k, (cy, cx) in enumerate([(40, 40), (40, 140), (140, 60), (150, 150)][: 3 + i]):
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= 15**2] = k + 1  # 30 px across
        iio.imwrite(images / f"c{i}.png", (lab > 0).astype(np.uint8) * 200 + 20)
        tifffile.imwrite(labels / f"c{i}.tif", lab)
    out = tmp_path / "ft.safetensors"
    base = ["train", str(images), str(labels), "--out", str(out), "--from", str(sized_model_path), "--steps", "2"]
    assert main([*base, "--no-tune"]) == 0
    err = capsys.readouterr().err
    assert "objects 30.0 px across (measured on the labels); images rescaled by 0.333" in err
    card = model_files.load(out).card
    assert card.diameter == 10.0 and card.default_diameter == pytest.approx(30.0, abs=0.5)
    assert card.training["object_diameter"] == pytest.approx(30.0, abs=0.5)
    assert card.training["rescaled_by"] == pytest.approx(1 / 3, abs=0.01)
    # the child rescales a new image of such cells by default; --diameter overrides, auto measures
    seg_out = tmp_path / "seg"
    capsys.readouterr()
    assert main(["segment", str(images / "c0.png"), "-o", str(seg_out), "--model", str(out)]) == 0
    assert "objects 30 px" in capsys.readouterr().err  # the log says the image was rescaled
    prov = json.loads((seg_out / "c0.tif.json").read_text())["provenance"]
    assert prov["diameter_setting"] == "model" and prov["diameter"] == pytest.approx(30.0, abs=0.5)
    for value in ("60", "auto"):
        assert main(["segment", str(images / "c0.png"), "-o", str(seg_out), "--model", str(out), "--overwrite",
                     "--diameter", value]) == 0  # fmt: skip
    # nonsense is refused by the parser, with the reason
    for bad in ("0", "-4", "huge"):
        with pytest.raises(SystemExit):
            main(["segment", str(images / "c0.png"), "-o", str(seg_out), "--diameter", bad])
        assert "diameter" in capsys.readouterr().err
    # --diameter to train: the size given wins over the measured one
    assert main([*base, "--no-tune", "--overwrite", "--diameter", "20"]) == 0
    assert model_files.load(out).card.default_diameter == 20.0


def test_a_model_without_a_diameter_refuses_one(tmp_path, folders, tiny_model_path, capsys):
    images, _ = folders
    args = ["segment", str(images / "nuclei_small.png"), "-o", str(tmp_path), "--model", str(tiny_model_path)]
    assert main([*args, "--diameter", "30"]) == 1
    assert "records no object diameter" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ block-wise, OME-Zarr


def _discs_plane(shape=(260, 290), n=45, seed=4) -> np.ndarray:
    """Bright discs (radius 6-10) on a dark background, some across the 128-pixel block borders."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, 20, np.uint8)
    for _ in range(n):
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(6, 11)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 200
    return img


def _write_ome_zarr(path, img, version="0.4", scale=(0.5, 0.5)):
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    fmt, zarr_format = {"0.4": (FormatV04(), 2), "0.5": (FormatV05(), 3)}[version]
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    write_image(
        img, root, axes="yx", fmt=fmt, scale_factors=(), scale=dict(zip("yx", scale)),
        axes_units={"y": "micrometer", "x": "micrometer"},
    )  # fmt: skip
    return path


def test_segment_block_by_block_keeps_where_an_ome_zarr_image_lies(tmp_path, tiny_model_path, capsys):
    """An image placed at (100, 200) um: its labels are placed there too, in the store and the TIFF's record."""
    from napari_unet_loop.io.export import write_ome_zarr
    from napari_unet_loop.io.lazy import open_lazy
    from napari_unet_loop.io.readers import read_ome_zarr

    img = _discs_plane()
    src = write_ome_zarr(
        tmp_path / "placed.zarr", np.zeros(img.shape, np.uint8), img, scale=[0.5, 0.5], translation=[100.0, 200.0]
    ).paths[0]
    assert open_lazy(src).offset == [100.0, 200.0]
    out = tmp_path / "out"
    args = ["segment", str(src), "-o", str(out), "--format", "zarr,tif", "--block", "128"]
    assert main([*args, "--model", str(tiny_model_path)]) == 0, capsys.readouterr().err
    (_, kwargs, _) = read_ome_zarr(out / "placed.zarr")[-1]
    np.testing.assert_allclose(kwargs["translate"], [100.0, 200.0])
    assert json.loads((out / "placed.tif.json").read_text())["translate"] == [100.0, 200.0]


def _zarr_labels(path) -> np.ndarray:
    import zarr

    group = zarr.open_group(str(path), mode="r")["labels"]
    return np.asarray(group[next(iter(group.group_keys()))]["0"])


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_segment_ome_zarr_block_by_block_to_zarr_and_tif(tmp_path, tiny_model_path, capsys, version):
    from napari_unet_loop.io.lazy import open_lazy
    from napari_unet_loop.io.readers import read_ome_zarr

    img = _discs_plane()
    src = _write_ome_zarr(tmp_path / "cells.ome.zarr", img, version)
    out = tmp_path / "out"
    args = ["segment", str(src), "-o", str(out), "--format", "zarr,tif", "--block", "128"]
    assert main([*args, "--model", str(tiny_model_path)]) == 0
    err = capsys.readouterr().err
    assert "block 9/9" in err and "cells.ome.zarr: " in err and "error" not in err
    assert sorted(p.name for p in out.iterdir()) == ["cells.tif", "cells.tif.json", "cells.zarr"]  # ".ome" dropped
    labels = _zarr_labels(out / "cells.zarr")
    assert labels.shape == img.shape and labels.dtype == np.uint32 and labels.any()
    np.testing.assert_array_equal(tifffile.imread(out / "cells.tif"), labels)
    assert open_lazy(out / "cells.tif").scale == pytest.approx([0.5, 0.5])  # the input's pixel size, in both
    (data, kwargs, kind) = read_ome_zarr(out / "cells.zarr")[-1]
    assert kind == "labels" and list(kwargs["scale"]) == pytest.approx([0.5, 0.5])
    prov = json.loads((out / "cells.tif.json").read_text())["provenance"]
    assert prov["input"] == str(src)


def test_segment_an_ome_zarr_z_stack_a_plane_at_a_time_with_stitching(tmp_path, tiny_model_path, capsys):
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    from napari_unet_loop.io.readers import read_ome_zarr

    stack = np.stack([_discs_plane(seed=0)] * 4)  # the same nuclei in 4 planes: one 3D object each when joined
    root = zarr.open_group(str(tmp_path / "stack.ome.zarr"), mode="w", zarr_format=2)
    write_image(
        stack, root, axes="zyx", fmt=FormatV04(), scale_factors=(), scale={"z": 2.0, "y": 0.5, "x": 0.5},
        axes_units={a: "micrometer" for a in "zyx"},
    )  # fmt: skip
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "stack.ome.zarr"), "-o", str(out), "--model", str(tiny_model_path)]
    assert main([*args, "--format", "zarr,tif", "--stitch-z", "0.5", "--block", "128"]) == 0
    err = capsys.readouterr().err
    assert "plane 4/4" in err and "3D object(s) over 4 plane(s)" in err and "error" not in err
    labels = _zarr_labels(out / "stack.zarr")
    assert labels.shape == stack.shape and labels.any()
    np.testing.assert_array_equal(labels[0], labels[3])  # identical planes: the same 3D ids in each
    np.testing.assert_array_equal(tifffile.imread(out / "stack.tif"), labels)
    (_, kwargs, kind) = read_ome_zarr(out / "stack.zarr")[-1]
    assert kind == "labels" and list(kwargs["scale"]) == pytest.approx([2.0, 0.5, 0.5])
    # a 2D image has no planes to join
    flat = _write_ome_zarr(tmp_path / "flat.ome.zarr", _discs_plane())
    code = main(["segment", str(flat), "-o", str(out), "--stitch-z", "0.5", "--model", str(tiny_model_path)])
    assert code == 1 and "this image is one 2D plane" in capsys.readouterr().err


def test_segment_ome_zarr_to_tif_only_leaves_no_store_behind(tmp_path, tiny_model_path, capsys, monkeypatch):
    import napari_unet_loop.cli.segment as segment_mod

    src = _write_ome_zarr(tmp_path / "cells.zarr", _discs_plane())
    full = tmp_path / "full"

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:  # the TIFF cannot be written: the hidden store goes all the same
        m.setattr(segment_mod, "export_labels", disk_full)
        assert main(["segment", str(src), "-o", str(full), "--block", "128", "--model", str(tiny_model_path)]) == 1
    err = capsys.readouterr().err
    assert "cannot write its labels: disk full" in err and "--resume" not in err and list(full.iterdir()) == []
    out = tmp_path / "out"
    assert main(["segment", str(src), "-o", str(out), "--block", "128", "--model", str(tiny_model_path)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cells.tif", "cells.tif.json"]  # no hidden block store left
    # -o naming one file: that file, as for other images (it was a folder of that name holding cells.tif)
    one = tmp_path / "one" / "result.tif"
    one.parent.mkdir()
    assert main(["segment", str(src), "-o", str(one), "--block", "128", "--model", str(tiny_model_path)]) == 0
    assert one.is_file() and sorted(p.name for p in one.parent.iterdir()) == ["result.tif", "result.tif.json"]
    np.testing.assert_array_equal(tifffile.imread(one), tifffile.imread(out / "cells.tif"))


def test_tiff_with_cluster_none_goes_block_by_block_like_the_ome_zarr(tmp_path, tiny_model_path, capsys, monkeypatch):
    import napari_unet_loop.cli.segment as cli_segment

    monkeypatch.setattr(cli_segment, "LARGE_PIXELS", 100 * 100)  # this small plane counts as large
    img = _discs_plane()
    tifffile.imwrite(tmp_path / "a.tif", img, tile=(64, 64))
    _write_ome_zarr(tmp_path / "b.ome.zarr", img)
    out = tmp_path / "out"
    args = ["--block", "128", "--model", str(tiny_model_path), "--format", "zarr"]
    assert main(["segment", str(tmp_path / "a.tif"), "-o", str(out), "--cluster", "none", *args]) == 0
    assert main(["segment", str(tmp_path / "b.ome.zarr"), "-o", str(out), *args]) == 0
    assert "block 9/9" in capsys.readouterr().err
    np.testing.assert_array_equal(_zarr_labels(out / "a.zarr"), _zarr_labels(out / "b.zarr"))


def test_segment_resume_over_a_folder_keeps_the_images_finished_before(tmp_path, tiny_model_path, capsys):
    """A folder's run cut after its first image: --resume finishes the rest (it refused: 'a.zarr exists')."""
    from napari_unet_loop.core import model_files
    from napari_unet_loop.io.lazy import open_lazy
    from napari_unet_loop.parallel import segment_to_zarr

    folder = tmp_path / "in"
    folder.mkdir()
    for name, seed in (("a", 1), ("b", 2)):
        _write_ome_zarr(folder / f"{name}.ome.zarr", _discs_plane(seed=seed))
    out = tmp_path / "out"
    model_args = ["--model", str(tiny_model_path)]
    args = ["segment", str(folder), "-o", str(out), "--format", "zarr", "--block", "128", *model_args]
    assert main(["segment", str(folder / "a.ome.zarr"), *args[2:]]) == 0
    finished = (out / "a.zarr" / "labels").stat().st_mtime_ns
    model = model_files.load(tiny_model_path)
    segment_to_zarr(
        open_lazy(folder / "b.ome.zarr"), model, out / "b.zarr", block=128, postprocess=model.card.postprocess,
        name="b", stop_after=2,
    )  # fmt: skip
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "1 of 2 image(s) finished before" in err and "resuming: 2 of 9 block(s) already done" in err
    assert (out / "a.zarr" / "labels").stat().st_mtime_ns == finished and _zarr_labels(out / "b.zarr").any()
    assert main([*args, "--resume"]) == 0 and "2 of 2 image(s) finished before" in capsys.readouterr().err


def test_segment_resume_finishes_an_interrupted_block_wise_run(tmp_path, tiny_model_path, capsys):
    from napari_unet_loop.core import model_files
    from napari_unet_loop.io.chunked import partial_path
    from napari_unet_loop.io.lazy import open_lazy
    from napari_unet_loop.parallel import segment_to_zarr

    src = _write_ome_zarr(tmp_path / "cells.ome.zarr", _discs_plane())
    out = tmp_path / "out"
    model = model_files.load(tiny_model_path)
    # what an interrupted `segment ... --block 128` leaves: the CLI's settings (default margin, the card's thresholds)
    part = segment_to_zarr(
        open_lazy(src), model, out / "cells.zarr", block=128, postprocess=model.card.postprocess, name="cells",
        stop_after=2,
    )  # fmt: skip
    assert part.path == partial_path(out / "cells.zarr") and not (out / "cells.zarr").exists()
    args = ["segment", str(src), "-o", str(out), "--format", "zarr", "--block", "128", "--model", str(tiny_model_path)]
    assert main(args) == 1  # without --resume: the leftover is not silently redone or overwritten
    err = capsys.readouterr().err
    assert "error: " in err and "--resume" in err
    assert main([*args, "--resume"]) == 0
    assert "resuming: 2 of 9 block(s) already done" in capsys.readouterr().err
    assert not part.path.exists()
    fresh = tmp_path / "fresh"
    assert main(["segment", str(src), "-o", str(fresh), *args[4:]]) == 0
    np.testing.assert_array_equal(_zarr_labels(out / "cells.zarr"), _zarr_labels(fresh / "cells.zarr"))


def test_segment_resume_of_a_cut_overwrite_run_does_not_keep_the_old_labels(tmp_path, tiny_model_path, capsys):
    """A run replacing finished outputs, cut short: --resume alone says what to add, it never keeps the old store."""
    from napari_unet_loop.core import model_files
    from napari_unet_loop.io.chunked import partial_path
    from napari_unet_loop.io.lazy import open_lazy
    from napari_unet_loop.parallel import segment_to_zarr

    src = _write_ome_zarr(tmp_path / "cells.ome.zarr", _discs_plane())
    out = tmp_path / "out"
    args = ["segment", str(src), "-o", str(out), "--format", "zarr", "--block", "128", "--model", str(tiny_model_path)]
    assert main(args) == 0
    old = _zarr_labels(out / "cells.zarr").copy()
    model = model_files.load(tiny_model_path)
    pp = model.card.postprocess.__class__(**{**model.card.postprocess.to_dict(), "min_size": 200})  # other labels
    part = segment_to_zarr(
        open_lazy(src), model, out / "cells.zarr", block=128, postprocess=pp, name="cells", stop_after=2,
        overwrite=True,
    )  # fmt: skip
    assert part.path == partial_path(out / "cells.zarr")
    capsys.readouterr()
    assert main([*args, "--min-size", "200", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "unfinished store of a run that replaces cells's outputs" in err and "add --overwrite to --resume" in err
    np.testing.assert_array_equal(_zarr_labels(out / "cells.zarr"), old)  # nothing changed
    assert main([*args, "--min-size", "200", "--resume", "--overwrite"]) == 0
    assert "resuming: 2 of 9 block(s) already done" in capsys.readouterr().err and not part.path.exists()


def test_segment_resume_writes_only_the_formats_a_cut_run_had_not_written(tmp_path, tiny_model_path, capsys):
    """A run cut between two formats of an image: --resume writes the missing one, keeps the other (it refused)."""
    tifffile.imwrite(tmp_path / "cells.tif", _discs_plane())
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "cells.tif"), "-o", str(out), "--model", str(tiny_model_path)]
    assert main([*args, "--format", "tif"]) == 0  # what a run of tif,csv leaves when cut after its TIFF
    kept = (out / "cells.tif").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*args, "--format", "tif,csv", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "1 image(s) have some of their outputs; only the missing ones are written: cells (csv)" in err
    assert (out / "cells.csv").exists() and (out / "cells.tif").stat().st_mtime_ns == kept
    assert main([*args, "--format", "tif,csv", "--resume"]) == 0
    assert "1 of 1 image(s) finished before" in capsys.readouterr().err
    # the outputs kept must be this command's: a TIFF made with other settings is not joined by a new CSV
    (out / "cells.csv").unlink()
    assert main([*args, "--format", "tif,csv", "--min-size", "500", "--resume"]) == 2
    assert "cells.tif was made by a run with another thresholds: --resume finishes a run of the same" in (
        capsys.readouterr().err
    )
    assert not (out / "cells.csv").exists() and (out / "cells.tif").stat().st_mtime_ns == kept


def test_segment_resume_refuses_a_finished_image_made_with_other_settings(tmp_path, tiny_model_path, capsys):
    """A folder's image finished with other thresholds: --resume refuses before any work, naming it (it was kept
    silently, and the batch mixed two settings)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, seed in (("a", 1), ("b", 2)):
        tifffile.imwrite(folder / f"{name}.tif", _discs_plane(seed=seed))
    out = tmp_path / "out"
    args = ["segment", str(folder), "-o", str(out), "--model", str(tiny_model_path), "--format", "tif"]
    assert main(["segment", str(folder / "a.tif"), *args[2:], "--min-size", "500"]) == 0
    kept = (out / "a.tif").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "a.tif was made by a run with another thresholds: --resume finishes a run of the same command" in err
    assert not (out / "b.tif").exists() and (out / "a.tif").stat().st_mtime_ns == kept
    corrected = tifffile.imread(out / "a.tif")  # corrected by hand since: it was still made so
    corrected[:4, :4] = corrected.max() + 1
    tifffile.imwrite(out / "a.tif", corrected)
    kept = (out / "a.tif").stat().st_mtime_ns
    assert main([*args, "--resume"]) == 2
    assert "a.tif was made by a run with another thresholds" in capsys.readouterr().err
    assert not (out / "b.tif").exists() and (out / "a.tif").stat().st_mtime_ns == kept
    assert main([*args, "--min-size", "500", "--resume"]) == 0  # the same command: the rest joins it
    assert "1 of 2 image(s) finished before" in capsys.readouterr().err and (out / "b.tif").exists()


def test_segment_resume_writes_the_other_formats_from_a_finished_block_wise_store(tmp_path, tiny_model_path, capsys):
    """A block-wise run cut after its OME-Zarr, before its TIFF: --resume writes the TIFF from the store."""
    src = _write_ome_zarr(tmp_path / "cells.ome.zarr", _discs_plane())
    out = tmp_path / "out"
    args = ["segment", str(src), "-o", str(out), "--block", "128", "--model", str(tiny_model_path)]
    assert main([*args, "--format", "zarr"]) == 0
    kept = (out / "cells.zarr" / "labels").stat().st_mtime_ns
    first = re.search(r"cells.ome.zarr: \d+ objects", capsys.readouterr().err).group()
    assert main([*args, "--format", "zarr,tif", "--min-size", "200", "--resume"]) == 2  # not the same command
    err = capsys.readouterr().err
    assert "cells.zarr was made by a run with another" in err and "--overwrite" in err
    assert not (out / "cells.tif").exists()
    assert main([*args, "--format", "zarr,tif", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "cells.zarr was finished before; the other formats are written from it" in err and "block 1/" not in err
    assert (out / "cells.zarr" / "labels").stat().st_mtime_ns == kept
    labels = _zarr_labels(out / "cells.zarr")
    np.testing.assert_array_equal(tifffile.imread(out / "cells.tif"), labels)
    assert first in err  # the count the run that made the store gave
    # a store made with other flips than asked is not taken (--tta was not compared)
    (out / "cells.tif").unlink()
    (out / "cells.tif.json").unlink()
    assert main([*args, "--format", "zarr,tif", "--tta", "--resume"]) == 2
    assert "cells.zarr was made by a run with another tta" in capsys.readouterr().err


def test_segment_resume_judges_a_store_by_its_own_record_not_an_older_sidecar(
    tmp_path, tiny_model_path, capsys, monkeypatch
):
    """A block-wise --overwrite leaves the sidecar of the store it replaced: --resume went by that old record."""
    import napari_unet_loop.cli.segment as cli_segment

    tifffile.imwrite(tmp_path / "x.tif", _discs_plane(shape=(128, 128), n=12))
    out = tmp_path / "out"
    base = ["segment", str(tmp_path / "x.tif"), "-o", str(out), "--format", "zarr", "--model", str(tiny_model_path)]
    assert main([*base, "--min-size", "500"]) == 0  # in memory, with a sidecar
    monkeypatch.setattr(cli_segment, "LARGE_PIXELS", 100)  # now block by block
    assert main([*base, "--overwrite", "--block", "64"]) == 0
    assert not (out / "x.zarr.json").exists()  # the record of the store replaced goes with it
    (out / "x.zarr.json").write_text('{"provenance": {"thresholds": {"min_size": 500}}}')  # as older releases left it
    capsys.readouterr()
    assert main([*base, "--block", "64", "--resume"]) == 0  # the command that made the store: finished
    assert "finished before" in capsys.readouterr().err
    assert main([*base, "--min-size", "500", "--resume"]) == 2  # the old record's command: not this store's
    assert "x.zarr was made by a run with another thresholds" in capsys.readouterr().err


def test_segment_resume_writes_the_other_formats_from_a_store_written_in_memory(
    tmp_path, tiny_model_path, capsys, monkeypatch
):
    """A large TIFF written in memory as zarr,tif and cut after its zarr: with --resume it goes block-wise, and
    writes the TIFF from that store (it read level '0' of a store whose levels are s0, s1...: KeyError)."""
    import napari_unet_loop.cli.segment as cli_segment

    monkeypatch.setattr(cli_segment, "LARGE_PIXELS", 100 * 100)  # this small plane counts as large
    tifffile.imwrite(tmp_path / "cells.tif", _discs_plane())
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "cells.tif"), "-o", str(out), "--format", "zarr,tif"]
    assert main([*args, "--model", str(tiny_model_path)]) == 0
    whole = tifffile.imread(out / "cells.tif")
    (out / "cells.tif").unlink()
    (out / "cells.tif.json").unlink()
    capsys.readouterr()
    assert main([*args, "--model", str(tiny_model_path), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "cells.zarr was finished before" in err and f"cells.tif: {len(np.unique(whole[whole > 0]))} objects" in err
    np.testing.assert_array_equal(tifffile.imread(out / "cells.tif"), whole)


def test_an_image_segmented_whole_removes_the_hidden_store_of_a_cut_block_wise_run(tmp_path, tiny_model_path, capsys):
    """A cut block-wise run to TIFF leaves a hidden store: a later run of the image in memory removes it, says so."""
    from napari_unet_loop.cli.segment import _store_target
    from napari_unet_loop.core import model_files
    from napari_unet_loop.io.chunked import partial_path
    from napari_unet_loop.io.lazy import open_lazy
    from napari_unet_loop.parallel import segment_to_zarr

    tifffile.imwrite(tmp_path / "cells.tif", _discs_plane())
    out = tmp_path / "out"
    hidden = _store_target(out, "cells", ["tif"])
    model = model_files.load(tiny_model_path)
    part = segment_to_zarr(
        open_lazy(tmp_path / "cells.tif"), model, hidden, block=128, postprocess=model.card.postprocess,
        name="cells", stop_after=2,
    )  # fmt: skip
    assert part.path == partial_path(hidden) and part.path.exists() and part.path.name.startswith(".")
    assert main(["segment", str(tmp_path / "cells.tif"), "-o", str(out), "--model", str(tiny_model_path)]) == 0
    assert f"removed {part.path.name}, the unfinished store of an earlier run" in capsys.readouterr().err
    assert not part.path.exists() and sorted(p.name for p in out.iterdir()) == ["cells.tif", "cells.tif.json"]


def test_zarr_that_is_not_ome_zarr_is_a_clear_error(tmp_path, tiny_model_path, capsys):
    import zarr

    arr = zarr.open_array(str(tmp_path / "raw.zarr"), mode="w", shape=(100, 100), dtype="uint8", zarr_format=2)
    arr[:] = 5
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w").create_array("x", shape=(100, 100), dtype="uint8")
    out = tmp_path / "out"
    for name, words in [("raw.zarr", "plain zarr array"), ("group.zarr", "no 'multiscales'")]:
        code = main(["segment", str(tmp_path / name), "-o", str(out), "--model", str(tiny_model_path)])
        assert code in (1, 2)
        err = capsys.readouterr().err
        line = next(line for line in err.splitlines() if line.startswith("error:"))
        assert name in line and words in line and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_unreachable_cluster_is_a_clear_error(tmp_path, tiny_model_path, capsys, monkeypatch):
    distributed = pytest.importorskip("distributed")
    real = distributed.Client

    def quick(*args, **kwargs):  # the same refusal, without the 10 s wait
        return real(*args, **{**kwargs, "timeout": "1s"})

    monkeypatch.setattr(distributed, "Client", quick)
    src = _write_ome_zarr(tmp_path / "cells.ome.zarr", _discs_plane())
    out = tmp_path / "out"
    args = ["segment", str(src), "-o", str(out), "--block", "128", "--model", str(tiny_model_path)]
    assert main([*args, "--cluster", "tcp://127.0.0.1:9"]) == 2  # refused before any work
    err = capsys.readouterr().err
    assert "error: " in err and "cannot reach the dask scheduler at tcp://127.0.0.1:9" in err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())  # no partial store either


def test_rerun_into_the_input_folder_ignores_its_own_zarr_outputs(tmp_path, tiny_model_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "cells.tif", _discs_plane((100, 120), n=8))
    args = ["segment", str(images), "-o", str(images), "--format", "zarr", "--model", str(tiny_model_path)]
    assert main(args) == 0
    assert (images / "cells.zarr").is_dir()
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 0, capsys.readouterr().err  # worked before zarr folders were inputs


def test_a_folder_on_a_cluster_is_one_task_per_file_with_the_same_labels(tmp_path, tiny_model_path, capfd):
    """... and a file that fails there is one line, as here (the workers printed dask's traceback besides)."""
    pytest.importorskip("distributed")
    images = tmp_path / "images"
    images.mkdir()
    for k in range(3):
        tifffile.imwrite(images / f"field{k}.tif", _discs_plane((90, 110), n=6, seed=k))
    tifffile.imwrite(images / "tiny.tif", np.array([[0, 255], [255, 0]], np.uint8))
    args = ["--model", str(tiny_model_path), "--format", "tif,csv"]
    assert main(["segment", str(images), "-o", str(tmp_path / "here"), *args]) == 1
    capfd.readouterr()
    assert main(["segment", str(images), "-o", str(tmp_path / "there"), "--cluster", "local:2", *args]) == 1
    err = capfd.readouterr().err  # the workers' output too (other processes)
    assert "4 image(s) as one task each on the cluster" in err and "Traceback" not in err
    assert [line for line in err.splitlines() if "error" in line.lower()] == [
        f"error: {images / 'tiny.tif'}: image of 2x2 pixels is too small: need at least 8x8",
        "error: 1 of 4 image(s) could not be segmented or written; the others were",
    ]
    for k in range(3):
        here, there = (tifffile.imread(tmp_path / d / f"field{k}.tif") for d in ("here", "there"))
        np.testing.assert_array_equal(here, there)
        assert (tmp_path / "there" / f"field{k}.csv").read_text() == (tmp_path / "here" / f"field{k}.csv").read_text()


def test_a_large_tiff_stack_goes_a_plane_at_a_time_into_ome_zarr_as_in_memory(
    tmp_path, tiny_model_path, capsys, monkeypatch
):
    import napari_unet_loop.cli.segment as cli_segment

    stack = np.stack([_discs_plane((90, 110), n=5, seed=s) for s in range(3)])
    stack[2] = np.random.default_rng(0).normal(20, 5, stack[2].shape).clip(0, 255)  # a plane of noise only
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    args = ["segment", str(tmp_path / "stack.tif"), "--model", str(tiny_model_path), "--stitch-z", "0.5"]
    assert main([*args, "-o", str(tmp_path / "whole"), "--format", "tif"]) == 0  # small: read whole, in memory
    assert "plane 3/3" not in capsys.readouterr().err
    monkeypatch.setattr(cli_segment, "LARGE_PIXELS", 50 * 50)  # this stack counts as large
    out = tmp_path / "out"
    assert main([*args, "-o", str(out), "--format", "zarr"]) == 0
    err = capsys.readouterr().err
    assert (
        "plane 3/3" in err and "3D object(s) over 3 plane(s)" in err and "error" not in err
    )  # lazily, a plane at a time
    expected = tifffile.imread(tmp_path / "whole" / "stack.tif")
    np.testing.assert_array_equal(_zarr_labels(out / "stack.zarr"), expected)  # the same stack normalisation
    # without --stitch-z the same objects, with ids that run on over the stack (in memory: from 1 in each plane)
    plain = [a for a in args if a not in ("--stitch-z", "0.5")]
    assert main([*plain, "-o", str(tmp_path / "whole2"), "--format", "tif"]) == 0
    assert main([*plain, "-o", str(tmp_path / "lazy2"), "--format", "zarr"]) == 0
    capsys.readouterr()
    per_plane, over_stack = (
        tifffile.imread(tmp_path / "whole2" / "stack.tif"),
        _zarr_labels(tmp_path / "lazy2" / "stack.zarr"),
    )
    for a, b in zip(per_plane, over_stack, strict=True):
        pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
        assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]  # one to one
    ids = [set(np.unique(p[p > 0]).tolist()) for p in over_stack]
    assert all(not (x & y) for k, x in enumerate(ids) for y in ids[k + 1 :])  # no id in two planes
    # a time series is not a Z stack: read whole
    tifffile.imwrite(tmp_path / "movie.tif", stack, imagej=True, metadata={"axes": "TYX"})
    assert (
        main(
            [
                "segment",
                str(tmp_path / "movie.tif"),
                "-o",
                str(out),
                "--format",
                "zarr",
                "--model",
                str(tiny_model_path),
            ]
        )
        == 0
    )
    assert "plane 3/3" not in capsys.readouterr().err and (out / "movie.zarr").is_dir()


def test_train_partial_labels_trusts_only_the_marked_objects_and_their_surroundings(
    tmp_path, folders, tiny_model_path, capsys, monkeypatch
):
    """Ground truth marking some cells: the unmarked ones are left out, not taught as background."""
    import napari_unet_loop.cli.train as cli_mod
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.edits import labelled_region

    images, labels = folders
    for f in labels.glob("*.tif"):  # erase every other object: the file marks half the nuclei
        lab = tifffile.imread(f)
        lab[np.isin(lab, np.unique(lab)[2::2])] = 0
        tifffile.imwrite(f, lab)
    seen = {}
    real = cli_mod.iter_train

    def spy(net, train, val, *a, **k):
        seen["train"], seen["val"] = train, val
        return real(net, train, val, *a, **k)

    monkeypatch.setattr(cli_mod, "iter_train", spy)
    out = tmp_path / "m.safetensors"
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path), "--steps", "1"]
    assert main([*args, "--patch", "64", "--batch", "2", "--partial-labels", "--val-fraction", "0.3"]) == 0
    for s in seen["train"]:  # the whole images, their validation stripes ignored too
        assert s.ignore is not None and s.ignore[~labelled_region(s.labels, margin=40)].all()  # far: left out
    for s in seen["val"]:
        assert s.ignore is not None and s.ignore.any()
        assert not (s.ignore & (s.labels > 0)).any()  # every marked pixel is scored
    assert model_files.load(out).card.training["data"]["partial_labels"] is True
    assert main([*args, "--patch", "64", "--batch", "2", "--overwrite"]) == 0  # without the flag: all pixels count
    assert all(s.ignore is None or not s.ignore.any() for s in seen["val"])
    assert "partial_labels" not in model_files.load(out).card.training["data"]


def _gold_truth_folders(tmp_path):
    """Two frames as the Cell Tracking Challenge ships them, each with two cells and only one marked."""
    images, labels = tmp_path / "01", tmp_path / "01_GT" / "SEG"
    images.mkdir()
    labels.mkdir(parents=True)
    yy, xx = np.mgrid[:96, :96]
    for t in range(2):
        frame = np.random.default_rng(t).normal(10, 2, (96, 96)).astype(np.float32)
        lab = np.zeros((96, 96), np.uint16)
        for i, (cy, cx) in enumerate([(25, 25), (70, 60)], 1):
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 100
            frame[disc] += 100
            lab[disc] = i if i == 1 else 0  # the second cell is not marked
        tifffile.imwrite(images / f"t00{t}.tif", frame)
        tifffile.imwrite(labels / f"man_seg00{t}.tif", lab)
    return images, labels


def test_cell_tracking_challenge_gold_truth_trains_as_labels_that_mark_some_cells(tmp_path, tiny_model_path, capsys):
    """man_segNNN files (gold truth that may mark only some cells): --partial-labels by default, unless told."""
    images, labels = _gold_truth_folders(tmp_path)
    out = tmp_path / "m.safetensors"
    args = ["train", str(images), str(labels), "--out", str(out), "--from", str(tiny_model_path), "--steps", "1"]
    assert main([*args, "--patch", "32", "--batch", "2", "--no-tune"]) == 0
    assert "Cell Tracking Challenge gold truth (man_segNNN), which may mark only some cells" in capsys.readouterr().err
    assert json.loads(out.with_suffix(".json").read_text())["training"]["data"]["partial_labels"] is True
    assert main([*args, "--patch", "32", "--batch", "2", "--no-tune", "--overwrite", "--complete-labels"]) == 0
    assert "may mark only some cells" not in capsys.readouterr().err
    assert "partial_labels" not in json.loads(out.with_suffix(".json").read_text())["training"]["data"]


def test_tune_scores_labels_of_some_cells_near_them_as_train_does(tmp_path, tiny_model_path, capsys, monkeypatch):
    """``tune`` on man_segNNN truth: the unmarked cell is left out of the search's scores, unless told."""
    import napari_unet_loop.core.retune as retune_mod

    images, labels = _gold_truth_folders(tmp_path)
    seen = []
    real = retune_mod.tune_thresholds

    def spy(net, samples, *a, **k):
        seen.append(samples)
        return real(net, samples, *a, **k)

    monkeypatch.setattr(retune_mod, "tune_thresholds", spy)
    args = ["tune", str(images), str(labels), "--model", str(tiny_model_path), "--modality", "none"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "may mark only some cells: scoring the thresholds on the marked cells" in captured.err
    assert json.loads(captured.out)["partial_labels"] is True
    for s in seen[-1]:  # the marked cell is scored, the unmarked one (at 70, 60 before rescaling) is not
        assert s.ignore is not None and not (s.ignore & (s.labels > 0)).any()
        assert s.ignore.mean() > 0.5
    assert main([*args, "--complete-labels"]) == 0
    assert "partial_labels" not in json.loads(capsys.readouterr().out)
    assert all(s.ignore is None or not s.ignore.any() for s in seen[-1])
    assert main([*args, "--partial-labels"]) == 0  # the flag on any files, as train takes it
    assert json.loads(capsys.readouterr().out)["partial_labels"] is True


def test_evaluate_partial_labels_scores_only_near_the_marked_objects(tmp_path, tiny_model_path, capsys, monkeypatch):
    """Truth that marks some cells: a cell found far from them is neither right nor invented with the flag."""
    import napari_unet_loop.cli.evaluate as ev

    images, labels = tmp_path / "01", tmp_path / "SEG"
    images.mkdir()
    labels.mkdir()
    yy, xx = np.mgrid[:96, :96]
    truth = np.zeros((96, 96), np.uint16)
    truth[(yy - 25) ** 2 + (xx - 25) ** 2 <= 100] = 1
    tifffile.imwrite(images / "t000.tif", np.zeros((96, 96), np.float32))
    tifffile.imwrite(labels / "man_seg000.tif", truth)
    found = truth.copy()
    found[(yy - 75) ** 2 + (xx - 70) ** 2 <= 100] = 2  # a cell the truth does not mark
    monkeypatch.setattr(ev, "_segment_array", lambda *a, **k: (found, None, None))
    args = ["evaluate", str(images), str(labels), "--model", str(tiny_model_path), "--json", "--errors"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert (plain["ap50"], plain["n_pred"], plain["errors"]["invented"]) == (0.5, 2, 1)
    assert main([*args, "--partial-labels"]) == 0
    near = json.loads(capsys.readouterr().out)
    assert (near["ap50"], near["n_pred"], near["errors"]["invented"], near["partial_labels"]) == (1.0, 1, 0, True)


def test_list_files_name_ome_tiffs_by_their_base_name():
    """``--include``/``--exclude``/``--val-list``: ``cells`` names ``cells.ome.tif`` (as ``cells.ome`` still does)."""
    from napari_unet_loop.cli._common import _listed

    assert _listed(Path("a/cells.ome.tif"), {"cells"}) and _listed(Path("a/cells.ome.tif"), {"cells.ome"})
    assert _listed(Path("a/cells.tif"), {"cells"}) and not _listed(Path("a/cells2.tif"), {"cells"})


def test_tta_is_auto_by_default_and_the_flags_turn_it_on_or_off():
    """``--tta`` still means on, before or after the inputs (a value after it swallowed the first input);
    ``--no-tta`` off; neither: small images get it (auto)."""
    from napari_unet_loop.cli._common import _settings
    from napari_unet_loop.cli.main import build_parser

    parser = build_parser()
    for flags, want in (([], "auto"), (["--tta"], True), (["--no-tta"], False)):
        for cli in (["segment", *flags, "in.tif", "-o", "out"], ["segment", "in.tif", "-o", "out", *flags]):
            args = parser.parse_args(cli)
            assert args.inputs == ["in.tif"] and args.tta == want and _settings(args, "cpu", None).tta == want
        args = parser.parse_args(["evaluate", *flags, "images", "labels"])
        assert (args.images, args.labels) == ("images", "labels") and args.tta == want
