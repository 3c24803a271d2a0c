"""Which route serves a request, the way Kong Gateway 3 decides it.

Follows Kong 3.10 with ``router_flavor = traditional_compatible`` (the default),
read from Kong/kong:

* ``kong/router/transform.lua``: what a route asks of a request (its match
  expression) and its priority;
* ``kong/router/atc.lua`` and ``compat.lua``: a route whose paths mix regexes and
  prefixes of different lengths is split into one matcher per group; the highest
  priority matcher that matches wins, ties going to the higher route id
  (atc-router's ``MatcherKey(priority, uuid)``);
* ``kong/router/fields.lua``: which request facts are compared (the Host header's
  port, else the local port; the TLS server name; header values);
* ``kong/router/utils.lua`` and ``kong/tools/uri.lua``: path normalisation before
  matching, and the upstream path (``get_upstream_uri_v0``, then ``escape``);
* ``kong/runloop/handler.lua``: the 426 or redirect for an https-only route.

Where Kong's own code and its documentation part, this module follows the
documentation: ``get_priority`` means the bit layout in its comment (match
weight, plain hosts, header count, regex, regex_priority, path length), but its
``lshift_uint64`` helper shifts plain Lua numbers in 32 bits under LuaJIT, so a
running Kong may rank a few route pairs differently.  Kong compares hosts, methods
and paths case-sensitively and only header values case-insensitively; so does
this module.  ``path_handling = "v1"`` is ignored, as Kong ignores it under this
flavour (the route schema warns that it "will not work").

Pure: no I/O, no Twisted.  A :class:`Router` is built once per configuration.
"""

from __future__ import annotations

import re
import re._parser as _re_parser  # the parse tree: how to find what Rust's regex lacks
import uuid
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from attrs import field, frozen

if TYPE_CHECKING:
    from gatewayd.config.entities import Route

R = TypeVar("R")

__all__ = ["Match", "RequestFacts", "Router", "compile_path_regex", "compile_header_regex",
           "normalize_path", "protocol_redirect"]


@frozen
class RequestFacts:
    """What the router may look at in a request."""

    method: str
    path: str
    """The raw path, without the query string; non-ASCII bytes decoded as UTF-8
    with ``errors="surrogateescape"`` so that invalid UTF-8 stays detectable."""
    host: str
    """The Host header as sent, maybe with ``:port``; "" when there is none."""
    port: int
    """The local port the request arrived on."""
    scheme: str
    headers: Mapping[str, tuple[str, ...]] = field(factory=dict, hash=False)
    """Lower-case header names to every value received."""
    sni: str | None = None
    query: str | None = None
    """The query string without its ``?``; None when the request had no ``?``."""


@frozen
class Match(Generic[R]):
    """The route chosen for a request, and what Kong remembers of the match."""

    route: Route
    value: R
    path: str
    """The normalised request path the route was matched against."""
    matched_path: str | None
    """The prefix, or the regex's whole match; None when the route has no paths."""
    uri_captures: Mapping[int | str, str] | None
    """Kong's ``uri_captures``: 0 is the whole match, then numbered and named
    groups that took part; None when no group did."""
    matched_host: str | None
    """The entry of ``route.hosts`` that matched, as configured."""

    def upstream_path(self, service_path: str | None) -> str:
        """The path sent to the service: Kong's strip_path join (v0), percent-escaped.

        ``service_path`` is the service's ``path`` (None means "/").
        """
        base = service_path or "/"
        prefix = self.matched_path if self.route.strip_path and self.matched_path is not None else "/"
        postfix = _sanitize_postfix(self.path[len(prefix):])
        return _escape(_join_v0(self.route.strip_path, postfix, self.path, base))


#: Matches (and misses) remembered per router, as Kong's ``DEFAULT_MATCH_LRUCACHE_SIZE``.
MATCHES_KEPT = 5000
#: Requests whose path, host and routed header values are longer go unremembered: 5000
#: of them could pin a lot of memory.
KEY_BYTES_KEPT = 1024


