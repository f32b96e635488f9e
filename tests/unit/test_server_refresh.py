"""Target cache and background refresh, driven by a fake clock and a scripted source (no threads, no gRPC)."""

import json
import logging

import pytest

from scaler.config import ServerDefaults, parse_metadata
from scaler.errors import (
    ConfigError,
    NoDataError,
    SourceConnectionError,
    SourceError,
    SourceHTTPError,
    SourceTimeout,
    Unavailable,
)
from scaler.policy import decide
from scaler.server.fake_source import ScriptedSource
from scaler.server.logs import JsonFormatter
from scaler.server.metrics import ScalerMetrics
from scaler.server.refresher import Refresher
from scaler.server.targets import TargetStore
from scaler.signals import Signals

T0 = 1_800_000_000.0
BUSY = Signals(observed_at=T0, pods_reporting=3, waiting=12, running=40, kv_cache_usage=0.9, ttft_p95=3.1,
               tpot_p95=0.05, completion_rate=8.0)
IDLE = Signals(observed_at=T0, pods_reporting=1, waiting=0, running=0, kv_cache_usage=0.0)


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def setup(md=None, **kw):
    clock = Clock()
    source = ScriptedSource()
    sources = {}

    def factory(address):
        sources.setdefault(address, source)
        return sources[address]

    store = TargetStore(ServerDefaults(prometheus_url="http://prom-a:9090"))
    refresher = Refresher(store, kw.pop("factory", factory), clock=clock, **kw)
    return clock, source, store, refresher


def expected(signals, md=None, *, now=T0, state=None, name="llama", ns="ml"):
    """What the one policy says for these signals (the test never re-derives the formula)."""
    cfg = parse_metadata(md or {}, scaled_object=name, namespace=ns,
                         defaults=ServerDefaults(prometheus_url="http://prom-a:9090"))
    return decide(signals.__class__(**{**signals.__dict__, "observed_at": now}), state, cfg, now)


def test_metadata_is_parsed_once_per_distinct_map() -> None:
    clock, _, store, _ = setup()
    a = store.resolve("llama", "ml", {"maxReplicas": "8"}, T0)
    b = store.resolve("llama", "ml", {"maxReplicas": "8"}, T0 + 1)
    c = store.resolve("llama", "ml", {"maxReplicas": "9"}, T0 + 1)
    assert a is b and a.config is b.config and c is not a
    assert a.last_asked == T0 + 1
    assert len(store) == 2


def test_bad_metadata_names_every_key_and_is_cached() -> None:
    _, _, store, _ = setup()
    md = {"ttftP95": "-1", "minReplicas": "x", "nope": "1", "modelName": 'a"}'}
    with pytest.raises(ConfigError) as first:
        store.resolve("llama", "ml", md, T0)
    with pytest.raises(ConfigError) as second:
        store.resolve("llama", "ml", md, T0)
    assert first.value is second.value
    assert set(first.value.keys) == {"ttftP95", "minReplicas", "nope", "modelName"}
    assert len(store) == 0


def test_refresh_decides_with_the_policy_and_answers_from_cache() -> None:
    clock, source, store, refresher = setup()
    source.set("ml", "llama", BUSY)
    t = store.resolve("llama", "ml", {}, T0)
    with pytest.raises(Unavailable) as cold:
        t.current(T0)
    assert cold.value.cold
    assert refresher.refresh_due(T0) == 1
    want = expected(BUSY)
    got = t.current(T0)
    assert (got.desired, got.active, got.dominant, dict(got.terms)) == (want.desired, want.active, want.dominant,
                                                                         dict(want.terms))
    # Not due again before refreshInterval (5 s).
    assert refresher.refresh_due(T0 + 4.9) == 0
    assert refresher.refresh_due(T0 + 5) == 1


