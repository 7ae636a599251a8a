"""Service configuration: read once from the environment, checked all at once."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from function.core.artifact import SHA256_PATTERN
from function.core.errors import ConfigError, ModelrunError
from function.core.signing import Trust, load_public_keys
from function.core.storage import STORE, parse_uri
from function.core.store import check_version_id

MIN_KEY_LENGTH = 16
MAX_WORKERS = 64
VERTEX_MAX_REQUEST_BYTES = 1_500_000  # Vertex AI online prediction's request size limit
ENVIRONMENTS = ("production", "development")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
RUNTIMES = ("auto", "onnx", "numpy", "sklearn")
HEADER_TEXT = re.compile(r"\A[\x20-\x7e\xa0-\xff]*\Z")  # visible Latin-1 and spaces
SECRET_PATTERN = re.compile(r"^projects/[^/]+/secrets/[^/]+/versions/[^/]+$")
T = TypeVar("T")


@dataclass(frozen=True)
class Config:
    """Every setting the service reads; see the README's configuration table."""

    model_uri: str
    model_version: str = "current"
    model_sha256: str | None = None
    api_keys: frozenset[str] = frozenset()
    api_keys_secret: str | None = None
    api_keys_refresh_seconds: float = 300.0
    secret_manager_emulator_host: str | None = None
    environment: str = "production"
    max_request_bytes: int = 1_048_576
    max_instances_per_request: int = 1000
    store_timeout_seconds: float = 10.0
    log_level: str = "INFO"
    metrics_public: bool = False
    metrics_port: int = 0  # a second port serving /metrics without a key (0: none)
    metrics_host: str = "127.0.0.1"
    model_refresh_seconds: float = 0.0
    rate_limit_per_second: float = 100.0
    rate_limit_burst: int = 200
    cors_origins: tuple[str, ...] = ()
    request_timeout_seconds: float = 0.0
    allow_pickle: bool = True
    # Which versions load: signed by MODEL_PUBLIC_KEY; unsigned ones with ALLOW_UNSIGNED_MODELS.
    trust: Trust = field(default_factory=Trust)
    model_runtime: str = "auto"
    micro_batching: bool = True
    batch_max_rows: int = 256
    batch_max_wait_ms: float = 2.0
    workers: int = 1  # gunicorn's worker processes (functions-framework reads WORKERS too)
    revision: str | None = None  # K_REVISION: the Cloud Run revision this instance belongs to
    drift_features: frozenset[str] | None = None  # watched for drift (None: all)
    model_memory_mb: float = 0.0  # a worker's models (current + a rollout's candidate); 0: no cap
    ui: bool = True  # the pages (function/service/pages.py): off by default under Vertex AI
    vertex: bool = False  # started by Vertex AI (AIP_HTTP_PORT set): it authenticates callers
    vertex_health_route: str | None = None
    vertex_predict_route: str | None = None
    # Payload records (function/service/payloads.py): the share of requests recorded (0: off),
    # features recorded as a keyed digest or dropped, and a local folder of JSONL files.
    payload_sample_rate: float = 0.0
    payload_redact: tuple[tuple[str, str], ...] = ()  # (feature, "digest" or "drop")
    payload_digest_key: str | None = field(default=None, repr=False)
    payload_dir: Path | None = None

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.api_keys_secret)


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a
    container's --cpus, a Cloud Run instance's vCPUs): the container's default WORKERS.

    One Python process runs Python on one core at a time (the GIL): a worker per CPU uses them.
    """
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity is the limit
    return cpus


def load_config(environ: Mapping[str, str]) -> Config:
    """Build the Config from an environment; raise ConfigError naming the variable and value."""

    def get(name: str) -> str | None:
        value = environ.get(name, "").strip()
        return value or None

    def parsed(name: str, parse: Callable[[str], T], default: T, secret: bool = False) -> T:
        raw = get(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except (ValueError, ModelrunError) as e:
            shown = "(value not shown)" if secret else repr(raw)
            raise ConfigError(f"{name}={shown} is invalid: {e}", setting=name) from e

    vertex = get("AIP_HTTP_PORT") is not None
    # On Vertex AI the model comes from the artifact URI it was registered with.
    model_uri = get("MODEL_URI") or get("AIP_STORAGE_URI")
    if model_uri is None:
        raise ConfigError(
            "MODEL_URI is required, e.g. gs://BUCKET/models/iris or file:///abs/iris",
            setting="MODEL_URI",
        )
    parsed("MODEL_URI", lambda uri: parse_uri(uri, STORE), None)
    api_keys: frozenset[str] = parsed("API_KEYS", parse_keys, frozenset(), secret=True)
    config = Config(
        model_uri=model_uri,
        model_version=parsed("MODEL_VERSION", parse_version, "current"),
        model_sha256=parsed("MODEL_SHA256", parse_sha256, None),
        api_keys=api_keys,
        api_keys_secret=parsed("API_KEYS_SECRET", _secret_name, None),
        api_keys_refresh_seconds=parsed("API_KEYS_REFRESH_SECONDS", parse_seconds, 300.0),
        secret_manager_emulator_host=get("SECRET_MANAGER_EMULATOR_HOST"),
        environment=parsed("ENVIRONMENT", _choice(ENVIRONMENTS, str.lower), "production"),
        max_request_bytes=parsed("MAX_REQUEST_BYTES", _positive_int, 1_048_576),
        max_instances_per_request=parsed("MAX_INSTANCES_PER_REQUEST", _positive_int, 1000),
        store_timeout_seconds=parsed("STORE_TIMEOUT_SECONDS", parse_seconds, 10.0),
        log_level=parsed("LOG_LEVEL", _choice(LOG_LEVELS, str.upper), "INFO"),
        metrics_public=parsed("METRICS_PUBLIC", parse_boolean, False),
        metrics_port=parsed("METRICS_PORT", _port, 0),
        metrics_host=get("METRICS_HOST") or "127.0.0.1",
        model_refresh_seconds=parsed("MODEL_REFRESH_SECONDS", _non_negative, 0.0),
        rate_limit_per_second=parsed("RATE_LIMIT_PER_SECOND", _non_negative, 100.0),
        rate_limit_burst=parsed("RATE_LIMIT_BURST", _positive_int, 200),
        cors_origins=parsed("CORS_ORIGINS", _origins, ()),
        # The request time limit (function/service/deadline.py); Cloud Run's own, set by infra.
        request_timeout_seconds=parsed("CLOUD_RUN_TIMEOUT_SECONDS", _non_negative, 0.0),
        allow_pickle=parsed("ALLOW_PICKLE", parse_boolean, True),
        trust=load_trust(environ),
        model_runtime=parsed("MODEL_RUNTIME", _choice(RUNTIMES, str.lower), "auto"),
        micro_batching=parsed("MICRO_BATCHING", parse_boolean, True),
        batch_max_rows=parsed("BATCH_MAX_ROWS", _positive_int, 256),
        batch_max_wait_ms=parsed("BATCH_MAX_WAIT_MS", _non_negative, 2.0),
        workers=parsed("WORKERS", _workers, 1),  # main.py sets it to usable_cpus() if unset
        drift_features=parsed("DRIFT_FEATURES", _feature_names, None),
        model_memory_mb=parsed("MODEL_MEMORY_MB", _megabytes, 0.0),
        # Vertex AI forwards only its two routes: pages there would be unreachable.
        ui=parsed("UI", parse_boolean, not vertex),
        revision=get("K_REVISION"),  # set by Cloud Run
        vertex=vertex,
        vertex_health_route=parsed("AIP_HEALTH_ROUTE", _route, None),
        vertex_predict_route=parsed("AIP_PREDICT_ROUTE", _route, None),
        payload_sample_rate=parsed("PAYLOAD_SAMPLE_RATE", _rate, 0.0),
        payload_redact=parsed("PAYLOAD_REDACT", parse_redaction, ()),
        payload_digest_key=parsed("PAYLOAD_DIGEST_KEY", _digest_key, None, secret=True),
        payload_dir=parsed("PAYLOAD_DIR", _folder, None),
    )
    digested = [name for name, mode in config.payload_redact if mode == "digest"]
    if digested and config.payload_sample_rate > 0 and not config.payload_digest_key:
        raise ConfigError(
            f"PAYLOAD_REDACT records {', '.join(digested)} as a digest: set PAYLOAD_DIGEST_KEY "
            "(16 characters or more), the key that keeps a digest from being reversed by trying "
            "every likely value"
        )
    if config.model_refresh_seconds and config.model_version != "current":
        raise ConfigError(
            f"MODEL_REFRESH_SECONDS follows current.json, but MODEL_VERSION pins "
            f"{config.model_version!r}: unset one of them",
            setting="MODEL_REFRESH_SECONDS",
        )
    if config.model_refresh_seconds and config.model_sha256:
        raise ConfigError(
            "MODEL_REFRESH_SECONDS follows current.json, but MODEL_SHA256 pins one model: "
            "unset one of them",
            setting="MODEL_REFRESH_SECONDS",
        )
    refuse_onnx_pin(config.model_runtime, config.model_sha256)
    serving_port = get("AIP_HTTP_PORT") or get("PORT") or "8080"
    if config.metrics_port and str(config.metrics_port) == serving_port:
        raise ConfigError(
            f"METRICS_PORT={config.metrics_port} is the serving port: the keyless metrics port "
            "must be another one",
            setting="METRICS_PORT",
        )
    if "*" in config.cors_origins and config.environment != "development":
        raise ConfigError(
            "CORS_ORIGINS='*' is refused in production: list the origins", setting="CORS_ORIGINS"
        )
    if config.api_keys and config.api_keys_secret:
        raise ConfigError("set API_KEYS or API_KEYS_SECRET, not both")
    if config.vertex and config.max_request_bytes > VERTEX_MAX_REQUEST_BYTES:
        raise ConfigError(
            f"MAX_REQUEST_BYTES={config.max_request_bytes} exceeds Vertex AI's request limit "
            f"of {VERTEX_MAX_REQUEST_BYTES} bytes",
            setting="MAX_REQUEST_BYTES",
        )
    # Vertex AI endpoints admit only callers its IAM allows; the app's keys stay optional there.
    if not config.auth_enabled and not config.vertex and config.environment != "development":
        raise ConfigError(
            "no API key is configured: set API_KEYS or API_KEYS_SECRET "
            "(ENVIRONMENT=development runs without keys, for a laptop only)"
        )
    return config


def load_trust(environ: Mapping[str, str]) -> Trust:
    """MODEL_PUBLIC_KEY and ALLOW_UNSIGNED_MODELS: which versions load (the service's rule, and
    the batch job's)."""
    raw = environ.get("MODEL_PUBLIC_KEY", "").strip()
    try:
        keys = load_public_keys(raw) if raw else ()
    except ValueError as e:  # the value not shown: a PEM is long, and the error says what is wrong
        raise ConfigError(f"MODEL_PUBLIC_KEY is invalid: {e}", setting="MODEL_PUBLIC_KEY") from e
    unsigned = environ.get("ALLOW_UNSIGNED_MODELS", "").strip() or "false"
    try:
        return Trust(keys, parse_boolean(unsigned))
    except ValueError as e:
        raise ConfigError(
            f"ALLOW_UNSIGNED_MODELS={unsigned!r} is invalid: {e}", setting="ALLOW_UNSIGNED_MODELS"
        ) from e


def parse_keys(raw: str) -> frozenset[str]:
    """Split a comma- or newline-separated key list; refuse short keys without echoing them."""
    keys = frozenset(k.strip() for k in re.split(r"[,\n]", raw) if k.strip())
    if not keys:
        raise ValueError("holds no key")
    short = sum(1 for k in keys if len(k) < MIN_KEY_LENGTH)
    if short:
        raise ValueError(f"{short} key(s) are shorter than {MIN_KEY_LENGTH} characters")
    # A header carries Latin-1 text without control characters (RFC 9110, 5.5; werkzeug decodes
    # headers as Latin-1): any other key could never be presented, so it could never authenticate.
    unsendable = sum(1 for k in keys if not HEADER_TEXT.match(k))
    if unsendable:
        raise ValueError(
            f"{unsendable} key(s) hold a character an HTTP header cannot carry (outside "
            "Latin-1, or a control character)"
        )
    return keys


REDACTIONS = ("digest", "drop")


def parse_redaction(raw: str) -> tuple[tuple[str, str], ...]:
    """PAYLOAD_REDACT: `feature` (a digest), `feature:digest` or `feature:drop`, by commas."""
    rules: dict[str, str] = {}
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        name, _, mode = item.partition(":")
        name, mode = name.strip(), (mode.strip().lower() or "digest")
        if not name:
            raise ValueError(f"{item!r} names no feature")
        if mode not in REDACTIONS:
            raise ValueError(f"{item!r}: expected {name}:digest or {name}:drop")
        if name in rules:
            raise ValueError(f"{name} is named twice")
        rules[name] = mode
    if not rules:
        raise ValueError("expected feature names, each optionally :digest or :drop")
    return tuple(rules.items())


def _rate(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError("expected a share of requests from 0 (off) to 1 (every request)")
    return value


def _digest_key(raw: str) -> str:
    if len(raw) < MIN_KEY_LENGTH:
        raise ValueError(f"is shorter than {MIN_KEY_LENGTH} characters")
    return raw


def _folder(raw: str) -> Path:
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError("is a file, not a folder")
    return path


def _feature_names(raw: str) -> frozenset[str] | None:
    """DRIFT_FEATURES: all, none, or feature names separated by commas."""
    if raw.lower() == "all":
        return None
    if raw.lower() == "none":
        return frozenset()
    names = frozenset(n.strip() for n in raw.split(",") if n.strip())
    if not names:
        raise ValueError("expected all, none, or feature names separated by commas")
    return names


def _non_negative(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < float("inf"):
        raise ValueError("expected a number of seconds, 0 or more")
    return value


def _megabytes(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < float("inf"):
        raise ValueError("expected a number of MiB, 0 or more (0: no limit)")
    return value


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
    return origins


def _route(raw: str) -> str:
    if not re.match(r"^/[A-Za-z0-9._~:@!$&'()*+,;=/-]*$", raw):
        raise ValueError("expected a path starting with /")
    return raw


def parse_boolean(raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise ValueError("expected true or false")
    return raw.lower() == "true"


def parse_version(raw: str) -> str:
    if raw != "current":
        check_version_id(raw)
    return raw


def parse_sha256(raw: str) -> str:
    if not SHA256_PATTERN.match(raw.lower()):
        raise ValueError("expected 64 hexadecimal characters")
    return raw.lower()


def _secret_name(raw: str) -> str:
    if not SECRET_PATTERN.match(raw):
        raise ValueError("expected projects/PROJECT/secrets/SECRET/versions/VERSION")
    return raw


def refuse_onnx_pin(runtime: str, sha256: str | None) -> None:
    """A pin names the joblib model's digest: the ONNX and numpy runtimes, which serve other
    files, cannot honour it (the service's rule, and the batch's)."""
    if runtime in ("onnx", "numpy") and sha256:
        raise ConfigError(
            f"MODEL_SHA256 pins the joblib model's digest; MODEL_RUNTIME={runtime} cannot "
            "honour it",
            setting="MODEL_SHA256",
        )


def parse_seconds(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return value


def _workers(text: str) -> int:
    workers = int(text)
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"must be between 1 and {MAX_WORKERS}")
    return workers


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number, 1 to 65535 (0: none)")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("expected a positive whole number")
    return value


def _choice(choices: tuple[str, ...], normalise: Callable[[str], str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = normalise(raw)
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse
