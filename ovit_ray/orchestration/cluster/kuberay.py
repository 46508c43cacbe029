"""Offline checks of KubeRay manifests (ray.io/v1 RayCluster and RayJob) and the Kubernetes objects
beside them (ConfigMap, Secret, ServiceAccount, Service, Ingress, Deployment...), with the rules the
cluster-launcher files get (`rules`): shared storage, token authentication, nothing reachable from
outside the cluster, no literal credentials, GPU groups that scale from zero.

Exposure on Kubernetes: a pod's own interfaces are reachable only inside the cluster network, so a
bind to 0.0.0.0 in a pod is fine (it is KubeRay's default `dashboard-host`, and the operator and the
RayJob submitter need it: they reach the job API through the ClusterIP head Service). What opens a port
outside the cluster is refused: `hostNetwork`, `hostPort`, Services of type NodePort, LoadBalancer
(unless every `loadBalancerSourceRanges` entry is private, the same test as security groups) or with
`externalIPs`, Ingress objects and `headGroupSpec.enableIngress`.

Token authentication: either `authOptions` (KubeRay >= 1.5.1 sets the variables on every container
itself) or `RAY_AUTH_MODE=token` plus `RAY_AUTH_TOKEN` from a Secret on each Ray container, the
autoscaler sidecar (`autoscalerOptions.env`) and, for a RayJob, the submitter pod.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import yaml

from ovit_ray.orchestration.cluster.rules import (
    AUTH_VAR,
    STORAGE_VAR,
    TOKEN_VAR,
    Problem,
    Setting,
    WorkerGroup,
    assignments,
    auth_mode_problems,
    gpu_problems,
    group_floors,
    of_type,
    public_sources,
    secret_problems,
    sets_token_auth,
    storage_problems,
)
from ovit_ray.orchestration.common.yaml_files import clip_line, safe_load_bounded, short_repr

OUTSIDE_SERVICE_TYPES = ("NodePort", "LoadBalancer")
WORKLOAD_IDENTITY_SCHEMES = ("s3://", "gs://")  # storage reached as the pod's cloud identity
_SWEEP = re.compile(r"\bovit-ray\s+sweep\b")
_PORT_FORWARD = "reach it with `kubectl port-forward` instead"


def is_manifest(documents: list[Any]) -> bool:
    """Kubernetes objects (some document has ``apiVersion`` and ``kind``), not a cluster-launcher file."""
    return any(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in documents)


def validate_manifests(documents: list[Any]) -> list[Problem]:
    """Every problem of every document, each naming its document (``document 2 (RayJob sweep)``)."""
    problems: list[Problem] = []
    for number, document in enumerate(documents, 1):
        if document is None:
            continue
        if not is_manifest([document]):
            problems.append(
                Problem(
                    "(document)",
                    document,
                    "not a Kubernetes object (no apiVersion/kind)",
                    f"document {number}",
                )
            )
            continue
        metadata = of_type(document.get("metadata"), dict)
        label = clip_line(f"{document['kind']} {metadata.get('name', '?')}", 80)
        where = f"document {number} ({label})"
        seen: set[tuple[str, str]] = set()
        for problem in _document_problems(document):
            if (problem.key, problem.reason) not in seen:
                seen.add((problem.key, problem.reason))
                problems.append(replace(problem, where=where))
    return problems


def _document_problems(document: dict[str, Any]) -> Iterator[Problem]:
    kind = document["kind"]
    spec = of_type(document.get("spec"), dict)
    if kind == "Secret":
        yield from _secret_object_problems(document)
    yield from secret_problems(_without_own_checks(document))
    for key, pod in _pod_specs(document):
        yield from _pod_problems(key, pod)
    if kind == "Service":
        yield from _service_problems("spec", spec)
    elif kind == "Ingress":
        yield Problem("kind", kind, f"an Ingress exposes a service outside the cluster; {_PORT_FORWARD}")
    elif kind == "RayCluster":
        yield from _ray_cluster_problems("spec", spec, [])
    elif kind == "RayJob":
        yield from _ray_job_problems(spec)


def _without_own_checks(document: dict[str, Any]) -> dict[str, Any]:
    """The document less the parts checked by their own rule: a Secret's data (every value is one), a
    RayJob's runtimeEnvYAML (read as the YAML it is, so its keys are named precisely)."""
    if document["kind"] == "Secret":
        return {k: v for k, v in document.items() if k not in ("data", "stringData")}
    spec = document.get("spec")
    if document["kind"] == "RayJob" and isinstance(spec, dict) and "runtimeEnvYAML" in spec:
        return {**document, "spec": {k: v for k, v in spec.items() if k != "runtimeEnvYAML"}}
    return document


