"""The folder where Prometheus' multiprocess mode keeps each worker's values (one per server start).

The server removes its own when it stops. One killed with SIGKILL (an orchestrator's or a test
harness's last resort) cannot: so each start also removes the folders of servers that are gone,
known by the process id in their names.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "metrics-"
OWNER = re.compile(rf"{PREFIX}(\d+)-")


def make() -> str:
    """A fresh folder named after this process, after removing those of processes that are gone."""
    remove_stale(Path(tempfile.gettempdir()))
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")


def remove_stale(folder: Path) -> None:
    for path in folder.glob(f"{PREFIX}*-*"):
        owner = OWNER.match(path.name)
        if owner and not _running(int(owner.group(1))) and _ours(path):
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _ours(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.getuid()
    except OSError:
        return False