def test_policy_state_is_carried_between_refreshes() -> None:
    # scaleToZeroAfter=300: after demand, an idle fleet stays active for 300 s. Without the state carried from
    # Decision.next_state into the next decide(), the first idle refresh would already be inactive.
    clock, source, store, refresher = setup()
    # reactive: its activation is the idle clock alone (the predictive one also waits for the forecast to decay)
    md = {"scaleToZeroAfter": "300", "policy": "reactive"}
    t = store.resolve("llama", "ml", md, T0)
    source.set("ml", "llama", BUSY)
    refresher.refresh_due(T0)
    assert t.current(T0).active
    at_zero = Signals(observed_at=T0, pods_reporting=0)  # no pods, no demand
    source.set("ml", "llama", at_zero)
    refresher.refresh_due(T0 + 100)
    assert t.current(T0 + 100).active
    assert expected(at_zero, md, now=T0 + 100).active is False  # what a stateless call would have said
    refresher.refresh_due(T0 + 305)
    assert t.current(T0 + 305).active is False


def test_targets_of_one_prometheus_share_one_fetch() -> None:
    clock, source, store, refresher = setup()
    for name in ("a", "b", "c"):
        source.set("ml", name, BUSY)
        store.resolve(name, "ml", {}, T0)
    other = ScriptedSource({("ml", "d"): BUSY})
    sources = {"http://prom-a:9090": source, "http://prom-b:9090": other}
    refresher._source_factory = sources.__getitem__
    store.resolve("d", "ml", {"prometheusAddress": "http://prom-b:9090"}, T0)
    refresher.refresh_due(T0)
    assert len(source.calls) == 1 and sorted(c.deployment for c in source.calls[0][1]) == ["a", "b", "c"]
    assert len(other.calls) == 1
    # A target added 2 s later joins the group on the next round (within half an interval), not a fetch of its own.
    store.resolve("e", "ml", {}, T0 + 2)
    source.set("ml", "e", BUSY)
    refresher.refresh_due(T0 + 2)
    assert len(source.calls) == 2 and [c.deployment for c in source.calls[1][1]] == ["e"]
    refresher.refresh_due(T0 + 5)
    assert len(source.calls) == 3 and len(source.calls[2][1]) == 4


def test_same_series_with_a_different_window_is_fetched_separately() -> None:
    clock, source, store, refresher = setup()
    source.set("ml", "llama", BUSY)
    store.resolve("llama", "ml", {}, T0)
    store.resolve("llama", "ml", {"maxReplicas": "3"}, T0)  # same target_key and window: shared
    store.resolve("llama2", "ml", {"deploymentName": "llama", "window": "5m"}, T0)
    refresher.refresh_due(T0)
    assert sorted(len(configs) for _, configs in source.calls) == [1, 1]
    assert all(t.good is not None for t in store.targets())


def test_source_error_keeps_the_last_good_decision_until_max_staleness() -> None:
    clock, source, store, refresher = setup()
    md = {"maxStaleness": "60", "minReplicas": "0"}
    t = store.resolve("llama", "ml", md, T0)
    source.set("ml", "llama", BUSY)
    refresher.refresh_due(T0)
    good = t.current(T0)
    source.fail_all(SourceConnectionError("refused", source="prometheus"))
    for dt in (5, 30, 60):
        refresher.refresh_due(T0 + dt)
        d = t.current(T0 + dt)
        assert (d.desired, d.active) == (good.desired, good.active) and d.desired > 0
    with pytest.raises(Unavailable, match="beyond maxStaleness 60s.*connection"):
        t.current(T0 + 60.5)
    assert t.error_counts == {("scripted", "connection"): 3}
    # Recovery: a good refresh serves again.
    source.fail_all(None)
    refresher.refresh_due(T0 + 65)
    assert t.current(T0 + 65).desired == good.desired and t.last_error is None


def test_error_before_any_good_refresh_is_unavailable_not_zero() -> None:
    clock, source, store, refresher = setup()
    t = store.resolve("llama", "ml", {}, T0)
    source.fail_target("ml", "llama", SourceTimeout("query timed out", source="prometheus"))
    refresher.refresh_due(T0)
    with pytest.raises(Unavailable, match="timeout") as exc:
        t.current(T0)
    assert not exc.value.cold


def test_no_data_for_a_target_is_an_error_for_that_target_only() -> None:
    clock, source, store, refresher = setup()
    source.set("ml", "a", BUSY)
    a = store.resolve("a", "ml", {}, T0)
    b = store.resolve("b", "ml", {}, T0)  # nothing scripted: NoDataError
    refresher.refresh_due(T0)
    assert a.current(T0).desired > 0
    with pytest.raises(Unavailable, match="no_data"):
        b.current(T0)


