"""Start the production server: uvicorn with $WORKERS worker processes (default: one per core)."""

import os

import uvicorn

if __name__ == "__main__":
    uvicorn.run(
        "app.server:app",
        host=os.environ.get("HOST", "0.0.0.0"),
        port=int(os.environ.get("PORT", "8000")),
        workers=int(os.environ.get("WORKERS") or os.cpu_count() or 1),
        access_log=False,  # app.runtime logs each request as one JSON line
        timeout_graceful_shutdown=int(os.environ.get("GRACEFUL_TIMEOUT", "20")),
        log_level=os.environ.get("LOG_LEVEL", "info").lower(),
    )
