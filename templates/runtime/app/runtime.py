"""The serving runtime every deployctl artifact carries: the names adapters and users import.

The serving logic is the package `app/`, which does not import deployctl: load the bundled model
once, validate requests against the model's signature, predict, and answer the HTTP contract
(/health, /predict, /predict_batch, /invocations, /v2/..., /metrics). The Flask, FastAPI, Lambda and
Cloud Functions entry points are thin adapters that move bytes in and out of `ModelService.handle`.

- app/schema.py: validation of rows against the signature, the model's input (`Schema`);
- app/tensors.py: the same for a tensor signature (`TensorSchema`), chosen from the manifest;
- app/params.py: the signature's params, checked per request (`Params`);
- app/outputs.py: the model's predictions as JSON (shared with deployctl's smoke-test recorder);
- app/scoring.py: loading the model and calling it the fastest exact way (`Scorer`);
- app/service.py: the HTTP contract, parsing (`ModelService`);
- app/mlflow_protocol.py: `/invocations` parsed as `mlflow models serve` parses it;
- app/batching.py: the Calls of several requests or records scored in one model call;
- app/oip.py: the Open Inference Protocol v2 (/v2/...); app/metrics.py: Prometheus metrics;
- app/logs.py: JSON log lines and the access log; app/jsonio.py: JSON in and out;
- app/guard.py: bearer-token authentication and the bound on requests in progress;
- app/capture.py: traffic capture, a record of each request and its answer (CAPTURE).

This module is the stable facade: import from `app.runtime`, not from the modules behind it.
"""

from __future__ import annotations

from .batching import score_together
from .capture import REDACTED, SCHEMA_VERSION, Capture, kafka_properties, request_id
from .guard import OPEN_PATHS, RETRY_AFTER, Auth, ConfigError, InFlight, headers_for, token_digest
from .jsonio import JSONDecodeError, dumps, loads
from .logs import ACCESS, AccessLog, JsonFormatter, configure_logging, log, log_request
from .metrics import Deferred, Metrics
from .oip import OpenInference, is_oip_path
from .schema import (
    CHECKS,
    COLUMN_TYPES,
    DTYPES,
    MAX_BATCH_ROWS,
    MAX_BODY_BYTES,
    PYTYPES,
    BadRequest,
    Check,
    Schema,
)
from .scoring import ARGMAX_CLASSIFIERS, FEATURE_NAMES_WARNING, FORK_UNSAFE, Scorer, fork_safe, load_model
from .service import ROOT, Call, ModelService, Scored, error_body, failure, status_of

__all__ = [
    "ACCESS",
    "ARGMAX_CLASSIFIERS",
    "CHECKS",
    "COLUMN_TYPES",
    "DTYPES",
    "FEATURE_NAMES_WARNING",
    "FORK_UNSAFE",
    "MAX_BATCH_ROWS",
    "MAX_BODY_BYTES",
    "OPEN_PATHS",
    "PYTYPES",
    "REDACTED",
    "RETRY_AFTER",
    "ROOT",
    "SCHEMA_VERSION",
    "AccessLog",
    "Auth",
    "BadRequest",
    "Call",
    "Capture",
    "Check",
    "ConfigError",
    "Deferred",
    "InFlight",
    "JSONDecodeError",
    "JsonFormatter",
    "Metrics",
    "ModelService",
    "OpenInference",
    "Schema",
    "Scored",
    "Scorer",
    "configure_logging",
    "dumps",
    "error_body",
    "failure",
    "fork_safe",
    "headers_for",
    "is_oip_path",
    "kafka_properties",
    "load_model",
    "loads",
    "log",
    "log_request",
    "request_id",
    "score_together",
    "status_of",
    "token_digest",
]
