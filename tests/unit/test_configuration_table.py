"""The README's configuration table is the one reference of the `APERIO_*` settings: every setting the code
reads has a row there, every row names a setting the code reads, and a default written as a literal is
the code's default (read back through the same parsing the environment goes through)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from aperio_plugins import HostSettings
from aperio_plugins._dispatch import DispatchPolicy
from aperio_plugins._fleet_name import HOST_NAME_VARIABLE
from aperio_plugins._settings import ENV_PREFIX
from aperio_plugins.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
HEADER = "| variable | default | meaning |"
VARIABLE = re.compile(r"^`(APERIO_[A-Z0-9_]+)`$")
LITERAL = re.compile(r"^`([^`]+)`")
# A name in the source or the docs, not a prefix that code completes (`f"APERIO_OUTBOX_{name.upper()}"`).
NAME_IN_SOURCE = re.compile(r"\bAPERIO_[A-Z0-9_]*[A-Z0-9]\b")


@dataclasses.dataclass(frozen=True)
class Row:
    variable: str
    default: str
    meaning: str


def table_rows(text: str) -> list[Row]:
    """The rows of the one table under `HEADER`; fails if there is none or more than one."""
    lines = text.splitlines()
    starts = [n for n, line in enumerate(lines) if line.strip() == HEADER]
    assert len(starts) == 1, f"expected one configuration table in README.md, found {len(starts)}"
    rows = []
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, f"not a three-column row: {line}"
        named = VARIABLE.match(cells[0])
        assert named, f"a row names one variable, in backticks: {line}"
        rows.append(Row(named.group(1), cells[1], cells[2]))
    return rows


@pytest.fixture(scope="module")
def documented() -> dict[str, Row]:
    rows = table_rows(README.read_text(encoding="utf-8"))
    names = [row.variable for row in rows]
    assert len(names) == len(set(names)), "a variable has two rows"
    return {row.variable: row for row in rows}


def settings_variables() -> dict[str, str]:
    """`APERIO_<FIELD>` of every `HostSettings` field, to the field's name."""
    return {f"{ENV_PREFIX}{name}".upper(): name for name in HostSettings.model_fields}


def outbox_variables() -> dict[str, str]:
    """The `APERIO_OUTBOX_*` variables `DispatchPolicy.from_environment` reads, found by giving each policy
    field a bad value and seeing which ones it refuses by name."""
    read = {}
    for field in msgspec.structs.fields(DispatchPolicy):
        variable = f"APERIO_OUTBOX_{field.name.upper()}"
        try:
            DispatchPolicy.from_environment({variable: "not-a-number"})
        except ConfigurationError as exc:
            if variable in str(exc):
                read[variable] = field.name
    return read


def source_variables() -> set[str]:
    """Every `APERIO_*` name spelled out in the host's source."""
    found: set[str] = set()
    for path in (ROOT / "src").rglob("*.py"):
        found.update(NAME_IN_SOURCE.findall(path.read_text(encoding="utf-8")))
    return found


def test_the_outbox_probe_finds_what_the_dispatcher_reads() -> None:
    # The probe above is itself checked: the dispatcher documents these four, and reads nothing else.
    assert set(outbox_variables()) == {
        "APERIO_OUTBOX_MAX_ATTEMPTS",
        "APERIO_OUTBOX_BASE_DELAY",
        "APERIO_OUTBOX_MAX_DELAY",
        "APERIO_OUTBOX_LEASE",
    }


def test_every_setting_the_code_reads_has_a_row(documented: dict[str, Row]) -> None:
    read = set(settings_variables()) | set(outbox_variables()) | {HOST_NAME_VARIABLE} | source_variables()
    missing = sorted(read - set(documented))
    assert missing == [], f"README.md's configuration table lacks {missing}"


def test_every_row_names_a_setting_the_code_reads(documented: dict[str, Row]) -> None:
    read = set(settings_variables()) | set(outbox_variables()) | {HOST_NAME_VARIABLE}
    stale = sorted(set(documented) - read)
    assert stale == [], f"README.md documents settings the code does not read: {stale}"


def test_every_row_says_its_default_and_meaning(documented: dict[str, Row]) -> None:
    assert [row.variable for row in documented.values() if not row.default or not row.meaning] == []


def _setting(name: str, value: Any) -> Any:
    # The same validation the environment's text goes through (expanding ~, parsing P30D, enums).
    return getattr(HostSettings.from_environment(**{name: value}), name)


def test_a_literal_default_is_the_settings_default(documented: dict[str, Row]) -> None:
    checked = 0
    for variable, name in settings_variables().items():
        default = HostSettings.model_fields[name].default
        literal = LITERAL.match(documented[variable].default)
        if literal is None:
            # Prose ("none", "system CAs") stands only for a setting with no value of its own.
            assert default in (None, ()), f"{variable}: write its default {default!r} as a `literal`"
            continue
        assert _setting(name, literal.group(1)) == _setting(name, default), variable
        checked += 1
    assert checked >= 15  # most settings have a literal default; this is not a table of prose


def test_a_literal_outbox_default_is_the_dispatchers(documented: dict[str, Row]) -> None:
    defaults = DispatchPolicy()
    for variable, field in outbox_variables().items():
        literal = LITERAL.match(documented[variable].default)
        assert literal, f"{variable}: write its default as a `literal`"
        parsed = DispatchPolicy.from_environment({variable: literal.group(1)})
        assert getattr(parsed, field) == getattr(defaults, field), variable


# Switches of the repository's own scripts and tests, named in the docs, that the host never reads.
NOT_HOST_SETTINGS = {
    "APERIO_QUICKSTART_NO_SERVE": "scripts/quickstart.sh",
    "APERIO_UPDATE_CONSOLE_SCREENSHOT": "tests/api/test_console.py",
}


def test_the_docs_name_only_settings_of_the_table(documented: dict[str, Row]) -> None:
    # A variable renamed or removed in the code, and still named in a guide, is caught here.
    named = {
        name: path.relative_to(ROOT).as_posix()
        for path in [README, *sorted((ROOT / "docs").rglob("*.md"))]
        for name in NAME_IN_SOURCE.findall(path.read_text(encoding="utf-8"))
    }
    unknown = {name: where for name, where in named.items() if name not in documented and name not in NOT_HOST_SETTINGS}
    assert unknown == {}
    for name, user in NOT_HOST_SETTINGS.items():
        assert name in (ROOT / user).read_text(encoding="utf-8"), f"{name} is no longer used by {user}"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("| variable | default | meaning |\n|---|---|---|\n| APERIO_X | `1` | bare name |\n", "in backticks"),
        ("| variable | default | meaning |\n|---|---|---|\n| `APERIO_X` | `1` |\n", "three-column"),
        ("no table here\n", "found 0"),
    ],
)
def test_the_parser_refuses_a_malformed_table(table: str, problem: str) -> None:
    with pytest.raises(AssertionError, match=problem):
        table_rows(table)
