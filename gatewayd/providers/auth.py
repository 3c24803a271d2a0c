"""Google OAuth tokens for upstream calls, without blocking the reactor.

google-auth refreshes synchronously (it posts to the key's ``token_uri``
through urllib3, google-auth's lightest public transport: its ``requests``
transport adds 4 MB to the idle daemon), so each refresh runs in the reactor's thread pool.  A token is
reused until shortly before it expires, and concurrent requests share one
refresh in flight instead of starting their own.

A token endpoint that fails, closes or never answers holds nobody for long:
the refresh has socket timeouts (so its thread ends) and a deadline in the
reactor (so its waiters are answered), a failed refresh answers its waiters at
once and is retried in the background with a growing delay, and a token that
is still valid is handed out meanwhile.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Callable, Protocol

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"

#: Refresh this many seconds before Google says the token expires.
REFRESH_MARGIN = 300.0
#: Stop handing a token out this many seconds before it expires (a request takes a while).
EXPIRY_MARGIN = 30.0
#: Seconds to connect to the token endpoint, and for a whole refresh.
REFRESH_CONNECT_TIMEOUT = 5.0
REFRESH_TIMEOUT = 10.0
#: A failed refresh is retried after 1, 2, 4 ... seconds, at most this many.
RETRY_MAX_DELAY = 60.0


class TokenSource(Protocol):
    """Something that hands out a currently valid bearer token."""

    def token(self) -> Deferred[str]: ...


class CredentialsError(Exception):
    """Credentials could not be built or refreshed; the message holds no secret."""


def service_account_credentials(key_json: str, token_url: str | None = None) -> Any:
    """Build service-account credentials from the key file's JSON text.

    The key's own ``token_uri`` is honoured, so a key for a private token
    endpoint (or the test suite's fake) works like Google's; ``token_url``
    (the target's ``gcp_oauth_token_url``, Kong's override) replaces it.
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
    if token_url:
        info = {**info, "token_uri": token_url}
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

    # No retries of urllib3's own: a failed refresh is retried by GoogleTokenSource, with backoff.
    timeout = urllib3.Timeout(connect=REFRESH_CONNECT_TIMEOUT, read=REFRESH_TIMEOUT)
    with urllib3.PoolManager(timeout=timeout, retries=False) as http:
        credentials.refresh(Request(http))
    return credentials.token, credentials.expiry


@define
class GoogleTokenSource:
    """Caches a google-auth credential's token and refreshes it in a thread.

    ``make_credentials`` runs in the thread pool too, the first time a token is
    needed, because Application Default Credentials may ask a metadata server.
    Between ``REFRESH_MARGIN`` and ``EXPIRY_MARGIN`` before expiry the token is
    still handed out while a refresh runs (or fails) in the background; without
    a usable token, callers wait for the refresh, or, while a failed one waits
    for its retry, are answered at once with its error.
    """

    make_credentials: Callable[[], Any]
    reactor: IReactorTime
    threads: IReactorThreads
    _credentials: Any = field(default=None, init=False)
    _token: str | None = field(default=None, init=False, repr=False)
    _refresh_at: float = field(default=0.0, init=False)
    _expires_at: float = field(default=0.0, init=False)
    _pending: list[Deferred[str]] = field(factory=list, init=False)
    _running: bool = field(default=False, init=False)  # a refresh thread has not returned
    _deadline: IDelayedCall | None = field(default=None, init=False)
    _retry: IDelayedCall | None = field(default=None, init=False)
    _failures: int = field(default=0, init=False)
    _error: CredentialsError | None = field(default=None, init=False)

    log = Logger()

    def start(self) -> None:
        """Fetch a token now, so the first request does not wait for a refresh."""
        self.token().addErrback(lambda failure: None)  # _failed has logged it

    def token(self) -> Deferred[str]:
        now = self.reactor.seconds()
        if self._token is not None and now < self._expires_at:
            if now >= self._refresh_at:
                self._refresh_soon()
            return succeed(self._token)
        if self._error is not None and self._retry is not None:
            return fail(self._error)  # the last refresh failed; its retry is not due yet
        waiter: Deferred[str] = Deferred()
        self._pending.append(waiter)
        self._refresh_soon()
        return waiter

    def _refresh_soon(self) -> None:
        if not self._running and self._retry is None:
            self._start_refresh()

    def _start_refresh(self) -> None:
        pool = self.threads.getThreadPool()

        def work() -> tuple[str, datetime.datetime | None]:
            if self._credentials is None:
                self._credentials = self.make_credentials()
            return _refresh(self._credentials)

        self._running = True
        self._deadline = self.reactor.callLater(REFRESH_TIMEOUT, self._timed_out)
        deferToThreadPool(self.reactor, pool, work).addBoth(self._done)

    def _timed_out(self) -> None:
        self._deadline = None
        self._failed(f"the token endpoint did not answer within {REFRESH_TIMEOUT:g}s")

    def _done(self, outcome: tuple[str, datetime.datetime | None] | Failure) -> None:
        self._running = False
        timed_out = self._deadline is None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if not isinstance(outcome, Failure):
            self._refreshed(outcome)
        elif not timed_out:
            # RefreshError carries the token endpoint's answer, never the key or a token.
            self._failed(f"{type(outcome.value).__name__}: {outcome.value}")
        elif self._retry is None:
            self._start_refresh()  # the retry came due while this late attempt still ran

    def _refreshed(self, result: tuple[str, datetime.datetime | None]) -> None:
        token, expiry = result
        lifetime = 3600.0
        if expiry is not None:
            now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            lifetime = (expiry.replace(tzinfo=None) - now).total_seconds()
        seconds = self.reactor.seconds()
        self._token = token
        self._refresh_at = seconds + max(0.0, lifetime - REFRESH_MARGIN)
        self._expires_at = seconds + max(0.0, lifetime - EXPIRY_MARGIN)
        if self._failures:
            self.log.info("Google access token refreshed after {failures} failed attempts, valid "
                          "for {lifetime:.0f}s", failures=self._failures, lifetime=lifetime)
        else:
            self.log.info("Google access token refreshed, valid for {lifetime:.0f}s", lifetime=lifetime)
        self._failures, self._error = 0, None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for waiter in self._take_pending():
            waiter.callback(token)

    def _failed(self, reason: str) -> None:
        self._failures += 1
        delay = min(RETRY_MAX_DELAY, 2.0 ** (self._failures - 1))
        remaining = self._expires_at - self.reactor.seconds() if self._token is not None else 0.0
        self.log.error(
            "Google token refresh failed ({failures} in a row): {reason}; retrying in {delay:g}s; "
            "{still}",
            failures=self._failures,
            reason=reason,
            delay=delay,
            still=(f"the current token stays in use for {remaining:.0f}s more" if remaining > 0
                   else "requests that need a token are refused meanwhile"),
        )
        self._error = CredentialsError(f"could not obtain a Google access token ({reason})")
        if self._retry is None:
            self._retry = self.reactor.callLater(delay, self._retry_due)
        for waiter in self._take_pending():
            waiter.errback(self._error)

    def _retry_due(self) -> None:
        self._retry = None
        if not self._running:  # else the late attempt's end starts the next one
            self._start_refresh()

    def _take_pending(self) -> list[Deferred[str]]:
        pending, self._pending = self._pending, []
        return pending
