"""A wheelhouse: every pinned requirement downloaded on the host, for the target's platform.

Builds that run where there is no package index (a container build, a firewalled CI) install from
it with `--no-index`; the same wheels make the Lambda zip. Downloads are cached by the hash of
requirements.txt and the platform, so a rebuild with unchanged requirements downloads nothing.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from rich.console import Console

from deployctl.errors import interruptible
from deployctl.process import run_or_fail


def manylinux_platforms(machine: str = "x86_64", glibc_minor: int = 28) -> tuple[str, ...]:
    """Every manylinux tag a glibc 2.<glibc_minor> system on `machine` can install, newest first.

    `pip download --platform` takes tags literally (it does not widen manylinux_2_36 to older
    glibc versions as an installer would), so the whole compatible range is spelled out.
    """
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(glibc_minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{alias}_{machine}" for minor, alias in legacy.items() if minor <= glibc_minor]
    return tuple(tags)


def musllinux_platforms(machine: str = "x86_64", musl_minor: int = 2) -> tuple[str, ...]:
    """The musllinux tags a musl 1.<musl_minor> system (Alpine) on `machine` can install."""
    return tuple(f"musllinux_1_{minor}_{machine}" for minor in range(musl_minor, -1, -1))


STAMP = ".requirements.sha256"  # in the wheelhouse: what it was downloaded for, written last

# glibc-based x86_64 Linux with glibc 2.28 or newer: python:3.11-slim (Debian), AWS Lambda.
LINUX_X86_64 = manylinux_platforms("x86_64", 28)


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
    stamp = dest / STAMP
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
    with (
        console.status(f"Downloading wheels for CPython {python_version} on {platforms[0]}"),
        interruptible(lambda: remove_partial(dest, requirements_txt.parent)),
    ):
        run_or_fail(
            cmd,
            f"download wheels for {requirements_txt}",
            "Every requirement needs a binary wheel for the target platform; pin a version that "
            "ships one, or check that the package index is reachable.",
            lines=12,
        )
    stamp.write_text(key)
    return sorted(dest.glob("*.whl"))


def remove_partial(dest: Path, root: Path) -> str:
    """An interrupted download: the wheels it got so far go (the old ones went before it began),
    and so does the stamp, so that nothing reads the folder as complete."""
    for wheel in dest.glob("*.whl"):
        wheel.unlink()
    (dest / STAMP).unlink(missing_ok=True)
    shown = dest.relative_to(root) if dest.is_relative_to(root) else dest
    return f"the wheels downloaded so far were removed from {shown}/"
