"""The manifest (`deployctl.json`) every artifact carries: read and written here, and only here.

`build`, `serve` and `smoke-test` read only the artifact dir and this manifest: they never need
the registry again. It records what was asked, what it resolved to, the options, the sha256 of
every generated file, and the smoke-test cases with the outputs the model gave in-process.

`Manifest` is its typed form. `schema_version` says how to read it: a manifest of a schema this
deployctl does not know (written by a newer one) or no longer reads is refused, saying which
deployctl to use. The serving runtime (app/) reads the same file with its own code: it never
imports deployctl, so a change of the layout below is a change of the runtime too.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deployctl import __version__
from deployctl.errors import NotAnArtifact
from deployctl.origin import upgrade

MANIFEST = "deployctl.json"
SCHEMA_VERSION = 1  # the schema this deployctl writes; raised when a reader would misread the new one
OLDEST_SCHEMA_VERSION = 1  # the oldest schema this deployctl still reads
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


class InvalidManifest(ValueError):
    """A manifest whose content is not what its schema says: refused as "not a valid manifest"."""


def _need(data: Any, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    if not isinstance(data, dict) or key not in data:
        raise InvalidManifest(f"no '{where}{key}'")
    value = data[key]
    if not isinstance(value, kind):
        raise InvalidManifest(f"'{where}{key}' is a {type(value).__name__}")
    return value


@dataclass(frozen=True)
class ModelRecord:
    """The manifest's `model` block (also the templates' `model`): no credential, no host path."""

    uri: str | None
    name: str
    version: str
    run_id: str | None
    source: str | None
    tracking_uri: str | None
    flavor: str
    loader: dict[str, Any]
    mlflow_version: str | None
    python_version: str | None
    columns: list[dict[str, Any]]  # {"name", "type", "required"}, in signature order
    task: str  # "binary", "multiclass" or "regression"
    classes: list[Any] | None
    requirements: list[str]
    # the signature's params: {"name", "type", "shape" (null or [-1]), "default"}; older manifests
    # have none, which reads as a model without params
    params: list[dict[str, Any]] = field(default_factory=list)
    # a tensor signature's one tensor {"dtype", "shape"} (its columns are empty); None: columns
    tensor: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelRecord:
        optional_str = (str, type(None))
        kinds: dict[str, type | tuple[type, ...]] = {
            "name": str,
            "version": str,
            "flavor": str,
            "loader": dict,
            "columns": list,
            "task": str,
            "classes": (list, type(None)),
            "requirements": list,
            "params": list,
            "tensor": (dict, type(None)),
        }
        optional = {"params", "tensor"}
        values = {
            f.name: _need(data, f.name, kinds.get(f.name, optional_str), "model.")
            for f in fields(cls)
            if f.name not in optional or (isinstance(data, dict) and f.name in data)
        }
        return cls(**values)


@dataclass(frozen=True)
class Manifest:
    """The typed `deployctl.json`; `to_dict` gives the JSON layout, in this order."""

    tool_version: str
    generated_at: str  # ISO 8601, UTC, to the second
    target: str
    name: str  # the service name (a DNS label)
    options: dict[str, Any]
    python_version: str  # of the Python that ran generate (and recorded the smoke cases)
    model: ModelRecord
    smoke_cases: list[dict[str, Any]]  # {"row", "prediction"[, "probabilities"]}
    files: dict[str, str]  # path relative to the artifact -> sha256, every generated file
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema_version": self.schema_version}
        data.update((f.name, getattr(self, f.name)) for f in fields(self) if f.name != "schema_version")
        data["model"] = self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """The typed manifest, or InvalidManifest (SchemaMismatch for another schema)."""
        if not isinstance(data, dict):
            raise InvalidManifest(f"a JSON {type(data).__name__}, not an object")
        version = _need(data, "schema_version", int)
        if isinstance(version, bool) or not OLDEST_SCHEMA_VERSION <= version <= SCHEMA_VERSION:
            raise SchemaMismatch(version, data.get("tool_version"))
        kinds: dict[str, type] = {"options": dict, "smoke_cases": list, "files": dict}
        values = {
            f.name: _need(data, f.name, kinds.get(f.name, str))
            for f in fields(cls)
            if f.name not in ("model", "schema_version")
        }
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in values["files"].items()):
            raise InvalidManifest("'files' maps paths to sha256 strings")
        return cls(**values, model=ModelRecord.from_dict(data.get("model")), schema_version=version)


class SchemaMismatch(InvalidManifest):
    """A manifest of a schema this deployctl does not read: newer, or too old."""

    def __init__(self, version: Any, tool_version: Any) -> None:
        self.version, self.tool_version = version, tool_version
        super().__init__(f"manifest schema {version!r}")

    def error(self, file: Path) -> NotAnArtifact:
        by = f"deployctl {self.tool_version}" if isinstance(self.tool_version, str) else "another deployctl"
        reads = f"this deployctl ({__version__}) reads manifest schema {OLDEST_SCHEMA_VERSION}"
        reads += f" to {SCHEMA_VERSION}" if SCHEMA_VERSION != OLDEST_SCHEMA_VERSION else ""
        newer = isinstance(self.version, int) and self.version > SCHEMA_VERSION
        if newer:
            return NotAnArtifact(
                f"{file} was written by {by}, a newer deployctl (manifest schema {self.version}); {reads}.",
                f"Upgrade deployctl to >= {self.tool_version} ({upgrade(str(self.tool_version))}), or "
                "regenerate the artifact with this one: `deployctl generate ... --force`.",
            )
        return NotAnArtifact(
            f"{file} was written by {by} (manifest schema {self.version!r}), which {reads}.",
            f"Regenerate the artifact with deployctl >= {__version__}: `deployctl generate ... --force`.",
        )


@dataclass
class Artifact:
    """A generated artifact dir and its manifest.

    `manifest` is the manifest as JSON (a dict); `record` is the same, typed. The properties below
    read it for the targets, the smoke test and the CLI.
    """

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
        data = _load(file)
        return cls(path.resolve(), data)  # absolute: servers run with the artifact as cwd

    @property
    def record(self) -> Manifest:
        return Manifest.from_dict(self.manifest)

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

    @property
    def digest(self) -> str:
        """sha256 of the manifest: it records the sha256 of every generated file (the model's
        included), so it names this artifact's content. Reports made for an artifact carry it."""
        return "sha256:" + sha256(self.path / MANIFEST)

    def modified_files(self) -> list[str]:
        """Generated files whose content changed since `generate` (edited by hand, say)."""
        changed = []
        for rel, digest in self.manifest.get("files", {}).items():
            file = self.path / rel
            if not file.is_file() or sha256(file) != digest:
                changed.append(rel)
        return changed


def read_manifest(file: Path) -> Manifest:
    """The manifest in `file`, typed; NotAnArtifact (exit 2) if it is not one this deployctl reads."""
    return Manifest.from_dict(_load(file))


def _load(file: Path) -> dict[str, Any]:
    """The manifest in `file` as JSON, once checked against its schema (see `read_manifest`)."""
    try:
        data = json.loads(file.read_text())
        Manifest.from_dict(data)
        return dict(data)
    except SchemaMismatch as exc:
        raise exc.error(file) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise NotAnArtifact(
            f"{file} is not a valid deployctl manifest ({exc}).",
            "Regenerate the artifact with `deployctl generate ... --force`.",
        ) from None


def recorded_files(file: Path) -> Any:
    """The `files` table of the manifest in `file`, unchecked (the caller checks it), whatever its
    schema: `generate --force` needs only this to replace an artifact, even one it could not read."""
    return json.loads(file.read_text())["files"]


def write_manifest(out: Path, manifest: Manifest) -> None:
    """Written last, and atomically: a manifest on disk always describes files that are there."""
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, out / MANIFEST)
