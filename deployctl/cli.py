"""The command line: thin Typer commands that parse, call the core, and print with Rich.

Progress goes to stderr; `--json` output goes to stdout. Heavy modules (MLflow, pandas, Docker)
are imported inside the commands that need them, so `deployctl --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup, TyperOption

from deployctl import __version__
from deployctl.errors import DeployctlError, SmokeTestFailed, UsageError


class _FlagsTakeNoValue:
    """Typer's help shows a flag's type as if it took a value (`--json <bool>`, `--help <bool>`),
    though `--json true` is refused: every flag of every command, --help included, shows none."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
        return params


class Command(_FlagsTakeNoValue, TyperCommand):
    pass


class Group(_FlagsTakeNoValue, TyperGroup):
    pass


class App(typer.Typer):
    """Every command is a `Command`, without repeating `cls=` on each."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


app = App(
    cls=Group,
    help="From a model in an MLflow registry to a generated, built and smoke-tested deployment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Soft wrap: a line longer than the terminal is left for the terminal to wrap, so that a command
# printed for copying (next steps, hints) pastes as one line instead of breaking where Rich wrapped it.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
state = {"debug": False}

MODEL = typer.Option(
    ...,
    "--model",
    "-m",
    help="models:/name@alias, models:/name/<version|Stage|latest>, runs:/<id>/<path>, or a model dir.",
)
TRACKING = typer.Option(None, "--tracking-uri", help="Else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.")
ARTIFACT = typer.Argument(
    ..., metavar="ARTIFACT_DIR", help="An artifact dir written by `deployctl generate`.", show_default=False
)


def _print_version(value: bool) -> None:
    if value:
        out.print(__version__)
        raise typer.Exit()


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors too."),
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        callback=_print_version,
    ),
) -> None:
    state["debug"] = debug


@app.command()
def targets() -> None:
    """List the targets, what each produces, and its options."""
    from deployctl import targets as registry

    table = Table("target", "what it is", "produces", "options (generate --<option> VALUE)")
    for name in registry.names():
        target = registry.get(name)
        opts = "\n".join(f"{o.flag} ({o.default!r}) {o.help}" for o in target.options)
        table.add_row(name, target.summary, target.produces, opts or "-")
    out.print(table)


@app.command()
def inspect(
    model: str = MODEL,
    tracking_uri: str | None = TRACKING,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Resolve a model URI: name, pinned version, flavor, signature, input example."""
    import tempfile

    from deployctl.model import resolve
    from deployctl.redact import redact

    with tempfile.TemporaryDirectory() as tmp, err.status(f"Resolving {escape(redact(model) or '')}"):
        resolved = resolve(model, tracking_uri, Path(tmp) / "model")
    data = resolved.describe()  # every URI in it redacted
    data.pop("local_path")
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(show_header=False)
    for key in ("uri", "name", "version", "run_id", "flavor", "source", "tracking_uri"):
        table.add_row(key, str(data[key]))
    columns = [f"{c.name}: {c.type}{'' if c.required else ' (optional)'}" for c in resolved.columns]
    if resolved.tensor is not None:
        columns = [f"tensor: {resolved.tensor['dtype']} {tuple(resolved.tensor['shape'])}"]
    table.add_row("signature", "\n".join(columns))
    if resolved.params:
        params = [
            f"{p['name']}: {p['type']}{'[]' if p['shape'] else ''} = {json.dumps(p['default'])}"
            for p in resolved.params
        ]
        table.add_row("params", "\n".join(params))
    table.add_row("input example", json.dumps(resolved.example_rows[:3]))
    table.add_row("requirements", "\n".join(resolved.requirements))
    out.print(table)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def generate(
    ctx: typer.Context,
    model: str = MODEL,
    target: str = typer.Option(
        ...,
        "--target",
        "-t",
        help="flask, fastapi, docker, k8s, lambda, gcf, kafka, embedded (see `deployctl targets`).",
    ),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory to write the artifact into."),
    name: str | None = typer.Option(None, "--name", help="Service name (default: the model name, DNS-safe)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty directory."),
    tracking_uri: str | None = TRACKING,
    templates: Path | None = typer.Option(
        None,
        "--templates",
        help="Folder of template overrides, laid out like deployctl's templates/.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON summary on stdout (progress stays on stderr)."
    ),
) -> None:
    """Generate the deployment artifact for a model and a target.

    Target options follow as --<option> VALUE (see `deployctl targets`). With --json, stdout
    carries only {path, target, name, model {name, version, uri}, files, files_written, seconds}.
    """
    from deployctl.generate import generate as run_generate

    started = time.monotonic()
    with stdout_to_stderr(as_json), err.status(escape(f"Generating {target} artifact for {model}")):
        artifact = run_generate(
            model,
            target,
            out_dir,
            name=name,
            tracking_uri=tracking_uri,
            force=force,
            raw_options=parse_extra_options(ctx.args),
            templates=templates,
        )
    seconds = time.monotonic() - started
    for note in artifact.notes:
        err.print(f"[yellow]--force:[/] {escape(note)}", highlight=False)
    record = artifact.record
    m = record.model
    err.print(
        "[green]Generated[/] "
        + escape(
            f"{artifact.path} ({record.target}) for {m.name} "
            f"version {m.version} ({m.task}, {len(record.files)} files)"
        ),
        highlight=False,
    )
    _warnings(artifact)
    _next_steps(artifact)
    if as_json:
        files = sorted(record.files)
        summary = {
            "path": str(artifact.path.resolve()),
            "target": record.target,
            "name": record.name,
            "model": {"name": m.name, "version": m.version, "uri": m.uri},
            "files": files,
            "files_written": len(files),
            "seconds": round(seconds, 3),
        }
        print(json.dumps(summary, indent=2))


