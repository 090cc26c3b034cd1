"""The documentation covers what the code has: every scenario key and every metric is
documented, README stays a short front page, and no relative link is broken."""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from harness.catalog import CATALOG
from harness.config import Scenario

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README_MAX_LINES = 200


# --- scenario keys -------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """A scenario key: ``names`` are its segments (``("faults", "toxic", "proxy")``),
    ``shown`` the dotted form a reader sees (``faults[toxic].proxy``)."""

    names: tuple[str, ...]
    shown: str


def _unwrap(annotation: object) -> object:
    """The type inside ``Annotated[...]`` and ``X | None``."""
    while True:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType) and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _is_model(annotation: object) -> bool:
    return (
        isinstance(annotation, type)
        and typing.get_origin(annotation) is None
        and issubclass(annotation, BaseModel)
    )


def _models(annotation: object) -> list[type[BaseModel]]:
    """The models an annotation holds: itself, the members of a union (``None`` left out)."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found: list[type[BaseModel]] = []
        for member in typing.get_args(annotation):
            found += _models(member)
        return found
    return [annotation] if _is_model(annotation) else []


def _tag(model: type[BaseModel], members: list[type[BaseModel]]) -> tuple[str, str]:
    """A union member's discriminator: the field every member has as a one-value Literal."""
    for name, field in model.model_fields.items():
        value = typing.get_args(_unwrap(field.annotation))
        if (
            typing.get_origin(_unwrap(field.annotation)) is typing.Literal
            and len(value) == 1
            and all(name in m.model_fields for m in members)
        ):
            return name, str(value[0])
    raise AssertionError(f"{model.__name__}: a union member without a one-value Literal tag")


def scenario_keys(
    model: type[BaseModel] = Scenario, names: tuple[str, ...] = (), shown: str = ""
) -> list[Key]:
    """Every key of ``model``, nested models, optional models, lists and dicts of models
    and unions of models (a fault kind's own fields) included."""
    keys: list[Key] = []
    for name, field in model.model_fields.items():
        path, text = (*names, name), f"{shown}.{name}" if shown else name
        keys.append(Key(path, text))
        annotation = _unwrap(field.annotation)
        marker = ""
        origin = typing.get_origin(annotation)
        if origin in (list, tuple, set, frozenset):
            annotation, marker = typing.get_args(annotation)[0], "[]"
        elif origin is dict:
            annotation, marker = typing.get_args(annotation)[1], "{}"
        members = _models(annotation)
        if len(members) == 1:
            keys += scenario_keys(members[0], path, text + marker)
        elif members:
            keys += _union_keys(members, path, text + (marker or "[]"))
    return keys


def _union_keys(members: list[type[BaseModel]], path: tuple[str, ...], text: str) -> list[Key]:
    """A union's fields: those every member has under the union itself (``faults[].at``),
    the others under their member's tag (``faults[toxic].proxy``)."""
    common = set.intersection(*(set(m.model_fields) for m in members))
    keys = [Key((*path, name), f"{text}.{name}") for name in sorted(common)]
    for member in members:
        _, tag = _tag(member, members)
        keys.append(Key((*path, tag), f"{text.removesuffix('[]')}[{tag}]"))
        own = scenario_keys(member, (*path, tag), keys[-1].shown)
        keys += [k for k in own if k.names[len(path) + 1] not in common]
    return keys


# --- markdown ------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`([^`]+)`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a fenced line becomes empty)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else line)
    return lines


@dataclass
class Section:
    """A heading and the text under it up to the next heading of the same or a higher
    level (its subsections included); ``parent`` is the section it lies in."""

    level: int
    names: frozenset[str]
    text: str
    parent: Section | None


def spans(text: str) -> set[str]:
    """What ``text`` puts in backticks, ``[]`` dropped (`faults[]` names `faults`)."""
    return {s.strip().replace("[]", "") for s in CODE_SPAN.findall(text)}


def sections(text: str) -> list[Section]:
    lines = prose_lines(text)
    heads = [(i, HEADING.match(line)) for i, line in enumerate(lines)]
    heads = [(i, m) for i, m in heads if m]
    found: list[Section] = []
    for n, (i, match) in enumerate(heads):
        level = len(match.group(1))
        end = next((j for j, m in heads[n + 1 :] if len(m.group(1)) <= level), len(lines))
        parent = next((s for s in reversed(found) if s.level < level), None)
        found.append(
            Section(level, frozenset(spans(match.group(2))), "\n".join(lines[i:end]), parent)
        )
    return found


def _documents(section: Section | None, names: tuple[str, ...]) -> bool:
    """Whether ``section`` is the one for the scenario part ``names``: its heading names
    the dotted path in backticks, or names the last segment and the section lies inside
    the one for the rest. The whole file is the section of the scenario itself."""
    if not names:
        return True
    if section is None:
        return False
    if ".".join(names) in section.names:
        return True
    return names[-1] in section.names and _documents(section.parent, names[:-1])


def documented(key: Key, text: str) -> bool:
    """A key is documented when its dotted path (``load.reconnect.policy`` or
    ``faults[toxic].proxy``) is in backticks anywhere in the text, or when its path below
    a documented ancestor is in backticks in that ancestor's section: the leaf (`policy`)
    in the section of its parent (headed `load.reconnect`, or `reconnect` inside the
    section headed `load`), `reconnect.policy` in the section headed `load`, and so on."""
    whole = spans("\n".join(prose_lines(text)))
    if key.shown.replace("[]", "") in whole or ".".join(key.names) in whole:
        return True
    for section in sections(text):
        for k in range(1, len(key.names)):
            if _documents(section, key.names[:k]) and ".".join(key.names[k:]) in spans(
                section.text
            ):
                return True
    return False


