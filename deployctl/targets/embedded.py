"""embedded: the model inside a Python package (a wheel), for applications that score in-process.

The artifact is a package source: `package/` (the API and the batch-scoring CLI), the shared
runtime `app/`, the model and the manifest, and a pyproject.toml that maps them into one import
package named after the service (hatchling's `sources`). `build` writes the wheel to dist/ and
downloads its requirements into .wheelhouse/; `smoke-test` installs the wheel into a fresh venv
from that wheelhouse only (no index) and checks the package's API and CLI against the answers
recorded at generate time (`embedded_probe.py`, run inside that venv). There is no server.
"""

from __future__ import annotations

import json
import keyword
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from deployctl import wheelhouse
from deployctl.checks.contract import Check, batch_problem, predict_problem
from deployctl.columns import PYTHON_TYPES
from deployctl.errors import UsageError, interruptible
from deployctl.manifest import Artifact
from deployctl.process import RunningService, run_or_fail
from deployctl.requirements import package_name
from deployctl.targets.base import Option, Target, require_built
from deployctl.targets.shared import ENGINE

PROBE = Path(__file__).with_name("embedded_probe.py")
# The Parquet reader and writer of the score CLI: an extra, tested with pyarrow 25.
PARQUET = ("pyarrow>=15",)
BUILD_BACKEND = "hatchling"


def import_name(service_name: str) -> str:
    """The package's import name: the service name with `_` for `-` (fraud-detector -> fraud_detector)."""
    name = service_name.replace("-", "_")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(
            f"'{name}' cannot be a Python package name (it must start with a letter or '_' and not "
            "be a keyword).",
            "Pass --name with a name that starts with a letter, e.g. --name model-" + service_name,
        )
    return name


def package_version(model_version: str) -> str:
    """The model version as a PEP 440 version: registry version N -> N, `run-<id8>` (a runs:/ URI)
    -> 0+run.<id8>, `local` (a model folder) -> 0+local."""
    if re.fullmatch(r"[0-9]+", model_version):
        return str(int(model_version))
    local = re.sub(r"[^A-Za-z0-9]+", ".", model_version).strip(".").lower() or "unknown"
    return f"0+{local}"


class WheelBuilder:
    """dist/<name>-<version>-py3-none-any.whl, then .wheelhouse/ with its requirements for this
    machine's Python and platform (the smoke test installs from it without an index)."""

    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]:
        started = time.monotonic()
        wheel = build_wheel(artifact, console)
        wheels = wheelhouse.download(
            artifact.path / "requirements.txt",
            artifact.path / ".wheelhouse",
            console,
            python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
            platforms=wheelhouse.manylinux_platforms(platform.machine()),
        )
        console.print(
            f"Wheel [bold]{wheel.relative_to(artifact.path)}[/] ({wheel.stat().st_size // 1024} KiB)"
        )
        return {
            "wheel": str(wheel.relative_to(artifact.path)),
            "wheel_kib": wheel.stat().st_size // 1024,
            "wheelhouse": len(wheels),
            "seconds": round(time.monotonic() - started, 1),
        }


def build_wheel(artifact: Artifact, console: Console) -> Path:
    """The wheel, built by hatchling from the artifact's pyproject.toml (offline: no isolation)."""
    dist = (artifact.path / "dist").resolve()  # hatchling runs in the artifact: a relative path nests
    for old in dist.glob("*.whl"):
        old.unlink()
    # hatchling writes the wheel into a temporary file, then moves it to dist/; Ctrl-C leaves that
    # file behind: in a folder of ours, it goes with the folder
    with (
        console.status("Building the wheel"),
        tempfile.TemporaryDirectory(prefix="deployctl-wheel-") as tmp,
        interruptible(lambda: remove_wheels(dist)),
    ):
        run_or_fail(
            [sys.executable, "-m", BUILD_BACKEND, "build", "--target", "wheel", "--directory", str(dist)],
            "build the wheel",
            f"Check that {BUILD_BACKEND} is installed (pip install {BUILD_BACKEND}) and that "
            "pyproject.toml is as generate wrote it.",
            cwd=artifact.path,
            env={**os.environ, "TMPDIR": tmp},
        )
    return built_wheel(artifact)


def remove_wheels(dist: Path) -> str:
    """One being moved into dist/ may be half copied (from another filesystem): none stays."""
    for wheel in dist.glob("*.whl"):
        wheel.unlink()
    return "no wheel is left in dist/ (the last build's went when this one began)"


def built_wheel(artifact: Artifact) -> Path:
    wheels = sorted((artifact.path / "dist").glob("*.whl"))
    require_built(artifact, wheels[0] if wheels else artifact.path / "dist" / "*.whl", "dist/*.whl")
    return wheels[-1]


