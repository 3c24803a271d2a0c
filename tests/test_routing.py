"""Kong's route matching rules, on the pure table."""

from gatewayd.routing import RouteTable


def table(*routes):
    return RouteTable.build(routes)


def test_longest_prefix_wins():
    t = table((["/anything"], None, None, "short"), (["/anything/deeper"], None, None, "long"))
    assert t.match("POST", "/anything/deeper/v1/messages").value == "long"
    assert t.match("POST", "/anything/v1/messages").value == "short"


def test_remainder_is_what_follows_the_matched_path():
    m = table((["/anything"], None, None, "r")).match("POST", "/anything/v1/messages")
    assert (m.matched, m.remainder) == ("/anything", "/v1/messages")


def test_prefix_is_a_plain_string_prefix_like_kong():
    t = table((["/any"], None, None, "r"))
    assert t.match("GET", "/anything").value == "r"
    assert t.match("GET", "/other") is None


def test_methods_restrict_a_route():
    t = table((["/a"], ["POST"], None, "post"), (["/a"], None, None, "any"))
    assert t.match("POST", "/a/x").value == "post"
    assert t.match("GET", "/a/x").value == "any"


def test_hosts_restrict_a_route_with_wildcards():
    t = table((["/"], None, ["*.example.com"], "wild"), (["/"], None, None, "default"))
    assert t.match("GET", "/x", "api.example.com:8000").value == "wild"
    assert t.match("GET", "/x", "localhost").value == "default"


def test_regex_paths_come_first():
    t = table((["/v"], None, None, "prefix"), (["~/v\\d+/"], None, None, "regex"))
    assert t.match("GET", "/v1/x").value == "regex"
    assert t.match("GET", "/vx").value == "prefix"


def test_no_paths_means_every_path():
    assert table(([], None, None, "all")).match("GET", "/whatever").value == "all"