def test_a_source_bug_fails_its_targets_safely() -> None:
    class Broken:
        name = "broken"

        def fetch(self, targets, now):
            raise KeyError("oops")

    clock, source, store, refresher = setup(factory=lambda address: Broken())
    t = store.resolve("llama", "ml", {}, T0)
    refresher.refresh_due(T0)
    with pytest.raises(Unavailable, match="internal"):
        t.current(T0)


def test_a_failing_source_factory_is_an_error_not_a_cold_cache_forever() -> None:
    def factory(address):
        raise ValueError("--prometheus-bearer-token-file='/t': cannot read")

    clock, source, store, refresher = setup(factory=factory)
    t = store.resolve("llama", "ml", {}, T0)
    refresher.refresh_due(T0)
    with pytest.raises(Unavailable, match="cannot create the source") as exc:
        t.current(T0)
    assert not exc.value.cold


def test_idle_targets_stop_being_refreshed() -> None:
    clock, source, store, refresher = setup(idle_eviction=600)
    source.set("ml", "llama", BUSY)
    t = store.resolve("llama", "ml", {}, T0)
    refresher.refresh_due(T0)
    t.streams = 1  # an open stream keeps it
    refresher.refresh_due(T0 + 601)
    assert len(store) == 1
    t.streams = 0
    calls = len(source.calls)
    refresher.refresh_due(T0 + 1200)
    assert len(store) == 0 and len(source.calls) == calls


class AddColdStart:
    name = "coldstart"

    def __init__(self):
        self.fail: SourceError | None = None
        self.seen = []

    def enrich(self, signals, config, now):
        self.seen.append((config.scaled_object, now))
        if self.fail:
            raise self.fail
        return signals.__class__(**{**signals.__dict__, "ready_replicas": 3})


def test_enrichers_run_before_decide_and_their_failure_is_counted_not_fatal() -> None:
    enricher = AddColdStart()
    clock, source, store, refresher = setup(enrichers=[enricher])
    source.set("ml", "llama", BUSY)
    t = store.resolve("llama", "ml", {}, T0)
    refresher.refresh_due(T0)
    assert enricher.seen == [("llama", T0)] and t.good.signals.ready_replicas == 3
    enricher.fail = NoDataError("no pods", source="coldstart")
    refresher.refresh_due(T0 + 5)
    assert t.good.at == T0 + 5 and t.good.signals.ready_replicas is None
    assert t.error_counts == {("coldstart", "no_data"): 1}


def test_metadata_edit_keeps_the_policy_state() -> None:
    clock, source, store, refresher = setup()
    source.set("ml", "llama", BUSY)
    old = store.resolve("llama", "ml", {"ttftP95": "2.5"}, T0)
    refresher.refresh_due(T0)
    new = store.resolve("llama", "ml", {"ttftP95": "1.0"}, T0 + 10)
    assert new.state is old.state and new.state.last_demand_at == T0


def test_changed_decisions_are_logged_as_json_with_dominant_term(caplog) -> None:
    clock, source, store, refresher = setup()
    source.set("ml", "llama", BUSY)
    store.resolve("llama", "ml", {}, T0)
    with caplog.at_level(logging.INFO, logger="scaler.server.refresh"):
        refresher.refresh_due(T0)
        refresher.refresh_due(T0 + 5)  # same decision: no second line
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.msg.startswith("decision changed")]
    assert len(lines) == 1
    line = lines[0]
    want = expected(BUSY)
    assert (line["dominant"], line["desired"], line["scaledobject"], line["namespace"]) == (
        want.dominant, want.desired, "llama", "ml")
    assert line["reasons"] == list(want.reasons)


