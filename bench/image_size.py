"""Image size: deployctl's docker target against `mlflow models generate-dockerfile`.

Same model, same base image, same wheels. MLflow's Dockerfile pip-installs MLflow and the model's
requirements from the package index inside the build. Where builds cannot reach an index, its
Dockerfile is kept as MLflow wrote it, with three changes and no others:

  1. FROM: the same base image as ours (default python:3.11-slim; MLflow writes the host's
     exact patch version, python:<x.y.z>-slim).
  2. Where pip gets packages: a wheelhouse downloaded on the host (deployctl.wheelhouse, for the
     base image's Python and platform) holding MLflow, the model's requirements, the model's
     build dependencies and gunicorn[gevent], served to the build over HTTP. `ARG PIP_NO_INDEX`
     and `ARG PIP_FIND_LINKS` (+ PIP_TRUSTED_HOST, it is plain HTTP) point every pip call at it,
     so no wheel becomes a layer.
  3. Only if the base image has no `pip` (a plain Debian python3): a venv on PATH gives `pip`
     and `python`, as python:3.11-slim has them.

apt-get (nginx) runs as MLflow wrote it. Both images are built without the layer cache and
checked to answer a prediction before their sizes are reported.

    python bench/image_size.py [--model models:/fraud_detector@production] [--tracking-uri URI]

Without --tracking-uri or MLFLOW_TRACKING_URI, a demo registry is created in a temp dir.
Writes bench/results/raw/image_size.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from deployctl import docker_engine, wheelhouse
from deployctl.manifest import Artifact
from deployctl.process import free_port, get
from deployctl.targets.container import DockerTarget

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "raw" / "image_size.json"
console = Console(stderr=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models:/fraud_detector@production")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--base-image", default="python:3.11-slim")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deployctl-bench-") as tmp:
        work = Path(tmp)
        tracking_uri = args.tracking_uri or demo_registry(work)
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        base = docker_engine.probe_base_image(args.base_image)
        results = {
            "model": args.model,
            "base_image": {"ref": base.ref, "size_bytes": docker_engine.image_size(base.ref)},
            "deployctl": bench_ours(args.model, base, work / "ours"),
            "mlflow": bench_mlflow(args.model, base, work / "mlflow"),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def demo_registry(work: Path) -> str:
    from deployctl.demo import train_and_register

    uri = f"sqlite:///{work / 'mlflow.db'}"
    with console.status("Training and registering the demo model"):
        train_and_register(uri)
    return uri


def cli(*args: str) -> None:
    """The real CLI; its reports go to stderr so that stdout is only the results table."""
    command = [sys.executable, "-m", "deployctl", *args]
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL, stdout=sys.stderr)


def bench_ours(model: str, base: docker_engine.BaseImage, out: Path) -> dict[str, Any]:
    tag = "deployctl-bench/deployctl:latest"
    cli("generate", "-m", model, "-t", "docker", "-o", str(out), "--image", tag, "--base-image", base.ref)
    artifact = Artifact.open(out)
    started = time.monotonic()
    wheels = download(out / "requirements.txt", out / ".wheelhouse", base)
    downloaded = time.monotonic()
    facts = DockerTarget().build_image(artifact, console, nocache=True)
    built = time.monotonic()
    cli("smoke-test", str(out))
    return {
        "image": tag,
        "size_bytes": facts["size_bytes"],
        "wheels": len(wheels),
        "wheel_seconds": round(downloaded - started, 1),
        "build_seconds": round(built - downloaded, 1),
    }


def bench_mlflow(model: str, base: docker_engine.BaseImage, out: Path) -> dict[str, Any]:
    tag = "deployctl-bench/mlflow:latest"
    subprocess.run(["mlflow", "models", "generate-dockerfile", "-m", model, "-d", str(out)], check=True)
    started = time.monotonic()
    wheels = download(mlflow_requirements(out), out.parent / "mlflow-wheels", base)
    downloaded = time.monotonic()
    with serve_directory(out.parent / "mlflow-wheels") as url:
        adapt_dockerfile(out / "Dockerfile", base, url)
        docker_engine.build_image(out, tag, console, nocache=True)
    built = time.monotonic()
    check_mlflow_serves(tag, out / "model_dir")
    return {
        "image": tag,
        "size_bytes": docker_engine.image_size(tag),
        "wheels": len(wheels),
        "wheel_seconds": round(downloaded - started, 1),
        "build_seconds": round(built - downloaded, 1),
    }


def download(requirements: Path, dest: Path, base: docker_engine.BaseImage) -> list[Path]:
    return wheelhouse.download(
        requirements, dest, console, python_version=base.python, platforms=base.platforms
    )


def mlflow_requirements(out: Path) -> Path:
    """Everything MLflow's Dockerfile pip-installs: mlflow, the model's env, gunicorn[gevent]."""
    import yaml
    from mlflow.version import VERSION

    model_dir = out / "model_dir"
    env = yaml.safe_load((model_dir / "python_env.yaml").read_text())
    lines = [f"mlflow=={VERSION}", *env.get("build_dependencies", []), "gunicorn[gevent]"]
    lines += [x for x in (model_dir / "requirements.txt").read_text().splitlines() if x.strip()]
    path = out.parent / "mlflow-requirements.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def adapt_dockerfile(dockerfile: Path, base: docker_engine.BaseImage, wheels_url: str) -> None:
    text = dockerfile.read_text()
    host = wheels_url.split("/")[2].split(":")[0]
    pip_args = f"ARG PIP_NO_INDEX=1\nARG PIP_FIND_LINKS={wheels_url}\nARG PIP_TRUSTED_HOST={host}"
    lines = [f"FROM {base.ref}", pip_args]
    if not has_pip(base.ref):
        lines.append("RUN python3 -m venv /opt/venv\nENV PATH=/opt/venv/bin:$PATH")
    text, count = re.subn(r"^FROM \S+$", "\n".join(lines), text, count=1, flags=re.M)
    assert count == 1, "MLflow's Dockerfile has no FROM line"
    dockerfile.write_text(text)


def has_pip(image: str) -> bool:
    return docker_engine.run_once(image, ["sh", "-c", "command -v pip"])[0] == 0


class serve_directory:
    """Serve a directory over HTTP on the Docker bridge's gateway, where builds can reach it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __enter__(self) -> str:
        ipam = docker_engine.client().networks.get("bridge").attrs["IPAM"]["Config"][0]
        # Older engines leave Gateway out: it is then the subnet's first address.
        bridge = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
        port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", bridge, "-d", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        return f"http://{bridge}:{port}/"

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait()


