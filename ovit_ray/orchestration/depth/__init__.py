"""BoundaryDPT runs on Ray: the two-stage run as a Ray Train job (`train`) and as points of a structured sweep's
`depth:` block (`points`)."""
