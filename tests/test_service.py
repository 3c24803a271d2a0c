"""The gateway's resource tree in memory: StubTreq in front, the fake upstream behind, a Clock."""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import IResource
from treq.testing import StubTreq

from gatewayd.config import load_config
from gatewayd.fakevertex.server import FakeVertex, make_resource
from gatewayd.plugins import Registry, installed
from gatewayd.providers.auth import CredentialsError
from gatewayd.daemon.gateway import GatewayRoot, build
from gatewayd.site import request_factory
from tests.grammar import check_stream

SAMPLE = Path(__file__).resolve().parents[1] / "etc" / "gatewayd"
MESSAGES = "http://gateway.test/anything/v1/messages"


@functools.cache
def service_account_json() -> str:
    """A real-looking key (RSA generation is slow, so once per run); tokens come from StaticToken."""
    return json.dumps(FakeVertex().new_service_account("http://fake.test/token").info())


def stub_client(root) -> StubTreq:
    """StubTreq in front of ``root``, its Site making the daemon's own requests (which run
    the plugins' response filters); treq offers no public way to choose them."""
    client = StubTreq(root)
    client._agent._serverFactory.requestFactory = request_factory
    return client


class StaticToken:
    def __init__(self, token: str) -> None:
        self.value = token

    def token(self):
        return succeed(self.value)


class BrokenToken:
    def token(self):
        return fail(CredentialsError("could not obtain a Google access token (RefreshError: invalid_grant)"))


class GatewayInMemory(SynchronousTestCase):
    """The sample configuration, its file-log redirected into a temporary directory."""

    token_source = None
    #: More state files applied after the sample's, by name.
    extra_files: dict[str, str] = {}
    #: The plugins the configuration may name (None: this installation's).
    registry: Registry | None = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.fake = FakeVertex()
        workdir = self.workdir = Path(tempfile.mkdtemp(prefix="gatewayd-test-"))
        self.addCleanup(shutil.rmtree, workdir)
        for path in SAMPLE.glob("*.yaml"):
            (workdir / path.name).write_text(path.read_text())
        self.log_path = workdir / "claude.json"
        (workdir / "90-log.yaml").write_text(
            f'_format_version: "3.0"\nplugins:\n  - name: file-log\n    config:\n      path: "{self.log_path}"\n'
        )
        for name, text in self.extra_files.items():
            (workdir / name).write_text(text)
        env = self.env = {
            "DECK_GEMINI_API_KEY": service_account_json(),
            "DECK_GEMINI_API_ENDPOINT": "https://fake.test",
            "DECK_GCP_PROJECT_ID": "fake-project",
            "DECK_GEMINI_LOCATION_ID": "us-central1",
        }
        upstream = self.upstream = StubTreq(self.upstream_resource())
        source = self.token_source or StaticToken(self.fake.issue_token()["access_token"])
        registry = self.registry or installed()
        _, self.gateway = build(
            load_config(str(workdir), env, registry.schemas),
            self.clock,
            listen=[],
            client=upstream,
            make_token_source=lambda target: source,
            registry=registry,
        )
        self.client = stub_client(GatewayRoot(self.gateway))

    def upstream_resource(self) -> IResource:
        """What answers the gateway's upstream calls: the strict fake, unless a test says otherwise."""
        return make_resource(self.fake, self.clock)

    def post(
        self, body: dict, url: str = MESSAGES, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, list[str]], str]:
        response = self.successResultOf(self.client.post(url, data=json.dumps(body).encode(), headers=headers))
        text = self.successResultOf(response.text())
        # A real client's next request comes after the reactor has turned, and with it the
        # log phase, which runs once the answer is out (counting, metrics, the record).
        self.clock.advance(0)
        headers = {k.decode().lower(): [v.decode() for v in vs] for k, vs in response.headers.getAllRawHeaders()}
        return response.code, headers, text

    def records(self) -> list[dict]:
        self.clock.advance(0)
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]