def scrape(metrics: ScalerMetrics) -> dict[tuple, float]:
    out = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_report_terms_signals_age_and_errors_by_kind() -> None:
    clock, source, store, refresher = setup()
    metrics = ScalerMetrics(store, clock, lambda: 0)
    source.set("ml", "llama", BUSY)
    t = store.resolve("llama", "ml", {}, T0)
    refresher.refresh_due(T0)
    source.fail_all(SourceTimeout("slow", source="prometheus"))
    refresher.refresh_due(T0 + 5)
    clock.t = T0 + 7
    m = scrape(metrics)
    base = (("namespace", "ml"), ("scaledobject", "llama"), ("trigger", t.trigger))
    want = expected(BUSY)
    assert m[("vllm_scaler_desired_replicas", base)] == want.desired
    assert m[("vllm_scaler_active", base)] == 1.0
    assert m[("vllm_scaler_answering", base)] == 1.0
    for term, value in want.terms.items():
        assert m[("vllm_scaler_policy_term_replicas", tuple(sorted(base + (("term", term),))))] == pytest.approx(value)
    assert m[("vllm_scaler_decision_dominant", tuple(sorted(base + (("term", want.dominant),))))] == 1.0
    assert m[("vllm_scaler_signal", tuple(sorted(base + (("signal", "waiting"),))))] == 12
    assert m[("vllm_scaler_signal", tuple(sorted(base + (("signal", "ttft_p95"),))))] == 3.1
    # Unknown is absent, not zero.
    assert ("vllm_scaler_signal", tuple(sorted(base + (("signal", "arrival_rate"),)))) not in m
    assert m[("vllm_scaler_data_age_seconds", base)] == pytest.approx(7.0)
    assert m[("vllm_scaler_source_errors_total",
              tuple(sorted(base + (("source", "scripted"), ("kind", "timeout")))))] == 1
    clock.t = T0 + 61
    assert scrape(metrics)[("vllm_scaler_answering", base)] == 0.0


def test_enrichers_of_one_fetch_run_in_parallel_in_the_background_loop() -> None:
    import threading
    import time

    class Rendezvous:
        """Each call waits for a second concurrent call: sequential enrichment would break the barrier."""

        name = "rendezvous"

        def __init__(self):
            self.barrier = threading.Barrier(2, timeout=5)

        def enrich(self, signals, config, now):
            self.barrier.wait()
            return signals

    source = ScriptedSource({("ml", "a"): BUSY, ("ml", "b"): BUSY})
    store = TargetStore(ServerDefaults(prometheus_url="http://prom-a:9090"))
    refresher = Refresher(store, lambda address: source, clock=time.time, enrichers=[Rendezvous()], workers=2)
    a = store.resolve("a", "ml", {}, time.time())
    b = store.resolve("b", "ml", {}, time.time())
    refresher.start()
    try:
        deadline = time.monotonic() + 10
        while a.good is None or b.good is None:
            assert time.monotonic() < deadline, (a.error_counts, b.error_counts)
            time.sleep(0.02)
        assert a.error_counts == {} and b.error_counts == {}
        assert len(source.calls) == 1  # one shared fetch, then two enrichments side by side
    finally:
        refresher.stop()


# -- isolation of targets sharing a source -------------------------------------------------------

def _rejects(deployment, error):
    """A source hook: the whole shared fetch fails with ``error`` whenever ``deployment`` is in the batch."""
    def hook(configs):
        if any(c.deployment == deployment for c in configs):
            raise error
    return hook


@pytest.mark.parametrize("error", [
    SourceHTTPError("bad_data: invalid parameter \"query\": 1e300s out of range (attacker text)", status=400,
                    source="scripted"),
    ValueError("window 0.0004 is below 1 ms (attacker text)"),  # a value the source cannot turn into PromQL
], ids=["http-400", "value-error"])
def test_one_targets_bad_query_fails_only_that_target_with_its_own_error(error) -> None:
    clock, source, store, refresher = setup()
    victims = []
    for i, ns in enumerate(("ml", "team-b", "team-c", "team-d", "team-e")):
        source.set(ns, f"v{i}", BUSY)
        victims.append(store.resolve(f"v{i}", ns, {}, T0))
    source.set("evil", "attacker", BUSY)
    attacker = store.resolve("attacker", "evil", {}, T0)
    source.hook = _rejects("attacker", error)
    refresher.refresh_due(T0)
    for v in victims:
        assert v.current(T0).desired == expected(BUSY, name=v.scaled_object, ns=v.namespace).desired
        assert v.last_error is None and v.error_counts == {}
    with pytest.raises(Unavailable) as exc:
        attacker.current(T0)
    assert "attacker text" in str(exc.value)
    # Bisection: 6 targets -> 3 + 3 -> ... at most 2*6-1 fetches, and the shared fetch was tried first.
    assert len(source.calls[0][1]) == 6 and len(source.calls) <= 11
    # From then on the attacker is fetched alone: one shared fetch for the victims, one for it.
    source.calls.clear()
    refresher.refresh_due(T0 + 5)
    assert sorted(len(c) for _, c in source.calls) == [1, 5]
    assert all(v.good.at == T0 + 5 for v in victims)
    # Healed: it rejoins the shared fetch after a good refresh alone.
    source.hook = None
    refresher.refresh_due(T0 + 10)
    assert attacker.current(T0 + 10).desired == expected(BUSY, name="attacker", ns="evil").desired
    source.calls.clear()
    refresher.refresh_due(T0 + 15)
    assert [len(c) for _, c in source.calls] == [6]


