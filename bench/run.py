"""Latency and throughput of deployctl's fastapi and flask services against `mlflow models serve`.

One command, on one machine, in one run (about 6 minutes; the first run also builds the registry):

    python bench/run.py [--duration 4] [--rounds 3] [--workers N] [--fraud] [--only NAME...]

1. builds (or reuses) a sqlite MLflow registry in the work dir holding a binary logistic regression
   (and, with --fraud, the demo's scaling + one-hot + logistic-regression pipeline);
2. generates and builds the fastapi and flask artifacts with the deployctl CLI, timing both steps;
3. starts the generated services (fastapi also with MICRO_BATCH=0), `mlflow models serve
   --env-manager local` with its default single worker and with as many workers as ours, the peers
   (bench/peers.py: MLServer with mlserver-mlflow, its /invocations and OIP v2 infer, and a minimal
   BentoML service, each installed in its own venv under the work dir; a peer that cannot install
   is reported and left out), and a bare ASGI app on the same uvicorn (bench/floor.py: the floor);
4. checks every server's answers against scikit-learn in-process (bit for bit), then loads each
   route with wrk (bench/post.lua posts the JSON): 1 connection for latency, 16 for throughput;
   routes: /predict, /predict_batch, /invocations (dataframe_split) and OIP v2 infer, 1 and 100 rows;
5. fails on any socket error or non-2xx answer, prints a table with ratios against MLflow's best
   figure and writes it to bench/results.md with the date, the machine's size and the versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import peers

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BATCH_ROWS = 100
FEATURES = [f"x{i}" for i in range(8)]
PACKAGES = ("fastapi", "uvicorn", "uvloop", "httptools", "flask", "gunicorn", "orjson", "scikit-learn",
            "numpy", "pandas")  # fmt: skip


# -- the registry and the artifacts -------------------------------------------------------------


def ensure_registry(workdir: Path, fraud: bool) -> tuple[str, dict[str, str]]:
    """(tracking URI, {label: model URI}); models are trained and registered once per work dir."""
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    record = workdir / "models.json"
    models = json.loads(record.read_text()) if record.is_file() else {}
    if "logreg" not in models:
        models["logreg"] = register_logreg(tracking_uri)
    if fraud and "fraud" not in models:
        from deployctl.demo import train_and_register

        models["fraud"] = f"models:/fraud_detector/{train_and_register(tracking_uri)}"
    record.write_text(json.dumps(models))
    return tracking_uri, models


def register_logreg(tracking_uri: str) -> str:
    """A binary logistic regression on 8 numeric columns, fitted on a DataFrame (so it has names)."""
    import warnings

    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    warnings.filterwarnings("ignore")  # MLflow's hints are not for the benchmark's reader
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, len(FEATURES))), columns=FEATURES)
    y = (X.x0 + 0.5 * X.x1 - X.x2 + rng.normal(0, 0.5, len(X)) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(5),
            registered_model_name="bench_logreg",
        )
    return f"models:/bench_logreg/{info.registered_model_version}"


def deployctl(*args: str, env: dict[str, str]) -> float:
    """Run the deployctl CLI; return its wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "deployctl", *args], env=env, capture_output=True, text=True, cwd=REPO
    )
    if result.returncode != 0:
        sys.exit(f"deployctl {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return time.perf_counter() - started


def make_artifact(uri: str, target: str, out: Path, tracking_uri: str) -> dict[str, float]:
    """generate (always: the templates under test may have changed) and build; their wall times."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    generate = deployctl("generate", "-m", uri, "-t", target, "-o", str(out), "--force", env=env)
    return {"generate": generate, "build": deployctl("build", str(out), env=env)}


# -- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    command: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    requests: tuple[str, ...] = ("predict",)  # keys of requests_for()
    port: int = field(default_factory=free_port)
    pid: int = 0
    health: str = "/health"  # answers 200 once the model is loaded
    model: str = "bench_logreg"  # the model's name in OIP paths
    ready_timeout: float = 180  # seconds from start to /health answering

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def running(self, logs: Path) -> Iterator[Server]:
        """Started in its own process group, so stopping it also stops its workers."""
        env = {**os.environ, **self.env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        command = [c.replace("{port}", str(self.port)) for c in self.command]
        with open(logs / f"{self.name.replace(' ', '_')}.log", "wb") as log:
            proc = subprocess.Popen(
                command, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                wait_ready(self, proc, self.ready_timeout)
                self.pid = proc.pid
                yield self
            finally:
                stop(proc)


def wait_ready(server: Server, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{server.name} exited ({proc.returncode}) before answering; see its log")
        try:
            with urllib.request.urlopen(f"{server.url}{server.health}", timeout=2):
                return
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    sys.exit(f"{server.name} did not answer {server.health} in {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def servers(artifacts: dict[str, Path], uri: str, tracking_uri: str, workers: int) -> list[Server]:
    """Ours, MLflow's (its default of 1 worker, and as many workers as ours), the peers and the floor."""
    # GRPC=0: several fastapi services run at once here, and each would bind gRPC's port 8081
    ours = {"WORKERS": str(workers), "GRPC": "0"}
    fastapi, flask = (
        [str(artifacts[t] / ".venv" / "bin" / "python"), "-m", "app"] for t in ("fastapi", "flask")
    )
    mlflow_env = {"MLFLOW_TRACKING_URI": tracking_uri}
    mlflow = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        "local",
        "-p",
        "{port}",
    ]
    floor = [fastapi[0], "-m", "uvicorn", "floor:app", "--app-dir", str(BENCH), "--port", "{port}"]
    # the same flask artifact on gunicorn's sync workers, as it shipped before app/worker.py (the
    # command line overrides gunicorn.conf.py): one connection at a time per process, no keep-alive
    gunicorn = str(artifacts["flask"] / ".venv" / "bin" / "gunicorn")
    flask_sync = [gunicorn, "--config", "gunicorn.conf.py", "--worker-class", "sync", "app.server:app"]
    quiet = ["--no-access-log", "--log-level", "warning"]
    unbatched = {**ours, "MICRO_BATCH": "0"}
    unmetered = {**ours, "METRICS": "0"}
    return [
        Server(
            "deployctl fastapi",
            fastapi,
            artifacts["fastapi"],
            ours,
            ("predict", "batch", "invocations", "invocations_batch", "oip", "oip_batch"),
            model=oip_name(artifacts["fastapi"]),
        ),
        Server("deployctl fastapi, MICRO_BATCH=0", fastapi, artifacts["fastapi"], unbatched, ("predict",)),
        # what the metrics cost: the same service with and without counting, on /predict alone (the
        # first server's other scenarios leave it in another state between its /predict runs)
        Server("deployctl fastapi, METRICS=1", fastapi, artifacts["fastapi"], ours, ("predict",)),
        Server("deployctl fastapi, METRICS=0", fastapi, artifacts["fastapi"], unmetered, ("predict",)),
        Server("deployctl flask", flask, artifacts["flask"], ours, ("predict", "batch")),
        Server("deployctl flask, gunicorn sync (before)", flask_sync, artifacts["flask"], ours, ("predict",)),
        Server("mlflow models serve", mlflow, REPO, mlflow_env, ("invocations", "invocations_batch")),
        Server(
            f"mlflow models serve -w {workers}",
            [*mlflow, "-w", str(workers)],
            REPO,
            mlflow_env,
            ("invocations", "invocations_batch"),
        ),
        Server("bare ASGI (floor)", [*floor, "--workers", str(workers), *quiet], BENCH, {}, ("predict",)),
    ]


