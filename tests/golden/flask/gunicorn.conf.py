"""gunicorn settings for fraud-detector; every value can be overridden through the environment."""

import json
import os
import shutil
from pathlib import Path
from typing import Any

from app import metrics_dir as metrics_folder

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# unset or 0: one per core this process may run on (a container's cpuset), not all the host's
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
workers = int(os.environ.get("WORKERS") or 0) or cores
# Load the model once, before forking: workers share its memory. Not for models whose library
# starts a native thread pool (LightGBM's and XGBoost's OpenMP): a worker forked after the warm-up
# hangs in its first model call, so each worker loads its own copy after the fork.
_manifest = json.loads((Path(__file__).resolve().parent / "deployctl.json").read_text())
preload_app = _manifest["model"]["loader"]["kind"] not in ("lightgbm", "xgboost")  # app.runtime.FORK_UNSAFE
# gthread whose main thread reads each request in full before a thread runs it: slow clients cost
# a socket, not a worker; SIGTERM drains (see app/worker.py)
worker_class = "app.worker.BufferedWorker"
threads = int(os.environ.get("THREADS", "4"))
keepalive = int(os.environ.get("KEEPALIVE", "5"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "20"))
timeout = int(os.environ.get("TIMEOUT", "30"))
accesslog = None  # app.runtime logs each request as one JSON line
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
control_socket_disable = True  # no socket file in the home directory, which may be read-only
# Prometheus metrics from every worker: each writes its values to files in this directory (set before
# the app imports prometheus_client), and /metrics adds them up. A fresh one per start: no stale
# values of an earlier run's workers.
_metrics_dir = None  # made here, so removed at exit (one given in the environment stays)
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_folder.make()


def child_exit(server: Any, worker: Any) -> None:
    """A worker gone: its in-progress gauge no longer counts."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """The arbiter stops: the metrics directory it made goes with it."""
    if _metrics_dir is not None:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
