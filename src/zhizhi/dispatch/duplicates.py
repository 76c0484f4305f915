"""Duplicate reports (重复反映): the same problem reported again while its case is open.

Two reports are of the same problem when they are close in place (the same grid, or within
`max_distance_m`), close in time (the new one within `window_hours` of the open case) and close in
text (cosine of the sets of character bigrams ≥ `min_similarity`, after the same cleaning as the
classifier: masked place codes, boilerplate and digits removed). Sets, not counts: with counts the
frequent bigrams of any complaint letter (我们、没有、问题) make unrelated long letters look alike;
measured on the corpus in bench/dispatch.py. Pure functions; the service layer loads the
candidates and links the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from zhizhi.dispatch.text import clean_raw


@dataclass(frozen=True)
class DuplicateRules:
    window_hours: float = 72.0
    max_distance_m: float = 300.0
    min_similarity: float = 0.5


@dataclass(frozen=True)
class Candidate:
    case_id: int
    text: str
    reported_at: datetime
    grid: str | None
    lon: float | None
    lat: float | None
    category_code: str | None = None


@dataclass(frozen=True)
class Match:
    case_id: int
    similarity: float
    distance_m: float | None
    same_grid: bool


def bigrams(text: str) -> frozenset[str]:
    s = "".join(clean_raw(text).split())
    return frozenset(s[i:i + 2] for i in range(len(s) - 1))


def cosine(a: frozenset[str], b: frozenset[str]) -> float:
    """Cosine of two sets: shared / sqrt(|a| × |b|)."""
    if not a or not b:
        return 0.0
    return len(a & b) / math.sqrt(len(a) * len(b))


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance (haversine) in metres."""
    r = 6_371_000.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(h))


def find_duplicate(text: str, reported_at: datetime, grid: str | None, lon: float | None, lat: float | None,
                   candidates: list[Candidate], rules: DuplicateRules, category: str | None = None) -> Match | None:
    """The most similar open case that passes all three tests, or None.

    When both reports already have a category, a different 大类 (first three characters of the
    code) means a different problem, however alike the words.
    """
    mine = bigrams(text)
    best: Match | None = None
    for c in candidates:
        if category and c.category_code and category[:3] != c.category_code[:3]:
            continue
        if abs(reported_at - c.reported_at) > timedelta(hours=rules.window_hours):
            continue
        same_grid = grid is not None and grid == c.grid
        dist = None
        if lon is not None and lat is not None and c.lon is not None and c.lat is not None:
            dist = distance_m(lon, lat, c.lon, c.lat)
        if not same_grid and (dist is None or dist > rules.max_distance_m):
            continue
        sim = cosine(mine, bigrams(c.text))
        if sim >= rules.min_similarity and (best is None or sim > best.similarity):
            best = Match(c.case_id, round(sim, 4), None if dist is None else round(dist, 1), same_grid)
    return best
