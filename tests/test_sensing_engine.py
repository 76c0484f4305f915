"""The vectorised rule engine, rule by rule, checked against the sequence a person would reason through."""

from __future__ import annotations

import numpy as np
import pytest

from zhizhi.domain.alarms import Alarm, AlarmState, Severity, parse_rule
from zhizhi.domain.errors import IllegalAction, ValidationFailed
from zhizhi.sensing.catalogue import load_sensing_catalogue
from zhizhi.sensing.engine import RuleEngine

T0 = 1_795_000_000_000
MIN = 60_000


@pytest.fixture
def engine() -> RuleEngine:
    return RuleEngine(load_sensing_catalogue())


def feed(e: RuleEngine, rows: list[tuple[int, str, int, float]]) -> dict[str, dict[str, list[int]]]:
    """Rows of (device, quantity, minute, value) → {rule: {raised/cleared/repeated: [device, …]}}."""
    dev = np.array([r[0] for r in rows], dtype=np.int64)
    q = np.array([e.qindex[r[1]] for r in rows], dtype=np.int64)
    t = np.array([T0 + r[2] * MIN for r in rows], dtype=np.int64)
    v = np.array([r[3] for r in rows], dtype=np.float64)
    out: dict[str, dict[str, list[int]]] = {}
    for tr in e.evaluate(dev, q, t, v):
        out[e.rules[tr.rule].code] = {"raised": tr.raised.tolist(), "cleared": tr.cleared.tolist(),
                                      "repeated": tr.repeated.tolist(), "raised_t": tr.raised_t.tolist()}
    return out


def test_threshold_with_hysteresis(engine: RuleEngine) -> None:
    a = engine.add_device("methane_detector", "septic_tank")
    b = engine.add_device("methane_detector", "septic_tank")
    out = feed(engine, [(a, "methane", 0, 10), (a, "methane", 1, 26), (b, "methane", 0, 24.9)])
    assert out["methane_high"]["raised"] == [a]
    assert out["methane_high"]["raised_t"] == [T0 + MIN]  # the first reading that met the limit
    # inside the hysteresis band (20–25): neither raised again nor cleared
    out = feed(engine, [(a, "methane", 2, 22), (b, "methane", 1, 22)])
    assert "methane_high" not in out or out["methane_high"] == {"raised": [], "cleared": [], "repeated": [],
                                                                "raised_t": []}
    out = feed(engine, [(a, "methane", 3, 27)])
    assert out["methane_high"]["repeated"] == [a] and out["methane_high"]["raised"] == []
    out = feed(engine, [(a, "methane", 4, 19.9)])
    assert out["methane_high"]["cleared"] == [a]


def test_rows_out_of_order_in_a_batch_are_sorted_by_time(engine: RuleEngine) -> None:
    a = engine.add_device("methane_detector", "septic_tank")
    # the last reading in time is low: the alarm raised at minute 1 is already cleared at the batch's end
    out = feed(engine, [(a, "methane", 2, 5), (a, "methane", 1, 30), (a, "methane", 0, 5)])
    assert "methane_high" not in out or out["methane_high"]["raised"] == []
    out = feed(engine, [(a, "methane", 4, 30), (a, "methane", 3, 5)])
    assert out["methane_high"]["raised"] == [a]


def test_rate_of_change_uses_the_previous_reading_across_batches(engine: RuleEngine) -> None:
    a = engine.add_device("methane_detector", "septic_tank")
    assert "methane_rising" not in feed(engine, [(a, "methane", 0, 1.0)])
    out = feed(engine, [(a, "methane", 2, 8.0)])  # 3.5 per minute: below 5
    assert "methane_rising" not in out or out["methane_rising"]["raised"] == []
    out = feed(engine, [(a, "methane", 3, 14.0)])  # 6 per minute
    assert out["methane_rising"]["raised"] == [a]
    out = feed(engine, [(a, "methane", 4, 14.5)])
    assert out["methane_rising"]["cleared"] == [a]


def test_duration_needs_the_condition_unbroken_for_n_minutes(engine: RuleEngine) -> None:
    g = engine.add_device("water_gauge", "waterlogging")  # ≥ 20 cm for 5 minutes
    out = feed(engine, [(g, "water_level", m, 25) for m in range(0, 4)])
    assert "water_deep" not in out or out["water_deep"]["raised"] == []
    out = feed(engine, [(g, "water_level", 4, 10), (g, "water_level", 5, 30), (g, "water_level", 8, 30)])
    assert "water_deep" not in out or out["water_deep"]["raised"] == []  # broken at minute 4: run restarts at 5
    out = feed(engine, [(g, "water_level", 10, 31)])  # the run from minute 5 reaches 5 minutes across batches
    assert out["water_deep"]["raised"] == [g]
    assert out["water_deep"]["raised_t"] == [T0 + 10 * MIN]
    out = feed(engine, [(g, "water_level", 11, 3)])
    assert out["water_deep"]["cleared"] == [g]


