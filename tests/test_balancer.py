"""The balancer on its own, driven by task.Clock."""

from collections import Counter

import pytest
from twisted.internet.task import Clock

from gatewayd.plugins.ai_proxy_advanced.balancer import Balancer, BalancerConfig, Candidate, UnsupportedBalancer


def balancer(*targets: Candidate, **settings: object) -> tuple[Balancer, Clock]:
    clock = Clock()
    return Balancer(list(targets), BalancerConfig(**settings), clock), clock  # type: ignore[arg-type]


def first(b: Balancer, model: str | None = None, key: str | None = None) -> int:
    return next(b.attempts(model, key))


def test_config_from_kong_block_in_seconds():
    config = BalancerConfig.from_config(
        {"algorithm": "priority", "connect_timeout": 1500, "read_timeout": 2000, "write_timeout": 500,
         "fail_timeout": 10000, "max_fails": 3, "retries": 2, "failover_criteria": ["http_429"]}
    )
    assert (config.connect_timeout, config.read_timeout, config.write_timeout) == (1.5, 2.0, 0.5)
    assert (config.fail_timeout, config.max_fails, config.retries) == (10.0, 3, 2)
    assert config.fails_over("http_429") and not config.fails_over("timeout")


@pytest.mark.parametrize("block", [{"algorithm": "semantic"},
                                   {"algorithm": "lowest-usage", "tokens_count_strategy": "llm-accuracy"}])
def test_unsupported_settings_are_refused(block):
    with pytest.raises(UnsupportedBalancer, match="balancer"):
        BalancerConfig.from_config(block)


def test_weighted_round_robin_is_smooth_and_proportional():
    b, _ = balancer(Candidate("a", 70), Candidate("b", 25), Candidate("c", 5))
    picks = [first(b) for _ in range(100)]
    assert Counter(picks) == {0: 70, 1: 25, 2: 5}
    assert picks[:4] != [0, 0, 0, 0]  # smooth: the heavy target does not take a run of 70


def test_each_target_at_most_once_and_retries_bound_attempts():
    b, _ = balancer(Candidate("a"), Candidate("b"), Candidate("c"), retries=1)
    assert len(set(b.attempts(None))) == len(list(b.attempts(None))) == 2
    b, _ = balancer(Candidate("a"), Candidate("b"), Candidate("c"), retries=5)
    assert sorted(b.attempts(None)) == [0, 1, 2]


def test_targets_of_the_requested_model_come_first():
    b, _ = balancer(Candidate("flash"), Candidate("pro"), Candidate("pro"))
    for _ in range(10):
        order = list(b.attempts("pro"))
        assert set(order[:2]) == {1, 2} and order[2] == 0


def test_priority_stays_in_the_highest_group_until_it_fails():
    b, _ = balancer(Candidate("a", 70), Candidate("b", 70), Candidate("c", 25), algorithm="priority")
    assert Counter(first(b) for _ in range(10)) == {0: 5, 1: 5}
    attempts = b.attempts(None)
    assert {next(attempts), next(attempts)} == {0, 1}
    assert next(attempts) == 2


def test_consistent_hashing_sticks_per_key_and_spreads_keys():
    b, _ = balancer(Candidate("a"), Candidate("b"), Candidate("c"), algorithm="consistent-hashing")
    chosen = {key: first(b, key=key) for key in (f"session-{n}" for n in range(60))}
    assert all(first(b, key=key) == index for key, index in chosen.items())
    assert set(chosen.values()) == {0, 1, 2}
    # When a session's target fails, the session always moves to the same second choice.
    key = "session-7"
    assert list(b.attempts(None, key))[:2] == list(b.attempts(None, key))[:2]


def test_consistent_hashing_without_the_header_is_round_robin():
    b, _ = balancer(Candidate("a"), Candidate("b"), algorithm="consistent-hashing")
    assert [first(b) for _ in range(4)] == [0, 1, 0, 1]


