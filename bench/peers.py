"""The servers users would pick instead of deployctl, for bench/run.py: MLServer (with its MLflow
runtime, `mlserver-mlflow`: the Open Inference Protocol's reference server, and MLflow's own
/invocations) and BentoML (a minimal service, bench/bento_service.py).

Each is installed in its own venv under the bench's work dir, never into the interpreter running the
bench: both pin versions (FastAPI, Starlette, uvicorn, protobuf...) that would break deployctl's test
environment. The venv takes the same scikit-learn, numpy, pandas and MLflow versions as the
artifacts, so that every server loads the same model with the same code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# MLServer 1.7.1's inference workers call asyncio.get_event_loop() in a fresh process, which
# uvloop 0.22 and later refuse ("There is no current event loop"): every worker dies and the model
# never loads. uvloop 0.21 is the last release MLServer's own workers start with.
PEERS = {
    "mlserver": ["mlserver==1.7.1", "mlserver-mlflow==1.7.1", "uvloop<0.22"],
    "bentoml": ["bentoml==1.4.40"],
}
SAME_AS_ARTIFACT = ("scikit-learn", "numpy", "pandas", "scipy")


def pins(lock: Path) -> list[str]:
    """The artifact's versions of the libraries the model needs, and this MLflow's."""
    import mlflow

    lines = lock.read_text().splitlines()
    found = [line.split(";")[0].strip() for line in lines if line.split("==")[0].lower() in SAME_AS_ARTIFACT]
    return [*found, f"mlflow=={mlflow.__version__}"]


def venv(workdir: Path, name: str, lock: Path) -> Path | str:
    """The peer's venv interpreter, installed once per work dir; or why it could not be installed."""
    root = workdir / "peers" / name
    python = root / "bin" / "python"
    wanted = [*PEERS[name], *pins(lock)]
    marker = root / "installed.json"
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return python
    print(f"  installing {name} into {root}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *wanted], capture_output=True, text=True
    )
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
        return f"`pip install {' '.join(wanted)}` failed: {' '.join(errors[-3:]) or result.stderr[-300:]}"
    marker.write_text(json.dumps(wanted))
    return python


def mlserver_dir(workdir: Path, model_dir: Path, ports: tuple[int, int, int], workers: int) -> Path:
    """MLServer's settings and model settings: the MLflow runtime on the artifact's model."""
    folder = workdir / "peers" / "mlserver-model"
    folder.mkdir(parents=True, exist_ok=True)
    http, grpc, metrics = ports
    settings = {
        "host": "127.0.0.1",
        "http_port": http,
        "grpc_port": grpc,
        "metrics_port": metrics,
        "parallel_workers": workers,  # MLServer's default is 1: as many as the other servers
    }
    model = {
        "name": "bench",
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": str(model_dir)},
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(json.dumps(model))
    return folder
