"""Loading the bundled model, and calling it (`Scorer`).

Per request, the cost is in the model call (scikit-learn checks its input on every call, and far
more slowly for a DataFrame than for an array), not in the arithmetic. So the way the model is
called is chosen once, at load (`Scorer.fastest`): the fastest way that gives bit-for-bit the
answers the model gives on a DataFrame of the smoke-test rows.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .logs import log
from .outputs import per_row
from .schema import BadRequest
from .tensors import InputSchema

# sklearn warns on every call when an array replaces the DataFrame a model was fitted on. The
# array path is only taken after checking the columns match by name and order, so it is noise.
FEATURE_NAMES_WARNING = "X does not have valid feature names"


def _is_sklearn(obj: Any, module: str, name: str) -> bool:
    """isinstance without importing scikit-learn for models that do not use it."""
    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(obj, cls)


# Classifiers whose predict() is the class of highest predict_proba() (their own code, or an argmax
# of a score that predict_proba maps monotonically; a tie is asked again with predict, see
# Scorer._labels). Not e.g. SVC (Platt scaling) or threshold-tuned classifiers.
ARGMAX_CLASSIFIERS = {
    "sklearn.linear_model._logistic": ("LogisticRegression", "LogisticRegressionCV"),
    "sklearn.tree._classes": ("DecisionTreeClassifier", "ExtraTreeClassifier"),
    "sklearn.ensemble._forest": ("RandomForestClassifier", "ExtraTreesClassifier"),
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting": ("HistGradientBoostingClassifier",),
}


def _argmax_classifier(model: Any) -> bool:
    names = ARGMAX_CLASSIFIERS.get(type(model).__module__, ())
    return type(model).__name__ in names and getattr(model, "n_outputs_", 1) == 1


class Scorer:
    """Calls the model on validated rows; the options say how, and are chosen by `Scorer.fastest`.

    - array: an array instead of a DataFrame (scikit-learn checks an array several times faster);
    - shortcuts: a Pipeline's transformers run once for predict and predict_proba, not twice, and
      an argmax classifier's labels come from its probabilities instead of a second model call;
    - sklearn's per-call checks that validation already made (finite numbers) are skipped.
    """

    def __init__(
        self,
        model: Any,
        schema: InputSchema,
        *,
        array: bool = False,
        shortcuts: bool = False,
        convert: Callable[[Any], Any] = per_row,
    ) -> None:
        self.model = model
        self.convert = convert  # the model's output as JSON values (app/outputs.py)
        self.schema = schema
        self.array = array
        self.shortcuts = shortcuts
        # an ONNX model takes the validated rows as they are (no DataFrame, so no pandas)
        self.rows = getattr(model, "takes_rows", False)
        self.head: Any
        self.final: Any
        self.head, self.final = _split_pipeline(model) if shortcuts else (None, model)
        has_proba = hasattr(model, "predict_proba") and hasattr(model, "classes_")
        self.classes: np.ndarray[Any, Any] | None = np.asarray(model.classes_) if has_proba else None
        self.from_proba = shortcuts and _argmax_classifier(self.final)
        self.takes_params = "params" in inspect.signature(self.final.predict).parameters
        self.options = f"{'array' if array else 'DataFrame'} input{', shortcuts' if shortcuts else ''}"

    @classmethod
    def fastest(cls, model: Any, schema: InputSchema, probe: list[list[Any]]) -> Scorer:
        """The fastest options that answer the probe rows exactly as the model does on a DataFrame."""
        reference = cls(model, schema)
        if reference.rows:  # one way to call it: nothing to choose
            return reference
        candidates = [cls(model, schema, shortcuts=True)]
        if schema.array_dtype is not None and _names_match(model, schema.names):
            candidates.insert(0, cls(model, schema, array=True, shortcuts=True))
        # as one batch and row by row: sklearn itself may differ in the last bit between the two
        batches = [probe, *([row] for row in probe)] if probe else []
        try:
            expected = [reference.score(rows) for rows in batches]
        except BadRequest:  # the model refuses its own examples: keep to the plain way
            batches = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", FEATURE_NAMES_WARNING, UserWarning)
            agreeing = (c for c in candidates if batches and _same_answers(c, batches, expected))
            chosen = next(agreeing, reference)
        if chosen.array:
            warnings.filterwarnings("ignore", FEATURE_NAMES_WARNING, UserWarning)
        return chosen

    def score(
        self, rows: list[list[Any]], probabilities: bool = True, params: dict[str, Any] | None = None
    ) -> tuple[list[Any], Any]:
        """(labels, probabilities or None) for validated rows (and checked params, given to a model
        whose predict takes them, as MLflow's scoring server does); BadRequest(422) if the model
        refuses."""
        try:
            with self._checks_done():
                if self.rows:
                    inputs: Any = rows
                else:
                    inputs = self.schema.array(rows) if self.array else self.schema.frame(rows)
                if self.head is not None:
                    inputs = self.head.transform(inputs)
                probas = None
                if probabilities and self.classes is not None:
                    probas = self.final.predict_proba(inputs)
                return self._labels(inputs, probas, params), probas
        except Exception as exc:  # e.g. a category the encoder never saw: the input's fault
            log.warning("model refused input: %s", exc)
            raise BadRequest(f"the model could not score this input: {exc}", 422) from None

    def agrees_in_batches(self, rows: list[list[Any]]) -> bool:
        """Whether rows scored together get the labels they get one by one, and the same numbers
        within 1e-12 relative (BLAS may sum a batch in another order: the last bit can differ)."""
        try:
            labels, probas = self.score(rows)
            alone = [self.score([row]) for row in rows]
        except BadRequest:
            return False
        if len(rows) < 2 or not _close(labels, [label for one, _ in alone for label in one]):
            return False
        return probas is None or _close(probas, np.concatenate([one for _, one in alone]))

    def _labels(self, inputs: Any, probas: Any, params: dict[str, Any] | None = None) -> list[Any]:
        if probas is None or not self.from_proba or self.classes is None:
            return self.convert(self._predict(inputs, params))
        best = probas.argmax(axis=1)
        top = probas[np.arange(len(best)), best]
        if np.count_nonzero(probas == top[:, None]) > len(best):  # a tie: let the model decide
            return self.convert(self._predict(inputs, params))
        return self.classes.take(best).tolist()

    def _predict(self, inputs: Any, params: dict[str, Any] | None) -> Any:
        if params is None or not self.takes_params:
            return self.final.predict(inputs)
        return self.final.predict(inputs, params=params)

    def _checks_done(self) -> contextlib.AbstractContextManager[Any]:
        """Skip sklearn's finiteness check: validation refused NaN and inf in required columns."""
        sklearn = sys.modules.get("sklearn")
        if sklearn is None or not self.schema.all_required:
            return contextlib.nullcontext()
        return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)


