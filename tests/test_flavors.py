"""LightGBM and XGBoost served natively (probabilities like sklearn's), fork-safe, CPU-only.

The registry (tests/make_flavor_registry.py) is built once per session in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import Registry, build_registry, run_cli

from deployctl.process import free_port
from deployctl.requirements import cpu_only, merge

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def flavor_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return build_registry("make_flavor_registry.py", tmp_path_factory.mktemp("flavor-registry"))


@pytest.fixture(scope="session")
def built(flavor_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """generate + build through the CLI, once per (model, target)."""
    cache: dict[tuple[str, str], Path] = {}

    def make(name: str, target: str) -> Path:
        if (name, target) not in cache:
            out = tmp_path_factory.mktemp(f"{name}-{target}") / "artifact"
            uri = f"models:/{name}/1"
            result = run_cli("generate", "-m", uri, "-t", target, "-o", str(out), env=flavor_registry.env())
            assert result.code == 0, result.output
            result = run_cli("build", str(out))
            assert result.code == 0, result.output
            cache[(name, target)] = out
        return cache[(name, target)]

    return make


def serve(artifact: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """The artifact's own server (`python -m app`, as its README says): its pid is the master's."""
    port = free_port()
    proc = subprocess.Popen(
        [str(artifact / ".venv" / "bin" / "python"), "-m", "app"],
        cwd=artifact,
        env={**os.environ, "WORKERS": str(workers), "PORT": str(port), "HOST": "127.0.0.1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
    raise AssertionError("service did not become healthy")


@pytest.fixture
def running() -> Iterator[Callable[[Path, int], tuple[str, int]]]:
    """Start a built artifact: (its URL, the pid of its server's master process)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(artifact: Path, workers: int) -> tuple[str, int]:
        proc, url = serve(artifact, workers)
        procs.append(proc)
        return url, proc.pid

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def rows_of(artifact: Path) -> list[dict]:
    manifest = json.loads((artifact / "deployctl.json").read_text())
    return [case["row"] for case in manifest["smoke_cases"]]


def in_process(artifact: Path, rows: list[dict]) -> tuple[list, list | None, list | None]:
    """Labels through MLflow's pyfunc loader; probabilities and classes from the native model."""
    import mlflow.lightgbm
    import mlflow.pyfunc
    import mlflow.xgboost
    import pandas as pd

    flavor = json.loads((artifact / "deployctl.json").read_text())["model"]["flavor"]
    frame = pd.DataFrame(rows).astype({"count": "int64"})
    labels = mlflow.pyfunc.load_model(str(artifact / "model")).predict(frame).tolist()
    native = {"lightgbm": mlflow.lightgbm, "xgboost": mlflow.xgboost}[flavor].load_model(
        str(artifact / "model")
    )
    if not hasattr(native, "predict_proba"):
        return labels, None, None
    return labels, native.predict_proba(frame).tolist(), native.classes_.tolist()


MODELS = [
    ("lgbm_binary", "fastapi", "lightgbm"),
    ("lgbm_binary", "flask", "lightgbm"),
    ("xgb_multiclass", "fastapi", "xgboost"),
    ("xgb_multiclass", "flask", "xgboost"),
    ("lgbm_regressor", "fastapi", "lightgbm"),
]


@pytest.mark.parametrize(("name", "target", "flavor"), MODELS)
def test_served_natively_with_the_models_answers(
    built: Callable[[str, str], Path],
    running: Callable[[Path, int], tuple[str, int]],
    name: str,
    target: str,
    flavor: str,
) -> None:
    artifact = built(name, target)
    manifest = json.loads((artifact / "deployctl.json").read_text())
    assert manifest["model"]["flavor"] == flavor
    assert manifest["model"]["loader"]["kind"] == flavor
    requirements = (artifact / "requirements.txt").read_text()
    assert "mlflow" not in requirements  # loaded with its own library, not MLflow
    result = run_cli("smoke-test", str(artifact), "--json")
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["ok"]

    url, _ = running(artifact, 1)
    rows = rows_of(artifact)
    labels, probas, classes = in_process(artifact, rows)
    got = httpx.post(f"{url}/predict_batch", json={"instances": rows}, timeout=30).json()
    assert got["predictions"] == pytest.approx(labels, rel=1e-9)
    one = httpx.post(f"{url}/predict", json={"features": rows[0]}, timeout=30).json()
    if probas is None:
        assert "probabilities" not in got and "probability" not in one
        return
    assert classes is not None
    if len(classes) == 2:
        assert got["probabilities"] == pytest.approx([p[1] for p in probas], rel=1e-12)
        assert one["probability"] == pytest.approx(probas[0][1], rel=1e-12)
    else:
        expected = [dict(zip(map(str, classes), p)) for p in probas]
        assert [dict(sorted(p.items())) for p in got["probabilities"]] == [
            pytest.approx(dict(sorted(e.items())), rel=1e-12) for e in expected
        ]
        assert one["probabilities"] == pytest.approx(expected[0], rel=1e-12)
    assert set(labels) <= set(classes) and one["prediction"] == labels[0]


@pytest.mark.parametrize(
    ("name", "target"),
    [("lgbm_binary", "flask"), ("xgb_multiclass", "flask"), ("lgbm_binary", "fastapi")],
)
def test_two_workers_answer_concurrent_requests(
    built: Callable[[str, str], Path], running: Callable[[Path, int], tuple[str, int]], name: str, target: str
) -> None:
    """With a model warmed before gunicorn forked, scoring requests were seen to hang (OpenMP after
    fork). The master must not have loaded the library; each worker has, and both answer."""
    artifact = built(name, target)
    url, master = running(artifact, 2)
    rows = rows_of(artifact)
    expected, _, _ = in_process(artifact, rows)

    def ask(i: int) -> tuple[int, object]:
        with httpx.Client(timeout=10) as client:  # a new connection each: both workers take some
            answer = client.post(f"{url}/predict", json={"features": rows[i % len(rows)]})
            return answer.status_code, answer.json()["prediction"]

    library = NATIVE_LIBRARY[name.split("_")[0]]
    deadline = time.monotonic() + 120  # /health answered once one worker was up; the other may still boot
    loaded: list[int] = []
    while len(loaded) < 2 and time.monotonic() < deadline:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(40)))
        assert answers == [(200, expected[i % len(rows)]) for i in range(40)]
        loaded = [pid for pid in children(master) if library in Path(f"/proc/{pid}/maps").read_text()]
    assert library not in Path(f"/proc/{master}/maps").read_text()
    assert len(loaded) == 2, loaded


