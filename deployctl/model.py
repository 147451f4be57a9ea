"""Model resolution: every MLflow URI form becomes one pinned, local `ResolvedModel`.

MLflow is imported lazily inside the functions that need it, so `deployctl --help` and
`deployctl targets` do not pay for importing it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deployctl.columns import COLUMN_DTYPES, PYTHON_TYPES
from deployctl.errors import DeployctlError, ModelNotFound, RegistryUnreachable, UsageError
from deployctl.redact import redact

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# Flavors loaded with their own library (classifiers keep predict_proba); others go through pyfunc.
NATIVE_FLAVORS = ("sklearn", "lightgbm", "xgboost")
# The scikit-learn-API classes of LightGBM and XGBoost served natively; a bare Booster (lgb.train,
# xgb.train) has no classes_ or predict_proba and stays on pyfunc. XGBoost's runtime loader builds
# the class from this table, never from a name read from the model.
NATIVE_MODEL_CLASSES = {
    "lightgbm": ("lightgbm.sklearn.LGBMClassifier", "lightgbm.sklearn.LGBMRegressor"),
    "xgboost": (
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
        "xgboost.sklearn.XGBRFClassifier",
        "xgboost.sklearn.XGBRFRegressor",
    ),
}
# Longer than any registry accepts (MLflow's own limit on names is 256), short enough for a message.
MAX_URI_LENGTH = 1024
URI_FORMS = (
    "Use models:/<name>@<alias>, models:/<name>/<version>, models:/<name>/<Stage>, "
    "models:/<name>/latest, runs:/<run_id>/<path>, or a folder holding an MLmodel file."
)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = True


@dataclass
class ResolvedModel:
    """A model pinned to one exact version, with its artifacts copied to `local_path`."""

    uri: str
    name: str
    version: str
    run_id: str | None
    flavor: str
    columns: list[Column]
    example_rows: list[Any]  # records; for a tensor signature, examples (nested lists)
    requirements: list[str]
    local_path: Path
    loader: dict[str, Any]
    python_version: str | None = None
    mlflow_version: str | None = None
    tracking_uri: str | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    params: list[dict[str, Any]] = field(default_factory=list)  # the signature's ParamSchema
    tensor: dict[str, Any] | None = None  # {"dtype", "shape"}: a tensor signature (columns empty)

    def describe(self) -> dict[str, Any]:
        """What `inspect --json` prints: every URI redacted (the manifest records less: `manifest_model`)."""
        data = asdict(self)
        data["local_path"] = str(self.local_path)
        for key in ("uri", "source", "tracking_uri"):
            data[key] = redact(data[key])
        return data


def tracking_uri_or_default(tracking_uri: str | None) -> str:
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def resolve(uri: str, tracking_uri: str | None, dest: Path) -> ResolvedModel:
    """Resolve `uri` to one pinned version and copy its artifacts into `dest`."""
    tracking_uri = tracking_uri_or_default(tracking_uri)
    local_dir = Path(uri).expanduser()
    if uri.strip() and _is_dir(local_dir):  # any folder name works, line breaks included
        return _from_local_dir(uri, local_dir, dest)
    check_uri(uri)
    if not (uri.startswith("models:/") or uri.startswith("runs:/")):
        raise UsageError(f"'{redact(uri)}' is neither a model URI nor an MLflow model directory.", URI_FORMS)
    if uri.startswith("models:/"):
        parse_models_uri(uri)  # a malformed URI is refused before MLflow is imported (~2 s)
    check_sqlite_exists(tracking_uri)
    _quiet_mlflow()
    with _registry_errors(tracking_uri):
        if uri.startswith("runs:/"):
            return _from_run(uri, tracking_uri, dest)
        return _from_registry(uri, tracking_uri, dest)


def check_sqlite_exists(tracking_uri: str) -> None:
    """A sqlite registry must be there already: MLflow would create an empty database (and its
    folders) for a mistyped path, then report no model, and a read leaves a stray file behind."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    if path in ("", ":memory:") or Path(path).is_file():
        return
    raise RegistryUnreachable(
        f"No MLflow database at {path} (tracking URI {redact(tracking_uri)}); nothing was created.",
        "Point MLFLOW_TRACKING_URI or --tracking-uri at your registry, e.g. sqlite:///path/to/mlflow.db "
        "(a relative path is from the current directory), or run `deployctl demo` to make one.",
    )


