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
    """Scores each leaf category by the keywords (and its own name) found in the text."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._terms: list[tuple[str, str]] = []
        for cat in catalogue.leaves():
            terms = {k for k in cat.keywords if k} | {cat.name_zh}
            self._terms.extend((t, cat.code) for t in terms if len(t) >= 2)
        self._terms.sort(key=lambda tc: -len(tc[0]))

    def suggest(self, text: str, top: int = 3) -> list[Suggestion]:
        scores: dict[str, float] = {}
        matched: dict[str, list[str]] = {}
        for term, code in self._terms:
            if term in text:
                scores[code] = scores.get(code, 0.0) + len(term)
                matched.setdefault(code, []).append(term)
        if not scores:
            return []
        total = sum(scores.values())
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return [Suggestion(code, round(s / total * min(1.0, s / 6.0), 3), tuple(matched[code]))
                for code, s in ranked]