def parse_extra_options(args: list[str]) -> dict[str, str]:
    """`--min-replicas 2 --memory=1Gi` -> {"min_replicas": "2", "memory": "1Gi"}."""
    options: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UsageError(f"Unexpected argument '{arg}'.", "Target options look like --name VALUE.")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise UsageError(f"--{key} needs a value.", "Target options look like --name VALUE.")
            value, i = args[i + 1], i + 1
        options[key.replace("-", "_")] = value
        i += 1
    return options


@app.command()
def build(
    path: Path = ARTIFACT,
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON summary on stdout (progress stays on stderr)."
    ),
) -> None:
    """Make a generated artifact runnable (a venv, an image, a zip: depends on the target).

    With --json, stdout carries only {path, target, name, build {the target's facts}, edited, seconds}.
    """
    from deployctl.manifest import Artifact
    from deployctl.targets import get as get_target

    artifact = Artifact.open(path)
    changed = artifact.modified_files()
    if changed:
        err.print(f"[yellow]Note:[/] edited since generate: {', '.join(changed[:8])}")
    started = time.monotonic()
    with stdout_to_stderr(as_json):
        facts = get_target(artifact.target).build(artifact, err)
    seconds = time.monotonic() - started
    err.print(f"[green]Built[/] {path}: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    if as_json:
        summary = {
            "path": str(artifact.path),
            "target": artifact.target,
            "name": artifact.name,
            "build": facts,
            "edited": changed,
            "seconds": round(seconds, 3),
        }
        print(json.dumps(summary, indent=2, default=str))


SMOKE_HELP = "\n\n".join(
    (
        "Check a service against the answers the model gave in-process; exit non-zero on any mismatch.",
        "Without --url: start the built artifact on loopback, check it, stop it. With --url: check a "
        "service already deployed there (the artifact's manifest gives the cases; it need not be "
        "built). The URL's path is the base path, e.g. an API Gateway stage: "
        "https://ID.execute-api.REGION.amazonaws.com/prod",
        "First /health must name the model version the artifact pins; a mismatch stops the rest. "
        "Then the recorded rows through /predict, /predict_batch and /invocations, bad input must get "
        "a 4xx, and /health again. Every call's latency is reported. A service that speaks the Open "
        "Inference Protocol over gRPC (fastapi, docker, k8s) is also checked there: ModelMetadata and "
        "one ModelInfer; with --url, give its gRPC port as --grpc HOST:PORT.",
        "Exit codes:\n"
        "0  every check passed\n"
        "1  a check failed (another model version, a wrong answer, refused authorization)\n"
        "2  usage or artifact error (bad option, not an artifact, not built)\n"
        "3  the endpoint never answered (refused, DNS, TLS, timeout) within --timeout, "
        "on each of 1 + --retries attempts",
    )
)


@app.command("smoke-test", help=SMOKE_HELP)
def smoke_test(
    path: Path = ARTIFACT,
    url: str | None = typer.Option(
        None,
        "--url",
        help="Check the service deployed at this http(s) URL instead of starting the artifact.",
        show_default=False,
    ),
    grpc: str | None = typer.Option(
        None,
        "--grpc",
        metavar="HOST:PORT",
        help="With --url: also check the service's Open Inference Protocol gRPC port (ModelMetadata "
        "and one ModelInfer of the recorded rows); fastapi, docker and k8s artifacts. The artifact "
        "started here is checked over gRPC without it.",
        show_default=False,
    ),
    header: list[str] = typer.Option(
        [],
        "--header",
        "-H",
        metavar="'NAME: VALUE'",
        help="Send this header with every request (repeatable), to --url or to the artifact started "
        "here (e.g. the bearer token it expects when AUTH_TOKEN_SHA256 is set). Values are never printed.",
        show_default=False,
    ),
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        help="Seconds: for the started artifact to answer /health (default 120); with --url, for "
        "each request, connecting included (default 30).",
        show_default=False,
    ),
    retries: int = typer.Option(
        0,
        "--retries",
        min=0,
        help="With --url: ask /health again this many times (back-off 1, 2, 4... s) on no answer, "
        "HTTP 502/503/504, or another model version, while a rollout settles.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    junit: Path | None = typer.Option(
        None, "--junit", help="Also write a JUnit XML report to this file.", show_default=False
    ),
) -> None:
    run_smoke_test(
        path,
        url=url,
        grpc=grpc,
        header=header,
        timeout=timeout,
        retries=retries,
        as_json=as_json,
        junit=junit,
    )


