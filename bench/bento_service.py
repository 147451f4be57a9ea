"""BentoML's peer in bench/run.py: a minimal service loading the same MLflow model.

What a user writes with BentoML's documented API for a scikit-learn model logged to MLflow: load
it once (MLflow's loader), and answer a JSON list of records with the labels and P(class 1), like
deployctl's /predict_batch. Served by `bentoml serve bento_service:Bench`; the model directory and
the number of workers come from the environment (BENCH_MODEL_DIR, BENCH_WORKERS).
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import mlflow.sklearn
import pandas as pd


@bentoml.service(workers=int(os.environ.get("BENCH_WORKERS", "1")))
class Bench:
    def __init__(self) -> None:
        self.model = mlflow.sklearn.load_model(os.environ["BENCH_MODEL_DIR"])

    @bentoml.api
    def predict(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        frame = pd.DataFrame(rows)
        return {
            "predictions": self.model.predict(frame).tolist(),
            "probabilities": self.model.predict_proba(frame)[:, 1].tolist(),
        }
