"""``python -m gatewayd.fakevertex``: run the fake Vertex AI / Gemini API server."""

import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python import usage

from .server import TOKEN_FAULTS, FakeVertex, make_site, write_file


class Options(usage.Options):
    optParameters = [
        ["listen", None, "tcp:0:interface=127.0.0.1", "Endpoint to listen on (loopback, any port by default)."],
        ["port-file", None, None, "Write the bound port number to this file once listening."],
        ["write-service-account", None, None, "Write a service-account JSON key for this fake here."],
        ["api-key", None, "fake-gemini-key", "The Gemini API key to accept."],
        ["stream-chunks", None, 4, "Text chunks per streamed answer.", int],
        ["stream-delay", None, 0.0, "Seconds between streamed chunks.", float],
        ["fail-all", None, None, "Answer every model call with this HTTP status (a target that is down).", int],
        ["token-fault", None, None, "How /token misbehaves: 500, close or hang (see PUT /_fake/token-fault)."],
        ["token-lifetime", None, 3600, "Seconds an issued access token is valid.", int],
    ]

    def postOptions(self) -> None:
        if self["token-fault"] not in (None, *TOKEN_FAULTS):
            raise usage.UsageError(f"--token-fault must be one of {', '.join(TOKEN_FAULTS)}")


def _host(address: object) -> str:
    host = getattr(address, "host", "127.0.0.1")
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def main(reactor, options: Options) -> None:
    fake = FakeVertex(
        api_key=options["api-key"],
        stream_chunks=options["stream-chunks"],
        stream_delay=options["stream-delay"],
        fail_all=options["fail-all"],
        token_fault=options["token-fault"],
        token_lifetime=options["token-lifetime"],
    )
    port = await serverFromString(reactor, options["listen"]).listen(make_site(fake, reactor))
    address = port.getHost()
    base = f"http://{_host(address)}:{address.port}"
    if options["write-service-account"]:
        fake.write_service_account(options["write-service-account"], f"{base}/token")
    else:
        fake.new_service_account(f"{base}/token")
    if options["port-file"]:
        write_file(options["port-file"], f"{address.port}\n")
    print(f"fakevertex listening on {base}/ (token_uri {base}/token)", flush=True)
    await Deferred()


def run(argv: list[str]) -> None:
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as error:
        raise SystemExit(f"{sys.argv[0]}: {error}\n{options}")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, options)))


if __name__ == "__main__":
    run(sys.argv[1:])
