"""Address text → district / street / community codes."""

from __future__ import annotations

import time

import pytest

from zhizhi.domain.places import Level, Place
from zhizhi.geo.address import AddressLocator, AddressMatch, name_variants

D, S, C = Level.DISTRICT, Level.STREET, Level.COMMUNITY

# A slice of Chongqing's real hierarchy (NBS 2023 codes), including namesakes: 双龙镇 exists in
# 长寿区 and 云阳县, 人和街道 in 渝北区 and 云阳县, 走马镇 in 万州区 and 九龙坡区.
PLACES = [
    Place("500000", "重庆市", Level.CITY, None),
    Place("500103", "渝中区", D, "500000"),
    Place("500105", "江北区", D, "500000"),
    Place("500112", "渝北区", D, "500000"),
    Place("500115", "长寿区", D, "500000"),
    Place("500235", "云阳县", D, "500000"),
    Place("500101", "万州区", D, "500000"),
    Place("500107", "九龙坡区", D, "500000"),
    Place("500240", "石柱土家族自治县", D, "500000"),
    Place("500103003", "解放碑街道", S, "500103"),
    Place("500105006", "观音桥街道", S, "500105"),
    Place("500112009", "人和街道", S, "500112"),
    Place("500235003", "人和街道", S, "500235"),
    Place("500115127", "双龙镇", S, "500115"),
    Place("500235127", "双龙镇", S, "500235"),
    Place("500101120", "走马镇", S, "500101"),
    Place("500107106", "走马镇", S, "500107"),
    Place("500240001", "南宾街道", S, "500240"),
    Place("500103003001", "民生路社区", C, "500103003"),
    Place("500105006002", "建新北路社区", C, "500105006"),
    Place("500115127201", "双龙村", C, "500115127"),
    Place("500235127202", "龙洞村", C, "500235127"),
    Place("500112009001", "星光社区", C, "500112009"),
    Place("500112009001001", "星光社区第1网格", Level.GRID, "500112009001"),
]


@pytest.fixture(scope="module")
def loc() -> AddressLocator:
    return AddressLocator(PLACES)


def _codes(m: AddressMatch | None) -> tuple[str | None, str | None, str | None] | None:
    return None if m is None else (m.district_code, m.street_code, m.community_code)


def test_district_only(loc: AddressLocator) -> None:
    m = loc.locate("渝中区某小区门口垃圾堆放")
    assert _codes(m) == ("500103", None, None)
    assert m is not None and m.confidence >= 0.85 and m.matched == ["渝中区"]


def test_alias_counts_less(loc: AddressLocator) -> None:
    full, short = loc.locate("渝中区七星岗"), loc.locate("渝中七星岗")
    assert _codes(short) == ("500103", None, None)
    assert full is not None and short is not None and short.confidence < full.confidence
    m = loc.locate("石柱县南宾街道城南路")
    assert _codes(m) == ("500240", "500240001", None)


def test_street_and_district(loc: AddressLocator) -> None:
    m = loc.locate("渝北区人和街道星光大道8号噪音扰民")
    assert m is not None and m.district_code == "500112" and m.street_code == "500112009"
    assert m.confidence >= 0.5 and "人和街道" in m.matched


def test_ambiguous_street_resolved_by_district(loc: AddressLocator) -> None:
    assert _codes(loc.locate("云阳县人和街道")) == ("500235", "500235003", None)
    assert _codes(loc.locate("重庆市长寿区双龙镇场镇")) == ("500115", "500115127", None)
    assert _codes(loc.locate("九龙坡区走马镇")) == ("500107", "500107106", None)


def test_ambiguous_street_alone_is_unresolved(loc: AddressLocator) -> None:
    assert loc.locate("走马镇老街路灯不亮") is None
    assert loc.locate("双龙镇") is None


