"""Standard JSON only, in and out of edgefleet.

Python's ``json`` module reads ``NaN``, ``Infinity`` and ``1e999`` (as infinity), and
strings holding lone UTF-16 surrogates (``"\\ud800"``); none of them is standard JSON
(RFC 8259 section 6; I-JSON, RFC 7493, forbids the surrogates). Stored, they break whoever
reads them next: SQLite's JSON functions refuse the whole row, so one enrolled device
with ``{"score": NaN}`` takes targeting queries down for every operator, and a string
that is not Unicode cannot be encoded into a response. So every JSON document edgefleet
takes in is checked here, once, and refused naming the field:

- :class:`Body` is the base of every request body and every document a device or an
  operator sends (``extra="forbid"``, non-finite floats refused by the validator, also
  inside free-form :data:`JsonObject` fields);
- :func:`nonstandard` finds the first value a parsed document may not hold, with its
  path, for the server's request parsing, which reads the body before any model sees it;
- :func:`dumps` is the serializer for stored JSON: a value that slipped past both fails
  the write instead of poisoning the row.

Example::

    >>> nonstandard({"attributes": {"score": float("nan")}})
    (('attributes', 'score'), 'a finite number (NaN and Infinity are not JSON)')
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue

#: A free-form JSON object (a device's config, an event's details): any JSON, standard.
JsonObject = dict[str, JsonValue]

FINITE = "a finite number (NaN and Infinity are not JSON)"
UNICODE = "Unicode text (a lone UTF-16 surrogate such as \\ud800 is not a character)"

Path = tuple[str | int, ...]


class Body(BaseModel):
    """A JSON document edgefleet accepts: known fields only, standard values only."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def nonstandard(value: Any) -> tuple[Path, str] | None:
    """The path and the problem of the first value JSON cannot carry, or None.

    ``value`` is what a JSON parser gave: dicts, lists, strings, numbers, booleans, None.
    """
    stack: list[tuple[Path, Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return path, FINITE
        elif isinstance(item, str):
            if not _is_text(item):
                return path, UNICODE
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if not _is_text(key):
                    return (*path, key.encode("utf-8", "backslashreplace").decode()), UNICODE
                stack.append(((*path, key), child))
        elif isinstance(item, list):
            stack.extend(((*path, i), child) for i, child in reversed(list(enumerate(item))))
    return None


def _is_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dumps(value: Any) -> str:
    """Standard JSON text of ``value``.

    Raises:
        ValueError: ``value`` holds NaN or an infinity.
        UnicodeEncodeError: it holds a string that is not Unicode text.
    """
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    # ensure_ascii=False keeps a lone surrogate as itself, so encoding finds it here.
    text.encode("utf-8")
    return text
