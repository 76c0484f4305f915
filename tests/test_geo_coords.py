"""Coordinate conversions: round trips, the size of the offset, and array/scalar agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zhizhi.geo import coords
from zhizhi.geo.coords import (
    Crs,
    bd09_to_gcj02,
    bd09_to_wgs84,
    from_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    to_wgs84,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)

# 解放碑, Chongqing (WGS-84, approximately).
JIEFANGBEI = (106.5774, 29.5573)


def _metres(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    dx = (lon2 - lon1) * 111_320.0 * math.cos(math.radians((lat1 + lat2) / 2))
    dy = (lat2 - lat1) * 110_574.0
    return math.hypot(dx, dy)


@pytest.fixture
def china_points() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.uniform(73.0, 135.0, 50_000), rng.uniform(18.0, 53.0, 50_000)


def test_offset_in_chongqing_is_a_few_hundred_metres() -> None:
    g = wgs84_to_gcj02(*JIEFANGBEI)
    d = _metres(*JIEFANGBEI, *g)
    assert 300 < d < 700
    b = wgs84_to_bd09(*JIEFANGBEI)
    assert 700 < _metres(*JIEFANGBEI, *b) < 1500


def test_scalars_in_scalars_out() -> None:
    lon, lat = wgs84_to_gcj02(*JIEFANGBEI)
    assert isinstance(lon, float) and isinstance(lat, float)


def test_gcj_round_trip_is_exact_to_1e7(china_points: tuple[np.ndarray, np.ndarray]) -> None:
    lon, lat = china_points
    back = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    assert np.max(np.abs(back[0] - lon)) < 1e-7
    assert np.max(np.abs(back[1] - lat)) < 1e-7


def test_bd_round_trips(china_points: tuple[np.ndarray, np.ndarray]) -> None:
    lon, lat = china_points
    g = bd09_to_gcj02(*gcj02_to_bd09(lon, lat))
    assert np.max(np.abs(g[0] - lon)) < 1e-7 and np.max(np.abs(g[1] - lat)) < 1e-7
    w = bd09_to_wgs84(*wgs84_to_bd09(lon, lat))
    assert np.max(np.abs(w[0] - lon)) < 1e-6 and np.max(np.abs(w[1] - lat)) < 1e-6


def test_inverse_beats_the_one_step_approximation() -> None:
    """The naive inverse (subtract the forward offset at the GCJ point) is off by metres-ish."""
    g_lon, g_lat = wgs84_to_gcj02(*JIEFANGBEI)
    w = gcj02_to_wgs84(g_lon, g_lat)
    assert _metres(*w, *JIEFANGBEI) < 0.01
    naive = (2 * g_lon - wgs84_to_gcj02(g_lon, g_lat)[0], 2 * g_lat - wgs84_to_gcj02(g_lon, g_lat)[1])
    assert _metres(*naive, *JIEFANGBEI) > _metres(*w, *JIEFANGBEI)


def test_outside_china_passes_through() -> None:
    assert wgs84_to_gcj02(2.35, 48.85) == (2.35, 48.85)
    assert gcj02_to_wgs84(-0.12, 51.5) == (-0.12, 51.5)
    assert bool(coords.out_of_china(2.35, 48.85))
    assert not bool(coords.out_of_china(*JIEFANGBEI))


def test_vectorised_equals_scalar(china_points: tuple[np.ndarray, np.ndarray]) -> None:
    lon, lat = china_points[0][:50], china_points[1][:50]
    for fn in (wgs84_to_gcj02, gcj02_to_wgs84, gcj02_to_bd09, bd09_to_gcj02, wgs84_to_bd09, bd09_to_wgs84):
        vx, vy = fn(lon, lat)
        for i in range(len(lon)):
            sx, sy = fn(float(lon[i]), float(lat[i]))
            assert abs(vx[i] - sx) < 1e-12 and abs(vy[i] - sy) < 1e-12, fn.__name__


def test_broadcast_and_shape() -> None:
    lon = np.full((3, 4), JIEFANGBEI[0])
    x, y = wgs84_to_gcj02(lon, JIEFANGBEI[1])
    assert x.shape == (3, 4) and y.shape == (3, 4)


@pytest.mark.parametrize("crs", ["wgs84", "gcj02", "bd09", Crs.GCJ02, "GCJ-02", "BD_09"])
def test_to_and_from_wgs84(crs: str) -> None:
    p = from_wgs84(*JIEFANGBEI, crs)
    back = to_wgs84(*p, crs)
    assert _metres(*back, *JIEFANGBEI) < 0.01


def test_unknown_crs_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown coordinate system 'epsg:3857'"):
        to_wgs84(1.0, 2.0, "epsg:3857")
    with pytest.raises(ValueError, match="wgs84"):
        from_wgs84(1.0, 2.0, "mars")
