"""The manifest (`deployctl.json`) every artifact carries.

`build`, `serve` and `smoke-test` read only the artifact dir and this manifest: they never need
the registry again. It records what was asked, what it resolved to, the options, the sha256 of
every generated file, and the smoke-test cases with the outputs the model gave in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployctl.errors import NotAnArtifact

MANIFEST = "deployctl.json"
SCHEMA_VERSION = 1
# Written by `build`, not by `generate`: never hashed, never part of the recorded file list.
BUILD_OUTPUTS = (".venv", "dist", ".wheelhouse", "build.json", "requirements.lock")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(root: Path, files: list[Path]) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(files) if p.is_file()}


@dataclass
class Artifact:
    """A generated artifact dir and its manifest."""

    path: Path
    manifest: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what `generate --force` replaced or kept

    @classmethod
    def open(cls, path: Path) -> Artifact:
        file = path / MANIFEST
        if not file.is_file():
            what = "does not exist" if not path.exists() else f"has no {MANIFEST}"
            raise NotAnArtifact(
                f"{path} {what}, so it is not a deployctl artifact.",
                f"Create one with `deployctl generate --model <uri> --target <target> --out {path}`.",
            )
        try:
            manifest = json.loads(file.read_text())
            manifest["target"], manifest["model"]["name"]
        except (ValueError, KeyError, TypeError) as exc:
            raise NotAnArtifact(
                f"{file} is not a valid deployctl manifest ({exc}).",
                "Regenerate the artifact with `deployctl generate ... --force`.",
            ) from None
        return cls(path.resolve(), manifest)  # absolute: servers run with the artifact as cwd

    @property
    def target(self) -> str:
        return str(self.manifest["target"])

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.manifest["model"])

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.manifest.get("options", {}))

    @property
    def smoke_cases(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("smoke_cases", []))

    def modified_files(self) -> list[str]:
        """Generated files whose content changed since `generate` (edited by hand, say)."""
        changed = []
        for rel, digest in self.manifest.get("files", {}).items():
            file = self.path / rel
            if not file.is_file() or sha256(file) != digest:
                changed.append(rel)
        return changed


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Written last, and atomically: a manifest on disk always describes files that are there."""
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, out / MANIFEST)
