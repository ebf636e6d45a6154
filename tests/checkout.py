"""A fresh copy of this repository, set up the way the README tells a user to set it up.

Tests that run the product as its users do start here: the files `git clone` would give (tracked
and not-ignored files only, so no local `.dlt/secrets.toml`, state or DuckDB file comes along),
the committed `.dlt/config.toml`, a `.dlt/secrets.toml` made from the shipped example, and an
environment holding nothing of this project's but what the test names.

The one shortcut: the copy's `.venv` is a link to this checkout's, so that `make` finds it
installed instead of building a new virtual environment per test (`.ci/run` builds the real one
from a clean clone through `make test`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Every variable that configures this project (or dlt) is the test's to set, not the developer's.
_PROJECT_VARIABLES = re.compile(
    r"^(SOURCES|DESTINATION|PIPELINES|SYNC|MODELS|RUNTIME|LOAD|NORMALIZE|EXTRACT|DLT)_"
)


def recipe(name: str) -> str:
    """The README block marked `<!-- recipe:name -->`, as a user copies it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- recipe:{name} -->\n```\w*\n(.*?)```", readme, re.S)
    assert found, f"README has no recipe {name}"
    return found.group(1)


def commands(block: str) -> list[str]:
    """The command lines of a README console block, without their trailing comments."""
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def copy_checkout(target: Path) -> Path:
    """The files a fresh clone of this repository has, copied to `target`."""
    require_installed_venv()
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        destination = target / name
        if source.is_symlink():  # pipelines/sql -> ../sql, as git checks it out
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.symlink_to(os.readlink(source))
            continue
        if not source.is_file():  # deleted in the work tree but still in the index
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


def require_installed_venv() -> None:
    """`make` in a copy must find the shared venv up to date: otherwise it would reinstall the
    project, editable, from the copy, and every later import would come from a temporary folder."""
    checksum = subprocess.run(
        ["cksum", "pyproject.toml"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()[0]
    stamp = ROOT / ".venv" / f".installed-{checksum}"
    assert stamp.exists(), "pyproject.toml changed since the venv was installed: run `make install`"


def write_secrets(checkout: Path, api_key: str) -> Path:
    """README: `cp .dlt/secrets.toml.example .dlt/secrets.toml`, then put your key in it."""
    example = (checkout / ".dlt" / "secrets.toml.example").read_text()
    assert 'api_key = "pcv_..."' in example, "the example no longer shows where the key goes"
    secrets = checkout / ".dlt" / "secrets.toml"
    secrets.write_text(example.replace('api_key = "pcv_..."', f'api_key = "{api_key}"'))
    return secrets


def user_environment(**variables: str) -> dict[str, str]:
    """The caller's environment without any project or dlt setting, plus `variables`."""
    clean = {k: v for k, v in os.environ.items() if not _PROJECT_VARIABLES.match(k)}
    return {**clean, **variables}


def run_in(
    checkout: Path, command: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """A shell command line, as a user types it, in the checkout."""
    return subprocess.run(
        ["sh", "-c", command],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