def test_prometheus_own_failure_fails_the_group_at_once_without_retries() -> None:
    clock, source, store, refresher = setup()
    for name in ("a", "b", "c", "d"):
        source.set("ml", name, BUSY)
        store.resolve(name, "ml", {}, T0)
    source.fail_all(SourceTimeout("no answer within 3 s from http://prom-a:9090", source="scripted"))
    refresher.refresh_due(T0)
    assert len(source.calls) == 1  # a timeout is Prometheus', not a target's: splitting cannot help
    assert all(t.last_error.kind == "timeout" for t in store.targets())
    source.fail_all(SourceHTTPError("service unavailable", status=503, source="scripted"))
    refresher.refresh_due(T0 + 5)
    assert len(source.calls) == 2


def test_targets_with_incompatible_query_parameters_never_share_a_fetch() -> None:
    from scaler.server.refresher import fetch_groups

    clock, source, store, refresher = setup()
    for name, md in (("a", {}), ("b", {}), ("c", {"window": "5m"}), ("d", {"window": "5m"}),
                     ("e", {"window": "2m"})):
        source.set("ml", name, BUSY)
        store.resolve(name, "ml", md, T0)
    groups = fetch_groups(store.targets())
    assert sorted(sorted(t.scaled_object for t in g) for g in groups) == [["a", "b"], ["c", "d"], ["e"]]
    refresher.refresh_due(T0)
    assert sorted(sorted(c.deployment for c in configs) for _, configs in source.calls) == [["a", "b"],
                                                                                           ["c", "d"], ["e"]]
    # A window that breaks its group's query (HTTP 400) costs only the targets with that window.
    source.calls.clear()
    def reject_2m(configs):
        if any(c.window == 120 for c in configs):
            raise SourceHTTPError("bad_data", status=400, source="scripted")

    source.hook = reject_2m
    refresher.refresh_due(T0 + 5)
    assert {t.scaled_object for t in store.targets() if t.last_error is not None} == {"e"}


def test_credentials_in_an_address_never_reach_logs_or_errors(caplog) -> None:
    from scaler.server.logs import JsonFormatter, TextFormatter

    clock, source, store, refresher = setup()
    store.defaults = ServerDefaults(prometheus_url="http://prom-a:9090")
    t = store.resolve("llama", "ml", {}, T0)
    source.fail_all(SourceConnectionError("cannot reach http://admin:hunter2@prom-a:9090: refused",
                                          source="scripted"))
    with caplog.at_level(logging.WARNING, logger="scaler.server.refresh"):
        refresher.refresh_due(T0)
    with pytest.raises(Unavailable) as exc:
        t.current(T0)
    assert "hunter2" not in str(exc.value) and "http://***@prom-a:9090" in str(exc.value)
    assert caplog.records
    for fmt in (JsonFormatter(), TextFormatter()):
        for r in caplog.records:
            assert "hunter2" not in fmt.format(r)
    # Whatever logs it, however: a library's message or a traceback.
    record = logging.LogRecord("urllib3", logging.WARNING, __file__, 1, "retrying %s", ("https://u:p%40ss@h/x",),
                               None)
    assert "p%40ss" not in JsonFormatter().format(record) and "https://***@h/x" in TextFormatter().format(record)


# -- the per-target budget -----------------------------------------------------------------------

class Spin:
    """An enricher that burns CPU in Python code for one deployment (a runaway target's work)."""

    name = "spin"

    def __init__(self, deployment, seconds=3600.0):
        self.deployment = deployment
        self.seconds = seconds
        self.spun = 0

    def enrich(self, signals, config, now):
        if config.deployment == self.deployment:
            import time
            self.spun += 1
            end = time.monotonic() + self.seconds
            try:
                while time.monotonic() < end:
                    pass
            except Exception:  # what careless code does; the cut-off is not an Exception
                pass
        return signals


