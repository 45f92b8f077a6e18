"""One strict dict <-> dataclass conversion for the settings stored in model cards and checkpoints.

Every settings dataclass (architecture, normalisation, post-processing, augmentation, training)
derives from :class:`Settings`: ``to_dict`` gives a JSON-compatible dict, ``from_dict`` refuses
keys it does not know (a typo in a hand-edited card is an error, not a silently ignored
setting) and builds nested settings; ``_convert`` lets a class turn stored values back (e.g.
JSON lists into tuples).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="Settings")


class Settings:
    """Mixin of the settings dataclasses: strict ``from_dict``, JSON-compatible ``to_dict``.

    Attributes
    ----------
    _what : str
        What the settings are called in error messages (``"unknown <what> keys: [...]"``).
    _nested : dict
        Field name -> :class:`Settings` class, for fields that are settings themselves.
    """

    _what: ClassVar[str] = "settings"
    _nested: ClassVar[dict[str, type[Settings]]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-compatible dict."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def _convert(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Turn stored values back into the field types (JSON lists into tuples...); as they are by default."""
        return data

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build from a dict, refusing keys that are not fields.

        Raises
        ------
        ValueError
            If ``data`` holds unknown keys (or a field's value is refused by the class).
        TypeError
            If ``data`` is not a dict.
        """
        if not isinstance(data, dict):
            raise TypeError(f"{cls._what} settings must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown {cls._what} keys: {sorted(unknown)}")
        data = dict(data)
        for name, kind in cls._nested.items():
            if isinstance(data.get(name), dict):
                data[name] = kind.from_dict(data[name])
        return cls(**cls._convert(data))
