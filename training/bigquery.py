"""A BigQuery query over its REST API (jobs.query, then jobs.getQueryResults page by page).

Not through google-cloud-bigquery: it requires python-dateutil<3, against the service's 4.0. One
query with named scalar parameters, its rows as dicts; that is all `evaluate --bigquery` needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import requests

from training.errors import TrainingError, reason

API = "https://bigquery.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/bigquery"
WAIT_MS = 10_000  # how long BigQuery holds each call open for the job to finish
# The f/v rows' values are text (or None): each scalar type read back; other types stay text.
_READ: dict[str, Callable[[str], Any]] = {
    "INTEGER": int, "INT64": int, "FLOAT": float, "FLOAT64": float,
    "BOOLEAN": lambda v: v == "true", "BOOL": lambda v: v == "true",
}  # fmt: skip


def session() -> tuple[str, requests.Session]:
    """BigQuery's endpoint and a session for it: BIGQUERY_EMULATOR_HOST (google-cloud-bigquery's
    own variable, a URL) is a stand-in that takes no credentials; else Application Default
    Credentials."""
    emulator = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if emulator:
        return emulator.rstrip("/"), requests.Session()
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError
    from google.auth.transport.requests import AuthorizedSession

    try:
        credentials, _ = google.auth.default(scopes=[SCOPE])
    except DefaultCredentialsError as e:
        raise TrainingError(f"BigQuery needs Google credentials: {e}") from e
    return API, AuthorizedSession(credentials)


def query(
    project: str,
    sql: str,
    parameters: dict[str, tuple[str, str]],
    what: str,
    page_rows: int | None = None,
) -> list[dict[str, Any]]:
    """Run `sql` in `project` with named parameters (name: (type, value as text)); return every
    row. `what` names the data in errors; `page_rows` caps each page (BigQuery's default: 10 MB)."""
    endpoint, http = session()
    jobs = f"{endpoint}/bigquery/v2/projects/{project}/queries"
    named = [
        {"name": name, "parameterType": {"type": kind}, "parameterValue": {"value": value}}
        for name, (kind, value) in parameters.items()
    ]
    body: dict[str, Any] = {"query": sql, "useLegacySql": False, "parameterMode": "NAMED",
                            "queryParameters": named, "timeoutMs": WAIT_MS}  # fmt: skip
    if page_rows:
        body["maxResults"] = page_rows
    page = _call(http, "POST", jobs, what, json=body)
    job = page["jobReference"]
    results = f"{jobs}/{job['jobId']}"
    base = {"timeoutMs": WAIT_MS, "location": job.get("location"), "maxResults": page_rows}
    while not page.get("jobComplete"):  # BigQuery waits up to WAIT_MS per call: no sleep here
        page = _call(http, "GET", results, what, params=base)
    if page.get("errors"):
        # BigQuery refuses a failed query with an HTTP error; bqemulator 1.4 completes the job
        # and lists the errors (a missing table, bad SQL): either way there are no results.
        raise TrainingError(f"BigQuery {what}: {page['errors'][0].get('message')}")
    rows = _rows(page)
    while page.get("pageToken"):
        page = _call(http, "GET", results, what, params={**base, "pageToken": page["pageToken"]})
        rows += _rows(page)
    return rows


def _call(http: requests.Session, method: str, url: str, what: str, **kwargs: Any) -> Any:
    """One call; an HTTP error or no answer is a TrainingError naming `what` and BigQuery's
    message."""
    try:
        response = http.request(method, url, timeout=WAIT_MS / 1000 + 50, **kwargs)
    except requests.RequestException as e:
        raise TrainingError(f"BigQuery ({url.split('/bigquery/')[0]}): {reason(e)}") from e
    if not response.ok:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200] or response.reason
        raise TrainingError(f"BigQuery {what}: {message} (HTTP {response.status_code})")
    return response.json()


def _rows(page: dict[str, Any]) -> list[dict[str, Any]]:
    """A page's f/v rows as dicts, each value read as its schema type says."""
    fields = page.get("schema", {}).get("fields", [])
    return [
        {f["name"]: None if c["v"] is None else _READ.get(f["type"], str)(c["v"])
         for f, c in zip(fields, row["f"], strict=True)}
        for row in page.get("rows", [])
    ]  # fmt: skip
