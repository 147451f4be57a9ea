"""One exception family for every mistake a user can make.

A `DeployctlError` is an expected failure: the CLI prints its message and hint and exits with
its code, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


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
    """Ctrl-C (SIGINT) stopped a command; what it left half done was removed. Exit 130, as a shell
    reports a command that SIGINT ended."""

    exit_code = 130


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
