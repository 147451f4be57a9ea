"""Build the LightGBM / XGBoost test registry (run in a subprocess by tests/test_flavors.py).

  lgbm_binary      LightGBM LGBMClassifier, labels 0/1 (mlflow.lightgbm)
  xgb_multiclass   XGBoost XGBClassifier, three classes 0/1/2 (mlflow.xgboost)
  lgbm_regressor   LightGBM LGBMRegressor, one integer column (mlflow.lightgbm)
  xgb_booster      a bare XGBoost Booster (xgb.train): no classes_, served through pyfunc

Prints `name=run_id` lines.
"""

from __future__ import annotations

import sys
import warnings

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import infer_signature

warnings.filterwarnings("ignore")


def frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x0": rng.normal(size=n),
            "x1": rng.normal(size=n),
            "x2": rng.uniform(0, 10, n),
            "count": rng.integers(0, 5, n),
        }
    )


def log(flavor: object, model: object, X: pd.DataFrame, name: str) -> None:
    with mlflow.start_run() as run:
        flavor.log_model(  # type: ignore[attr-defined]
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),  # type: ignore[attr-defined]
            input_example=X.head(5),
            registered_model_name=name,
        )
    print(f"{name}={run.info.run_id}")


def main(tracking_uri: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("flavors")
    rng = np.random.default_rng(7)
    X = frame(rng, 300)
    binary = (X.x0 + 0.5 * X.x1 > 0).astype(int)
    params = {"n_estimators": 20, "num_leaves": 7, "min_child_samples": 5, "verbose": -1}
    log(mlflow.lightgbm, lgb.LGBMClassifier(**params).fit(X, binary), X, "lgbm_binary")

    three = (X.x0 > -0.4).astype(int) + (X.x2 > 5).astype(int)
    booster = xgb.XGBClassifier(n_estimators=15, max_depth=3, n_jobs=2)
    log(mlflow.xgboost, booster.fit(X, three), X, "xgb_multiclass")

    y = 3 * X.x0 - X.x1 + 0.2 * X.x2 + X["count"] + rng.normal(0, 0.1, len(X))
    log(mlflow.lightgbm, lgb.LGBMRegressor(**params).fit(X, y), X, "lgbm_regressor")

    trained = xgb.train({"max_depth": 2}, xgb.DMatrix(X, label=y), num_boost_round=5)
    with mlflow.start_run() as run:
        mlflow.xgboost.log_model(
            trained,
            name="model",
            signature=infer_signature(X, trained.predict(xgb.DMatrix(X))),
            input_example=X.head(5),
            registered_model_name="xgb_booster",
        )
    print(f"xgb_booster={run.info.run_id}")


if __name__ == "__main__":
    main(sys.argv[1])
