"""`ovit-ray cluster validate` on KubeRay manifests: the shipped k8s/ files pass, and each broken copy
fails with one line naming the file, the document, the key and the value (never a credential)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ovit_ray.cli.main import main

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
SHIPPED = sorted(K8S.glob("*.yaml"))
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example secret key
Docs = list[dict[str, Any]]


def _load(name: str) -> Docs:
    """The file's documents, with YAML aliases (the shared env lists) turned into independent copies."""
    return [json.loads(json.dumps(d)) for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _of(docs: Docs, kind: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind)


def _run(tmp_path: Path, docs: Docs, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, Path]:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    rc = main(["cluster", "validate", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, path


def _cluster(docs: Docs) -> dict[str, Any]:
    """The Ray cluster spec of the RayCluster or RayJob among `docs`."""
    for doc in docs:
        if doc["kind"] == "RayCluster":
            return doc["spec"]
        if doc["kind"] == "RayJob":
            return doc["spec"]["rayClusterSpec"]
    raise AssertionError("no Ray cluster in the documents")


def _env(container: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in container["env"] if e["name"] == name)


def _head(docs: Docs) -> dict[str, Any]:
    return _cluster(docs)["headGroupSpec"]["template"]["spec"]["containers"][0]


def _gpu1(docs: Docs) -> dict[str, Any]:
    return next(g for g in _cluster(docs)["workerGroupSpecs"] if g["groupName"] == "gpu1")


def test_shipped_manifests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    names = {p.name for p in SHIPPED}
    assert names >= {"raycluster.yaml", "rayjob.yaml", "serviceaccount.yaml", "mlflow.yaml", "storage.yaml"}
    assert main(["cluster", "validate", *map(str, SHIPPED), str(REPO / "cluster.yaml")]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{p}: ok" for p in [*SHIPPED, REPO / "cluster.yaml"]]


def test_shipped_manifests_have_the_promised_shape() -> None:
    """What the validator does not demand but the issue does: autoscaling from zero, GPU limits, the
    token from a Secret, workload identity annotations, and no Secret object shipped at all."""
    kinds = {d["kind"] for p in SHIPPED for d in _load(p.name)}
    assert "Secret" not in kinds and {"RayCluster", "RayJob", "ServiceAccount", "Service"} <= kinds
    for name in ("raycluster.yaml", "rayjob.yaml"):
        docs = _load(name)
        spec = _cluster(docs)
        assert spec["enableInTreeAutoscaling"] is True
        assert {
            g["groupName"]: g["template"]["spec"]["containers"][0]["resources"]["limits"].get(
                "nvidia.com/gpu", 0
            )
            for g in spec["workerGroupSpecs"]
        } == {"cpu": 0, "gpu1": 1, "gpu8": 8}
        assert all(g["minReplicas"] == 0 and g["replicas"] == 0 for g in spec["workerGroupSpecs"])
        assert _env(_head(docs), "RAY_AUTH_TOKEN")["valueFrom"]["secretKeyRef"]["name"] == "ovit-ray-auth"
        assert _env(_head(docs), "OVIT_RAY_STORAGE")["value"].startswith("s3://")
    annotations = _of(_load("serviceaccount.yaml"), "ServiceAccount")["metadata"]["annotations"]
    assert {"eks.amazonaws.com/role-arn", "iam.gke.io/gcp-service-account"} <= set(annotations)
    job = _of(_load("rayjob.yaml"), "RayJob")["spec"]
    assert job["entrypoint"].startswith("ovit-ray sweep /sweeps/") and "--address auto" in job["entrypoint"]


def _public_load_balancer(docs: Docs) -> None:
    _of(docs, "Service")["spec"]["type"] = "LoadBalancer"


def _load_balancer_public_halves(docs: Docs) -> None:
    spec = _of(docs, "Service")["spec"]
    spec.update(type="LoadBalancer", loadBalancerSourceRanges=["0.0.0.0/1", "128.0.0.0/1"])


def _node_port_head(docs: Docs) -> None:
    _cluster(docs)["headGroupSpec"]["serviceType"] = "NodePort"


def _no_token_auth(docs: Docs) -> None:
    gpu1 = _gpu1(docs)["template"]["spec"]["containers"][0]
    gpu1["env"] = [e for e in gpu1["env"] if not e["name"].startswith("RAY_AUTH")]


def _auth_disabled(docs: Docs) -> None:
    _env(_head(docs), "RAY_AUTH_MODE")["value"] = "disabled"


def _auth_options_disabled(docs: Docs) -> None:
    _cluster(docs)["authOptions"] = {"mode": "disabled"}


def _literal_aws_keys(docs: Docs) -> None:
    _head(docs)["env"] += [
        {"name": "AWS_ACCESS_KEY_ID", "value": "AKIAIOSFODNN7EXAMPLE"},
        {"name": "AWS_SECRET_ACCESS_KEY", "value": SECRET},
    ]


def _literal_token(docs: Docs) -> None:
    _env(_head(docs), "RAY_AUTH_TOKEN").pop("valueFrom")
    _env(_head(docs), "RAY_AUTH_TOKEN")["value"] = SECRET


def _warm_gpu(docs: Docs) -> None:
    _gpu1(docs)["minReplicas"] = 1


def _gpu_replicas(docs: Docs) -> None:
    _gpu1(docs)["replicas"] = 2


def _no_autoscaler(docs: Docs) -> None:
    _cluster(docs)["enableInTreeAutoscaling"] = False


def _local_storage(docs: Docs) -> None:
    for group in [_cluster(docs)["headGroupSpec"], *_cluster(docs)["workerGroupSpecs"]]:
        _env(group["template"]["spec"]["containers"][0], "OVIT_RAY_STORAGE")["value"] = "/home/ray/results"
    _env({"env": _cluster(docs)["autoscalerOptions"]["env"]}, "OVIT_RAY_STORAGE")["value"] = (
        "/home/ray/results"
    )


def _dashboard_on_node_network(docs: Docs) -> None:
    _cluster(docs)["headGroupSpec"]["template"]["spec"]["hostNetwork"] = True


def _dashboard_host_port(docs: Docs) -> None:
    _head(docs)["ports"][1]["hostPort"] = 8265


def _no_service_account(docs: Docs) -> None:
    del _gpu1(docs)["template"]["spec"]["serviceAccountName"]


def _ingress(docs: Docs) -> None:
    docs.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "dashboard"},
            "spec": {"defaultBackend": {"service": {"name": "ovit-ray-head-svc", "port": {"number": 8265}}}},
        }
    )


def _secret_with_token(docs: Docs) -> None:
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ovit-ray-auth"},
            "stringData": {"auth_token": SECRET},
        }
    )


