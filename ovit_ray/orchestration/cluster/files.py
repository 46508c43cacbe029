"""`ovit-ray cluster validate FILE`: one entry point for both kinds of cluster file, told apart by their
content: Kubernetes manifests (every document has `apiVersion` and `kind`; several per file) or a Ray
cluster-launcher file (one mapping)."""

from __future__ import annotations

from pathlib import Path

from ovit_ray.orchestration.cluster.kuberay import is_manifest, validate_manifests
from ovit_ray.orchestration.cluster.launcher_file import validate_cluster_config
from ovit_ray.orchestration.cluster.rules import Problem
from ovit_ray.orchestration.common.yaml_files import read_yaml_documents


def check_file(path: str | Path) -> list[Problem]:
    """Every problem of the file; ValueError / OSError (one line naming the file) when it cannot be read
    as either kind."""
    documents = read_yaml_documents(path, "cluster file")
    if is_manifest(documents):
        return validate_manifests(documents)
    if len(documents) != 1 or not isinstance(documents[0], dict):
        shape = f"{len(documents)} YAML documents" if len(documents) != 1 else type(documents[0]).__name__
        raise ValueError(
            f"{path}: a cluster-launcher file is one YAML mapping of key: value, and Kubernetes manifests "
            f"have apiVersion and kind; got {shape}"
        )
    return validate_cluster_config(documents[0])