class Router(Generic[R]):
    """Routes compiled into matchers in Kong's evaluation order.

    Like Kong's router (``router.cache`` and ``cache_neg`` in atc.lua), it remembers
    what a request's fields matched, keyed on those fields and on the values of the
    headers some route looks at; at ``MATCHES_KEPT`` entries it starts afresh.
    """

    def __init__(self, matchers: tuple[_Matcher[R], ...]) -> None:
        self._matchers = matchers
        self._uses_paths = any(m.paths for m in matchers)
        self._header_names = tuple(sorted({name for m in matchers for name, _ in m.headers}))
        self._cache: dict[tuple[Any, ...], Match[R] | None] = {}

    @classmethod
    def build(cls, routes: Iterable[tuple[Route, R]]) -> "Router[R]":
        """Compile ``routes`` (already validated by the loader) once."""
        keyed = []
        for index, (route, value) in enumerate(routes):
            if not set(route.protocols) & _HTTP_SUBSYSTEM:
                continue  # Kong's build_router leaves stream routes to the stream router
            groups = _path_groups(route.paths)
            for number, paths in enumerate(groups, start=1):
                matcher = _Matcher.compile(route, value, paths)
                keyed.append(((matcher.priority, _tiebreak(route, index, number, len(groups))),
                              matcher))
        keyed.sort(key=lambda item: item[0], reverse=True)
        return cls(tuple(matcher for _, matcher in keyed))

    def match(self, facts: RequestFacts) -> Match[R] | None:
        """The route Kong would pick for ``facts``, or None (Kong answers 404)."""
        values = tuple(facts.headers.get(name, ()) for name in self._header_names)
        key = (facts.method, facts.path, facts.host, facts.port, facts.scheme, facts.sni, *values)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._match(facts)
        size = len(facts.path) + len(facts.host) + sum(len(v) for each in values for v in each)
        if size <= KEY_BYTES_KEPT:  # long made-up paths or headers would pin memory
            if len(self._cache) >= MATCHES_KEPT:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _match(self, facts: RequestFacts) -> Match[R] | None:
        path = normalize_path(facts.path)
        if self._uses_paths and not _valid_utf8(path):
            return None  # Kong: "invalid utf-8 sequence", then 404
        host, host_port = _split_host_port(facts.host)
        request = _Request(facts, path, host or None,
                           facts.port if host_port is None else host_port)
        for matcher in self._matchers:
            found = matcher.match(request)
            if found is not None:
                return found
        return None


def protocol_redirect(route: Route, facts: RequestFacts) -> tuple[int, dict[str, str], str | None] | None:
    """What Kong answers instead of proxying when an https-only route is reached
    over plain http: status, headers and error message (None: an empty body).

    Kong compares the scheme (X-Forwarded-Proto only from its trusted_ips), and
    builds the Location from nginx's ``$host`` (lower case, no port) and the raw
    request URI.
    """
    if "https" not in route.protocols or "http" in route.protocols or facts.scheme == "https":
        return None
    status = route.https_redirect_status_code
    if status == 426:
        return 426, {"Connection": "Upgrade", "Upgrade": "TLS/1.2, HTTP/1.1"}, \
            "Please use HTTPS protocol"
    host = facts.host.split(":", 1)[0].lower() or "kong"  # Kong's server_name
    target = facts.path if facts.query is None else f"{facts.path}?{facts.query}"
    return status, {"Location": f"https://{host}{target}"}, None


# --- path normalisation (kong/tools/uri.lua normalize, with merge_slashes) -----------------

_RESERVED = frozenset(b"!*'();:@&=+$,/?%#[]")
_TRIPLET = re.compile(rb"%([0-9A-Fa-f]{2})")


def normalize_path(path: str) -> str:
    """Kong's ``normalize(uri, true)``: decode %-escapes except reserved characters
    (upper-casing those), resolve dot segments, merge slashes."""
    raw = path.encode("utf-8", "surrogateescape")
    if raw in (b"", b"/"):
        return path
    if b"%" in raw:
        raw = _TRIPLET.sub(_decode_triplet, raw)
    if b"." not in raw and b"//" not in raw:
        return raw.decode("utf-8", "surrogateescape")
    segments: list[bytes] = []
    while raw:
        if raw == b"/.":
            raw = b"/"
        elif raw == b"/..":
            raw = b"/"
            del segments[-1:]
        elif raw in (b".", b".."):
            raw = b""
        elif raw.startswith(b"../"):
            raw = raw[3:]
        elif raw.startswith(b"./"):
            raw = raw[2:]
        elif raw.startswith(b"/./"):
            raw = raw[2:]
        elif raw.startswith(b"/../"):
            raw = raw[3:]
            del segments[-1:]
        elif raw.startswith(b"//"):
            raw = raw[1:]
        else:
            end = raw.find(b"/", 1)
            end = len(raw) if end < 0 else end
            segments.append(raw[:end])
            raw = raw[end:]
    return b"".join(segments).decode("utf-8", "surrogateescape")


def _decode_triplet(found: re.Match[bytes]) -> bytes:
    code = int(found[1], 16)
    return found[0].upper() if code in _RESERVED else bytes((code,))


_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes surrogateescape kept: not UTF-8


def _valid_utf8(text: str) -> bool:
    return text.isascii() or _UNDECODED.search(text) is None


# --- regexes: Kong hands them to Rust's regex crate, anchored ------------------------------

