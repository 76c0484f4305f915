"""Conversions between the three coordinate systems met in China.

* WGS-84 — GPS receivers, OpenStreetMap, and the system zhizhi stores everything in.
* GCJ-02 — the "Mars" system required for maps published in China (Amap/高德, Tencent,
  most government basemaps): WGS-84 plus a deliberate, smooth offset of a few hundred metres.
* BD-09 — Baidu's system: GCJ-02 further transformed.

The forward formulas are the widely published ones (the offset is defined by them, so they are
exact by construction). The inverses have no closed form, so we solve them by fixed-point
iteration: the offset's Jacobian is close to the identity (its derivatives are ~1e-3), so each
step gains two to three digits and a handful of steps reaches machine precision. The common
"subtract the offset once" shortcut is off by up to ~2 m, which matters at grid borders.

All functions accept scalars or numpy arrays (broadcast together) and return the same kind.
Points outside China's rough bounding box are passed through unchanged by the GCJ-02 step,
as the published algorithm does.
"""

from __future__ import annotations

from enum import StrEnum
from typing import overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Crs",
    "bd09_to_gcj02",
    "bd09_to_wgs84",
    "from_wgs84",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "out_of_china",
    "to_wgs84",
    "wgs84_to_bd09",
    "wgs84_to_gcj02",
]

# Krasovsky 1940 ellipsoid, which the GCJ-02 formulas are written against.
_A = 6378245.0
_EE = 0.00669342162296594323
_X_PI = np.pi * 3000.0 / 180.0

# Iteration stops when the largest correction is below this (degrees); well under the 1e-7
# required, and still far above float64 resolution at |lon| ~ 100 (≈1.4e-14).
_INVERSE_TOL = 1e-11
_INVERSE_MAX_ITER = 30

Float = float | NDArray[np.float64]
Arr = NDArray[np.float64]


class Crs(StrEnum):
    """Coordinate reference systems zhizhi accepts at its edges."""

    WGS84 = "wgs84"
    GCJ02 = "gcj02"
    BD09 = "bd09"

    @classmethod
    def parse(cls, value: str | Crs) -> Crs:
        """Accept the enum or its case-insensitive name (with or without '-'/'_')."""
        if isinstance(value, Crs):
            return value
        text = str(value).strip().lower().replace("-", "").replace("_", "")
        for crs in cls:
            if text == crs.value:
                return crs
        raise ValueError(f"unknown coordinate system {value!r}; use one of {[c.value for c in cls]}")


def _as_arrays(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64], bool]:
    """Broadcast inputs to float64 arrays and remember whether the caller passed scalars."""
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a = np.asarray(lat, dtype=np.float64)
    scalar = lon_a.ndim == 0 and lat_a.ndim == 0
    lon_a, lat_a = np.broadcast_arrays(lon_a, lat_a)
    return lon_a, lat_a, scalar


def _out(lon: NDArray[np.float64], lat: NDArray[np.float64], scalar: bool) -> tuple[Float, Float]:
    if scalar:
        return float(lon), float(lat)
    return lon, lat


def out_of_china(lon: ArrayLike, lat: ArrayLike) -> NDArray[np.bool_]:
    """The published algorithm's crude box: outside it, GCJ-02 equals WGS-84."""
    lon_a, lat_a, _ = _as_arrays(lon, lat)
    return (lon_a < 72.004) | (lon_a > 137.8347) | (lat_a < 0.8293) | (lat_a > 55.8271)


def _gcj_delta(lon: Arr, lat: Arr) -> tuple[Arr, Arr]:
    """GCJ-02 minus WGS-84 at a WGS-84 point, in degrees (zero outside China)."""
    x = lon - 105.0
    y = lat - 35.0
    sqrt_abs_x = np.sqrt(np.abs(x))
    common = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0

    d_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x
    d_lat = d_lat + common
    d_lat = d_lat + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    d_lat = d_lat + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0

    d_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x
    d_lon = d_lon + common
    d_lon = d_lon + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    d_lon = d_lon + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0

    rad_lat = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    d_lon = (d_lon * 180.0) / (_A / sqrt_magic * np.cos(rad_lat) * np.pi)

    outside = out_of_china(lon, lat)
    d_lon = np.where(outside, 0.0, d_lon)
    d_lat = np.where(outside, 0.0, d_lat)
    return d_lon, d_lat


def _gcj_forward(lon: Arr, lat: Arr) -> tuple[Arr, Arr]:
    d_lon, d_lat = _gcj_delta(lon, lat)
    return lon + d_lon, lat + d_lat


