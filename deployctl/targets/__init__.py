"""The target registry: built-in and third-party targets come from one entry-point group.

A third-party package adds a target by declaring, in its pyproject.toml,
`[project.entry-points."deployctl.targets"] mytarget = "mypkg.module:MyTarget"`; its template
layers come with it (`Target.templates`). See docs/architecture.md.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from deployctl.errors import UsageError
from deployctl.targets.base import Target

GROUP = "deployctl.targets"
# Used when the package metadata is missing (running from a source tree that was not installed).
BUILTIN = {
    "flask": "deployctl.targets.rest:FlaskTarget",
    "fastapi": "deployctl.targets.rest:FastAPITarget",
    "docker": "deployctl.targets.container:DockerTarget",
    "k8s": "deployctl.targets.k8s:KubernetesTarget",
    "lambda": "deployctl.targets.aws_lambda:LambdaTarget",
    "gcf": "deployctl.targets.gcf:CloudFunctionTarget",
    "kafka": "deployctl.targets.kafka:KafkaTarget",
    "embedded": "deployctl.targets.embedded:EmbeddedTarget",
}


@cache
def _specs() -> dict[str, str]:
    specs = dict(BUILTIN)
    specs.update({ep.name: ep.value for ep in entry_points(group=GROUP)})
    return specs


def names() -> list[str]:
    return list(_specs())


def get(name: str) -> Target:
    spec = _specs().get(name)
    if spec is None:
        raise UsageError(f"Unknown target '{name}'.", f"Valid targets: {', '.join(names())}.")
    module_name, _, attr = spec.partition(":")
    import importlib

    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(
            f"Target '{name}' ({spec}) could not be loaded: {exc}.",
            "Reinstall the package that provides it, or pick another target.",
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        raise UsageError(f"Target '{name}' ({spec}) is not a deployctl Target subclass.")
    return cls()