def compile_path_regex(path: str) -> re.Pattern[str]:
    """The matcher for a ``~`` path, as transform.lua writes it: ``^`` + the regex,
    with ``?<`` spelled ``?P<``.  ValueError when Kong would refuse it."""
    return _compile_rust_regex("^" + path[1:].replace("?<", "?P<"))


def compile_header_regex(value: str) -> re.Pattern[str]:
    """The matcher for a ``~*`` header value: unanchored, lower-cased like Kong does."""
    return _compile_rust_regex(_ascii_lower(value[2:]))


_RUST_LACKS = {"ASSERT": "look-around", "ASSERT_NOT": "look-around",
               "GROUPREF": "back-references", "GROUPREF_EXISTS": "conditionals",
               "ATOMIC_GROUP": "atomic groups", "POSSESSIVE_REPEAT": "possessive quantifiers"}


def _compile_rust_regex(pattern: str) -> re.Pattern[str]:
    """Compile with Python's ``re``, refusing what Rust's regex crate (which Kong's
    router runs) has not got."""
    try:
        tree = _re_parser.parse(pattern)
    except re.error as error:
        raise ValueError(str(error)) from None
    lacking = _unsupported(tree)
    if lacking:
        raise ValueError(f"Kong's router (Rust regex) has no {lacking}")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(str(error)) from None


def _unsupported(tree: object) -> str | None:
    """The first construct of the parse tree that Rust's regex crate lacks."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, _re_parser.SubPattern):
            for op, arg in item.data:
                if str(op) in _RUST_LACKS:
                    return _RUST_LACKS[str(op)]
                stack.append(arg)
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
    return None


def _ascii_lower(text: str) -> str:
    """Lua's ``string.lower``: ASCII letters only."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# --- compiled routes ----------------------------------------------------------------------

_HTTP_SUBSYSTEM = frozenset({"http", "https", "grpc", "grpcs", "ws", "wss"})
_SPLIT_NAMESPACE = uuid.UUID("7f145bf9-0dce-4f91-98eb-debbce4b9f6b")  # transform.lua's
_MAX_HEADER_COUNT = 255


@frozen
class _Request:
    facts: RequestFacts
    path: str
    host: str | None
    port: int


@frozen
class _Host:
    text: str
    op: str  # "==", "^=" (prefix) or "=^" (suffix)
    value: str
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.op == "^=":
            return host.startswith(self.value)
        if self.op == "=^":
            return host.endswith(self.value)
        return host == self.value


@frozen
class _Matcher(Generic[R]):
    """One route, or one path group of a split route, as transform.lua sees it."""

    route: Route
    value: R
    priority: tuple[int, ...]
    snis: tuple[tuple[str, str], ...] | None
    methods: frozenset[str] | None
    hosts: tuple[_Host, ...] | None
    paths: tuple[str | re.Pattern[str], ...]
    headers: tuple[tuple[str, tuple[str | re.Pattern[str], ...]], ...]

    @classmethod
    def compile(cls, route: Route, value: R, paths: tuple[str, ...]) -> "_Matcher[R]":
        return cls(
            route=route, value=value, priority=_priority(route, paths),
            snis=tuple(_sni(s) for s in route.snis) if route.snis else None,
            methods=frozenset(route.methods) if route.methods else None,
            hosts=tuple(_host(h) for h in route.hosts) if route.hosts else None,
            paths=tuple(compile_path_regex(p) if p.startswith("~") else p for p in paths),
            headers=tuple(
                (name.lower().replace("_", "-"),
                 tuple(compile_header_regex(v) if v.startswith("~*") else _ascii_lower(v)
                       for v in values))
                for name, values in (route.headers or {}).items() if values))

    def match(self, request: _Request) -> Match[R] | None:
        facts = request.facts
        if self.snis is not None and facts.scheme == "https" and not _sni_matches(self.snis, facts.sni):
            return None
        if self.methods is not None and facts.method not in self.methods:
            return None
        matched_host = None
        if self.hosts is not None:
            host = request.host
            matched_host = next((h.text for h in self.hosts
                                 if host is not None and h.matches(host, request.port)), None)
            if matched_host is None:
                return None
        matched_path: str | None = None
        captures: Mapping[int | str, str] | None = None
        if self.paths:
            for path in self.paths:
                if isinstance(path, str):
                    if request.path.startswith(path):
                        matched_path = path
                        break
                else:
                    found = path.search(request.path)
                    if found is not None:
                        matched_path, captures = found[0], _captures(found)
                        break
            else:
                return None
        for name, wanted in self.headers:
            values = [v.lower() for v in facts.headers.get(name, ())]
            if not any(_header_matches(w, v) for w in wanted for v in values):
                return None
        return Match(route=self.route, value=self.value, path=request.path,
                     matched_path=matched_path, uri_captures=captures, matched_host=matched_host)


