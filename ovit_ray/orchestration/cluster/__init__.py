"""Ray clusters: offline checks of cluster files (Ray cluster-launcher YAML and KubeRay manifests, one
set of rules), and multi-node clusters on one machine."""
