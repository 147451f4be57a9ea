"""gunicorn settings for fraud-detector; every value can be overridden through the environment."""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WORKERS") or os.cpu_count() or 1)
preload_app = True  # load the model once, before forking: workers share its memory
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "20"))
timeout = int(os.environ.get("TIMEOUT", "30"))
accesslog = None  # app.runtime logs each request as one JSON line
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
