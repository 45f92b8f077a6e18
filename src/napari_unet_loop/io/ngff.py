"""OME-NGFF coordinate transformations, read one way by the lazy path and by the napari reader."""

from __future__ import annotations

from collections.abc import Sequence


def transform_values(transforms: Sequence, kind: str) -> list[float] | None:
    """The values of the first transformation of type ``kind`` (``scale``, ``translation``) in an NGFF list."""
    for t in transforms or ():
        if isinstance(t, dict) and t.get("type") == kind and kind in t:
            return [float(v) for v in t[kind]]
    return None


def full_resolution(level: Sequence, common: Sequence) -> tuple[list[float] | None, list[float] | None]:
    """Scale and translation of a multiscale image's highest resolution, as NGFF composes them.

    NGFF applies the multiscales' own transformations (for all levels) after each level's: the
    scales multiply, the level's shift is scaled by the common scale, then the common shift is added.

    Parameters
    ----------
    level : sequence of dict
        ``coordinateTransformations`` of the highest resolution's dataset.
    common : sequence of dict
        ``coordinateTransformations`` of the multiscales entry itself.

    Returns
    -------
    tuple
        ``(scale, translation)``, each ``None`` when neither list has one.
    """
    scale, shift = transform_values(level, "scale"), transform_values(level, "translation")
    common_scale, common_shift = transform_values(common, "scale"), transform_values(common, "translation")
    if common_scale is not None:
        scale = common_scale if scale is None else [a * b for a, b in zip(scale, common_scale, strict=False)]
        if shift is not None:
            shift = [a * b for a, b in zip(shift, common_scale, strict=False)]
    if common_shift is not None:
        shift = common_shift if shift is None else [a + b for a, b in zip(shift, common_shift, strict=False)]
    return scale, shift
