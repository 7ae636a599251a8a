"""The deploy's smoke test: the service is ready, and it answers a prediction for the model it
serves, whatever that model is. Run by .github/workflows/deploy.yml after `pulumi up`; not part
of the Pulumi program.

    API_KEY=... [ID_TOKEN=...] python infra/smoke_test.py https://SERVICE-URL

The row comes from the served model's own metadata (`input_example`, each feature's training
median; zeros by feature name for a model published before it was recorded). With
modelrun:invokerAccess iam, Cloud Run also wants an identity token: ID_TOKEN goes in
Authorization, the API key in X-API-Key. Standard library only, so it runs before any install.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

READY_WAIT_SECONDS = 120


class SmokeTestFailed(Exception):
    """The deployed service did not pass; the message says which step and what it answered."""


def call(url: str, headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
    """GET (or POST a JSON body); return the status and the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 (https URL)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")[:500]
        return e.code, text


def example_row(metadata: dict[str, Any]) -> dict[str, Any]:
    """A row for this model: its recorded example, else a zero for each named feature."""
    example = metadata.get("input_example")
    if isinstance(example, dict) and example:
        return example
    names = metadata.get("feature_names") or []
    if not names:
        raise SmokeTestFailed("GET /model: the metadata names no features to build a row from")
    return {name: 0.0 for name in names}


def smoke_test(base: str, api_key: str, id_token: str | None = None) -> str:
    """Run the checks against `base`; return a one-line summary, or raise SmokeTestFailed."""
    base = base.rstrip("/")
    headers = {"X-API-Key": api_key}
    if id_token:
        headers["Authorization"] = f"Bearer {id_token}"
    deadline = time.monotonic() + READY_WAIT_SECONDS
    status, answer = call(f"{base}/ready", headers)
    while status not in (200, 401, 403) and time.monotonic() < deadline:  # a refusal is final
        time.sleep(5)
        status, answer = call(f"{base}/ready", headers)
    if status != 200:
        raise SmokeTestFailed(f"GET /ready answered {status}: {answer}")
    status, metadata = call(f"{base}/model", headers)
    if status != 200 or not isinstance(metadata, dict):
        raise SmokeTestFailed(f"GET /model answered {status}: {metadata}")
    row = example_row(metadata)
    status, answer = call(f"{base}/predict", headers, {"instances": [row]})
    if status != 200 or not isinstance(answer, dict) or len(answer.get("predictions", [])) != 1:
        raise SmokeTestFailed(f"POST /predict {json.dumps(row)} answered {status}: {answer}")
    model = answer.get("model", {})
    return (
        f"{model.get('name')} version {model.get('version')} predicted "
        f"{answer['predictions'][0]!r} for {json.dumps(row)}"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not os.environ.get("API_KEY"):
        print("usage: API_KEY=... [ID_TOKEN=...] smoke_test.py SERVICE_URL", file=sys.stderr)
        return 2
    try:
        print(smoke_test(argv[1], os.environ["API_KEY"], os.environ.get("ID_TOKEN") or None))
    except SmokeTestFailed as e:
        print(f"smoke test failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
