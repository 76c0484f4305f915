"""Training with honest cross-validation, calibration and threshold choice; evaluation reports.

Cross-validation folds are drawn over the rows that have raw text, and those rows are scored on
their raw text — production sees raw text. Pre-segmented rows only ever train, and the segmented
twin of a raw test row (the same message in the other form) is left out of that fold's training.
The out-of-fold scores fit the temperature and pick the per-category auto-dispatch thresholds.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from zhizhi.dispatch.corpus import Example, match_rows
from zhizhi.dispatch.model import (
    DEFAULT_PARAMS,
    TextModel,
    _Features,
    choose_thresholds,
    fit_temperature,
    new_version,
    softmax,
)

#: Two raw rows are the same message (the corpus sample and the raw subset overlap) when their word
#: sets are this similar (cosine); such rows are kept in one fold.
TWIN_SIMILARITY = 0.8
#: A segmented row is the twin of a raw test row — the same message in the other form — when it is the
#: raw row's most similar segmented row and their word sets have at least this cosine. The two forms
#: differ more than two raw copies do: the segmented corpus was cut by another jieba setup with a long
#: stop-word list, so a twin scores 0.5–0.9, not ≈ 1. At 0.8 only 1,569 of the 2,282 raw rows found
#: their twin and cross-validation trained on the rest's answers (macro-F1 0.940 instead of ≈ 0.915);
#: at 0.5, 2,269 do. A near-identical complaint by someone else is left out too, which only makes the
#: figure more cautious.
TWIN_MATCH_SIMILARITY = 0.5


#: Parameters that differ by kind of model. Department routing keeps the plain SVM: naive-Bayes scaling
#: (NB-SVM, the category default) raised its macro-F1 on two fold draws (0.362 → 0.369, 0.357 → 0.390) but
#: lowered the top-3 accuracy the dispatcher's queue shows (0.783 → 0.762, both draws), on labels read from
#: replies that are wrong a quarter of the time.
KIND_PARAMS: dict[str, dict[str, Any]] = {"category": {}, "department": {"nb_scale": False}}


def params_for(kind: str, **overrides: Any) -> dict[str, Any]:
    """The training parameters of a kind of model (`category`, `department`), with overrides."""
    return {**KIND_PARAMS.get(kind, {}), **overrides}


@dataclass
class CrossValidation:
    y_true: list[str]
    y_pred: list[str]
    scores: np.ndarray  # out-of-fold decision scores, columns in `labels` order
    labels: list[str]
    seconds: float
    folds: int
    counts: Any = None  # the text analysed once, reused by the final fit


def cross_validate(examples: list[Example], folds: int = 5, params: dict[str, Any] | None = None,
                   seed: int = 0) -> CrossValidation:
    from sklearn.model_selection import StratifiedGroupKFold

    t0 = time.perf_counter()
    raw_idx = np.array([i for i, e in enumerate(examples) if e.raw is not None])
    seg_idx = np.array([i for i, e in enumerate(examples) if e.raw is None])
    scored = raw_idx if len(raw_idx) >= folds * 2 else np.arange(len(examples))
    train_only = seg_idx if scored is raw_idx else np.array([], dtype=int)
    # A label with fewer scored rows than folds cannot be scored fairly: its rows only train.
    few = {lab for lab, n in Counter(examples[i].label for i in scored).items() if n < folds}
    if few:
        train_only = np.concatenate([train_only, [i for i in scored if examples[i].label in few]]).astype(int)
        scored = np.array([i for i in scored if examples[i].label not in few], dtype=int)
    twins = find_twins(examples, scored, train_only)
    y = np.array([e.label for e in examples])
    labels = sorted(set(y.tolist()))
    counts = Counter(y[scored].tolist())
    n_splits = max(2, min(folds, min(counts.values())))
    # The same message may be in two raw files (the corpus sample and the raw subset overlap):
    # near-identical scored rows form one group, so they never sit on both sides of a fold.
    groups = _near_duplicate_groups([examples[i].tokens for i in scored])
    skf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    oof = np.zeros((len(scored), len(labels)), dtype=np.float64)
    p = {**DEFAULT_PARAMS, **(params or {})}
    counts = _Features.count_all([e.tokens for e in examples], p)
    for tr, te in skf.split(scored, y[scored], groups):
        test_rows = scored[te]
        excluded = set(twins[test_rows].tolist()) - {-1}
        train_rows = np.array([int(i) for i in train_only if int(i) not in excluded] + [int(i) for i in scored[tr]])
        model = TextModel.fit_counts(counts, train_rows, [str(y[i]) for i in train_rows], p)
        x = model.features.select(counts, test_rows)
        s = np.asarray(x @ model.coef.T) + model.intercept
        cols = [labels.index(lab) for lab in model.labels]
        fold_scores = np.full((len(te), len(labels)), -1e3)
        fold_scores[:, cols] = s
        oof[te] = fold_scores
    y_true = [str(v) for v in y[scored]]
    y_pred = [labels[j] for j in oof.argmax(axis=1)]
    return CrossValidation(y_true, y_pred, oof, labels, time.perf_counter() - t0, n_splits, counts)


def find_twins(examples: list[Example], scored: np.ndarray, train_only: np.ndarray) -> np.ndarray:
    """For every scored (raw) row, the index of its segmented twin among `train_only`, or -1.

    The twin is the most similar training-only row when their word sets reach TWIN_MATCH_SIMILARITY;
    a fold leaves the twins of its test rows out of training.
    """
    twins = np.full(len(examples), -1)
    if not len(train_only) or not len(scored):
        return twins
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    pool = [examples[i].tokens for i in train_only]
    queries = [examples[i].tokens for i in scored]
    best = match_rows(queries, pool)
    vec = CountVectorizer(token_pattern=r"\S+", lowercase=False, binary=True).fit(pool + queries)
    a = normalize(vec.transform(queries))
    b = normalize(vec.transform([pool[j] for j in best]))
    sims = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    for q, (j, s) in enumerate(zip(best, sims, strict=True)):
        if s >= TWIN_MATCH_SIMILARITY:
            twins[scored[q]] = train_only[j]
    return twins


def _near_duplicate_groups(docs: list[str]) -> np.ndarray:
    """Group ids joining documents whose word sets have cosine ≥ TWIN_SIMILARITY (union-find)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    m = normalize(CountVectorizer(token_pattern=r"\S+", lowercase=False, binary=True).fit_transform(docs))
    parent = list(range(len(docs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(docs), 512):
        sims = (m[start:start + 512] @ m.T).tocoo()
        for i, j, v in zip(sims.row, sims.col, sims.data, strict=True):
            if v >= TWIN_SIMILARITY and start + i != j:
                a, b = find(start + int(i)), find(int(j))
                if a != b:
                    parent[a] = b
    return np.array([find(i) for i in range(len(docs))])


def metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)), 4),
        "per_class": {lab: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4),
                            "f1": round(float(f[i]), 4), "support": int(s[i])} for i, lab in enumerate(labels)},
        "labels": labels,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def auto_dispatch_figures(y_true: list[str], y_pred: list[str], conf: np.ndarray,
                          thresholds: dict[str, float]) -> dict[str, float]:
    """Share of cases that pass their category's threshold, and the precision among them."""
    auto = np.array([c >= thresholds.get(p, 1.01) for p, c in zip(y_pred, conf, strict=True)])
    correct = np.array([t == p for t, p in zip(y_true, y_pred, strict=True)])
    n_auto = int(auto.sum())
    return {"coverage": round(n_auto / max(1, len(y_true)), 4),
            "precision": round(float(correct[auto].mean()) if n_auto else 0.0, 4), "n_auto": n_auto}


