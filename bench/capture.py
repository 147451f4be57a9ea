"""The cost of traffic capture (app/capture.py), side by side on the same artifact.

    python bench/capture.py [--duration 4] [--rounds 3]

bench/run.py's logistic regression as fastapi and flask artifacts, one worker each, loaded by wrk at
16 connections (/predict, 1 row), in alternating rounds: `off` (CAPTURE unset), `0.1` (CAPTURE to a
file, CAPTURE_SAMPLE=0.1), `1.0` (every request recorded to a file). Medians over the rounds of
requests per second and CPU time per request (all the server's processes, the writer thread
included), with ratios against `off`; the records written (rotated files included) are counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run as bench  # noqa: E402 - bench/run.py's registry, servers and wrk driver
from guard import measure, server  # noqa: E402 - one server config measured the same way


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=BENCH / ".work")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri, models = bench.ensure_registry(workdir, False)
    body = workdir / "capture_predict.json"
    body.write_text(bench.json.dumps({"features": list(bench.bench_rows(1)[0].values())}))
    rows = []
    for target in ("fastapi", "flask"):
        artifact = workdir / f"capture-{target}"
        bench.make_artifact(models["logreg"], target, artifact, tracking_uri)
        sinks = {name: workdir / f"capture-{target}-{name}.jsonl" for name in ("0.1", "1.0")}
        for sink in sinks.values():
            for old in rotated(sink):
                old.unlink()
        configs = [
            server("off", artifact, target, {}),
            server("0.1", artifact, target, {"CAPTURE": f"file:{sinks['0.1']}", "CAPTURE_SAMPLE": "0.1"}),
            server("1.0", artifact, target, {"CAPTURE": f"file:{sinks['1.0']}"}),
        ]
        runs: dict[str, list[dict[str, float]]] = {srv.name: [] for srv in configs}
        for _ in range(args.rounds):  # alternating, so drift in the machine's load hits all alike
            for srv in configs:
                runs[srv.name].append(measure(srv, body, args.duration, None))
        base = bench.median_of(runs[f"{target} off"])
        for name, figures in runs.items():
            rows.append((name, bench.median_of(figures), base))
        recorded = {
            name: sum(len(f.read_bytes().splitlines()) for f in rotated(sink)) for name, sink in sinks.items()
        }
        print(f"{target}: records written {recorded}", file=sys.stderr)
    print(f"{'server':16} {'rps (16 conn)':>14} {'vs off':>8} {'CPU us/req':>11} {'vs off':>8} {'p99 ms':>8}")
    for name, median, base in rows:
        rps, cpu = median["rps"], median["cpu_us"]
        ratios = f"{rps / base['rps']:8.3f} {cpu:11.1f} {cpu / base['cpu_us']:8.3f}"
        print(f"{name:16} {rps:14.0f} {ratios} {median['p99_ms']:8.2f}")


def rotated(sink: Path) -> list[Path]:
    """The sink's files: the file and those rotated away from it (PATH.1, PATH.2, ...)."""
    return [f for f in sink.parent.glob(sink.name + "*") if f.name == sink.name or f.suffix[1:].isdigit()]


if __name__ == "__main__":
    main()