def oip_name(artifact: Path) -> str:
    """The name the service answers to in OIP paths: the service's name, else the model's."""
    manifest = json.loads((artifact / "deployctl.json").read_text())
    return str(manifest.get("name") or manifest["model"]["name"])


def peer_servers(workdir: Path, artifact: Path, workers: int, skipped: dict[str, str]) -> list[Server]:
    """MLServer and BentoML, each from its own venv (bench/peers.py); a peer that cannot install is
    left out and the reason kept in `skipped` for the report."""
    found = []
    lock, model_dir = artifact / "requirements.lock", artifact / "model"
    mlserver = peers.venv(workdir, "mlserver", lock)
    if isinstance(mlserver, str):
        skipped["MLServer"] = mlserver
    else:
        port = free_port()
        folder = peers.mlserver_dir(workdir, model_dir, (port, free_port(), free_port()), workers)
        found.append(
            Server(
                "MLServer + mlserver-mlflow",
                [str(mlserver.parent / "mlserver"), "start", str(folder)],
                folder,
                {},
                ("invocations", "invocations_batch", "oip", "oip_batch"),
                port=port,
                health="/v2/models/bench/ready",
                model="bench",
            )
        )
    bentoml = peers.venv(workdir, "bentoml", lock)
    if isinstance(bentoml, str):
        skipped["BentoML"] = bentoml
    else:
        command = [str(bentoml.parent / "bentoml"), "serve", "bento_service:Bench", "--host", "127.0.0.1"]
        env = {"BENCH_MODEL_DIR": str(model_dir), "BENCH_WORKERS": str(workers)}
        env["BENTOML_HOME"] = str(workdir / "peers" / "bentoml-home")
        found.append(
            Server(
                "BentoML (minimal service)",
                [*command, "--port", "{port}"],
                BENCH,
                env,
                ("bento", "bento_batch"),
                health="/readyz",
            )
        )
    return found


