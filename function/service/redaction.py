"""PAYLOAD_REDACT: features kept out of payload records, for personal data.

`drop` leaves the feature out of the record. `digest` (the default) records
HMAC-SHA256(PAYLOAD_DIGEST_KEY, value) as 16 hex digits: equal values still have equal digests
(counts and joins work), but the value cannot be recovered. A plain hash would not do: an age,
a postcode or a name has few enough likely values that hashing each of them reverses it; without
the key, no such dictionary can be built. 16 hex digits (64 bits) keep accidental collisions out
of any table this service fills.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from function.core.errors import ConfigError
from function.core.records import json_text

DIGEST_HEX = 16


class Redactor:
    """The redaction rules, applied to rows of {feature: value}."""

    def __init__(self, rules: Iterable[tuple[str, str]], key: str | None) -> None:
        self.rules = dict(rules)
        self._key = (key or "").encode()

    def check(self, features: Iterable[str], where: str) -> None:
        """Refuse rules naming a feature the model has not: a renamed feature would otherwise
        be recorded in the clear."""
        names = list(features)
        unknown = sorted(set(self.rules) - set(names))
        if unknown:
            raise ConfigError(
                f"PAYLOAD_REDACT names {', '.join(unknown)}, which {where} has not; its features "
                f"are {', '.join(names)}"
            )

    def digest(self, value: Any) -> str:
        text = json_text(value).encode()
        return hmac.new(self._key, text, hashlib.sha256).hexdigest()[:DIGEST_HEX]

    def apply(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows with each named feature digested or dropped (new dicts)."""
        if not self.rules:
            return rows
        redacted = []
        for row in rows:
            kept = {}
            for name, value in row.items():
                mode = self.rules.get(name)
                if mode is None:
                    kept[name] = value
                elif mode == "digest":
                    kept[name] = None if value is None else self.digest(value)
            redacted.append(kept)
        return redacted