def test_ambiguous_street_in_another_district_stays_at_district(loc: AddressLocator) -> None:
    m = loc.locate("渝中区双龙镇")
    assert _codes(m) == ("500103", None, None)
    assert m is not None and m.confidence < 0.8 and "重名" in m.explanation


def test_community_implies_street_and_district(loc: AddressLocator) -> None:
    m = loc.locate("建新北路社区3栋漏水")
    assert _codes(m) == ("500105", "500105006", "500105006002")
    full = loc.locate("江北区观音桥街道建新北路社区3栋漏水")
    assert _codes(full) == _codes(m)
    assert m is not None and full is not None and full.confidence > m.confidence
    assert full.confidence == pytest.approx(0.95)


def test_namesake_community_resolved_by_street(loc: AddressLocator) -> None:
    # 龙洞村 only in 云阳县's 双龙镇: the community picks the right 双龙镇
    assert _codes(loc.locate("双龙镇龙洞村")) == ("500235", "500235127", "500235127202")


def test_conflict_lowers_confidence_and_explains(loc: AddressLocator) -> None:
    m = loc.locate("渝北区观音桥街道")  # 观音桥街道 is in 江北区
    assert m is not None and m.street_code == "500105006" and m.district_code == "500105"
    assert m.confidence <= 0.5
    assert "不属于" in m.explanation and "渝北区" in m.explanation


def test_nothing_found(loc: AddressLocator) -> None:
    assert loc.locate("") is None
    assert loc.locate("市民反映路灯不亮，请尽快处理") is None
    assert loc.locate("A市A3区A5街道B1社区") is None
    assert loc.locate("A市A3区") is None
    assert loc.locate("星光大道") is None  # a shortened community name alone is too weak


def test_full_width_and_spaces(loc: AddressLocator) -> None:
    assert _codes(loc.locate("渝 北 区 人和街道")) == ("500112", "500112009", None)


def test_name_variants() -> None:
    forms = dict(name_variants("石柱土家族自治县", D))
    assert forms["石柱土家族自治县"] == 1.0 and "石柱县" in forms and "石柱" in forms
    assert "人和" in dict(name_variants("人和街道", S))
    assert "星光" in dict(name_variants("星光社区", C))
    assert all(len(f) >= 2 for f, _ in name_variants("新村", C))


def test_unknown_alias_target_is_refused() -> None:
    with pytest.raises(ValueError):
        AddressLocator(PLACES, aliases={"解放碑": "999"})
    loc = AddressLocator(PLACES, aliases={"解放碑": "500103003"})
    assert _codes(loc.locate("渝中区解放碑步行街")) == ("500103", "500103003", None)


def test_whole_city_examples_and_speed() -> None:
    """Real namesakes from the full NBS list, and throughput over all of Chongqing."""
    from zhizhi.geo import demo_city as dc

    names = dc.load_name_lists()
    if names.source != dc.NBS_SOURCE:
        pytest.skip("NBS lists not available here (../shared/data)")
    _, districts = dc.district_boundaries()
    places = [Place(c, n, D, "500000") for c, (n, _) in districts.items()]
    places += [Place(t.code, t.name, S, t.district_code) for t in names.townships]
    places += [Place(v.code, v.name, C, v.township_code) for v in names.villages]
    loc = AddressLocator(places)
    # 兴隆镇: 渝北区, 南川区, 奉节县, 酉阳县
    assert loc.locate("兴隆镇") is None
    m = loc.locate("南川区兴隆镇")
    assert m is not None and m.district_code == "500119" and m.street_code is not None
    assert m.street_code.startswith("500119")
    m = loc.locate("万州区东方广场社区")
    assert _codes(m) == ("500101", "500101001", "500101001001")
    texts = [f"{p.name}附近{q.name}路12号噪音扰民" for p, q in zip(places[::7], places[3::7], strict=False)]
    t0 = time.perf_counter()
    for text in texts:
        loc.locate(text)
    rate = len(texts) / (time.perf_counter() - t0)
    assert rate > 3000, f"{rate:.0f} texts/s"