def test_combination_on_latest_values_of_several_quantities(engine: RuleEngine) -> None:
    f = engine.add_device("forest_station", "forest_fire")
    out = feed(engine, [(f, "temperature", 0, 36), (f, "humidity", 0, 25)])
    assert "fire_risk" not in out or out["fire_risk"]["raised"] == []  # no wind reading yet
    out = feed(engine, [(f, "wind_speed", 1, 6)])
    assert out["fire_risk"]["raised"] == [f]
    out = feed(engine, [(f, "humidity", 2, 60)])
    assert out["fire_risk"]["cleared"] == [f]


def test_offline_after_n_minutes_and_back_online(engine: RuleEngine) -> None:
    a = engine.add_device("methane_detector", "septic_tank", seen_ms=T0)
    b = engine.add_device("methane_detector", "septic_tank", seen_ms=T0)
    feed(engine, [(b, "methane", 25, 1.0)])
    trs = engine.offline(T0 + 31 * MIN)
    assert [tr.raised.tolist() for tr in trs] == [[a]]
    assert engine.offline(T0 + 40 * MIN) == []  # one active alarm, not one per check
    out = feed(engine, [(a, "methane", 41, 1.0)])
    assert out["methane_offline"]["cleared"] == [a]


def test_per_device_override_and_disable(engine: RuleEngine) -> None:
    a = engine.add_device("methane_detector", "septic_tank", {"methane_high": {"value": 10, "clear": 8}})
    b = engine.add_device("methane_detector", "septic_tank", {"methane_high": {"enabled": False}})
    c = engine.add_device("methane_detector", "septic_tank")
    out = feed(engine, [(a, "methane", 0, 12), (b, "methane", 0, 90), (c, "methane", 0, 12)])
    assert out["methane_high"]["raised"] == [a]


def test_many_devices_in_one_batch_vectorised(engine: RuleEngine) -> None:
    n = 5000
    ids = [engine.add_device("methane_detector", "septic_tank") for _ in range(n)]
    rng = np.random.default_rng(1)
    values = rng.uniform(0, 15, n)
    hot = rng.choice(n, 50, replace=False)
    values[hot] = 40
    out = feed(engine, [(ids[i], "methane", 0, float(values[i])) for i in range(n)])
    assert sorted(out["methane_high"]["raised"]) == sorted(ids[i] for i in hot)


def test_rule_parsing_refuses_bad_rules() -> None:
    with pytest.raises(ValidationFailed):
        parse_rule({"code": "x", "scene": "s", "device_type": "d", "kind": "nope"})
    with pytest.raises(ValidationFailed):
        parse_rule({"code": "x", "scene": "s", "device_type": "d", "kind": "threshold"})  # no quantity
    with pytest.raises(ValidationFailed):  # clear level on the wrong side: no hysteresis
        parse_rule({"code": "x", "scene": "s", "device_type": "d", "kind": "threshold", "quantity": "q",
                    "op": ">=", "value": 10, "clear": 12})
    with pytest.raises(ValidationFailed):
        parse_rule({"code": "x", "scene": "s", "device_type": "d", "kind": "offline"})


def test_alarm_lifecycle_records_every_step() -> None:
    from datetime import UTC, datetime, timedelta

    t = datetime(2026, 11, 23, 2, tzinfo=UTC)
    a = Alarm(id=7, device_id=1, device_code="M1", rule_code="r", scene="s", severity=Severity.CRITICAL,
              raised_at=t, value=30.0, message="m")
    a.raised()
    a.repeat(t + timedelta(minutes=1), 31.0)
    assert a.count == 2 and a.value == 31.0
    a.acknowledge(t + timedelta(minutes=2), "值班员")
    with pytest.raises(IllegalAction):
        a.acknowledge(t + timedelta(minutes=3), "值班员")
    a.clear(t + timedelta(minutes=4))
    assert a.state is AlarmState.CLEARED
    assert [s.action for s in a.steps] == ["raised", "acknowledged", "cleared"]
    assert [type(e).__name__ for e in a.events] == ["AlarmRaised", "AlarmAcknowledged", "AlarmCleared"]
    with pytest.raises(IllegalAction):
        a.clear(t + timedelta(minutes=5))


def test_raised_and_cleared_inside_one_batch_is_not_lost(engine: RuleEngine) -> None:
    b = engine.add_device("bracelet", "elderly")
    out = feed(engine, [(b, "fall", 0, 0), (b, "fall", 1, 1), (b, "fall", 2, 0)])
    assert "elderly_fall" in out
    tr = next(t for t in engine.evaluate(np.array([b]), np.array([engine.qindex["fall"]]),
                                         np.array([T0 + 5 * MIN]), np.array([1.0])))
    assert tr.raised.tolist() == [b]  # it was not left active by the flash


def test_flash_transition_fields(engine: RuleEngine) -> None:
    b = engine.add_device("throw_camera", "high_throw")
    trs = engine.evaluate(np.array([b, b]), np.array([engine.qindex["throw_event"]] * 2),
                          np.array([T0, T0 + MIN]), np.array([1.0, 0.0]))
    (tr,) = trs
    assert tr.flash.tolist() == [b] and tr.flash_t.tolist() == [T0] and tr.flash_clear_t.tolist() == [T0 + MIN]
    assert tr.raised.size == 0 and tr.cleared.size == 0
