"""The model inside this package: `model.predict(...)` answers as the HTTP service's POST /predict.

The work is done by the serving runtime every deployctl artifact carries (`app/`, bundled here):
validation against the model's signature, the model call, the answer's shape. This module turns
its refusals into `ValidationError` and loads the model on first use, so importing the package
stays fast (numpy, pandas and the model's library are imported by `load()`, not by `import`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import pandas as pd

    from .app.service import ModelService

ROOT = Path(__file__).resolve().parent
F = TypeVar("F", bound=Mapping[str, Any])


def _missing(value: Any) -> bool:
    """A pandas missing value (NaN, None, pd.NA): in a frame, that is a value left out."""
    return value is None or (type(value) is float and value != value) or type(value).__name__ == "NAType"


class ValidationError(ValueError):
    """Input the HTTP service would refuse, with the message it answers; `status` is its HTTP status
    (400 invalid, 413 too many rows, 422 a value the model itself rejects)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class EmbeddedModel(Generic[F]):
    """The bundled model. `F` is the package's `Features` TypedDict: one row keyed by column name."""

    def __init__(self, root: Path = ROOT) -> None:
        self._root = root
        self._service: ModelService | None = None
        self._manifest: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # -- what the model is, without loading it --------------------------------------------------

    @property
    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            self._manifest = json.loads((self._root / "deployctl.json").read_text())
        return self._manifest

    @property
    def name(self) -> str:
        return str(self.manifest["model"]["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["model"]["version"])

    @property
    def signature(self) -> dict[str, Any]:
        """{"columns": [{"name", "type", "required"}, ...] in signature order, "task", "classes"}."""
        meta = self.manifest["model"]
        return {
            "columns": [dict(c) for c in meta["columns"]],
            "task": meta["task"],
            "classes": meta["classes"],
        }

    # -- the model --------------------------------------------------------------------------------

    def load(self) -> EmbeddedModel[F]:
        """Load the model now (else on first use): at start-up, so no caller pays for it."""
        if self._service is None:
            with self._lock:  # two threads' first calls load it once
                if self._service is None:
                    from .app.service import ModelService

                    # the user's process: its collector is not the package's to change
                    self._service = ModelService.from_artifact(self._root, own_process=False)
        return self

    @property
    def service(self) -> ModelService:
        """The runtime's ModelService (the HTTP contract without HTTP), loaded."""
        self.load()
        assert self._service is not None
        return self._service

    def predict(self, features: F | Sequence[Any]) -> dict[str, Any]:
        """One row (keyed by column, or a list in signature order) -> what POST /predict answers:
        {"prediction": ..., "probability": p (binary) or "probabilities": {...}, "model_version": ...}."""
        return self._answer("/predict", {"features": features})

    def predict_batch(self, rows: Sequence[F] | Sequence[Sequence[Any]]) -> dict[str, Any]:
        """Rows -> what POST /predict_batch answers: {"predictions": [...], "probabilities": [...]}.
        At most MAX_BATCH_ROWS rows (10,000 unless set), as the service: `predict_frame` has no limit."""
        return self._answer("/predict_batch", {"instances": list(rows)})

    def predict_frame(self, frame: pd.DataFrame, chunk_rows: int = 5000) -> pd.DataFrame:
        """A DataFrame of the signature's columns -> a DataFrame on the same index with `prediction`
        and, for a classifier, `probability` (binary) or one `probability_<class>` per class."""
        try:
            import pandas as pd
        except ImportError:  # an ONNX model's package scores without it: pandas is an extra
            raise ImportError(
                f"predict_frame needs pandas: pip install '{self.manifest['name']}[pandas]'"
            ) from None

        answers: list[dict[str, Any]] = []
        for rows in self._rows_of(frame, chunk_rows):
            answers.append(self._answer("/predict_batch", {"instances": rows}))
        labels = [label for answer in answers for label in answer["predictions"]]
        columns: dict[str, Any] = {"prediction": labels}
        probabilities = [p for answer in answers for p in answer.get("probabilities", [])]
        if probabilities and isinstance(probabilities[0], dict):
            for key in probabilities[0]:
                columns[f"probability_{key}"] = [p[key] for p in probabilities]
        elif probabilities:
            columns["probability"] = probabilities
        return pd.DataFrame(columns, index=frame.index)

    def _rows_of(self, frame: pd.DataFrame, chunk_rows: int) -> Iterator[list[list[Any]]]:
        """Rows validated one by one (the error names the frame's index label), in chunks."""
        records = frame.to_dict(orient="records")
        for start in range(0, len(records), chunk_rows):
            chunk = []
            for label, record in zip(
                frame.index[start : start + chunk_rows], records[start : start + chunk_rows]
            ):
                row = {key: None if _missing(value) else value for key, value in record.items()}
                chunk.append(self.validate(row, f"row {label!r}"))
            yield chunk

    def validate(self, row: Any, where: str = "features") -> list[Any]:
        """One row checked as the service checks it: its values in signature order, or ValidationError."""
        from .app.schema import BadRequest

        try:
            return self.service.schema.row(row, where)
        except BadRequest as exc:
            raise ValidationError(exc.message, exc.status) from None

    def _answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        from .app.schema import BadRequest

        service = self.service
        try:
            return service.answer(path, body)
        except BadRequest as exc:
            raise ValidationError(exc.message, exc.status) from None
