"""The ONNX tests' extra registry (run in a subprocess by tests/test_onnx.py): real models, real MLflow.

imputed_pipeline  imputers + scaler + one-hot in a ColumnTransformer, logistic regression
                  (trained on rows with missing values; skl2onnx converts it)
kernel_ridge      a KernelRidge regressor: skl2onnx has no converter for it
"""

from __future__ import annotations

import sys
import warnings

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

warnings.filterwarnings("ignore")


def log(model: object, X: pd.DataFrame, name: str, **kwargs: object) -> None:
    example = X.dropna().head(4)
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict(example)),  # type: ignore[attr-defined]
            input_example=example,
            registered_model_name=name,
            **kwargs,
        )


def main(tracking_uri: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    rng = np.random.default_rng(1)
    X = pd.DataFrame(
        {
            "income": rng.normal(50, 15, 300),
            "debt": rng.normal(10, 5, 300),
            "region": rng.choice(["north", "south", "east"], 300),
        }
    )
    y = (X.income - 2 * X.debt + (X.region == "south") * 10 + rng.normal(0, 5, 300)) > 30
    X.loc[rng.choice(300, 30, replace=False), "income"] = np.nan
    features = ColumnTransformer(
        [
            (
                "numbers",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                ["income", "debt"],
            ),
            ("region", OneHotEncoder(handle_unknown="ignore"), ["region"]),
        ]
    )
    model = Pipeline([("features", features), ("classifier", LogisticRegression())]).fit(X, y.astype(int))
    log(model, X, "imputed_pipeline", skops_trusted_types=["numpy.dtype"])  # SimpleImputer's

    numbers = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    log(KernelRidge(alpha=0.5).fit(numbers, numbers.a * 2 - numbers.c), numbers, "kernel_ridge")


if __name__ == "__main__":
    main(sys.argv[1])
