"""JSON in and out: orjson when installed (the generated requirements include it), else json."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

loads: Callable[[bytes | str], Any]

try:  # orjson is several times faster than json and serializes numpy scalars natively
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

    loads = orjson.loads
    JSONDecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - the generated requirements include orjson

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, allow_nan=False).encode()

    loads = json.loads
    JSONDecodeError = json.JSONDecodeError