def test_every_scenario_key_is_documented_in_scenarios_md() -> None:
    """Every key of ``harness.config.Scenario`` (walked recursively: nested models, lists,
    dicts and unions of models, each fault kind's own fields) is in docs/scenarios.md by
    the rule of ``documented``: the leaf in backticks in the section of its parent, or
    the full path in backticks. A key mentioned only in passing elsewhere, or not in
    backticks, fails. No key is exempt."""
    text = (DOCS / "scenarios.md").read_text()
    missing = [key.shown for key in scenario_keys() if not documented(key, text)]
    assert not missing, f"scenario keys missing from docs/scenarios.md: {missing}"


def test_the_key_walk_reaches_nested_models_lists_and_fault_kinds() -> None:
    shown = {key.shown for key in scenario_keys()}
    for expected in (
        "load.reconnect.policy",
        "server.protection.admission.rate",
        "faults[].at",
        "faults[].kind",
        "faults[toxic].proxy",
        "faults[kill_server].restart_after",
        "recovery.restore.target",
        "integrity.checks[].sql",
        "objectives[].metric",
        "topology.pooler.pool_mode",
        "ledger.success_when.text_not_matching",
    ):
        assert expected in shown, expected


def test_the_rule_can_fail() -> None:
    """The rule on a page written for it: a leaf under the wrong parent, a word outside
    backticks and a path named nowhere do not count."""
    page = (
        "# Scenarios\n\n## `load`\n\n`users`; reconnect policy\n\n### `reconnect`\n\n`base`\n\n"
        "## `faults`\n\nEvery fault has `kind` and `at`.\n\n### `toxic`\n\n`proxy`\n\n"
        "## `server`\n\n`cap`\n"
    )
    keys = {key.shown: key for key in scenario_keys()}
    assert documented(keys["load.users"], page)
    assert documented(keys["load.reconnect.base"], page)
    assert documented(keys["faults[].at"], page)
    assert documented(keys["faults[toxic].proxy"], page)
    assert not documented(keys["load.reconnect.policy"], page)  # not in backticks
    assert not documented(keys["load.reconnect.cap"], page)  # under `server`, not `reconnect`
    assert not documented(keys["faults[proxy_down].proxy"], page)  # `toxic`'s section only
    assert not documented(keys["load.spawn_rate"], page)


# --- metrics -------------------------------------------------------------------------


def test_every_metric_of_the_catalog_is_in_measurements_md() -> None:
    """Every entry of ``harness.catalog.CATALOG``, by its path as written there (with its
    placeholders, e.g. `tools_list_latency_ms.{phase}.{percentile}`), in backticks."""
    text = (DOCS / "measurements.md").read_text()
    missing = [m.path for m in CATALOG if f"`{m.path}`" not in text]
    assert not missing, f"metrics missing from docs/measurements.md: {missing}"


# --- links ---------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text as rendered (code marks and link targets
    dropped), lower-case, punctuation other than '-' and '_' removed, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file; a repeated one gets -1, -2, ..."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for number, line in enumerate(prose_lines(page.read_text()), 1):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if EXTERNAL.match(target):
                continue
            where, _, anchor = target.partition("#")
            file = (page.parent / where).resolve() if where else page
            problem = None
            if not file.exists():
                problem = "no such file"
            elif anchor and file.suffix != ".md":
                problem = "an anchor into a file that is not markdown"
            elif anchor and anchor not in anchors(file):
                problem = f"no heading with the anchor #{anchor}"
            if problem:
                broken.append(f"{page.relative_to(REPO)}:{number}: {target}: {problem}")
    return broken


def test_every_relative_link_points_at_a_file_and_heading_that_exist() -> None:
    """Markdown links ``[text](path#anchor)`` in README.md, docs/*.md and
    examples/README.md: the path exists (relative to the page), and an anchor names a
    heading of the target by GitHub's rules. Links in code are not links."""
    pages = [REPO / "README.md", REPO / "examples" / "README.md", *sorted(DOCS.glob("*.md"))]
    broken = [problem for page in pages for problem in broken_links(page)]
    assert not broken, broken


def test_slugs_follow_githubs_rules() -> None:
    assert slug("Objectives, verdict, exit codes") == "objectives-verdict-exit-codes"
    assert slug("Output: `results/<run_id>/`") == "output-resultsrun_id"
    assert (
        slug("Resilience tests in pytest: `test_my_server.py`")
        == "resilience-tests-in-pytest-test_my_serverpy"
    )


# --- README --------------------------------------------------------------------------


def test_readme_is_a_front_page() -> None:
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


def test_readme_links_every_docs_page() -> None:
    """README is where a reader starts: a page it does not link is a page nobody finds."""
    readme = (REPO / "README.md").read_text()
    linked = {target.partition("#")[0] for target in LINK.findall(readme)}
    missing = [
        f"docs/{page.name}"
        for page in sorted(DOCS.glob("*.md"))
        if f"docs/{page.name}" not in linked
    ]
    assert not missing, f"docs pages README.md does not link: {missing}"
