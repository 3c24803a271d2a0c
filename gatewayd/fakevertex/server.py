"""The fake's state and its twisted.web resource tree.

    POST   /token                                   OAuth2 JWT-bearer grant (see .auth)
    POST   /v1/projects/P/locations/L/publishers/google/models/M:generateContent
                                                    | :streamGenerateContent[?alt=sse] | :countTokens
    POST   /v1/projects/P/locations/L/publishers/anthropic/models/M:rawPredict | :streamRawPredict
                                                    Claude on Vertex (see .claude)
    POST   /v1beta/models/M:generateContent | :streamGenerateContent[?alt=sse] | :countTokens
    GET    /_fake/requests                          every request received, as a JSON list
    DELETE /_fake/requests                          forget them
    GET    /_fake/streams                           {"open": streams being sent, "cancelled":
                                                    streams whose client left before their end}
    PUT    /_fake/token-fault                       body "500", "close", "hang" or empty: how
                                                    /token misbehaves from now on (empty: it does not)
    PUT    /_fake/model-fault                       body "hang" (model calls are taken and never
                                                    answered), a number of seconds (they are answered
                                                    that late) or empty (they are answered at once)
    GET    /_fake/model-fault                       {"mode": ..., "held": calls held now, "dropped":
                                                    held calls whose client left}
"""

import json
import os
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from . import catalog, claude, model, rules
from .auth import InvalidGrant, ServiceAccount, verify_assertion
from .errors import Rejected, canned

log = Logger()

_VERTEX_PATH = re.compile(
    r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/google/models/"
    r"(?P<model>[^/:]+):(?P<method>[A-Za-z]+)"
)
_CLAUDE_PATH = re.compile(
    r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/anthropic/models/"
    r"(?P<model>[^/:]+):(?P<method>rawPredict|streamRawPredict)"
)
_GEMINI_PATH = re.compile(r"/v1beta/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)")
_METHODS = ("generateContent", "streamGenerateContent", "countTokens")
_REDACTED = {"authorization", "x-goog-api-key"}
#: How /token can misbehave: answer 500, close the connection unanswered, or never answer.
TOKEN_FAULTS = ("500", "close", "hang")
_AUTH_HELP = (
    "Expected OAuth 2 access token, login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


@define
class FakeVertex:
    """Everything the fake remembers: its key, the tokens and signatures it issued, the requests."""

    project: str = "fake-project"
    api_key: str = "fake-gemini-key"
    stream_chunks: int = 4
    stream_delay: float = 0.0
    #: When set, every model call answers this HTTP status (a target that is down).
    fail_all: int | None = None
    #: When set, one of TOKEN_FAULTS: how the token endpoint misbehaves.
    token_fault: str | None = None
    #: When set, "hang" or a number of seconds: model calls go unanswered, or answered that late.
    model_fault: str | None = None
    #: Model calls held by ``model_fault`` now, and those whose client left while held.
    held: int = 0
    dropped: int = 0
    #: Seconds an issued access token is valid.
    token_lifetime: int = 3600
    wall_clock: Callable[[], float] = time.time
    account: ServiceAccount | None = None
    tokens: dict[str, float] = field(factory=dict)
    signatures: dict[bytes, tuple[str, str]] = field(factory=dict)  # raw -> (api, anchor)
    requests: list[dict[str, Any]] = field(factory=list)
    streams_open: int = 0
    streams_cancelled: int = 0

    def new_service_account(self, token_uri: str) -> ServiceAccount:
        self.account = ServiceAccount.generate(token_uri, self.project)
        return self.account

    def write_service_account(self, path: str, token_uri: str) -> ServiceAccount:
        """Write a fresh key file (mode 0600) whose token_uri points at this fake."""
        account = self.new_service_account(token_uri)
        write_file(path, json.dumps(account.info(), indent=2) + "\n", mode=0o600)
        return account

    def issue_token(self) -> dict[str, Any]:
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        self.tokens[token] = self.wall_clock() + self.token_lifetime
        return {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}

    def token_valid(self, token: str) -> bool:
        return self.tokens.get(token, 0) > self.wall_clock()

    def sign(self, api: str, part: dict[str, Any]) -> str:
        """Issue a thought signature valid on ``api`` only, and only on ``part``."""
        raw = b"fakevertex-sig:" + secrets.token_bytes(24)
        self.signatures[raw] = (api, rules.signature_anchor(part))
        return rules.encode_bytes(raw)

    def known_signature(self, api: str) -> Callable[[bytes], str | None]:
        """The anchor of a signature issued on ``api``, or None."""

        def anchor(raw: bytes) -> str | None:
            issued = self.signatures.get(raw)
            return issued[1] if issued is not None and issued[0] == api else None

        return anchor

    def record(self, request: Request, body: Any, status: int) -> None:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values[-1:]
        }
        for name in _REDACTED & headers.keys():
            headers[name] = headers[name][:10]
        query = {
            key.decode("latin-1"): [value.decode("latin-1")[:10] if key == b"key" else value.decode("latin-1") for value in values]
            for key, values in (request.args or {}).items()
        }
        self.requests.append(
            {
                "method": request.method.decode("ascii"),
                "path": request.path.decode("latin-1"),
                "query": query,
                "headers": headers,
                "body": body,
                "status": status,
            }
        )
        log.info("{method} {path} -> {status}", method=request.method.decode("ascii"), path=request.path.decode("latin-1"), status=status)