def run_smoke_test(
    path: Path,
    *,
    url: str | None = None,
    grpc: str | None = None,
    header: list[str] | None = None,
    timeout: float | None = None,
    retries: int = 0,
    as_json: bool = False,
    junit: Path | None = None,
) -> None:
    """The smoke-test command: check, report (table, JSON, JUnit), raise on failure."""
    from datetime import datetime, timezone

    from deployctl.checks import report, smoke
    from deployctl.checks.contract import Check
    from deployctl.errors import EndpointUnreachable
    from deployctl.manifest import Artifact

    headers = smoke.parse_headers(header or [])
    redact = report.Redactor(headers.values())

    def say(text: str) -> None:  # progress that may quote an endpoint's answer
        err.print(redact(text), style="yellow", markup=False, highlight=False, soft_wrap=True)

    if url is None and retries:
        raise UsageError(
            "--retries applies to a deployed service only.",
            "Give --url URL, or leave it out to smoke-test the artifact started locally.",
        )
    if url is None and grpc is not None:
        raise UsageError(
            "--grpc applies to a deployed service only.",
            "Give --url URL with it; the artifact started here is checked over gRPC without --grpc.",
        )
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout must be more than 0 seconds, got {timeout:g}.")
    if url is not None:
        url = smoke.check_url(url)
    if grpc is not None:
        grpc = smoke.check_grpc_address(grpc)
    if junit is not None and junit.is_dir():
        raise UsageError(f"--junit {junit} is a directory.", "Give a file path, e.g. reports/smoke.xml.")
    artifact = Artifact.open(path)
    model = artifact.model
    properties = {
        "target": artifact.target,
        "model": model["name"],
        "version": model["version"],
        "model_uri": model["uri"],
        "artifact": str(path),
        "url": url,
    } | ({"grpc": grpc} if grpc else {})
    begun, started = datetime.now(timezone.utc), time.monotonic()
    where = url or f"{path}, started locally"
    outcome = "passed"
    failure: DeployctlError | None = None  # raised once the reports are written
    with stdout_to_stderr(as_json), err.status(f"Smoke-testing {where}"):
        try:
            if url is None:
                checks = smoke.run(artifact, timeout or 120.0, headers)
            else:
                err.print(f"Checking {url} against {model['name']} version {model['version']} ({path})")
                checks = smoke.run_remote(artifact, url, headers, timeout or 30.0, retries, say, grpc)
        except (EndpointUnreachable, SmokeTestFailed) as exc:  # reported too, then raised
            exc.message = redact(exc.message)
            exc.args = (exc.message,)
            if isinstance(exc, EndpointUnreachable):
                checks, outcome = (
                    [Check(f"reach {url or 'the started service'}", False, exc.message)],
                    "unreachable",
                )
            else:  # the started artifact never became healthy
                checks, outcome = [Check("ready: /health answers 200", False, exc.message)], "failed"
            failure = exc
    seconds = time.monotonic() - started
    checks = [redact.check(c) for c in checks]
    failed = [c for c in checks if not c.ok]
    if failed and failure is None:
        failure = smoke.failure(failed, len(checks))
        outcome = "unreachable" if isinstance(failure, EndpointUnreachable) else "failed"
    if junit is not None:
        suite = f"smoke-test {artifact.name} ({artifact.target})"
        xml = report.junit_xml(checks, properties, suite, seconds, outcome == "unreachable", begun)
        report.write(junit, xml)
    if as_json:
        print(json.dumps(report.json_report(checks, properties, seconds, outcome), indent=2, default=str))
    else:
        title = f"smoke test: {url or path} ({artifact.target}, {model['name']} version {model['version']})"
        table = Table("check", "result", "ms", "detail", title=title)
        for c in checks:
            ms = f"{c.ms:.1f}" if c.ms is not None else ""
            table.add_row(c.name, "[green]pass[/]" if c.ok else "[red]FAIL[/]", ms, c.detail[:120])
        out.print(table)
    if failure is not None:
        raise failure
    err.print(f"[green]Smoke test passed[/]: {len(checks)} checks")


