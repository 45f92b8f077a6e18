import pytest

from napari_unet_loop.io.units import decode_unit, imagej_unit, short_unit, unit_name


@pytest.mark.parametrize("spelling", ["um", "µm", "μm", "micron", "microns", "micrometre", "micrometer", "\\u00B5m"])
def test_one_table_for_every_spelling_of_a_micrometre(spelling):
    """The TIFF writer (ImageJ), the CSV headers and OME-Zarr read units through one table."""
    assert unit_name(spelling) == "micrometer"
    assert imagej_unit(spelling) == short_unit(spelling) == "um"


@pytest.mark.parametrize("none", [None, "", "pixel", "px", "none", "dimensionless"])
def test_no_unit_is_pixels_everywhere(none):
    assert unit_name(none) is None and imagej_unit(none) is None and short_unit(none) == "px"


def test_unknown_units_pass_through_and_escapes_decode():
    assert imagej_unit("parsec") == short_unit("parsec") == unit_name("parsec") == "parsec"
    assert decode_unit("\\u00B5m") == "µm"
    assert imagej_unit("nanometre") == "nm" and short_unit("second") == "s"
