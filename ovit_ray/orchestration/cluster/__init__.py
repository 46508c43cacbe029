"""Ray clusters: checks of cluster-launcher files, multi-node clusters on one machine."""
