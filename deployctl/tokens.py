"""Bearer tokens for the runtime's authentication (the artifact's app/guard.py).

The service is configured with the SHA-256 digest of each accepted token (AUTH_TOKEN_SHA256 or
AUTH_TOKENS_FILE), never with the token itself: a manifest, an environment dump or a log line
then gives nothing that can call the service.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

TOKEN_BYTES = 32  # 256 bits of randomness: not guessable, so one SHA-256 round is enough


@dataclass(frozen=True)
class Token:
    token: str
    sha256: str


def new_token() -> Token:
    """A random URL-safe token and its lowercase hex SHA-256 digest (what the service is given)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return Token(token, hashlib.sha256(token.encode()).hexdigest())