def check_uri(uri: str) -> None:
    """Refuse what no registry name or path holds, before MLflow turns it into a misleading error."""
    if not uri.strip():
        raise UsageError("The model URI is empty.", URI_FORMS)
    if len(uri) > MAX_URI_LENGTH:
        raise UsageError(
            f"The model URI is {len(uri)} characters long (at most {MAX_URI_LENGTH}): "
            f"'{redact(uri[:60])}...'.",
            URI_FORMS,
        )
    bad = next((ch for ch in uri if ord(ch) < 32 or ord(ch) == 127), None)
    if bad is not None:
        what = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}.get(
            bad, f"the control character {bad!r}"
        )
        raise UsageError(
            f"The model URI {redact(uri)!r} contains {what}; deployctl refuses control characters "
            "in model names and paths.",
            "Check how the URI was built (a stray line break from a file or a variable?). " + URI_FORMS,
        )


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long for the filesystem, a NUL byte: not a directory
        return False


def _from_registry(uri: str, tracking_uri: str, dest: Path) -> ResolvedModel:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name, version = _pin_version(client, uri, tracking_uri)
    mv = client.get_model_version(name, version)
    _check_local_source(_download_location(client, name, version))
    path = _download(f"models:/{name}/{version}", tracking_uri, dest)
    pinned = Pinned(name, str(version), run_id=mv.run_id, tracking_uri=tracking_uri, source=mv.source)
    return _read_model(path, uri, pinned)


def parse_models_uri(uri: str) -> tuple[str, str, str]:
    """`models:/name@alias` -> (name, "@", alias); `models:/name/<ref>` -> (name, "/", ref)."""
    rest = uri[len("models:/") :].strip("/")
    name, sep, ref = rest.partition("@") if "@" in rest else rest.partition("/")
    if not name or not sep or not ref or "/" in ref:
        raise UsageError(
            f"Cannot parse the model URI '{redact(uri)}'.",
            "Use models:/<name>@<alias>, models:/<name>/<version>, models:/<name>/<Stage> "
            "or models:/<name>/latest.",
        )
    return name, sep, ref


def _pin_version(client: Any, uri: str, tracking_uri: str) -> tuple[str, str]:
    """Turn alias, stage and `latest` forms into one exact version number."""
    from mlflow.exceptions import MlflowException

    name, sep, ref = parse_models_uri(uri)
    _require_registered(client, name, tracking_uri)
    try:
        if sep == "@":
            return name, str(client.get_model_version_by_alias(name, ref).version)
        if ref.isdigit():
            return name, str(client.get_model_version(name, ref).version)
    except MlflowException as exc:
        versions = sorted(int(v.version) for v in _versions(client, name))
        kind = "alias" if sep == "@" else "version"
        raise ModelNotFound(
            f"Model '{name}' has no {kind} '{ref}'.",
            f"Existing versions: {versions or 'none'}. {_aliases_hint(client, name)}",
        ) from exc
    return name, _version_for_stage(client, name, ref)


def _version_for_stage(client: Any, name: str, ref: str) -> str:
    import warnings

    versions = _versions(client, name)
    if not versions:
        raise ModelNotFound(f"Model '{name}' has no versions.", "Register a version first.")
    if ref.lower() == "latest":
        return str(max(int(v.version) for v in versions))
    with warnings.catch_warnings():  # stages are deprecated in MLflow but real registries use them
        warnings.simplefilter("ignore")
        in_stage = [v for v in versions if (v.current_stage or "").lower() == ref.lower()]
    if not in_stage:
        stages = sorted({v.current_stage for v in versions if v.current_stage != "None"})
        raise ModelNotFound(
            f"Model '{name}' has no version in stage '{ref}'.",
            f"Stages in use: {stages or 'none'}. {_aliases_hint(client, name)}",
        )
    return str(max(int(v.version) for v in in_stage))


