"""gcf: the model as a Google Cloud Function (2nd gen) on the Python functions-framework.

The artifact is the source `gcloud functions deploy` uploads: main.py (the HTTP function, a thin
adapter over app/runtime.py), the bundled model and a pinned requirements.txt that Cloud Build
installs. build makes a .venv with those requirements so that smoke-test and serve run the real
`functions-framework --target handle`, and measures the upload against Cloud Functions' limits.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from deployctl.checks.contract import Check
from deployctl.manifest import Artifact
from deployctl.targets.base import Builder, Option, Target
from deployctl.targets.builders import VenvBuilder
from deployctl.targets.runners import ProcessRunner
from deployctl.targets.shared import ENGINE, MB, ORJSON, in_range, matches

ENTRY_POINT = "handle"
# Pinned to the version deployctl is tested with, like the other server stacks.
FUNCTIONS_FRAMEWORK = "functions-framework==3.10.2"
# Cloud Functions' documented deployment limit: 100 MB of zipped source (1st gen; 2nd gen builds
# the upload with Cloud Build and documents none, but a source this big slows every deploy).
SOURCE_LIMIT = 100 * MB
REGION = re.compile(r"^[a-z]+(-[a-z]+)+[0-9]$")
MEMORY = re.compile(r"^[0-9]+(Mi|Gi|MB|GB)$")


VENV = VenvBuilder()
FRAMEWORK = ProcessRunner(
    (".venv/bin/functions-framework", "--target", ENTRY_POINT, "--host", "{host}", "--port", "{port}"),
    ".venv/bin/functions-framework",
)


class FunctionSource:
    """The venv builder's .venv (to run the real functions-framework), then the upload measured."""

    def __init__(self, venv: Builder) -> None:
        self.venv = venv

    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]:
        facts = self.venv.build(artifact, console)
        source = measure_source(artifact.path)
        if source.zipped > SOURCE_LIMIT:
            console.print(f"[yellow]Note:[/] {source.summary()}: {source_advice()}")
        digits = artifact.options["runtime"].removeprefix("python")
        if f"{digits[0]}.{digits[1:]}" != f"{sys.version_info.major}.{sys.version_info.minor}":
            console.print(
                f"[yellow]Note:[/] .venv runs Python {sys.version.split()[0]}; the function will run "
                f"{artifact.options['runtime']}. The smoke test checks the code, not that Python version."
            )
        console.print(f"Deploy: [bold]{deploy_command(artifact.name, artifact.options, artifact.path)}[/]")
        return {**facts, "source": source.summary()}


class CloudFunctionTarget(Target):
    name = "gcf"
    summary = "Google Cloud Function (2nd gen) on functions-framework"
    produces = "main.py, app/, requirements.txt, .gcloudignore; a .venv after build"
    layers = ("runtime", "gcf")
    server_requirements = (FUNCTIONS_FRAMEWORK, ORJSON)
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "runtime",
            "python311",
            "Cloud Functions runtime.",
            choices=("python311", "python312", "python313"),
        ),
        Option(
            "region",
            "us-central1",
            "Region to deploy to.",
            check=matches(REGION, "a region like us-central1"),
        ),
        Option(
            "memory",
            "1Gi",
            "Memory per instance; CPU grows with it.",
            check=matches(MEMORY, "like 512Mi or 2Gi"),
        ),
        Option(
            "timeout",
            60,
            "Request timeout in seconds (1-3600).",
            int,
            check=in_range(1, 3600),
        ),
        ENGINE,
    )
    builder = FunctionSource(VENV)
    runner = FRAMEWORK  # the real functions-framework from the artifact's .venv

    def context(self, base: dict[str, Any]) -> dict[str, Any]:
        return {**base, "deploy_argv": deploy_argv(base["name"], base["options"], ".")}

    def extra_checks(self, artifact: Artifact) -> list[Check]:
        source = measure_source(artifact.path)
        ok = source.zipped <= SOURCE_LIMIT
        return [
            Check("upload within Cloud Functions limits", ok, source.summary() if ok else source_advice())
        ]

    def next_steps(self, artifact: Artifact) -> list[str]:
        return [*super().next_steps(artifact), deploy_command(artifact.name, artifact.options, artifact.path)]


def deploy_argv(name: str, options: dict[str, Any], source: Path | str) -> list[str]:
    return [
        *("gcloud", "functions", "deploy", name, "--gen2", f"--runtime={options['runtime']}"),
        *(f"--region={options['region']}", f"--source={source}", f"--entry-point={ENTRY_POINT}"),
        *("--trigger-http", f"--memory={options['memory']}", f"--timeout={options['timeout']}s"),
        "--no-allow-unauthenticated",
    ]


def deploy_command(name: str, options: dict[str, Any], source: Path | str) -> str:
    """The deploy command line, quoted for a shell (the artifact's path may hold anything)."""
    return shlex.join(deploy_argv(name, options, source))


@dataclass
class Source:
    files: int
    size: int
    zipped: int

    def summary(self) -> str:
        return (
            f"upload of {self.files} files, {self.size / MB:.2f} MB ({self.zipped / MB:.2f} MB zipped; "
            f"limit {SOURCE_LIMIT // MB} MB zipped)"
        )


def source_advice() -> str:
    return (
        f"the zipped source is over Cloud Functions' {SOURCE_LIMIT // MB} MB limit; keep large files "
        "out with .gcloudignore, or load a large model from Cloud Storage at start-up"
    )


def measure_source(root: Path) -> Source:
    """What `gcloud functions deploy --source` would upload, zipped as it zips it."""
    files = uploaded_files(root)
    with tempfile.TemporaryFile() as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in files:
                archive.write(file, file.relative_to(root).as_posix())
        zipped = tmp.tell()
    return Source(len(files), sum(f.stat().st_size for f in files), zipped)


def uploaded_files(root: Path) -> list[Path]:
    """Files not excluded by .gcloudignore: enough of its gitignore syntax for names, globs and
    directory patterns (`name/`), the forms the generated file and most edits use."""
    ignore = root / ".gcloudignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    patterns = [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]
    return sorted(
        p for p in root.rglob("*") if p.is_file() and not _ignored(p.relative_to(root).as_posix(), patterns)
    )


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    return any(
        fnmatch.fnmatch(rel, pat) or any(fnmatch.fnmatch(part, pat) for part in parts) for pat in patterns
    )
