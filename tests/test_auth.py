"""Token caching and refresh without blocking the reactor."""

import datetime

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.providers.auth import (
    REFRESH_TIMEOUT,
    CredentialsError,
    GoogleTokenSource,
    service_account_credentials,
)


class ThreadlessReactor(Clock):
    """A clock whose 'thread pool' runs work when the test says so."""

    def __init__(self):
        super().__init__()
        self.queued = []

    def getThreadPool(self):
        return self

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        self.queued.append((on_result, f, args, kwargs))

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)

    def run_threads(self):
        while self.queued:
            on_result, f, args, kwargs = self.queued.pop(0)
            try:
                on_result(True, f(*args, **kwargs))
            except Exception as error:  # what a real pool would hand back
                from twisted.python.failure import Failure

                on_result(False, Failure(error))


class FakeCredentials:
    def __init__(self, lifetime=3600):
        self.refreshes = 0
        self.lifetime = lifetime
        self.token = None
        self.expiry = None

    def refresh(self, request):
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"
        self.expiry = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(
            seconds=self.lifetime
        )


class TokenSourceTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = ThreadlessReactor()
        self.credentials = FakeCredentials()
        self.source = GoogleTokenSource(lambda: self.credentials, self.reactor, self.reactor)

    def test_concurrent_callers_share_one_refresh(self):
        first, second = self.source.token(), self.source.token()
        self.assertNoResult(first)
        self.reactor.run_threads()
        self.assertEqual(self.successResultOf(first), "token-1")
        self.assertEqual(self.successResultOf(second), "token-1")
        self.assertEqual(self.credentials.refreshes, 1)

    def test_token_is_cached_then_refreshed_in_the_background_while_still_valid(self):
        self.source.token()
        self.reactor.run_threads()
        self.reactor.advance(3600 - 301)
        self.assertEqual(self.successResultOf(self.source.token()), "token-1")
        self.assertEqual(self.reactor.queued, [])
        self.reactor.advance(2)
        # Inside the refresh margin: the valid token is handed out, the refresh runs meanwhile.
        self.assertEqual(self.successResultOf(self.source.token()), "token-1")
        self.assertEqual(self.successResultOf(self.source.token()), "token-1")
        self.assertEqual(len(self.reactor.queued), 1)
        self.reactor.run_threads()
        self.assertEqual(self.successResultOf(self.source.token()), "token-2")

    def test_failed_refresh_fails_waiters_at_once_and_is_retried_with_backoff(self):
        def broken(request):
            raise RuntimeError("invalid_grant: bad signature")

        self.credentials.refresh = broken
        pending = self.source.token()
        self.reactor.run_threads()
        failure = self.failureResultOf(pending, CredentialsError)
        self.assertIn("invalid_grant", str(failure.value))
        # Until the retry is due, callers are answered at once, without a refresh of their own.
        self.failureResultOf(self.source.token(), CredentialsError)
        self.assertEqual(self.reactor.queued, [])
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.queued), 1)
        self.reactor.run_threads()
        self.reactor.advance(1.5)
        self.assertEqual(self.reactor.queued, [])  # the second retry waits 2 s
        self.reactor.advance(0.5)
        del self.credentials.refresh
        self.reactor.run_threads()
        self.assertEqual(self.successResultOf(self.source.token()), "token-1")
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_refresh_that_never_returns_answers_its_waiters_at_the_deadline(self):
        pending = self.source.token()
        self.reactor.advance(REFRESH_TIMEOUT)
        failure = self.failureResultOf(pending, CredentialsError)
        self.assertIn("did not answer", str(failure.value))
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.queued), 1)  # no second thread while the first is held
        self.reactor.run_threads()  # the late answer is still taken
        self.assertEqual(self.successResultOf(self.source.token()), "token-1")

    def test_a_still_valid_token_is_used_while_refreshes_fail(self):
        self.source.token()
        self.reactor.run_threads()
        self.reactor.advance(3600 - 299)

        def broken(request):
            raise RuntimeError("Connection refused")

        self.credentials.refresh = broken
        for _ in range(5):
            self.assertEqual(self.successResultOf(self.source.token()), "token-1")
            self.reactor.run_threads()
            self.reactor.advance(30)
        self.reactor.advance(3600)
        self.failureResultOf(self.source.token(), CredentialsError)


def test_service_account_errors_never_quote_the_key():
    secret = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----SECRETSTUFF"}'
    try:
        service_account_credentials(secret)
    except CredentialsError as error:
        assert "SECRETSTUFF" not in str(error)
    else:
        raise AssertionError("a key without client_email or token_uri must be refused")


def test_not_json_is_refused_without_echo():
    try:
        service_account_credentials("{not json SECRETSTUFF")
    except CredentialsError as error:
        assert "SECRETSTUFF" not in str(error)
    else:
        raise AssertionError("invalid JSON must be refused")
