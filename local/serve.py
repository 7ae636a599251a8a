"""`make serve`: the embedded default, or your own model. No cloud, no Docker.

Serves MODEL_URI when it is set; else the model MODEL (default iris) in the store STORE (default
.modelrun/store), training and publishing Iris first if that is the model asked for and nothing
is current yet. Makes a development key (kept in .modelrun/dev-api-key), prints how to call the
API with a row of the served model's own, then runs the same functions-framework command the
container runs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from function.errors import ModelrunError
from function.store import ModelStore, model_root
from local import container
from training.__main__ import main as training

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".modelrun"
NAME = "iris"


def ensure_model(store: str, name: str = NAME) -> str:
    """Return the model's root (MODEL_URI) in the store. Nothing current there: train and
    publish Iris when Iris is asked for, else say how to publish the model asked for."""
    uri = model_root(store, name)
    pointer, _ = ModelStore(uri).current()
    if pointer is None:
        if name != NAME:
            raise SystemExit(
                f"error: no version of {name!r} is current in {store}: publish one with "
                f"`python -m training publish --store {store} ARTIFACT --promote`, "
                "or set MODEL_URI"
            )
        print(f"no model is current in {uri}: training the default Iris model…", flush=True)
        with tempfile.TemporaryDirectory() as out:
            code = training(["train", "--out", out, "--min-accuracy", "0.8"])
            if code == 0:
                # --force: an unpromoted copy of this same model may already be there
                code = training(["publish", "--store", store, out, "--promote", "--force"])
            if code != 0:
                raise SystemExit(code)
    return uri


def example_body(model_uri: str) -> str:
    """A request body for the served model: its recorded example row, else its Iris-like zeros."""
    try:
        metadata = ModelStore(model_uri).resolve()
    except ModelrunError:
        return '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'  # the service will say what is wrong
    row = metadata.get("input_example") or dict.fromkeys(metadata["feature_names"], 0.0)
    return json.dumps({"instances": [row]})


def dev_key() -> str:
    """Return the development key, made once and kept private to this user."""
    path = STATE / "dev-api-key"
    if not path.exists():
        STATE.mkdir(exist_ok=True)
        path.write_text(f"dev-{secrets.token_urlsafe(24)}\n")
        path.chmod(0o600)
    return path.read_text().strip()


SETTINGS = """settings (environment variables, as `make serve` passes them):
  MODEL       the model to serve from STORE (default iris; trained and published if absent)
  MODEL_URI   a model's root to serve instead (gs://BUCKET/models/NAME or file:///ABS/NAME)
  STORE       where models are published (default file://.modelrun/store in the repository)
  PORT        the port (default 8080); HOST the address (default 127.0.0.1)
  RATE_LIMIT_PER_SECOND  per key (default 0: off)"""


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        prog="python -m local.serve",
        description=__doc__,
        epilog=SETTINGS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)  # no flags: --help (before anything is trained or served), or a usage error
    port = os.environ.get("PORT", "8080")
    store = os.environ.get("STORE", (STATE / "store").as_uri())
    try:
        model_uri = os.environ.get("MODEL_URI") or ensure_model(
            store, os.environ.get("MODEL", NAME)
        )
    except ModelrunError as e:
        raise SystemExit(f"error: {e}") from None
    key = dev_key()
    host = os.environ.get("HOST", "127.0.0.1")  # this machine only, unless told otherwise
    rate = os.environ.get("RATE_LIMIT_PER_SECOND", "0")
    url = f"http://localhost:{port}"
    limit = "off" if rate.strip() in ("", "0", "0.0") else f"{rate} requests/s per key"
    print(
        f"""
modelrun is starting on {url} (listening on {host}) with the model {model_uri}
development API key: {key}
rate limit: {limit} in development (set RATE_LIMIT_PER_SECOND to test one)

  open {url}/ in a browser: the prediction page and model card ({url}/docs: the API)

  curl -s {url}/ready
  curl -s -H 'X-API-Key: {key}' -H 'Content-Type: application/json' \\
       -d '{example_body(model_uri)}' {url}/predict

Stop with Ctrl-C.
""",
        flush=True,
    )
    env = container.process_environment(
        {
            "MODEL_URI": model_uri,
            "API_KEYS": key,
            "ENVIRONMENT": "development",
            "PORT": port,
            "HOST": host,
            # A user's own load test should measure the service, not the limiter.
            "RATE_LIMIT_PER_SECOND": rate,
            "HOME": os.environ.get("HOME") or str(STATE),
        }
    )
    argv = container.command()
    program = shutil.which(argv[0], path=env["PATH"])
    if program is None:
        raise SystemExit(f"{argv[0]} is not on PATH: run `make install`")
    os.chdir(ROOT)
    os.execve(program, argv, env)  # noqa: S606 - become the server, as the container does


if __name__ == "__main__":
    main()
