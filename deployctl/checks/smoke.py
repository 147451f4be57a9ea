"""smoke-test: check that a service answers as the model did in-process.

Two ways in, one path for the checks: `run` starts the built artifact on loopback, `run_remote`
checks a service already deployed at a URL (the artifact only supplies the manifest's recorded
cases). Both go through `contract.http_checks`, whose first check is that `/health` names the model
version the artifact pins: a mismatch is the first and clearest failure and stops the rest.
"""

from __future__ import annotations

import http.client
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from deployctl.checks import capture_check
from deployctl.checks.contract import HEALTH, Check, Client, Exchange, http_checks
from deployctl.checks.grpc_smoke import client_python, grpc_checks, not_checked, probe_python
from deployctl.errors import DeployctlError, EndpointUnreachable, SmokeTestFailed, UsageError
from deployctl.manifest import Artifact
from deployctl.process import free_port, wait_healthy
from deployctl.targets import get as get_target
from deployctl.targets.base import Target

# The service's own token check (the artifact's app/guard.py) is on when either is set; a service
# started here inherits them from this process's environment.
AUTH_SETTINGS = ("AUTH_TOKEN_SHA256", "AUTH_TOKENS_FILE")
ALL_LINES = 10_000_000  # a service's whole output, as logs(lines) takes it


def run(artifact: Artifact, timeout: float = 120.0, headers: dict[str, str] | None = None) -> list[Check]:
    """Start the built artifact on a free loopback port, check it (sending `headers` with every
    request), stop it. With authentication configured, a request without them must be refused;
    with capture on, each request must have been recorded once (`capture_check`)."""
    target = get_target(artifact.target)
    own = target.smoke(artifact, timeout)
    if own is not None:
        return own
    checks = target.extra_checks(artifact)
    if not all(c.ok for c in checks) or not target.serves_http:
        return checks
    if not capture_check.requested():
        return checks + _started_checks(artifact, target, timeout, headers, None)
    journal: list[Exchange] = []
    with capture_check.recording_to_stdout():
        return checks + _started_checks(artifact, target, timeout, headers, journal)


def _started_checks(
    artifact: Artifact,
    target: Target,
    timeout: float,
    headers: dict[str, str] | None,
    journal: list[Exchange] | None,
) -> list[Check]:
    """The checks of the artifact started here; with a `journal`, capture's too."""
    service = target.start(artifact, free_port())
    try:
        seconds = wait_healthy(service, timeout)
        checks = [Check("ready: /health answers 200", True, f"after {seconds:.1f} s", seconds * 1000)]
        checks += http_checks(artifact, Client(service.base_url, headers, journal=journal), metrics=True)
        checks += target.service_checks(artifact, service.base_url)
        grpc_address = getattr(service, "grpc_address", None)
        if grpc_address:
            has_client = client_python(artifact) is not None
            checks += grpc_checks(artifact, grpc_address, headers) if has_client else [not_checked()]
        if any(os.environ.get(name) for name in AUTH_SETTINGS):
            checks.append(refuses_without_token(service.base_url))
        if journal is not None:
            checks.append(capture_check.capture_check(journal, lambda: service.logs(ALL_LINES)))
        if not service.alive():
            checks.append(Check("service still running", False, service.logs()))
    finally:
        service.stop()
    return checks


def run_remote(
    artifact: Artifact,
    url: str,
    headers: dict[str, str],
    timeout: float,
    retries: int,
    log: Callable[[str], None] | None = None,
    grpc_address: str | None = None,
) -> list[Check]:
    """Check a service already deployed at `url` (its path is the base path, e.g. an API stage),
    and with `grpc_address` (HOST:PORT) its gRPC binding: ModelMetadata and one ModelInfer.

    Only the HTTP contract (and gRPC) is checked: what a target checks beside it (schemas, package
    size, probe paths) needs the artifact built or the pod itself, not its public URL.
    """
    target = get_target(artifact.target)
    if not target.serves_http:
        raise UsageError(
            f"{artifact.path} ({artifact.target}) is not a service: there is no URL to check.",
            f"Leave out --url: `deployctl smoke-test {artifact.path}` checks the package itself.",
        )
    if grpc_address is not None:
        if not target.serves_grpc:
            raise UsageError(
                f"{artifact.path} is a {artifact.target} artifact, which serves no gRPC: there is "
                "nothing to check at --grpc.",
                "Leave out --grpc. The Open Inference Protocol over gRPC is served by the fastapi, "
                "docker and k8s targets.",
            )
        probe_python(artifact)  # a usage error, before any request, if no gRPC client can run
    checks = http_checks(artifact, Client(url, headers, timeout), retries=retries, log=log)
    if grpc_address is not None and all(c.ok for c in checks):
        checks += grpc_checks(artifact, grpc_address, headers)
    return checks


