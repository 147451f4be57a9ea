"""Start the production server: gunicorn with $WORKERS worker processes (unset or 0: one per core)."""

import os
import sys

if __name__ == "__main__":
    # exec, so gunicorn gets the signals (SIGTERM from an orchestrator) directly
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    os.execv(gunicorn, [gunicorn, "--config", "gunicorn.conf.py", "app.server:app"])
