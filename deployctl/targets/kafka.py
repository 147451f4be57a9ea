"""kafka: the streaming pattern, a consumer that scores a topic in micro-batches, at least once.

Composition: the runtime layer plus the kafka layer (app/consumer.py, a thin adapter over the
runtime), the docker layer's Dockerfile for its image and the k8s layer's manifests, extended
(templates/kafka/k8s: a Deployment without Service, a PodDisruptionBudget and an optional KEDA
ScaledObject on consumer lag). `build` makes the .venv the smoke test runs and, unless
--build-image false, the image and dist/k8s.yaml; `smoke-test` streams the recorded rows through a
real broker (deployctl.checks.stream_smoke).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, ClassVar

from rich.console import Console

from deployctl import requirements
from deployctl.checks.contract import Check
from deployctl.errors import UsageError
from deployctl.manifest import Artifact
from deployctl.targets import container as docker_target
from deployctl.targets import k8s
from deployctl.targets.base import Option, Target
from deployctl.targets.builders import VenvBuilder, build_facts
from deployctl.targets.runners import ProcessRunner
from deployctl.targets.shared import at_least, in_range

RESOURCES = ("serviceaccount.yaml", "deployment.yaml", "scaling.yaml")
KEDA_API = "keda.sh/v1alpha1"  # no official schema: checked by hand below
K8S_OPTIONS = ("cpu_request", "memory_request", "namespace", "k8s_version")  # the k8s target's own
CONSUMER = ProcessRunner((".venv/bin/python", "-m", "app"), ".venv")

OPTIONS: tuple[Option, ...] = (
    replace(docker_target.OPTIONS[0],
            help="Image reference to tag (default: <name>-consumer:<model version>)."),
    *(o for o in docker_target.OPTIONS[1:] if o.name != "workers"),  # one consumer per process
    *(o for o in k8s.KubernetesTarget.options if o.name in K8S_OPTIONS),
    Option("replicas", 2, "Consumer replicas (useful up to the input topic's partitions).", int,
           check=at_least(1)),
    Option("keda", False, "Add a KEDA ScaledObject that scales on the consumer group's lag.", bool),
    Option("max_replicas", 6, "KEDA's maximum replicas: the input topic's partitions.", int,
           check=at_least(1)),
    Option("lag_threshold", 1000, "KEDA: records of lag per replica.", int, check=at_least(1)),
    Option("max_batch_rows", 500, "Records scored per model call at most (MAX_BATCH_ROWS).", int,
           check=in_range(1, 10000)),
    Option("build_image", True, "Also build the container image and dist/k8s.yaml (needs Docker).", bool),
)  # fmt: skip


def stream_names(name: str) -> dict[str, str]:
    """The default topics and group of a service: the consumer's own defaults (app/consumer.py)."""
    return {
        "input_topic": f"{name}-requests",
        "output_topic": f"{name}-predictions",
        "dlq_topic": f"{name}-dead-letter",
        "group_id": name,
    }


class VenvImageAndManifests:
    """The .venv (the smoke test's consumer), then, with --build-image true, the image and manifests."""

    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]:
        facts = VenvBuilder().build(artifact, console)
        if artifact.options["build_image"]:
            image = docker_target.IMAGE.build(artifact, console)
            built = build_facts(artifact) or {}
            path = k8s.write_dist(artifact, built.get("image_id", ""), RESOURCES)
            console.print(f"Manifests for `kubectl apply -f`: {path}")
            facts.update(
                image=image["image"], size=image["size"], manifests=str(path.relative_to(artifact.path))
            )
        return facts


