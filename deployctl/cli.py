"""The command line: thin Typer commands that parse, call the core, and print with Rich.

Progress goes to stderr; `--json` output goes to stdout. Heavy modules (MLflow, pandas, Docker)
are imported inside the commands that need them, so `deployctl --help` stays fast.
"""

from __future__ import annotations

import json
import sys
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
out = Console()
err = Console(stderr=True)
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
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
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
    table.add_row(
        "signature",
        "\n".join(f"{c.name}: {c.type}{'' if c.required else ' (optional)'}" for c in resolved.columns),
    )
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
        help="flask, fastapi, docker, k8s, lambda, gcf (see `deployctl targets`).",
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
) -> None:
    """Generate the deployment artifact for a model and a target.

    Target options follow as --<option> VALUE (see `deployctl targets`).
    """
    from deployctl.generate import generate as run_generate

    with err.status(escape(f"Generating {target} artifact for {model}")):
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
    for note in artifact.notes:
        err.print(f"[yellow]--force:[/] {escape(note)}", highlight=False)
    m = artifact.model
    err.print(
        f"[green]Generated[/] {artifact.path} ({artifact.target}) for {m['name']} "
        f"version {m['version']} ({m['task']}, {len(artifact.manifest['files'])} files)"
    )
    _next_steps(artifact)


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
def build(path: Path = ARTIFACT) -> None:
    """Make a generated artifact runnable (a venv, an image, a zip: depends on the target)."""
    from deployctl.manifest import Artifact
    from deployctl.targets import get as get_target

    artifact = Artifact.open(path)
    changed = artifact.modified_files()
    if changed:
        err.print(f"[yellow]Note:[/] edited since generate: {', '.join(changed[:8])}")
    facts = get_target(artifact.target).build(artifact, err)
    err.print(f"[green]Built[/] {path}: " + ", ".join(f"{k} {v}" for k, v in facts.items()))


@app.command("smoke-test")
def smoke_test(
    path: Path = ARTIFACT,
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for /health."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
) -> None:
    """Start the built artifact, check it serves the recorded answers, stop it. Exit 1 on any mismatch."""
    from deployctl import smoke
    from deployctl.manifest import Artifact

    artifact = Artifact.open(path)
    with err.status(f"Smoke-testing {path}"):
        checks = smoke.run(artifact, timeout)
    failed = [c for c in checks if not c.ok]
    if as_json:
        print(
            json.dumps(
                {
                    "ok": not failed,
                    "artifact": str(path),
                    "target": artifact.target,
                    "checks": [c.__dict__ for c in checks],
                },
                indent=2,
            )
        )
    else:
        table = Table("check", "result", "ms", "detail", title=f"smoke test: {path} ({artifact.target})")
        for c in checks:
            ms = f"{c.ms:.1f}" if c.ms is not None else ""
            table.add_row(c.name, "[green]pass[/]" if c.ok else "[red]FAIL[/]", ms, c.detail[:120])
        out.print(table)
    if failed:
        raise SmokeTestFailed(
            f"{len(failed)} of {len(checks)} checks failed; first: {failed[0].name}: {failed[0].detail}",
            "Fix what the failing check names, then `deployctl build` and smoke-test again. A "
            "mismatch in answers means the artifact does not serve the model as recorded.",
        )
    err.print(f"[green]Smoke test passed[/]: {len(checks)} checks")


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

    run_demo(workdir, target, err, smoke_test)


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