# -- requests and answers --------------------------------------------------------------------------


@dataclass
class Request:
    label: str
    path: str
    body: dict[str, Any]
    rows: int


def bench_rows(n: int, seed: int = 1) -> list[dict[str, float]]:
    import numpy as np

    values = np.random.default_rng(seed).normal(size=(n, len(FEATURES))).round(6)
    return [dict(zip(FEATURES, row)) for row in values.tolist()]


OIP_DATATYPES = {bool: "BOOL", int: "INT64", float: "FP64", str: "BYTES"}  # of a JSON value


def oip_body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """An Open Inference Protocol infer request: one tensor of shape [N] per column, its datatype
    that of the column's JSON values (the fraud pipeline has text, whole-number and bool columns)."""
    shape = [len(rows)]
    return {
        "inputs": [
            {"name": n, "shape": shape, "datatype": OIP_DATATYPES[type(v)], "data": [r[n] for r in rows]}
            for n, v in rows[0].items()
        ]
    }


def requests_for(rows: list[dict[str, Any]]) -> dict[str, Request]:
    one, names = rows[0], list(rows[0])
    split = {"columns": names, "data": [list(r.values()) for r in rows]}
    infer = "/v2/models/{model}/infer"
    return {
        "oip": Request("OIP v2 infer, 1 row", infer, oip_body(rows[:1]), 1),
        "oip_batch": Request(f"OIP v2 infer, {len(rows)} rows", infer, oip_body(rows), len(rows)),
        "bento": Request("/predict (BentoML), 1 row", "/predict", {"rows": rows[:1]}, 1),
        "bento_batch": Request(
            f"/predict (BentoML), {len(rows)} rows", "/predict", {"rows": rows}, len(rows)
        ),
        "predict": Request("/predict, 1 row", "/predict", {"features": list(one.values())}, 1),
        "invocations": Request(
            "/invocations, 1 row",
            "/invocations",
            {"dataframe_split": {"columns": names, "data": [list(one.values())]}},
            1,
        ),
        "batch": Request(
            f"/predict_batch, {len(rows)} rows", "/predict_batch", {"instances": rows}, len(rows)
        ),
        "invocations_batch": Request(
            f"/invocations, {len(rows)} rows", "/invocations", {"dataframe_split": split}, len(rows)
        ),
    }


def post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@cache
def load_model(model_dir: Path) -> Any:
    import mlflow.sklearn

    return mlflow.sklearn.load_model(str(model_dir))


def in_process(artifact: Path, rows: list[dict[str, Any]]) -> tuple[list[Any], list[float]]:
    """What scikit-learn answers for these rows in this process, loaded by MLflow, on a DataFrame."""
    import pandas as pd

    model = load_model(artifact / "model")
    frame = pd.DataFrame(rows)
    return model.predict(frame).tolist(), model.predict_proba(frame)[:, 1].tolist()