def test_passive_health_takes_a_target_out_and_brings_it_back():
    b, clock = balancer(Candidate("a"), Candidate("b"), max_fails=2, fail_timeout=10.0)
    b.failed(0)
    assert b.available(0)
    b.failed(0)
    assert not b.available(0)
    assert all(first(b) == 1 for _ in range(5))
    assert b.next_recovery() == 10.0
    clock.advance(10)
    assert b.available(0)
    assert {first(b) for _ in range(4)} == {0, 1}


def test_failures_outside_the_window_do_not_add_up():
    b, clock = balancer(Candidate("a"), max_fails=2, fail_timeout=10.0)
    b.failed(0)
    clock.advance(11)
    b.failed(0)
    assert b.available(0)


def test_max_fails_zero_never_takes_a_target_out():
    b, _ = balancer(Candidate("a"), max_fails=0)
    for _ in range(10):
        b.failed(0)
    assert b.available(0)


def test_every_target_cooling_down_means_no_attempt():
    b, _ = balancer(Candidate("a"), Candidate("b"), max_fails=1, fail_timeout=5.0)
    b.failed(0)
    b.failed(1)
    assert list(b.attempts(None)) == []


def test_lowest_latency_per_output_token_by_default():
    b, _ = balancer(Candidate("a"), Candidate("b"), algorithm="lowest-latency")
    b.finished(0, {"completion_tokens": 10}, latency_ms=1000)  # 100 ms/token
    b.finished(1, {"completion_tokens": 100}, latency_ms=2000)  # 20 ms/token
    assert first(b) == 1
    b, _ = balancer(Candidate("a"), Candidate("b"), algorithm="lowest-latency", latency_strategy="e2e")
    b.finished(0, {"completion_tokens": 10}, latency_ms=1000)
    b.finished(1, {"completion_tokens": 100}, latency_ms=2000)
    assert first(b) == 0


def test_unmeasured_targets_are_tried_before_measured_ones():
    b, _ = balancer(Candidate("a"), Candidate("b"), algorithm="lowest-latency")
    b.finished(0, {"completion_tokens": 1}, latency_ms=5)
    assert first(b) == 1


def test_lowest_usage_counts_the_chosen_tokens_per_weight():
    b, _ = balancer(Candidate("a", 100), Candidate("b", 100), algorithm="lowest-usage",
                    tokens_count_strategy="prompt-tokens")
    b.finished(0, {"prompt_tokens": 10, "completion_tokens": 0})
    b.finished(1, {"prompt_tokens": 5, "completion_tokens": 500})
    assert first(b) == 1
    b, _ = balancer(Candidate("a", 300), Candidate("b", 100), algorithm="lowest-usage")
    b.finished(0, {"prompt_tokens": 200, "completion_tokens": 0})
    b.finished(1, {"prompt_tokens": 100, "completion_tokens": 0})
    assert first(b) == 0  # 200/300 < 100/100


def test_least_connections_counts_requests_in_flight():
    b, _ = balancer(Candidate("a"), Candidate("b"), algorithm="least-connections")
    b.started(0)
    assert first(b) == 1
    b.released(0)
    b.started(1)
    assert first(b) == 0


def test_what_a_model_names_is_worked_out_once_and_the_memory_is_bounded():
    from gatewayd.plugins.ai_proxy_advanced import balancer as module

    b, _ = balancer(Candidate("flash", alias="claude-haiku-*"), Candidate("pro", alias="claude-opus-4"))
    for n in range(module._MODELS_KEPT * 3):  # clients choose the names: many, each once
        assert first(b, f"claude-haiku-{n}") == 0
    assert len(b._by_model) <= module._MODELS_KEPT
    assert first(b, "claude-opus-4") == first(b, "claude-opus-4") == 1
    assert first(b, "pro") == 1 and first(b, "claude-haiku-x") == 0


def test_a_lone_eligible_target_leaves_the_round_robin_where_it_was():
    b, _ = balancer(Candidate("a", 70), Candidate("b", 30), Candidate("c", 30))
    reference, _ = balancer(Candidate("a", 70), Candidate("b", 30), Candidate("c", 30))
    for _ in range(5):
        assert first(b, "c") == 2  # the model's only target: no round-robin turn is taken
    assert [first(b) for _ in range(13)] == [first(reference) for _ in range(13)]
