"""ai-proxy-advanced's calls to its targets: one Messages API request on Gemini.

:class:`AIProxy` reads the client's request, asks the pure translator for a
Gemini body, calls the balancer's targets until one answers, and translates
the answer (or stream) back.  Everything a request did is noted on its
:class:`~gatewayd.exchange.Exchange` for the log record.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any, Awaitable, Callable, Mapping

from attrs import define, frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import TimeoutError as ConnectingTimeout
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.iweb import IResponse
from twisted.web.server import Request
from treq.client import HTTPClient

from gatewayd import errors, jsonwire
from gatewayd.answer import respond_json
from gatewayd.site import MAX_BODY, body_size, request_body
from .balancer import Balancer, BalancerConfig
from gatewayd.exchange import Exchange
from gatewayd.ids import base62_id
from gatewayd.providers.auth import CredentialsError, TokenSource
from gatewayd.providers.gemini import VERTEX_ANTHROPIC_VERSION, Target
from gatewayd.providers.usage import Tokens, kong_usage, tokens_from_anthropic, tokens_from_gemini
from .claude import ClaudePassthrough
from .stream import SSEBridge
from gatewayd.http11 import UpstreamClient
from gatewayd.upstream import ONE_WRITE, TimedBody
from gatewayd.translate import (
    Prepared,
    SignatureMemory,
    TranslationError,
    count_tokens_body,
    count_tokens_from_gemini,
    message_from_gemini,
    prepare,
    translator_for,
)


def message_id() -> str:
    return "msg_" + base62_id(24)


@define
class AIProxy:
    """One ai-proxy-advanced plugin instance, as configured for one snapshot."""

    plugin_id: str
    targets: tuple[Target, ...]
    client: HTTPClient | UpstreamClient
    tokens: Mapping[str, TokenSource]
    reactor: IReactorTime
    signatures: SignatureMemory
    balancer: Balancer
    max_body: int = MAX_BODY
    #: ``response_streaming``: allow, deny or always.
    response_streaming: str = "allow"
    #: ``model_name_header``: X-Kong-LLM-Model on every answer.
    model_name_header: bool = True

    log = Logger()

    @property
    def settings(self) -> BalancerConfig:
        return self.balancer.config

    async def messages(self, request: Request, exchange: Exchange) -> None:
        body = _read_json(request, self.max_body)
        if body.get("stream") is True or self.response_streaming == "always":
            if self.response_streaming == "deny":
                raise errors.invalid_request("response streaming is not enabled for this LLM")
            body = {**body, "stream": True}

        async def attempt(index: int, target: Target) -> None:
            if target.publisher == "anthropic":
                await self._claude(request, exchange, index, target, body)
                return
            try:
                prepared = prepare(target.options_over(body), target.profile, self.signatures)
            except TranslationError as error:
                raise errors.invalid_request(str(error)) from None
            if prepared.dropped_tools:
                exchange.notes.append("tools left out: " + ", ".join(prepared.dropped_tools))
            action = "stream" if prepared.stream else "generate"
            self._note_attempt(exchange, target, action, body, prepared.stream)
            started = self.reactor.seconds()
            response = await self._call(request, exchange, target, action, prepared.body)
            if prepared.stream:
                await self._stream(request, exchange, index, target, prepared, response, started)
                return
            raw = await self._read(request, response, exchange)
            self._check(response, raw)
            data = jsonwire.loads(raw)
            _refuse_blocked_prompt(data)
            message = message_from_gemini(
                data, prepared, message_id=message_id(), model=target.model, memory=self._memory(target)
            )
            self._note_usage(
                exchange, target, tokens_from_gemini(data.get("usageMetadata") or {}),
                data.get("modelVersion"), started,
            )
            self._finished(index, exchange)
            if exchange.ai_payload is not None:  # serialized only when the payload is logged
                self._note_response(exchange, json.dumps(message))
            self._model_header(request, target)
            respond_json(request, 200, message)

        await self._balance(request, exchange, body, attempt)

    async def _claude(
        self, request: Request, exchange: Exchange, index: int, target: Target, body: Mapping[str, Any]
    ) -> None:
        """A Claude model on Vertex: the Messages body passed through, as Kong's gemini driver
        does (the target's options over the client's, Vertex's ``anthropic_version``, no ``model``)."""
        upstream = target.options_over(body)
        ceiling = target.max_tokens
        if ceiling is not None and isinstance(upstream.get("max_tokens"), int):
            upstream["max_tokens"] = min(upstream["max_tokens"], ceiling)
        upstream["anthropic_version"] = (
            target.anthropic_version or body.get("anthropic_version") or VERTEX_ANTHROPIC_VERSION
        )
        upstream.pop("model", None)
        stream = upstream.get("stream") is True
        action = "stream" if stream else "generate"
        self._note_attempt(exchange, target, action, body, stream)
        started = self.reactor.seconds()
        response = await self._call(request, exchange, target, action, upstream)
        if stream:
            await self._stream(request, exchange, index, target, None, response, started)
            return
        raw = await self._read(request, response, exchange)
        self._check(response, raw)
        message = jsonwire.loads(raw)
        self._note_usage(
            exchange, target, tokens_from_anthropic(message.get("usage") or {}), message.get("model"), started
        )
        self._finished(index, exchange)
        self._note_response(exchange, raw.decode("utf-8", "replace"))
        self._model_header(request, target)
        respond_json(request, 200, message)

    async def count_tokens(self, request: Request, exchange: Exchange) -> None:
        body = _read_json(request, self.max_body)

        async def attempt(index: int, target: Target) -> None:
            if target.publisher == "anthropic":
                # Vertex's count-tokens endpoint takes the model in the body.
                upstream: dict[str, Any] = {**body, "model": target.model}
            else:
                try:
                    upstream = count_tokens_body(body, target.profile)
                except TranslationError as error:
                    raise errors.invalid_request(str(error)) from None
            self._note_attempt(exchange, target, "count", body, False)
            response = await self._call(request, exchange, target, "count", upstream)
            raw = await self._read(request, response, exchange)
            self._check(response, raw)
            self.balancer.finished(index)
            self._model_header(request, target)
            if target.publisher == "anthropic":
                respond_json(request, 200, {"input_tokens": int(json.loads(raw).get("input_tokens") or 0)})
            else:
                respond_json(request, 200, count_tokens_from_gemini(json.loads(raw)))

        await self._balance(request, exchange, body, attempt)

    async def _balance(
        self,
        request: Request,
        exchange: Exchange,
        body: Mapping[str, Any],
        attempt: Callable[[int, Target], Awaitable[None]],
    ) -> None:
        """Run ``attempt`` on the balancer's targets until one answers or failover ends.

        A failed attempt moves on to the next target only when its outcome is
        in ``failover_criteria`` and nothing has been sent to the client yet.
        """
        model = body.get("model") if isinstance(body.get("model"), str) else None
        hash_key = request.getHeader(self.settings.hash_on_header)
        last: errors.APIError | None = None
        for index in self.balancer.attempts(model, hash_key):
            target = self.targets[index]
            self.balancer.started(index)
            try:
                await attempt(index, target)
                return
            except ClientGone:
                self.balancer.released(index)
                raise
            except _Failed as failed:
                exchange.tried_targets[-1].update(outcome=failed.outcome, error=failed.error.message)
                last = failed.error
                if not self.settings.fails_over(failed.outcome):
                    self.balancer.finished(index)
                    raise failed.error from None
                self.balancer.failed(index)
                if request.startedWriting:
                    raise failed.error from None
                self.log.info(
                    "target {index} ({host}, {model}) failed with {outcome}; trying the next",
                    index=index, host=target.host, model=target.model, outcome=failed.outcome,
                )
            except BaseException:
                self.balancer.released(index)
                raise
        if last is not None:
            raise last
        wait = self.balancer.next_recovery()
        raise errors.APIError(
            529,
            "overloaded_error",
            "every target of this route failed recently and is cooling down; retry later",
            (("retry-after", str(max(1, math.ceil(wait)))),),
        )

    async def _call(
        self, request: Request, exchange: Exchange, target: Target, action: str, body: dict[str, Any]
    ) -> IResponse:
        headers = {"Content-Type": "application/json", "User-Agent": "gatewayd/0.1"}
        if target.publisher == "anthropic":
            # The Messages body is passed through to Claude; its beta features go with it, as
            # Kong's proxying passes the client's headers on (the gemini driver sets only auth).
            beta = request.getHeader("anthropic-beta")
            if beta:
                headers["anthropic-beta"] = beta
        headers.update(await self._credentials(target))
        auth = target.auth
        if auth.kind == "api_key" and auth.param_name and auth.param_location == "body":
            # Kong's pre_request: the parameter goes into the JSON body sent upstream.
            body = {**body, auth.param_name: auth.secret}
        if exchange.client_gone:
            raise ClientGone()
        if exchange.proxy_started is None:
            exchange.proxy_started = self.reactor.seconds()
        data = jsonwire.dumps(body)
        timing = _AttemptTimers(self.reactor, self.settings.read_timeout)
        # connect_timeout is the endpoint's (client_for); write_timeout runs between two
        # writes of a body too large to leave at once, and read_timeout starts once all of
        # the body has been handed to the connection.
        url = target.url(action)
        if not isinstance(self.client, UpstreamClient):  # a test's StubTreq takes bytes, sent at once
            timing.sent()
            pending = self.client.post(url, data=data, headers=headers, unbuffered=True)
        elif len(data) <= ONE_WRITE:
            pending = self.client.post(url, data=data, headers=headers, sent=timing.sent)
        else:
            body = TimedBody(
                io.BytesIO(data), len(data), self.reactor, self.settings.write_timeout,
                timing.sent, timing.write_expired,
            )
            pending = self.client.post(url, data=body, headers=headers)
        timing.pending = pending
        exchange.on_leave = pending.cancel
        try:
            response = await pending
        except Exception as error:
            # Cancelling Agent's Deferred fails it with whatever the connection was doing
            # (ResponseNeverReceived, ConnectingCancelledError), so the outcome comes from
            # why it was cancelled: a timer, or the client leaving (``exchange.client_gone``,
            # set by the router's errback).
            if exchange.client_gone:
                raise ClientGone() from None
            if timing.expired is not None:
                raise _Failed("timeout", errors.upstream_timeout(target.host, timing.expired)) from None
            if isinstance(error, ConnectingTimeout):
                raise _Failed("timeout", errors.upstream_timeout(target.host, "connect")) from None
            self.log.warn(
                "upstream call to {host} failed: {error}",
                host=target.host,
                error=_without(repr(error), target.auth.secret),
            )
            raise _Failed(
                "error", errors.APIError(502, "api_error", f"upstream unreachable: {target.host}")
            ) from None
        finally:
            timing.stop()
        # Kong's latencies.proxy ends at the upstream's response head (its header_filter).
        exchange.proxy_first_byte = self.reactor.seconds()
        exchange.tried_targets[-1]["ip"] = _peer_ip(response)
        return response

    async def _credentials(self, target: Target) -> dict[str, str]:
        auth = target.auth
        if auth.kind == "api_key":
            if auth.header_name:
                return {auth.header_name: auth.secret or ""}
            return {}
        try:
            token = await self.tokens[auth.identity()].token()
        except CredentialsError as error:
            raise _Failed(
                "error", errors.APIError(500, "api_error", f"gateway credentials: {error}")
            ) from None
        return {"Authorization": f"Bearer {token}"}

    async def _read(self, request: Request, response: IResponse, exchange: Exchange) -> bytes:
        """The upstream's whole body, with nginx's read timeout between two reads."""
        reader = _BodyReader(self.reactor, self.settings.read_timeout)
        exchange.on_leave = reader.client_gone
        response.deliverBody(reader)
        reader.watch()
        try:
            raw = await reader.done
        except Exception as error:
            self.log.warn("upstream body cut: {error}", error=str(error))
            raise _Failed("error", errors.APIError(502, "api_error", "upstream connection lost")) from None
        exchange.proxy_finished = self.reactor.seconds()
        if reader.timed_out:
            raise _Failed("timeout", errors.upstream_timeout("the upstream", "body"))
        if raw is None:
            raise ClientGone()
        return raw

    def _memory(self, target: Target) -> SignatureMemory | None:
        """Where an answer's final-text signatures are kept: only Gemini 3's, the only ones
        ``prepare`` gives back; for other models, keeping them was a digest of every text
        chunk for nothing."""
        return self.signatures if target.profile.is_gemini3 else None

    def _check(self, response: IResponse, raw: bytes) -> None:
        if response.code != 200:
            raise _Failed(f"http_{response.code}", errors.from_upstream(response.code, raw))

    def _finished(self, index: int, exchange: Exchange) -> None:
        assert exchange.ai_meta is not None
        self.balancer.finished(index, exchange.ai_usage, exchange.ai_meta["llm_latency"])

    async def _stream(
        self,
        request: Request,
        exchange: Exchange,
        index: int,
        target: Target,
        prepared: Prepared | None,
        response: IResponse,
        started: float,
    ) -> None:
        if response.code != 200:
            self._check(response, await self._read(request, response, exchange))
        if exchange.client_gone:
            _stop_reading(response)
            raise ClientGone()
        translator: Any
        if prepared is None:
            translator = ClaudePassthrough()
        else:
            translator = translator_for(
                prepared, message_id=message_id(), model=target.model, memory=self._memory(target)
            )
        first_chunk: list[float] = []
        bridge = SSEBridge(
            request,
            translator,
            self.reactor,
            lambda: first_chunk.append(self.reactor.seconds()),
            read_timeout=self.settings.read_timeout,
            keep_text=exchange.ai_payload is not None,
        )
        request.setResponseCode(200)
        request.setHeader("content-type", "text/event-stream; charset=utf-8")
        request.setHeader("cache-control", "no-cache")
        self._model_header(request, target)
        exchange.on_leave = bridge.client_gone
        response.deliverBody(bridge)
        try:
            await bridge.done
        finally:
            # The bridge holds the request, which holds the exchange: let go of the bridge,
            # or the loop leaves the whole stream's objects to the collector.
            exchange.on_leave = None
        exchange.proxy_finished = self.reactor.seconds()
        if prepared is None:
            tokens = tokens_from_anthropic(translator.usage)
        else:
            tokens = tokens_from_gemini(translator.usage_metadata)
        self._note_usage(
            exchange,
            target,
            tokens,
            translator.response_model,
            started,
            first_token=first_chunk[0] if first_chunk else None,
        )
        self._note_response(exchange, bridge.sent_text())
        if bridge.error is not None:
            outcome = "timeout" if bridge.error.status == 504 else "error"
            exchange.tried_targets[-1].update(outcome=outcome, error=bridge.error.message)
            if self.settings.fails_over(outcome):
                self.balancer.failed(index)
            else:
                self.balancer.finished(index)
        elif bridge.client_left:
            self.balancer.released(index)
        else:
            self._finished(index, exchange)

    def _note_attempt(
        self, exchange: Exchange, target: Target, action: str, body: Mapping[str, Any], stream: bool
    ) -> None:
        exchange.upstream_uri = target.upstream_uri(action)
        exchange.ai_log_statistics = target.log_statistics
        exchange.tried_targets.append(
            {
                "provider": "gemini",
                "model": target.model,
                "port": target.port,
                "upstream_scheme": target.scheme,
                "host": target.host,
                "upstream_uri": target.upstream_uri(action),
                "route_type": target.route_type,
                "ip": None,
            }
        )
        requested = body.get("model")
        exchange.ai_meta = {
            "request_model": requested if isinstance(requested, str) else target.model,
            "request_mode": "stream" if stream else "oneshot",
            "response_model": target.model,
            "provider_name": "gemini",
            "llm_latency": None,
            "plugin_id": self.plugin_id,
        }
        # Kong serializes payloads only where statistics are logged too (serialize-analytics).
        exchange.ai_payload = None
        if target.log_payloads and target.log_statistics:
            exchange.ai_payload = {"request": json.dumps(body, ensure_ascii=False)}

    def _note_response(self, exchange: Exchange, text: str) -> None:
        if exchange.ai_payload is not None:
            exchange.ai_payload["response"] = text

    def _model_header(self, request: Request, target: Target) -> None:
        """Kong's ``X-Kong-LLM-Model: <provider>/<model>`` (``model_name_header``)."""
        if self.model_name_header:
            request.setHeader("X-Kong-LLM-Model", f"gemini/{target.model}")

    def _note_usage(
        self,
        exchange: Exchange,
        target: Target,
        tokens: Tokens,
        response_model: str | None,
        started: float,
        first_token: float | None = None,
    ) -> None:
        assert exchange.ai_meta is not None
        finished = exchange.proxy_finished or self.reactor.seconds()
        latency = round((finished - started) * 1000)
        exchange.ai_meta["llm_latency"] = latency
        if response_model:
            exchange.ai_meta["response_model"] = response_model
        ttft = latency if first_token is None else round((first_token - started) * 1000)
        exchange.ai_usage = kong_usage(tokens, target.pricing, latency_ms=latency, first_token_ms=ttft)


def _refuse_blocked_prompt(data: Mapping[str, Any]) -> None:
    """A prompt Gemini (or Model Armor) blocked, answered as Kong answers it: a 400 with
    ``blockReasonMessage`` and ``blockReason``."""
    feedback = data.get("promptFeedback")
    if data.get("candidates") or not isinstance(feedback, dict) or not feedback.get("blockReason"):
        return
    reason = feedback["blockReason"]
    message = feedback.get("blockReasonMessage") or "the prompt was blocked"
    raise errors.invalid_request(f"{message} (blockReason: {reason})")


@frozen
class _Failed(Exception):
    """An attempt on one target failed; ``outcome`` is its ``failover_criteria`` name."""

    outcome: str
    error: errors.APIError


class _AttemptTimers:
    """nginx's timers for one attempt's request: ``write_timeout`` between two writes of the
    body, then ``read_timeout`` from the moment it has been sent until the response head.

    ``expired`` names what the upstream did not do in time, once a timer has fired.
    """

    def __init__(self, reactor: IReactorTime, read_timeout: float) -> None:
        self.reactor = reactor
        self.read_timeout = read_timeout
        self.pending: Deferred[IResponse] | None = None
        self.expired: str | None = None
        self._deadline: IDelayedCall | None = None

    def sent(self) -> None:
        self._deadline = self.reactor.callLater(self.read_timeout, self._read_expired)

    def write_expired(self) -> None:
        # The producer fails the request itself; Agent drops the connection.
        self.expired = "request to be taken"

    def _read_expired(self) -> None:
        self.expired = "answer"
        if self.pending is not None:
            self.pending.cancel()

    def stop(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()


class _BodyReader(Protocol):
    """Collects a response body, giving up after ``read_timeout`` without a byte (nginx's
    ``proxy_read_timeout``) or when the client leaves; either way the connection is dropped.

    ``done`` fires with the body, or None when it was not read to its end.
    """

    def __init__(self, reactor: IReactorTime, read_timeout: float) -> None:
        self.reactor = reactor
        self.read_timeout = read_timeout
        self.done: Deferred[bytes | None] = Deferred()
        self.timed_out = False
        self._parts: list[bytes] = []
        self._idle: IDelayedCall | None = None
        self._stopped = False

    def watch(self) -> None:
        """Start the read timeout, unless the whole body came with the response head."""
        if not self.done.called and not self._stopped:
            self._idle = self.reactor.callLater(self.read_timeout, self._stalled)

    def dataReceived(self, data: bytes) -> None:
        self._parts.append(data)
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.read_timeout)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self.done.called:
            return
        if self._stopped:
            self.done.callback(None)
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._parts))
        else:
            self.done.errback(reason)

    def _stalled(self) -> None:
        self.timed_out = True
        self._stop()

    def client_gone(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.done.called or self._stopped:
            return
        self._stopped = True
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self.transport is not None:
            self.transport.stopProducing()
        else:  # nothing delivered yet: nothing to stop
            self.done.callback(None)


def _stop_reading(response: IResponse) -> None:
    """After a read timeout, drop the upstream connection rather than keep reading into nothing."""
    response.deliverBody(_Dropped())


class _Dropped(Protocol):
    """A body nobody will read: its connection is stopped as soon as it is handed over."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()


class ClientGone(Exception):
    """The client left before the upstream answered; there is no one to answer."""


def _read_json(request: Request, limit: int = MAX_BODY) -> dict[str, Any]:
    if body_size(request) > limit:
        raise errors.APIError(
            413, "request_too_large", f"request body is larger than the limit of {limit} bytes"
        )
    raw = request_body(request)
    try:
        body = jsonwire.loads_client(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise errors.invalid_request(f"request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise errors.invalid_request("request body must be a JSON object")
    return body


def _without(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` masked: an error about a URL may quote its query's API key."""
    return text.replace(secret, "REDACTED") if secret else text


def _peer_ip(response: IResponse) -> str | None:
    """The upstream's IP, which Kong logs per try (a test's stand-in response has none)."""
    return getattr(response, "peer_ip", None)
