"""A lean fake Vertex AI upstream for the benchmark: canned answers, at once.

``python -m gatewayd.fakevertex`` validates every request against Google's
rules and keeps every request for inspection, which costs more CPU per call
than the gateway itself and grows without bound; a throughput figure measured
against it would measure the fake.  This one answers from prebuilt bytes:

- ``POST /token``: an OAuth token (the gateway's service-account grant);
- ``POST ...:generateContent``: a short Gemini answer;
- ``POST ...:streamGenerateContent``: ``--chunks`` SSE chunks of ``--chunk-bytes``
  text each plus the final chunk, written as fast as the reader takes them
  (it honours TCP flow control, so a 50 MB answer never sits in its memory);
  or, paced, one chunk every ``--pace`` seconds, the first one too, as a model
  sends them, so a gateway's time to first text is its own work and not
  queueing behind a burst of chunks.  A paced stream's first text is
  ``w<14 digits> ``: the microseconds the fake itself waited between having
  the request and writing that chunk, so the bench can take the fake's own
  timer (its sleep overshoots by a varying amount on a busy core) out of
  the time to first text;
- ``POST /pace``: ``{"seconds": s, "chunks": n}`` sets the pace (0: a burst) and
  the chunk count of the streams that start from then on, so one bench run can
  measure bursts and paced streams through the same gateway.

Direct calls in the bench go to this same server, so "direct" and "through
the gateway" differ by the gateway alone.  Standard library only, one process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 3, "totalTokenCount": 15}
MODEL_VERSION = "gemini-2.0-flash-001"


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


TOKEN = _response(
    b"200 OK",
    b"application/json",
    json.dumps({"access_token": "ya29.bench", "expires_in": 3600, "token_type": "Bearer"}).encode(),
)
GENERATE = _response(
    b"200 OK",
    b"application/json; charset=UTF-8",
    json.dumps(
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": "Hello from the bench."}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": USAGE,
            "modelVersion": MODEL_VERSION,
        }
    ).encode(),
)
NOT_FOUND = _response(b"404 Not Found", b"text/plain", b"not found\n")
PACED = _response(b"200 OK", b"application/json", b"{}")
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(data: dict) -> bytes:
    return _chunk(b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\r\n\r\n")


class Stream:
    """The prebuilt pieces of one streamed answer."""

    def __init__(self, chunks: int, chunk_bytes: int, hold: bool = False, pace: float = 0.0) -> None:
        self.chunks = chunks
        self.hold = hold
        self.pace = pace
        text = ("x" * (chunk_bytes - 1)) + " "
        self.text_chunk = self.chunk_of(text)
        self.last = _sse(
            {
                "candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": USAGE,
                "modelVersion": MODEL_VERSION,
            }
        ) + b"0\r\n\r\n"


    @staticmethod
    def chunk_of(text: str) -> bytes:
        return _sse(
            {
                "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}],
                "usageMetadata": USAGE,
                "modelVersion": MODEL_VERSION,
            }
        )


class FakeProtocol(asyncio.Protocol):
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while not self.streaming:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            target = head.split(b" ", 2)[1]
            self.answer(target, body)

    def answer(self, target: bytes, body: bytes) -> None:
        assert self.transport is not None
        if b":streamGenerateContent" in target:
            self.streaming = True
            started = time.perf_counter()
            asyncio.get_running_loop().create_task(self.send_paced(started) if self.stream.pace else self.send_stream())
        elif b":generateContent" in target:
            self.transport.write(GENERATE)
        elif target.startswith(b"/token"):
            self.transport.write(TOKEN)
        elif target == b"/pace":
            settings = json.loads(body)
            self.stream.pace = float(settings.get("seconds", 0.0))
            self.stream.chunks = int(settings.get("chunks", self.stream.chunks))
            self.transport.write(PACED)
        else:
            self.transport.write(NOT_FOUND)

    async def send_paced(self, started: float) -> None:
        """One chunk per write, ``pace`` seconds apart, the first one ``pace`` after the request
        and telling how long the fake took to send it."""
        stream = self.stream
        self.transport.write(STREAM_HEAD)  # type: ignore[union-attr]
        for index in range(stream.chunks):
            await asyncio.sleep(stream.pace)
            if self.transport is None:
                return
            if index == 0:
                waited = round((time.perf_counter() - started) * 1e6)
                self.transport.write(stream.chunk_of(f"w{waited:014d} "))
            else:
                self.transport.write(stream.text_chunk)
            await self.writable.wait()
        self._finish()

    async def send_stream(self) -> None:
        stream = self.stream
        self.transport.write(STREAM_HEAD)  # type: ignore[union-attr]
        # Batches of chunks per write keep the fake cheap; each is still its own SSE event.
        batch = max(1, 65536 // len(stream.text_chunk))
        sent = 0
        while sent < stream.chunks:
            if self.transport is None:
                return
            count = min(batch, stream.chunks - sent)
            self.transport.write(stream.text_chunk * count)
            sent += count
            await self.writable.wait()
            if stream.hold:  # an idle stream: one chunk, then nothing until the reader leaves
                await asyncio.Event().wait()
        self._finish()

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.write(self.stream.last)
            self.streaming = False
            if self.buffer:
                self.data_received(b"")


async def serve(host: str, port: int, port_file: str | None, stream: Stream) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeProtocol(stream), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    if port_file:
        with open(port_file, "w") as handle:
            handle.write(f"{bound}\n")
    print(f"bench fake upstream on http://{host}:{bound}/", flush=True)
    await server.serve_forever()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--chunks", type=int, default=200, help="text chunks per streamed answer")
    parser.add_argument("--chunk-bytes", type=int, default=16, help="text bytes per chunk")
    parser.add_argument("--hold", action="store_true", help="streams send one batch, then stay open, idle")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between chunks (0: as fast as read)")
    args = parser.parse_args(argv)
    stream = Stream(args.chunks, args.chunk_bytes, args.hold, args.pace)
    asyncio.run(serve(args.host, args.port, args.port_file, stream))


if __name__ == "__main__":
    main(sys.argv[1:])
