"""Department labels from official replies: who handled a message, read out of the reply text.

The 2,816 replies of the corpus name the unit that answered ("A3区住建局高度重视…", "经洋湖街道
调查…", signed "C市教育局 2014年4月8日"). The rules are data (`data/dispatch/department_patterns.toml`,
which explains them); this module applies them. The result is a catalogue department code and a
level, or None when the reply names no unit ("网友：您好！留言已收悉").
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from zhizhi.domain.places import Level

_QUOTED = re.compile(r"“[^”]{0,400}”|\"[^\"]{0,400}\"|「[^」]{0,400}」|《[^》]{0,100}》")
_CITY_BEFORE = re.compile(r"(?:^|[^区县镇乡])市(?:本级)?$")
_DISTRICT_BEFORE = re.compile(r"(?:[A-Z]\d{1,3}区|[A-Z]\d{1,3}县|区|县)$")
SIGNATURE_CHARS = 60


@dataclass(frozen=True)
class DepartmentLabel:
    department_code: str
    level: Level
    matched: str
    where: str  # signature | first mention

    @property
    def label(self) -> str:
        return self.department_code


@lru_cache(maxsize=1)
def _patterns() -> tuple[list[tuple[str, re.Pattern[str]]], list[tuple[str, re.Pattern[str]]]]:
    data = tomllib.loads(resources.files("zhizhi.data.dispatch").joinpath("department_patterns.toml")
                         .read_text(encoding="utf-8"))
    functional = [(code, re.compile(rx)) for code, rx in data["functional"].items()]
    street = [(code, re.compile(rx)) for code, rx in data["street"].items()]
    return functional, street


def _level_before(text: str, start: int, code: str) -> Level:
    if code == "street_office":
        return Level.STREET
    before = text[max(0, start - 6):start]
    if _DISTRICT_BEFORE.search(before):
        return Level.DISTRICT
    if _CITY_BEFORE.search(before):
        return Level.CITY
    return Level.DISTRICT


def extract_department(reply: str) -> DepartmentLabel | None:
    """The department that handled the message, by the rules above; None when none is named."""
    if not reply:
        return None
    text = _QUOTED.sub(" ", reply)
    functional, street = _patterns()
    signature_start = max(0, len(text) - SIGNATURE_CHARS)
    for group in (functional, street):
        hits: list[tuple[int, str, str]] = []
        for code, rx in group:
            for m in rx.finditer(text):
                hits.append((m.start(), code, m.group(0)))
        if not hits:
            continue
        in_signature = [h for h in hits if h[0] >= signature_start]
        start, code, matched = max(in_signature) if in_signature else min(hits)
        where = "signature" if in_signature else "first mention"
        return DepartmentLabel(code, _level_before(text, start, code), matched, where)
    return None
