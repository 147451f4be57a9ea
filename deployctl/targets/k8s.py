"""k8s: the docker target's image plus hardened Kubernetes manifests.

No cluster is needed to test them honestly: `smoke-test` validates every manifest against the
official schema of a chosen Kubernetes version (offline, strict), checks that the objects agree
with each other (selectors, named ports, autoscaler target, image), then runs the Deployment's
container spec on the local Docker engine with the settings a kubelet would apply (user,
read-only root, emptyDir as tmpfs, capabilities, limits, env) and asks every probe path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import yaml
from rich.console import Console

from deployctl import docker_engine, kserve, requirements
from deployctl.checks.contract import Check
from deployctl.docker_engine import RunSpec
from deployctl.errors import SmokeTestFailed, UsageError
from deployctl.manifest import Artifact
from deployctl.process import get
from deployctl.targets import container as docker_target
from deployctl.targets.base import Builder, Option, Target
from deployctl.targets.builders import build_facts, image_ref
from deployctl.targets.runners import ContainerRunner
from deployctl.targets.shared import at_least, check_cpu, check_memory, cpu_cores, memory_bytes

K8S_VERSION = "1.34"  # schemas to validate against unless --k8s-version says otherwise
MANIFESTS = "k8s"
RESOURCES = (
    "serviceaccount.yaml",
    "deployment.yaml",
    "service.yaml",
    "networkpolicy.yaml",
    "hpa.yaml",
    "pdb.yaml",
)
DIST = Path("dist") / "k8s.yaml"
IMAGE_ID_ANNOTATION = "deployctl.io/image-id"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def check_k8s_version(value: str) -> str | None:
    from kubernetes_validate.utils import all_versions

    supported = {".".join(v.split(".")[:2]) for v in all_versions()}
    if ".".join(value.removeprefix("v").split(".")[:2]) in supported:
        return None
    return f"no schemas for Kubernetes {value}; this validator has {', '.join(sorted(supported, key=_minor))}"


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def check_namespace(value: str) -> str | None:
    ok = value == "" or DNS_LABEL.match(value)
    return None if ok else f"'{value}' is not a valid namespace (lowercase letters, digits and '-')"


def label_value(value: str) -> str:
    """A valid label value: at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.") or "unknown"


def pod_spec(artifact: Artifact) -> RunSpec:
    """The Deployment's container, run with the settings a kubelet would apply."""
    return pod_run_spec(deployment(artifact))


class ImageAndManifests:
    """The docker target's image, built as it builds it, then every manifest in one file pinned to it."""

    def __init__(self, image: Builder) -> None:
        self.image = image

    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]:
        facts = self.image.build(artifact, console)
        built = build_facts(artifact) or {}
        path = write_dist(artifact, built.get("image_id", ""))
        console.print(f"Manifests for `kubectl apply -f`: {path}")
        return {**facts, "manifests": str(path.relative_to(artifact.path))}


