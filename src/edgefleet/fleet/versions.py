"""Sortable keys for version strings, so the database can compare versions with ``<``.

Firmware and model versions are stored beside a key whose plain string order is the
version order: ``version_key("1.10.0") > version_key("1.9.0")`` and a pre-release sorts
before its release (``1.0.0-rc.1 < 1.0.0``). Semantic versions and PEP 440 versions
both work; anything else has no key (``None``) and takes no part in comparisons::

    >>> version_key("1.8.0") < version_key("1.10.0")
    True
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

_WIDTH = 8
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def _pad(number: int) -> str:
    return str(min(number, 10**_WIDTH - 1)).zfill(_WIDTH)


def _prerelease_key(prerelease: str) -> str:
    # Numeric identifiers compare numerically, others as text (semver 11.4).
    parts = []
    for part in prerelease.split("."):
        parts.append(f"0{_pad(int(part))}" if part.isdigit() else f"1{part}")
    return ".".join(parts)


def version_key(text: str | None) -> str | None:
    """A string whose order is the version order, or ``None`` if ``text`` is no version."""
    if not text:
        return None
    match = _SEMVER.match(text.strip())
    if match:
        major, minor, patch, prerelease = match.groups()
        release = ".".join(_pad(int(x)) for x in (major, minor, patch, "0"))
        # "~" sorts after every prerelease marker, so a release follows its prereleases.
        return f"{release}.{'0' + _prerelease_key(prerelease) if prerelease else '~'}"
    try:
        parsed = Version(text.strip())
    except InvalidVersion:
        return None
    numbers = [*parsed.release, 0, 0, 0, 0][:4]
    release = ".".join(_pad(x) for x in numbers)
    if parsed.pre is not None:
        kind, number = parsed.pre
        return f"{release}.0{_prerelease_key(f'{kind}.{number}')}"
    return f"{release}.~"
