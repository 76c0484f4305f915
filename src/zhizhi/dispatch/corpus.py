"""Labelled training data: CSV files in the three shapes the issue names, and the real Teddy corpus.

A CSV has a `label` column and either raw text (`text`, or `subject` + `text`) or pre-segmented
text (`text_segmented`). Every row becomes a `Example` holding the model's token string, so the
rest of the pipeline never needs to know which form a row came in.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zhizhi.dispatch.text import prepare

RAW_SUBSET = "teddy2020_attachment2_raw_subset_labelled.csv"
SEGMENTED = "teddy2020_attachment2_full_segmented_labelled.csv"
SAMPLE = "teddy2020_attachment2_sample_labelled.csv"
VOTES = "teddy2020_attachment3_messages_votes.csv"
REPLIES = "teddy2020_attachment4_messages_replies.csv"


class CorpusError(ValueError):
    """A training file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class Example:
    tokens: str  # prepared token string (space-separated)
    label: str
    raw: str | None = None  # the raw text when the row had it


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def raw_text(row: dict[str, str]) -> str | None:
    """Subject and body run together, as the hotline sees them; None when the row has no raw text."""
    body = (row.get("text") or "").strip()
    subject = (row.get("subject") or "").strip()
    if not body and not subject:
        return None
    return f"{subject}\n{body}" if subject else body


def load_examples(paths: Iterable[Path], label_column: str = "label") -> list[Example]:
    out: list[Example] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise CorpusError(f"训练文件不存在 / no such file: {path}")
        rows = read_rows(path)
        if not rows:
            raise CorpusError(f"{path}: 文件为空 / empty file")
        cols = set(rows[0])
        if label_column not in cols:
            raise CorpusError(f"{path}: 缺少标签列 {label_column!r} / no {label_column!r} column (has {sorted(cols)})")
        segmented = "text_segmented" in cols
        if not segmented and "text" not in cols:
            raise CorpusError(f"{path}: 需要 text、subject+text 或 text_segmented 列 / no text column")
        for row in rows:
            label = (row.get(label_column) or "").strip()
            if not label:
                continue
            if segmented:
                tokens = prepare(row["text_segmented"], segmented=True)
                out.append(Example(tokens, label))
            else:
                text = raw_text(row)
                if text is None:
                    continue
                out.append(Example(prepare(text), label, raw=text))
        if not out:
            raise CorpusError(f"{path}: 没有带标签的行 / no labelled rows (row count {len(rows)})")
    return out


def files_hash(paths: Iterable[Path]) -> str:
    """sha256 over the training files' bytes, in the order given: the model records what it learnt from."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def match_rows(queries: list[str], pool: list[str]) -> np.ndarray:
    """For each query token string, the index of the most similar pool string (cosine of word counts).

    The raw subset of the corpus is also inside the segmented file, with no shared id. Cross-
    validation must not train on the segmented twin of a raw test row, so the twins are found here.
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    vec = CountVectorizer(token_pattern=r"\S+", lowercase=False, binary=True)
    pool_m = normalize(vec.fit_transform(pool))
    q_m = normalize(vec.transform(queries))
    best = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), 512):
        sims = (q_m[start:start + 512] @ pool_m.T).toarray()
        best[start:start + 512] = sims.argmax(axis=1)
    return best


def department_examples(path: Path) -> list[Example]:
    """Messages labelled with the department named in their official reply (rows naming none are skipped)."""
    from zhizhi.dispatch.departments import extract_department

    out = []
    for row in read_rows(Path(path)):
        label = extract_department(row.get("reply") or "")
        text = raw_text(row)
        if label is not None and text:
            out.append(Example(prepare(text), label.department_code, raw=text))
    return out


def to_category_codes(examples: list[Example], catalogue: object) -> list[Example]:
    """Corpus labels by name (城乡建设) become catalogue codes (I06); unknown labels stay as they are."""
    mapping: dict[str, str] = {}
    for label in {e.label for e in examples}:
        code = label
        try:
            code = catalogue.category(label).code  # type: ignore[attr-defined]
        except Exception:
            found = catalogue.find_category(label)  # type: ignore[attr-defined]
            if found is not None:
                code = found.code
        mapping[label] = code
    return [Example(e.tokens, mapping[e.label], e.raw) for e in examples]


def real_messages(shared: Path | None, limit: int = 1000) -> list[tuple[str, str]]:
    """(subject, text) of real citizen messages without labels (attachment 3), for the demo's hotline
    tickets; empty when the shared corpus is absent. Read at run time, never copied."""
    if shared is None or not (Path(shared) / "complaints" / VOTES).is_file():
        return []
    rows = read_rows(Path(shared) / "complaints" / VOTES)[:limit]
    return [(r["subject"].strip(), r["text"].strip()[:1000]) for r in rows if r.get("subject") and r.get("text")]
