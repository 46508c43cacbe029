"""Credentials never travel through our files, URIs, params or logs: one place that says what a
secret looks like (a key name, a URI part) and keeps Tune from copying cloud keys into trials.

Light on purpose (no MLflow, no Ray at import): cluster-file lint, sweep-file validation and the
tracking client all use it, at `--help` speed.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

SECRET_WORDS = frozenset(
    {"token", "password", "passwd", "secret", "key", "apikey", "credential", "credentials"}
)
# Tune copies these from the driver into every trial's runtime environment, which Ray logs in
# plain text (runtime_env_agent.log): cloud credentials come from instance profiles / workload identity.
PROPAGATED_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def _words(key: str) -> list[str]:
    """``apiKey`` -> api, key; ``db.password`` -> db, password."""
    return [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()) if w]


def is_secret_key(key: str) -> bool:
    """True for keys that look like credentials (``hf_token``, ``apiKey``, ``db.password``)."""
    return any(w in SECRET_WORDS for w in _words(key))


# Last words of keys that name where a credential is kept, not the credential itself.
REFERENCE_WORDS = frozenset({"path", "file", "name", "ref", "dir"})


def holds_secret(key: str) -> bool:
    """True for keys whose value is a credential itself: ``is_secret_key`` minus places and references
    (``RAY_AUTH_TOKEN_PATH``, ``secretName``, AWS ``KeyName``) and a bare ``key`` (a Kubernetes
    ``secretKeyRef.key`` or selector key names an entry, it holds no value)."""
    words = _words(key)
    return is_secret_key(key) and words != ["key"] and words[-1] not in REFERENCE_WORDS


# Parameter names that carry a credential in a URL, beyond `is_secret_key`'s words: libpq's `sslpassword`,
# signed URLs (`X-Amz-Signature`), `auth`, `session`, `jwt`, `bearer` (a bare `key`, as in `sslkey=PATH`, is not).
_SECRET_PARAM = re.compile(r"pass|token|secret|apikey|sig|auth|session|jwt|bearer|cred", re.I)
# A `name=` after any URL delimiter (`;token=` path parameters, `&password=`, `?a=1;token=`).
_PARAM = re.compile(r"[;?&#/,]\s*([A-Za-z0-9_.\-]+)\s*=")


def uri_secret(uri: str) -> str | None:
    """Where ``uri`` carries a credential (userinfo, a token-like parameter in its query or path, also
    percent-encoded, a fragment), else None. In a `sqlite:` URL the path is a file name: only its query counts."""
    if "://" not in uri:
        return None  # a plain path: `?` and `#` are file name characters
    if re.search(r"//[^/@]*@", uri):
        return "a user or password"
    scheme, rest = uri.split("://", 1)
    if scheme.lower().startswith("sqlite"):
        rest = rest.partition("?")[2]
        rest = f"?{rest}" if rest else ""
    for _ in range(3):  # `%3Btoken%3D`, also encoded twice
        rest = unquote(rest)
    secret = sorted(
        {name for name in _PARAM.findall(rest) if is_secret_key(name) or _SECRET_PARAM.search(name)}
    )
    if secret:
        return f"a secret parameter ({', '.join(secret)[:80]})"
    if not scheme.lower().startswith("sqlite") and urlsplit(uri).fragment:
        return "a fragment (where tokens are passed)"
    return None


def redact_uri(uri: str) -> str:
    """Scheme and host only (no userinfo, path, query or fragment): safe to log or store."""
    parts = urlsplit(uri) if "://" in uri else None
    return f"{parts.scheme}://{parts.hostname or ''}/..." if parts else "a path"


def check_no_credentials(uri: str, what: str = "MLflow tracking URI") -> str:
    """Refuse a URI carrying a credential anywhere (an MLflow URI, an Optuna storage, `storage:`):
    credentials come from the environment or the client's own files (``MLFLOW_TRACKING_USERNAME``/
    ``_PASSWORD``/``_TOKEN``, ``PGPASSWORD`` / ``~/.pgpass``, instance profiles / workload identity), never
    from a URI that would land in params, ``sweep.json``, logs, ``ps`` output and the outbox. The URI
    itself is never echoed (only its scheme and host)."""
    where = uri_secret(uri)
    if where is not None:
        raise ValueError(
            f"{what} must not carry credentials, got {redact_uri(uri)} with {where}; put them in the "
            "environment (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, PGPASSWORD or ~/.pgpass for a database) "
            "or use instance profiles / workload identity for cloud storage"
        )
    return uri


# Credentials in free text (a traceback, an error line, a command line): a URL carrying one, and a
# `name=VALUE` pair or `--name VALUE` flag whose name ends like a credential's (`access_token`,
# `MLFLOW_TRACKING_PASSWORD`, `aws_secret_access_key`; not `token_share` or `sslkey`).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_SECRET_NAME = re.compile(r"(token|passw(or)?d|secret|api_?key|[_-]key|credentials?|signature)$", re.I)
_PAIR = re.compile(r"([A-Za-z0-9_.\-]+)=([^\s'\",;&)\]}]+)")


def redact_text(text: str) -> str:
    """`text` with every URL that carries a credential cut to its scheme and host, and the value of every
    credential-named `name=VALUE` replaced: what a crash log or an error line may keep (issue 24.4)."""
    text = _URL.sub(lambda m: redact_uri(m.group(0)) if uri_secret(m.group(0)) else m.group(0), text)
    return _PAIR.sub(
        lambda m: f"{m.group(1)}=<redacted>" if _SECRET_NAME.search(m.group(1)) else m.group(0), text
    )


def redact_argv(argv: list[str]) -> list[str]:
    """A command line safe to log: `redact_text` on each word, and the word after a `--password`-like flag."""
    return [
        "<redacted>"
        if i and argv[i - 1].startswith("-") and _SECRET_NAME.search(argv[i - 1])
        else redact_text(w)
        for i, w in enumerate(argv)
    ]
