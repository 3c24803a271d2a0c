"""RedisStore when Redis goes away: bounded calls, local counting, one log line each way."""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.plugins.ai_rate_limiting_advanced.handler import CHARGE_SCRIPT, RedisStore, Window, counters


class FakeRedis:
    """Answers like Redis while ``up``; otherwise every command waits, as txredisapi's queue does."""

    def __init__(self):
        self.up = True
        self.values = {}
        self.calls = []
        self.waiting = []

    def eval(self, script, keys, args):
        self.calls.append(("eval", keys))
        if not self.up:
            return self._wait()
        if script == CHARGE_SCRIPT:
            for key in keys:
                self.values[key] = self.values.get(key, 0.0) + float(args[0])
            return succeed(len(keys))
        used = [self.values.get(keys[2 * i], 0.0) for i in range(len(keys) // 2)]
        allowed = all(u < float(args[3 * i + 2]) for i, u in enumerate(used))
        if allowed:
            for i in range(len(keys) // 2):
                self.values[keys[2 * i]] = self.values.get(keys[2 * i], 0.0) + float(args[0])
        return succeed([1 if allowed else 0, *map(str, used)])

    def ping(self):
        self.calls.append(("ping",))
        return succeed("PONG") if self.up else self._wait()

    def _wait(self):
        waiter = Deferred()
        self.waiting.append(waiter)
        return waiter


class RedisStoreTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.redis = FakeRedis()
        self.states = []
        self.store = RedisStore(self.redis, self.clock, "127.0.0.1:6379", 4.0,
                                lambda address, up: self.states.append((address, up)))
        self.counters = counters([Window("gemini", 100, 60)], "scope:consumer:alice", 30.0, False)

    def reserve(self, amount=10):
        return self.successResultOf(Deferred.fromCoroutine(self.store.reserve(self.counters, amount)))

    def test_an_outage_is_bounded_counted_locally_and_merged_back(self):
        self.assertEqual(self.reserve(), (True, [0.0]))
        self.redis.up = False
        with capturedLogs() as events:
            pending = Deferred.fromCoroutine(self.store.reserve(self.counters, 10))
            self.assertNoResult(pending)
            self.clock.advance(4.0)  # the deadline: the request goes on, counted in memory
            self.assertEqual(self.successResultOf(pending), (True, [0.0]))
            self.assertFalse(self.store.reachable)
            calls = len(self.redis.calls)
            for _ in range(8):  # the node's own budget still holds
                self.reserve()
            self.assertEqual(self.reserve(), (True, [90.0]))
            self.assertEqual(self.reserve(), (False, [100.0]))
            self.assertEqual(len(self.redis.calls), calls)  # no request waits on Redis now
            for _ in range(3):
                self.clock.advance(1.0)
                self.clock.advance(4.0)  # each probe's PING times out
            self.redis.up = True
            self.clock.advance(1.0)
        self.assertTrue(self.store.reachable)
        # The 100 counted in memory are added to Redis's 10.
        self.assertEqual(self.redis.values[self.counters[0].current], 110.0)
        self.assertEqual(self.reserve(), (False, [110.0]))
        texts = [event["log_format"] for event in events]
        self.assertEqual(sum("is unreachable" in t for t in texts), 1)
        self.assertEqual(sum("answers again after" in t for t in texts), 1)
        self.assertEqual(self.states, [("127.0.0.1:6379", False), ("127.0.0.1:6379", True)])

    def test_charges_during_an_outage_are_kept_and_merged(self):
        self.redis.up = False
        settle = Deferred.fromCoroutine(self.store.charge(self.counters, 25))
        self.clock.advance(4.0)
        self.successResultOf(settle)
        self.successResultOf(Deferred.fromCoroutine(self.store.charge(self.counters, 5)))
        self.redis.up = True
        self.clock.advance(1.0)
        self.assertEqual(self.redis.values[self.counters[0].current], 30.0)

    def test_close_stops_probing(self):
        self.redis.up = False
        Deferred.fromCoroutine(self.store.reserve(self.counters, 1))
        self.redis.disconnect = lambda: None
        self.clock.advance(4.0)
        self.store.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
