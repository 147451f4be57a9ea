"""The main job on a local sqlite registry: a demo model, one deployment, and how to try it."""

from __future__ import annotations

import json
import shlex
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from deployctl.errors import UsageError

MODEL_NAME = "fraud_detector"
CATEGORIES = ["grocery", "travel", "electronics", "gaming", "fuel"]
# A transaction the demo model scores as likely fraud: the example the "Try it" commands send.
FRAUD_ROW = {
    "amount": 950.0,
    "hour": 3,
    "merchant_category": "gaming",
    "is_foreign": True,
    "account_age_days": 12,
}


def synthetic_transactions(n: int = 2000, seed: int = 7) -> tuple[Any, Any]:
    """Card transactions where large, late-night, foreign, risky-merchant payments are fraud."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.5, 1.0, n).round(2),
            "hour": rng.integers(0, 24, n),
            "merchant_category": rng.choice(CATEGORIES, n),
            "is_foreign": rng.random(n) < 0.15,
            "account_age_days": rng.integers(1, 4000, n),
        }
    )
    risk = (
        0.012 * frame.amount
        + 1.5 * frame.hour.isin([0, 1, 2, 3, 4]).astype(float)
        + 1.8 * frame.is_foreign
        + 1.2 * frame.merchant_category.isin(["gaming", "electronics"])
        - 0.0006 * frame.account_age_days
        + rng.normal(0, 0.7, n)
    )
    return frame, (risk > 2.0).astype(int)


def train_and_register(
    tracking_uri: str,
    name: str = MODEL_NAME,
    alias: str = "production",
    artifact_root: Path | None = None,
) -> str:
    """Fit a scaling + one-hot + logistic-regression pipeline and register it under `alias`.

    The run's artifacts go to `artifact_root` (else MLflow's default, ./mlruns in the current
    directory) when the experiment is created."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = synthetic_transactions()
    features = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["amount", "hour", "account_age_days"]),
            ("flags", "passthrough", ["is_foreign"]),
            ("category", OneHotEncoder(handle_unknown="ignore"), ["merchant_category"]),
        ]
    )
    model = Pipeline([("features", features), ("classifier", LogisticRegression(max_iter=500))])
    model.fit(X, y)
    mlflow.set_tracking_uri(tracking_uri)
    experiment = "fraud-detection"
    if artifact_root is not None and mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_root.resolve().as_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run():
        mlflow.log_metric("train_accuracy", float(model.score(X, y)))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(5),
            registered_model_name=name,
        )
    mlflow.MlflowClient(tracking_uri).set_registered_model_alias(name, alias, info.registered_model_version)
    return str(info.registered_model_version)


def run_demo(workdir: Path, target: str, console: Console, smoke_test: Callable[..., None]) -> None:
    from deployctl.generate import generate
    from deployctl.model import _quiet_mlflow
    from deployctl.targets import get as get_target

    target_impl = get_target(target)  # an unknown target fails before any training
    out = workdir / f"{target}-artifact"
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} already exists.", f"Remove {workdir} or pass another --workdir.")
    workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    _quiet_mlflow()
    with console.status("Training and registering the demo fraud model"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's hints about integer columns are not for demo users
        version = train_and_register(tracking_uri, artifact_root=workdir / "mlruns")
    uri = f"models:/{MODEL_NAME}@production"
    console.print(f"[green]1/4[/] registered {MODEL_NAME} version {version} as @production in {tracking_uri}")
    with console.status(f"Generating the {target} artifact"):
        artifact = generate(uri, target, out, tracking_uri=tracking_uri)
    console.print(f"[green]2/4[/] generated {out}")
    facts = target_impl.build(artifact, console)
    console.print(f"[green]3/4[/] built {out}: {facts}")
    smoke_test(out, timeout=120.0, as_json=False)
    try_steps = try_it(target, out, target_impl.serves_http, artifact.name)
    steps = [*try_steps, inspect_command(tracking_uri, uri)]
    console.print("[green]4/4[/] smoke test passed. Try it:\n" + "\n".join(f"  {s}" for s in steps))


def try_it(target: str, out: Path, serves_http: bool, service: str) -> list[str]:
    """Commands that use the demo's artifact, as a user pastes them (one per line)."""
    path = shlex.quote(str(out))
    if target == "embedded":
        from deployctl.targets.embedded import import_name

        row = ", ".join(f"{json.dumps(k)}: {python_literal(v)}" for k, v in FRAUD_ROW.items())
        call = f"from {import_name(service)} import model; print(model.predict({{{row}}}))"
        return [f"python3 -m pip install {path}/dist/*.whl", f"python3 -c {shlex.quote(call)}"]
    if target == "kafka":  # serving needs a broker; the smoke test brings a local one
        return [
            f"deployctl smoke-test {path}",
            f"# with a broker: KAFKA_BOOTSTRAP_SERVERS=HOST:9092 deployctl serve {path}",
        ]
    if not serves_http:
        return [f"deployctl smoke-test {path}"]
    body = shlex.quote(json.dumps({"features": FRAUD_ROW}))
    # --retry-all-errors, not only refused connections: while a container starts, Docker's proxy
    # takes the connection and resets it (curl exit 56), which --retry-connrefused does not retry
    return [
        f"deployctl serve {path} --port 8000 &",
        "curl -s --retry 60 --retry-all-errors --retry-delay 1 localhost:8000/predict "
        f"-H 'content-type: application/json' -d {body}",
        "kill %1  # stops the service",
    ]


def python_literal(value: Any) -> str:
    """A value as Python source with double-quoted strings (the command line quotes it in single ones)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def inspect_command(tracking_uri: str, uri: str) -> str:
    return f"MLFLOW_TRACKING_URI={shlex.quote(tracking_uri)} deployctl inspect --model {shlex.quote(uri)}"