def _dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    return [(i, v) for i, v in enumerate(of_type(value, list)) if isinstance(v, dict)]


# --- objects of any kind -------------------------------------------------------------------------


def _secret_object_problems(document: dict[str, Any]) -> Iterator[Problem]:
    for section in ("data", "stringData"):
        for name in of_type(document.get(section), dict):
            yield Problem(
                f"{section}.{name}",
                "<redacted>",
                "a literal credential in a file (it ends up in git and in `kubectl get -o yaml`); create "
                "the Secret with `kubectl create secret generic NAME --from-literal=KEY=...` instead",
            )


def _pod_specs(node: Any, key: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec in the object (a mapping with a `containers` list): pod templates of RayCluster
    groups, a RayJob's submitter, Deployments, Jobs..."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield key, node
        for k, v in node.items():
            yield from _pod_specs(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _pod_specs(v, f"{key}.{i}")


def _pod_problems(key: str, pod: dict[str, Any]) -> Iterator[Problem]:
    if pod.get("hostNetwork") is True:
        yield Problem(
            f"{key}.hostNetwork",
            True,
            "puts the pod on the node's network: every port it opens (dashboard, GCS, MLflow) is open "
            "on the node's addresses",
        )
    for section in ("initContainers", "containers"):
        for i, container in _dicts(pod.get(section)):
            for j, port in _dicts(container.get("ports")):
                if port.get("hostPort"):
                    yield Problem(
                        f"{key}.{section}.{i}.ports.{j}.hostPort",
                        port["hostPort"],
                        f"opens the port on the node's address; {_PORT_FORWARD}",
                    )


def _service_problems(key: str, spec: dict[str, Any]) -> Iterator[Problem]:
    kind = spec.get("type", "ClusterIP")
    if kind == "NodePort":
        yield Problem(
            f"{key}.type", kind, f"opens the port on every node's address; use ClusterIP and {_PORT_FORWARD}"
        )
    elif kind == "LoadBalancer":
        sources = of_type(spec.get("loadBalancerSourceRanges"), list)
        public = public_sources(sources)
        if not sources or public:
            reached = f"public addresses ({', '.join(public)})" if public else "every address"
            yield Problem(
                f"{key}.type",
                kind,
                f"a load balancer reachable from {reached}; use ClusterIP and {_PORT_FORWARD}, or "
                "private loadBalancerSourceRanges",
            )
    if spec.get("externalIPs"):
        yield Problem(
            f"{key}.externalIPs",
            spec["externalIPs"],
            f"exposes the service on outside addresses; {_PORT_FORWARD}",
        )


# --- Ray clusters --------------------------------------------------------------------------------


def _container_settings(key: str, container: dict[str, Any]) -> list[Setting]:
    """The environment a container sets: its env entries and ``NAME=value`` in its command and args."""
    found = []
    for i, entry in _dicts(container.get("env")):
        name = entry.get("name")
        if not isinstance(name, str):
            continue
        if "value" in entry:
            found.append(Setting(f"{key}.env.{i}", name, str(entry["value"])))
        else:
            source = of_type(entry.get("valueFrom"), dict)
            found.append(Setting(f"{key}.env.{i}", name, None, secret="secretKeyRef" in source))
    for section in ("command", "args"):
        for i, text in enumerate(of_type(container.get(section), list)):
            found += assignments(f"{key}.{section}.{i}", str(text))
    return found


@dataclass(frozen=True)
class _RayPod:
    """The head, a worker group or a job's submitter: where its pod spec is, the spec, the Ray container
    (KubeRay runs Ray in the first container) and the group's own spec."""

    pod_key: str
    pod: dict[str, Any]
    container: dict[str, Any]
    group: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.pod_key}.containers.0"


def _ray_pod(key: str, group: dict[str, Any], template_key: str = "template") -> _RayPod:
    pod = of_type(of_type(group.get(template_key), dict).get("spec"), dict)
    containers = _dicts(pod.get("containers"))
    return _RayPod(f"{key}.{template_key}.spec", pod, containers[0][1] if containers else {}, group)


def _gpu_count(container: dict[str, Any], start_params: dict[str, Any]) -> float:
    """GPUs of a Ray pod: its `*/gpu` limit (KubeRay's num-gpus source), else rayStartParams num-gpus."""
    limits = of_type(of_type(container.get("resources"), dict).get("limits"), dict)
    gpu_limits = (amount for name, amount in limits.items() if str(name).endswith("gpu"))
    try:
        return float(next(gpu_limits, start_params.get("num-gpus", 0)))
    except (TypeError, ValueError):
        return 0.0


def _ray_cluster_problems(key: str, spec: dict[str, Any], job: list[Setting]) -> Iterator[Problem]:
    """A RayCluster spec (standalone, or a RayJob's `rayClusterSpec`); `job`: the settings the job's
    entrypoint and runtime environment add to the driver."""
    head = of_type(spec.get("headGroupSpec"), dict)
    pods = [_ray_pod(f"{key}.headGroupSpec", head)]
    pods += [_ray_pod(f"{key}.workerGroupSpecs.{i}", g) for i, g in _dicts(spec.get("workerGroupSpecs"))]
    places = {p.key: _container_settings(p.key, p.container) for p in pods}
    autoscaling = spec.get("enableInTreeAutoscaling") is True
    if autoscaling:
        options = of_type(spec.get("autoscalerOptions"), dict)
        places[f"{key}.autoscalerOptions"] = _container_settings(f"{key}.autoscalerOptions", options)
    yield from _head_exposure_problems(f"{key}.headGroupSpec", head)
    yield from _cluster_storage_problems(pods, places, job)
    yield from _cluster_auth_problems(key, spec, places, job)
    yield from _cluster_gpu_problems(key, spec, pods[1:], autoscaling)


def _head_exposure_problems(key: str, head: dict[str, Any]) -> Iterator[Problem]:
    if head.get("serviceType") in OUTSIDE_SERVICE_TYPES:
        yield Problem(
            f"{key}.serviceType",
            head["serviceType"],
            f"exposes the head outside the cluster; {_PORT_FORWARD}",
        )
    if head.get("enableIngress") is True:
        yield Problem(
            f"{key}.enableIngress", True, f"exposes the dashboard outside the cluster; {_PORT_FORWARD}"
        )
    head_service = of_type(head.get("headService"), dict)
    yield from _service_problems(f"{key}.headService.spec", of_type(head_service.get("spec"), dict))


def _cluster_storage_problems(
    pods: list[_RayPod], places: dict[str, list[Setting]], job: list[Setting]
) -> Iterator[Problem]:
    """The driver (Ray Tune, on the head) picks the storage; any other container that sets it must agree
    that it is shared; cloud storage is reached as a ServiceAccount, not as the node."""
    driver = places[pods[0].key] + job
    yield from storage_problems(
        driver, "not set on the head's Ray container (env) or by the job's entrypoint"
    )
    for found in list(places.values())[1:]:
        if any(s.name == STORAGE_VAR for s in found):
            yield from storage_problems(found, "")
    storage = next((s.value for s in reversed(driver) if s.name == STORAGE_VAR), None)
    if storage and storage.startswith(WORKLOAD_IDENTITY_SCHEMES):
        for pod in pods:
            if not pod.pod.get("serviceAccountName"):
                yield Problem(
                    f"{pod.pod_key}.serviceAccountName",
                    None,
                    f"unset: pods would reach {storage.split('://')[0]}:// with the node's identity; run "
                    "them as a ServiceAccount bound to a cloud role (IRSA on EKS, Workload Identity on GKE)",
                )


def _cluster_auth_problems(
    key: str, spec: dict[str, Any], places: dict[str, list[Setting]], job: list[Setting]
) -> Iterator[Problem]:
    yield from auth_mode_problems([s for found in places.values() for s in found] + job)
    auth = spec.get("authOptions")
    if isinstance(auth, dict):
        if auth.get("mode", "token") != "token":
            yield Problem(
                f"{key}.authOptions.mode", auth.get("mode"), "token authentication must stay on (mode: token)"
            )
        return
    for place, found in places.items():
        yield from _token_problems(place, found)


def _cluster_gpu_problems(
    key: str, spec: dict[str, Any], workers: list[_RayPod], autoscaling: bool
) -> Iterator[Problem]:
    groups = [
        WorkerGroup(
            str(pod.group.get("groupName", pod.pod_key)),
            _gpu_count(pod.container, of_type(pod.group.get("rayStartParams"), dict)),
            group_floors(pod.group, pod.pod_key.removesuffix(".template.spec"), ("minReplicas", "replicas")),
        )
        for pod in workers
    ]
    yield from gpu_problems(groups, f"{key}.workerGroupSpecs", "worker group", "nvidia.com/gpu limits")
    if any(g.gpus for g in groups) and not autoscaling:
        yield Problem(
            f"{key}.enableInTreeAutoscaling",
            spec.get("enableInTreeAutoscaling"),
            "GPU groups start at zero and only Ray's autoscaler adds their pods: set it to true",
        )


def _token_problems(place: str, settings: list[Setting]) -> Iterator[Problem]:
    """A container without `authOptions` must set token auth and read the token from a Secret."""
    if not sets_token_auth(settings):
        if not any(s.name == AUTH_VAR for s in settings):  # another mode: auth_mode_problems names it
            yield Problem(
                place, None, "does not set RAY_AUTH_MODE=token (env), and the cluster has no authOptions"
            )
    elif not any((s.name == TOKEN_VAR and s.secret) or s.name == "RAY_AUTH_TOKEN_PATH" for s in settings):
        yield Problem(
            place,
            None,
            "RAY_AUTH_MODE=token without a token: set RAY_AUTH_TOKEN from a Secret (valueFrom.secretKeyRef)",
        )


def _ray_job_problems(spec: dict[str, Any]) -> Iterator[Problem]:
    entrypoint = str(spec.get("entrypoint", ""))
    job = list(assignments("spec.entrypoint", entrypoint))
    if _SWEEP.search(entrypoint) and "--address" not in entrypoint:
        yield Problem(
            "spec.entrypoint",
            entrypoint,
            "`ovit-ray sweep` without --address starts a private Ray inside the job; add --address auto",
        )
    if "runtimeEnvYAML" in spec:
        try:
            runtime = safe_load_bounded(str(spec["runtimeEnvYAML"]))
        except (yaml.YAMLError, ValueError, RecursionError) as err:
            yield Problem(
                "spec.runtimeEnvYAML", "<text>", f"not valid YAML ({short_repr(' '.join(str(err).split()))})"
            )
            runtime = str(spec["runtimeEnvYAML"])  # still scanned for credentials, as text
        yield from secret_problems(runtime, "spec.runtimeEnvYAML")
        env_vars = of_type(of_type(runtime, dict).get("env_vars"), dict)
        job += [Setting(f"spec.runtimeEnvYAML.env_vars.{n}", str(n), str(v)) for n, v in env_vars.items()]
    cluster = spec.get("rayClusterSpec")
    auth = None
    if isinstance(cluster, dict):
        yield from _ray_cluster_problems("spec.rayClusterSpec", cluster, job)
        auth = cluster.get("authOptions")
    else:
        yield from auth_mode_problems(job)
    if spec.get("submissionMode", "K8sJobMode") == "K8sJobMode" and not isinstance(auth, dict):
        template = spec.get("submitterPodTemplate")
        if not isinstance(template, dict):
            yield Problem(
                "spec.submitterPodTemplate",
                None,
                "missing: KubeRay's default submitter carries no Ray token, so `ray job submit` is refused; "
                "give one whose container sets RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from the Secret",
            )
        else:
            submitter = _ray_pod("spec", spec, "submitterPodTemplate")
            yield from _token_problems(submitter.key, _container_settings(submitter.key, submitter.container))
