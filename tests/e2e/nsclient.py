"""``python -m tests.e2e.nsclient ask|stream PORT``: one client of a gatewayd in the booted system.

The systemd tests run it with ``nsenter -n``: the booted system's network, this
checkout's Python.  ``ask`` prints the response's JSON; ``stream`` prints each
server-sent event line as it arrives.
"""

from __future__ import annotations

import http.client
import json
import sys


def request(port: int, stream: bool) -> http.client.HTTPResponse:
    text = "[[chunks 8]] Tell me about the Alexiad." if stream else "hello"
    body = {"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": stream,
            "messages": [{"role": "user", "content": text}]}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/anything/v1/messages", json.dumps(body),
                       {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "x"})
    return connection.getresponse()


def main(kind: str, port: str) -> int:
    response = request(int(port), kind == "stream")
    if kind == "ask":
        print(json.dumps({"status": response.status, **json.loads(response.read())}))
        return 0
    for line in response:
        print(line.decode().rstrip("\n"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
