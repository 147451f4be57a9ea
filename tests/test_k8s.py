"""k8s target: manifests validated against the official schemas, hardened and consistent with each
other; bad options refused at generate time; a broken manifest fails the smoke test with its file,
path and reason; and the pod's container spec run on the real engine answers every probe."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import Registry, run_cli
from test_docker import assert_user_error, build, docker_client, generate

from deployctl import kserve
from deployctl.manifest import Artifact
from deployctl.process import free_port
from deployctl.targets import get as get_target
from deployctl.targets.k8s import IMAGE_ID_ANNOTATION, K8S_VERSION

FRAUD = "models:/fraud_detector@production"
IMAGE = "deployctl-test/fraud-detector:k8s"
KINDS = {
    "ServiceAccount",
    "Deployment",
    "Service",
    "NetworkPolicy",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
}


@pytest.fixture(scope="module")
def fraud(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("k8s") / "fraud"
    return generate(registry, out, FRAUD, "k8s", "--image", IMAGE, "--kserve", "true")


def objects(artifact: Path) -> dict[str, dict[str, Any]]:
    docs = [d for f in sorted((artifact / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    return {d["kind"]: d for d in docs if d}


def pod_spec(artifact: Path) -> dict[str, Any]:
    return dict(objects(artifact)["Deployment"]["spec"]["template"]["spec"])


# -- the manifests: no engine needed --------------------------------------------------------------


@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
def test_every_manifest_validates_strictly(fraud: Path, version: str) -> None:
    found = objects(fraud)
    assert set(found) == KINDS | {"Kustomization", "InferenceService"}
    for kind in KINDS:
        kubernetes_validate.validate(found[kind], version, strict=True)
    # the InferenceService is the alternative to the others: applied alone, not by the kustomization
    assert sorted(found["Kustomization"]["resources"]) == sorted(
        p.name for p in (fraud / "k8s").glob("*.yaml") if p.name not in ("kustomization.yaml", kserve.FILE)
    )


def test_the_kserve_inference_service_runs_the_image_as_the_deployment_does(fraud: Path) -> None:
    found = objects(fraud)
    service = found["InferenceService"]
    assert kserve.errors(service) == []
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = service["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 10)
    [container] = predictor["containers"]
    deployed = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "kserve-container" and container["image"] == deployed["image"] == IMAGE
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert {"name": "PORT", "value": "8080"} in container["env"]
    assert container["resources"] == deployed["resources"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": 8080}
    assert predictor["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }


def test_grpc_has_its_named_port_and_the_probes_stay_on_http(fraud: Path) -> None:
    found = objects(fraud)
    container = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert {"name": "GRPC_PORT", "value": "8081"} in container["env"]
    assert {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"} in (
        found["Service"]["spec"]["ports"]
    )
    assert {"port": "grpc", "protocol": "TCP"} in found["NetworkPolicy"]["spec"]["ingress"][0]["ports"]
    assert {container[probe]["httpGet"]["port"] for probe in ("readinessProbe", "livenessProbe")} == {"http"}


def test_kserve_protocol_grpc_routes_the_h2c_port(registry: Registry, tmp_path: Path) -> None:
    out = generate(registry, tmp_path / "grpc", FRAUD, "k8s", "--kserve", "true", "--kserve-protocol", "grpc")
    service = objects(out)["InferenceService"]
    assert kserve.errors(service) == []  # KServe's CRD schema
    [container] = service["spec"]["predictor"]["containers"]
    assert container["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    assert {"name": "GRPC_PORT", "value": "8081"} in container["env"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": 8080}


def test_the_inference_service_is_only_written_when_asked(registry: Registry, tmp_path: Path) -> None:
    out = generate(registry, tmp_path / "plain", FRAUD, "k8s")
    assert not (out / "k8s" / kserve.FILE).exists()


def test_pod_is_hardened(fraud: Path) -> None:
    pod = pod_spec(fraud)
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's numeric USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "fraud-detector"
    assert objects(fraud)["ServiceAccount"]["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {"kubernetes.io/hostname"}
    probes = {
        probe: container[probe]["httpGet"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes == {
        "startupProbe": {"path": "/health/ready", "port": "http"},
        "readinessProbe": {"path": "/health/ready", "port": "http"},
        "livenessProbe": {"path": "/health/live", "port": "http"},
    }
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 300
    assert objects(fraud)["Deployment"]["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(container["ports"][0]["containerPort"]),
        "prometheus.io/path": "/metrics",
    }
    secret = next(e for e in container["env"] if e["name"] == "MLFLOW_TRACKING_URI")["valueFrom"]
    assert secret["secretKeyRef"]["optional"] is True
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }


def test_objects_agree_with_each_other(fraud: Path) -> None:
    found = objects(fraud)
    deployment, service = found["Deployment"], found["Service"]
    hpa, pdb = found["HorizontalPodAutoscaler"], found["PodDisruptionBudget"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"],
        pdb["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    assert "app.kubernetes.io/version" not in deployment["spec"]["selector"]["matchLabels"]  # immutable
    assert pod_labels["app.kubernetes.io/managed-by"] == "deployctl"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert service["spec"]["type"] == "ClusterIP"  # private by default
    assert container["image"] == IMAGE
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "fraud-detector",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert pdb["apiVersion"] == "policy/v1"


def test_image_defaults_to_the_docker_targets_tag(registry: Registry, tmp_path: Path) -> None:
    out = generate(registry, tmp_path / "k8s", "models:/iris_species/1", "k8s")
    assert pod_spec(out)["containers"][0]["image"] == "iris-species:1"


def test_options_are_rendered(registry: Registry, tmp_path: Path) -> None:
    options = ["--replicas", "3", "--min-replicas", "3", "--max-replicas", "6", "--cpu-target", "55",
               "--service-type", "NodePort", "--namespace", "ml-prod", "--cpu", "2", "--cpu-request", "500m",
               "--memory", "2Gi", "--memory-request", "1Gi", "--k8s-version", "1.30"]  # fmt: skip
    out = generate(registry, tmp_path / "k8s", FRAUD, "k8s", *options)
    found = objects(out)
    assert found["Deployment"]["spec"]["replicas"] == 3
    assert found["Service"]["spec"]["type"] == "NodePort"
    assert found["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 6
    assert {d["metadata"].get("namespace") for k, d in found.items() if k != "Kustomization"} == {"ml-prod"}
    assert found["Kustomization"]["namespace"] == "ml-prod"
    assert pod_spec(out)["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    for kind in KINDS:
        kubernetes_validate.validate(found[kind], "1.30", strict=True)


@pytest.mark.parametrize(
    ("options", "phrases"),
    [
        (["--min-replicas", "5", "--max-replicas", "2"], ["--max-replicas: 2 is below --min-replicas 5"]),
        (["--memory", "1Gb"], ["--memory: '1Gb' is not a memory quantity"]),
        (["--memory-request", "lots"], ["--memory-request: 'lots' is not a memory quantity"]),
        (["--cpu", "2 cores"], ["--cpu: '2 cores' is not a CPU quantity"]),
        (["--memory-request", "2Gi"], ["--memory-request: 2Gi is above the limit --memory 1Gi"]),
        (["--cpu-request", "1500m"], ["--cpu-request: 1500m is above the limit --cpu 1"]),
        (["--replicas", "20"], ["--replicas: 20 is outside --min-replicas..--max-replicas (2..10)"]),
        (["--min-replicas", "0"], ["--min-replicas: must be at least 1"]),
        (["--service-type", "Ingress"], ["--service-type must be one of ClusterIP, LoadBalancer, NodePort"]),
        (["--namespace", "ML_Prod"], ["--namespace: 'ML_Prod' is not a valid namespace"]),
        (["--k8s-version", "1.12"], ["--k8s-version: no schemas for Kubernetes 1.12", K8S_VERSION]),
        (["--max-replicas", "ten"], ["--max-replicas expects int, got 'ten'"]),
        (["--kserve", "maybe"], ["--kserve expects bool, got 'maybe'"]),
        (["--kserve-protocol", "grpc"], ["--kserve-protocol grpc: no InferenceService", "--kserve true"]),
        (["--kserve-protocol", "h2"], ["--kserve-protocol must be one of http, grpc"]),
    ],
)
def test_bad_options_are_refused_naming_the_field(
    registry: Registry, tmp_path: Path, options: list[str], phrases: list[str]
) -> None:
    out = tmp_path / "k8s"
    result = run_cli("generate", "-m", FRAUD, "-t", "k8s", "-o", str(out), *options, env=registry.env())
    assert_user_error(result, *phrases)
    assert not out.exists()


def broken_copy(fraud: Path, tmp_path: Path, file: str, old: str, new: str) -> Path:
    out = tmp_path / "broken"
    shutil.copytree(fraud, out)
    manifest = out / "k8s" / file
    assert old in manifest.read_text()
    manifest.write_text(manifest.read_text().replace(old, new, 1))
    return out


@pytest.mark.parametrize(
    ("file", "old", "new", "phrases"),
    [
        (
            "deployment.yaml",
            "containerPort: 8000",
            "containerPort: eight-thousand",
            ["k8s/deployment.yaml", "spec.template.spec.containers.0.ports.0.containerPort",
             "'eight-thousand' is not of type 'integer'"],
        ),
        (
            "deployment.yaml",
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: true\n            readOnlyRootFileSystem: true",
            ["k8s/deployment.yaml", "spec.template.spec.containers.0.securityContext",
             "'readOnlyRootFileSystem' was unexpected"],
        ),
        (
            "hpa.yaml",
            "minReplicas: 2",
            "minReplicas: two",
            ["k8s/hpa.yaml", "spec.minReplicas", "'two' is not of type 'integer'"],
        ),
        (
            "inferenceservice.yaml",
            "name: kserve-container",
            "name: kserve-container\n        imagePolicy: Always",
            ["k8s/inferenceservice.yaml", "schema serving.kserve.io/v1beta1",
             "spec.predictor.containers.0", "'imagePolicy' was unexpected"],
        ),
        (
            "inferenceservice.yaml",
            "maxReplicas: 10",
            "maxReplicas: ten",
            ["k8s/inferenceservice.yaml", "spec.predictor.maxReplicas", "'ten' is not of type 'integer'"],
        ),
        (
            "service.yaml",
            "targetPort: http",
            "targetPort: web",
            ["Service targetPort reaches a container port", "['web'] not among the container's ports"],
        ),
    ],
)  # fmt: skip
def test_a_broken_manifest_fails_the_smoke_test_with_file_path_and_reason(
    fraud: Path, tmp_path: Path, file: str, old: str, new: str, phrases: list[str]
) -> None:
    # validation comes before anything runs, so no image and no engine are needed to see it fail
    out = broken_copy(fraud, tmp_path, file, old, new)
    result = run_cli("smoke-test", str(out), "--json")
    assert_user_error(result, *phrases)
    failed = [c for c in json.loads(result.stdout)["checks"] if not c["ok"]]
    assert len(failed) == 1, failed


def test_run_as_root_is_refused_as_the_kubelet_would(fraud: Path, tmp_path: Path) -> None:
    out = broken_copy(fraud, tmp_path, "deployment.yaml", "runAsUser: 10001", "runAsUser: 0")
    result = run_cli("smoke-test", str(out))
    assert_user_error(result, "kubelet would refuse", "runAsNonRoot", "root")


# -- the engine: the pod's container spec, run as the kubelet would --------------------------------


@pytest.fixture(scope="module")
def built(fraud: Path) -> Path:
    build(fraud)
    return fraud


@pytest.mark.docker
def test_build_tags_the_image_and_pins_it_in_dist(built: Path) -> None:
    facts = json.loads((built / "build.json").read_text())
    assert facts["image"] == IMAGE
    docs = list(yaml.safe_load_all((built / "dist" / "k8s.yaml").read_text()))
    assert [d["kind"] for d in docs] == [
        "ServiceAccount", "Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]  # fmt: skip
    annotations = docs[1]["spec"]["template"]["metadata"]["annotations"]
    assert annotations[IMAGE_ID_ANNOTATION] == facts["image_id"] == docker_client().images.get(IMAGE).id
    user = docker_client().images.get(IMAGE).attrs["Config"]["User"]
    assert user.split(":")[0] == str(pod_spec(built)["securityContext"]["runAsUser"])


@pytest.mark.docker
def test_smoke_test_validates_then_probes_the_pod(built: Path) -> None:
    result = run_cli("smoke-test", str(built), "--json", env={**os.environ, "GRPC": "1"})
    assert result.code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert all(c["ok"] for c in checks.values())
    assert "gRPC ModelMetadata" in checks  # the port named grpc, published as the Service would
    for kind in KINDS:
        assert any(n.startswith(f"schema {K8S_VERSION}: k8s/") and f"({kind} " in n for n in checks)
    for probe, path in (("startupProbe", "ready"), ("readinessProbe", "ready"), ("livenessProbe", "live")):
        assert checks[f"{probe} GET /health/{path}"]["detail"] == "HTTP 200"
    assert checks[
        "schema serving.kserve.io/v1beta1: k8s/inferenceservice.yaml (InferenceService fraud-detector)"
    ]["ok"]
    assert checks["image is the one `deployctl build` tagged"]["ok"]
    assert "POST /invocations dataframe_split" in checks


@pytest.mark.docker
def test_the_pod_container_runs_with_the_manifests_settings(built: Path) -> None:
    service = get_target("k8s").start(Artifact.open(built), free_port())
    try:
        attrs = service.container.attrs
        host = attrs["HostConfig"]
        assert attrs["Config"]["User"] == "10001:10001"
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges:true"]
        assert host["Tmpfs"]["/tmp"].endswith(f"size={64 * 2**20}")
        assert host["Memory"] == 2**30 and host["NanoCpus"] == 10**9
        assert attrs["Config"]["Healthcheck"]["Test"] == ["NONE"]  # the kubelet uses the probes
        env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
        assert env["WORKERS"] == "1" and env["GRACEFUL_TIMEOUT"] == "20"
        assert "MLFLOW_TRACKING_URI" not in env  # optional Secret, absent here
    finally:
        service.stop()