NATIVE_LIBRARY = {"lgbm": "lib_lightgbm.so", "xgb": "libxgboost.so"}


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (gunicorn's workers; uvicorn's, and its spawn helper)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process exited meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_xgboost_artifact_has_no_gpu_packages(built: Callable[[str, str], Path]) -> None:
    artifact = built("xgb_multiclass", "fastapi")
    lines = (artifact / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("xgboost-cpu==") and '!= "darwin"' in line for line in lines)
    assert not any(line.startswith("xgboost==") and 'darwin"' not in line for line in lines)
    site = next((artifact / ".venv" / "lib").glob("python*/site-packages"))
    assert (site / "xgboost").is_dir()
    assert not list(site.glob("nvidia*")), sorted(p.name for p in site.glob("nvidia*"))


def test_xgboost_requirement_becomes_xgboost_cpu() -> None:
    assert cpu_only(["xgboost==3.2.0", "numpy==2.0"]) == [
        'xgboost-cpu==3.2.0; sys_platform != "darwin"',
        'xgboost==3.2.0; sys_platform == "darwin"',
        "numpy==2.0",
    ]
    # MLflow logs xgboost-cpu itself beside xgboost where xgboost-cpu is installed: one line stays
    merged = merge(["xgboost-cpu==3.2.0", "xgboost==3.2.0"], {"kind": "xgboost"}, ())
    assert [r for r in merged if r.startswith("xgboost")] == [
        'xgboost-cpu==3.2.0; sys_platform != "darwin"',
        'xgboost==3.2.0; sys_platform == "darwin"',
    ]
    marked = cpu_only(['xgboost>=2; python_version >= "3.10"'])
    assert marked[0] == 'xgboost-cpu>=2; (python_version >= "3.10") and sys_platform != "darwin"'


def test_a_bare_booster_stays_on_pyfunc(flavor_registry: Registry) -> None:
    result = run_cli("inspect", "-m", "models:/xgb_booster/1", "--json", env=flavor_registry.env())
    assert result.code == 0, result.output
    described = json.loads(result.stdout)
    assert described["flavor"] == "python_function" and described["loader"] == {"kind": "pyfunc"}
    lgbm = json.loads(
        run_cli("inspect", "-m", "models:/lgbm_binary/1", "--json", env=flavor_registry.env()).stdout
    )
    assert lgbm["flavor"] == "lightgbm" and lgbm["loader"]["kind"] == "lightgbm"


def test_cloud_function_serves_lightgbm_loaded_after_the_fork(built: Callable[[str, str], Path]) -> None:
    """functions-framework imports main.py, then forks gunicorn's worker: the model loads there."""
    artifact = built("lgbm_binary", "gcf")
    result = run_cli("smoke-test", str(artifact), "--json")
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["ok"]


@pytest.mark.docker
def test_lightgbm_container_has_the_openmp_runtime(
    built: Callable[[str, str], Path], flavor_registry: Registry, tmp_path: Path
) -> None:
    """lightgbm needs the system's libgomp.so.1, which slim images lack: the image installs it
    (and only an image whose model needs it), then serves the model and passes the smoke test."""
    artifact = built("lgbm_binary", "docker")
    assert "apt-get install -y --no-install-recommends libgomp1" in (artifact / "Dockerfile").read_text()
    result = run_cli("smoke-test", str(artifact), "--json")
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["ok"]
    other = tmp_path / "xgb"
    uri = "models:/xgb_multiclass/1"
    result = run_cli("generate", "-m", uri, "-t", "docker", "-o", str(other), env=flavor_registry.env())
    assert result.code == 0, result.output
    assert "apt-get" not in (other / "Dockerfile").read_text()