class KafkaTarget(Target):
    name = "kafka"
    summary = "Streaming consumer: scores a Kafka topic in micro-batches, at least once (+ image, k8s)"
    produces = (
        "app/ (runtime + consumer), requirements.txt, Dockerfile, k8s/; a .venv (and image) after build"
    )
    layers: ClassVar[tuple[str, ...]] = ("runtime", "docker", "kafka")
    options: ClassVar[tuple[Option, ...]] = OPTIONS
    server_requirements = requirements.KAFKA
    builder = VenvImageAndManifests()
    runner = CONSUMER

    def check_options(self, values: dict[str, Any]) -> None:
        super().check_options(values)
        if values["keda"] and values["max_replicas"] < values["replicas"]:
            raise UsageError(
                f"--max-replicas {values['max_replicas']} is below --replicas {values['replicas']}.",
                "KEDA scales between --replicas and --max-replicas.",
            )

    def context(self, base: dict[str, Any]) -> dict[str, Any]:
        # One consumer per container: the docker layer's WORKERS is 1, scaling is by replicas.
        options = {**base["options"], "workers": 1}
        context = k8s.KubernetesTarget().context({**base, "options": options})
        context["k8s"]["resources"] = RESOURCES
        context["k8s"]["pod_labels"]["app.kubernetes.io/component"] = "stream-consumer"
        context["stream"] = stream_names(base["name"])
        context["docker"]["grpc_port"] = None  # a consumer: no gRPC service (only fastapi's server has one)
        return context

    def serve(self, artifact: Artifact, port: int, console: Console) -> None:
        if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            raise UsageError(
                "KAFKA_BOOTSTRAP_SERVERS is not set: the consumer needs a broker to read from.",
                f"KAFKA_BOOTSTRAP_SERVERS=broker:9092 deployctl serve {artifact.path} (see its README.md).",
            )
        super().serve(artifact, port, console)

    def smoke(self, artifact: Artifact, timeout: float) -> list[Check]:
        from deployctl.checks import stream_smoke

        checks = self.extra_checks(artifact)
        if not all(c.ok for c in checks):
            return checks
        return checks + stream_smoke.run(artifact, timeout)

    def extra_checks(self, artifact: Artifact) -> list[Check]:
        """The manifests, as the k8s target checks its own: schemas (strict), then consistency."""
        version = str(artifact.options["k8s_version"])
        documents, checks = k8s.load_manifests(artifact)
        checks += [
            k8s.schema_check(rel, doc, version) for rel, doc in documents if doc["apiVersion"] != KEDA_API
        ]
        if all(c.ok for c in checks):
            checks += consistency_checks(
                artifact, [doc for rel, doc in documents if rel.parent.name == k8s.MANIFESTS]
            )
        return checks

    def next_steps(self, artifact: Artifact) -> list[str]:
        return [
            f"deployctl build {artifact.path}",
            f"deployctl smoke-test {artifact.path}",
            f"KAFKA_BOOTSTRAP_SERVERS=broker:9092 deployctl serve {artifact.path}",
        ]


def consistency_checks(artifact: Artifact, docs: list[dict[str, Any]]) -> list[Check]:
    by_kind = {d["kind"]: d for d in docs}
    wanted = ["Deployment", "PodDisruptionBudget"] + ["ScaledObject"] * bool(artifact.options["keda"])
    missing = [k for k in wanted if k not in by_kind]
    if missing:
        return [Check("manifests complete", False, f"no {', '.join(missing)} in {k8s.MANIFESTS}/")]
    dep, pdb = by_kind["Deployment"], by_kind["PodDisruptionBudget"]
    pods = dep["spec"]["template"]["metadata"].get("labels", {})
    container = dep["spec"]["template"]["spec"]["containers"][0]
    probe_ports = [
        p.get("httpGet", p.get("tcpSocket", {})).get("port") for k in k8s.PROBES if (p := container.get(k))
    ]
    checks = [
        k8s.selects("Deployment selector matches its pods", dep["spec"]["selector"].get("matchLabels"), pods),
        k8s.selects("PodDisruptionBudget selects the pods", pdb["spec"]["selector"].get("matchLabels"), pods),
        k8s.ports_reach("probes use a container port", probe_ports, container),
        Check("no Service: a consumer takes no traffic", "Service" not in by_kind, "Deployment + PDB only"),
        k8s.image_check(artifact, container),
    ]
    if "ScaledObject" in by_kind:
        checks.append(scaled_object_check(by_kind["ScaledObject"], dep, container))
    return checks


def scaled_object_check(scaled: dict[str, Any], dep: dict[str, Any], container: dict[str, Any]) -> Check:
    """KEDA's CRD has no official schema here: the fields KEDA needs, and that they agree."""
    spec = scaled.get("spec", {})
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    trigger = (spec.get("triggers") or [{}])[0]
    meta = trigger.get("metadata", {})
    deployment = dep["metadata"]["name"]
    target, group, topic = (
        spec.get("scaleTargetRef", {}).get("name"),
        meta.get("consumerGroup"),
        meta.get("topic"),
    )
    found = [
        (f"scaleTargetRef {target} is not Deployment {deployment}", target != deployment),
        (f"trigger type {trigger.get('type')} is not kafka", trigger.get("type") != "kafka"),
        (f"topic {topic} is not INPUT_TOPIC {env.get('INPUT_TOPIC')}", topic != env.get("INPUT_TOPIC")),
        (f"consumerGroup {group} is not GROUP_ID {env.get('GROUP_ID')}", group != env.get("GROUP_ID")),
        ("lagThreshold must be a string of digits", not str(meta.get("lagThreshold", "")).isdigit()),
        ("minReplicaCount is above maxReplicaCount",
         spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100)),
    ]  # fmt: skip
    problems = [problem for problem, bad in found if bad]
    return Check("ScaledObject scales this consumer group", not problems, "; ".join(problems) or
                 f"topic {meta.get('topic')}, lag {meta.get('lagThreshold')} per replica")  # fmt: skip