def _path_groups(paths: tuple[str, ...]) -> list[tuple[str, ...]]:
    """transform.lua's split: all regexes together, prefixes by length, in order met."""
    if not paths:
        return [()]
    groups: dict[int, list[str]] = {}
    for path in paths:
        groups.setdefault(-1 if path.startswith("~") else len(path), []).append(path)
    return [tuple(group) for group in groups.values()]


def _priority(route: Route, paths: tuple[str, ...]) -> tuple[int, ...]:
    """get_priority's fields, most significant first: match weight, plain hosts only,
    header count, regex path, regex_priority (regex only), prefix length."""
    headers = sum(1 for values in (route.headers or {}).values() if values)
    weight = (bool(route.methods) + bool(route.hosts) + (headers > 0) + bool(route.snis)
              + bool(paths))
    plain_hosts = route.hosts is not None and not any("*" in h for h in route.hosts)
    regex = bool(paths) and paths[0].startswith("~")
    length = 0 if regex or not paths else len(paths[0]) & 0x7FFFF
    return (weight, plain_hosts, min(headers, _MAX_HEADER_COUNT), regex,
            route.regex_priority if regex else 0, length)


def _tiebreak(route: Route, index: int, group: int, groups: int) -> tuple[int, int]:
    """Equal priorities: atc-router tries the higher id first (a split route's
    groups get uuid5 ids, as transform.lua makes them); routes without an id come
    after, in configuration order."""
    if route.id is None:
        return (0, -index)
    ident = uuid.UUID(route.id)
    if groups > 1:
        ident = uuid.uuid5(_SPLIT_NAMESPACE, f"{route.id}#{group}")
    return (1, ident.int)


def _host(text: str) -> _Host:
    host, port = _split_host_port(text)
    if host.startswith("*"):
        return _Host(text, "=^", host[1:], port)
    if host.endswith("*"):
        return _Host(text, "^=", host[:-1], port)
    return _Host(text, "==", host, port)


def _split_host_port(value: str) -> tuple[str, int | None]:
    """transform.lua's split_host_port: a port only when all after the first ':' is one."""
    host, colon, port = value.partition(":")
    if colon and port.isascii() and port.isdigit():
        return host, int(port)
    return value, None


def _sni(sni: str) -> tuple[str, str]:
    if sni.endswith("*"):
        return "^=", sni[:-1]
    if len(sni) > 1 and sni.endswith("."):
        sni = sni[:-1]  # a trailing dot is not used for routing
    if sni.startswith("*"):
        return "=^", sni[1:]
    return "==", sni


def _sni_matches(snis: tuple[tuple[str, str], ...], sni: str | None) -> bool:
    if sni is None:
        return False
    return any(sni.startswith(v) if op == "^=" else sni.endswith(v) if op == "=^" else sni == v
               for op, v in snis)


def _header_matches(wanted: str | re.Pattern[str], value: str) -> bool:
    if isinstance(wanted, str):
        return value == wanted
    return wanted.search(value) is not None


def _captures(found: re.Match[str]) -> Mapping[int | str, str] | None:
    """atc-router's captures: groups that took part, by number and by name."""
    captures: dict[int | str, str] = {0: found[0]}
    for number, text in enumerate(found.groups(), start=1):
        if text is not None:
            captures[number] = text
    for name, text in found.groupdict().items():
        if text is not None:
            captures[name] = text
    return MappingProxyType(captures) if len(captures) > 1 else None


# --- upstream path (kong/router/utils.lua, kong/tools/uri.lua escape) ----------------------

def _sanitize_postfix(postfix: str) -> str:
    if postfix in (".", ".."):
        return ""
    if postfix.startswith("./"):
        return postfix[2:]
    if postfix.startswith("../"):
        return postfix[3:]
    return postfix


def _join_v0(strip: bool, postfix: str, request: str, base: str) -> str:
    """get_upstream_uri_v0, branch for branch."""
    if base.endswith("/"):
        if not strip:
            return base + request[1:]
        if postfix == "":
            if base == "/":
                return "/"
            return base if request.endswith("/") else base[:-1]
        return base[:-1] + postfix if postfix.startswith("/") else base + postfix
    if not strip:
        return base if request == "/" else base + request
    if postfix == "":
        return base + "/" if len(request) > 1 and request.endswith("/") else base
    return base + postfix if postfix.startswith("/") else base + "/" + postfix


_UNESCAPED = frozenset(b"!#$&'()*+,/:;=?@[]-_.~%abcdefghijklmnopqrstuvwxyz"
                       b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def _escape(path: str) -> str:
    """uri.escape: %-encode every byte outside the reserved and unreserved sets."""
    raw = path.encode("utf-8", "surrogateescape")
    if all(byte in _UNESCAPED for byte in raw):
        return path
    return "".join(chr(byte) if byte in _UNESCAPED else f"%{byte:02X}" for byte in raw)
