"""Write local/.env for `make local` (Docker Compose)."""

from __future__ import annotations

from function.core.store import bucket_store, model_root
from local.mirror import LOCAL, ROOT
from local.serve import NAME, dev_key


def environment(example: str, key: str) -> str:
    """local/.env from the example: the key filled in, the store and the model's root derived
    from MODEL_BUCKET the one way function/core/store.py defines."""
    store = bucket_store(values(example)["MODEL_BUCKET"])
    derived = {"MODELRUN_API_KEY": key, "MODEL_STORE": store, "MODEL_URI": model_root(store, NAME)}
    lines = []
    for line in example.splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={derived[name]}" if name in derived else line)
    return "\n".join(lines) + "\n"


def main() -> None:
    key = dev_key()
    (LOCAL / ".env").write_text(environment((LOCAL / ".env.example").read_text(), key))
    (LOCAL / ".env").chmod(0o600)
    print(f"wrote {(LOCAL / '.env').relative_to(ROOT)}")
    print(addresses(values((LOCAL / ".env").read_text())))


def values(env_file: str) -> dict[str, str]:
    """The KEY=VALUE lines of an env file's text."""
    lines = env_file.splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def addresses(env: dict[str, str]) -> str:
    """Where each part of the mirror answers once `docker compose up` has started it."""
    at = "http://127.0.0.1:"
    return "\n".join([
        f"  prediction API    {at}{env['FUNCTION_PORT']}  (key in local/.env: MODELRUN_API_KEY)",
        f"  Grafana           {at}{env['GRAFANA_PORT']}",
        f"  Prometheus        {at}{env['PROMETHEUS_PORT']}",
        f"  Alertmanager      {at}{env['ALERTMANAGER_PORT']}",
        f"  MLflow (tracking) {at}{env['MLFLOW_PORT']}  "
        f"(train with MLFLOW_TRACKING_URI={at}{env['MLFLOW_PORT']} make train)",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