def _versions(client: Any, name: str) -> list[Any]:
    """Every version of one registered model, whatever quotes its name holds.

    MLflow's filter grammar has no escape: a string is whatever lies between matching single or
    double quotes. So quote with the kind the name lacks; a name with both kinds is matched with
    LIKE, each quote a one-character wildcard, and the answers filtered on the exact name.
    """
    if "'" not in name:
        query = f"name='{name}'"
    elif '"' not in name:
        query = f'name="{name}"'
    else:
        query = "name LIKE '" + re.sub(r"['\"]", "_", name) + "'"
    return [v for v in client.search_model_versions(query) if v.name == name]


def _aliases_hint(client: Any, name: str) -> str:
    aliases = sorted(client.get_registered_model(name).aliases)
    return f"Aliases: {', '.join('@' + a for a in aliases) if aliases else 'none'}."


def _require_registered(client: Any, name: str, tracking_uri: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        known = sorted(m.name for m in client.search_registered_models())
        hint = f"Registered models at {redact(tracking_uri)}: {', '.join(known) if known else 'none'}."
        if not known and tracking_uri == DEFAULT_TRACKING_URI:
            hint += " Pass --tracking-uri or set MLFLOW_TRACKING_URI to point at your registry."
        raise ModelNotFound(f"No registered model named '{name}'.", hint) from exc


def _from_run(uri: str, tracking_uri: str, dest: Path) -> ResolvedModel:
    match = re.fullmatch(r"runs:/([0-9a-f]+)/(.+)", uri)
    if not match:
        raise UsageError(f"Cannot parse the run URI '{redact(uri)}'.", "Use runs:/<run_id>/<path>.")
    run_id, artifact = match.groups()
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    _check_local_source(RunsArtifactRepository.get_underlying_uri(uri, tracking_uri))
    path = _download(uri, tracking_uri, dest)
    pinned = Pinned(Path(artifact).name, f"run-{run_id[:8]}", run_id, tracking_uri=tracking_uri, source=uri)
    return _read_model(path, uri, pinned)


def _from_local_dir(uri: str, local_dir: Path, dest: Path) -> ResolvedModel:
    if not (local_dir / "MLmodel").is_file():
        raise UsageError(
            f"'{local_dir}' is a directory but holds no MLmodel file.",
            "Point --model at a folder written by mlflow.<flavor>.save_model, or use a models:/ URI.",
        )
    _quiet_mlflow()
    copy_model_tree(local_dir, dest)
    return _read_model(dest, uri, Pinned(local_dir.resolve().name, "local", source=str(local_dir)))


def _download(uri: str, tracking_uri: str, dest: Path) -> Path:
    """Download into a scratch folder next to `dest`, then copy it over without following links."""
    import mlflow
    import mlflow.artifacts

    # download_artifacts takes a tracking URI, but MLflow looks models:/ URIs up with a client built
    # from the global URIs (else $MLFLOW_*_URI or ./mlflow.db, which it would create): set them.
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    scratch = dest.parent / f".{dest.name}-download"
    scratch.mkdir(parents=True, exist_ok=True)
    path = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(scratch), tracking_uri=tracking_uri))
    copy_model_tree(path, dest, what=f"The artifacts of {redact(uri)}")
    shutil.rmtree(scratch, ignore_errors=True)
    return dest


def _download_location(client: Any, name: str, version: str) -> str:
    """Where the version's artifacts live, when the registry says (Unity Catalog may not)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_download_uri(name, version))
    except MlflowException:
        return ""


def _check_local_source(location: str) -> None:
    """A registry whose artifacts live on this machine: MLflow's download copies files with
    shutil.copy2, which follows links. Refuse an escaping link before it is read."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(location)
    if not location or parts.scheme not in ("", "file"):
        return
    source = Path(unquote(parts.path) if parts.scheme else location)
    if _is_dir(source):
        check_model_tree(source, what="The model's artifacts in the registry")


