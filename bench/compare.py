"""`deployctl compare` over 100,000 rows against two local fastapi services: how long, and who is busy.

    python bench/compare.py [--rows 100000] [--rounds 3] [--workdir bench-compare]

1. builds (or reuses) the tests' compare registry (tests/make_compare_registry.py) in the work dir,
   generates and builds the fastapi artifacts of cmp_classifier versions 1 and 2;
2. writes ROWS rows as CSV, starts both services (`deployctl serve`) and runs, in turns, each round:
   - `deployctl compare v2 --candidate-url URL2 --against URL1 --data rows.csv` (the real CLI),
     timing its wall clock and the CPU time of the compare process and of each service;
   - the floor: the same chunks sent to ONE service alone with the same client and concurrency
     (what a service takes to answer the rows, without any comparison);
3. prints the medians and appends them to bench/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deployctl.checks.compare import KeepAliveTransport  # noqa: E402
from deployctl.checks.contract import Client  # noqa: E402
from deployctl.process import free_port, get  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deployctl", *args], env=env, capture_output=True, text=True)


def prepare(work: Path) -> tuple[dict[str, str], Path, Path]:
    work.mkdir(parents=True, exist_ok=True)
    env = {**ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    if not (work / "rows.csv").exists():
        script = ROOT / "tests" / "make_compare_registry.py"
        subprocess.run(
            [sys.executable, str(script), env["MLFLOW_TRACKING_URI"]], cwd=work, check=True, env=env
        )
    dirs = []
    for version in (1, 2):
        out = work / f"v{version}"
        if not (out / ".venv").exists():
            model = f"models:/cmp_classifier/{version}"
            for step in (("generate", "-m", model, "-t", "fastapi", "-o", str(out)), ("build", str(out))):
                result = cli(*step, env=env)
                assert result.returncode == 0, result.stderr
        dirs.append(out)
    return env, dirs[0], dirs[1]


def write_rows(path: Path, count: int) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    pd.DataFrame(rng.normal(size=(count, 4)), columns=[f"x{i}" for i in range(4)]).to_csv(path, index=False)


def serve(artifact: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "deployctl", "serve", str(artifact), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if get(url, "/health")[0] == 200:
                return proc, url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{artifact} did not start")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (the uvicorn workers), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc").iterdir():
        if not task.name.isdigit():
            continue
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(task.name) == pid or int(stat[1]) == pid or int(stat[2]) == pid:  # ppid or process group
            total += (int(stat[11]) + int(stat[12])) / tick
    return total


def floor(url: str, rows: list[dict[str, float]], batch: int, concurrency: int) -> float:
    """Seconds for one service alone to answer every chunk, with compare's client and concurrency."""
    client = Client(url, {}, 60.0, KeepAliveTransport(url))
    chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for status, _, _ in pool.map(
            lambda c: client.call("POST", "/predict_batch", {"instances": c}), chunks
        ):
            assert status == 200
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("bench-compare"))
    options = parser.parse_args()
    env, v1, v2 = prepare(options.workdir.resolve())
    data = options.workdir.resolve() / f"rows-{options.rows}.csv"
    if not data.exists():
        write_rows(data, options.rows)
    import pandas as pd

    rows = pd.read_csv(data).to_dict(orient="records")
    load = os.getloadavg()[0]
    (p1, url1), (p2, url2) = serve(v1), serve(v2)
    figures: dict[str, list[float]] = {
        k: [] for k in ("wall", "compare_cpu", "champion_cpu", "candidate_cpu", "floor")
    }
    try:
        for _ in range(options.rounds):
            before = (cpu_seconds(p1.pid), cpu_seconds(p2.pid), resource.getrusage(resource.RUSAGE_CHILDREN))
            started = time.perf_counter()
            result = cli("compare", str(v2), "--candidate-url", url2, "--against", url1, "--data", str(data),
                         "--json", env=env)  # fmt: skip
            figures["wall"].append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            report = json.loads(result.stdout)
            assert result.returncode == 0 and report["compared"] == options.rows, result.stderr
            figures["compare_cpu"].append(
                after.ru_utime + after.ru_stime - before[2].ru_utime - before[2].ru_stime
            )
            figures["champion_cpu"].append(cpu_seconds(p1.pid) - before[0])
            figures["candidate_cpu"].append(cpu_seconds(p2.pid) - before[1])
            figures["floor"].append(floor(url1, rows, 500, 4))
    finally:
        for proc in (p1, p2):
            proc.terminate()
            proc.wait(30)
    medians = {k: statistics.median(v) for k, v in figures.items()}
    lines = [
        f"\n## compare over {options.rows:,} rows (bench/compare.py)\n",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPU cores, "
        f"Linux {platform.machine()}, load average before the run {load:.2f}. Two local fastapi "
        "services (cmp_classifier v1 and v2, already running); the real CLI with --candidate-url and "
        "--against, defaults (batch 500, 4 in flight). "
        f"Medians of {options.rounds} rounds.\n",
        "| figure | seconds |",
        "|---|--:|",
        f"| compare, wall clock (CLI start to exit, CSV read, both sides, report) | {medians['wall']:.2f} |",
        f"| compare process CPU (user + sys) | {medians['compare_cpu']:.2f} |",
        f"| champion service CPU during compare | {medians['champion_cpu']:.2f} |",
        f"| candidate service CPU during compare | {medians['candidate_cpu']:.2f} |",
        f"| floor: one service alone answering the same chunks, same client | {medians['floor']:.2f} |",
        "",
        f"{options.rows / medians['wall']:,.0f} rows/s compared (each row scored by both services).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    with (ROOT / "bench" / "results.md").open("a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
