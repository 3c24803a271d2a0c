"""Which route serves a request: Kong's rules for paths, methods and hosts.

The table is a value built once per configuration; the resource tree in
:mod:`gatewayd.daemon.gateway` asks it for every request.
"""

from __future__ import annotations

import re
from typing import Generic, Iterable, TypeVar

from attrs import frozen

R = TypeVar("R")


@frozen
class Candidate(Generic[R]):
    """One path of one route, in the order Kong tries them."""

    prefix: str | None
    regex: re.Pattern[str] | None
    methods: frozenset[str] | None
    hosts: tuple[str, ...] | None
    value: R

    def matches(self, method: str, path: str, host: str) -> int | None:
        """The length of the matched path, or None."""
        if self.methods is not None and method not in self.methods:
            return None
        if self.hosts is not None and not any(_host_matches(h, host) for h in self.hosts):
            return None
        if self.regex is not None:
            found = self.regex.match(path)
            return None if found is None else found.end()
        assert self.prefix is not None
        return len(self.prefix) if path.startswith(self.prefix) else None


@frozen
class Match(Generic[R]):
    value: R
    matched: str
    remainder: str


@frozen
class RouteTable(Generic[R]):
    """Routes ordered as Kong orders them: regex paths first, then longest prefix."""

    candidates: tuple[Candidate[R], ...]

    @classmethod
    def build(
        cls,
        routes: Iterable[tuple[Iterable[str], Iterable[str] | None, Iterable[str] | None, R]],
    ) -> "RouteTable[R]":
        candidates = []
        for paths, methods, hosts, value in routes:
            method_set = frozenset(m.upper() for m in methods) if methods else None
            host_list = tuple(h.lower() for h in hosts) if hosts else None
            for path in paths or ("/",):
                if path.startswith("~"):
                    candidates.append(
                        Candidate(None, re.compile(path[1:]), method_set, host_list, value)
                    )
                else:
                    candidates.append(Candidate(path, None, method_set, host_list, value))
        candidates.sort(key=_priority)
        return cls(tuple(candidates))

    def match(self, method: str, path: str, host: str = "") -> Match[R] | None:
        host = host.split(":", 1)[0].lower()
        for candidate in self.candidates:
            end = candidate.matches(method, path, host)
            if end is not None:
                return Match(candidate.value, path[:end], path[end:])
        return None


def _priority(candidate: Candidate[object]) -> tuple[int, int, int]:
    # Regex paths before plain ones, longer prefixes before shorter, and a
    # route that also constrains methods or hosts before one that does not.
    constrained = (candidate.methods is not None) + (candidate.hosts is not None)
    if candidate.regex is not None:
        return (0, -len(candidate.regex.pattern), -constrained)
    assert candidate.prefix is not None
    return (1, -len(candidate.prefix), -constrained)


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    if pattern.endswith(".*"):
        return host.startswith(pattern[:-1])
    return host == pattern
