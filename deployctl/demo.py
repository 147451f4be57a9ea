"""The main job on the embedded default: a local sqlite registry, a demo model, one deployment."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from deployctl.errors import UsageError

MODEL_NAME = "fraud_detector"
CATEGORIES = ["grocery", "travel", "electronics", "gaming", "fuel"]


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


def train_and_register(tracking_uri: str, name: str = MODEL_NAME, alias: str = "production") -> str:
    """Fit a scaling + one-hot + logistic-regression pipeline and register it under `alias`."""
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
    mlflow.set_experiment("fraud-detection")
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

    out = workdir / f"{target}-artifact"
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} already exists.", f"Remove {workdir} or pass another --workdir.")
    workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    _quiet_mlflow()
    with console.status("Training and registering the demo fraud model"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's hints about integer columns are not for demo users
        version = train_and_register(tracking_uri)
    uri = f"models:/{MODEL_NAME}@production"
    console.print(f"[green]1/4[/] registered {MODEL_NAME} version {version} as @production in {tracking_uri}")
    with console.status(f"Generating the {target} artifact"):
        artifact = generate(uri, target, out, tracking_uri=tracking_uri)
    console.print(f"[green]2/4[/] generated {out}")
    facts = get_target(target).build(artifact, console)
    console.print(f"[green]3/4[/] built {out}: {facts}")
    smoke_test(out, timeout=120.0, as_json=False)
    console.print(
        f"[green]4/4[/] smoke test passed. Try it:\n"
        f"  deployctl serve {out} --port 8000\n"
        "  curl -s localhost:8000/predict -H 'content-type: application/json' "
        '-d \'{"features": {"amount": 950.0, "hour": 3, "merchant_category": '
        '"gaming", "is_foreign": true, "account_age_days": 12}}\'\n'
        f"  MLFLOW_TRACKING_URI={tracking_uri} deployctl inspect --model {uri}"
    )
