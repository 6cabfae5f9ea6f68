"""Semantic versions (semver.org 2.0.0) with correct precedence.

``1.10.0 > 1.9.0``, ``2.0.0-rc.1 < 2.0.0``; build metadata (``+build.5``) is kept in
the text but ignored for precedence, as the specification says::

    >>> parse_version("2.0.0-rc.1") < parse_version("2.0.0")
    True
    >>> sorted(["1.9.0", "1.10.0", "1.10.0-alpha"], key=version_key)
    ['1.9.0', '1.10.0-alpha', '1.10.0']
"""

from __future__ import annotations

from typing import Annotated, Any

import semver as _semver
from pydantic import Field

from edgefleet.registry.errors import InvalidVersionError

Version = _semver.Version

#: What :func:`parse_version` accepts (after stripping surrounding whitespace), as a
#: regular expression for OpenAPI: semver.org's, in ASCII digits.
SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(\.(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?"
    r"(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)

#: OpenAPI's description of a version field; :func:`parse_version` checks it (an
#: ``InvalidVersionError``, 422 ``invalid_version`` in the API).
SEMVER_SCHEMA: dict[str, Any] = {"pattern": SEMVER_PATTERN, "examples": ["1.2.0", "2.0.0-rc.1"]}

#: A version as an API input: the pattern is documented, :func:`parse_version` enforces it.
VersionText = Annotated[str, Field(max_length=128, json_schema_extra=SEMVER_SCHEMA)]


def parse_version(text: str) -> Version:
    """Parse ``text`` as a semantic version.

    Raises:
        InvalidVersionError: ``text`` is not ``MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]``.
    """
    if not isinstance(text, str):
        raise InvalidVersionError(f"version must be a string like 1.2.3, got {text!r}")
    try:
        return Version.parse(text.strip())
    except (ValueError, TypeError) as exc:
        raise InvalidVersionError(
            f"{text!r} is not a semantic version (expected MAJOR.MINOR.PATCH, "
            "e.g. 1.2.0 or 2.0.0-rc.1)",
            details={"version": text},
        ) from exc


def version_key(text: str) -> Version:
    """Sort key giving semantic-version precedence (the newest sorts last)."""
    return parse_version(text)


def latest(versions: list[str]) -> str | None:
    """The highest version of ``versions`` by precedence, or ``None`` if empty."""
    return max(versions, key=version_key) if versions else None
