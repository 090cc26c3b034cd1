"""The files the package ships beside its code, and how a name on the command line finds
one.

Scenarios, drills and the docker backend's build files are package data, so an installed
``mcp-harness`` (a wheel, a git URL) has them as a checkout does. A path that exists is
always taken as written; otherwise a bare name (``primary_kill``) or the path the
documentation uses (``scenarios/primary_kill.yaml``) finds the shipped file.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SCENARIOS_DIR = PACKAGE_DIR / "scenarios"
DRILLS_DIR = PACKAGE_DIR / "drills"
DOCKER_DIR = PACKAGE_DIR / "docker"


def shipped_names(folder: Path) -> list[str]:
    """The names of the YAML files shipped in ``folder``, sorted."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def find_file(text: str | Path, folder: Path) -> Path:
    """``text`` when that path exists; else the shipped file it names in ``folder``
    (``name``, ``name.yaml``, or ``<folder name>/name.yaml``); else ``text`` unchanged, for
    the caller's error to name."""
    path = Path(text)
    if path.exists():
        return path
    if path.parent in (Path("."), Path(folder.name)):
        name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
        shipped = folder / name
        if shipped.is_file():
            return shipped
    return path


def missing_file_hint(folder: Path) -> str:
    """What an error about a missing scenario or drill file adds: the shipped names."""
    return f"shipped {folder.name} (by name): {', '.join(shipped_names(folder))}"
