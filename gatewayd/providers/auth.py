"""Google OAuth tokens for upstream calls, without blocking the reactor.

google-auth refreshes synchronously (it posts to the key's ``token_uri``
through urllib3, google-auth's lightest public transport: its ``requests``
transport adds 4 MB to the idle daemon), so each refresh runs in the reactor's thread pool.  A token is
reused until shortly before it expires, and concurrent requests share one
refresh in flight instead of starting their own.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Callable, Protocol

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"

#: Refresh this many seconds before Google says the token expires.
REFRESH_MARGIN = 300.0


class TokenSource(Protocol):
    """Something that hands out a currently valid bearer token."""

    def token(self) -> Deferred[str]: ...


class CredentialsError(Exception):
    """Credentials could not be built or refreshed; the message holds no secret."""


def service_account_credentials(key_json: str) -> Any:
    """Build service-account credentials from the key file's JSON text.

    The key's own ``token_uri`` is honoured, so a key for a private token
    endpoint (or the test suite's fake) works like Google's.
    """
    from google.oauth2 import service_account

    try:
        info = json.loads(key_json)
    except ValueError:
        hint = ""
        if key_json.lstrip().startswith("{") and "\n" not in key_json.strip():
            # What systemd makes of an unquoted multi-line value: its first line.
            hint = " (only one line: in a systemd EnvironmentFile, put a multi-line key in single quotes)"
        raise CredentialsError(f"gcp_service_account_json is not valid JSON{hint}") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise CredentialsError("gcp_service_account_json is not a service-account key")
    try:
        return service_account.Credentials.from_service_account_info(
            info, scopes=[CLOUD_PLATFORM]
        )
    except (ValueError, KeyError) as error:
        # google-auth names the missing field; it never quotes the key itself.
        raise CredentialsError(
            f"gcp_service_account_json cannot be used: {type(error).__name__}: {error}"
        ) from None


def default_credentials() -> Any:
    """Application Default Credentials (blocking: call it in a thread)."""
    import google.auth

    credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM])
    return credentials


def _refresh(credentials: Any) -> tuple[str, datetime.datetime | None]:
    import urllib3
    from google.auth.transport.urllib3 import Request

    with urllib3.PoolManager() as http:
        credentials.refresh(Request(http))
    return credentials.token, credentials.expiry


@define
class GoogleTokenSource:
    """Caches a google-auth credential's token and refreshes it in a thread.

    ``make_credentials`` runs in the thread pool too, the first time a token is
    needed, because Application Default Credentials may ask a metadata server.
    """

    make_credentials: Callable[[], Any]
    reactor: IReactorTime
    threads: IReactorThreads
    _credentials: Any = field(default=None, init=False)
    _token: str | None = field(default=None, init=False, repr=False)
    _valid_until: float = field(default=0.0, init=False)
    _pending: list[Deferred[str]] | None = field(default=None, init=False)

    log = Logger()

    def token(self) -> Deferred[str]:
        if self._token is not None and self.reactor.seconds() < self._valid_until:
            return succeed(self._token)
        waiter: Deferred[str] = Deferred()
        if self._pending is None:
            self._pending = [waiter]
            self._start_refresh()
        else:
            self._pending.append(waiter)
        return waiter

    def _start_refresh(self) -> None:
        pool = self.threads.getThreadPool()

        def work() -> tuple[str, datetime.datetime | None]:
            if self._credentials is None:
                self._credentials = self.make_credentials()
            return _refresh(self._credentials)

        deferToThreadPool(self.reactor, pool, work).addCallbacks(self._refreshed, self._failed)

    def _refreshed(self, result: tuple[str, datetime.datetime | None]) -> None:
        token, expiry = result
        lifetime = 3600.0
        if expiry is not None:
            now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            lifetime = (expiry.replace(tzinfo=None) - now).total_seconds()
        self._token = token
        self._valid_until = self.reactor.seconds() + max(0.0, lifetime - REFRESH_MARGIN)
        self.log.info("Google access token refreshed, valid for {lifetime:.0f}s", lifetime=lifetime)
        for waiter in self._take_pending():
            waiter.callback(token)

    def _failed(self, failure: Any) -> None:
        error = failure.value
        # RefreshError carries the token endpoint's answer, never the key or a token.
        reason = f"{type(error).__name__}: {error}"
        self.log.error("Google token refresh failed: {reason}", reason=reason)
        for waiter in self._take_pending():
            waiter.errback(CredentialsError(f"could not obtain a Google access token ({reason})"))

    def _take_pending(self) -> list[Deferred[str]]:
        pending, self._pending = self._pending or [], None
        return pending

