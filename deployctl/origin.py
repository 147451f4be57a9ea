"""Where this deployctl comes from, so that a hint names an install command that works from there.

deployctl is installed from a source checkout (`pip install .`, `pip install -e .`, or run with the
checkout on PYTHONPATH) or from a wheel file more often than from a package index, where
`pip install 'deployctl[onnx]'` or `pip install -U deployctl` finds nothing. The installed copy's
`direct_url.json` (PEP 610) records the folder or file it was installed from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlsplit

import deployctl

PACKAGE_DIR = Path(deployctl.__file__).resolve().parent


@dataclass(frozen=True)
class Origin:
    kind: str  # "checkout" (a source folder), "file" (a wheel or sdist) or "index"
    path: Path | None = None
    copied: bool = False  # installed as a copy (not editable): a change needs `pip install` again


def origin() -> Origin:
    """The checkout this code runs from, else what the installed copy was installed from."""
    if _is_checkout(PACKAGE_DIR.parent):  # editable install, or the checkout on PYTHONPATH
        return Origin("checkout", PACKAGE_DIR.parent)
    try:
        text = metadata.distribution("deployctl").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        text = None
    source = json.loads(text) if text else {}
    url = urlsplit(source.get("url", ""))
    if url.scheme != "file":
        return Origin("index")
    path = Path(unquote(url.path))
    if "dir_info" in source and _is_checkout(path):
        return Origin("checkout", path, copied=not source["dir_info"].get("editable", False))
    if "archive_info" in source and path.is_file():
        return Origin("file", path)
    return Origin("index")


def _is_checkout(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    return pyproject.is_file() and 'name = "deployctl"' in pyproject.read_text(errors="replace")


def install_extra(extra: str, packages: list[str]) -> str:
    """A command that installs deployctl's `extra`, and the packages it names, for doing it by hand."""
    where = origin()
    target = f"{where.path}[{extra}]" if where.path else f"deployctl[{extra}]"
    return f"pip install '{target}' (or the packages alone: pip install {' '.join(packages)})"


def upgrade(version: str) -> str:
    """How to get deployctl >= `version` from where this one came."""
    where = origin()
    if where.kind == "checkout":
        again = f", then pip install {where.path}" if where.copied else ""
        return f"update the checkout at {where.path} (git pull{again})"
    if where.kind == "file":
        return f"install a deployctl wheel of version {version} or later (this one came from {where.path})"
    return f"pip install -U 'deployctl>={version}'"
