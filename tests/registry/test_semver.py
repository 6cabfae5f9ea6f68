import pytest

from edgefleet.registry.errors import InvalidVersionError
from edgefleet.registry.semver import latest, parse_version, version_key


def test_numeric_precedence_not_lexical():
    assert parse_version("1.10.0") > parse_version("1.9.0")


def test_prerelease_sorts_before_release():
    assert parse_version("2.0.0-rc.1") < parse_version("2.0.0")
    assert (
        parse_version("2.0.0-alpha") < parse_version("2.0.0-alpha.1") < parse_version("2.0.0-beta")
    )


def test_build_metadata_does_not_change_precedence():
    assert parse_version("1.0.0+build.7").compare("1.0.0") == 0


def test_sorting_and_latest():
    versions = ["1.10.0", "1.9.0", "2.0.0-rc.1", "1.10.0-alpha", "0.1.0"]
    assert sorted(versions, key=version_key) == [
        "0.1.0",
        "1.9.0",
        "1.10.0-alpha",
        "1.10.0",
        "2.0.0-rc.1",
    ]
    assert latest(versions) == "2.0.0-rc.1"
    assert latest([]) is None


@pytest.mark.parametrize("text", ["1.0", "v1.0.0", "1.0.0.0", "01.0.0", "", "latest", "1.0.0-"])
def test_invalid_versions_are_named_in_the_error(text):
    with pytest.raises(InvalidVersionError) as info:
        parse_version(text)
    assert repr(text) in info.value.message
    assert "semantic version" in info.value.message