LOADTEST_HELP = "\n\n".join(
    (
        "Load a service at a constant arrival rate and gate on an SLO (open loop: each latency counts "
        "from when the request was due, so a stalled service shows in the percentiles).",
        "Without --url: start the built artifact on loopback (and report its cold start: process start "
        "to first correct answer). With --url: load the service deployed there. Requests cycle through "
        "the recorded rows (or --data's); one answer in 10 is checked against the recorded one.",
        "--slo terms: p50|p90|p99|p999|max <= N ms|s|us, error_rate <= N or N%, rate >= N (req/s), "
        "comma-separated or repeated. Always terms: wrong_answers<=0, and error_rate<=0 (no non-2xx "
        "answer, timeout or failed connection) unless an error_rate term sets another limit. "
        "Latency percentiles are of the 2xx answers only. --find-max doubles the rate (from --rate, "
        "default 50) until the SLO breaks, then bisects; rate>= then applies to the highest rate "
        "that met it.",
        "Exit codes:\n0  the SLO was met\n1  a term was not met (named, with its figure), or wrong "
        "answers, or --url is unhealthy\n2  usage or artifact error, or --url serves another model "
        "or version\n3  --url never answered",
    )
)


@app.command("loadtest", help=LOADTEST_HELP)
def loadtest(
    path: Path = ARTIFACT,
    url: str | None = typer.Option(
        None, "--url", help="Load the service deployed at this http(s) URL instead.", show_default=False
    ),
    header: list[str] = typer.Option(
        [],
        "--header",
        "-H",
        metavar="'NAME: VALUE'",
        help="Send with every request (with --url); never printed.",
        show_default=False,
    ),
    route: str = typer.Option("predict", "--route", help="predict, predict_batch, invocations or infer."),
    batch_size: int = typer.Option(10, "--batch-size", min=1, help="Rows per request on batch routes."),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Rows to send (.jsonl, .json, .csv, .parquet) instead of the recorded ones.",
        show_default=False,
    ),
    rate: float | None = typer.Option(
        None, "--rate", help="Requests per second (with --find-max: the first step).", show_default=False
    ),
    duration: float | None = typer.Option(
        None,
        "--duration",
        help="Seconds of load (with --find-max: per step) [default: 10; 5 per step].",
        show_default=False,
    ),
    find_max: bool = typer.Option(False, "--find-max", help="Find the highest rate that meets the --slo."),
    slo: list[str] = typer.Option(
        [], "--slo", help="SLO terms, e.g. 'p99<=50ms,error_rate<=0.1%'.", show_default=False
    ),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds a request may take from its due time."),
    connections: int = typer.Option(256, "--connections", min=1, help="Keep-alive connections at most."),
    start_timeout: float = typer.Option(
        120.0, "--start-timeout", help="Seconds for the started artifact to answer."
    ),
    max_rate: float = typer.Option(50_000.0, "--max-rate", help="--find-max goes no higher (req/s)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    junit: Path | None = typer.Option(None, "--junit", help="Also write JUnit XML here.", show_default=False),
    html: Path | None = typer.Option(
        None, "--html", help="Also write an HTML report with plots here.", show_default=False
    ),
) -> None:
    from datetime import datetime, timezone

    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    from deployctl.checks import loadtest as lt
    from deployctl.checks import loadtest_report, report, smoke
    from deployctl.checks.rows import all_rows
    from deployctl.manifest import Artifact

    headers = smoke.parse_headers(header)
    redact = report.Redactor(headers.values())
    if url is None and headers:
        raise UsageError("--header applies to a deployed service only.", "Give --url URL, or leave it out.")
    for option, given in (("--junit", junit), ("--html", html)):
        if given is not None and given.is_dir():
            raise UsageError(f"{option} {given} is a directory.", "Give a file path.")
    options = lt.Options(
        url=smoke.check_url(url) if url is not None else None,
        headers=headers,
        route=route,
        batch_size=batch_size,
        data=None,
        rate=rate,
        duration=duration or (5.0 if find_max else 10.0),
        find_max=find_max,
        terms=lt.parse_slo(slo),
        timeout=timeout,
        connections=connections,
        start_timeout=start_timeout,
        max_rate=max_rate,
    )
    lt.check_options(options)
    artifact = Artifact.open(path)
    if data is not None:
        options.data = all_rows(data, artifact.model)
    model = artifact.model
    properties = {
        "target": artifact.target,
        "model": model["name"],
        "version": model["version"],
        "artifact": str(path),
        "url": options.url,
        "latency_of": lt.LATENCY_OF,
    }
    begun, started = datetime.now(timezone.utc), time.monotonic()
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with stdout_to_stderr(as_json), Progress(*columns, console=err, refresh_per_second=4) as progress:
        task = progress.add_task("starting", total=None)

        def show(label: str, done: int, total: int) -> None:
            progress.update(task, description=label, completed=done, total=total)

        def say(text: str) -> None:
            progress.console.print(redact(text), markup=False, highlight=False)

        result = lt.run(artifact, options, show, say)
    seconds = time.monotonic() - started
    if junit is not None:
        suite = f"loadtest {artifact.name} ({artifact.target})"
        checks = [redact.check(c) for c in loadtest_report.checks(result)]
        report.write(
            junit, report.junit_xml(checks, properties, suite, seconds, started=begun, tool="loadtest")
        )
    if html is not None:
        report.write(html, redact(loadtest_report.html_report(result, properties)))
    document = loadtest_report.json_report(result, properties, seconds)
    if as_json:
        print(redact(json.dumps(document, indent=2, default=str)))
    else:
        table = Table(
            "SLO term",
            "limit",
            "value",
            "result",
            title=f"loadtest: {redact(options.url or str(path))}",
            caption=f"latency: {lt.LATENCY_OF} only; refused answers count in error_rate",
        )
        for gate in result.gates:
            value = "not measured" if gate.value is None else f"{gate.value:g}{gate.unit}"
            verdict = "[green]met[/]" if gate.passed else "[red]NOT MET[/]"
            table.add_row(gate.name, f"{gate.op} {gate.limit:g}{gate.unit}", value, verdict)
        out.print(table)
    if not result.passed:
        failure = lt.failure(result)
        failure.message = redact(failure.message)  # it may quote what the endpoint answered
        raise failure
    max_rate_text = (
        f", max rate {result.search.max_rate:g} req/s" if result.search and result.search.max_rate else ""
    )
    err.print(f"[green]SLO met[/]{max_rate_text}")