def check_mlflow_serves(tag: str, model_dir: Path) -> None:
    """MLflow's image must answer /invocations too, or comparing sizes would be meaningless."""
    example = json.loads((model_dir / "serving_input_example.json").read_text())
    port = free_port()
    ports = {"8080/tcp": ("127.0.0.1", port)}
    container = docker_engine.client().containers.run(tag, detach=True, ports=ports)
    service = docker_engine.ContainerService(container, port)
    try:
        wait_for(lambda: get(service.base_url, "/ping")[0] == 200, 180, service)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/invocations", json.dumps(example), {"content-type": "application/json"})
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200, f"MLflow's image answered {response.status}: {body}"
        console.print(f"MLflow's image answers /invocations: {body[:120]}")
    finally:
        service.stop()


def wait_for(ready: Any, timeout: float, service: docker_engine.ContainerService) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"MLflow's container never answered /ping:\n{service.logs()}")


def table(results: dict[str, Any]) -> str:
    rows = [
        "| image | size | wheels | wheel download | docker build (no cache) |",
        "|---|---|---|---|---|",
        f"| base `{results['base_image']['ref']}` | {mb(results['base_image']['size_bytes'])} | | | |",
    ]
    for key, label in (("deployctl", "deployctl docker target"), ("mlflow", "mlflow generate-dockerfile")):
        r = results[key]
        times = f"{r['wheel_seconds']} s | {r['build_seconds']} s"
        rows.append(f"| {label} | {mb(r['size_bytes'])} | {r['wheels']} | {times} |")
    return "\n".join(rows)


def mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


if __name__ == "__main__":
    main()