def _close(a: Any, b: Any) -> bool:
    """Equal, or for numbers equal within 1e-12 relative (1e-15 absolute for probabilities ~0)."""
    if isinstance(a, list) and a == b:
        return True
    try:
        return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-12, atol=1e-15))
    except (TypeError, ValueError):  # string labels that differ
        return False


def _split_pipeline(model: Any) -> tuple[Any, Any]:
    """(the transformers, the final estimator) of a scikit-learn Pipeline, else (None, model)."""
    if not _is_sklearn(model, "sklearn.pipeline", "Pipeline") or len(model.steps) < 2:
        return None, model
    final = model.steps[-1][1]
    if not hasattr(final, "predict"):  # "passthrough" or a transformer: nothing to split
        return None, model
    return model[:-1], final


def _names_match(model: Any, names: list[str]) -> bool:
    """An array is matched to columns by position: the model's fitted names must be in that order."""
    fitted = getattr(model, "feature_names_in_", None)
    return fitted is None or list(fitted) == names


def _same_answers(scorer: Scorer, batches: list[list[list[Any]]], expected: list[Any]) -> bool:
    """Bit-for-bit the labels and probabilities the reference gave for the same batches."""
    for rows, (labels, probas) in zip(batches, expected):
        try:
            got_labels, got_probas = scorer.score(rows)
        except BadRequest:
            return False
        if got_labels != labels or not (probas is None or np.array_equal(got_probas, probas)):
            return False
    return True


# The XGBoost scikit-learn-API classes served natively (MLmodel's model_class -> xgboost's name).
XGBOOST_CLASSES = {
    "xgboost.sklearn.XGBClassifier": "XGBClassifier",
    "xgboost.sklearn.XGBRegressor": "XGBRegressor",
    "xgboost.sklearn.XGBRFClassifier": "XGBRFClassifier",
    "xgboost.sklearn.XGBRFRegressor": "XGBRFRegressor",
}
# Loaders whose library starts a native thread pool (OpenMP) on first use: a process that forks
# after using it gets children that hang in their first model call. Servers that fork (gunicorn)
# load such models in each worker, after the fork (`fork_safe`).
FORK_UNSAFE = ("lightgbm", "xgboost")


def fork_safe(loader: dict[str, Any]) -> bool:
    """Whether a process may load and warm this model, then fork workers that use it."""
    return loader["kind"] not in FORK_UNSAFE


def load_model(loader: dict[str, Any], model_dir: Path) -> Any:
    """Load the model natively (so classifiers keep predict_proba), else through MLflow pyfunc."""
    if loader["kind"] == "onnx":  # --engine onnx: converted at generate, run by onnxruntime
        from .onnx_engine import OnnxModel

        return OnnxModel(model_dir / loader["file"], loader.get("classes"))
    if loader["kind"] == "pyfunc":
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(str(model_dir))
    path = model_dir / loader["file"]
    if loader["kind"] == "xgboost":
        import xgboost

        model = getattr(xgboost, XGBOOST_CLASSES[loader["model_class"]])()
        model.load_model(path)
        return model
    if loader["format"] == "skops":
        import skops.io

        return skops.io.load(path, trusted=loader.get("trusted_types") or None)
    with open(path, "rb") as fh:
        if loader["format"] == "cloudpickle":
            import cloudpickle

            return cloudpickle.load(fh)
        import pickle

        return pickle.load(fh)