def _bd_forward(lon: Arr, lat: Arr) -> tuple[Arr, Arr]:
    z = np.sqrt(lon * lon + lat * lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def _bd_inverse_approx(lon: Arr, lat: Arr) -> tuple[Arr, Arr]:
    x = lon - 0.0065
    y = lat - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta), z * np.sin(theta)


def _invert(forward, target_lon, target_lat, start_lon, start_lat):  # type: ignore[no-untyped-def]
    """Solve forward(p) = target by p ← p − (forward(p) − target).

    Converges because forward is the identity plus a slowly varying offset (contraction
    factor ~1e-3). Each point stops moving once its own residual is below tolerance.
    """
    lon, lat = start_lon.copy(), start_lat.copy()
    for _ in range(_INVERSE_MAX_ITER):
        f_lon, f_lat = forward(lon, lat)
        r_lon = f_lon - target_lon
        r_lat = f_lat - target_lat
        lon = lon - r_lon
        lat = lat - r_lat
        worst = max(np.max(np.abs(r_lon), initial=0.0), np.max(np.abs(r_lat), initial=0.0))
        if not np.isfinite(worst) or worst < _INVERSE_TOL:
            break
    return lon, lat


@overload
def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]: ...
@overload
def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]: ...
def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]:
    """WGS-84 → GCJ-02 (the published forward formula; identity outside China)."""
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    return _out(*_gcj_forward(lon_a, lat_a), scalar)


@overload
def gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]: ...
@overload
def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]: ...
def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]:
    """GCJ-02 → WGS-84 by fixed-point iteration (residual < 1e-11 degree)."""
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    d_lon, d_lat = _gcj_delta(lon_a, lat_a)
    res = _invert(_gcj_forward, lon_a, lat_a, lon_a - d_lon, lat_a - d_lat)
    return _out(*res, scalar)


@overload
def gcj02_to_bd09(lon: float, lat: float) -> tuple[float, float]: ...
@overload
def gcj02_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]: ...
def gcj02_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]:
    """GCJ-02 → BD-09 (Baidu's published forward formula)."""
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    return _out(*_bd_forward(lon_a, lat_a), scalar)


@overload
def bd09_to_gcj02(lon: float, lat: float) -> tuple[float, float]: ...
@overload
def bd09_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]: ...
def bd09_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]:
    """BD-09 → GCJ-02: the published inverse (off by ~1e-6°), refined by iteration."""
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    start = _bd_inverse_approx(lon_a, lat_a)
    return _out(*_invert(_bd_forward, lon_a, lat_a, *start), scalar)


@overload
def wgs84_to_bd09(lon: float, lat: float) -> tuple[float, float]: ...
@overload
def wgs84_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]: ...
def wgs84_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]:
    """WGS-84 → BD-09 through GCJ-02."""
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    return _out(*_bd_forward(*_gcj_forward(lon_a, lat_a)), scalar)


@overload
def bd09_to_wgs84(lon: float, lat: float) -> tuple[float, float]: ...
@overload
def bd09_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]: ...
def bd09_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[Float, Float]:
    """BD-09 → WGS-84 through GCJ-02 (both steps iterated)."""
    g_lon, g_lat = bd09_to_gcj02(lon, lat)
    res = gcj02_to_wgs84(g_lon, g_lat)
    return res


def to_wgs84(lon: ArrayLike, lat: ArrayLike, crs: str | Crs) -> tuple[Float, Float]:
    """Convert from `crs` ("wgs84", "gcj02" or "bd09") to WGS-84; ValueError for others."""
    source = Crs.parse(crs)
    if source is Crs.WGS84:
        lon_a, lat_a, scalar = _as_arrays(lon, lat)
        return _out(lon_a.copy(), lat_a.copy(), scalar)
    if source is Crs.GCJ02:
        return gcj02_to_wgs84(lon, lat)
    return bd09_to_wgs84(lon, lat)


def from_wgs84(lon: ArrayLike, lat: ArrayLike, crs: str | Crs) -> tuple[Float, Float]:
    """Convert from WGS-84 to `crs` ("wgs84", "gcj02" or "bd09"); ValueError for others."""
    target = Crs.parse(crs)
    if target is Crs.WGS84:
        lon_a, lat_a, scalar = _as_arrays(lon, lat)
        return _out(lon_a.copy(), lat_a.copy(), scalar)
    if target is Crs.GCJ02:
        return wgs84_to_gcj02(lon, lat)
    return wgs84_to_bd09(lon, lat)
