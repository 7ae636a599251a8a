"""Configuration: read once from a mapping; every bad value is named, no secret is echoed."""

from __future__ import annotations

import pytest

from function.config import load_config
from function.errors import ConfigError

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
            "ENVIRONMENT": "Development",
            "MAX_REQUEST_BYTES": "2048",
            "MAX_INSTANCES_PER_REQUEST": "10",
            "STORE_TIMEOUT_SECONDS": "3",
            "LOG_LEVEL": "debug",
        }
    )

    assert config.model_version == "v7"
    assert config.model_sha256 == "a" * 64
    assert config.api_keys_secret == "projects/p/secrets/s/versions/latest"
    assert config.api_keys_refresh_seconds == 60
    assert config.environment == "development"
    assert (config.max_request_bytes, config.max_instances_per_request) == (2048, 10)
    assert config.log_level == "DEBUG"


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