class EmbeddedTarget(Target):
    name = "embedded"
    summary = "a Python wheel with the model inside: `from <pkg> import model`, and a batch-scoring CLI"
    produces = "package/ (API + CLI), app/, pyproject.toml; dist/<pkg>-<version>-py3-none-any.whl after build"
    layers: ClassVar[tuple[str, ...]] = ("runtime", "embedded")
    serves_http = False
    options: ClassVar[tuple[Option, ...]] = (ENGINE,)
    builder = WheelBuilder()

    def context(self, base: dict[str, Any]) -> dict[str, Any]:
        model = base["model"]
        requirements = base["requirements"]
        pandas = [r for r in requirements if package_name(r) == "pandas"]
        if model["loader"]["kind"] == "onnx":  # scored without pandas: only predict_frame needs it
            requirements = [r for r in requirements if package_name(r) != "pandas"]
        return {
            **base,
            "import_name": import_name(base["name"]),
            "package_version": package_version(model["version"]),
            "description": f"Model {model['name']} version {model['version']}, embedded (deployctl)",
            # the package's own import of NotRequired on Python 3.10
            "dependencies": [*requirements, 'typing_extensions>=4.0; python_version < "3.11"'],
            "pandas_requirements": pandas,
            "parquet_requirements": list(PARQUET),
            "columns": [{**c, "pytype": PYTHON_TYPES[c["type"]].__name__} for c in base["columns"]],
        }

    def start(self, artifact: Artifact, port: int) -> RunningService:
        raise UsageError(
            f"{artifact.path} is an embedded package: it runs inside your application, not as a service.",
            f"Install dist/*.whl and `from {import_name(artifact.name)} import model`; "
            f"`deployctl smoke-test {artifact.path}` checks it.",
        )

    def serve(self, artifact: Artifact, port: int, console: Console) -> None:
        self.start(artifact, port)

    def extra_checks(self, artifact: Artifact) -> list[Check]:
        wheel = built_wheel(artifact)
        checks = [metadata_check(wheel)]
        with tempfile.TemporaryDirectory(prefix="deployctl-embedded-") as tmp:
            venv = Path(tmp) / "venv"
            install = install_offline(artifact, wheel, venv)
            checks.append(install)
            if install.ok:
                checks += probe_checks(artifact, wheel, venv, Path(tmp))
        return checks

    def next_steps(self, artifact: Artifact) -> list[str]:
        return [
            f"deployctl build {artifact.path}",
            f"deployctl smoke-test {artifact.path}",
            f"pip install {artifact.path}/dist/*.whl",
        ]


def frame_checks(
    artifact: Artifact, wheel: Path, venv: Path, work: Path, frame: dict[str, Any]
) -> list[Check]:
    """predict_frame's answers. A package that installed without pandas (an ONNX model's) must
    say which extra predict_frame needs; then, with that extra installed, answer."""
    checks = []
    if "without_pandas" in frame:
        error = frame["without_pandas"]
        name = "model.predict_frame without pandas: an ImportError naming the [pandas] extra"
        checks.append(Check(name, "[pandas]" in error, error))
        extra = install_offline(artifact, wheel, venv, extra="pandas")
        checks.append(extra)
        if not extra.ok:
            return checks
        report = run_probe(artifact, venv, work, only="frame")
        if isinstance(report, Check):
            return [*checks, report]
        frame = report["predict_frame"]
    cases, model = artifact.smoke_cases, artifact.model
    return [*checks, _verdict("model.predict_frame", batch_problem(frame, cases, model))]


def metadata_check(wheel: Path) -> Check:
    """The wheel's METADATA as PyPI (and `twine check`) would validate it."""
    import zipfile

    from packaging.metadata import ExceptionGroup, Metadata

    name = "wheel metadata (core metadata, as twine check)"
    with zipfile.ZipFile(wheel) as zf:
        text = next(zf.read(n) for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    try:
        meta = Metadata.from_email(text, validate=True)
    except ExceptionGroup as exc:
        return Check(name, False, "; ".join(str(e) for e in exc.exceptions))
    return Check(name, True, f"{meta.name} {meta.version}, {len(meta.requires_dist or [])} requirements")


def install_offline(artifact: Artifact, wheel: Path, venv: Path, extra: str | None = None) -> Check:
    """A fresh venv (or `venv` again, for an `extra`), the wheel and its requirements from
    .wheelhouse only: no package index."""
    name = (
        f"install the wheel's [{extra}] extra, offline"
        if extra
        else "install the wheel in a fresh venv, offline"
    )
    started = time.perf_counter()
    find = ["--no-index", "--find-links", str(artifact.path / ".wheelhouse")]
    what = f"{wheel}[{extra}]" if extra else str(wheel)
    uv = shutil.which("uv")
    if uv:
        if not extra:
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        cmd = [uv, "pip", "install", "--offline", "--python", str(venv / "bin" / "python"), *find, what]
    else:
        if not extra:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-input", *find, what]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    ms = (time.perf_counter() - started) * 1000
    if proc.returncode != 0:
        return Check(name, False, (proc.stderr or proc.stdout).strip()[-600:], ms)
    return Check(name, True, f"{wheel.name} from .wheelhouse", ms)


def run_probe(artifact: Artifact, venv: Path, work: Path, only: str = "all") -> dict[str, Any] | Check:
    """embedded_probe.py in the venv: its report, or a failed check with its error."""
    package = import_name(artifact.name)
    cmd = [str(venv / "bin" / "python"), str(PROBE), package, str(work / "cases.json"), str(work), only]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, timeout=600)
    if proc.returncode != 0:
        return Check(f"import {package} and use it", False, proc.stderr.strip()[-1500:])
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def probe_checks(artifact: Artifact, wheel: Path, venv: Path, work: Path) -> list[Check]:
    """The installed package's API and CLI (embedded_probe.py in the venv) against the recorded answers."""
    cases, model = artifact.smoke_cases, artifact.model
    (work / "cases.json").write_text(json.dumps([c["row"] for c in cases]))
    package = import_name(artifact.name)
    report = run_probe(artifact, venv, work)
    if isinstance(report, Check):
        return [report]
    heavy = report["heavy_at_import"]
    checks = [
        Check(
            f"import {package}: lazy (the model loads on first use)",
            not heavy,
            f"imported {heavy} at import" if heavy else "numpy, pandas, the model's library: not yet",
            report["import_ms"],
        ),
        Check("model.load()", True, "the model and the runtime", report["load_ms"]),
    ]
    for i, (case, answer) in enumerate(zip(cases, report["predict"])):
        form = "list" if i == 0 else "dict"
        checks.append(_verdict(f"model.predict row {i} ({form})", predict_problem(answer, case, model)))
    checks.append(
        _verdict(
            f"model.predict_batch {len(cases)} rows", batch_problem(report["predict_batch"], cases, model)
        )
    )
    checks += frame_checks(artifact, wheel, venv, work, report["predict_frame"])
    for kind, cli in report["cli"].items():
        checks.append(_cli_check(kind, cli, cases, model))
    checks += [_bad_input_check(bad) for bad in report["bad_inputs"]]
    latency = report["latency_ms"]
    checks.append(
        Check(
            "single-row model.predict latency",
            True,
            f"p50 {latency['p50']:.3f} ms, p99 {latency['p99']:.3f} ms over 200 calls",
            latency["p50"],
        )
    )
    return checks


def _verdict(name: str, problem: Any) -> Check:
    if problem is None:
        return Check(name, True, "as recorded")
    return Check(name, False, problem.detail, None, json.dumps(problem.expected), json.dumps(problem.got))


def _cli_check(kind: str, cli: dict[str, Any], cases: list[dict[str, Any]], model: dict[str, Any]) -> Check:
    name = f"python -m <package> score ({kind.upper()}, {len(cases)} rows + 1 bad row)"
    if cli["exit"] != 1:
        return Check(name, False, f"exit {cli['exit']} (1 expected: one row is bad): {cli['stderr']}")
    lines = [e["line"] for e in cli["errors"]]
    if lines != [cli["bad_line"]]:
        return Check(name, False, f"errors file names lines {lines}, expected [{cli['bad_line']}]")
    answers = cli["answers"]
    body = {
        "predictions": [_cell(a["prediction"], c["prediction"]) for a, c in zip(answers, cases)],
        "probabilities": [_probability(a) for a in answers] if model["task"] != "regression" else None,
    }
    if len(answers) != len(cases):
        return Check(name, False, f"{len(answers)} answers for {len(cases)} good rows")
    problem = batch_problem(body, cases, model)
    if problem is not None:
        return _verdict(name, problem)
    return Check(name, True, f"answers as recorded; line {lines[0]} in the errors file, exit 1")


def _cell(value: Any, recorded: Any) -> Any:
    """A CSV cell read back as the recorded answer's type (JSON Lines keeps its types)."""
    if not isinstance(value, str) or isinstance(recorded, str):
        return value
    return type(recorded)(value == "True") if isinstance(recorded, bool) else type(recorded)(float(value))


def _probability(answer: dict[str, Any]) -> Any:
    if "probability" in answer:
        return float(answer["probability"])
    if "probabilities" in answer:
        return answer["probabilities"]
    return {
        k.removeprefix("probability_"): float(v) for k, v in answer.items() if k.startswith("probability_")
    }


def _bad_input_check(bad: dict[str, Any]) -> Check:
    name = f"bad input raises ValidationError: {bad['call']}"
    if bad["http_status"] < 400:
        return Check(
            name, bad["raised"] == "nothing", f"the service accepts it too (HTTP {bad['http_status']})"
        )
    if bad["raised"] != "ValidationError":
        return Check(
            name, False, f"raised {bad['raised']}: {bad['message']}", None, "ValidationError", bad["raised"]
        )
    if bad["message"] != bad["http_error"]:
        return Check(
            name, False, "another message than the service's", None, bad["http_error"], bad["message"]
        )
    return Check(name, True, f"as HTTP {bad['http_status']}: {bad['message']}")
