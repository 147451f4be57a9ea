"""gunicorn settings for fraud-detector; every value can be overridden through the environment."""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# unset or 0: one per core this process may run on (a container's cpuset), not all the host's
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
workers = int(os.environ.get("WORKERS") or 0) or cores
preload_app = True  # load the model once, before forking: workers share its memory
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