def write_file(path: str, text: str, mode: int = 0o644) -> None:
    """Write atomically, so a reader polling for the file never sees half of it."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def _json(request: Request, status: int, payload: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=UTF-8")
    return json.dumps(payload).encode("utf-8")


def _error(request: Request, fake: FakeVertex, body: Any, rejected: Rejected) -> bytes:
    fake.record(request, body, rejected.code)
    return _json(request, rejected.code, rejected.body())


class TokenResource(Resource):
    isLeaf = True

    def __init__(self, fake: FakeVertex) -> None:
        super().__init__()
        self._fake = fake

    def render_POST(self, request: Request) -> bytes | int:
        form = parse_qs(request.content.read().decode("utf-8", "replace"))
        shown = {key: [value[:20] for value in values] for key, values in form.items()}
        fault = self._fake.token_fault
        if fault == "500":
            self._fake.record(request, shown, 500)
            return _json(request, 500, {"error": "internal_failure", "error_description": "Backend Error"})
        if fault in ("close", "hang"):
            self._fake.record(request, shown, 0)
            if fault == "close":
                request.channel.transport.loseConnection()
            return NOT_DONE_YET
        try:
            if self._fake.account is None:
                raise InvalidGrant("No service account key was issued by this server.")
            verify_assertion(form, self._fake.account, self._fake.wall_clock())
        except InvalidGrant as error:
            self._fake.record(request, shown, 400)
            return _json(request, 400, {"error": error.error, "error_description": str(error)})
        self._fake.record(request, shown, 200)
        return _json(request, 200, self._fake.issue_token())


class ModelResource(Resource):
    """``models/M:method`` on one API; ``api`` is ``"vertex"`` or ``"gemini"``."""

    isLeaf = True

    def __init__(self, fake: FakeVertex, reactor: IReactorTime, api: str) -> None:
        super().__init__()
        self._fake = fake
        self._reactor = reactor
        self._api = api

    def render_POST(self, request: Request) -> bytes | int:
        fault = self._fake.model_fault
        if fault is None:
            return self._answer(request)
        fake = self._fake
        fake.held += 1
        later = None if fault == "hang" else self._reactor.callLater(float(fault), self._late, request)

        def left(reason: object) -> None:
            if later is None or later.active():  # still held when the client left
                if later is not None:
                    later.cancel()
                fake.held -= 1
                fake.dropped += 1

        request.notifyFinish().addErrback(left)
        return NOT_DONE_YET

    def _late(self, request: Request) -> None:
        """Answer a call ``model_fault`` held, as it would have been answered at once."""
        self._fake.held -= 1
        answered = self._answer(request)
        if answered is not NOT_DONE_YET:
            request.write(answered)
            request.finish()

    def _answer(self, request: Request) -> bytes | int:
        raw = request.content.read()
        try:
            body: Any = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if self._api == "vertex" and "/publishers/anthropic/" in request.path.decode("latin-1"):
            return self._claude(request, body)
        try:
            if self._fake.fail_all is not None:  # down, whoever asks
                raise canned(self._fake.fail_all, self._api)
            model_name, method = self._route(request)
            if not isinstance(body, dict):
                raise Rejected(400, "Invalid JSON payload received. Unexpected token.")
            if method == "countTokens":
                counted = rules.check_count_tokens(body, api=self._api, model=model_name)
                self._fake.record(request, body, 200)
                return _json(request, 200, model.count_tokens(counted, self._api))
            canonical = rules.check_generate(
                body, api=self._api, model=model_name, known_signature=self._fake.known_signature(self._api)
            )
            reply = model.script(
                canonical, model=model_name, api=self._api, sign=lambda part: self._fake.sign(self._api, part)
            )
            if reply.error is not None:
                raise reply.error
        except Rejected as rejected:
            return _error(request, self._fake, body, rejected)
        self._fake.record(request, body, 200)
        envelope = self._envelope(model_name)
        prompt_tokens = max(1, len(json.dumps(canonical)) // 4)
        if method == "generateContent":
            return _json(request, 200, model.response(reply, envelope=envelope, prompt_tokens=prompt_tokens))
        chunks = model.stream_chunks(
            reply, envelope=envelope, prompt_tokens=prompt_tokens, chunks=self._fake.stream_chunks
        )
        if reply.stream_error is not None:
            chunks[-1] = canned(reply.stream_error, self._api).body()
        if request.args.get(b"alt") != [b"sse"]:
            return _json(request, 200, chunks)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream")
        frames = [b"data: " + json.dumps(chunk).encode("utf-8") + b"\r\n\r\n" for chunk in chunks]
        self._send(request, frames)
        return NOT_DONE_YET

    def _claude(self, request: Request, body: Any) -> bytes | int:
        """Claude on Vertex: authenticated as Vertex is, answered in Anthropic's shape."""
        try:
            if self._fake.fail_all is not None:
                raise canned(self._fake.fail_all, self._api)
            self._check_bearer(request)
        except Rejected as rejected:
            return _error(request, self._fake, body, rejected)
        match = _CLAUDE_PATH.fullmatch(request.path.decode("latin-1"))
        try:
            if match is None or match["project"] != self._fake.project:
                raise claude.ClaudeRejected(404, "not_found_error", "Requested entity was not found.")
            if match["model"] == "count-tokens":
                counted = claude.check_count(body)
                self._fake.record(request, body, 200)
                return _json(request, 200, {"input_tokens": max(1, len(json.dumps(counted["messages"])) // 4)})
            if match["model"] not in claude.KNOWN_MODELS:
                raise claude.ClaudeRejected(
                    404, "not_found_error",
                    f"Publisher Model `publishers/anthropic/models/{match['model']}` was not found",
                )
            stream = match["method"] == "streamRawPredict"
            checked = claude.check_messages(body, stream=stream)
        except claude.ClaudeRejected as rejected:
            self._fake.record(request, body, rejected.code)
            return _json(request, rejected.code, rejected.body)
        self._fake.record(request, body, 200)
        message = claude.answer(checked, match["model"])
        if not stream:
            return _json(request, 200, message)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream")
        frames = [
            f"event: {name}\ndata: {json.dumps(data)}\n\n".encode("utf-8")
            for name, data in claude.stream_events(message)
        ]
        self._send(request, frames)
        return NOT_DONE_YET

    def _route(self, request: Request) -> tuple[str, str]:
        path = request.path.decode("latin-1")
        if self._api == "vertex":
            return self._vertex_route(request, path)
        return self._gemini_route(request, path)

    def _check_bearer(self, request: Request) -> None:
        authorization = (request.getHeader(b"authorization") or b"").decode("latin-1")
        if not authorization:
            raise Rejected(401, f"Request is missing required authentication credential. {_AUTH_HELP}")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not self._fake.token_valid(token.strip()):
            raise Rejected(401, f"Request had invalid authentication credentials. {_AUTH_HELP}")

    def _vertex_route(self, request: Request, path: str) -> tuple[str, str]:
        self._check_bearer(request)
        match = _VERTEX_PATH.fullmatch(path)
        if match is None or match["method"] not in _METHODS:
            raise Rejected(404, "Requested entity was not found.")
        project, location, name = match["project"], match["location"], match["model"]
        resource = f"projects/{project}/locations/{location}/publishers/google/models/{name}"
        if project != self._fake.project:
            raise Rejected(
                403,
                f"Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/{resource}' (or it may not exist).",
            )
        if name not in catalog.KNOWN_MODELS or (catalog.is_gemini3(name) and location != "global"):
            raise Rejected(
                404,
                f"Publisher Model `{resource}` was not found or your project does not have access to it. "
                "Please ensure you are using a valid model version. For more information, see: "
                "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions",
            )
        return name, match["method"]

    def _gemini_route(self, request: Request, path: str) -> tuple[str, str]:
        key = (request.getHeader(b"x-goog-api-key") or b"").decode("latin-1")
        key = key or request.args.get(b"key", [b""])[0].decode("latin-1")
        if not key:
            raise Rejected(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if key != self._fake.api_key:
            raise Rejected(
                400,
                "API key not valid. Please pass a valid API key.",
                (
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    },
                ),
            )
        match = _GEMINI_PATH.fullmatch(path)
        if match is None or match["method"] not in _METHODS:
            raise Rejected(404, "Requested entity was not found.")
        if match["model"] not in catalog.KNOWN_MODELS:
            raise Rejected(
                404,
                f"models/{match['model']} is not found for API version v1beta, or is not supported for "
                f"{match['method']}. Call ListModels to see the list of available models and their "
                "supported methods.",
            )
        return match["model"], match["method"]

    def _envelope(self, model_name: str) -> dict[str, Any]:
        envelope = {"modelVersion": model_name, "responseId": secrets.token_urlsafe(16)}
        if self._api == "vertex":
            created = datetime.fromtimestamp(self._reactor.seconds(), timezone.utc)
            envelope["createTime"] = created.isoformat().replace("+00:00", "Z")
        return envelope

    def _send(self, request: Request, frames: list[bytes]) -> None:
        """Write the SSE frames, ``stream_delay`` seconds apart on the reactor clock."""
        delay = self._fake.stream_delay
        if delay <= 0:
            for frame in frames:
                request.write(frame)
            request.finish()
            return
        pending: list[Any] = []
        fake = self._fake
        fake.streams_open += 1

        def step(index: int) -> None:
            pending.clear()
            request.write(frames[index])
            if index + 1 < len(frames):
                pending.append(self._reactor.callLater(delay, step, index + 1))
            else:
                request.finish()

        def ended(reason: object) -> None:
            fake.streams_open -= 1
            if reason is not None:  # the client went away mid-stream
                fake.streams_cancelled += 1
                for call in pending:
                    if call.active():
                        call.cancel()

        request.notifyFinish().addBoth(ended)
        step(0)


class RequestsResource(Resource):
    """Read back (GET) or forget (DELETE) what the fake received."""

    isLeaf = True

    def __init__(self, fake: FakeVertex) -> None:
        super().__init__()
        self._fake = fake

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, self._fake.requests)

    def render_DELETE(self, request: Request) -> bytes:
        self._fake.requests.clear()
        request.setResponseCode(204)
        return b""


class TokenFaultResource(Resource):
    """Switch the token endpoint's misbehaviour while the fake runs."""

    isLeaf = True

    def __init__(self, fake: FakeVertex) -> None:
        super().__init__()
        self._fake = fake

    def render_PUT(self, request: Request) -> bytes:
        mode = request.content.read().decode("ascii", "replace").strip()
        if mode and mode not in TOKEN_FAULTS:
            return _json(request, 400, {"error": f"token fault must be one of {TOKEN_FAULTS} or empty"})
        self._fake.token_fault = mode or None
        request.setResponseCode(204)
        return b""


class ModelFaultResource(Resource):
    """Switch how model calls misbehave while the fake runs, and count the calls held."""

    isLeaf = True

    def __init__(self, fake: FakeVertex) -> None:
        super().__init__()
        self._fake = fake

    def render_PUT(self, request: Request) -> bytes:
        mode = request.content.read().decode("ascii", "replace").strip()
        if mode and mode != "hang":
            try:
                if float(mode) < 0:
                    raise ValueError(mode)
            except ValueError:
                return _json(request, 400, {"error": 'model fault must be "hang", seconds, or empty'})
        self._fake.model_fault = mode or None
        request.setResponseCode(204)
        return b""

    def render_GET(self, request: Request) -> bytes:
        fake = self._fake
        return _json(request, 200, {"mode": fake.model_fault, "held": fake.held, "dropped": fake.dropped})


class StreamsResource(Resource):
    """How many streams are open, and how many were cut off by their client."""

    isLeaf = True

    def __init__(self, fake: FakeVertex) -> None:
        super().__init__()
        self._fake = fake

    def render_GET(self, request: Request) -> bytes:
        return _json(
            request, 200, {"open": self._fake.streams_open, "cancelled": self._fake.streams_cancelled}
        )


def make_resource(fake: FakeVertex, reactor: IReactorTime) -> IResource:
    """The fake's root resource (for ``treq.testing.StubTreq`` or a :class:`Site`)."""
    root = Resource()
    root.putChild(b"token", TokenResource(fake))
    root.putChild(b"v1", ModelResource(fake, reactor, "vertex"))
    root.putChild(b"v1beta", ModelResource(fake, reactor, "gemini"))
    internal = Resource()
    internal.putChild(b"requests", RequestsResource(fake))
    internal.putChild(b"streams", StreamsResource(fake))
    internal.putChild(b"token-fault", TokenFaultResource(fake))
    internal.putChild(b"model-fault", ModelFaultResource(fake))
    root.putChild(b"_fake", internal)
    return root


def make_site(fake: FakeVertex, reactor: IReactorTime) -> Site:
    site = Site(make_resource(fake, reactor), reactor=reactor)
    site.displayTracebacks = False
    site.noisy = False
    return site
