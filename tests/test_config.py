"""Configuration: read once from a mapping; every bad value is named, no secret is echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from function.core.config import load_config
from function.core.errors import ConfigError

KEY = "k" * 20
BASE = {"MODEL_URI": "gs://bucket/models/iris", "API_KEYS": KEY}


def test_defaults() -> None:
    config = load_config(BASE)

    assert config.model_version == "current"
    assert config.model_sha256 is None
    assert config.api_keys == frozenset({KEY})
    assert config.environment == "production"
    assert config.max_request_bytes == 1_048_576
    assert config.max_instances_per_request == 1000


def test_every_setting_is_read() -> None:
    config = load_config(
        {
            "MODEL_URI": "file:///srv/models/iris",
            "MODEL_VERSION": "v7",
            "MODEL_SHA256": "A" * 64,
            "API_KEYS_SECRET": "projects/p/secrets/s/versions/latest",
            "API_KEYS_REFRESH_SECONDS": "60",
            "SECRET_MANAGER_EMULATOR_HOST": "127.0.0.1:9999",
            "ENVIRONMENT": "Development",
            "MAX_REQUEST_BYTES": "2048",
            "MAX_INSTANCES_PER_REQUEST": "10",
            "STORE_TIMEOUT_SECONDS": "3",
            "LOG_LEVEL": "debug",
            "METRICS_PUBLIC": "TRUE",
            "RATE_LIMIT_PER_SECOND": "7.5",
            "RATE_LIMIT_BURST": "9",
            "CORS_ORIGINS": "https://a.example.com/, http://b.example.com:8080",
            "CLOUD_RUN_TIMEOUT_SECONDS": "12",
            "ALLOW_PICKLE": "false",
            "MODEL_RUNTIME": "SKLEARN",
            "MICRO_BATCHING": "false",
            "BATCH_MAX_ROWS": "64",
            "BATCH_MAX_WAIT_MS": "0.5",
            "WORKERS": "3",
        }
    )

    assert config.model_uri == "file:///srv/models/iris"
    assert config.model_version == "v7"
    assert config.model_sha256 == "a" * 64
    assert config.api_keys_secret == "projects/p/secrets/s/versions/latest"
    assert config.api_keys_refresh_seconds == 60
    assert config.secret_manager_emulator_host == "127.0.0.1:9999"
    assert config.environment == "development"
    assert (config.max_request_bytes, config.max_instances_per_request) == (2048, 10)
    assert config.store_timeout_seconds == 3
    assert config.log_level == "DEBUG"
    assert config.metrics_public is True
    assert (config.rate_limit_per_second, config.rate_limit_burst) == (7.5, 9)
    assert config.cors_origins == ("https://a.example.com", "http://b.example.com:8080")
    assert config.request_timeout_seconds == 12
    assert config.allow_pickle is False
    assert config.model_runtime == "sklearn"
    assert config.micro_batching is False
    assert (config.batch_max_rows, config.batch_max_wait_ms) == (64, 0.5)
    assert config.workers == 3


def test_model_refresh_is_read() -> None:  # it may not be combined with the pins above
    assert load_config({**BASE, "MODEL_REFRESH_SECONDS": "15"}).model_refresh_seconds == 15


def test_vertex_ai_variables_are_read() -> None:
    config = load_config(
        {
            "AIP_HTTP_PORT": "8080",
            "AIP_STORAGE_URI": "gs://b/models/iris",
            "AIP_HEALTH_ROUTE": "/v1/endpoints/1/deployedModels/2",
            "AIP_PREDICT_ROUTE": "/v1/endpoints/1/deployedModels/2:predict",
        }
    )

    assert config.vertex and not config.auth_enabled  # Vertex's IAM admits callers
    assert config.model_uri == "gs://b/models/iris"
    assert config.vertex_health_route == "/v1/endpoints/1/deployedModels/2"
    assert config.vertex_predict_route == "/v1/endpoints/1/deployedModels/2:predict"


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"MODEL_REFRESH_SECONDS": "30", "MODEL_VERSION": "v7"},
            "MODEL_REFRESH_SECONDS follows current.json, but MODEL_VERSION pins 'v7'",
        ),
        (
            {"MODEL_REFRESH_SECONDS": "30", "MODEL_SHA256": "a" * 64},
            "MODEL_REFRESH_SECONDS follows current.json, but MODEL_SHA256 pins one model",
        ),
        (
            {"MODEL_RUNTIME": "onnx", "MODEL_SHA256": "a" * 64},
            "MODEL_RUNTIME=onnx cannot honour it",
        ),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS='*' is refused in production"),
        (
            {"API_KEYS_SECRET": "projects/p/secrets/s/versions/1"},
            "set API_KEYS or API_KEYS_SECRET, not both",
        ),
        (
            {"AIP_HTTP_PORT": "8080", "MAX_REQUEST_BYTES": "2000000"},
            "exceeds Vertex AI's request limit of 1500000 bytes",
        ),
    ],
)
def test_settings_that_contradict_each_other_are_refused(
    change: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({**BASE, **change})

    assert message in str(raised.value)


def test_star_cors_is_allowed_in_development() -> None:
    config = load_config({**BASE, "CORS_ORIGINS": "*", "ENVIRONMENT": "development"})

    assert config.cors_origins == ("*",)


def test_several_keys_for_rotation() -> None:
    config = load_config({**BASE, "API_KEYS": f" {KEY} , {'n' * 20}\n"})

    assert config.api_keys == frozenset({KEY, "n" * 20})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"MODEL_URI": ""}, "MODEL_URI is required"),
        ({"MODEL_URI": "s3://b/m"}, "MODEL_URI='s3://b/m' is invalid"),
        ({"MODEL_VERSION": "../x"}, "MODEL_VERSION='../x' is invalid"),
        ({"MODEL_SHA256": "abc"}, "MODEL_SHA256='abc' is invalid: expected 64 hexadecimal"),
        ({"API_KEYS": ""}, "no API key is configured"),
        ({"API_KEYS": "short"}, "API_KEYS=(value not shown) is invalid: 1 key(s) are shorter"),
        ({"API_KEYS_SECRET": "my-secret"}, "API_KEYS_SECRET='my-secret' is invalid"),
        ({"API_KEYS_REFRESH_SECONDS": "0"}, "API_KEYS_REFRESH_SECONDS='0' is invalid"),
        ({"ENVIRONMENT": "prod"}, "ENVIRONMENT='prod' is invalid: expected one of"),
        ({"MAX_REQUEST_BYTES": "lots"}, "MAX_REQUEST_BYTES='lots' is invalid"),
        ({"MODEL_MEMORY_MB": "-5"}, "MODEL_MEMORY_MB='-5' is invalid: expected a number of MiB"),
        ({"MAX_INSTANCES_PER_REQUEST": "0"}, "MAX_INSTANCES_PER_REQUEST='0' is invalid"),
        ({"STORE_TIMEOUT_SECONDS": "inf"}, "STORE_TIMEOUT_SECONDS='inf' is invalid"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' is invalid"),
        ({"API_KEYS_SECRET": "projects/p/secrets/s/versions/1"}, "not both"),
    ],
)
def test_bad_values_are_named(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({**BASE, **change})

    assert message in str(raised.value)


@pytest.mark.parametrize(
    "change, setting",
    [
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"MODEL_URI": "s3://b/m"}, "MODEL_URI"),
        ({"MODEL_URI": ""}, "MODEL_URI"),
        ({"API_KEYS": "short"}, "API_KEYS"),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
        ({"MODEL_REFRESH_SECONDS": "60", "MODEL_SHA256": "0" * 64}, "MODEL_REFRESH_SECONDS"),
        ({"MODEL_RUNTIME": "onnx", "MODEL_SHA256": "0" * 64}, "MODEL_SHA256"),
        ({"ALLOW_UNSIGNED_MODELS": "yes"}, "ALLOW_UNSIGNED_MODELS"),
        ({"API_KEYS_SECRET": "projects/p/secrets/s/versions/1"}, None),  # two: neither alone
    ],
)
def test_a_refusal_names_its_variable_as_a_field(
    change: dict[str, str], setting: str | None
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({**BASE, **change})

    assert raised.value.setting == setting  # infra maps it to the stack key that sets it


def test_a_short_key_is_never_echoed() -> None:
    secret = "hunter2-secret"
    with pytest.raises(ConfigError) as raised:
        load_config({**BASE, "API_KEYS": f"{KEY},{secret}"})

    assert secret not in str(raised.value)
    assert KEY not in str(raised.value)


def test_no_key_runs_only_in_explicit_development_mode() -> None:
    without_keys = {"MODEL_URI": BASE["MODEL_URI"]}

    with pytest.raises(ConfigError, match="no API key"):
        load_config(without_keys)
    assert not load_config({**without_keys, "ENVIRONMENT": "development"}).auth_enabled


@pytest.mark.parametrize(
    "key", ["key-with-a-snowman-\u2603-0123", "key-\u20ac-euro-sign-0123", "key\twith-tab-0123456",
            "key-with-nul-\x00-0123456", "key-with-del-\x7f-01234567", "key-with-c1-\x85-012345"]
)  # fmt: skip
def test_a_key_no_header_can_carry_is_refused_at_start_unechoed(key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({**BASE, "API_KEYS": f"{KEY},{key}"})

    said = str(raised.value)
    assert said.startswith("API_KEYS=(value not shown) is invalid: 1 key(s) hold a character")
    assert key not in said and KEY not in said


@pytest.mark.slow
def test_a_latin_1_key_is_kept_and_authenticates_on_a_real_server(
    iris_artifact: Path, tmp_path: Path
) -> None:
    import requests

    from function.core.store import ModelStore
    from tests.conftest import run_service

    latin = "cl\u00e9-d'acc\u00e8s-\u00fc-0123456789"
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    with run_service({"MODEL_URI": store.uri, "API_KEYS": latin}, tmp_path) as running:
        # http.client sends a str header as Latin-1, as HTTP/1.1 carries header text.
        response = requests.get(running.url + "/model", headers={"X-API-Key": latin}, timeout=10)

    assert response.status_code == 200, response.text[:300]
