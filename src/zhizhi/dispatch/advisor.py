"""Suggestions for a case: category, department and handling level, with a confidence and the reasons.

Two sources of knowledge are combined, because neither covers the whole catalogue:

- the trained model knows the categories it was trained on (on the real corpus: the seven
  first-level classes of citizen messages, catalogue 大类 I06–I12, and whatever dispatchers'
  decisions added through `train --from-db`); its probabilities are calibrated, so its
  per-category thresholds decide auto-dispatch;
- the keyword baseline knows every 小类 of the catalogue (井盖、路灯、占道经营 …), including the
  GB/T 30428 部件 and 事件 the corpus never mentions; it refines a model class to a 小类 inside it,
  and speaks alone for a category outside the model's reach.

The department and level come from the responsibility table for the category and place, then the
level rules (琐事不出网格 …) adjust the level; a department model trained on official replies, when
present, adds its own opinion as a hint for the dispatcher.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhizhi.dispatch.keywords import KeywordClassifier
from zhizhi.dispatch.levels import LevelDecision, LevelRules
from zhizhi.dispatch.model import ModelError, TextModel
from zhizhi.domain.catalogue import Catalogue
from zhizhi.domain.places import Level

log = logging.getLogger(__name__)

#: The keyword baseline's confidence needed to speak for a category the model does not know.
KEYWORD_MIN_CONFIDENCE = 0.3


@dataclass(frozen=True)
class Suggestion:
    category_code: str
    category_name: str
    department_code: str
    department_name: str
    level: str
    confidence: float
    source: str  # model | keywords
    auto: bool  # the confidence reaches this category's auto-dispatch threshold
    threshold: float
    level_reasons: tuple[str, ...] = ()
    matched: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"category_code": self.category_code, "category_name": self.category_name,
                "department_code": self.department_code, "department_name": self.department_name,
                "level": self.level, "confidence": round(self.confidence, 4), "source": self.source,
                "auto": self.auto, "threshold": round(self.threshold, 4), "level_reasons": list(self.level_reasons),
                "matched": list(self.matched)}


@dataclass
class CaseFacts:
    """What the advisor looks at besides the text."""

    title: str
    description: str
    lineage: list[str] = field(default_factory=list)  # place codes city → grid
    linked_reports: int = 0


@dataclass
class Advisor:
    catalogue: Catalogue
    keywords: KeywordClassifier
    rules: LevelRules
    model: TextModel | None = None
    department_model: TextModel | None = None
    _label_codes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._label_codes = {}
        if self.model is not None:
            for label in self.model.labels:
                code = self._code_of(label)
                if code is None:
                    log.warning("model label %r matches no catalogue category; it will not be suggested", label)
                else:
                    self._label_codes[label] = code

    @property
    def model_version(self) -> str | None:
        return self.model.version if self.model is not None else None

    def _code_of(self, label: str) -> str | None:
        try:
            return self.catalogue.category(label).code
        except Exception:
            found = self.catalogue.find_category(label)
            return found.code if found is not None else None

    # ------------------------------------------------------------------------------------
    def suggest_many(self, facts: list[CaseFacts], top: int = 3) -> list[list[Suggestion]]:
        texts = [f"{f.title}\n{f.description}" for f in facts]
        model_top: list[list[tuple[str, float]]] = [[] for _ in facts]
        if self.model is not None and self._label_codes:
            model_top = self.model.predict_top([self.model.prepare(t) for t in texts], k=top)
        return [self._combine(f, t, m, top) for f, t, m in zip(facts, texts, model_top, strict=True)]

    def suggest(self, fact: CaseFacts, top: int = 3) -> list[Suggestion]:
        return self.suggest_many([fact], top)[0]

    def _combine(self, fact: CaseFacts, text: str, model_top: list[tuple[str, float]], top: int) -> list[Suggestion]:
        kw = self.keywords.suggest(text, top=10)
        out: list[Suggestion] = []
        seen: set[str] = set()
        model_codes = set(self._label_codes.values())
        # A confident keyword match in a category the model cannot know speaks first, unless the model
        # is sure of its own answer ("其他" categories never lead: they match the most generic words).
        model_sure = bool(model_top) and self.model is not None and \
            model_top[0][1] >= self.model.threshold(model_top[0][0])
        if kw and kw[0].confidence >= KEYWORD_MIN_CONFIDENCE and not model_sure \
                and self._major(kw[0].category_code) not in model_codes \
                and not self._major(kw[0].category_code).endswith("99"):
            out.append(self._make(fact, kw[0].category_code, kw[0].confidence, "keywords", None, kw[0].matched))
            seen.add(kw[0].category_code)
        for label, p in model_top:
            major = self._label_codes.get(label)
            if major is None:
                continue
            refined = next((k for k in kw if self._major(k.category_code) == major), None)
            code = refined.category_code if refined is not None else major
            if code in seen:
                continue
            seen.add(code)
            out.append(self._make(fact, code, p, "model", self.model.threshold(label) if self.model else 1.01,
                                  refined.matched if refined else ()))
        if not model_top:
            for k in kw:
                if k.category_code not in seen and k.confidence > 0:
                    seen.add(k.category_code)
                    out.append(self._make(fact, k.category_code, k.confidence, "keywords", None, k.matched))
        return out[:top]

    def _major(self, code: str) -> str:
        cat = self.catalogue.category(code)
        return cat.parent_code or cat.code

    def _make(self, fact: CaseFacts, code: str, confidence: float, source: str, threshold: float | None,
              matched: tuple[str, ...]) -> Suggestion:
        cat = self.catalogue.category(code)
        decision = self.decide_level(code, fact)
        dept = self.catalogue.department(decision.department_code)
        # Keyword matches are never dispatched without a person: their score is not a probability.
        thr = threshold if threshold is not None else 1.01
        return Suggestion(code, cat.name_zh, dept.code, dept.name_zh, decision.level.name.lower(),
                          float(confidence), source, confidence >= thr, thr, tuple(decision.reasons), tuple(matched))

    def decide_level(self, category_code: str, fact: CaseFacts) -> LevelDecision:
        resp = self.catalogue.responsible(category_code, fact.lineage)
        cat = self.catalogue.category(category_code)
        return self.rules.decide(
            category_code=category_code, category_name=cat.name_zh, parent_code=cat.parent_code,
            severity=cat.severity.name.lower() if cat.severity is not None else None,
            text=f"{fact.title}\n{fact.description}", linked_reports=fact.linked_reports,
            default_department=resp.department_code, default_level=resp.level,
            department_levels={d.code: d.levels for d in self.catalogue.departments()},
        )

    def suggest_department(self, text: str, top: int = 3) -> list[tuple[str, float]]:
        """The department model's opinion (trained on official replies), when one is loaded."""
        if self.department_model is None:
            return []
        return self.department_model.predict_top([self.department_model.prepare(text)], k=top)[0]


def model_paths(models_dir: Path, kind: str = "category") -> list[Path]:
    """Saved models of one kind, newest first (versions sort by time)."""
    if not models_dir.is_dir():
        return []
    return sorted(models_dir.glob(f"dispatch-{kind}-*.npz"), reverse=True)


def load_latest(models_dir: Path, kind: str = "category") -> TextModel | None:
    """The newest model of a kind, or None when there is none. A bad newest file raises ModelError."""
    paths = model_paths(models_dir, kind)
    if not paths:
        return None
    return TextModel.load(paths[0])


__all__ = ["Advisor", "CaseFacts", "Level", "ModelError", "Suggestion", "load_latest", "model_paths"]
