"""Kong 3's router (traditional_compatible), case by case from Kong's own unit spec.

Each case cites the line of Kong/kong ``spec/01-unit/08-router_spec.lua`` (or of
``spec/fixtures/router_path_handling_tests.lua``) it is taken from.  Kong's spec
calls ``select()`` on raw paths and ``exec()`` on normalised ones; gatewayd's
``Router.match`` always normalises, as ``exec()`` does.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from gatewayd.config import Route
from gatewayd.router import Match, RequestFacts, Router, normalize_path, protocol_redirect


def R(n: str, **fields: Any) -> Route:
    """A route named ``rNN`` with the spec's id ``e8fb37f1-...-6608a6bb81NN``."""
    if "headers" in fields:
        fields["headers"] = MappingProxyType(fields["headers"])
    return Route(name=f"r{n}", id=f"e8fb37f1-102d-461e-9c51-6608a6bb81{n}", **fields)


def req(path: str = "/", host: str = "", method: str = "GET", *, port: int = 8000,
        scheme: str = "http", headers: dict[str, Any] | None = None,
        sni: str | None = None, query: str | None = None) -> RequestFacts:
    values = {name: (v,) if isinstance(v, str) else tuple(v) for name, v in (headers or {}).items()}
    return RequestFacts(method=method, path=path, host=host, port=port, scheme=scheme,
                        headers=values, sni=sni, query=query)


def route_for(routes: list[Route], facts: RequestFacts) -> Match[str] | None:
    return Router.build((r, r.name) for r in routes).match(facts)


# The select() table, 08-router_spec.lua:156-350.
SELECT = [
    R("01", hosts=("domain-1.org", "domain-2.org")),
    R("02", methods=("TRACE",)),
    R("03", paths=("/my-route",)),
    R("04", paths=("/route-4",), hosts=("domain-1.org", "domain-2.org")),
    R("05", hosts=("domain-1.org", "domain-2.org"), methods=("POST", "PUT", "PATCH")),
    R("06", methods=("POST", "PUT", "PATCH"), paths=("/route-6",)),
    R("07", hosts=("domain-with-uri-1.org", "domain-with-uri-2.org"),
      methods=("POST", "PUT", "PATCH"), paths=("/my-route-uri",)),
    R("08", paths=("/serviceless",)),
    R("09", headers={"location": ("my-location-1", "my-location-2")}),
    R("10", headers={"location": ("my-location-1",), "version": ("v1", "v2")}),
    R("11", headers={"location": ("my-location-1", "my-location-2")}, paths=("/headers-uri",)),
    R("12", hosts=("domain-with-headers-1.org", "domain-with-headers-2.org"),
      headers={"location": ("my-location-1", "my-location-2")},
      methods=("POST", "PUT", "PATCH"), paths=("/headers-host-uri-method",)),
    R("13", hosts=("domain-1.org:321", "domain-2.org")),
    R("14", hosts=("domain-3.org:321",)),
    R("15", headers={"user_agent": (r"~*windows|linux|os\s+x\s*[\d\._]+|solaris|bsd",)}),
]
UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/83.0.4103.116 Safari/537.36")

WILDCARD = [R("01", hosts=("*.route.com",)), R("02", hosts=("route.*",))]
EDGE = SELECT[:7]  # 08-router_spec.lua:2494-2590, the first seven routes again
ROOT = [R("0f", paths=("/",))] + EDGE  # :2775 inserts a root route first

