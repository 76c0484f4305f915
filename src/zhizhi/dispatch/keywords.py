"""A keyword matcher over the catalogue's category keywords.

This is the baseline classifier the foundation ships so hotline tickets without
a category can still be routed; the statistical classifier (issue: smart
dispatch) replaces it behind the same `suggest` interface. Its confidence is
deliberately modest so that a real dispatcher reviews what it is unsure of.
"""

from __future__ import annotations

from dataclasses import dataclass

from zhizhi.domain.catalogue import Catalogue


@dataclass(frozen=True)
class Suggestion:
    category_code: str
    confidence: float
    matched: tuple[str, ...]


class KeywordClassifier:
    """Scores each leaf category by the keywords (and its own name) found in the text.

    Every term found anywhere in the text counts (overlaps included), weighted by length.
    """

    def __init__(self, catalogue: Catalogue) -> None:
        self._codes: dict[str, list[str]] = {}
        for cat in catalogue.leaves():
            terms = {k for k in cat.keywords if k} | {cat.name_zh}
            for term in terms:
                if len(term) >= 2:
                    self._codes.setdefault(term, []).append(cat.code)
        # Terms by their first character: a text is scanned once, and only at positions where
        # some term can start are candidates compared (a regex alternation of hundreds of terms
        # is several times slower on long complaint texts).
        self._by_first: dict[str, tuple[str, ...]] = {}
        for term in sorted(self._codes, key=lambda t: (-len(t), t)):
            self._by_first[term[0]] = (*self._by_first.get(term[0], ()), term)

    def _terms_in(self, text: str) -> set[str]:
        found: set[str] = set()
        by_first = self._by_first
        for i, ch in enumerate(text):
            candidates = by_first.get(ch)
            if candidates:
                for term in candidates:
                    if text.startswith(term, i):
                        found.add(term)
        return found

    def suggest(self, text: str, top: int = 3) -> list[Suggestion]:
        scores: dict[str, float] = {}
        matched: dict[str, list[str]] = {}
        for term in self._terms_in(text):
            for code in self._codes[term]:
                scores[code] = scores.get(code, 0.0) + len(term)
                matched.setdefault(code, []).append(term)
        if not scores:
            return []
        total = sum(scores.values())
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return [Suggestion(code, round(s / total * min(1.0, s / 6.0), 3), tuple(sorted(matched[code])))
                for code, s in ranked]
