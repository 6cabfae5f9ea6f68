"""The README tells the truth: its figures come from docs/benchmarks.md, its docs list is whole.

What counts as a figure the README quotes (a *measurement*): a number written in the
README's prose, outside code, immediately followed by a unit of what was measured:
check-ins/s (or any ``/s`` rate), ``µs``, ``ms``, ``s``, ``min``, ``h``, ``%``, the times
sign, byte sizes (``KB``, ``MB``, ``GB``, ``KiB``, ``MiB``, ``GiB``, and ``MiB/s``), ``devices``
(also ``100,000-device``) and ``cores``. A run of numbers sharing one unit ("327 to 369 s",
"42 / 69 ms", with a hyphen or an en dash too) counts each number with that unit.

What does not count:

- code: fenced blocks and inline code spans (the first screen's two commands, the
  example session, version numbers such as ``1.1.0``, ports, URLs in code) and link
  targets;
- numbers without a unit (``Python 3.11+``, ``SHA-256``, "never predicts 9"), and numbers
  glued to a letter or a hyphen before them (``p99``, ``x86_64``, ``64-16-10``);
- the figures in ``SETTINGS`` below: what the project ships or is configured with, not
  what was measured. Each names the document that defines it, and is checked there.

Each remaining figure must appear in docs/benchmarks.md with the same number and unit,
read by the same rules (code included there: its commands name its setups), with
thousands separators ignored ("1,700" is "1700").
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
BENCHMARKS = DOCS / "benchmarks.md"

#: Figures the README states as facts of the project, not measurements: (number, unit) to
#: the document where the figure is defined, and why it is not a measurement.
SETTINGS: dict[tuple[str, str], tuple[str, str]] = {
    ("80", "MB"): ("docs/scenarios.md", "the size 1.4.0 is padded to for delivery tests"),
    ("200", "devices"): ("docs/scenarios.md", "the demo's and the scenarios' fleet size"),
}

#: Units, longest first where one is the start of another; the value is how it is compared.
_UNITS: list[tuple[str, str]] = [
    (r"check-ins?/s", "/s"),
    (r"MiB/s", "MiB/s"),
    (r"MB/s", "MB/s"),
    (r"/s", "/s"),
    (r"(?:µs|us)", "µs"),
    (r"ms", "ms"),
    (r"(?:seconds?|s)", "s"),
    (r"(?:minutes?|min)", "min"),
    (r"(?:hours?|h)", "h"),
    (r"%", "%"),
    ("\u00d7", "\u00d7"),  # the times sign of ratios
    (r"KiB", "KiB"),
    (r"MiB", "MiB"),
    (r"GiB", "GiB"),
    (r"[kK]B", "KB"),
    (r"MB", "MB"),
    (r"GB", "GB"),
    (r"devices?", "devices"),
    (r"cores?", "cores"),
]
_UNIT_RE = "|".join(f"(?:{pattern})" for pattern, _ in _UNITS)
_NUMBER = r"\d+(?:\.\d+)?"
_SEPARATOR = r"\s*(?:\u2013|-|/|,|\bto\b|\band\b|\bor\b)\s*"
# A run of numbers ending in a unit. Not after a letter, digit, dot, comma, slash or
# hyphen (p99, x86_64, 1.1.0, 64-16-10); a word unit is not followed by a letter or digit.
_FIGURES = re.compile(
    rf"(?<![\w.,/\-])(?P<numbers>{_NUMBER}(?:{_SEPARATOR}{_NUMBER})*)"
    rf"\s*-?\s*(?P<unit>{_UNIT_RE})(?![\w/])"
)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_FENCED = re.compile(r"^```.*?^```[^\n]*$", re.DOTALL | re.MULTILINE)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
_DOC_LINK = re.compile(r"\]\((docs/[^)#\s]+)(?:#[^)\s]*)?\)")


def _unit(text: str) -> str:
    for pattern, canonical in _UNITS:
        if re.fullmatch(pattern, text):
            return canonical
    raise AssertionError(f"unit {text!r} matched no pattern")


def figures(text: str) -> list[tuple[str, str, int]]:
    """Every (number, unit, line) in ``text``, thousands separators removed."""
    text = _THOUSANDS.sub("", text)
    found = []
    for match in _FIGURES.finditer(text):
        unit = _unit(match["unit"])
        line = text.count("\n", 0, match.start()) + 1
        for number in re.findall(_NUMBER, match["numbers"]):
            found.append((number, unit, line))
    return found


def readme_prose(text: str) -> str:
    """The README without code and link targets, blanked so that line numbers hold."""

    def blank(match: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", match[0])

    for pattern in (_FENCED, _CODE_SPAN, _LINK_TARGET):
        text = pattern.sub(blank, text)
    return text


def test_the_extraction_rules() -> None:
    text = (
        "1,700 check-ins/s with p99 150 ms on 2 cores; 10,000 devices; a 100,000-device "
        "fleet; 327\u2013369 s; 42 / 69 ms; +75%; Python 3.11+; SHA-256; x86_64; 64-16-10 MLP"
    )
    assert [(number, unit) for number, unit, _ in figures(text)] == [
        ("1700", "/s"),
        ("150", "ms"),
        ("2", "cores"),
        ("10000", "devices"),
        ("100000", "devices"),
        ("327", "s"),
        ("369", "s"),
        ("42", "ms"),
        ("69", "ms"),
        ("75", "%"),
    ]
    prose = readme_prose("run `pip install x==1.2 s` then\n```bash\nsleep 5 s\n```\n3 ms")
    assert [(n, u) for n, u, _ in figures(prose)] == [("3", "ms")]


def test_every_figure_the_readme_quotes_is_in_benchmarks() -> None:
    readme = README.read_text(encoding="utf-8")
    measured = {(number, unit) for number, unit, _ in figures(BENCHMARKS.read_text("utf-8"))}
    lines = readme.splitlines()
    quoted = figures(readme_prose(readme))
    assert quoted, "no figures found in README.md: the extraction is broken"
    missing = [
        f"README.md:{line}: {number} {unit} is not in docs/benchmarks.md"
        f" ({lines[line - 1].strip()!r})"
        for number, unit, line in quoted
        if (number, unit) not in measured and (number, unit) not in SETTINGS
    ]
    assert not missing, (
        "figures the README quotes must match docs/benchmarks.md (or be SETTINGS in "
        "tests/test_readme.py, with the document that defines them):\n" + "\n".join(missing)
    )


def test_settings_are_quoted_and_defined_where_they_say() -> None:
    quoted = {(number, unit) for number, unit, _ in figures(readme_prose(README.read_text()))}
    for (number, unit), (document, why) in SETTINGS.items():
        assert (number, unit) in quoted, (
            f"SETTINGS lists {number} {unit} ({why}) but README.md no longer quotes it: "
            "remove it from tests/test_readme.py"
        )
        defined = {(n, u) for n, u, _ in figures((ROOT / document).read_text("utf-8"))}
        assert (number, unit) in defined, f"{number} {unit} ({why}) is not in {document}"


def test_the_documentation_list_links_every_doc() -> None:
    readme = README.read_text(encoding="utf-8")
    section = re.search(r"^## Documentation\n(.*?)(?=^## |\Z)", readme, re.DOTALL | re.MULTILINE)
    assert section, "README.md has no '## Documentation' section"
    linked = set(_DOC_LINK.findall(section[1]))
    docs = {path.relative_to(ROOT).as_posix() for path in DOCS.rglob("*.md")}
    unlinked = sorted(docs - linked)
    assert not unlinked, f"README.md's Documentation list does not link: {', '.join(unlinked)}"


def test_the_quickstart_is_the_first_doc_linked() -> None:
    linked = _DOC_LINK.findall(README.read_text(encoding="utf-8"))
    assert linked, "README.md links no docs"
    assert linked[0] == "docs/quickstart.md", (
        f"the first document README.md links is {linked[0]}, not docs/quickstart.md"
    )