def _no_submitter(docs: Docs) -> None:
    del _of(docs, "RayJob")["spec"]["submitterPodTemplate"]


def _submitter_without_token(docs: Docs) -> None:
    _of(docs, "RayJob")["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["env"] = []


def _sweep_without_address(docs: Docs) -> None:
    _of(docs, "RayJob")["spec"]["entrypoint"] = "ovit-ray sweep /sweeps/sweep.yaml --out /results/sweep"


def _runtime_env_secret(docs: Docs) -> None:
    _of(docs, "RayJob")["spec"]["runtimeEnvYAML"] = f"env_vars:\n  HF_TOKEN: {SECRET}\n"


def _sweep_configmap_with_password(docs: Docs) -> None:
    sweep = (REPO / "sweeps" / "quickstart.yaml").read_text()
    sweep += "mlflow: {experiment: q, tracking_uri: 'http://bob:hunter2hunter2@mlflow:5000'}\n"
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ovit-ray-sweep"},
            "data": {"sweep.yaml": sweep},
        }
    )


R, J = "raycluster.yaml", "rayjob.yaml"
HEAD = "spec.headGroupSpec.template.spec.containers.0"
JOB_HEAD = "spec.rayClusterSpec.headGroupSpec.template.spec.containers.0"
BROKEN: dict[str, tuple[str, Callable[[Docs], None], str]] = {
    "public LoadBalancer": (
        "mlflow.yaml",
        _public_load_balancer,
        "document 2 (Service ovit-ray-mlflow): spec.type: 'LoadBalancer': a load balancer reachable from every address",
    ),
    "LoadBalancer open to public halves": (
        "mlflow.yaml",
        _load_balancer_public_halves,
        "spec.type: 'LoadBalancer': a load balancer reachable from public addresses (0.0.0.0/1, 128.0.0.0/1)",
    ),
    "NodePort head": (
        R,
        _node_port_head,
        "spec.headGroupSpec.serviceType: 'NodePort': exposes the head outside",
    ),
    "no token auth": (
        R,
        _no_token_auth,
        "spec.workerGroupSpecs.1.template.spec.containers.0: None: does not set RAY_AUTH_MODE=token",
    ),
    "auth disabled": (
        R,
        _auth_disabled,
        f"{HEAD}.env.0: 'RAY_AUTH_MODE=disabled': token authentication must stay on",
    ),
    "authOptions disabled": (
        R,
        _auth_options_disabled,
        "spec.authOptions.mode: 'disabled': token authentication",
    ),
    "literal AWS keys": (
        R,
        _literal_aws_keys,
        f"{HEAD}.env.5.value: 'AWS_SECRET_ACCESS_KEY=<redacted>': a literal",
    ),
    "literal token": (
        R,
        _literal_token,
        f"{HEAD}.env.1.value: 'RAY_AUTH_TOKEN=<redacted>': a literal credential",
    ),
    "GPU minReplicas 1": (
        R,
        _warm_gpu,
        "spec.workerGroupSpecs.1.minReplicas: 1: GPU nodes must scale to zero",
    ),
    "GPU replicas 2": (R, _gpu_replicas, "spec.workerGroupSpecs.1.replicas: 2: GPU nodes must scale to zero"),
    "no autoscaler": (R, _no_autoscaler, "spec.enableInTreeAutoscaling: False: GPU groups start at zero"),
    "local storage": (
        R,
        _local_storage,
        f"{HEAD}.env.2 (OVIT_RAY_STORAGE): '/home/ray/results': storage must be shared",
    ),
    "dashboard on the node network": (
        R,
        _dashboard_on_node_network,
        "spec.headGroupSpec.template.spec.hostNetwork: True: puts the pod on the node's network",
    ),
    "dashboard hostPort": (
        R,
        _dashboard_host_port,
        f"{HEAD}.ports.1.hostPort: 8265: opens the port on the node",
    ),
    "no ServiceAccount": (
        R,
        _no_service_account,
        "spec.workerGroupSpecs.1.template.spec.serviceAccountName: None: unset: pods would reach s3://",
    ),
    "Ingress": (R, _ingress, "document 2 (Ingress dashboard): kind: 'Ingress': an Ingress exposes"),
    "Secret with a token": (
        R,
        _secret_with_token,
        "document 2 (Secret ovit-ray-auth): stringData.auth_token: '<redacted>'",
    ),
    "job: GPU minReplicas 1": (
        J,
        _warm_gpu,
        "spec.rayClusterSpec.workerGroupSpecs.1.minReplicas: 1: GPU nodes",
    ),
    "job: literal AWS keys": (
        J,
        _literal_aws_keys,
        f"{JOB_HEAD}.env.5.value: 'AWS_SECRET_ACCESS_KEY=<redacted>'",
    ),
    "job: no submitter": (
        J,
        _no_submitter,
        "spec.submitterPodTemplate: None: missing: KubeRay's default submitter",
    ),
    "job: submitter without token": (
        J,
        _submitter_without_token,
        "spec.submitterPodTemplate.spec.containers.0: None: does not set RAY_AUTH_MODE=token",
    ),
    "job: sweep without --address": (J, _sweep_without_address, "without --address starts a private Ray"),
    "job: secret in runtimeEnvYAML": (
        J,
        _runtime_env_secret,
        "spec.runtimeEnvYAML.env_vars.HF_TOKEN: '<redacted>': a literal credential",
    ),
    "sweep ConfigMap with a password": (
        J,
        _sweep_configmap_with_password,
        "document 2 (ConfigMap ovit-ray-sweep): data.sweep.yaml: '<redacted>': contains a password in a URL",
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_copy_fails_naming_document_key_and_value(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, mutate, expected = BROKEN[name]
    docs = _load(source)
    mutate(docs)
    rc, out, path = _run(tmp_path, docs, capsys)
    assert rc == 2
    assert f"{path}: document " in out and expected in out, out
    assert SECRET not in out and "AKIAIOSFODNN7EXAMPLE" not in out and "hunter2" not in out
    assert not out.rstrip().endswith(": ok")


def test_auth_options_replace_the_per_container_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """KubeRay >= 1.5.1 sets RAY_AUTH_MODE and RAY_AUTH_TOKEN on every container from `authOptions`."""
    docs = _load(J)
    spec = _of(docs, "RayJob")["spec"]
    spec["rayClusterSpec"]["authOptions"] = {"mode": "token"}
    del spec["submitterPodTemplate"]
    for group in [spec["rayClusterSpec"]["headGroupSpec"], *spec["rayClusterSpec"]["workerGroupSpecs"]]:
        container = group["template"]["spec"]["containers"][0]
        container["env"] = [e for e in container["env"] if not e["name"].startswith("RAY_AUTH")]
    rc, out, path = _run(tmp_path, docs, capsys)
    assert (rc, out) == (0, f"{path}: ok\n")


def test_private_load_balancer_and_plain_sweep_configmap_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = _load("mlflow.yaml")
    _of(docs, "Service")["spec"].update(type="LoadBalancer", loadBalancerSourceRanges=["10.0.0.0/8"])
    sweep = (REPO / "sweeps" / "quickstart.yaml").read_text()
    docs.append(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"sweep.yaml": sweep}}
    )
    rc, out, path = _run(tmp_path, docs, capsys)
    assert (rc, out) == (0, f"{path}: ok\n")


def test_every_problem_of_every_document_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = _load(J)
    for mutate in (_warm_gpu, _no_submitter, _literal_aws_keys, _ingress, _secret_with_token):
        mutate(docs)
    rc, out, _ = _run(tmp_path, docs, capsys)
    assert rc == 2 and len(out.splitlines()) >= 6, out
    assert {line.split(": ")[1].split(" (")[0] for line in out.splitlines()} == {
        "document 1",
        "document 2",
        "document 3",
    }


def test_mixed_or_odd_files_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A non-object document among manifests is a problem line; a launcher file in two documents or a
    list is one error line on stderr naming both accepted shapes."""
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(yaml.safe_dump_all([*_load("serviceaccount.yaml"), ["not", "an", "object"]]))
    two = tmp_path / "two.yaml"
    two.write_text("cluster_name: a\n---\ncluster_name: b\n")
    assert main(["cluster", "validate", str(mixed), str(two)]) == 2
    out, err = capsys.readouterr()
    assert f"{mixed}: document 2: (document): ['not', 'an', 'object']: not a Kubernetes object" in out
    (line,) = err.strip().splitlines()
    assert "2 YAML documents" in line and "apiVersion and kind" in line
