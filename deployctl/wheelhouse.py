"""A wheelhouse: every pinned requirement downloaded on the host, for the target's platform.

Builds that run where there is no package index (a container build, a firewalled CI) install from
it with `--no-index`; the same wheels make the Lambda zip. Downloads are cached by the hash of
requirements.txt and the platform, so a rebuild with unchanged requirements downloads nothing.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from deployctl.errors import BuildFailed

# glibc-based x86_64 Linux: what python:3.11-slim (Debian) runs.
LINUX_X86_64 = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def download(
    requirements_txt: Path,
    dest: Path,
    console: Console,
    *,
    python_version: str = "3.11",
    platforms: tuple[str, ...] = LINUX_X86_64,
) -> list[Path]:
    """Download binary wheels for `platforms` and CPython `python_version` into `dest`."""
    key = hashlib.sha256(
        requirements_txt.read_bytes() + repr((python_version, platforms)).encode()
    ).hexdigest()
    stamp = dest / ".requirements.sha256"
    if stamp.is_file() and stamp.read_text() == key:
        console.print(f"[dim]{dest.name} is up to date with {requirements_txt.name}[/]")
        return sorted(dest.glob("*.whl"))
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    abi = "cp" + python_version.replace(".", "")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-input",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
        *(arg for p in platforms for arg in ("--platform", p)),
        "-r",
        str(requirements_txt),
        "-d",
        str(dest),
    ]
    with console.status(f"Downloading wheels for CPython {python_version} on {platforms[0]}"):
        result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-12:])
        raise BuildFailed(
            f"Could not download wheels for {requirements_txt} (pip exit {result.returncode}):\n{tail}",
            "Every requirement needs a binary wheel for the target platform; pin a version that "
            "ships one, or check that the package index is reachable.",
        )
    stamp.write_text(key)
    return sorted(dest.glob("*.whl"))