def check_grpc_address(value: str) -> str:
    """HOST:PORT ([IPv6]:PORT) of a gRPC service, port 1-65535; no scheme, no path."""
    hint = (
        "Give the service's gRPC host and port, e.g. --grpc fraud.example.com:8081 "
        "(GRPC_PORT, 8081 by default)."
    )
    host, colon, port = value.rpartition(":")
    bare = host.removeprefix("[").removesuffix("]")
    if (
        not colon
        or not bare
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or "/" in value
        or any(c.isspace() for c in value)
        or (":" in bare and not host.startswith("["))
    ):
        raise UsageError(f"--grpc must be HOST:PORT, got '{value}'.", hint)
    return value


@contextmanager
def started(artifact: Artifact, timeout: float = 120.0) -> Iterator[str]:
    """The built artifact serving on a free loopback port while in the block: its base URL.

    For the checks that need a running service of the HTTP contract (compare); a target without
    one (a package, a stream consumer) is a usage error."""
    target = get_target(artifact.target)
    if not target.serves_http or type(target).smoke is not Target.smoke:
        raise UsageError(
            f"{artifact.path} is a {artifact.target} artifact, which does not serve the HTTP contract here.",
            "Give an artifact of a target that serves HTTP (fastapi, flask, docker, k8s, lambda, gcf), "
            "or the URL of a deployed service.",
        )
    service = target.start(artifact, free_port())
    try:
        wait_healthy(service, timeout)
        yield service.base_url
    finally:
        service.stop()


def refuses_without_token(base_url: str) -> Check:
    """POST /predict without credentials: 401 with `WWW-Authenticate: Bearer`, not an answer."""
    name = "auth: POST /predict without a token is refused (401)"
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        connection.request("POST", "/predict", b"{}", {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
    except OSError as exc:
        return Check(name, False, f"no answer: {exc}")
    finally:
        connection.close()
    challenge = response.getheader("WWW-Authenticate") or ""
    ok = response.status == 401 and challenge.lower().startswith("bearer")
    return Check(name, ok, f"HTTP {response.status}, WWW-Authenticate: {challenge or '(none)'}")


def failure(failed: list[Check], total: int) -> DeployctlError:
    """The first failure, said plainly; the hint for its kind."""
    first = failed[0]
    if first.name.startswith("gRPC ") and first.detail.startswith(GRPC_UNREACHABLE):
        return EndpointUnreachable(
            f"{first.name}: the gRPC service never answered ({first.detail[:200]}).",
            "Check --grpc HOST:PORT: the service's gRPC port (GRPC_PORT, 8081 by default), reachable "
            "from here, and not turned off with GRPC=0.",
        )
    if first.name == HEALTH:
        if "refused authorization" in first.detail:
            hint = "Pass the credentials the endpoint expects: --header 'Authorization: Bearer $TOKEN'."
        elif first.expected and first.expected.startswith("version"):
            hint = (
                "The endpoint serves another deployment than this artifact: deploy this one, or "
                "smoke-test with the artifact of the version deployed. While a rollout settles, "
                "--retries N asks again with back-off."
            )
        else:
            hint = "Check that the URL points at this model's service and that it is healthy."
        return SmokeTestFailed(f"{first.detail}. No other check was run.", hint)
    return SmokeTestFailed(
        f"{len(failed)} of {total} checks failed; first: {first.name}: {first.detail}",
        "Fix what the failing check names, then build and smoke-test again. A mismatch in answers "
        "means the service does not serve the model as recorded.",
    )


# the gRPC status codes of a call that reached no server (refused, DNS, timeout)
GRPC_UNREACHABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "no answer")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)


def parse_headers(raw: list[str]) -> dict[str, str]:
    """`['Authorization: Bearer x']` -> {'Authorization': 'Bearer x'}. Errors never quote a value."""
    headers: dict[str, str] = {}
    for i, item in enumerate(raw, 1):
        name, colon, value = item.partition(":")
        name, value = name.strip(), value.strip()
        where = f"--header #{i}" + (f" ({name})" if HEADER_NAME.match(name) else "")
        if not colon or not HEADER_NAME.match(name):
            raise UsageError(
                f"{where} is not 'NAME: VALUE' (its value is not shown here).",
                "Quote it whole: --header 'Authorization: Bearer $TOKEN'.",
            )
        if any(c in value for c in "\r\n\0"):
            raise UsageError(f"{where}: the value holds a line break or NUL (not shown here).")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise UsageError(f"{where}: HTTP header values must be ASCII/Latin-1 (not shown here).") from None
        headers[name] = value
    return headers


def check_url(url: str) -> str:
    """An http(s) URL with a host; its path is the base path. Credentials in it are refused."""
    from urllib.parse import urlsplit

    hint = "Give the service's base URL, e.g. https://ID.execute-api.REGION.amazonaws.com/prod."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise UsageError(f"--url is not a valid URL ({exc}).", hint) from None
    if parts.username is not None or parts.password is not None:
        raise UsageError(
            "--url must not hold credentials (user:password@); they would end up in logs and reports.",
            "Send them as a header: --header 'Authorization: Basic ...' (never printed).",
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url must be an http:// or https:// URL with a host, got '{url}'.", hint)
    if parts.query or parts.fragment:
        raise UsageError(  # not quoted: a query may hold a key
            "--url takes the base URL without ?query or #fragment; send keys as --header.", hint
        )
    return url.rstrip("/")