def check_model_tree(root: Path, what: str = "The model directory") -> list[tuple[Path, Path]]:
    """Every regular file under `root` and where it comes from; links are refused unless they point
    to a regular file inside `root` (then that file's content is used: the copy holds no links).

    Why not refuse every link: a model folder may name one file under two names (`model.pkl ->
    versions/3.pkl`), which is harmless. A link that leaves the folder (`leak -> /etc/passwd`,
    `~/.aws/credentials`) would ship a host file inside an image or zip; a link to a directory can
    loop or pull a whole tree in; a FIFO or device would hang or read the host. Those are refused.
    """
    root_real = root.resolve()
    files: list[tuple[Path, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for entry in sorted([*dirnames, *filenames]):
            path = Path(dirpath) / entry
            rel = path.relative_to(root)
            if path.is_symlink():
                target = Path(os.path.realpath(path))
                inside = target == root_real or root_real in target.parents
                if not inside or not target.is_file():
                    shown = os.readlink(path)
                    why = "points outside the model directory" if not inside else "does not point to a file"
                    raise UsageError(
                        f"{what} holds a symbolic link '{rel}' -> '{shown}', which {why}. "
                        "deployctl copies no file from outside the model into an artifact.",
                        f"Replace '{rel}' with the file itself, or remove it if the model does not need it.",
                    )
                files.append((rel, target))
            elif path.is_dir():
                continue
            elif path.is_file():
                files.append((rel, path))
            else:
                raise UsageError(
                    f"{what} holds '{rel}', which is neither a file nor a directory "
                    "(a FIFO, socket or device).",
                    f"Remove '{rel}' from the model directory.",
                )
    return files


def copy_model_tree(src: Path, dest: Path, what: str = "The model directory") -> None:
    """Copy a model folder: regular files only, never following a link out (see check_model_tree)."""
    files = check_model_tree(src, what)
    dest.mkdir(parents=True, exist_ok=True)
    for dirpath, dirnames, _ in os.walk(src, followlinks=False):
        for name in dirnames:
            if not (Path(dirpath) / name).is_symlink():
                (dest / Path(dirpath, name).relative_to(src)).mkdir(parents=True, exist_ok=True)
    for rel, origin in files:
        shutil.copyfile(origin, dest / rel, follow_symlinks=False)
        shutil.copymode(origin, dest / rel, follow_symlinks=False)


def strip_host_paths(model_dir: Path) -> None:
    """MLflow 3 records the logged model's artifact location, an absolute path on the registry's
    host, as `artifact_path` in MLmodel. Nothing loads it from a path we give (it only names the
    default place to load from), so the copy in an artifact keeps its base name only. The file is
    rewritten as MLflow writes it (yaml.safe_dump, block style), so nothing else changes."""
    import yaml

    from deployctl.redact import public_uri

    mlmodel = model_dir / "MLmodel"
    data = yaml.safe_load(mlmodel.read_text())
    value = data.get("artifact_path") if isinstance(data, dict) else None
    if not isinstance(value, str) or public_uri(value) == value:
        return
    data["artifact_path"] = public_uri(value)
    mlmodel.write_text(yaml.safe_dump(data, default_flow_style=False))


@dataclass(frozen=True)
class Pinned:
    """Where a model was resolved to, as its URI form tells: the identity `_read_model` records."""

    name: str
    version: str  # the registry's version number, "run-<id>" for a run, "local" for a folder
    run_id: str | None = None  # None: the run id the MLmodel file records, if any
    tracking_uri: str | None = None
    source: str | None = None


def _read_model(path: Path, uri: str, pinned: Pinned) -> ResolvedModel:
    """The complete ResolvedModel: `pinned`'s identity, and from the MLmodel file in `path` the
    flavor, loader, signature, example and requirements."""
    from mlflow.models import Model

    mlmodel = Model.load(str(path))
    flavor = next((f for f in NATIVE_FLAVORS if _native(mlmodel.flavors, f)), "python_function")
    if "python_function" not in mlmodel.flavors and flavor == "python_function":
        raise UsageError(
            f"The model at {redact(uri)} has no python_function flavor (flavors: {list(mlmodel.flavors)}).",
            "deployctl serves models that MLflow can load as pyfunc.",
        )
    return ResolvedModel(
        uri=uri,
        name=pinned.name,
        version=pinned.version,
        run_id=pinned.run_id or mlmodel.run_id,
        flavor=flavor,
        columns=_columns(mlmodel, uri),
        tensor=_tensor(mlmodel, uri),
        params=_params(mlmodel, uri),
        example_rows=_example_rows(mlmodel, path),
        requirements=_requirements(path),
        local_path=path,
        loader=_loader(mlmodel, flavor),
        python_version=mlmodel.flavors.get("python_function", {}).get("python_version"),
        mlflow_version=mlmodel.mlflow_version,
        tracking_uri=pinned.tracking_uri,
        source=pinned.source,
    )


def _columns(mlmodel: Any, uri: str) -> list[Column]:
    signature = mlmodel.signature
    fix = (
        "Log the model with a signature: mlflow.<flavor>.log_model(model, name=..., "
        "signature=mlflow.models.infer_signature(X, model.predict(X)), input_example=X[:5])."
    )
    if signature is None or signature.inputs is None:
        raise DeployctlError(f"The model at {redact(uri)} has no signature.", fix)
    inputs = signature.inputs.to_dict()
    if any(spec.get("type") == "tensor" for spec in inputs):
        return []  # one tensor, not columns: `_tensor`
    columns = []
    for spec in inputs:
        if "name" not in spec:
            raise DeployctlError(f"The model at {redact(uri)} has unnamed signature columns.", fix)
        if spec["type"] not in COLUMN_DTYPES:
            raise DeployctlError(
                f"Column '{spec['name']}' has type '{spec['type']}', which deployctl cannot serve.",
                f"Supported column types: {', '.join(COLUMN_DTYPES)}.",
            )
        columns.append(Column(spec["name"], spec["type"], bool(spec.get("required", True))))
    return columns


# numpy kinds of the tensor dtypes served: floats, signed and unsigned integers, booleans
TENSOR_KINDS = "fiub"


def _tensor(mlmodel: Any, uri: str) -> dict[str, Any] | None:
    """A tensor signature's one unnamed tensor, {"dtype", "shape"}; None for a column signature."""
    inputs = mlmodel.signature.inputs.to_dict()
    if not any(spec.get("type") == "tensor" for spec in inputs):
        return None
    import numpy as np

    fix = (
        "Log the model with one unnamed tensor input whose first dimension is the batch: "
        "signature=mlflow.models.infer_signature(X, model.predict(X)) for a numpy array X, or "
        "with a DataFrame input example to get named columns."
    )
    if len(inputs) != 1 or "name" in inputs[0]:
        names = [spec.get("name") for spec in inputs]
        raise DeployctlError(
            f"The model at {redact(uri)} takes {len(inputs)} named tensors {names}; deployctl serves "
            "a model of one unnamed tensor.",
            fix,
        )
    spec = inputs[0]["tensor-spec"]
    dtype, shape = np.dtype(spec["dtype"]), [int(d) for d in spec["shape"]]
    if dtype.kind not in TENSOR_KINDS or not shape or shape[0] != -1:
        raise DeployctlError(
            f"The model at {redact(uri)} takes a {dtype.name} tensor of shape {tuple(shape)}; "
            "deployctl serves number and boolean tensors whose first dimension is -1 (the batch).",
            fix,
        )
    return {"dtype": dtype.name, "shape": shape}


def _params(mlmodel: Any, uri: str) -> list[dict[str, Any]]:
    """The signature's params as the runtime checks them (app/params.py): name, type, shape, default."""
    schema = mlmodel.signature.params if mlmodel.signature is not None else None
    if schema is None:
        return []
    params = []
    for spec in schema.to_dict():
        shape = spec.get("shape")
        if spec["type"] not in PYTHON_TYPES or shape not in (None, (-1,), [-1]):
            raise DeployctlError(
                f"The model at {redact(uri)} has a param '{spec['name']}' of type '{spec['type']}'"
                f"{f' and shape {tuple(shape)}' if shape else ''}, which deployctl cannot serve.",
                f"Params of type {', '.join(PYTHON_TYPES)}, as one value or a 1-D list, are served: "
                "log the model with infer_signature(X, y, params={...}) holding such values.",
            )
        default = spec["default"]
        params.append(
            {
                "name": spec["name"],
                "type": spec["type"],
                "shape": None if shape is None else [-1],
                "default": default.tolist() if hasattr(default, "tolist") else default,
            }
        )
    return params


def _example_rows(mlmodel: Any, path: Path) -> list[Any]:
    try:
        example = mlmodel.load_input_example(str(path))
    except Exception:  # a broken example must not block a deployment; smoke rows fall back
        return []
    if hasattr(example, "ndim") and hasattr(example, "tolist"):  # a tensor's examples
        return list(example[:5].tolist()) if example.ndim > 1 else []
    if example is None or not hasattr(example, "to_json"):
        return []
    return json.loads(example.head(5).to_json(orient="records"))


def _requirements(path: Path) -> list[str]:
    req = path / "requirements.txt"
    if not req.is_file():
        return []
    lines = (line.strip() for line in req.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def _native(flavors: dict[str, Any], flavor: str) -> bool:
    conf = flavors.get(flavor)
    if not isinstance(conf, dict):
        return False
    return flavor == "sklearn" or conf.get("model_class") in NATIVE_MODEL_CLASSES.get(flavor, ())


def _loader(mlmodel: Any, flavor: str) -> dict[str, Any]:
    """How the runtime loads the model (app/scoring.py load_model), from the flavor's MLmodel entry.

    lightgbm's sklearn-API models are stored as sklearn's are (skops by default; `data` names the
    file); xgboost's as the library's own format (`model_format`: ubj, json), loaded into an
    instance of `model_class`."""
    if flavor == "python_function":
        return {"kind": "pyfunc"}
    conf = mlmodel.flavors[flavor]
    if flavor == "xgboost":
        return {"kind": "xgboost", "file": conf["data"], "model_class": conf["model_class"]}
    return {
        "kind": flavor,
        "file": conf["pickled_model"] if flavor == "sklearn" else conf["data"],
        "format": conf.get("serialization_format", "cloudpickle"),
        "trusted_types": list(conf.get("skops_trusted_types") or []),
    }


def _quiet_mlflow() -> None:
    """MLflow retries an unreachable server for minutes and logs DB migrations: fail fast, quietly."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)


class _registry_errors:
    """Turn connection failures and MLflow errors into messages that name the registry."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        """Never swallows: re-raises as one of ours, or lets the exception through."""
        if exc is None or isinstance(exc, DeployctlError):
            return
        from mlflow.exceptions import MlflowException

        text = str(exc)
        first_line = text.splitlines()[0] if text.strip() else type(exc).__name__
        if isinstance(exc, (OSError, ConnectionError)) or "Max retries" in text or "connect" in text.lower():
            raise RegistryUnreachable(
                f"Cannot reach the tracking server at {redact(self.tracking_uri)}.",
                "Check that the server runs and the URI is right (--tracking-uri or MLFLOW_TRACKING_URI).",
            ) from exc
        if isinstance(exc, MlflowException):
            raise ModelNotFound(
                f"MLflow could not resolve the model: {redact(first_line)}",
                "Check the model URI with `deployctl inspect`.",
            ) from exc
        return
