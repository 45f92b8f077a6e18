"""Units of pixel sizes: one table of spellings, the OME-NGFF names, the short symbols ImageJ and CSV headers use.

Everything that reads or writes a unit (TIFF, OME-Zarr, CSV, the npe2 readers and writers) goes
through these functions, so ``um``, ``µm``, ``micron`` and ``micrometre`` mean one thing everywhere.
"""

from __future__ import annotations

import re
from typing import Any

_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")

#: Unit spellings mapped to the OME-NGFF (UDUNITS-2) names.
_UNIT_NAMES = {
    "um": "micrometer",
    "µm": "micrometer",
    "μm": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometre": "micrometer",
    "micrometer": "micrometer",
    "nm": "nanometer",
    "nanometre": "nanometer",
    "nanometer": "nanometer",
    "mm": "millimeter",
    "millimetre": "millimeter",
    "millimeter": "millimeter",
    "cm": "centimeter",
    "centimetre": "centimeter",
    "centimeter": "centimeter",
    "m": "meter",
    "metre": "meter",
    "meter": "meter",
    "s": "second",
    "sec": "second",
    "second": "second",
    "ms": "millisecond",
    "millisecond": "millisecond",
    "min": "minute",
    "minute": "minute",
    "h": "hour",
    "hour": "hour",
}
SHORT_UNITS = {
    "micrometer": "um",
    "nanometer": "nm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
    "second": "s",
    "millisecond": "ms",
    "minute": "min",
    "hour": "h",
}
_NO_UNIT = ("", "pixel", "pixels", "px", "none", "dimensionless")
#: Length of one unit in centimetres (for the TIFF resolution tags of non-ImageJ files).
UNIT_IN_CM = {"um": 1e-4, "nm": 1e-7, "mm": 0.1, "cm": 1.0, "m": 100.0}


def decode_unit(text: str) -> str:
    r"""Decode the ``\uXXXX`` escapes ImageJ writes in TIFF descriptions (``\u00B5m`` -> ``µm``)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def unit_name(unit: Any) -> str | None:
    """Canonical (OME-NGFF) name of a unit such as ``um``/``µm`` -> ``micrometer``; ``None`` for pixels.

    Parameters
    ----------
    unit : str, pint.Unit or None
        A unit; anything with a ``str()`` works.
    """
    if unit is None:
        return None
    text = decode_unit(str(unit).strip())
    if text.lower() in _NO_UNIT:
        return None
    return _UNIT_NAMES.get(text, _UNIT_NAMES.get(text.lower(), text))


def short_unit(unit: str | None) -> str:
    """Short unit symbol (``um``, ``nm``, ``s``) for column headers and ImageJ; ``px`` for none."""
    name = unit_name(unit)
    if name is None:
        return "px"
    return SHORT_UNITS.get(name, name)


def imagej_unit(unit: str | None) -> str | None:
    """The short unit ImageJ writes (``um``, ``nm``, ...) for a unit, or ``None`` for no unit (pixels).

    Parameters
    ----------
    unit : str or None
        A unit such as ``micrometer``, ``µm`` or ``um``; ``pixel`` and ``None`` mean uncalibrated.
    """
    return None if unit_name(unit) is None else short_unit(unit)
