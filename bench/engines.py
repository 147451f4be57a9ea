"""The ONNX engine against the native one, side by side in one run, on the demo's fraud pipeline.

    python bench/engines.py [--rounds 5] [--duration 4] [--workdir bench/.work]

1. Lambda (`-t lambda`, default and `--engine onnx`): zip sizes, and the cold init of each zip,
   alternating: a clean interpreter of the runtime's Python version (the real one when installed,
   e.g. pyenv's, else this one) imports the handler (the model loads there) and answers one API
   Gateway event; timed from process start to the answer, median of --rounds.
2. embedded (`-t embedded`, both engines, each wheel in its own venv): single-row
   `model.predict(dict)` against the bare model call (scikit-learn's `predict_proba` on a 1-row
   DataFrame, the input this pipeline takes; onnxruntime's `session.run` on the same row).
3. fastapi (both engines): wrk, one connection (p50) and 16 (throughput) on /predict.

The model: the demo's fraud pipeline (scaler + one-hot + logistic regression), logged with the
pins a clean environment records (numpy, pandas, scikit-learn, scipy, skops).

Appends a section to bench/results.md (--out) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BENCH, REPO, Server, ensure_registry, machine, wrk

ROW = {"amount": 950.0, "hour": 3, "merchant_category": "gaming", "is_foreign": True, "account_age_days": 12}
ENGINES = ("native", "onnx")
COLD = """
import json, sys, time
sys.path.insert(0, ".")
import handler
event = json.load(open("events/predict.json"))
answer = handler.handler(event, None)
assert answer["statusCode"] == 200, answer
print(json.dumps({"pandas": "pandas" in sys.modules, "sklearn": "sklearn" in sys.modules}))
"""
EMBEDDED = """
import json, statistics, sys, time
import pandas as pd
import importlib
model = importlib.import_module(sys.argv[2]).model
row = json.loads(sys.argv[1]); model.load()
frame = pd.DataFrame([row])
service = model.service
if service.manifest["options"]["engine"] == "onnx":
    onnx = service.model
    feeds = onnx._feeds([service.schema.row(row, "row")])
    bare = lambda: onnx.session.run(onnx.outputs, feeds)
else:
    bare = lambda: service.model.predict_proba(frame)
def timed(call, n=2000):
    for _ in range(200): call()
    times = []
    for _ in range(n):
        t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6
