"""A plain HTTP service for the end-to-end tests: ``python tests/e2e/upstream.py PORT_FILE``.

It shares nothing with gatewayd (the standard library's threading HTTP server):
``/echo/...`` answers what it received, ``/big?mb=N`` streams N MiB in chunks as
fast as the reader takes them, ``/upload`` counts the bytes of a request body.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK = b"x" * 65536


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _json(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Upstream", "plain")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/big":
            mebibytes = int(parse_qs(url.query)["mb"][0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(mebibytes * 16):
                self.wfile.write(b"10000\r\n" + CHUNK + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self._json({"method": "GET", "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        received = 0
        while received < length:
            chunk = self.rfile.read(min(65536, length - received))
            if not chunk:
                break
            received += len(chunk)
        self._json({"method": "POST", "path": self.path, "received": received})


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as port_file:
        port_file.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
