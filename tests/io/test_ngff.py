"""OME-NGFF coordinate transformations."""

from __future__ import annotations

from napari_unet_loop.io.ngff import full_resolution, transform_values


def test_the_multiscales_own_transformations_apply_after_the_levels():
    level = [{"type": "scale", "scale": [1.0, 0.5, 0.5]}, {"type": "translation", "translation": [0.0, 2.0, 4.0]}]
    common = [{"type": "scale", "scale": [2.0, 2.0, 2.0]}, {"type": "translation", "translation": [1.0, 1.0, 1.0]}]
    assert full_resolution(level, common) == ([2.0, 1.0, 1.0], [1.0, 5.0, 9.0])
    assert full_resolution(level, []) == ([1.0, 0.5, 0.5], [0.0, 2.0, 4.0])
    assert full_resolution([], common) == ([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    assert full_resolution([], []) == (None, None)


def test_a_transformation_without_its_values_is_skipped():
    assert transform_values([{"type": "scale"}, {"type": "scale", "scale": [3, 4]}], "scale") == [3.0, 4.0]
    assert transform_values(None, "translation") is None