class KubernetesTarget(Target):
    name = "k8s"
    summary = "Kubernetes manifests (Deployment, Service, HPA, PDB) for the docker image, hardened"
    produces = (
        "the docker artifact + k8s/ (manifests, kustomization); after build, an image and dist/k8s.yaml"
    )
    serves_grpc = True
    layers: ClassVar[tuple[str, ...]] = (*docker_target.DockerTarget.layers, "k8s")
    options: ClassVar[tuple[Option, ...]] = (
        *docker_target.OPTIONS,
        Option("cpu_request", "250m", "CPU request per pod (the HPA's 100%).", check=check_cpu),
        Option("memory_request", "512Mi", "Memory request per pod.", check=check_memory),
        Option(
            "replicas",
            0,
            "Initial replicas (0: leave the count to the HPA, so `kubectl apply` never resets it).",
            int,
            check=at_least(0),
        ),
        Option("min_replicas", 2, "HPA minimum replicas.", int, check=at_least(1)),
        Option("max_replicas", 10, "HPA maximum replicas.", int, check=at_least(1)),
        Option(
            "cpu_target", 70, "HPA target CPU utilisation, percent of the request.", int, check=at_least(1)
        ),
        Option(
            "service_type",
            "ClusterIP",
            "Service type: ClusterIP (inside the cluster only), or LoadBalancer / NodePort (reachable "
            "from outside the cluster; a warning).",
            choices=("ClusterIP", "LoadBalancer", "NodePort"),
        ),
        Option(
            "allow_from_namespace",
            "",
            "Admit traffic to the pods only from this namespace (NetworkPolicy); default: from anywhere, "
            "to the serving port only.",
            check=check_namespace,
        ),
        Option(
            "namespace", "", "Namespace (default: none set, the one kubectl uses).", check=check_namespace
        ),
        Option(
            "k8s_version",
            K8S_VERSION,
            "Kubernetes version whose schemas validate the manifests.",
            check=check_k8s_version,
        ),
        Option(
            "kserve",
            False,
            f"Also write {MANIFESTS}/{kserve.FILE}: a KServe InferenceService running the image.",
            bool,
        ),
        Option(
            "kserve_protocol",
            "http",
            "The protocol KServe routes to the InferenceService: http (REST and OIP v2 REST on its "
            "port) or grpc (OIP v2 over gRPC: the port named h2c; the probes stay on HTTP).",
            choices=("http", "grpc"),
        ),
    )

    server_requirements = requirements.FASTAPI
    builder = ImageAndManifests(docker_target.IMAGE)
    runner = ContainerRunner(pod_spec)  # the image runs as the pod spec says, not as docker's target

    # -- generate ---------------------------------------------------------------------------------

    def layers_for(self, options: dict[str, Any]) -> tuple[str, ...]:
        return (*self.layers, "kserve") if options["kserve"] else self.layers

    def check_options(self, values: dict[str, Any]) -> None:
        super().check_options(values)
        low, high, initial = values["min_replicas"], values["max_replicas"], values["replicas"]
        problems = [
            ("--max-replicas", f"{high} is below --min-replicas {low}", high < low),
            ("--replicas", f"{initial} is outside --min-replicas..--max-replicas ({low}..{high})",
             initial and not low <= initial <= high),
            ("--cpu-request", f"{values['cpu_request']} is above the limit --cpu {values['cpu']}",
             cpu_cores(values["cpu_request"]) > cpu_cores(values["cpu"])),
            ("--memory-request", f"{values['memory_request']} is above the limit --memory {values['memory']}",
             memory_bytes(values["memory_request"]) > memory_bytes(values["memory"])),
        ]  # fmt: skip
        for flag, problem, bad in problems:
            if bad:
                raise UsageError(f"{flag}: {problem}.", "Requests must fit in limits, and min <= max.")
        if values["kserve_protocol"] != "http" and not values["kserve"]:
            raise UsageError(
                f"--kserve-protocol {values['kserve_protocol']}: no InferenceService to apply it to.",
                "Add --kserve true, or leave --kserve-protocol out (the Deployment serves gRPC on its "
                "port named grpc either way).",
            )

    def warnings(self, options: dict[str, Any]) -> list[str]:
        if options["service_type"] == "ClusterIP":
            return []
        reach = (
            "a public address on most managed clusters"
            if options["service_type"] == "LoadBalancer"
            else ("a port on every node")
        )
        return [
            f"--service-type {options['service_type']}: the model is reachable from outside the cluster "
            f"({reach}). Require a token (AUTH_TOKEN_SHA256 from a Secret, see README.md) or keep "
            "the default ClusterIP behind your ingress."
        ]

    def context(self, base: dict[str, Any]) -> dict[str, Any]:
        context = docker_target.image_context(base)
        name, model, namespace = context["name"], context["model"], context["options"]["namespace"]
        selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}
        labels = {
            **selector,
            "app.kubernetes.io/version": label_value(model["version"]),
            "app.kubernetes.io/component": "model-server",
            "app.kubernetes.io/managed-by": "deployctl",
        }
        annotations = {
            "deployctl.io/model-uri": model["uri"],
            "deployctl.io/model-version": model["version"],
            "deployctl.io/run-id": model["run_id"] or "",
        }
        metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
        metadata.update(labels=labels, annotations=annotations)
        context["k8s"] = {  # data: the templates write it with the `yaml_block` filter
            "namespace": namespace,
            "metadata": metadata,
            "selector": selector,
            "pod_labels": labels,
            "pod_annotations": prometheus_annotations(context["docker"]["port"]),
            "resources": RESOURCES,
        }
        context["kserve"] = {"port": kserve.PORT, "annotations": prometheus_annotations(kserve.PORT)}
        return context

    # -- smoke test ---------------------------------------------------------------------------------

    def extra_checks(self, artifact: Artifact) -> list[Check]:
        version = str(artifact.options["k8s_version"])
        documents, checks = load_manifests(artifact)
        checks += [
            kserve_check(rel, doc) if doc["kind"] == kserve.KIND else schema_check(rel, doc, version)
            for rel, doc in documents
        ]
        if all(c.ok for c in checks):
            checks += consistency_checks(
                artifact,
                [
                    doc
                    for rel, doc in documents
                    if rel.parent.name == MANIFESTS and doc["kind"] != kserve.KIND
                ],
            )
        return checks

    def service_checks(self, artifact: Artifact, base_url: str) -> list[Check]:
        """Every probe the kubelet would send must succeed."""
        container = _container(deployment(artifact))
        return [_probe_check(kind, container, base_url) for kind in PROBES if kind in container]

    def next_steps(self, artifact: Artifact) -> list[str]:
        return [
            f"deployctl build {artifact.path}",
            f"deployctl smoke-test {artifact.path}",
            f"kubectl apply -k {artifact.path / MANIFESTS}",
        ]