def check_answers(server: Server, requests: dict[str, Request], artifact: Path) -> None:
    """Exact equality with sklearn in-process: labels and probabilities, one row and a batch."""
    batch = requests["batch"].body["instances"]
    labels, probas = in_process(artifact, batch)
    one_label, one_proba = in_process(artifact, batch[:1])
    got = {}
    if "oip_batch" in server.requests:
        infer = requests["oip_batch"]
        answer = post(server.url + infer.path.format(model=server.model), infer.body)
        # ours names its output "predict"; MLServer's MLflow runtime "output-1"
        data = next(o["data"] for o in answer["outputs"] if o["name"] in ("predict", "output-1"))
        if data != labels:
            sys.exit(f"{server.name} OIP infer answered {data}, sklearn in-process {labels}")
    if "bento_batch" in server.requests:
        answer = post(server.url + "/predict", requests["bento_batch"].body)
        if answer != {"predictions": labels, "probabilities": probas}:
            sys.exit(f"{server.name} answered {answer}, sklearn in-process {labels}, {probas}")
        return
    if server.name.startswith("deployctl"):
        got["predict"] = post(server.url + "/predict", requests["predict"].body)
        got["batch"] = post(server.url + "/predict_batch", requests["batch"].body)
        want = {
            "predict": {"prediction": one_label[0], "probability": one_proba[0]},
            "batch": {"predictions": labels, "probabilities": probas},
        }
        for key, expected in want.items():
            answer = {k: got[key][k] for k in expected}
            if answer != expected:
                sys.exit(f"{server.name} {key} answered {answer}, sklearn in-process {expected}")
    answer = post(server.url + "/invocations", requests["invocations_batch"].body)
    if answer != {"predictions": labels}:
        sys.exit(f"{server.name} /invocations answered {answer}, sklearn in-process {labels}")


# -- load ------------------------------------------------------------------------------------------


def wrk(
    url: str, body_file: Path, connections: int, seconds: int, threads: int | None = None
) -> dict[str, Any]:
    """wrk's figures, by default with a thread per core (at most one per connection)."""
    threads = threads or min(connections, os.cpu_count() or 1)
    script = str(BENCH / "post.lua")
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "BODY_FILE": str(body_file)}
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        sys.exit(f"wrk failed on {url}:\n{result.stdout}{result.stderr}")
    figures: dict[str, Any] = json.loads(lines[-1])
    bad = {k: v for k, v in figures["errors"].items() if v}
    if bad:
        sys.exit(f"{url}: errors under load {bad} (status counts answers >= 400)\n{result.stdout}")
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures


def load(server: Server, request: Request, workdir: Path, seconds: int, warm_up: bool) -> dict[str, Any]:
    """1 connection (latency), then 16 connections (throughput); the first time after a warm-up."""
    path = request.path.format(model=server.model)
    body_file = workdir / f"{request.label.split(',')[0].strip('/').replace(' ', '_')}_{request.rows}.json"
    body_file.write_text(json.dumps(request.body))
    url = server.url + path
    if warm_up:
        wrk(url, body_file, 16, 2)
    single = wrk(url, body_file, 1, seconds)
    cpu_before = group_cpu_seconds(server.pid)
    many = wrk(url, body_file, 16, seconds)
    cpu = group_cpu_seconds(server.pid) - cpu_before
    return {
        "p50_ms": single["p50_us"] / 1000,
        "p99_ms": single["p99_us"] / 1000,
        "rps": many["rps"],
        "p99_16_ms": many["p99_us"] / 1000,
        "cpu_us": cpu / many["requests"] * 1e6,
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def group_processes(pgid: int) -> list[tuple[int, list[str]]]:
    """(pid, the fields after the name in /proc/pid/stat) of every process of a server: its
    process group (the server was started as its leader), and the leader's descendants that left
    the group (BentoML's workers run in sessions of their own: its CPU read 0 before)."""
    every = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # fields after the name: state, ppid, pgrp, ..., utime, stime
            every[int(stat.parent.name)] = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process has gone
            continue

    def of_server(pid: int) -> bool:
        seen = set()
        while pid in every and pid not in seen:
            if pid == pgid or int(every[pid][2]) == pgid:
                return True
            seen.add(pid)
            pid = int(every[pid][1])
        return False

    return [(pid, fields) for pid, fields in every.items() if of_server(pid)]


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by every process of a server's process group.

    CPU per request does not depend on what else runs on the machine, as throughput does.
    """
    total = sum(int(fields[11]) + int(fields[12]) for _, fields in group_processes(pgid))
    return total / os.sysconf("SC_CLK_TCK")


def run_model(label: str, uri: str, tracking_uri: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every server up at once; rounds go through every (server, request) in turn, so a burst of
    load from elsewhere on the machine hits them all alike; each figure is the median of the rounds."""
    workdir: Path = args.workdir
    artifacts = {t: workdir / f"{label}-{t}" for t in ("fastapi", "flask")}
    timings = {t: make_artifact(uri, t, path, tracking_uri) for t, path in artifacts.items()}
    rows = bench_rows(BATCH_ROWS) if label == "logreg" else fraud_rows(BATCH_ROWS)
    requests = requests_for(rows)
    skipped: dict[str, str] = {}
    peer = peer_servers(workdir, artifacts["fastapi"], args.workers, skipped) if label == "logreg" else []
    every = [*servers(artifacts, uri, tracking_uri, args.workers), *peer]
    chosen = [s for s in every if selected(s, args.only)]
    with ExitStack() as stack:
        for server in chosen:
            stack.enter_context(server.running(workdir))
            if not server.name.startswith("bare"):
                check_answers(server, requests, artifacts["fastapi"])
        scenarios = [(server, requests[key]) for server in chosen for key in server.requests]
        rounds: list[list[dict[str, float]]] = [[] for _ in scenarios]
        for i in range(args.rounds):
            print(f"  round {i + 1}/{args.rounds}", file=sys.stderr)
            for runs, (server, request) in zip(rounds, scenarios):
                runs.append(load(server, request, workdir, args.duration, warm_up=i == 0))
    results = [
        {"server": server.name, "request": request.label, "rows": request.rows, **median_of(runs)}
        for runs, (server, request) in zip(rounds, scenarios)
    ]
    return {
        "model": uri,
        "timings": timings,
        "results": results,
        "lock": artifacts["fastapi"],
        "skipped": skipped,
    }


def selected(server: Server, only: list[str] | None) -> bool:
    return not only or any(name in server.name for name in only)


def fraud_rows(n: int) -> list[dict[str, Any]]:
    from deployctl.demo import synthetic_transactions

    frame, _ = synthetic_transactions(n, seed=3)
    return json.loads(frame.to_json(orient="records"))


# -- report ----------------------------------------------------------------------------------------


def table(results: list[dict[str, Any]]) -> list[str]:
    """Markdown rows; ratios against MLflow's best figure (of its configurations) for as many rows."""
    mlflow = [r for r in results if r["server"].startswith("mlflow")]
    lines = [
        "| server | request | p50 ms, 1 conn | p99 ms, 1 conn | req/s, 16 conns | rows/s, 16 conns "
        "| p99 ms, 16 conns | server CPU µs/req | p50 vs mlflow | req/s vs mlflow |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        same = [m for m in mlflow if m["rows"] == r["rows"]]  # ratios against MLflow's best figure
        p50_ratio = _fraction(r["p50_ms"] / min(m["p50_ms"] for m in same)) if same else "-"
        rps_ratio = f"{r['rps'] / max(m['rps'] for m in same):.1f}x" if same else "-"
        lines.append(
            f"| {r['server']} | {r['request']} | {r['p50_ms']:.3f} | {r['p99_ms']:.2f} | {r['rps']:,.0f} "
            f"| {r['rps'] * r['rows']:,.0f} | {r['p99_16_ms']:.1f} | {r['cpu_us']:,.0f} | {p50_ratio} "
            f"| {rps_ratio} |"
        )
    return lines


def route_ratios(results: list[dict[str, Any]]) -> list[str]:
    """deployctl fastapi's /invocations and OIP infer against its /predict and /predict_batch."""
    ours = {r["request"]: r for r in results if r["server"] == "deployctl fastapi"}
    base = {1: ours.get("/predict, 1 row"), BATCH_ROWS: ours.get(f"/predict_batch, {BATCH_ROWS} rows")}
    lines = []
    for label, r in ours.items():
        reference = base.get(r["rows"])
        if reference is None or r is reference or label.startswith("/predict"):
            continue
        lines.append(
            f"- deployctl fastapi {label}: {r['rps'] / reference['rps']:.2f} of {reference['request']}'s "
            f"req/s, {r['cpu_us'] / reference['cpu_us']:.2f}x its server CPU per request"
        )
    return [*lines, ""] if lines else []


def _fraction(ratio: float) -> str:
    """A latency ratio: 1/15 when 15 times shorter, 9.0x when 9 times longer."""
    return f"1/{1 / ratio:.0f}" if ratio <= 1 else f"{ratio:.1f}x"


def versions(artifact: Path) -> str:
    lock = (artifact / "requirements.lock").read_text().splitlines()
    pins = [line for line in lock if line.split("==")[0].lower() in PACKAGES]
    import mlflow

    return ", ".join([f"Python {platform.python_version()}", f"mlflow=={mlflow.__version__}", *pins])


def machine() -> str:
    meminfo = Path("/proc/meminfo")
    total = [line for line in meminfo.read_text().splitlines() if line.startswith("MemTotal")]
    memory = f", {int(total[0].split()[1]) / 1024**2:.0f} GiB RAM" if total else ""
    return (
        f"{os.cpu_count()} CPU cores{memory}, {platform.system()} {platform.machine()}, "
        f"load average before the run {os.getloadavg()[0]:.2f}"
    )


def cli_times() -> dict[str, float]:
    """Best of 5 wall times of the CLI commands that must not import MLflow."""
    times = {}
    for args in (["--help"], ["targets"]):
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "deployctl", *args], capture_output=True, check=True)
            runs.append(time.perf_counter() - started)
        times[f"deployctl {' '.join(args)}"] = min(runs)
    return times