CASES = [
    # --- hosts and ports ---
    (375, "[host]", SELECT, req("/", "domain-1.org"), "r01", {"matched_host": "domain-1.org"}),
    (388, "[host] ignores default port", SELECT, req("/", "domain-1.org:80"), "r01", {}),
    # route 13 ties with route 1; atc-router tries the higher id first
    (411, "[host] matches specific port", SELECT, req("/", "domain-1.org:321"), "r13",
     {"matched_host": "domain-1.org:321"}),
    (424, "[host] matches specific port on port-only route", SELECT,
     req("/", "domain-3.org:321"), "r14", {}),
    (437, "[host] fails just because of port on port-only route", SELECT,
     req("/", "domain-3.org:123"), None, {}),
    (5510, "exec() should use var.server_port if host has no port",
     [R("01", hosts=("www.example.com:8000",))], req("/foo", "www.example.com", port=8000), "r01", {}),
    (5510, "exec() ... no port provided: the local port is not 8000",
     [R("01", hosts=("www.example.com:8000",))], req("/foo", "www.example.com", port=80), None, {}),
    (5495, "select() ... www.example.com:80 does not match :8000",
     [R("01", hosts=("www.example.com:8000",))], req("/", "www.example.com:80", port=8000), None, {}),
    # --- uri, method, combinations ---
    (443, "[uri]", SELECT, req("/my-route", "domain.org"), "r03", {"matched_path": "/my-route"}),
    (456, "[uri + empty host]", SELECT, req("/my-route-uri", ""), "r03", {}),
    (470, "[method]", SELECT, req("/", "domain.org", "TRACE"), "r02", {"matched_path": None}),
    (483, "[host + uri]", SELECT, req("/route-4", "domain-1.org"), "r04", {}),
    (498, "[host + method]", SELECT, req("/", "domain-1.org", "POST"), "r05", {}),
    (511, "[uri + method]", SELECT, req("/route-6", "domain.org", "PUT"), "r06", {}),
    (524, "[host + uri + method]", SELECT, req("/my-route-uri", "domain-with-uri-2.org", "PUT"),
     "r07", {"matched_host": "domain-with-uri-2.org"}),
    (695, "[serviceless]", SELECT, req("/serviceless"), "r08", {"uri_captures": None}),
    (2930, "misses: invalid method in [host + uri + method]", SELECT,
     req("/my-route-uri", "domain-with-uri-2.org", "GET"), "r03", {}),
    (2918, "misses: invalid [host]", SELECT, req("/", "domain-3.org"), None, {}),
    # --- headers ---
    (538, "single [headers] value", SELECT, req(headers={"location": "my-location-1"}), "r09", {}),
    (538, "single [headers] value, second value", SELECT,
     req(headers={"location": "my-location-2"}), "r09", {}),
    (538, "single [headers] value, one of several request values", SELECT,
     req(headers={"location": ["my-location-3", "my-location-2"]}), "r09", {}),
    (538, "single [headers] value, no value matches", SELECT,
     req(headers={"location": ["my-location-3", "foo"]}), None, {}),
    (538, "single [headers] value, ~* regex", SELECT, req(headers={"user-agent": UA}), "r15", {}),
    (599, "multiple [headers] values", SELECT,
     req(headers={"location": "my-location-1", "version": "v2"}), "r10", {}),
    (599, "multiple [headers] values, falls back to route 9", SELECT,
     req(headers={"location": ["my-location-3", "my-location-2"], "version": "v2"}), "r09", {}),
    (658, "[headers + uri]", SELECT,
     req("/headers-uri", headers={"location": "my-location-2"}), "r11", {}),
    (674, "[host + headers + uri + method]", SELECT,
     req("/headers-host-uri-method", "domain-with-headers-1.org", "PUT",
         headers={"location": "my-location-2"}), "r12", {}),
    (2945, "misses: invalid [headers]", SELECT, req(headers={"location": "invalid-location"}),
     None, {}),
    (1614, "evaluates Routes with more [headers] first",
     [R("01", headers={"version": ("v1", "v2"), "user_agent": ("foo", "bar")}),
      R("02", headers={"version": ("v1", "v2"), "user_agent": ("foo", "bar"),
                       "location": ("east", "west")})],
     req(headers={"version": "v1", "user-agent": "foo", "location": ["north", "west"]}), "r02", {}),
    (1651, "names are case-insensitive",
     [R("01", headers={"USER_AGENT": ("foo", "bar")}), R("02", headers={"user_agent": ("baz",)})],
     req(headers={"user-agent": "foo"}), "r01", {}),
    (1696, "matches values in a case-insensitive way",
     [R("01", headers={"user_agent": ("foo", "bar")}), R("02", headers={"user_agent": ("BAZ",)})],
     req(headers={"user-agent": "baz"}), "r02", {}),
    (5075, "[cache hit should be case sensitive]: QuoTe matches Quote",
     [R("01", paths=("/foo",), headers={"test1": ("Quote",)})],
     req("/foo", headers={"test1": "QuoTe"}), "r01", {}),
    (2862, "more [headers] has priority over longer [paths]",
     [R("01", headers={"version": ("v1",)}, paths=("/my-route/hello",)),
      R("02", headers={"version": ("v1",), "location": ("us-east",)}, paths=("/my-route",))],
     req("/my-route/hello", "domain.org", headers={"version": "v1", "location": "us-east"}),
     "r02", {"matched_path": "/my-route"}),
    # --- uri prefixes ---
    (788, "matches when given [uri] is in request URI prefix", SELECT,
     req("/my-route/some/path", "domain.org"), "r03", {}),
    (801, "does not supersede another route with a longer [uri]",
     [R("01", paths=("/my-route/hello",)), R("02", paths=("/my-route",))],
     req("/my-route/hello/world"), "r01", {}),
    (801, "does not supersede another route with a longer [uri], shorter request",
     [R("01", paths=("/my-route/hello",)), R("02", paths=("/my-route",))],
     req("/my-route/world"), "r02", {}),
    (850, "... while [methods] are also defined",
     [R("01", methods=("POST", "PUT", "GET"), paths=("/my-route",)),
      R("02", methods=("POST", "PUT", "GET"), paths=("/my-route/hello",))],
     req("/my-route/hello/world"), "r02", {}),
    (889, "... while [hosts] are also defined",
     [R("01", hosts=("domain.org",), paths=("/my-route",)),
      R("02", hosts=("domain.org",), paths=("/my-route/hello",))],
     req("/my-route/hello", "domain.org"), "r02", {}),
    (928, "... when a better [uri] match exists for another [host]",
     [R("01", hosts=("example.com",), paths=("/my-route",)),
      R("02", hosts=("example.com",), paths=("/my-route/hello",)),
      R("03", hosts=("example.net",), paths=("/my-route/hello/world",))],
     req("/my-route/hello/world/and/goodnight", "example.com"), "r02", {}),
    (967, "only matches [uri prefix] as a prefix (anchored mode)",
     [R("01", paths=("/something/my-route",)), R("02", hosts=("example.com",), paths=("/my-route",))],
     req("/something/my-route", "example.com"), "r01", {}),
    (2939, "misses: [uri] in URI but not in prefix", SELECT, req("/some-path/my-route"), None, {}),
    # --- uri regexes ---
    (999, "matches with [uri regex]", [R("01", paths=(r"~/users/\d+/profile",))],
     req("/users/123/profile", "domain.org"), "r01", {"matched_path": "/users/123/profile"}),
    (1023, "matches the right route when several ones have a [uri regex]",
     [R("01", paths=(r"~/route/persons/\d{3}",)),
      R("02", paths=(r"~/route/persons/\d{3}/following",)),
      R("03", paths=(r"~/route/persons/\d{3}/[a-z]+",))],
     req("/route/persons/456"), "r01", {}),
    (1055, "matches a [uri regex] even if a [prefix uri] got a match",
     [R("01", paths=("/route/persons",)), R("02", paths=(r"~/route/persons/\d+/profile",))],
     req("/route/persons/123/profile"), "r02", {}),
    (1087, "matches a [uri regex] even if a [uri] got an exact match",
     [R("01", paths=("/route/fixture",)), R("02", paths=("~/route/(fixture)",))],
     req("/route/fixture"), "r02", {"uri_captures": {0: "/route/fixture", 1: "fixture"}}),
    (1117, "matches a [uri regex + host] even if a [prefix uri] got a match",
     [R("01", hosts=("route.com",), paths=("/pat",)),
      R("02", hosts=("route.com",), paths=("/path",), methods=("POST",)),
      R("03", hosts=("route.com",), paths=("~/(path)",))],
     req("/path", "route.com"), "r03", {"matched_host": "route.com"}),
    (1158, "matches from the beginning of the request URI [uri regex]",
     [R("01", paths=("~/prefix/[0-9]+",))], req("/extra/prefix/123"), None, {}),
    (2661, "half [uri regex] and [method] match does not supersede another route",
     [R("01", methods=("GET",), paths=(r"~/users/\d+/profile",)),
      R("02", methods=("POST",), paths=(r"~/users/\d*/profile",))],
     req("/users/123/profile", method="POST"), "r02", {}),
    (4941, "[prefix matching ignore regex_priority]",
     [R("01", paths=("/.*",), hosts=("domain-1.org",)),
      R("02", paths=("/",), hosts=("domain-2.org",), regex_priority=5),
      R("03", paths=("/v1",), hosts=("domain-2.org",))],
     req("/v1", "domain-2.org"), "r03", {}),
    (4993, "[assigns different priorities to regex and non-regex path]",
     [R("01", paths=("~/some/thing/else", "/foo"), hosts=("domain-1.org",)),
      R("02", paths=("/foo/bar",), hosts=("domain-1.org",))],
     req("/foo/bar", "domain-1.org"), "r02", {}),
    (4993, "[assigns different priorities ...] regex half",
     [R("01", paths=("~/some/thing/else", "/foo"), hosts=("domain-1.org",)),
      R("02", paths=("/foo/bar",), hosts=("domain-1.org",))],
     req("/some/thing/else", "domain-1.org"), "r01", {}),
    (5042, "[assigns different priorities to each path]",
     [R("01", paths=("/foo", "/foo/bar/baz"), hosts=("domain-1.org",)),
      R("02", paths=("/foo/bar",), hosts=("domain-1.org",))],
     req("/foo/bar", "domain-1.org"), "r02", {}),
    # --- wildcard hosts ---
    (1207, "matches leftmost wildcards", WILDCARD, req("/", "foo.route.com"), "r01",
     {"matched_host": "*.route.com"}),
    (1219, "matches rightmost wildcards", WILDCARD, req("/", "route.org"), "r02", {}),
    (1225, "matches any port in request", WILDCARD, req("/", "route.org:123"), "r02", {}),
    (1235, "matches port-specific routes",
     WILDCARD + [R("03", hosts=("*.route.net:123",)), R("04", hosts=("route.*:123",))],
     req("/", "route.org:123"), "r04", {}),
    (1235, "matches port-specific routes: fail different port",
     WILDCARD + [R("03", hosts=("*.route.net:123",)), R("04", hosts=("route.*:123",))],
     req("/", "foo.route.net:456"), None, {}),
    (1272, "prefers port-specific even for http default port (implicit, local port 80)",
     WILDCARD + [R("03", hosts=("route.*:80",))], req("/", "route.org", port=80), "r03", {}),
    (1332, "does not take precedence over a plain host",
     [R("00", hosts=("plain.route.com",))] + WILDCARD + [R("03", hosts=("route.com",))],
     req("/", "route.com"), "r03", {}),
    (1332, "does not take precedence over a plain host: plain.route.com",
     [R("00", hosts=("plain.route.com",))] + WILDCARD + [R("03", hosts=("route.com",))],
     req("/", "plain.route.com"), "r00", {}),
    (1398, "matches [wildcard host + path] even if a similar [plain host] exists",
     [R("01", hosts=("*.route.com",), paths=("/path1",)),
      R("02", hosts=("plain.route.com",), paths=("/path2",))],
     req("/path1", "plain.route.com"), "r01", {}),
    (1464, "submatch_weight [wildcard host port] > [wildcard host]",
     [R("01", hosts=("route.*",)), R("02", hosts=("route.*:80", "route.com.*"))],
     req("/", "route.org:80"), "r02", {"matched_host": "route.*:80"}),
    (1545, "matches [wildcard/plain + uri + method]",
     WILDCARD + [R("03", hosts=("*.domain.com", "example.com"), paths=("/path",),
                   methods=("GET", "TRACE"))],
     req("/path", "foo.domain.com", "POST"), None, {}),
    (1580, "[wildcard host] + [uri regex]",
     [R("01", hosts=("*.example.com",), paths=(r"~/users/\d+/profile",)),
      R("02", hosts=("*.example.com",), paths=("/users",))],
     req("/users/123/profile", "test.example.com"), "r01", {}),
    (2631, "half [wildcard host] and [method] match does not supersede another route",
     [R("01", hosts=("host.*",), methods=("GET",)), R("02", hosts=("host.*",), methods=("POST",))],
     req("/", "host.com", "POST"), "r02", {}),
    (2719, "[method] does not supersede [wildcard host]",
     [R("01", methods=("GET",)), R("02", hosts=("domain.*",))], req("/", "domain.com"), "r02", {}),
    # --- snis (only considered over https) ---
    (1767, "[wildcard sni] matches leftmost wildcards",
     [R("01", snis=("*.sni.test",), protocols=("https",)), R("02", snis=("sni.*",), protocols=("https",))],
     req("/", "any.test", scheme="https", sni="foo.bar.sni.test"), "r01", {}),
    (1779, "[wildcard sni] matches rightmost wildcards",
     [R("01", snis=("*.sni.test",), protocols=("https",)), R("02", snis=("sni.*",), protocols=("https",))],
     req("/", "any.test", scheme="https", sni="sni.foo.bar"), "r02", {}),
    (1788, "[wildcard sni] doesn't match wildcard",
     [R("01", snis=("*.sni.test",), protocols=("https",)), R("02", snis=("sni.*",), protocols=("https",))],
     req("/", "any.test", scheme="https", sni="foo.sni.test.bar"), None, {}),
    (1742, "snis are not considered when net.protocol is not https (transform.lua, #6425)",
     [R("01", snis=("*.sni.test",), protocols=("https",))], req("/", "any.test"), "r01", {}),
    # --- priority edge cases ---
    (2492, "[host] and [uri] have higher priority than [method]", EDGE,
     req("/", "domain-2.org", "TRACE"), "r01", {}),
    (2492, "[host] and [uri] have higher priority than [method]: uri", EDGE,
     req("/my-route", "domain.org", "TRACE"), "r03", {}),
    (2601, "half [uri] and [host] match does not supersede another route",
     [R("01", hosts=("host1.com",), paths=("/v1/path",)), R("02", hosts=("host2.com",), paths=("/",))],
     req("/v1/path", "host2.com"), "r02", {}),
    (2691, "[method] does not supersede [uri prefix]",
     [R("01", methods=("GET",)), R("02", paths=("/example",))],
     req("/example/status/200"), "r02", {}),
    (2787, "root / [uri]: request with [method]", ROOT, req("/", "domain.org"), "r0f", {}),
    (2794, "root / [uri]: does not supersede another route", ROOT,
     req("/my-route/hello/world", "domain.org"), "r03", {}),
    (2805, "root / [uri]: acts as a catch-all route", ROOT, req("/foobar/baz", "domain.org"),
     "r0f", {}),
    (2849, "multiple routes of same category with conflicting values",
     SELECT + [R(f"1{i}", hosts=("domain.org",), paths=("/my-uri",)) for i in range(1, 6)]
     + [R("21", hosts=("domain.org",), paths=("/my-target-uri",))],
     req("/my-target-uri", "domain.org"), "r21", {}),
    # --- captures, normalisation ---
    (3379, "returns matched_host + matched_uri",
     [R("01", hosts=("host.com",), methods=("GET",), paths=("/my-route",)),
      R("02", hosts=("host.com",), paths=("/my-route",)),
      R("03", hosts=("*.host.com",), headers={"location": ("my-location-1", "my-location-2")}),
      R("04", paths=(r"~/users/\d+/profile",))],
     req("/", "test.host.com", headers={"location": "my-location-1"}), "r03",
     {"matched_host": "*.host.com", "matched_path": None}),
    (3487, "uri_captures works well with the optional capture group. Fix #13014",
     [R("01", paths=(r"~/(users/)?1984/(?<subpath>profile)$",))], req("/1984/profile"), "r01",
     {"uri_captures": {0: "/1984/profile", 2: "profile", "subpath": "profile"}}),
    (3507, "returns uri_captures from a [uri regex]",
     [R("01", paths=(r"~/users/(?P<user_id>\d+)/profile/?(?P<scope>[a-z]*)",))],
     req("/users/1984/profile/email"), "r01",
     {"uri_captures": {0: "/users/1984/profile/email", 1: "1984", 2: "email",
                       "user_id": "1984", "scope": "email"}}),
    (3561, "returns uri_captures normalized, fix #7913",
     [R("01", paths=(r"~/users/(?P<fullname>[a-zA-Z\s\d%]+)/profile/?(?P<scope>[a-z]*)",))],
     req("/users/%6aohn%20doe/profile"), "r01",
     {"uri_captures": {0: "/users/john doe/profile", 1: "john doe", 2: "",
                       "fullname": "john doe", "scope": ""}}),
    (3601, "returns no uri_captures from a [uri prefix] match",
     [R("01", paths=("/hello",))], req("/hello/world"), "r01", {"uri_captures": None}),
    (3621, "returns no uri_captures from a [uri regex] match without groups",
     [R("01", paths=(r"~/users/\d+/profile",))], req("/users/1984/profile"), "r01",
     {"uri_captures": None}),
    (3707, "allows url encoded paths if they are reserved characters",
     [R("01", paths=("/endel%2Fst",))], req("/endel%2fst"), "r01", {"path": "/endel%2Fst"}),
    (4375, "gracefully handles invalid utf-8 sequences",
     [R("01", paths=("/hello",))],
     req(b"\xfc\x80\x80\x80\x80\xaf".decode("utf-8", "surrogateescape")), None, {}),
]


