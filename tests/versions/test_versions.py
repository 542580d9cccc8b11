"""The tested transformers / peft range: one source (fastpeft.versions), matched by pyproject's
lower bounds, and a warning for anything outside it."""

from pathlib import Path

import pytest

from fastpeft import versions

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_pyproject_lower_bounds_are_the_oldest_tested_releases():
    text = PYPROJECT.read_text()  # (tomllib is 3.11+, fastpeft supports 3.10)
    for package, (oldest, _) in versions.TESTED.items():
        assert f'"{package}>={oldest.removesuffix(".0")}"' in text, package


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ({"transformers": "5.17.0", "peft": "0.19.1"}, []),
        ({"transformers": "5.24.7", "peft": "0.21.9"}, []),  # patch releases of tested minors
        ({"transformers": "5.16.1", "peft": "0.19.1"}, ["transformers 5.16.1 is older"]),
        ({"transformers": "5.17.0", "peft": "0.22.0.dev0"}, ["peft 0.22.0.dev0 is newer"]),
        ({"transformers": "6.0.0", "peft": None}, ["transformers 6.0.0 is newer", "peft is not"]),
    ],
)
def test_untested_versions_names_each_package_outside_the_range(found, expected):
    lines = versions.untested_versions(found)
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), line


def test_a_version_that_is_not_a_number_is_an_error():
    with pytest.raises(ValueError, match="version must start with a number"):
        versions.untested_versions({"transformers": "main", "peft": "0.21.2"})


def test_env_warns_when_the_installed_release_is_outside_the_tested_range(monkeypatch, capsys):
    from fastpeft.__main__ import main

    installed = versions.installed("transformers")
    monkeypatch.setitem(versions.TESTED, "transformers", ("99.0.0", "99.1.0"))
    main(["env"])
    out = capsys.readouterr()
    assert "tested_with   transformers 99.0.0 to 99.1.0" in out.out
    assert f"warning: transformers {installed} is older than the oldest tested" in out.err
