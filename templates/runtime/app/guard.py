"""The two steps at the door of every HTTP adapter: a bearer token (when configured), and a bound
on the requests in progress, past which a request is refused at once instead of queued.

Authentication is off unless configured, and the tokens themselves never reach the service:
- AUTH_TOKEN_SHA256: comma-separated lowercase hex SHA-256 digests of the accepted tokens;
- AUTH_TOKENS_FILE: a file (e.g. a mounted Kubernetes Secret) with one digest a line, `#` comments.
A request then needs `Authorization: Bearer <token>`; a missing or wrong one is a 401 JSON answer
with `WWW-Authenticate: Bearer`. The probes (/health, /health/live, /health/ready, /ping,
/v2/health/*) stay open; /metrics too, unless METRICS_AUTH=1. The token's digest is compared with
every accepted digest in constant time (hmac.compare_digest), so the time taken says nothing of
how close a guess was.

Overload: `InFlight` counts the requests a worker has admitted and not answered; past MAX_IN_FLIGHT
a request is answered at once with 503 JSON and `Retry-After` (never queued without bound). The
adapter gives the default, sized from its worker model (see the README's "Security" section).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from pathlib import Path

from .schema import BadRequest

# Paths a load balancer, a kubelet or a platform probes without credentials.
OPEN_PATHS = frozenset(
    variant
    for path in ("/health", "/health/live", "/health/ready", "/ping", "/v2/health/live", "/v2/health/ready")
    for variant in (path, path + "/")
)
METRICS_PATHS = frozenset({"/metrics", "/metrics/"})
DIGEST = re.compile(r"^[0-9a-f]{64}$")
# Seconds a refused client is asked to wait: a worker at its bound frees a slot within a request's time.
RETRY_AFTER = "1"
UNAUTHORIZED_HEADERS = (("WWW-Authenticate", "Bearer"),)
OVERLOADED_HEADERS = (("Retry-After", RETRY_AFTER),)


class ConfigError(Exception):
    """The authentication settings cannot be used: the service refuses to start rather than run open."""


class Auth:
    """Bearer tokens, checked against their SHA-256 digests. `enabled` is False when none is configured."""

    def __init__(self, digests: list[bytes], metrics_open: bool = True) -> None:
        self.digests = digests
        self.enabled = bool(digests)
        self.open_paths = OPEN_PATHS if not metrics_open else OPEN_PATHS | METRICS_PATHS

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Auth:
        texts = environ.get("AUTH_TOKEN_SHA256", "").split(",")
        file = environ.get("AUTH_TOKENS_FILE", "")
        if file:
            try:
                texts += Path(file).read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"AUTH_TOKENS_FILE {file} cannot be read: {exc.strerror}") from None
        digests = []
        for number, text in enumerate(texts, 1):
            text = text.split("#", 1)[0].strip()
            if not text:
                continue
            if not DIGEST.match(text):  # never quoted: it may be a token pasted by mistake
                raise ConfigError(
                    f"accepted token digest #{number} is not 64 lowercase hex characters (a SHA-256 "
                    "digest); configure digests, never the tokens (`deployctl token` makes both)"
                )
            digests.append(bytes.fromhex(text))
        return cls(digests, metrics_open=environ.get("METRICS_AUTH", "0") != "1")

    def refuse(self, path: str, authorization: str | None) -> BadRequest | None:
        """None when the request may go on, else the 401 to answer."""
        if not self.enabled or path in self.open_paths:
            return None
        if not authorization:
            return BadRequest("authentication required: send 'Authorization: Bearer <token>'", 401)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return BadRequest("authentication required: send 'Authorization: Bearer <token>'", 401)
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        accepted = False
        for known in self.digests:  # every digest compared: no early exit to time
            accepted |= hmac.compare_digest(digest, known)
        return None if accepted else BadRequest("the bearer token is not accepted", 401)


class InFlight:
    """The requests a worker has admitted and not yet answered, bounded by `limit`.

    Used from one thread per worker (the event loop; gunicorn's main thread), so plain integers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    @classmethod
    def from_environ(cls, default: int, environ: Mapping[str, str] = os.environ) -> InFlight:
        raw = environ.get("MAX_IN_FLIGHT", "").strip()
        if not raw:
            return cls(default)
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"MAX_IN_FLIGHT must be a whole number of requests, at least 1; got '{raw}'")
        return cls(int(raw))

    def admit(self) -> bool:
        """Count one more request in progress, or False (it must be refused) at the bound."""
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def release(self) -> None:
        self.count -= 1

    def overloaded(self) -> BadRequest:
        return BadRequest(
            f"overloaded: {self.limit} requests in progress on this worker; retry after {RETRY_AFTER} s", 503
        )


def headers_for(status: int) -> tuple[tuple[str, str], ...]:
    """The headers a refusal carries beside its JSON body: the challenge of a 401, the wait of a 503."""
    if status == 401:
        return UNAUTHORIZED_HEADERS
    if status == 503:
        return OVERLOADED_HEADERS
    return ()


def token_digest(token: str) -> str:
    """The lowercase hex SHA-256 digest of a token: what AUTH_TOKEN_SHA256 lists."""
    return hashlib.sha256(token.encode()).hexdigest()