def ask(text: str, **extra) -> dict:
    return {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": text}], **extra}


def events(text: str) -> list[tuple[str, dict]]:
    parsed = []
    for frame in text.split("\n\n"):
        if frame.strip():
            lines = dict(line.split(": ", 1) for line in frame.splitlines())
            parsed.append((lines["event"], json.loads(lines["data"])))
    return parsed


class MessagesTests(GatewayInMemory):
    def test_oneshot_answer_and_its_record(self):
        status, headers, text = self.post(ask("Tell me about the Alexiad"))
        self.assertEqual(status, 200)
        message = json.loads(text)
        self.assertEqual(message["type"], "message")
        self.assertIn("Alexiad", message["content"][0]["text"])
        (record,) = self.records()
        self.assertEqual(record["response"]["status"], 200)
        self.assertEqual(record["ai"]["proxy"]["meta"]["request_mode"], "oneshot")
        self.assertEqual(record["ai"]["proxy"]["usage"]["completion_tokens"], message["usage"]["output_tokens"])

    def test_stream_events_in_anthropic_order(self):
        status, headers, text = self.post(ask("hello [[chunks 3]]", stream=True))
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"][0].startswith("text/event-stream"))
        check_stream(events(text))
        names = [name for name, _ in events(text)]
        self.assertEqual(names[:2], ["message_start", "ping"])
        self.assertEqual(names[-2:], ["message_delta", "message_stop"])
        self.assertEqual(names.count("content_block_delta"), 3)
        (record,) = self.records()
        self.assertEqual(record["ai"]["proxy"]["meta"]["request_mode"], "stream")

    def test_vertex_rate_limit_becomes_a_429_without_a_guessed_delay(self):
        status, headers, text = self.post(ask("[[fail 429]]"))
        self.assertEqual(status, 429)
        self.assertEqual(json.loads(text)["error"]["type"], "rate_limit_error")
        self.assertNotIn("retry-after", headers)
        self.assertEqual(self.records()[0]["response"]["status"], 429)

    def test_upstream_overload_becomes_529(self):
        status, _, text = self.post(ask("[[fail 503]]"))
        self.assertEqual((status, json.loads(text)["error"]["type"]), (529, "overloaded_error"))

    def test_a_stream_that_fails_midway_ends_with_an_error_event_and_no_message_stop(self):
        status, _, text = self.post(ask("hello [[stream-error 500]]", stream=True))
        self.assertEqual(status, 200)
        names = [name for name, _ in events(text)]
        self.assertEqual(names[0], "message_start")
        self.assertEqual(names[-1], "error")
        self.assertNotIn("message_stop", names)
        self.assertEqual(len(self.records()), 1)

    def test_strict_upstream_rejection_is_a_400_with_googles_message(self):
        # The request reaches Google (the fake), whose 400 and message reach the client.
        status, _, text = self.post(ask("hi [[fail 400]]"))
        self.assertEqual(status, 400)
        error = json.loads(text)["error"]
        self.assertEqual(error["type"], "invalid_request_error")
        self.assertIn("Request contains an invalid argument.", error["message"])
        self.assertEqual([r["status"] for r in self.fake.requests], [400])

    def test_out_of_range_sampling_is_refused_before_google(self):
        status, _, text = self.post(ask("hi", temperature=1.5))
        self.assertEqual((status, json.loads(text)["error"]["type"]), (400, "invalid_request_error"))
        self.assertIn("temperature", json.loads(text)["error"]["message"])
        self.assertEqual(self.fake.requests, [])

    def test_nan_is_not_json_and_is_refused_before_google(self):
        # Python's reader takes NaN; JSON, Anthropic and Google do not.
        status, _, text = self.post(ask("hi", temperature=float("nan")))
        self.assertEqual((status, json.loads(text)["error"]["type"]), (400, "invalid_request_error"))
        self.assertIn("NaN is not a JSON value", json.loads(text)["error"]["message"])
        self.assertEqual(self.fake.requests, [])

    def test_count_tokens(self):
        status, _, text = self.post(ask("count me"), url=MESSAGES + "/count_tokens")
        self.assertEqual(status, 200)
        self.assertGreater(json.loads(text)["input_tokens"], 0)

    def test_unknown_path_under_the_route_is_anthropics_404(self):
        status, _, text = self.post(ask("x"), url="http://gateway.test/anything/v1/nothing")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(text)["error"]["type"], "not_found_error")

    def test_get_on_messages_is_405(self):
        response = self.successResultOf(self.client.get(MESSAGES))
        self.assertEqual(response.code, 405)

    def test_no_route_is_kongs_404_and_still_logged_by_the_global_file_log(self):
        status, _, text = self.post(ask("x"), url="http://gateway.test/nowhere")
        body = json.loads(text)
        self.assertEqual((status, body["message"]), (404, "no Route matched with those values"))
        (record,) = self.records()
        self.assertEqual(body["request_id"], record["request"]["id"])
        self.assertEqual(record["response"]["status"], 404)
        self.assertNotIn("route", record)