def report(runs: list[dict[str, Any]], args: argparse.Namespace, header: str) -> str:
    lines = [
        "# Serving benchmark",
        "",
        "Written by `python bench/run.py`; see the docstring there for what it does.",
        "",
        header,
        f"Each figure: the median of {args.rounds} rounds of wrk runs of {args.duration} s (1 connection, "
        f"then 16), the servers taking turns; every server with {args.workers} worker processes; "
        "wrk on the same machine. No socket errors, no non-2xx answers (the run stops on any). "
        "Every server's answers were first checked equal, bit for bit, to scikit-learn's in-process "
        "(MLflow's loader, a DataFrame) for one row and for the batch. Server CPU µs/req: CPU time "
        "of all its processes during the 16-connection run over the requests served (the figure "
        "least disturbed by other load on the machine).",
        "",
    ]
    for run in runs:
        lines += [f"## {run['model']}", "", *table(run["results"]), "", *route_ratios(run["results"])]
        lines += [f"Not run: {name}: {why}" for name, why in run["skipped"].items()]
        steps = [
            f"{t}: generate {v['generate']:.1f} s, build {v['build']:.1f} s"
            for t, v in run["timings"].items()
        ]
        lines += [f"Wall time of the deployctl CLI: {', '.join(steps)}.", ""]
    lines += ["CLI start-up: " + ", ".join(f"`{k}` {v:.2f} s" for k, v in cli_times().items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="figures are medians of rounds (default 3)")
    cores = os.cpu_count() or 1
    parser.add_argument("--workers", type=int, default=cores, help="per server (default: cores)")
    parser.add_argument("--fraud", action="store_true", help="also the demo's fraud pipeline")
    parser.add_argument("--only", nargs="*", help="servers whose name contains one of these")
    parser.add_argument("--workdir", type=Path, default=BENCH / ".work")
    parser.add_argument("--out", type=Path, default=BENCH / "results.md")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    header = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()}."
    tracking_uri, models = ensure_registry(args.workdir, args.fraud)
    runs = []
    for label, uri in models.items():
        if label == "fraud" and not args.fraud:
            continue
        print(f"{uri}:", file=sys.stderr)
        runs.append(run_model(label, uri, tracking_uri, args))
        # written after each model: a failure in a later one keeps the tables measured so far
        text = report(runs, args, f"{header}\nVersions: {versions(runs[0]['lock'])}.")
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
