"""Credentials never travel through our files, URIs, params or logs: one place that says what a
secret looks like (a key name, a URI part) and keeps Tune from copying cloud keys into trials.

Light on purpose (no MLflow, no Ray at import): cluster-file lint, sweep-file validation and the
tracking client all use it, at `--help` speed.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

SECRET_WORDS = frozenset(
    {"token", "password", "passwd", "secret", "key", "apikey", "credential", "credentials"}
)
# Tune copies these from the driver into every trial's runtime environment, which Ray logs in
# plain text (runtime_env_agent.log): cloud credentials come from instance profiles / workload identity.
PROPAGATED_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def is_secret_key(key: str) -> bool:
    """True for keys that look like credentials (``hf_token``, ``apiKey``, ``db.password``)."""
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower())
    return any(w in SECRET_WORDS for w in words)


def uri_secret(uri: str) -> str | None:
    """Where ``uri`` carries a credential (userinfo, a token-like query parameter, a fragment), else None."""
    if re.search(r"//[^/@]*@", uri):
        return "a user or password"
    if "://" not in uri:
        return None  # a plain path: `?` and `#` are file name characters
    parts = urlsplit(uri)
    secret = [
        k
        for k, _ in parse_qsl(parts.query, keep_blank_values=True)
        if is_secret_key(k) or re.search(r"sig|auth|session|jwt|bearer|cred", k, re.I)
    ]
    if secret:
        return f"a secret in its query ({', '.join(sorted(set(secret)))[:80]})"
    if parts.fragment:
        return "a fragment (where tokens are passed)"
    return None


def redact_uri(uri: str) -> str:
    """Scheme and host only (no userinfo, path, query or fragment): safe to log or store."""
    parts = urlsplit(uri) if "://" in uri else None
    return f"{parts.scheme}://{parts.hostname or ''}/..." if parts else "a path"


def check_no_credentials(uri: str, what: str = "MLflow tracking URI") -> str:
    """Refuse a URI carrying a credential anywhere: credentials come from the environment only
    (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``, instance profiles / workload identity),
    never from a URI that would land in params, logs, ``ps`` output and the outbox. The URI itself is
    never echoed (only its scheme and host)."""
    where = uri_secret(uri)
    if where is not None:
        raise ValueError(
            f"{what} must not carry credentials, got {redact_uri(uri)} with {where}; put them in the "
            "environment (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN) or use instance profiles / "
            "workload identity for cloud storage"
        )
    return uri


def drop_propagated_secrets() -> None:
    """Stop Tune from copying cloud credentials into trial runtime environments (Tune's own list)."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(PROPAGATED_SECRETS)
