"""Small shared pieces of orchestration: YAML reading, stop signals, atomic writes, ports, secrets."""
