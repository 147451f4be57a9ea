"""smoke-test: check that a service answers as the model did in-process.

Two ways in, one path for the checks: `run` starts the built artifact on loopback, `run_remote`
checks a service already deployed at a URL (the artifact only supplies the manifest's recorded
cases). Both go through `contract.http_checks`, whose first check is that `/health` names the model
version the artifact pins: a mismatch is the first and clearest failure and stops the rest.
"""

from __future__ import annotations

from collections.abc import Callable

from deployctl.contract import Check, Client, http_checks
from deployctl.manifest import Artifact
from deployctl.process import free_port, wait_healthy
from deployctl.targets import get as get_target


def run(artifact: Artifact, timeout: float = 120.0) -> list[Check]:
    """Start the built artifact on a free loopback port, check it, stop it."""
    target = get_target(artifact.target)
    checks = target.extra_checks(artifact)
    if not all(c.ok for c in checks):
        return checks
    service = target.start(artifact, free_port())
    try:
        seconds = wait_healthy(service, timeout)
        checks.append(Check("ready: /health answers 200", True, f"after {seconds:.1f} s", seconds * 1000))
        checks += http_checks(artifact, Client(service.base_url))
        checks += target.service_checks(artifact, service.base_url)
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
) -> list[Check]:
    """Check a service already deployed at `url` (its path is the base path, e.g. an API stage).

    Only the HTTP contract is checked: what a target checks beside it (schemas, package size,
    probe paths) needs the artifact built or the pod itself, not its public URL.
    """
    return http_checks(artifact, Client(url, headers, timeout), retries=retries, log=log)