print(json.dumps({"predict_us": timed(lambda: model.predict(row)), "bare_us": timed(bare)}))
"""


def register_fraud(workdir: Path) -> tuple[str, str]:
    """(tracking URI, model URI): the demo's fraud pipeline, logged with the requirements a clean
    environment records (MLflow's inference here also logs whatever else is installed, torch
    included, which no Lambda zip can hold)."""
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    record = workdir / "engines-model.json"
    if record.is_file():
        return tracking_uri, json.loads(record.read_text())["uri"]
    from importlib.metadata import version

    import mlflow
    from mlflow.models import infer_signature
    from sklearn.base import clone

    from deployctl.demo import synthetic_transactions

    mlflow.set_tracking_uri(tracking_uri)
    _, models = ensure_registry(workdir, fraud=True)
    X, y = synthetic_transactions()
    model = clone(mlflow.sklearn.load_model(models["fraud"])).fit(X, y)
    pins = [f"{p}=={version(p)}" for p in ("numpy", "pandas", "scikit-learn", "scipy", "skops")]
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(5),
            registered_model_name="fraud_lean",
            pip_requirements=pins,
        )
    uri = f"models:/fraud_lean/{info.registered_model_version}"
    record.write_text(json.dumps({"uri": uri}))
    return tracking_uri, uri


def lambda_python() -> str:
    from deployctl.targets.aws_lambda.local import find_python

    return find_python("3.12") or sys.executable


def cold_inits(artifacts: dict[str, Path], rounds: int) -> dict[str, dict[str, Any]]:
    python = lambda_python()
    results: dict[str, dict[str, Any]] = {}
    for engine, artifact in artifacts.items():
        unpacked = artifact / ".unzipped"
        if not unpacked.is_dir():
            zipfile.ZipFile(artifact / "dist" / "function.zip").extractall(unpacked)
        (unpacked / "events").mkdir(exist_ok=True)
        (unpacked / "events" / "predict.json").write_text((artifact / "events" / "predict.json").read_text())
        facts = json.loads((artifact / "dist" / "build.json").read_text())["function"]
        results[engine] = {
            "zip_mb": facts["zip_bytes"] / 2**20,
            "unzipped_mb": facts["unzipped_bytes"] / 2**20,
        }
        results[engine]["times"] = []
    for _ in range(rounds):
        for engine, artifact in artifacts.items():
            started = time.perf_counter()
            proc = subprocess.run(
                [python, "-I", "-c", COLD], cwd=artifact / ".unzipped", capture_output=True, text=True
            )
            seconds = time.perf_counter() - started
            if proc.returncode != 0:
                sys.exit(f"cold init of the {engine} zip failed:\n{proc.stderr}")
            results[engine]["times"].append(seconds)
            results[engine]["imports"] = json.loads(proc.stdout.splitlines()[-1])  # after the log lines
    for facts in results.values():
        facts["cold_s"] = statistics.median(facts.pop("times"))
    results["python"] = {"path": Path(python).name, "version": subprocess.check_output(
        [python, "-c", "import platform; print(platform.python_version())"], text=True).strip()}  # fmt: skip
    return results


def embedded(artifacts: dict[str, Path], workdir: Path) -> dict[str, dict[str, float]]:
    figures = {}
    for engine, artifact in artifacts.items():
        venv = workdir / f"embedded-venv-{engine}"
        python = venv / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            wheel = next((artifact / "dist").glob("*.whl"))
            wheels = ["--no-index", "--find-links", str(artifact / ".wheelhouse")]
            subprocess.run(
                ["uv", "pip", "install", "-q", "--python", str(python), *wheels, str(wheel)], check=True
            )
        package = json.loads((artifact / "deployctl.json").read_text())["name"].replace("-", "_")
        proc = subprocess.run(
            [str(python), "-c", EMBEDDED, json.dumps(ROW), package], capture_output=True, text=True
        )
        if proc.returncode != 0:
            sys.exit(f"embedded {engine} failed:\n{proc.stderr}")
        figures[engine] = json.loads(proc.stdout)
    return figures


def fastapi(
    artifacts: dict[str, Path], workdir: Path, seconds: int, rounds: int
) -> dict[str, dict[str, float]]:
    body = workdir / "predict_fraud.json"
    body.write_text(json.dumps({"features": ROW}))
    runs: dict[str, list[dict[str, float]]] = {engine: [] for engine in artifacts}
    for _ in range(rounds):
        for engine, artifact in artifacts.items():
            python = str(artifact / ".venv" / "bin" / "python")
            server = Server(
                f"fastapi {engine}", [python, "-m", "app"], artifact, {"WORKERS": "2", "ACCESS_LOG": "0"}
            )
            with server.running(workdir):
                wrk(server.url + "/predict", body, 16, 2)  # warm-up
                one = wrk(server.url + "/predict", body, 1, seconds)
                many = wrk(server.url + "/predict", body, 16, seconds)
            runs[engine].append({"p50_ms": one["p50_us"] / 1000, "rps": many["rps"]})
    return {e: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for e, rs in runs.items()}


def report(cold: dict[str, Any], emb: dict[str, Any], api: dict[str, Any], header: str, args: Any) -> str:
    n, o = cold["native"], cold["onnx"]
    lines = [
        "",
        "## --engine onnx against the default engine (the demo's fraud pipeline), same run",
        "",
        header,
        f"`python bench/engines.py --rounds {args.rounds} --duration {args.duration}`. Lambda cold init: "
        f"a clean CPython {cold['python']['version']} (`-I`) imports handler.py (the model loads there) "
        "and answers one API Gateway /predict event, timed from process start to the answer; median "
        f"of {args.rounds}, the two zips alternating.",
        "",
        "| Lambda zip | zipped | unzipped | cold init | imports pandas / sklearn at init |",
        "|---|--:|--:|--:|---|",
    ]
    for engine, facts in (("default (native)", n), ("--engine onnx", o)):
        imported = " / ".join("yes" if facts["imports"][m] else "no" for m in ("pandas", "sklearn"))
        sizes = f"{facts['zip_mb']:.1f} MB | {facts['unzipped_mb']:.1f} MB"
        lines.append(f"| {engine} | {sizes} | {facts['cold_s']:.2f} s | {imported} |")
    lines += [
        "",
        f"Cold init: onnx / native = {o['cold_s'] / n['cold_s']:.2f} (1/{n['cold_s'] / o['cold_s']:.1f}).",
        "",
        "| embedded, single row | `model.predict(dict)` | bare model call | ratio |",
        "|---|--:|--:|--:|",
    ]
    bare = {"native": "sklearn `predict_proba`, 1-row DataFrame", "onnx": "onnxruntime `session.run`, 1 row"}
    for engine, figures in emb.items():
        lines.append(
            f"| {engine} | {figures['predict_us']:.0f} us | {figures['bare_us']:.0f} us ({bare[engine]}) | "
            f"{figures['predict_us'] / figures['bare_us']:.2f}x |"
        )
    share = emb["onnx"]["predict_us"] / emb["native"]["bare_us"]
    lines.append(
        f"\nembedded onnx `model.predict` / native bare sklearn call: {share:.4f} (1/{1 / share:.0f})."
    )
    lines += [
        "",
        "| fastapi /predict, 2 workers | p50, 1 connection | throughput, 16 connections |",
        "|---|--:|--:|",
    ]
    for engine, figures in api.items():
        lines.append(f"| {engine} | {figures['p50_ms']:.2f} ms | {figures['rps']:,.0f} req/s |")
    lines.append(
        f"\nfastapi onnx / native: throughput {api['onnx']['rps'] / api['native']['rps']:.2f}x, "
        f"p50 {api['onnx']['p50_ms'] / api['native']['p50_ms']:.2f}x."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--workdir", type=Path, default=BENCH / ".work")
    parser.add_argument("--out", type=Path, default=BENCH / "results.md")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    header = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()}."
    tracking_uri, uri = register_fraud(workdir)
    built: dict[str, dict[str, Path]] = {}
    for target in ("lambda", "embedded", "fastapi"):
        built[target] = {}
        for engine in ENGINES:
            out = workdir / f"{target}-{engine}"
            print(f"generate + build {target} --engine {engine}", file=sys.stderr)
            make_artifact_with_engine(uri, target, out, tracking_uri, engine)
            built[target][engine] = out
    cold = cold_inits(built["lambda"], args.rounds)
    emb = embedded(built["embedded"], workdir)
    api = fastapi(built["fastapi"], workdir, args.duration, max(1, args.rounds // 2))
    text = report(cold, emb, api, header, args)
    print(text)
    with args.out.open("a") as fh:
        fh.write(text)


def make_artifact_with_engine(uri: str, target: str, out: Path, tracking_uri: str, engine: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    generate = ["generate", "-m", uri, "-t", target, "-o", str(out), "--force", "--engine", engine]
    for args in (generate, ["build", str(out)]):
        result = subprocess.run(
            [sys.executable, "-m", "deployctl", *args], env=env, capture_output=True, text=True, cwd=REPO
        )
        if result.returncode != 0:
            sys.exit(f"deployctl {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


if __name__ == "__main__":
    main()