COMPARE_HELP = "\n\n".join(
    (
        "Compare a candidate artifact with the champion it would replace: the same rows to both, "
        "through /predict_batch; label agreement, flips, output differences, errors and latency, "
        "each held to a gate.",
        "The champion is a URL (--against https://..., with --header) or an artifact dir, started here. "
        "The candidate is started here, or reached at --candidate-url (a canary, say). Rows: every "
        "--data file (CSV, JSON lines, Parquet) and every --traffic file (JSON lines of captured calls "
        '{"request": {"features": ...}, ...}), else the rows the candidate recorded at generate.',
        "Gates (all always reported with limit and value): agreement >= --min-agreement (for a "
        "regressor, a row agrees when every output is within --max-diff); the largest |difference| of "
        "any numeric output (probabilities, regression values) <= --max-diff; candidate p99 / champion "
        "p99 latency <= --max-latency-ratio; rows the candidate refused and the champion answered "
        "<= --max-errors.",
        "Exit codes:\n"
        "0  every gate passed\n"
        "1  a gate failed\n"
        "2  usage or artifact error\n"
        "3  a side never answered (refused, DNS, TLS, timeout)",
    )
)


@app.command(help=COMPARE_HELP)
def compare(
    path: Path = typer.Argument(
        ..., metavar="CANDIDATE_DIR", help="The candidate's artifact dir.", show_default=False
    ),
    against: str = typer.Option(
        ...,
        "--against",
        metavar="URL|DIR",
        help="The champion: a deployed service's URL, or an artifact dir.",
    ),
    candidate_url: str | None = typer.Option(
        None,
        "--candidate-url",
        help="The candidate already deployed there (else started here).",
        show_default=False,
    ),
    data: list[Path] = typer.Option(
        [], "--data", help="Rows to compare: .csv, .jsonl or .parquet (repeatable).", show_default=False
    ),
    traffic: list[Path] = typer.Option(
        [],
        "--traffic",
        help="Captured traffic: a CAPTURE file or a directory of its rotated files (repeatable).",
        show_default=False,
    ),
    header: list[str] = typer.Option(
        [],
        "--header",
        "-H",
        metavar="'NAME: VALUE'",
        help="Sent to URL sides (repeatable; never printed).",
        show_default=False,
    ),
    min_agreement: float = typer.Option(0.99, "--min-agreement", help="Gate: label agreement, 0..1."),
    max_diff: float = typer.Option(
        0.05, "--max-diff", help="Gate: largest |difference| of any numeric output."
    ),
    max_latency_ratio: float = typer.Option(
        1.5, "--max-latency-ratio", help="Gate: candidate p99 / champion p99 latency."
    ),
    max_errors: int = typer.Option(
        0, "--max-errors", help="Gate: rows the candidate refused that the champion answered."
    ),
    batch_size: int = typer.Option(500, "--batch-size", help="Rows per /predict_batch request."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight to each side."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds per request (connecting included)."),
    as_json: bool = typer.Option(False, "--json", help="The report as one JSON document on stdout."),
    junit: Path | None = typer.Option(
        None, "--junit", help="Also write JUnit XML (a testcase per gate).", show_default=False
    ),
    html: Path | None = typer.Option(
        None, "--html", help="Also write a self-contained HTML page with plots.", show_default=False
    ),
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deployctl.checks import compare as checks

    limits = checks.Limits(min_agreement, max_diff, max_latency_ratio, max_errors)
    request = checks.request_of(
        path, against, candidate_url, data, traffic, header, limits, batch_size, concurrency, timeout
    )
    for report_path in (junit, html):
        if report_path is not None and report_path.is_dir():
            raise UsageError(f"{report_path} is a directory.", "Give a file path, e.g. reports/compare.xml.")
    columns = (TextColumn("comparing rows"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with stdout_to_stderr(as_json), Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("rows", total=checks.known_rows(request))
        comparison, document = checks.execute(request, lambda n: bar.advance(task, n))
    written = checks.write_reports(comparison, document, request, junit, html)
    if as_json:
        print(written["json"])
    else:
        _print_comparison(document)
    failed = [g for g in document["gates"] if not g["passed"]]
    if failed:
        raise checks.CompareFailed(
            f"{len(failed)} of {len(document['gates'])} gates failed: "
            + "; ".join(f"{g['name']} {g['value']} (limit {g['op']} {g['limit']})" for g in failed),
            "The candidate does not answer like the champion within the limits: look at the flips and the "
            "rows that disagree most (--html shows them), or loosen a limit you chose too tight.",
        )
    err.print(f"[green]Compare passed[/]: {document['compared']} rows, every gate within its limit")


def _print_comparison(document: dict[str, Any]) -> None:
    title = f"compare: {document['model']} version {document['version']} against the champion " + (
        f"(version {document['champion'].get('model_version')})"
    )
    table = Table("gate", "limit", "value", "result", title=title)
    for g in document["gates"]:
        value = "not measured" if g["value"] is None else f"{g['value']:.6g}"
        verdict = "[green]pass[/]" if g["passed"] else "[red]FAIL[/]"
        table.add_row(g["name"], f"{g['op']} {g['limit']:g}", value, verdict)
    out.print(table)
    lat = document["latency"]
    out.print(
        f"rows {document['rows']}, compared {document['compared']}, "
        f"errors candidate {document['errors']['candidate']} / champion {document['errors']['champion']}; "
        f"p99 ms candidate {lat['candidate']['p99_ms']} / champion {lat['champion']['p99_ms']}",
        markup=False,
        highlight=False,
    )
    for flip in document["flips"][:10]:
        out.print(f"flip {flip['champion']!r} -> {flip['candidate']!r}: {flip['count']} rows", markup=False)


@app.command()
def replay(
    source: Path = typer.Argument(
        ...,
        metavar="CAPTURE",
        help="Capture records: a CAPTURE=file:PATH file or a directory of its rotated files.",
        show_default=False,
    ),
    url: str = typer.Option(..., "--url", help="The service to ask: its base URL.", show_default=False),
    output: Path = typer.Option(
        ..., "--out", "-o", help="Where its answers go, as capture records (JSON lines).", show_default=False
    ),
    header: list[str] = typer.Option(
        [],
        "--header",
        "-H",
        metavar="'NAME: VALUE'",
        help="Sent with every request (repeatable; never printed).",
        show_default=False,
    ),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds per request (connecting included)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Send captured requests to a service again and write its answers as capture records.

    Each request goes to its route with its rows, params and request id, so the records written join
    the captured ones by id; `deployctl compare --traffic` reads either.
    """
    from deployctl.checks.replay import replay as run_replay
    from deployctl.checks.smoke import check_url, parse_headers

    if timeout <= 0:
        raise UsageError("--timeout must be positive.")
    done = run_replay(source, check_url(url), parse_headers(header), output, force, timeout)
    err.print(
        f"Replayed {done.sent} requests to {escape(url)}: {done.answered} answered, {done.refused} refused, "
        f"{done.skipped} skipped (refused when captured, or redacted); records in {escape(str(output))}",
        highlight=False,
    )


@app.command()
def promote(
    path: Path = typer.Argument(
        ..., metavar="CANDIDATE_DIR", help="The compared candidate's artifact dir.", show_default=False
    ),
    alias: str = typer.Option(..., "--alias", help="The registered model's alias to move, e.g. champion."),
    report: Path = typer.Option(..., "--report", help="The JSON report `deployctl compare --json` wrote."),
    tracking_uri: str | None = TRACKING,
    dry_run: bool = typer.Option(False, "--dry-run", help="Check everything and say what would change."),
) -> None:
    """Move the model's alias to the candidate's pinned version, only on a passed compare report made
    for this very artifact (its digest); write the gate figures as tags on that version.

    Anything else (a failed, edited or foreign report, a runs:/ or local model, an unreachable
    registry) is refused with the reason, and nothing changes in the registry.
    Exit codes: 0 promoted (or would be, with --dry-run), 1 refused, 2 usage or artifact error."""
    from deployctl import promote as promotion

    with err.status("Checking the report and the registry"):
        plan = promotion.plan(path, alias, report, tracking_uri)
    if dry_run:
        err.print(
            f"[yellow]Dry run[/], nothing changed. Would move {escape(plan.describe())}:", highlight=False
        )
        for key, value in plan.tags.items():
            err.print(f"  tag {escape(key)} = {escape(value)}", highlight=False)
        return
    promotion.execute(plan)
    err.print(f"[green]Promoted[/] {escape(plan.describe())}", highlight=False)


@contextmanager
def stdout_to_stderr(active: bool) -> Iterator[None]:
    """While `active`, whatever writes to stdout (libraries, subprocesses that inherit it) goes to
    stderr, so that --json's one document is all a pipeline reads on stdout."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@app.command()
def token(
    as_json: bool = typer.Option(False, "--json", help='Print {"token": ..., "sha256": ...} on stdout.'),
) -> None:
    """Make a random bearer token and its SHA-256 digest, for a service's AUTH_TOKEN_SHA256.

    The service is given only the digest; clients send `Authorization: Bearer <token>`. The token
    is shown once: keep it in a secret store.
    """
    from deployctl.tokens import new_token

    made = new_token()
    if as_json:
        print(json.dumps({"token": made.token, "sha256": made.sha256}))
        return
    print(f"token:  {made.token}\nsha256: {made.sha256}")
    err.print(
        "Give the service the digest (AUTH_TOKEN_SHA256, or a line of AUTH_TOKENS_FILE); clients send "
        "'Authorization: Bearer <token>'. The token is not stored anywhere: keep it in a secret store.",
        highlight=False,
    )


@app.command()
def serve(
    path: Path = ARTIFACT,
    port: int = typer.Option(8000, "--port", "-p", help="Port to listen on."),
) -> None:
    """Run the built artifact in the foreground (Ctrl-C or SIGTERM stops it cleanly)."""
    from deployctl.manifest import Artifact
    from deployctl.targets import get as get_target

    artifact = Artifact.open(path)
    get_target(artifact.target).serve(artifact, port, err)


@app.command()
def demo(
    workdir: Path = typer.Option(
        Path("deployctl-demo"), "--workdir", help="Where the registry and the artifact go."
    ),
    target: str = typer.Option("fastapi", "--target", "-t", help="Target to generate."),
) -> None:
    """Train a fraud model on synthetic data, register it locally, then generate, build and smoke-test it."""
    from deployctl.demo import run_demo

    run_demo(workdir, target, err, lambda out, timeout, as_json: run_smoke_test(out, timeout=timeout))


def _warnings(artifact: Any) -> None:
    from deployctl.targets import get as get_target

    for warning in get_target(artifact.target).warnings(artifact.options):
        err.print(f"[bold yellow]Warning:[/] {escape(warning)}", highlight=False)


def _next_steps(artifact: Any) -> None:
    from deployctl.targets import get as get_target

    steps = get_target(artifact.target).next_steps(artifact)
    err.print("Next: " + "  then  ".join(f"[bold]{s}[/]" for s in steps))


def main() -> None:
    """Usage mistakes are Typer's to report (usage line, error, exit 2): it runs in standalone mode,
    so this works whichever Click it uses (Typer 0.29 vendors its own). Our errors come out here."""
    try:
        app()
    except DeployctlError as exc:
        if state["debug"]:
            err.print_exception()
        err.print(f"[bold red]Error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            err.print(f"[yellow]Hint:[/] {escape(exc.hint)}", highlight=False)
        sys.exit(exc.exit_code)