def prometheus_annotations(port: int) -> dict[str, str]:
    """What Prometheus's kubernetes_sd pod discovery (the usual relabel rules) reads to scrape a pod."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def _probe_check(kind: str, container: dict[str, Any], base_url: str) -> Check:
    """One probe as the kubelet sends it: success is HTTP 200-399 within timeoutSeconds."""
    probe = container[kind]
    http = probe.get("httpGet")
    if not http:
        return Check(f"{kind}", True, "not an HTTP probe: not checked")
    path, serving = http.get("path", "/"), _serving_port(container)
    name = f"{kind} GET {path}"
    if _port_number(container, http.get("port")) != serving:
        return Check(name, False, f"probe port {http.get('port')} is not the serving port {serving}")
    try:
        status, _ = get(base_url, path, timeout=float(probe.get("timeoutSeconds", 1)))
    except OSError as exc:
        return Check(name, False, f"no answer within {probe.get('timeoutSeconds', 1)} s: {exc}")
    return Check(name, 200 <= status < 400, f"HTTP {status}")


# -- reading the manifests ------------------------------------------------------------------------


def load_manifests(artifact: Artifact) -> tuple[list[tuple[Path, dict[str, Any]]], list[Check]]:
    """Every object in k8s/*.yaml (and dist/k8s.yaml once built), with its file; parse failures as Checks."""
    files = sorted(p for p in (artifact.path / MANIFESTS).glob("*.yaml") if p.name != "kustomization.yaml")
    files += [artifact.path / DIST] if (artifact.path / DIST).is_file() else []
    documents: list[tuple[Path, dict[str, Any]]] = []
    checks = [kustomization_check(artifact)]
    for file in files:
        rel = file.relative_to(artifact.path)
        try:
            docs = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
        except yaml.YAMLError as exc:
            checks.append(Check(f"YAML: {rel}", False, f"{rel}: not valid YAML: {exc}"))
            continue
        for doc in docs:
            if not isinstance(doc, dict) or not {"apiVersion", "kind"} <= set(doc):
                checks.append(Check(f"YAML: {rel}", False, f"{rel}: an object without apiVersion and kind"))
            else:
                documents.append((rel, doc))
    return documents, checks


def kustomization_check(artifact: Artifact) -> Check:
    path = artifact.path / MANIFESTS / "kustomization.yaml"
    try:
        listed = yaml.safe_load(path.read_text()).get("resources", [])
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        return Check("kustomization lists every manifest", False, f"{MANIFESTS}/kustomization.yaml: {exc}")
    # the InferenceService is the alternative to the listed manifests, applied on its own
    present = {p.name for p in path.parent.glob("*.yaml")} - {"kustomization.yaml", kserve.FILE}
    missing, unlisted = sorted(set(listed) - present), sorted(present - set(listed))
    detail = "; ".join(
        [f"missing files {missing}"] * bool(missing) + [f"not listed {unlisted}"] * bool(unlisted)
    )
    return Check("kustomization lists every manifest", not detail, detail or f"{len(listed)} resources")


def schema_check(rel: Path, doc: dict[str, Any], version: str) -> Check:
    """Strict validation against the official schema: unknown fields fail too."""
    import kubernetes_validate
    from kubernetes_validate.utils import VersionNotSupportedError

    what = f"{doc['kind']} {doc.get('metadata', {}).get('name', '?')}"
    name = f"schema {version}: {rel} ({what})"
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(top level)"
        return Check(name, False, f"{path}: {exc.message}")  # the name already says file and object
    except (kubernetes_validate.SchemaNotFoundError, VersionNotSupportedError) as exc:
        return Check(name, False, str(exc.message))
    return Check(name, True, "valid (strict)")


def kserve_check(rel: Path, doc: dict[str, Any]) -> Check:
    """Strict validation against KServe's v1beta1 InferenceService schema (packaged with deployctl)."""
    name = f"schema {kserve.API_VERSION}: {rel} ({doc['kind']} {doc.get('metadata', {}).get('name', '?')})"
    problems = kserve.errors(doc)
    return Check(name, not problems, "; ".join(problems[:5]) or "valid (strict)")


def deployment(artifact: Artifact) -> dict[str, Any]:
    path = artifact.path / MANIFESTS / "deployment.yaml"
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as exc:
        raise SmokeTestFailed(f"Cannot read {path}: {exc}", "Regenerate the artifact.") from None
    found = [d for d in docs if d.get("kind") == "Deployment"]
    if not found:
        raise SmokeTestFailed(f"{path} holds no Deployment.", "Regenerate the artifact.")
    return found[0]


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    return dict(dep["spec"]["template"]["spec"]["containers"][0])


def _port_number(container: dict[str, Any], port: Any) -> int | None:
    """A probe's or Service's port (a name or a number) as the container's port number."""
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared.get("containerPort")):
            return int(declared["containerPort"])
    return None


def _serving_port(container: dict[str, Any]) -> int:
    ports = container.get("ports") or [{"containerPort": 8000}]
    named = [p for p in ports if p.get("name") == "http"]
    return int((named or ports)[0]["containerPort"])


def _grpc_port(container: dict[str, Any]) -> int | None:
    """The container's port named grpc (the OIP gRPC service), published beside HTTP when run here."""
    named = [p for p in container.get("ports") or [] if p.get("name") == "grpc"]
    return int(named[0]["containerPort"]) if named else None


# -- consistency: the objects must agree with each other and with the build ------------------------


def consistency_checks(artifact: Artifact, docs: list[dict[str, Any]]) -> list[Check]:
    by_kind = {d["kind"]: d for d in docs}
    missing = [k for k in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")
               if k not in by_kind]  # fmt: skip
    if missing:
        return [Check("manifests complete", False, f"no {', '.join(missing)} in {MANIFESTS}/")]
    dep, svc = by_kind["Deployment"], by_kind["Service"]
    hpa, pdb = by_kind["HorizontalPodAutoscaler"], by_kind["PodDisruptionBudget"]
    pods = dep["spec"]["template"]["metadata"].get("labels", {})
    container = _container(dep)
    target = hpa["spec"]["scaleTargetRef"]
    return [
        selects("Deployment selector matches its pods", dep["spec"]["selector"].get("matchLabels"), pods),
        selects("Service selects the pods", svc["spec"].get("selector"), pods),
        selects("PodDisruptionBudget selects the pods", pdb["spec"]["selector"].get("matchLabels"), pods),
        ports_reach("Service targetPort reaches a container port",
                     [p.get("targetPort", p["port"]) for p in svc["spec"]["ports"]], container),
        ports_reach("probes use a container port",
                     [container[k]["httpGet"]["port"] for k in PROBES if "httpGet" in container.get(k, {})],
                     container),
        Check("HPA scales this Deployment",
              (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"]),
              f"scaleTargetRef {target['kind']}/{target['name']}"),
        image_check(artifact, container),
        *network_policy_checks(by_kind.get("NetworkPolicy"), pods, container),
    ]  # fmt: skip


def network_policy_checks(
    policy: dict[str, Any] | None, pods: dict[str, str], container: dict[str, Any]
) -> list[Check]:
    """The NetworkPolicy applies to these pods and opens their serving port (and no other)."""
    if policy is None:
        return [
            Check("NetworkPolicy present", False, f"no NetworkPolicy in {MANIFESTS}/: every port is open")
        ]
    ports = [p.get("port") for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])]
    return [
        selects("NetworkPolicy selects the pods", policy["spec"]["podSelector"].get("matchLabels"), pods),
        ports_reach("NetworkPolicy admits only container ports", ports or [None], container),
    ]


def image_check(artifact: Artifact, container: dict[str, Any]) -> Check:
    """The container runs the image `deployctl build` tagged (or will: before the first build)."""
    built = build_facts(artifact)
    want = built["image"] if built else image_ref(artifact)
    got = container["image"]
    return Check(
        "image is the one `deployctl build` tagged", got == want, got + ("" if got == want else f" != {want}")
    )


def selects(name: str, selector: dict[str, str] | None, labels: dict[str, str]) -> Check:
    selector = selector or {}
    ok = bool(selector) and all(labels.get(k) == v for k, v in selector.items())
    shown = ", ".join(f"{k}={v}" for k, v in selector.items()) or "no selector"
    return Check(name, ok, shown if ok else f"{shown} does not match the pod labels {labels}")


def ports_reach(name: str, ports: list[Any], container: dict[str, Any]) -> Check:
    unknown = [p for p in ports if _port_number(container, p) is None]
    declared = [(p.get("name"), p.get("containerPort")) for p in container.get("ports", [])]
    detail = (
        f"{ports} -> {declared}" if not unknown else f"{unknown} not among the container's ports {declared}"
    )
    return Check(name, bool(ports) and not unknown, detail)


# -- running the pod's container spec as a kubelet would --------------------------------------------


def pod_run_spec(dep: dict[str, Any]) -> RunSpec:
    pod = dep["spec"]["template"]["spec"]
    container = _container(dep)
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    capabilities = security.get("capabilities", {})
    limits = container.get("resources", {}).get("limits", {})
    return RunSpec(
        image=container["image"],
        container_port=_serving_port(container),
        grpc_port=_grpc_port(container),
        env=_env(container, dep["metadata"]["name"]),
        user=_user(container["image"], security),
        entrypoint=container.get("command"),
        command=container.get("args"),
        read_only=bool(security.get("readOnlyRootFilesystem", False)),
        tmpfs=_empty_dirs(pod, container),
        cap_drop=tuple(capabilities.get("drop", ())),
        cap_add=tuple(capabilities.get("add", ())),
        no_new_privileges=security.get("allowPrivilegeEscalation") is False,
        mem_limit=memory_bytes(str(limits["memory"])) if "memory" in limits else None,
        nano_cpus=int(cpu_cores(str(limits["cpu"])) * 1e9) if "cpu" in limits else None,
        image_healthcheck=False,  # the kubelet ignores HEALTHCHECK and uses the probes instead
    )


def _user(image: str, security: dict[str, Any]) -> str | None:
    """runAsUser/runAsGroup; with runAsNonRoot, refuse a root or unverifiable user as the kubelet does."""
    uid, gid = security.get("runAsUser"), security.get("runAsGroup")
    if security.get("runAsNonRoot"):
        effective = uid if uid is not None else docker_engine.image_uid(image)
        if effective is None or effective == 0:
            raise SmokeTestFailed(
                f"The kubelet would refuse to start {image}: runAsNonRoot is set but the container "
                f"would run as {'root' if effective == 0 else 'a non-numeric user'}.",
                "Set runAsUser to the image's numeric user, or give the image a numeric USER.",
            )
    if uid is None:
        return None
    return f"{uid}:{gid}" if gid is not None else str(uid)


def _env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """Literal values as given; optional Secret/ConfigMap keys are absent here, as with no Secret."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item.get("valueFrom", {})
        ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
        if ref and ref.get("optional"):
            continue
        field = source.get("fieldRef", {}).get("fieldPath")
        if field in ("metadata.name", "metadata.namespace"):
            env[item["name"]] = f"{pod_name}-local" if field == "metadata.name" else "default"
            continue
        raise SmokeTestFailed(
            f"Environment variable {item['name']} comes from {source}, which a local run cannot provide.",
            "Make the reference optional (optional: true) or give a literal value for the smoke test.",
        )
    return env


def _empty_dirs(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """Each emptyDir mount as a tmpfs of its sizeLimit; any other volume type cannot run locally."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "emptyDir" not in volume:
            raise SmokeTestFailed(
                f"Volume {mount['name']} is not an emptyDir; the local run can only provide emptyDirs.",
                "Use emptyDir volumes for scratch space (the model is inside the image).",
            )
        size = (volume["emptyDir"] or {}).get("sizeLimit", "64Mi")
        mounts[mount["mountPath"]] = f"rw,nosuid,nodev,mode=1777,size={memory_bytes(str(size))}"
    return mounts


def write_dist(artifact: Artifact, image_id: str, resources: tuple[str, ...] = RESOURCES) -> Path:
    """All manifests in one file, in kustomization order; the pod template carries the image id,
    so rebuilding under the same tag still changes the template and rolls the pods."""
    docs = []
    for name in resources:
        for doc in yaml.safe_load_all((artifact.path / MANIFESTS / name).read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Deployment" and image_id:
                template = doc["spec"]["template"]["metadata"]
                template.setdefault("annotations", {})[IMAGE_ID_ANNOTATION] = image_id
            if doc:
                docs.append(doc)
    path = artifact.path / DIST
    path.parent.mkdir(exist_ok=True)
    header = f"# {artifact.name}: every manifest of {MANIFESTS}/, written by `deployctl build`.\n"
    path.write_text(header + yaml.safe_dump_all(docs, sort_keys=False, width=1000))
    return path
