"""X-Request-Id: the id every prediction answer carries, so that its payload record (and later
its feedback) can be found again.

The client's own id is kept when it is a token (RFC 9110's `tchar`s, 1 to 128 of them): it goes
into headers, log lines and BigQuery unquoted. Anything else is refused (400 naming the header)
rather than replaced, since a client that sent an id means to look its answer up by it.
"""

from __future__ import annotations

import re
import uuid

from werkzeug.datastructures import Headers

from function.core.errors import BadRequest
from function.core.records import REQUEST_ID_MAX

HEADER = "X-Request-Id"
TOKEN = re.compile(rf"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{{1,{REQUEST_ID_MAX}}}\Z")


def generated() -> str:
    """A new id: 32 hex digits (uuid4)."""
    return uuid.uuid4().hex


def valid(value: str) -> bool:
    """Whether a value can serve as a request id as it is."""
    return TOKEN.match(value) is not None


def from_headers(headers: Headers) -> str | None:
    """The client's id, None when it sent none; raise 400 when it is not a token."""
    value = headers.get(HEADER)
    if value is None:
        return None
    if not valid(value):
        raise BadRequest(
            f"{HEADER} must be 1 to {REQUEST_ID_MAX} printable ASCII token characters "
            "(letters, digits and !#$%&'*+-.^_`|~), no spaces"
        )
    return value