@pytest.mark.parametrize("line, title, routes, facts, expected, checks",
                         CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_kong_router_spec(line: int, title: str, routes: list[Route], facts: RequestFacts,
                          expected: str | None, checks: dict[str, Any]) -> None:
    found = route_for(routes, facts)
    assert (found and found.value) == expected
    for attribute, value in checks.items():
        got = getattr(found, attribute)
        assert (dict(got) if isinstance(got, MappingProxyType) else got) == value, attribute


# spec/fixtures/router_path_handling_tests.lua, the rows 08-router_spec.lua:4219-4312 runs
# for traditional_compatible (path_handling v0 only): (fixture line, service path,
# route path or None for a host-only route, strip_path values, request path, upstream path).
PATH_HANDLING_V0 = [
    (22, '/', '/', (False, True), '/', '/'),
    (23, '/', '/', (False, True), '/route', '/route'),
    (24, '/', '/', (False, True), '/route/', '/route/'),
    (25, '/', '/', (False, True), '/routereq', '/routereq'),
    (26, '/', '/', (False, True), '/route/req', '/route/req'),
    (28, '/', '/route', (False,), '/route', '/route'),
    (29, '/', '/route', (False,), '/route/', '/route/'),
    (30, '/', '/route', (False,), '/routereq', '/routereq'),
    (31, '/', '/route', (True,), '/route', '/'),
    (32, '/', '/route', (True,), '/route/', '/'),
    (33, '/', '/route', (True,), '/routereq', '/req'),
    (35, '/', '/route/', (False,), '/route/', '/route/'),
    (36, '/', '/route/', (False,), '/route/req', '/route/req'),
    (37, '/', '/route/', (True,), '/route/', '/'),
    (38, '/', '/route/', (True,), '/route/req', '/req'),
    (40, '/srv', '/rou', (False,), '/roureq', '/srv/roureq'),
    (42, '/srv', '/rou', (True,), '/roureq', '/srv/req'),
    (45, '/srv/', '/rou', (False,), '/rou', '/srv/rou'),
    (46, '/srv/', '/rou', (True,), '/rou', '/srv'),
    (49, '/service', '/', (False, True), '/', '/service'),
    (50, '/service', '/', (False, True), '/route', '/service/route'),
    (52, '/service', '/', (False, True), '/route/', '/service/route/'),
    (55, '/service', '/', (False, True), '/routereq', '/service/routereq'),
    (57, '/service', '/', (False, True), '/route/req', '/service/route/req'),
    (60, '/service', '/route', (False,), '/route', '/service/route'),
    (62, '/service', '/route', (False,), '/route/', '/service/route/'),
    (64, '/service', '/route', (False,), '/routereq', '/service/routereq'),
    (66, '/service', '/route', (True,), '/route', '/service'),
    (67, '/service', '/route', (True,), '/route/', '/service/'),
    (68, '/service', '/route', (True,), '/routereq', '/service/req'),
    (71, '/service', '/route/', (False,), '/route/', '/service/route/'),
    (73, '/service', '/route/', (False,), '/route/req', '/service/route/req'),
    (75, '/service', '/route/', (True,), '/route/', '/service/'),
    (77, '/service', '/route/', (True,), '/route/req', '/service/req'),
    (80, '/service/', '/', (False, True), '/route/', '/service/route/'),
    (82, '/service/', '/', (False, True), '/', '/service/'),
    (83, '/service/', '/', (False, True), '/route', '/service/route'),
    (84, '/service/', '/', (False, True), '/routereq', '/service/routereq'),
    (85, '/service/', '/', (False, True), '/route/req', '/service/route/req'),
    (87, '/service/', '/route', (False,), '/route', '/service/route'),
    (88, '/service/', '/route', (False,), '/route/', '/service/route/'),
    (89, '/service/', '/route', (False,), '/routereq', '/service/routereq'),
    (90, '/service/', '/route', (True,), '/route', '/service'),
    (92, '/service/', '/route', (True,), '/route/', '/service/'),
    (93, '/service/', '/route', (True,), '/routereq', '/service/req'),
    (95, '/service/', '/route/', (False,), '/route/', '/service/route/'),
    (96, '/service/', '/route/', (False,), '/route/req', '/service/route/req'),
    (97, '/service/', '/route/', (True,), '/route/', '/service/'),
    (98, '/service/', '/route/', (True,), '/route/req', '/service/req'),
    (101, '/', None, (False, True), '/', '/'),
    (102, '/', None, (False, True), '/route', '/route'),
    (103, '/', None, (False, True), '/route/', '/route/'),
    (105, '/service', None, (False, True), '/', '/service'),
    (106, '/service', None, (False, True), '/route', '/service/route'),
    (108, '/service', None, (False, True), '/route/', '/service/route/'),
    (111, '/service/', None, (False, True), '/', '/service/'),
    (112, '/service/', None, (False, True), '/route', '/service/route'),
    (113, '/service/', None, (False, True), '/route/', '/service/route/'),
    (115, '/service', '/route', (True,), '/route./req', '/service/req'),
    (117, '/service/', '/route', (True,), '/route./req', '/service/req'),
    (119, '/service', '/route', (True,), '/route%2E/req', '/service/req'),
    (121, '/service/', '/route', (True,), '/route%2E/req', '/service/req'),
    (122, '/service', '/route', (True,), '/route%2e/req', '/service/req'),
    (124, '/service/', '/route', (True,), '/route%2e/req', '/service/req'),
    (126, '/service', '/route', (True,), '/route../req', '/service/req'),
    (128, '/service/', '/route', (True,), '/route../req', '/service/req'),
    (130, '/service', '/route', (True,), '/route%2E%2E/req', '/service/req'),
    (132, '/service/', '/route', (True,), '/route%2E%2E/req', '/service/req'),
    (133, '/service', '/route', (True,), '/route%2e%2E/req', '/service/req'),
    (135, '/service/', '/route', (True,), '/route%2e%2E/req', '/service/req'),
    (137, '/service', '/route', (False,), '/route./req', '/service/route./req'),
    (139, '/service/', '/route', (False,), '/route./req', '/service/route./req'),
    (141, '/service', '/route', (False,), '/route%2E/req', '/service/route./req'),
    (143, '/service/', '/route', (False,), '/route%2E/req', '/service/route./req'),
    (144, '/service', '/route', (False,), '/route%2e/req', '/service/route./req'),
    (146, '/service/', '/route', (False,), '/route%2e/req', '/service/route./req'),
    (148, '/service', '/route', (False,), '/route../req', '/service/route../req'),
    (150, '/service/', '/route', (False,), '/route../req', '/service/route../req'),
    (152, '/service', '/route', (False,), '/route%2E%2E/req', '/service/route../req'),
    (154, '/service/', '/route', (False,), '/route%2E%2E/req', '/service/route../req'),
    (155, '/service', '/route', (False,), '/route%2e%2E/req', '/service/route../req'),
    (157, '/service/', '/route', (False,), '/route%2e%2E/req', '/service/route../req'),
]


def _slash_cases() -> list[Any]:
    cases = []
    for line, service_path, route_path, strips, request_path, expected in PATH_HANDLING_V0:
        for strip in strips:
            variants = [("plain", route_path)]
            if route_path is not None:  # :4267, the same rows with the path made a regex
                variants.append(("regex", "~/[0]?" + route_path[1:]))
            for kind, path in variants:
                cases.append(pytest.param(service_path, path, strip, request_path, expected,
                                          id=f"fixture:{line}-{kind}-strip={strip}-{request_path}"))
    return cases


@pytest.mark.parametrize("service_path, route_path, strip, request_path, expected", _slash_cases())
def test_slash_handling_v0(service_path: str, route_path: str | None, strip: bool,
                           request_path: str, expected: str) -> None:
    """08-router_spec.lua:4219 "#slash handling"."""
    route = R("01", hosts=("localbin.com",), paths=(route_path,) if route_path else (),
              strip_path=strip)
    found = route_for([route], req(request_path, "localbin.com"))
    assert found is not None
    assert found.upstream_path(service_path) == expected


STRIP = [R("01", paths=("/my-route", "/xx-route"), strip_path=True),
         R("02", methods=("POST",), paths=("/my-route", "/xx-route"), strip_path=False)]


@pytest.mark.parametrize("line, title, routes, facts, service_path, expected", [
    (3754, "strips the specified paths from the given uri if matching", STRIP,
     req("/my-route/hello/world"), None, "/hello/world"),
    (3764, "strips if matched URI is plain (not a prefix)", STRIP, req("/my-route"), None, "/"),
    (3773, "doesn't strip if 'strip_uri' is not enabled", STRIP,
     req("/my-route/hello/world", method="POST"), None, "/my-route/hello/world"),
    (3793, "does not strips root / URI", [R("01", paths=("/",), strip_path=True)],
     req("/my-route/hello/world", method="POST"), None, "/my-route/hello/world"),
    (3833, "can proxy an route with stripped URI with different URIs in a row", STRIP,
     req("/xx-route"), None, "/"),
    (3863, "strips url encoded paths", [R("01", paths=("/endel%2Fst",), strip_path=True)],
     req("/endel%2Fst"), None, "/"),
    (3884, "strips a [uri regex]", [R("01", paths=(r"~/users/\d+/profile",), strip_path=True)],
     req("/users/123/profile/hello/world"), None, "/hello/world"),
    (3905, "strips a [uri regex] with a capture group",
     [R("01", paths=(r"~/users/(\d+)/profile",), strip_path=True)],
     req("/users/123/profile/hello/world"), None, "/hello/world"),
    (3601, "returns no uri_captures from a [uri prefix] match", [R("01", paths=("/hello",))],
     req("/hello/world"), None, "/world"),
    (3707, "allows url encoded paths if they are reserved characters",
     [R("01", paths=("/endel%2Fst",), strip_path=False)], req("/endel%2Fst"), None, "/endel%2Fst"),
    (3640, "parses path component from upstream_url property", [R("01", paths=("/my-route",))],
     req("/my-route"), "/get", "/get"),
    # kong/runloop/handler.lua escapes what the router built (uri.escape)
    (3561, "a decoded space goes upstream escaped again",
     [R("01", paths=("/users",), strip_path=False)], req("/users/%6aohn%20doe"), None,
     "/users/john%20doe"),
])
def test_strip_path(line: int, title: str, routes: list[Route], facts: RequestFacts,
                    service_path: str | None, expected: str) -> None:
    found = route_for(routes, facts)
    assert found is not None and found.upstream_path(service_path) == expected


def test_path_handling_v1_is_ignored_like_kong_traditional_compatible() -> None:
    """routes.lua: v1 "will not work under ... 'traditional_compatible'"; 08-router_spec.lua:4222
    runs the fixture's v1 rows for the traditional flavour only.  Fixture line 17's v1 row
    expects /srvroureq; this flavour gives the v0 answer."""
    route = R("01", paths=("/rou",), strip_path=False, path_handling="v1")
    found = route_for([route], req("/roureq"))
    assert found is not None and found.upstream_path("/srv") == "/srv/roureq"


@pytest.mark.parametrize("raw, normalized", [
    # kong/tools/uri.lua normalize(uri, true), the cases the router spec relies on
    ("/route%2E/req", "/route./req"),          # fixture:147
    ("/route%2e%2E/req", "/route../req"),      # fixture:156
    ("/endel%2fst", "/endel%2Fst"),            # 08-router_spec.lua:3707, reserved kept, upper-cased
    ("/users/%6aohn%20doe/profile", "/users/john doe/profile"),  # :3561
    ("/a/./b/../c", "/a/c"),
    ("/a//b///c", "/a/b/c"),
    ("/../a", "/a"),
    ("/a/..", "/"),
    ("/a/.", "/a/"),
])
def test_normalize_path(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


HTTPS_ONLY = R("01", paths=("/x",), protocols=("https",))


@pytest.mark.parametrize("route, facts, expected", [
    # kong/runloop/handler.lua:1288-1309
    (HTTPS_ONLY, req("/x", "example.com:8000"),
     (426, {"Connection": "Upgrade", "Upgrade": "TLS/1.2, HTTP/1.1"}, "Please use HTTPS protocol")),
    (HTTPS_ONLY, req("/x", "example.com", scheme="https"), None),
    (R("01", paths=("/x",)), req("/x", "example.com"), None),
    (R("01", paths=("/x",), protocols=("http",)), req("/x", "example.com", scheme="https"), None),
    (R("01", paths=("/x",), protocols=("https",), https_redirect_status_code=301),
     req("/x/%41", "Example.COM:8000", query="a=1"),
     (301, {"Location": "https://example.com/x/%41?a=1"}, None)),
    (R("01", paths=("/x",), protocols=("https",), https_redirect_status_code=308),
     req("/x", ""), (308, {"Location": "https://kong/x"}, None)),
])
def test_protocol_redirect(route: Route, facts: RequestFacts,
                           expected: tuple[int, dict[str, str], str | None] | None) -> None:
    assert protocol_redirect(route, facts) == expected


def test_routes_without_ids_tie_in_configuration_order() -> None:
    """Kong leaves equal priorities undefined; gatewayd keeps the file's order."""
    first, second = Route(name="a", paths=("/x",)), Route(name="b", paths=("/y",))
    tie = [Route(name="a", hosts=("h",)), Route(name="b", hosts=("h",))]
    assert route_for(tie, req("/", "h")).value == "a"
    assert route_for([first, second], req("/y")).value == "b"


def test_stream_routes_are_left_to_the_stream_router() -> None:
    assert route_for([Route(name="t", snis=("a.test",), protocols=("tls",))],
                     req("/", scheme="https", sni="a.test")) is None


@pytest.mark.parametrize("raw, expected", [
    ("/hello/café".encode(), "r01"),  # UTF-8 beyond ASCII is valid
    ("/hello/%C3%A9".encode(), "r01"),  # and so is its %-encoded form, decoded first
    (b"/hello/caf\xe9", None),  # Latin-1: not UTF-8, Kong's 404
    (b"/hello/%E9", None),
])
def test_only_invalid_utf8_is_refused_ascii_or_not(raw: bytes, expected: str | None) -> None:
    found = route_for([R("01", paths=("/hello",))], req(raw.decode("utf-8", "surrogateescape")))
    assert (found and found.value) == expected


def test_remembered_matches_follow_the_fields_and_headers_routes_look_at(monkeypatch) -> None:
    """Kong's router cache (atc.lua's cache and cache_neg): keyed on the request's fields and
    on the headers a route matches, so a remembered match never stands for another request."""
    routes = [R("01", paths=("/a",), headers={"x-team": ("blue",)}), R("02", paths=("/a",)),
              R("03", hosts=("h.test",))]
    router = Router.build((r, r.name) for r in routes)
    blue, plain = req("/a", headers={"x-team": "blue"}), req("/a", headers={"x-team": "red"})
    for _ in range(2):  # the second time from what was remembered
        assert router.match(blue).value == "r01"
        assert router.match(plain).value == "r02"
        assert router.match(req("/b", "h.test")).value == "r03"
        assert router.match(req("/b", "h.test", port=8443)).value == "r03"
        assert router.match(req("/b", "other.test")) is None
        assert router.match(req("/a", "h.test", method="POST")).value == "r03"  # plain hosts weigh more
    assert router.match(blue) is router.match(blue)
    monkeypatch.setattr("gatewayd.router.MATCHES_KEPT", 3)
    for n in range(10):  # bounded: new requests keep coming, the memory does not grow past its size
        assert router.match(req(f"/a/{n}")).value == "r02"
        assert len(router._cache) <= 3


def test_a_long_request_is_matched_but_not_remembered() -> None:
    router = Router.build((r, r.name) for r in [R("01", paths=("/a",), headers={"x-team": ("blue",)})])
    long_path = req("/a/" + "x" * 2000, headers={"x-team": "blue"})
    long_header = req("/a", headers={"x-team": ["blue", "y" * 2000]})
    assert router.match(long_path).value == router.match(long_header).value == "r01"
    assert router._cache == {}
