"""Secrets and host paths never leave this machine: one place that cleans every URI deployctl shows.

`redact(text)` is for everything printed or logged (messages, `inspect`): the text stays readable,
every credential in it becomes `***`. `public_uri(uri)` is for everything written into an artifact
(manifest, and from there images, zips, READMEs, labels): it keeps only what identifies the
source (scheme, host, port, registry path) and reduces a host file path to its base name.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

MASK = "***"

# A `key=value` whose key names a secret (case-insensitive): `token`, `access_token`, `api_key`,
# `apikey`, `key`, `AccountKey`, `secret`, `client_secret`, `password`, `pwd`, `sig`, `signature`,
# `X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`, `code`, ... The name is kept.
_SECRET_KEY = (
    r"[\w.-]*(?:token|secret|passw(?:or)?d|pwd|key|sig|signature|credentials?|auth|authorization)"
    r"|code"
)
_KEY_VALUE = re.compile(r"(?i)(?<![\w.-])(" + _SECRET_KEY + r")=([^&#;\s'\"<>]+)")
# Values that are secrets wherever they appear, whatever surrounds them.
_TOKENS = re.compile(
    r"dapi[0-9a-fA-F]{32}(?:-\d+)?"  # Databricks personal access token
    r"|(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}=="  # Azure storage account key (64 bytes, base64)
    r"|(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub token
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # JWT (bearer tokens)
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URI_END = re.compile(r"[\s'\"<>`]")


def redact(text: str | None) -> str | None:
    """Mask every credential in `text`: a URI, or a message that contains URIs.

    Userinfo is masked up to the LAST `@` of the authority (a password may hold `@`, `:` or even
    an unescaped `/`), token-like query parameters keep their name, known token formats
    (Databricks, Azure keys, AWS key ids, GitHub, JWT) are masked anywhere.
    """
    if text is None:
        return None
    parts: list[str] = []
    pos = 0
    for match in _SCHEME.finditer(text):
        if match.start() < pos:
            continue
        start = match.end()
        end_match = _URI_END.search(text, start)
        end = end_match.start() if end_match else len(text)
        parts.append(text[pos:start])
        parts.append(_mask_userinfo(text[start:end]))
        pos = end
    parts.append(text[pos:])
    masked = _KEY_VALUE.sub(lambda m: f"{m.group(1)}={MASK}", "".join(parts))
    return _TOKENS.sub(MASK, masked)


def _mask_userinfo(rest: str) -> str:
    """`rest` is what follows `scheme://`: mask `user:password@` at its start."""
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        return f"{MASK}@{rest[authority.rindex('@') + 1 :]}"
    # `user:pa/ss@host`: an unescaped / ? or # in the password ends the authority early. A colon
    # followed by something that is no port, then an @ further on, is such a password.
    head, colon, port = authority.rpartition(":")
    if colon and head and not port.isdigit() and not authority.startswith("[") and "@" in rest:
        first_at = rest.index("@")
        query = re.search(r"[?#]", rest[first_at:])
        at = rest.rindex("@", 0, first_at + query.start() if query else len(rest))
        return f"{MASK}@{rest[at + 1 :]}"
    return rest


def public_uri(uri: str | None) -> str | None:
    """What an artifact may record about a URI: no credentials, no absolute host path.

    - a local path or `file:` URI -> its base name (`/home/me/models/churn` -> `churn`)
    - `sqlite:////abs/dir/mlflow.db` -> `sqlite:///mlflow.db` (the db file's base name)
    - a network URI -> scheme://host[:port][/path], without userinfo, query or fragment
    - `models:/`, `runs:/`, `mlflow-artifacts:/` and other registry URIs: kept, redacted
    """
    if uri is None:
        return None
    return redact(_public(uri.strip()))


def _public(text: str) -> str:
    scheme = text.split(":", 1)[0].lower() if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", text) else ""
    if not scheme or scheme == "file":
        path = urlsplit(text).path if scheme else text
        return _basename(path) or ("file" if scheme else "")
    if scheme == "sqlite" or scheme.startswith("sqlite+"):
        name = _basename(urlsplit(text).path)
        return f"{scheme}:///{name}" if name else f"{scheme}://"
    if "://" not in text:  # models:/name@alias, runs:/id/path, mlflow-artifacts:/x, dbfs:/x
        return text.split("?", 1)[0].split("#", 1)[0]
    rest = _mask_userinfo(text.split("://", 1)[1])
    rest = rest.split(f"{MASK}@", 1)[1] if rest.startswith(f"{MASK}@") else rest
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    return f"{scheme}://{rest}".rstrip("/")


def _basename(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/").rstrip("/")).name
