"""The indicator tree as data: periods, thresholds, formulas, validation, and the default tree."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from zhizhi.analytics.rollup import ALARM_AGGREGATES, CASE_AGGREGATES, OBSERVATION_FACTS
from zhizhi.analytics.service import load_tree
from zhizhi.domain.errors import ValidationFailed
from zhizhi.domain.indicators import (
    FACTS,
    Direction,
    Formula,
    Grain,
    Slice,
    Source,
    Status,
    Thresholds,
    evaluate,
    parse_tree,
    period_of,
    tree_to_dict,
)

AT = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)  # Monday 2026-11-23 04:00 in Chongqing


@pytest.mark.parametrize(("grain", "label", "start", "end"), [
    (Grain.DAY, "2026-11-23", datetime(2026, 11, 22, 16, tzinfo=UTC), datetime(2026, 11, 23, 16, tzinfo=UTC)),
    (Grain.WEEK, "2026-W48", datetime(2026, 11, 22, 16, tzinfo=UTC), datetime(2026, 11, 29, 16, tzinfo=UTC)),
    (Grain.MONTH, "2026-11", datetime(2026, 10, 31, 16, tzinfo=UTC), datetime(2026, 11, 30, 16, tzinfo=UTC)),
    (Grain.QUARTER, "2026-Q4", datetime(2026, 9, 30, 16, tzinfo=UTC), datetime(2026, 12, 31, 16, tzinfo=UTC)),
    (Grain.YEAR, "2026", datetime(2025, 12, 31, 16, tzinfo=UTC), datetime(2026, 12, 31, 16, tzinfo=UTC)),
])
def test_periods_are_cut_at_local_midnight(grain: Grain, label: str, start: datetime, end: datetime) -> None:
    p = period_of(grain, AT, "Asia/Shanghai")
    assert (p.label, p.start, p.end) == (label, start, end)
    assert p.start <= AT < p.end


def test_period_needs_an_aware_time_and_a_known_grain() -> None:
    with pytest.raises(ValidationFailed):
        period_of(Grain.DAY, datetime(2026, 1, 1))
    with pytest.raises(ValidationFailed):
        Grain.parse("fortnight")
    assert Grain.parse(" Month ") is Grain.MONTH


def test_december_rolls_into_next_year() -> None:
    p = period_of(Grain.MONTH, datetime(2026, 12, 31, 17, tzinfo=UTC))  # 1 Jan 2027 local
    assert p.label == "2027-01"


@pytest.mark.parametrize(("direction", "value", "status"), [
    (Direction.LOWER_IS_BETTER, 1.9, Status.GREEN), (Direction.LOWER_IS_BETTER, 2.0, Status.YELLOW),
    (Direction.LOWER_IS_BETTER, 4.0, Status.RED), (Direction.LOWER_IS_BETTER, None, Status.NO_DATA),
    (Direction.HIGHER_IS_BETTER, 96, Status.GREEN), (Direction.HIGHER_IS_BETTER, 95, Status.YELLOW),
    (Direction.HIGHER_IS_BETTER, 85, Status.RED),
])
def test_thresholds(direction: Direction, value: float | None, status: Status) -> None:
    th = Thresholds(direction, 2.0, 4.0) if direction is Direction.LOWER_IS_BETTER else Thresholds(direction, 95, 85)
    assert th.judge(value) is status


def test_thresholds_out_of_order_are_refused() -> None:
    with pytest.raises(ValidationFailed):
        Thresholds(Direction.LOWER_IS_BETTER, 5, 2)
    with pytest.raises(ValidationFailed):
        Thresholds(Direction.HIGHER_IS_BETTER, 80, 90)


def test_formula_has_no_value_over_nothing() -> None:
    rate = Formula("closed_on_time", "closed", 100)
    assert rate.apply({"closed_on_time": 3, "closed": 4}) == 75.0
    assert rate.apply({"closed_on_time": 0, "closed": 0}) is None
    assert rate.apply({"closed_on_time": 0}) is None
    assert Formula("reported").apply({"reported": 0}) == 0.0
    assert Formula("alarms_raised").apply({"alarms_raised": None}) is None


def test_slices_match_by_prefix() -> None:
    s = Slice(categories=("I04", "C0101"))
    assert s.matches_category("I0401") and s.matches_category("C0101")
    assert not s.matches_category("C0102") and not s.matches_category(None)
    assert Slice().matches_category(None)
    assert Slice(Source.ALARMS, scenes=("elderly",)).matches_alarm("elderly", "major")


def _tree(**ind: object) -> dict[str, object]:
    base = {"code": "x.i", "name_zh": "指标", "formula": {"numerator": "reported"}}
    base.update(ind)
    return {"sectors": [{"code": "x", "name_zh": "版块", "indicators": [base]}]}


@pytest.mark.parametrize(("bad", "message"), [
    ({"formula": {"numerator": "bogus"}}, "unknown fact"),
    ({"formula": {"numerator": "reported", "denominator": "alarms_raised"}}, "mixes sources"),
    ({"formula": None}, "missing [formula]"),
    ({"name_zh": ""}, "name_zh"),
    ({"thresholds": {"direction": "up", "yellow": 1, "red": 2}}, "bad thresholds"),
    ({"grain": "hour"}, "unknown grain"),
    ({"formula": {"numerator": "readings_over", "denominator": "readings"}}, "need a quantity"),
    ({"formula": {"numerator": "readings_over", "denominator": "readings"}, "quantity": "methane"}, "needs a limit"),
    ({"formula": {"numerator": "readings_over"}, "quantity": "methane", "limit": {"op": "=", "value": 1}},
     "limit op"),
    ({"formula": {"numerator": "reading_sum", "denominator": "alarms_raised"}, "quantity": "methane"},
     "mixes sources"),
    ({"formula": {"numerator": "devices_online", "denominator": "devices"}, "online_minutes": 0}, "online_minutes"),
])
def test_tree_errors_name_the_node(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        parse_tree(_tree(**bad))
    assert message in err.value.message and "x" in err.value.message


def test_tree_structure_errors() -> None:
    with pytest.raises(ValidationFailed):
        parse_tree({"sectors": []})
    with pytest.raises(ValidationFailed, match="holds no indicators"):
        parse_tree({"sectors": [{"code": "x", "name_zh": "空"}]})
    dup = _tree()
    dup["sectors"].append({"code": "y", "name_zh": "二", "indicators": [  # type: ignore[union-attr]
        {"code": "x.i", "name_zh": "重", "formula": {"numerator": "reported"}}]})
    with pytest.raises(ValidationFailed, match="duplicate"):
        parse_tree(dup)


def test_runways_inherit_categories_and_grain_from_their_sector() -> None:
    def ind(code: str) -> dict[str, object]:
        return {"code": code, "name_zh": code, "formula": {"numerator": "reported"}}

    tree = parse_tree({"defaults": {"grain": "week"}, "sectors": [{
        "code": "s", "name_zh": "版块", "categories": ["I04"], "indicators": [ind("s1")],
        "runways": [{"code": "s.r", "name_zh": "跑道", "grain": "day", "indicators": [ind("r")],
                     "subrunways": [{"code": "s.r.q", "name_zh": "子跑道", "categories": ["I0401"],
                                     "indicators": [ind("q")]}]}]}]})
    s1, r, q = tree.get("s1"), tree.get("r"), tree.get("q")
    assert (s1.slice.categories, s1.grain) == (("I04",), Grain.WEEK)
    assert (r.slice.categories, r.grain) == (("I04",), Grain.DAY)
    assert (q.slice.categories, q.grain, q.path) == (("I0401",), Grain.DAY, ("s", "s.r", "s.r.q"))


def test_evaluate_keeps_the_sums_it_used() -> None:
    tree = parse_tree(_tree(formula={"numerator": "reported", "denominator": "population", "scale": 10000},
                            thresholds={"direction": "lower_is_better", "yellow": 5, "red": 10}))
    v = evaluate(tree.get("x.i"), "500103", {"reported": 30, "population": 50_000})
    assert (v.value, v.status, v.numerator, v.denominator) == (6.0, Status.YELLOW, 30, 50_000)
    assert evaluate(tree.get("x.i"), "500103", {"reported": 3, "population": None}).status is Status.NO_DATA


def test_the_engine_computes_every_fact_the_domain_names() -> None:
    assert set(CASE_AGGREGATES) | set(ALARM_AGGREGATES) | set(OBSERVATION_FACTS) | {"population"} == set(FACTS)


def test_default_tree_has_eight_sectors_and_the_loops_measures() -> None:
    tree = load_tree()
    codes = [s.code for s in tree.sectors]
    assert codes[:8] == ["public_safety", "urban_management", "transport", "ecology", "emergencies", "health",
                         "livelihoods", "economy"]
    assert codes[8:] == ["loop"]
    numerators = {(i.formula.numerator, i.formula.denominator) for i in tree.sectors[8].walk()}
    assert ("response_seconds", "responded") in numerators  # response time
    assert ("closed_on_time", "closed") in numerators  # on-time handling rate
    assert ("closed_of_reported", "registered") in numerators  # closure rate
    assert ("satisfied", "evaluated") in numerators  # satisfaction
    assert ("repeats", "reported") in numerators  # repeat-complaint rate
    kinds = {n.kind for s in tree.sectors for n in (s, *s.children, *(g for c in s.children for g in c.children))}
    assert kinds == {"sector", "runway", "subrunway"}
    assert any(i.source is Source.ALARMS for i in tree.indicators())
    assert all(len(s.name_zh) > 1 for s in tree.sectors)
    as_json = tree_to_dict(tree)
    assert as_json[0]["children"][0]["indicators"][0]["formula"]["numerator"]


def test_default_tree_categories_exist_in_the_catalogue() -> None:
    from zhizhi.adapters.catalogue_files import load_catalogue

    codes = {c.code for c in load_catalogue(None).categories()}
    for ind in load_tree().indicators():
        for prefix in ind.slice.categories:
            assert any(c.startswith(prefix) for c in codes), (ind.code, prefix)


def test_observation_indicators_read_their_quantity_limit_and_scenes() -> None:
    tree = parse_tree({"sectors": [{"code": "e", "name_zh": "应急", "categories": ["I04"], "scenes": ["waterlogging"],
                                    "indicators": [
        {"code": "e.over", "name_zh": "超限", "quantity": "water_level", "limit": {"op": ">=", "value": 20},
         "formula": {"numerator": "readings_over", "denominator": "readings", "scale": 1000}},
        {"code": "e.per_device", "name_zh": "台均预警", "formula": {"numerator": "alarms_raised",
                                                                 "denominator": "devices"}},
    ]}]})
    over, per_device = tree.get("e.over"), tree.get("e.per_device")
    assert over.source is Source.OBSERVATIONS and over.slice.categories == ()
    assert (over.slice.scenes, over.slice.quantity, over.slice.limit_op, over.slice.limit) == (
        ("waterlogging",), "water_level", ">=", 20.0)
    assert over.slice.matches_device("waterlogging", {"water_level"})
    assert not over.slice.matches_device("waterlogging", {"methane"})
    assert not over.slice.matches_device("elderly", {"water_level"})
    assert per_device.source is Source.ALARMS  # alarms per device: the devices of the same scenes
    assert tree_to_dict(tree)[0]["indicators"][0]["slice"]["limit"] == {"op": ">=", "value": 20.0}
