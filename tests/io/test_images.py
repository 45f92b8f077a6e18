"""Tests of image reading and image/label pairing."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_unet_loop.io.images import (
    ReadError,
    expand_inputs,
    file_axes,
    fit_labels,
    pair_files,
    read_image,
    read_label_file,
    unpaired_note,
)


def _touch(folder, *names):
    folder.mkdir(exist_ok=True)
    for n in names:
        tifffile.imwrite(folder / n, np.zeros((4, 4), np.uint8))


def test_pairs_by_base_name_whatever_the_suffix(tmp_path):
    _touch(tmp_path / "im", "a.tif", "b.tif", "c.tif", "notes.txt")
    _touch(tmp_path / "lab", "a.tif", "b.tiff")
    pairs = pair_files(tmp_path / "im", tmp_path / "lab")
    assert [(i.name, lab.name) for i, lab in pairs] == [("a.tif", "a.tif"), ("b.tif", "b.tiff")]


def test_pairs_label_files_with_common_affixes(tmp_path):
    _touch(tmp_path / "im", "cell_01.tif", "cell_02.tif")
    _touch(tmp_path / "lab", "cell_01_masks.tif", "cell_02_cp_masks.tif")
    pairs = pair_files(tmp_path / "im", tmp_path / "lab")
    assert [lab.name for _, lab in pairs] == ["cell_01_masks.tif", "cell_02_cp_masks.tif"]


def test_pairs_cell_tracking_challenge_frames_by_number(tmp_path):
    _touch(tmp_path / "im", "t000.tif", "t001.tif", "t002.tif", "t013.tif")
    _touch(tmp_path / "lab", "man_seg000.tif", "man_seg013.tif")
    pairs = pair_files(tmp_path / "im", tmp_path / "lab")
    assert [(i.name, lab.name) for i, lab in pairs] == [("t000.tif", "man_seg000.tif"), ("t013.tif", "man_seg013.tif")]


def test_each_image_pairs_by_its_exact_name_else_without_label_affixes(tmp_path):
    """A folder mixing both namings pairs every image (x2 was left out); the exact name comes first."""
    _touch(tmp_path / "im", "x1.tif", "x2.tif", "x3.tif", "x4.png")
    _touch(tmp_path / "lab", "x1.tif", "x1_mask.tif", "x2_mask.tif", "x4.tif")
    pairs = pair_files(tmp_path / "im", tmp_path / "lab")
    assert [(i.name, lab.name) for i, lab in pairs] == [
        ("x1.tif", "x1.tif"),
        ("x2.tif", "x2_mask.tif"),
        ("x4.png", "x4.tif"),
    ]
    note = unpaired_note(tmp_path / "im", tmp_path / "lab", pairs)
    assert note == f"1 image(s) in {tmp_path / 'im'} have no label file and are left out: x3.tif"
    assert unpaired_note(tmp_path / "im", tmp_path / "lab", [*pairs, (tmp_path / "im" / "x3.tif", None)]) is None


def test_ome_tif_names_pair_as_tif_names_and_exact_names_pair_first(tmp_path):
    _touch(tmp_path / "im", "cells.ome.tif", "dish.tif", "a.tif", "a_mask.tif")
    _touch(tmp_path / "lab", "cells_mask.ome.tif", "dish.ome.tif", "a_mask.tif")
    pairs = pair_files(tmp_path / "im", tmp_path / "lab")
    assert [(i.name, lab.name) for i, lab in pairs] == [
        ("a_mask.tif", "a_mask.tif"),  # its own name, though a.tif sorts first and could take it without affix
        ("cells.ome.tif", "cells_mask.ome.tif"),
        ("dish.tif", "dish.ome.tif"),
    ]


def test_annotations_of_one_slice_of_a_3d_frame_pair_with_no_frame(tmp_path):
    """man_seg_TTT_ZZZ annotates slice ZZZ of frame TTT: by its last number it paired with frame ZZZ."""
    _touch(tmp_path / "im", *(f"t{i:03d}.tif" for i in range(7)))
    _touch(tmp_path / "lab", "man_seg_002_004.tif", "man_seg_005_001.tif")
    with pytest.raises(ReadError, match="man_seg_002_004.tif and the like annotate one slice of a 3D frame"):
        pair_files(tmp_path / "im", tmp_path / "lab")
    _touch(tmp_path / "lab", "man_seg003.tif")  # a whole frame's annotation beside them still pairs
    pairs = pair_files(tmp_path / "im", tmp_path / "lab")
    assert [(i.name, lab.name) for i, lab in pairs] == [("t003.tif", "man_seg003.tif")]


def test_ambiguous_numbers_do_not_pair(tmp_path):
    _touch(tmp_path / "im", "t1.tif", "s1.tif")
    _touch(tmp_path / "lab", "man_seg1.tif")
    with pytest.raises(ReadError, match="no image"):
        pair_files(tmp_path / "im", tmp_path / "lab")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ReadError, match="is not a folder"):
        pair_files(tmp_path / "nope", tmp_path)


def test_read_image_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(ReadError, match="cannot read"):
        read_image(bad)
    with pytest.raises(ReadError, match="does not exist"):
        read_image(tmp_path / "missing.png")


def test_expand_inputs_lists_folders_sorted(tmp_path):
    _touch(tmp_path / "im", "b.tif", "a.tif")
    assert [p.name for p in expand_inputs([tmp_path / "im"])] == ["a.tif", "b.tif"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReadError, match=r"holds no image files \(.*\.tif.*\) or OME-Zarr images \(\.zarr\)"):
        expand_inputs([tmp_path / "empty"])


def test_label_prefixes_need_a_separator(tmp_path):
    _touch(tmp_path / "im", "img_a.tif", "img_b.tif", "segment01.tif")
    _touch(tmp_path / "lab", "masks_img_a.tif", "mask-img_b.tif")
    pairs = pair_files(tmp_path / "im", tmp_path / "lab")
    assert [(i.name, lab.name) for i, lab in pairs] == [
        ("img_a.tif", "masks_img_a.tif"),
        ("img_b.tif", "mask-img_b.tif"),
    ]
    _touch(tmp_path / "lab2", "segment01.tif")  # "seg" is not a prefix here: exact name
    assert pair_files(tmp_path / "im", tmp_path / "lab2")[0][1].name == "segment01.tif"


def test_a_label_name_in_two_formats_pairs_with_the_first(tmp_path):
    _touch(tmp_path / "im", "a.tif")
    _touch(tmp_path / "lab", "a.tif", "a.png")
    assert [lab.name for _, lab in pair_files(tmp_path / "im", tmp_path / "lab")] == ["a.png"]


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_declared_size_is_checked_before_decoding(tmp_path, monkeypatch, suffix):
    from napari_unet_loop.io import images as images_mod

    path = tmp_path / f"big{suffix}"
    iio.imwrite(path, np.zeros((64, 80), np.uint8))
    assert images_mod.declared_shape(path)[:2] == (64, 80)
    monkeypatch.setenv(images_mod.MAX_PIXELS_ENV, "1000")
    monkeypatch.setattr(iio, "imread", lambda *a, **k: pytest.fail("decoded before the size check"))
    monkeypatch.setattr(tifffile, "imread", lambda *a, **k: pytest.fail("decoded before the size check"))
    with pytest.raises(ReadError, match=r"declares 64 x 80.*NAPARI_UNET_LOOP_MAX_PIXELS"):
        read_image(path)
    monkeypatch.setenv(images_mod.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ReadError, match="not a number of pixels"):
        read_image(path)


def test_a_zero_byte_file_is_called_empty(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ReadError, match=r"empty \(0 bytes\)"):
        read_image(tmp_path / "x.png")


def test_cell_tracking_challenge_gold_truth_is_told_by_its_name():
    from napari_unet_loop.io.images import is_ctc_gold_truth

    assert is_ctc_gold_truth("01_GT/SEG/man_seg013.tif") and is_ctc_gold_truth("man_seg_013.ome.tif")
    assert not is_ctc_gold_truth("cells_masks.tif") and not is_ctc_gold_truth("man_track013.tif")


def test_one_folder_for_images_and_labels_pairs_no_file_with_itself(tmp_path):
    """Label files beside their images are told by their names, never scored as their own truth."""
    _touch(tmp_path / "both", "a.tif", "a_mask.tif", "b.tif", "b_labels.tif", "c.tif")
    pairs = pair_files(tmp_path / "both", tmp_path / "both")
    assert [(i.name, lab.name) for i, lab in pairs] == [("a.tif", "a_mask.tif"), ("b.tif", "b_labels.tif")]
    _touch(tmp_path / "ctc", "t000.tif", "man_seg000.tif")
    assert [(i.name, lab.name) for i, lab in pair_files(tmp_path / "ctc", tmp_path / "ctc")] == [
        ("t000.tif", "man_seg000.tif")
    ]
    _touch(tmp_path / "plain", "a.tif", "b.tif")
    with pytest.raises(ReadError, match="no file there is named as the label file of an image"):
        pair_files(tmp_path / "plain", tmp_path / "plain")


def test_label_files_are_object_ids_fitted_to_the_image(tmp_path):
    lab = np.zeros((6, 8), np.uint16)
    lab[1:3, 1:4] = 1
    lab[4:6, 5:8] = 2
    tifffile.imwrite(tmp_path / "yx1.tif", lab[..., None])  # a mask saved with a channel axis
    assert read_label_file(tmp_path / "yx1.tif").shape == (6, 8, 1)
    assert np.array_equal(fit_labels(read_label_file(tmp_path / "yx1.tif"), (6, 8)), lab)
    assert fit_labels(lab[None], (6, 8)).shape == (6, 8) and fit_labels(lab, (1, 6, 8)).shape == (1, 6, 8)
    assert fit_labels(lab, (6, 9)).shape == (6, 8)  # another shape: left for the caller to refuse
    tifffile.imwrite(tmp_path / "whole.tif", lab.astype(np.float32))
    assert read_label_file(tmp_path / "whole.tif").dtype == np.int64
    tifffile.imwrite(tmp_path / "mask.tif", lab > 0)  # a boolean mask: its two pieces are two objects
    np.testing.assert_array_equal(read_label_file(tmp_path / "mask.tif"), lab)
    tifffile.imwrite(tmp_path / "one.tif", lab == 1)
    assert read_label_file(tmp_path / "one.tif").dtype == np.uint8  # one piece: as it is
    tifffile.imwrite(tmp_path / "prob.tif", (lab > 0) * np.float32(0.7))
    with pytest.raises(ReadError, match="not whole numbers: labels are object ids"):
        read_label_file(tmp_path / "prob.tif")
    tifffile.imwrite(tmp_path / "neg.tif", lab.astype(np.int32) - 1)  # -1 as background
    with pytest.raises(ReadError, match=r"negative values \(down to -1\)"):
        read_label_file(tmp_path / "neg.tif")


def test_planar_rgb_tiff_declares_its_samples_axis(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (3, 16, 20), dtype=np.uint8)
    # written as other software writes planar RGB: no tifffile description of the shape
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate", metadata=None)
    tifffile.imwrite(tmp_path / "contig.tif", np.moveaxis(rgb, 0, -1), photometric="rgb")
    tifffile.imwrite(tmp_path / "three.tif", rgb, photometric="minisblack")  # three grey planes
    assert file_axes(tmp_path / "planar.tif") == "SYX" and file_axes(tmp_path / "contig.tif") == "YXS"
    assert file_axes(tmp_path / "three.tif") is None  # guessed from the shape later
    # tifffile stores any (3, Y, X) uint8 array as planar RGB unless told otherwise, Z stacks too: a stack
    tifffile.imwrite(tmp_path / "default.tif", rgb, photometric="rgb", planarconfig="separate")
    assert file_axes(tmp_path / "default.tif") is None


def _png16(path, arr: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written by hand (Pillow writes none in colour)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def test_a_16_bit_colour_png_is_refused_not_cut_to_8_bits(tmp_path):
    from napari_unet_loop.io.readers import read_labels

    rgb = np.random.default_rng(0).integers(0, 4000, (8, 10, 3)).astype(np.uint16)  # a 12-bit camera
    _png16(tmp_path / "rgb16.png", rgb, 2)
    assert iio.imread(tmp_path / "rgb16.png").dtype == np.uint8  # what the PNG reader would give
    for read in (read_image, read_labels):
        with pytest.raises(ReadError, match="16-bit RGB PNG, which can only be read here cut to 8 bits"):
            read(tmp_path / "rgb16.png")
    _png16(tmp_path / "grey16.png", rgb[..., 0], 0)  # 16-bit grey: read whole
    assert np.array_equal(read_image(tmp_path / "grey16.png"), rgb[..., 0])
