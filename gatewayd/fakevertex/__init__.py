"""A strict fake of Vertex AI and the Gemini API, for tests and demos without a Google account.

Run it with ``python -m gatewayd.fakevertex``; in tests build it in-process with
``make_resource(FakeVertex(), clock)`` (for ``treq.testing.StubTreq``) or ``make_site``.
"""

from .server import FakeVertex, make_resource, make_site

__all__ = ["FakeVertex", "make_resource", "make_site"]
