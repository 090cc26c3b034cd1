"""Prerequisites that depend on the machine: whether the user Postgres runs as can reach
its binaries (a checkout in a private directory cannot be entered by that user)."""

from __future__ import annotations

import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.stack.prerequisites import (
    MissingPrerequisite,
    blocked_directory,
    require_runnable_by,
)

OTHER_USER = "nobody"


@pytest.fixture
def checkout() -> Iterator[Path]:
    """A directory others may enter, holding a private one (as ``mktemp -d`` makes)."""
    pwd.getpwnam(OTHER_USER)
    base = Path(tempfile.mkdtemp(prefix="prereq-", dir="/tmp"))
    base.chmod(0o755)
    private = base / "private"
    (private / "bin").mkdir(parents=True)
    private.chmod(0o700)
    (private / "bin" / "initdb").touch()
    try:
        yield private
    finally:
        shutil.rmtree(base)


def test_the_private_directory_is_named_with_the_fix(checkout: Path) -> None:
    assert blocked_directory(checkout / "bin" / "initdb", OTHER_USER) == checkout
    with pytest.raises(MissingPrerequisite) as refused:
        require_runnable_by(checkout / "bin", OTHER_USER)
    message = str(refused.value)
    assert f"{checkout} (mode 700) does not let {OTHER_USER} in" in message
    assert f"setfacl -m u:{OTHER_USER}:x {checkout}" in message


def test_a_directory_others_may_enter_lets_postgres_through(checkout: Path) -> None:
    checkout.chmod(0o711)
    assert blocked_directory(checkout / "bin" / "initdb", OTHER_USER) is None
    require_runnable_by(checkout / "bin", OTHER_USER)
    require_runnable_by(checkout / "bin", None)  # not root: Postgres runs as the caller