def test_runaway_target_is_cut_off_by_its_budget_others_refresh(caplog) -> None:
    import time

    source = ScriptedSource({("ml", "good"): BUSY, ("team-b", "other"): BUSY, ("evil", "runaway"): BUSY})
    store = TargetStore(ServerDefaults(prometheus_url="http://prom-a:9090"))
    metrics = ScalerMetrics(store, time.time, lambda: 0)
    from scaler.server.refresher import RefreshObserver
    spin = Spin("runaway")
    refresher = Refresher(store, lambda address: source, clock=time.time, enrichers=[spin], budget=0.3,
                          observer=RefreshObserver(cutoff=metrics.observe_cutoff))
    now = time.time()
    md = {"refreshInterval": "1s", "maxStaleness": "30s"}
    runaway = store.resolve("runaway", "evil", md, now)   # first in the batch: the others wait for it
    good = store.resolve("good", "ml", md, now)
    other = store.resolve("other", "team-b", md, now)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="scaler.server.refresh"):
        refresher.start()
        try:
            deadline = time.monotonic() + 20
            while not (good.refreshes >= 3 and other.refreshes >= 3 and runaway.last_error is not None):
                assert time.monotonic() < deadline, (good.refreshes, other.refreshes, runaway.error_counts)
                time.sleep(0.02)
            elapsed = time.monotonic() - started
        finally:
            refresher.stop()
    assert runaway.good is None and runaway.last_error.kind == "budget"
    cutoffs = scrape(metrics)[("vllm_scaler_refresh_cutoffs_total", ())]
    assert runaway.error_counts == {("refresh", "budget"): cutoffs} and cutoffs >= 1
    # Backed off (2 s, then 4 s... at a 1 s interval) while the others refreshed every second.
    assert spin.spun <= cutoffs + 1 < good.refreshes
    with pytest.raises(Unavailable, match=r"\[budget\] refresh: cut off after"):
        runaway.current(time.time())
    # Three refreshes of the others at a 1 s interval, though the runaway would spin for an hour.
    assert elapsed < 15
    line = [r for r in caplog.records if r.getMessage().startswith("refresh cut off")]
    assert len(line) == cutoffs and all(r.fields["scaledobject"] == "runaway" for r in line)


def test_budget_cuts_python_loops_and_never_leaks_the_cutoff() -> None:
    from scaler.server.budget import Budget, BudgetExceeded

    budget = Budget(0.05, tick=0.005)
    budget.start()
    try:
        with pytest.raises(BudgetExceeded) as exc:
            budget.run(lambda: [None for _ in iter(int, 1)])  # loops forever
        assert exc.value.used >= 0.05
        # Many short calls around the deadline: a cut-off is delivered inside run() or not at all.
        done = 0
        for n in range(200):
            try:
                budget.run(lambda n=n: sum(i * i for i in range(20_000 + 400 * n)))
                done += 1
            except BudgetExceeded:
                pass
        for _ in range(100_000):  # a stray pending Cutoff would be raised here
            pass
        assert done > 0
    finally:
        budget.stop()


def test_lag_counts_targets_overdue_beyond_their_max_staleness() -> None:
    clock, source, store, refresher = setup()
    source.set("ml", "a", BUSY)
    a = store.resolve("a", "ml", {"maxStaleness": "30s"}, T0)
    assert refresher.lag(T0) == (0.0, 0)                 # a new target is due from its creation
    assert refresher.lag(T0 + 31) == (31.0, 1)           # never refreshed for longer than maxStaleness
    refresher.refresh_due(T0 + 31)
    assert refresher.lag(T0 + 31) == (0.0, 0)            # refreshed: next due in one interval
    assert refresher.lag(T0 + 36 + 29) == (29.0, 0)      # late, not yet hopeless
    source.fail_all(SourceTimeout("slow", source="scripted"))
    refresher.refresh_due(T0 + 65)                        # a failing source is still refreshed on time
    assert refresher.lag(T0 + 65) == (0.0, 0) and a.last_error is not None
