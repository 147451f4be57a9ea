"""The model's own in-process call on one row: the term of issue 21's p50 criterion for /predict.

    python bench/model_call.py bench/.work/logreg-fastapi [bench/.work/fraud-fastapi ...]

For each artifact, its model loaded by MLflow's scikit-learn loader (as bench/run.py checks the
answers) and called on the artifact's first recorded row as a user would call it: `predict` and
`predict_proba`, then `predict_proba` alone, on a one-row DataFrame. Also
`predict_proba` on a one-row array where every column is a number, the least a call of this model
can cost (what the service's array path pays). Medians of 2,000 calls after 200 warm-ups, in µs.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # the model loaded as bench/run.py loads it to check the answers

CALLS, WARMUP = 2000, 200


def median_us(call: Callable[[], Any]) -> float:
    for _ in range(WARMUP):
        call()
    times = []
    for _ in range(CALLS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def measure(artifact: Path) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    manifest = json.loads((artifact / "deployctl.json").read_text())
    model = bench.load_model(artifact / "model")
    frame = pd.DataFrame([manifest["smoke_cases"][0]["row"]])
    figures = {
        "model": manifest["model"]["uri"],
        "predict + predict_proba, 1-row DataFrame": median_us(
            lambda: (model.predict(frame), model.predict_proba(frame))
        ),
        "predict_proba, 1-row DataFrame": median_us(lambda: model.predict_proba(frame)),
    }
    if all(dtype.kind in "fiub" for dtype in frame.dtypes):  # an array only where every column is a number
        array = np.asarray(frame, dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fitted with feature names, called without: expected
            figures["predict_proba, 1-row array"] = median_us(lambda: model.predict_proba(array))
    return figures


def main() -> None:
    for artifact in sys.argv[1:]:
        figures = measure(Path(artifact))
        print(figures.pop("model"))
        for name, us in figures.items():
            print(f"  {name}: {us:.0f} µs")


if __name__ == "__main__":
    main()
