"""The README against the code: its settings table names every setting and nothing else, with the
defaults the settings class has; its metrics table names every metric each process serves; its links
lead somewhere; it still opens with the two commands.

No services: this reads files. Each check is also run against a README made wrong on purpose, so a
check that could never fail would fail here.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from pydantic.fields import FieldInfo

from domain.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PREFIX = str(Settings.model_config.get("env_prefix", ""))
SETTINGS_SECTION = "## Configuration"
OPENING = """# Switchboard

```sh
scripts/dev     # run the whole system: prints http://127.0.0.1:8000/v1 and an API key
scripts/test    # run the whole test suite
```
"""
NAME = re.compile(rf"`({re.escape(PREFIX)}[A-Z0-9_]+)`")


def readme() -> str:
    return README.read_text(encoding="utf-8")


# ------------------------------------------------------------------ the settings table


def settings_rows(text: str) -> list[list[str]]:
    """The rows of the first table under `## Configuration` (header and rule left out), as cells."""
    start = text.index(SETTINGS_SECTION + "\n")
    rows: list[list[str]] = []
    in_table = False
    for line in text[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            in_table = True
            # A `|` inside a cell is written `\|`.
            cells = [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            rows.append(cells)
        elif in_table:
            break
    assert len(rows) > 2, f"no settings table under {SETTINGS_SECTION!r}"
    header, rule, *body = rows
    assert [cell.lower() for cell in header] == ["variable", "default", "meaning"], header
    assert all(set(cell) <= set("-: ") for cell in rule), rule
    return body


def documented(text: str) -> dict[str, list[str]]:
    """Each setting the table names (a row may name two, like the JWT audience and issuer), with its row."""
    names: dict[str, list[str]] = {}
    for row in settings_rows(text):
        found = NAME.findall(row[0])
        assert found, f"a row of the settings table names no {PREFIX}* setting: {row[0]!r}"
        for name in found:
            assert name not in names, f"{name} has two rows in the settings table"
            names[name] = row
    return names


def setting_names() -> dict[str, FieldInfo]:
    return {f"{PREFIX}{field.upper()}": info for field, info in Settings.model_fields.items()}


def disagreements(text: str) -> list[str]:
    """What the table and the settings class disagree about, one line each; empty when they agree."""
    problems: list[str] = []
    rows = documented(text)
    fields = setting_names()
    for name in sorted(fields.keys() - rows.keys()):
        problems.append(f"{name} is a setting without a row in the README's settings table")
    for name in sorted(rows.keys() - fields.keys()):
        problems.append(f"{name} has a row in the README's settings table but is no setting")
    for name in sorted(rows.keys() & fields.keys()):
        row = rows[name]
        shown = re.fullmatch(r"`([^`]*)`", row[1])
        # Checked when the row is one setting's and its default one literal; prose ("off") is not compared.
        if shown is None or len(NAME.findall(row[0])) != 1:
            continue
        actual = _shown_default(fields[name])
        if actual is not None and shown.group(1) != actual:
            problems.append(f"{name}: the README says the default is {shown.group(1)!r}, the code {actual!r}")
    return problems


def _shown_default(info: FieldInfo) -> str | None:
    """The default as the README writes it, or None when there is no single literal to compare."""
    if info.default_factory is not None:
        return None
    value: Any = info.get_default()
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_the_settings_table_and_the_settings_class_agree() -> None:
    assert disagreements(readme()) == []


def test_the_check_finds_a_missing_row_an_unknown_row_and_a_wrong_default() -> None:
    text = readme()
    row = next(line for line in text.splitlines() if line.startswith("| `SWITCHBOARD_LOG_JSON` |"))
    assert disagreements(text.replace(row + "\n", "")) == [
        "SWITCHBOARD_LOG_JSON is a setting without a row in the README's settings table"
    ]
    invented = row.replace("SWITCHBOARD_LOG_JSON", "SWITCHBOARD_NOT_A_SETTING")
    assert disagreements(text.replace(row, row + "\n" + invented)) == [
        "SWITCHBOARD_NOT_A_SETTING has a row in the README's settings table but is no setting"
    ]
    assert disagreements(text.replace(row, row.replace("| `true` |", "| `false` |"))) == [
        "SWITCHBOARD_LOG_JSON: the README says the default is 'false', the code 'true'"
    ]
    # A row of two settings counts for both; take one out and it is missing.
    pair = next(line for line in text.splitlines() if "`SWITCHBOARD_JWT_AUDIENCE`, `SWITCHBOARD_JWT_ISSUER`" in line)
    assert disagreements(text.replace(pair, pair.replace(", `SWITCHBOARD_JWT_ISSUER`", ""))) == [
        "SWITCHBOARD_JWT_ISSUER is a setting without a row in the README's settings table"
    ]
    with pytest.raises(AssertionError, match="two rows"):
        documented(text.replace(row, row + "\n" + row))


# ------------------------------------------------------------------ the opening and the links


def test_it_opens_with_the_two_commands() -> None:
    assert readme().startswith(OPENING)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation gone, spaces as hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip()).lower()
    kept = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    outside_code = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    for heading in re.findall(r"^#{1,6} (.+)$", outside_code, flags=re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(text: str) -> list[str]:
    outside_code = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    targets = re.findall(r"\]\(([^)\s]+)\)", outside_code)
    known = anchors(text)
    broken = []
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue  # another site's page: not checked here (no network)
        if target.startswith("#"):
            if target[1:] not in known:
                broken.append(target)
        elif not (ROOT / target.split("#", 1)[0]).exists():
            broken.append(target)
    return broken


def test_every_link_leads_to_a_heading_or_a_file() -> None:
    text = readme()
    assert broken_links(text) == []
    assert "(#configuration)" in text and "(LICENSE)" in text
    # The check itself: a heading renamed, a file gone.
    assert broken_links(text.replace("## Configuration", "## Settings")) == ["#configuration"] * text.count(
        "(#configuration)"
    )
    assert broken_links(text + "\n[gone](docs/no-such-file.png)\n") == ["docs/no-such-file.png"]


def test_the_screenshot_is_a_png_in_docs() -> None:
    shots = re.findall(r"!\[[^\]]+\]\((docs/[^)]+\.png)\)", readme())
    assert shots, "the README shows no screenshot from docs/"
    for shot in shots:
        assert (ROOT / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot


def test_the_licence_is_mit_and_the_readme_says_so() -> None:
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License\n\nCopyright (c) 2026 the Switchboard authors\n")
    assert "MIT" in readme().split("## Licence", 1)[1]


# ------------------------------------------------------------------ the metrics table


def metrics_rows(text: str) -> dict[str, set[str]]:
    """Each `switchboard_*` metric the README's metrics table names (counters without `_total`), with the
    processes (API, worker) its row names."""
    section = text.split("### Metrics and traces\n", 1)[1].split("\n#", 1)[0]
    named: dict[str, set[str]] = {}
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| process"):
            continue
        process, metrics = (cell.strip() for cell in line.strip().strip("|").split("|")[:2])
        where = {"API", "worker"} if process == "both" else {process}
        for name in re.findall(r"`(switchboard_[a-z_]+)`", metrics):
            named.setdefault(name.removesuffix("_total"), set()).update(where)
    return named


def exported_metrics() -> dict[str, set[str]]:
    from domain.metrics import ApiMetrics, WorkerMetrics

    exported: dict[str, set[str]] = {}
    for process, metrics in (("API", ApiMetrics()), ("worker", WorkerMetrics())):
        for metric in metrics.registry.collect():
            if metric.name.startswith("switchboard_"):
                exported.setdefault(metric.name, set()).add(process)
    return exported


def test_the_metrics_table_names_every_metric_where_it_is_served() -> None:
    assert metrics_rows(readme()) == exported_metrics()
    # The check itself: a metric left out, or put in the wrong process.
    text = readme()
    assert metrics_rows(text.replace("`switchboard_approvals_pending`", "")) != exported_metrics()
    assert metrics_rows(text.replace("| both | `switchboard_dependency", "| API | `switchboard_dependency")) != (
        exported_metrics()
    )
