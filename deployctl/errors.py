"""One exception family for every mistake a user can make.

A `DeployctlError` is an expected failure: the CLI prints its message and hint and exits with
its code, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


class DeployctlError(Exception):
    """A user-facing error: what went wrong (message) and what to do next (hint)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(DeployctlError):
    """Bad option values or arguments."""

    exit_code = 2


class ModelNotFound(DeployctlError):
    """The model URI does not resolve to a model in the registry."""


class RegistryUnreachable(DeployctlError):
    """The tracking server cannot be reached."""


class NotAnArtifact(DeployctlError):
    """A directory that deployctl did not generate: a usage mistake, so exit 2 as one."""

    exit_code = 2


class BuildFailed(DeployctlError):
    """`build` could not make the artifact runnable."""


class Interrupted(DeployctlError):
    """Ctrl-C (SIGINT) stopped a command; its message says what it left. Exit 130, as a shell
    reports a command that SIGINT ended."""

    exit_code = 130


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a build step that tidied up after itself: `outcome` says what it removed or
    left (e.g. "the half-filled .venv was removed"). Still a KeyboardInterrupt, so that code which
    does not know it stops as on any Ctrl-C."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


@contextmanager
def interruptible(tidy: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C inside: `tidy()` removes what the step had half made and says what it did, then
    BuildInterrupted carries that. An inner step's own BuildInterrupted passes untouched: it knows
    best what it left (an interrupted download leaves no image to tidy)."""
    try:
        yield
    except BuildInterrupted:
        raise
    except KeyboardInterrupt:
        raise BuildInterrupted(tidy()) from None


class SmokeTestFailed(DeployctlError):
    """The artifact does not serve the registered model as recorded."""


class EndpointUnreachable(DeployctlError):
    """`smoke-test --url` got no HTTP answer at all (refused, DNS, TLS, timeout) after every attempt.

    Its own exit code, so that a pipeline can tell "the service is not there (yet)" from "the
    service answers, but not as recorded" (exit 1).
    """

    exit_code = 3


class EngineUnavailable(DeployctlError):
    """No Docker engine answers."""
