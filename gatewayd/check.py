"""``python -m gatewayd.check --config /etc/gatewayd``: would this configuration serve?

What ``nginx -t`` is to nginx: it reads the files with the environment it is
given, expands the ``DECK_...`` variables, validates every entity against
Kong's schemas and compiles the gateway exactly as a start or a SIGHUP reload
would (service-account keys parsed, targets built), without listening or
calling anything.  It prints the problem a reload would log, and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping, Sequence

from gatewayd.plugins import read_config
from gatewayd.daemon.reload import INVALID
from gatewayd.daemon.gateway import Gateway, google_token_sources


def check(path: str, environ: Mapping[str, str]) -> str:
    """A summary of the configuration at ``path``; raises one of :data:`INVALID` if it cannot serve."""
    from twisted.internet import reactor

    config = read_config(path, environ)
    # Compile against a gateway that never starts: nothing listens, no file opens, no call goes out.
    Gateway(reactor, client=None, make_token_source=google_token_sources(reactor)).load(config)  # type: ignore[arg-type]
    return (
        f"{len(config.services)} services, {len(config.routes)} routes, {len(config.plugins)} plugins "
        f"from {', '.join(config.sources)}"
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(prog="python -m gatewayd.check", description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", default="/etc/gatewayd", help="a decK YAML file or a directory of them")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only problems")
    options = parser.parse_args(argv)
    try:
        summary = check(options.config, environ)
    except INVALID as error:
        print(f"gatewayd: configuration {options.config} is invalid: {error}", file=sys.stderr)
        return 1
    if not options.quiet:
        print(f"gatewayd: configuration {options.config} is ok: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