class BrokenCredentialsTests(GatewayInMemory):
    token_source = BrokenToken()

    def test_credentials_failure_is_a_500_without_secrets(self):
        status, _, text = self.post(ask("hi"))
        self.assertEqual(status, 500)
        error = json.loads(text)["error"]
        self.assertEqual(error["type"], "api_error")
        self.assertNotIn("PRIVATE", text)
        self.assertEqual(self.records()[0]["response"]["status"], 500)


GEMINI_API_PLUGIN = """_format_version: "3.0"
plugins:
  - name: ai-proxy-advanced
    config:
      llm_format: anthropic
      max_request_body_size: 4096
      targets:
      - route_type: llm/v1/chat
        logging: {log_statistics: true, log_payloads: false}
        auth: {header_name: x-goog-api-key, header_value: fake-gemini-key}
        model:
          provider: gemini
          name: gemini-2.5-flash
          options:
            upstream_url: "https://fake.test/v1beta/models/gemini-2.5-flash:generateContent"
"""


class GeminiApiTests(GatewayInMemory):
    """A Gemini API target with its key in a header, and a small request body limit."""

    extra_files = {"80-gemini-api.yaml": GEMINI_API_PLUGIN}

    def test_the_api_key_goes_in_the_header_not_the_url(self):
        status, _, _ = self.post(ask("hi"))
        self.assertEqual(status, 200)
        (call,) = [r for r in self.fake.requests if r["path"].startswith("/v1beta/")]
        self.assertEqual(call["headers"]["x-goog-api-key"], "fake-gemin")  # recorded redacted
        self.assertEqual(call["query"], {})

    def test_gemini_api_rate_limit_passes_on_google_retry_delay(self):
        status, headers, text = self.post(ask("[[fail 429]]"))
        self.assertEqual((status, json.loads(text)["error"]["type"]), (429, "rate_limit_error"))
        self.assertEqual(headers["retry-after"], ["12"])

    def test_max_request_body_size_is_enforced(self):
        status, _, _ = self.post(ask("x" * 3000))
        self.assertEqual(status, 200)
        status, _, text = self.post(ask("x" * 5000))
        self.assertEqual((status, json.loads(text)["error"]["type"]), (413, "request_too_large"))
        self.assertEqual([r for r in self.fake.requests if r["path"].startswith("/v1beta/")][1:], [])


class TimingTests(GatewayInMemory):
    def test_time_to_first_token_and_time_per_token_are_measured(self):
        self.fake.stream_delay = 0.25  # the fake sends its first frame at once, then one per 0.25 s
        sent = self.client.post(MESSAGES, data=json.dumps(ask("hello there [[chunks 4]]", stream=True)).encode())
        for _ in range(8):
            self.clock.advance(0.25)
            self.upstream.flush()
            self.client.flush()
        response = self.successResultOf(sent)
        check_stream(events(self.successResultOf(response.text())))
        ai = self.records()[-1]["ai"]["proxy"]
        completion = ai["usage"]["completion_tokens"]
        self.assertEqual(ai["meta"]["llm_latency"], 1000)  # five frames: 0, .25, .5, .75, 1.0 s
        self.assertEqual(ai["usage"]["time_to_first_token"], 0)
        self.assertEqual(ai["usage"]["time_per_token"], 1000 / completion)
