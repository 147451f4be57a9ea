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

from deployctl import __version__
from deployctl.errors import DeployctlError, SmokeTestFailed, UsageError

app = typer.Typer(
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


# A flag takes no value: `metavar=""` on each, else Typer's help shows `--json <bool>`.
@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors too.", metavar=""),
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        callback=_print_version,
        metavar="",
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
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout.", metavar=""),
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
    force: bool = typer.Option(False, "--force", help="Write into a non-empty directory.", metavar=""),
    tracking_uri: str | None = TRACKING,
    templates: Path | None = typer.Option(
        None,
        "--templates",
        help="Folder of template overrides, laid out like deployctl's templates/.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON summary on stdout (progress stays on stderr).", metavar=""
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
        False, "--json", help="Print one JSON summary on stdout (progress stays on stderr).", metavar=""
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
        "a 4xx, and /health again. Every call's latency is reported.",
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
    header: list[str] = typer.Option(
        [],
        "--header",
        "-H",
        metavar="'NAME: VALUE'",
        help="Send this header with every request (repeatable; with --url). Values are never printed.",
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
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout.", metavar=""),
    junit: Path | None = typer.Option(
        None, "--junit", help="Also write a JUnit XML report to this file.", show_default=False
    ),
) -> None:
    run_smoke_test(
        path, url=url, header=header, timeout=timeout, retries=retries, as_json=as_json, junit=junit
    )


def run_smoke_test(
    path: Path,
    *,
    url: str | None = None,
    header: list[str] | None = None,
    timeout: float | None = None,
    retries: int = 0,
    as_json: bool = False,
    junit: Path | None = None,
) -> None:
    """The smoke-test command: check, report (table, JSON, JUnit), raise on failure."""
    from datetime import datetime, timezone

    from deployctl import report, smoke
    from deployctl.contract import Check
    from deployctl.errors import EndpointUnreachable
    from deployctl.manifest import Artifact

    headers = smoke.parse_headers(header or [])
    redact = report.Redactor(headers.values())

    def say(text: str) -> None:  # progress that may quote an endpoint's answer
        err.print(redact(text), style="yellow", markup=False, highlight=False, soft_wrap=True)

    if url is None and (headers or retries):
        raise UsageError(
            "--header and --retries apply to a deployed service only.",
            "Give --url URL, or leave them out to smoke-test the artifact started locally.",
        )
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout must be more than 0 seconds, got {timeout:g}.")
    if url is not None:
        url = smoke.check_url(url)
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
    }
    begun, started = datetime.now(timezone.utc), time.monotonic()
    where = url or f"{path}, started locally"
    outcome = "passed"
    failure: DeployctlError | None = None  # raised once the reports are written
    with stdout_to_stderr(as_json), err.status(f"Smoke-testing {where}"):
        try:
            if url is None:
                checks = smoke.run(artifact, timeout or 120.0)
            else:
                err.print(f"Checking {url} against {model['name']} version {model['version']} ({path})")
                checks = smoke.run_remote(artifact, url, headers, timeout or 30.0, retries, say)
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
        outcome = "failed"
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
    if failed:
        raise smoke.failure(failed, len(checks))
    err.print(f"[green]Smoke test passed[/]: {len(checks)} checks")


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
