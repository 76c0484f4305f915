"""Locate a case from Chinese address text: which district, street and community it names.

Most 12345 hotline tickets carry no coordinates, only text such as
"渝北区人和街道星光社区天湖美镇3栋" or "投诉人称观音桥步行街噪音扰民". The locator finds
the place names in the text and picks the district → street → community chain that the names
agree on best.

How it works, and why:

* The index holds, for every district, street and community, its full name and the forms
  people actually write: without the generic suffix (渝中区 → 渝中, 人和街道 → 人和,
  星光社区 → 星光), ethnic autonomous counties shortened (石柱土家族自治县 → 石柱县, 石柱).
  Shortened forms are weaker evidence than full names (渝中 is also in 渝中路…).
* The scan is a leftmost-longest match over a dict keyed by each name's first two characters
  (every name has at least two), so a text costs one dict lookup per character plus a
  ``startswith`` per candidate: tens of thousands of texts per second in pure Python.
* Each matched name proposes chains (its district, its street, itself); a chain scores the
  evidence it agrees with. Township and village names repeat across Chongqing (双龙镇 is in
  four counties, 新华村 in dozens of towns), so a name alone may propose several chains: the
  district or street named in the same text breaks the tie, else the answer is cut back to
  what all the best chains share (the district, or nothing → None, for the manual queue).
* A street that is not in the district also named is a conflict: the more specific name
  wins, with the confidence halved and the conflict spelled out in ``explanation``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from zhizhi.domain.places import Level, Place

__all__ = ["AddressLocator", "AddressMatch", "name_variants"]

# Evidence weight of a name form. Full official names are certain; shortened forms are also
# ordinary words or road names (人和路, 渝中路), so they count for less.
_FULL = 1.0
_WEIGHT_ALIAS = {Level.DISTRICT: 0.85, Level.STREET: 0.7, Level.COMMUNITY: 0.6}
# Base confidence when a level is the deepest one named, alone; each other agreeing level adds
# _SUPPORT. A district alone is rarely wrong; a community name alone is often a namesake.
_BASE = {Level.DISTRICT: 0.9, Level.STREET: 0.8, Level.COMMUNITY: 0.75}
_SUPPORT = 0.1
_CONFLICT_FACTOR = 0.5
_AMBIGUOUS_FACTOR = 0.7
# How much a match at each level contributes to a chain's score: deeper names pin more.
_LEVEL_SCORE = {Level.DISTRICT: 1.0, Level.STREET: 1.5, Level.COMMUNITY: 2.0}

_SUFFIXES: dict[Level, tuple[str, ...]] = {
    Level.DISTRICT: ("自治县", "区", "县"),
    Level.STREET: ("街道办事处", "街道", "镇", "乡"),
    Level.COMMUNITY: (
        "社区居委会",
        "社区居民委员会",
        "居民委员会",
        "村民委员会",
        "居委会",
        "村委会",
        "社区",
        "村",
    ),
}
# 石柱土家族自治县, 酉阳土家族苗族自治县, 太和土家族乡: stem + one or more "X族" + suffix.
_ETHNIC = re.compile(r"^(.{2,}?)((?:[^族]{1,2}族)+)(自治县|乡)$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class AddressMatch:
    """Where the text points: codes down to the deepest level it resolved (others None)."""

    district_code: str | None
    street_code: str | None
    community_code: str | None
    confidence: float
    matched: list[str] = field(default_factory=list)
    explanation: str = ""

    @property
    def finest(self) -> str | None:
        """The most specific code found."""
        return self.community_code or self.street_code or self.district_code


def name_variants(name: str, level: Level) -> list[tuple[str, float]]:
    """The forms a place name is written in, each with its evidence weight.

    The full name first (weight 1), then shortened forms at the level's alias weight. A form
    shorter than two characters is dropped: one character is never a place.
    """
    out: dict[str, float] = {name: _FULL}
    alias_w = _WEIGHT_ALIAS.get(level, 0.5)
    m = _ETHNIC.match(name)
    if m and level in (Level.DISTRICT, Level.STREET):
        stem, kind = m.group(1), m.group(3)
        short = stem + ("县" if kind == "自治县" else "乡")
        out.setdefault(short, 0.9 if level is Level.DISTRICT else alias_w)
        out.setdefault(stem, alias_w)
    for suffix in _SUFFIXES.get(level, ()):
        if name.endswith(suffix) and len(name) - len(suffix) >= 2:
            out.setdefault(name[: -len(suffix)], alias_w)
            break
    if level is Level.COMMUNITY and name.endswith("社区"):  # written with its committee
        out.setdefault(name + "居委会", _FULL)
    return [(k, v) for k, v in out.items() if len(k) >= 2]


@dataclass(frozen=True, slots=True)
class _Entry:
    code: str
    level: Level
    weight: float


@dataclass(slots=True)
class _Chain:
    district: str | None
    street: str | None
    community: str | None
    score: float = 0.0
    strong: bool = False

    def codes(self) -> tuple[str | None, str | None, str | None]:
        return self.district, self.street, self.community


class AddressLocator:
    """Resolve address text to district / street / community codes of a place hierarchy.

    Build it once from the hierarchy's places (any order; cities and grids are ignored) and
    call :meth:`locate` per text. `aliases` adds extra names, ``{"解放碑": "500103001"}``,
    counted at the alias weight of the place's level.
    """

    def __init__(self, places: Iterable[Place], aliases: Mapping[str, str] | None = None) -> None:
        self._places: dict[str, Place] = {}
        self._by_prefix: dict[str, list[tuple[str, list[_Entry]]]] = {}
        patterns: dict[str, dict[str, _Entry]] = {}
        for place in places:
            if place.level not in (Level.DISTRICT, Level.STREET, Level.COMMUNITY):
                continue
            self._places[place.code] = place
            for form, weight in name_variants(place.name, place.level):
                self._add(patterns, form, _Entry(place.code, place.level, weight))
        for form, code in (aliases or {}).items():
            place = self._places.get(code)
            if place is None:
                raise ValueError(f"alias {form!r} names unknown place {code!r}")
            self._add(patterns, form, _Entry(code, place.level, _WEIGHT_ALIAS[place.level]))
        for form, entries in patterns.items():
            self._by_prefix.setdefault(form[:2], []).append((form, list(entries.values())))
        for forms in self._by_prefix.values():
            forms.sort(key=lambda fe: -len(fe[0]))  # longest first

    @staticmethod
    def _add(patterns: dict[str, dict[str, _Entry]], form: str, entry: _Entry) -> None:
        if len(form) < 2:
            return
        slot = patterns.setdefault(form, {})
        old = slot.get(entry.code)
        if old is None or old.weight < entry.weight:
            slot[entry.code] = entry

    def __len__(self) -> int:
        return len(self._places)

    # ------------------------------------------------------------------ scan

    def scan(self, text: str) -> list[tuple[str, list[_Entry]]]:
        """Leftmost-longest, non-overlapping name matches in the text."""
        text = _normalise(text)
        found: list[tuple[str, list[_Entry]]] = []
        i, n = 0, len(text)
        by_prefix = self._by_prefix
        while i < n - 1:
            forms = by_prefix.get(text[i : i + 2])
            if forms:
                for form, entries in forms:
                    if text.startswith(form, i):
                        found.append((form, entries))
                        i += len(form)
                        break
                else:
                    i += 1
            else:
                i += 1
        return found

    # ------------------------------------------------------------------ resolve

    def _parents(self, code: str) -> tuple[str | None, str | None, str | None]:
        place = self._places[code]
        if place.level is Level.DISTRICT:
            return code, None, None
        if place.level is Level.STREET:
            return place.parent_code, code, None
        street = self._places.get(place.parent_code or "")
        return (street.parent_code if street else None), place.parent_code, code

    def _is_strong(self, code: str, evidence: Mapping[str, tuple[float, str]]) -> bool:
        """Full names, and any district form, are strong; shortened lower names are not."""
        return evidence[code][0] >= _FULL or self._places[code].level is Level.DISTRICT

    def locate(self, text: str) -> AddressMatch | None:
        """The district/street/community the text names, or None when it cannot tell."""
        hits = self.scan(text)
        if not hits:
            return None
        # Best evidence per place, and what text named it.
        evidence: dict[str, tuple[float, str]] = {}
        for form, entries in hits:
            for e in entries:
                if e.code not in evidence or evidence[e.code][0] < e.weight:
                    evidence[e.code] = (e.weight, form)
        named = {lv: {c for c in evidence if self._places[c].level is lv} for lv in _LEVEL_SCORE}

        chains: dict[tuple[str | None, str | None, str | None], _Chain] = {}
        for code in evidence:
            d, s, c = self._parents(code)
            key = (d, s, c)
            if key in chains:
                continue
            chain = _Chain(d, s, c)
            for lv, cc in zip(_LEVEL_SCORE, (d, s, c), strict=True):
                if cc is not None and cc in evidence:
                    chain.score += _LEVEL_SCORE[lv] * evidence[cc][0]
            chains[key] = chain
        # A chain resting only on shortened street/community names (人和, 星光: also road and
        # estate names) never beats one with a full name or a district behind it.
        for chain in chains.values():
            chain.strong = any(self._is_strong(code, evidence) for code in chain.codes() if code in evidence)
        ranked = sorted(chains.values(), key=lambda ch: (not ch.strong, -ch.score))
        top = [ch for ch in ranked if ch.strong == ranked[0].strong and ch.score >= ranked[0].score - 1e-9]

        notes: list[str] = []
        factor = 1.0
        if len(top) == 1:
            best = top[0]
            d, s, c = best.codes()
        else:
            # Tie: keep what every best chain agrees on.
            d = top[0].district if all(ch.district == top[0].district for ch in top) else None
            s = top[0].street if d and all(ch.street == top[0].street for ch in top) else None
            c = top[0].community if s and all(ch.community == top[0].community for ch in top) else None
            names = "、".join(
                sorted({evidence[code][1] for ch in top for code in ch.codes() if code in evidence})
            )
            factor *= _AMBIGUOUS_FACTOR
            if d is None:
                # Fall back to a district that the text names outright, if any.
                fallback = [ch for ch in ranked if ch.street is None and ch.district in named[Level.DISTRICT]]
                if not fallback:
                    return None
                d = fallback[0].district
                notes.append(f"{names} 在多个区县重名，且都不在所写区县内，只定位到区县")
            else:
                notes.append(f"{names} 在{self._places[d].name}内重名，只定位到上一级")

        # A district or street named (strongly) in the text that the answer does not lie in.
        chain_codes = (d, s, c)
        deepest_code = c or s or d
        conflicts: list[str] = []
        for lv, code in zip((Level.DISTRICT, Level.STREET), (d, s), strict=True):
            if code is None or code == deepest_code:
                continue
            own_form = evidence[code][1] if code in evidence else None
            for other in sorted(named[lv] - {code}):
                # A namesake matched by the very same words is ambiguity, not a conflict.
                if self._is_strong(other, evidence) and evidence[other][1] != own_form:
                    conflicts.append(
                        f"{self._places[deepest_code or ''].name}属于{self._places[code].name}，"
                        f"不属于文中的{self._places[other].name}"
                    )
        if conflicts:
            factor *= _CONFLICT_FACTOR
            notes.extend(conflicts)

        used = [code for code in chain_codes if code is not None and code in evidence]
        support = used or sorted({x for ch in top for x in ch.codes() if x is not None and x in evidence})
        if deepest_code is None or not support:
            return None
        if not any(self._is_strong(code, evidence) for code in support):
            # Only shortened street/community names: too weak unless one long, unique street name.
            only = support[0]
            if len(support) > 1 or len(evidence[only][1]) < 3 or self._places[only].level is not Level.STREET:
                return None
        deepest_level = self._places[deepest_code].level
        weight = min(evidence[code][0] for code in support)
        confidence = min(1.0, _BASE[deepest_level] + _SUPPORT * (len(used) - 1 if used else 0))
        confidence *= weight * factor
        used = used or support
        matched = [evidence[code][1] for code in used]
        path = " › ".join(self._places[code].name for code in chain_codes if code is not None)
        explanation = f"{path}（据“{'、'.join(matched)}”）"
        if notes:
            explanation += "；" + "；".join(notes)
        return AddressMatch(d, s, c, round(confidence, 3), matched, explanation)


def _normalise(text: str) -> str:
    """Full-width to half-width and no spaces, so 'A３区' and '渝 中 区' scan like the rest."""
    return _SPACES.sub("", unicodedata.normalize("NFKC", text))
