"""API keys: where they come from, how a request presents one, how it is checked."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Iterable
from typing import Any

from werkzeug.datastructures import Headers

from function.core.config import Config, parse_keys
from function.core.errors import NotReady, Unauthorized

log = logging.getLogger("modelrun.auth")


class KeyRing:
    """The set of valid keys; several at once so that rotation has an overlap."""

    def __init__(self, keys: Iterable[str] | None = None) -> None:
        self._digests: tuple[bytes, ...] | None = None
        if keys is not None:
            self.replace(keys)

    @property
    def loaded(self) -> bool:
        return self._digests is not None

    def replace(self, keys: Iterable[str]) -> None:
        # Keep digests, not keys: equal lengths make compare_digest's time independent of the key.
        self._digests = tuple(_digest(k) for k in keys)

    def check(self, presented: str | None) -> str:
        """Return the caller's identity (the key's digest) or raise; the time taken does not
        depend on which key matched."""
        digests = self._digests
        if digests is None:
            raise NotReady("API keys are not loaded yet; no request is served without them")
        if not presented:
            raise Unauthorized(
                "an API key is required: send X-API-Key or Authorization: Bearer", "missing"
            )
        given = _digest(presented)
        matched = False
        for digest in digests:
            matched |= hmac.compare_digest(given, digest)
        if not matched:
            raise Unauthorized("the API key is not valid", "invalid")
        return given.hex()


def presented_key(headers: Headers) -> str | None:
    """Return the key from X-API-Key, or from Authorization: Bearer."""
    key = headers.get("X-API-Key")
    if key:
        return key.strip()
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def client_address(headers: Headers, peer: str | None) -> str:
    """The client's address, for throttling its wrong keys: the last X-Forwarded-For entry, which
    the front end (Cloud Run's) appends and a client cannot forge, else the connection's peer."""
    forwarded = (headers.get("X-Forwarded-For") or "").rsplit(",", 1)[-1].strip()
    return forwarded[:64] or peer or "unknown"


class SecretKeySource:
    """Read keys from a Secret Manager secret version, now and then again on an interval."""

    def __init__(self, config: Config, ring: KeyRing) -> None:
        self.name = config.api_keys_secret or ""
        self.interval = config.api_keys_refresh_seconds
        self.emulator = config.secret_manager_emulator_host
        self.timeout = config.store_timeout_seconds
        self.ring = ring
        self._client: Any = None
        self._stop = threading.Event()

    def refresh(self) -> bool:
        """Load the secret into the ring; on failure keep the keys already loaded."""
        from google.api_core import exceptions as gexc

        try:
            response = self._secret_client().access_secret_version(
                name=self.name, timeout=self.timeout, retry=None
            )
            keys = parse_keys(response.payload.data.decode("utf-8"))
        except (gexc.GoogleAPIError, ValueError, UnicodeDecodeError) as e:
            state = "keeping the keys loaded before" if self.ring.loaded else "failing closed"
            log.error("cannot read API keys from %s (%s): %s", self.name, state, _reason(e))
            return False
        self.ring.replace(keys)
        log.info("loaded %d API key(s) from %s", len(keys), self.name)
        return True

    def run(self) -> None:
        """Refresh until stopped: at the interval once loaded, sooner while nothing is."""
        while not self._stop.is_set():
            loaded = self.refresh()
            self._stop.wait(self.interval if loaded else min(self.interval, 5.0))

    def stop(self) -> None:
        self._stop.set()

    def _secret_client(self) -> Any:
        if self._client is None:
            from google.cloud import secretmanager

            if self.emulator:  # tests and local emulators: plain gRPC, no credentials
                import grpc
                from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (  # noqa: E501
                    SecretManagerServiceGrpcTransport,
                )

                channel = grpc.insecure_channel(self.emulator)
                transport = SecretManagerServiceGrpcTransport(channel=channel)
                self._client = secretmanager.SecretManagerServiceClient(transport=transport)
            else:
                self._client = secretmanager.SecretManagerServiceClient()
        return self._client


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _reason(error: Exception) -> str:
    # Never the payload: a ValueError from parse_keys names counts, not keys.
    return f"{type(error).__name__}: {getattr(error, 'message', None) or error}"