def train(examples: list[Example], *, params: dict[str, Any] | None = None, folds: int = 5,
          data_hash: str = "", sources: list[str] | None = None) -> TextModel:
    """Cross-validate, calibrate, choose thresholds, then fit the final model on everything."""
    p = {**DEFAULT_PARAMS, **(params or {})}
    t0 = time.perf_counter()
    cv = cross_validate(examples, folds=folds, params=p)
    y_idx = np.array([cv.labels.index(t) for t in cv.y_true])
    temperature = fit_temperature(cv.scores, y_idx)
    proba = softmax(cv.scores, temperature)
    conf = proba.max(axis=1)
    thresholds = choose_thresholds(cv.labels, cv.y_true, cv.y_pred, conf, p["precision_target"], p["min_support"])
    model = TextModel.fit_counts(cv.counts, np.arange(len(examples)), [e.label for e in examples], p)
    model.temperature = temperature
    model.thresholds = thresholds
    cv_metrics = metrics(cv.y_true, cv.y_pred, sorted(set(cv.y_true)))
    model.meta = {
        "version": new_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_hash": data_hash,
        "sources": sources or [],
        "params": p,
        "n_examples": len(examples),
        "n_raw_examples": sum(1 for e in examples if e.raw is not None),
        "label_counts": dict(Counter(e.label for e in examples)),
        "cv": {**{k: v for k, v in cv_metrics.items() if k != "confusion"}, "folds": cv.folds,
               "scored_on": "raw text" if any(e.raw for e in examples) else "segmented text",
               "auto_dispatch": auto_dispatch_figures(cv.y_true, cv.y_pred, conf, thresholds)},
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return model


#: The real corpus files the default model learns from (../shared/data/complaints; never copied).
DEFAULT_CATEGORY_FILES = ("teddy2020_attachment2_full_segmented_labelled.csv",
                          "teddy2020_attachment2_raw_subset_labelled.csv",
                          "teddy2020_attachment2_sample_labelled.csv")
DEFAULT_DEPARTMENT_FILE = "teddy2020_attachment4_messages_replies.csv"


def ensure_default_models(models_dir: Any, catalogue: Any, folds: int = 3) -> list[str]:
    """Train the category and department models from the shared corpus when none exist (the demo).

    Returns what was trained, as short lines for the console; nothing when models exist or the
    corpus is absent (the server then runs on the keyword baseline).
    """
    from pathlib import Path

    from zhizhi.dispatch.advisor import model_paths
    from zhizhi.dispatch.corpus import department_examples, files_hash, load_examples, to_category_codes
    from zhizhi.geo.demo_city import find_shared_data

    shared = find_shared_data()
    corpus = Path(shared) / "complaints" if shared else None
    if corpus is None or not corpus.is_dir():
        return []
    done = []
    models_dir = Path(models_dir)
    if not model_paths(models_dir, "category"):
        paths = [corpus / f for f in DEFAULT_CATEGORY_FILES if (corpus / f).is_file()]
        if paths:
            examples = to_category_codes(load_examples(paths), catalogue)
            model = train(examples, folds=folds, params=params_for("category"), data_hash=files_hash(paths),
                          sources=[str(p) for p in paths])
            model.meta["kind"] = "category"
            model.save(models_dir / f"dispatch-category-{model.version}.npz")
            done.append(f"category model: macro-F1 {model.meta['cv']['macro_f1']:.3f} ({folds}-fold, raw text), "
                        f"{model.meta['train_seconds']} s")
    replies = corpus / DEFAULT_DEPARTMENT_FILE
    if not model_paths(models_dir, "department") and replies.is_file():
        model = train(department_examples(replies), folds=folds, params=params_for("department"),
                      data_hash=files_hash([replies]), sources=[str(replies)])
        model.meta["kind"] = "department"
        model.save(models_dir / f"dispatch-department-{model.version}.npz")
        done.append(f"department model: macro-F1 {model.meta['cv']['macro_f1']:.3f}, {model.meta['train_seconds']} s")
    return done
