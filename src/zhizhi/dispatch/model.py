"""The dispatch text classifier: TF-IDF word and character n-grams, a linear SVM, calibrated probabilities.

Why this shape: on the real corpus (see docs/dispatch.md) word uni/bigrams plus character 1–3-grams
with a linear SVM on naive-Bayes-scaled features (NB-SVM) reach the published results' range at a
training time of seconds, and a linear model is a few arrays — which lets the model file be plain
numbers and strings, never pickle.
Scores become probabilities by temperature scaling fitted on out-of-fold scores, and the per-category
auto-dispatch thresholds are chosen on those same out-of-fold probabilities.

The file is one `.npz` (numpy's zip of arrays) read with `allow_pickle=False`, so loading executes
nothing. A JSON header inside it records the format version, the training-data hash, parameters,
metrics and a sha256 digest of every array; a file whose arrays do not match the digest, or whose
format this code does not know, is refused with `ModelError`.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from zhizhi.dispatch.text import MAX_CHARS

FORMAT = "zhizhi-dispatch-linear"
FORMAT_VERSION = 1
DEFAULT_PARAMS: dict[str, Any] = {
    "word_ngram": [1, 2], "char_ngram": [1, 3], "min_df": 2, "max_word_features": 150_000,
    "max_char_features": 200_000, "C": 1.0, "precision_target": 0.95, "min_support": 10,
    "max_chars": MAX_CHARS, "nb_scale": True, "nb_alpha": 1.0,
}


class ModelError(Exception):
    """A model file that must not be used: missing, tampered, corrupt or of an unknown format."""


def _nospace(s: str) -> str:
    return s.replace(" ", "")


@dataclass
class _Features:
    """Fixed vocabularies and idf weights; transform = sublinear tf × idf, l2-normalised rows."""

    word_vocab: np.ndarray
    char_vocab: np.ndarray
    word_idf: np.ndarray
    char_idf: np.ndarray
    word_ngram: tuple[int, int]
    char_ngram: tuple[int, int]
    _vecs: tuple[Any, Any] | None = None
    _cols: tuple[np.ndarray, np.ndarray] | None = None  # columns of the `Counts` it was fitted from

    @staticmethod
    def count_all(docs: list[str], params: dict[str, Any]) -> Counts:
        """Word and character n-gram counts of every document, with the full vocabularies.

        Analysing text is the slow part of training; doing it once lets cross-validation fit each
        fold's vocabulary by selecting columns, which gives exactly what fitting on the fold would.
        """
        from sklearn.feature_extraction.text import CountVectorizer

        w = CountVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=tuple(params["word_ngram"]),
                            dtype=np.float32)
        c = CountVectorizer(analyzer="char", lowercase=False, ngram_range=tuple(params["char_ngram"]),
                            preprocessor=_nospace, dtype=np.float32)
        wm = w.fit_transform(docs).tocsr()
        cm = c.fit_transform(docs).tocsr()
        return Counts(wm, cm, w.get_feature_names_out(), c.get_feature_names_out())

    @classmethod
    def fit_counts(cls, counts: Counts, rows: np.ndarray, params: dict[str, Any]) -> tuple[_Features,
                                                                                            sparse.csr_matrix]:
        """Vocabulary (min_df, max_features by frequency) and idf from the given rows, as sklearn's
        TfidfVectorizer(sublinear_tf=True, smooth_idf=True) would fit them; returns the features and
        the rows' tf-idf matrix."""
        parts = []
        vocabs = []
        idfs = []
        cols = []
        for m, names, limit in ((counts.word, counts.word_names, params["max_word_features"]),
                                (counts.char, counts.char_names, params["max_char_features"])):
            sub = m[rows]
            df = np.bincount(sub.indices, minlength=sub.shape[1])
            tf = np.asarray(sub.sum(axis=0)).ravel()
            keep = np.flatnonzero(df >= params["min_df"])
            if limit and len(keep) > limit:
                keep = keep[np.argsort(-tf[keep], kind="stable")[:limit]]
            keep = np.sort(keep)
            cols.append(keep)
            n = sub.shape[0]
            idf = (np.log((1.0 + n) / (1.0 + df[keep])) + 1.0).astype(np.float32)
            vocabs.append(np.asarray(names[keep], dtype=str))
            idfs.append(idf)
            parts.append(_tfidf(sub[:, keep], idf))
        feats = cls(vocabs[0], vocabs[1], idfs[0], idfs[1], tuple(params["word_ngram"]),  # type: ignore[arg-type]
                    tuple(params["char_ngram"]))  # type: ignore[arg-type]
        feats._cols = (cols[0], cols[1])
        return feats, sparse.hstack(parts, format="csr", dtype=np.float32)

    def select(self, counts: Counts, rows: np.ndarray) -> sparse.csr_matrix:
        """The tf-idf matrix of `rows` of precomputed counts, in this vocabulary."""
        assert self._cols is not None, "features not fitted from these counts"
        parts = [_tfidf(counts.word[rows][:, self._cols[0]], self.word_idf),
                 _tfidf(counts.char[rows][:, self._cols[1]], self.char_idf)]
        return sparse.hstack(parts, format="csr", dtype=np.float32)

    def _counters(self) -> tuple[Any, Any]:
        if self._vecs is None:
            self._vecs = (_WordCounter(self.word_vocab, self.word_ngram),
                          _CharCounter(self.char_vocab, self.char_ngram))
        return self._vecs

    def transform(self, docs: list[str]) -> sparse.csr_matrix:
        w, c = self._counters()
        return sparse.hstack([_tfidf(w.count(docs), self.word_idf), _tfidf(c.count(docs), self.char_idf)],
                             format="csr", dtype=np.float32)


#: Bits per character in a packed character n-gram: every Unicode code point fits in 21 bits, so an
#: n-gram of up to three characters is one int64 and a 1-gram, 2-gram and 3-gram never share a key.
_CHAR_BITS = 21


class _CharCounter:
    """Character n-gram counts over a fixed vocabulary, for a whole batch at once in numpy.

    Why: counting character n-grams string by string in Python (sklearn's analyzer and a dict
    lookup per n-gram, about 900 per text) was the slowest step of a prediction. Here the batch's
    characters become one array of code points, each n-gram is packed into an integer key and looked
    up in the sorted keys of the vocabulary with `searchsorted`. The counts are those of sklearn's
    `analyzer="char"` with spaces removed (tested on the corpus); vocabularies with n-grams longer
    than three characters fall back to sklearn.
    """

    def __init__(self, vocab: np.ndarray, ngram: tuple[int, int]) -> None:
        self.n_features = len(vocab)
        self.ngram = (int(ngram[0]), int(ngram[1]))
        self.packed = self.ngram[1] * _CHAR_BITS <= 63
        if not self.packed:
            self._fallback = _SklearnCounter(vocab, self.ngram, analyzer="char")
            return
        keys = np.fromiter((_pack(g) for g in vocab.tolist()), dtype=np.int64, count=len(vocab))
        order = np.argsort(keys, kind="stable")
        self.keys, self.cols = keys[order], order.astype(np.int64)

    def count(self, docs: list[str]) -> sparse.csr_matrix:
        if not self.packed:
            return self._fallback.count(docs)
        strs = [_WHITE.sub(" ", _nospace(d)) for d in docs]
        lens = np.fromiter(map(len, strs), dtype=np.int64, count=len(strs))
        cp = np.frombuffer("".join(strs).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ends = np.cumsum(lens)
        doc_of = np.repeat(np.arange(len(strs), dtype=np.int64), lens)
        pos = np.arange(len(cp), dtype=np.int64)
        rows, cols = [], []
        for n in range(self.ngram[0], self.ngram[1] + 1):
            m = len(cp) - n + 1
            if m <= 0:
                break
            key = cp[:m].copy()
            for j in range(1, n):
                key = (key << _CHAR_BITS) | cp[j:j + m]
            inside = pos[:m] + n <= ends[doc_of[:m]]  # the n-gram does not run into the next text
            key, d = key[inside], doc_of[:m][inside]
            r, c = _match(self.keys, self.cols, key, d)
            rows.append(r)
            cols.append(c)
        return _csr_counts(rows, cols, len(docs), self.n_features)


def _match(keys: np.ndarray, cols: np.ndarray, key: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(document, column) of each packed n-gram found in the vocabulary's sorted keys."""
    at = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
    hit = keys[at] == key
    return doc[hit], cols[at[hit]]


class _WordCounter:
    """Word n-gram counts over a fixed vocabulary (tokens are separated by spaces).

    Tokens become integer ids with one dictionary lookup each; a bigram is the pair of ids packed
    into one integer and looked up in the vocabulary's sorted keys, so no n-gram string is built.
    Same counts as sklearn's `token_pattern=r"\\S+"` analyzer; n-grams above two words fall back to it.
    """

    def __init__(self, vocab: np.ndarray, ngram: tuple[int, int]) -> None:
        self.n_features = len(vocab)
        self.ngram = (int(ngram[0]), int(ngram[1]))
        self.packed = self.ngram[1] <= 2
        if not self.packed:
            self._fallback = _SklearnCounter(vocab, self.ngram, analyzer="word")
            return
        grams = [g.split(" ") for g in vocab.tolist()]
        self.ids: dict[str, int] = {}
        for g in grams:
            for t in g:
                self.ids.setdefault(t, len(self.ids))
        base = len(self.ids) + 1
        self.base = base
        keys = np.array([self.ids[g[0]] + 1 if len(g) == 1 else (self.ids[g[0]] + 1) * base + self.ids[g[1]] + 1
                         for g in grams], dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        self.keys, self.cols = keys[order], order.astype(np.int64)

    def count(self, docs: list[str]) -> sparse.csr_matrix:
        if not self.packed:
            return self._fallback.count(docs)
        toks = [d.split() for d in docs]
        lens = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
        get = self.ids.get
        ids = np.fromiter((get(t, -1) for doc in toks for t in doc), dtype=np.int64, count=int(lens.sum())) + 1
        doc_of = np.repeat(np.arange(len(docs), dtype=np.int64), lens)
        ends = np.cumsum(lens)
        rows, cols = [], []
        for n in range(self.ngram[0], self.ngram[1] + 1):
            m = len(ids) - n + 1
            if m <= 0:
                break
            if n == 1:
                key, ok = ids, ids > 0
            else:
                key = ids[:m] * self.base + ids[1:m + 1]
                ok = (ids[:m] > 0) & (ids[1:m + 1] > 0) & (np.arange(m) + 2 <= ends[doc_of[:m]])
            key, d = key[ok], doc_of[:m][ok]
            r, c = _match(self.keys, self.cols, key, d)
            rows.append(r)
            cols.append(c)
        return _csr_counts(rows, cols, len(docs), self.n_features)


class _SklearnCounter:
    """sklearn's analyzers over a fixed vocabulary: the reference, and the fallback for long n-grams."""

    def __init__(self, vocab: np.ndarray, ngram: tuple[int, int], analyzer: str) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        vocabulary = {t: i for i, t in enumerate(vocab.tolist())}
        if analyzer == "char":
            self.vec = CountVectorizer(analyzer="char", lowercase=False, ngram_range=ngram, preprocessor=_nospace,
                                       vocabulary=vocabulary, dtype=np.float32)
        else:
            self.vec = CountVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=ngram,
                                       vocabulary=vocabulary, dtype=np.float32)

    def count(self, docs: list[str]) -> sparse.csr_matrix:
        return _count(self.vec, docs)


_WHITE = re.compile(r"\s\s+")


def _pack(gram: str) -> int:
    key = 0
    for ch in gram:
        key = (key << _CHAR_BITS) | ord(ch)
    return key


def _csr_counts(rows: list[np.ndarray], cols: list[np.ndarray], n_rows: int, n_cols: int) -> sparse.csr_matrix:
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    m = sparse.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n_rows, n_cols))
    m.sum_duplicates()
    return m


@dataclass
class Counts:
    word: sparse.csr_matrix
    char: sparse.csr_matrix
    word_names: np.ndarray
    char_names: np.ndarray


def _count(vec: Any, docs: list[str]) -> sparse.csr_matrix:
    """Counts over a fixed vocabulary. sklearn's transform raises and catches a KeyError for every
    n-gram outside the vocabulary — most character n-grams of a new text — which made it the slowest
    step of a prediction; counting the looked-up indices in C (Counter over map) avoids it."""
    from collections import Counter

    analyze = vec.build_analyzer()
    get = vec.vocabulary_.get if hasattr(vec, "vocabulary_") else vec.vocabulary.get
    indptr = [0]
    indices: list[int] = []
    data: list[int] = []
    for doc in docs:
        counts = Counter(map(get, analyze(doc)))
        counts.pop(None, None)
        indices.extend(counts.keys())  # type: ignore[arg-type]
        data.extend(counts.values())
        indptr.append(len(indices))
    n = len(vec.vocabulary_ if hasattr(vec, "vocabulary_") else vec.vocabulary)
    m = sparse.csr_matrix((np.array(data, dtype=np.float32), np.array(indices, dtype=np.int64),
                           np.array(indptr, dtype=np.int64)), shape=(len(docs), n))
    m.sort_indices()
    return m


def _tfidf(counts: sparse.spmatrix, idf: np.ndarray) -> sparse.csr_matrix:
    """Sublinear tf (1 + log tf) × idf, rows scaled to unit length.

    Works on the CSR arrays directly: scipy's elementwise products and diagonal scaling cost more
    than the arithmetic when one case at a time is classified.
    """
    m = sparse.csr_matrix(counts, dtype=np.float32, copy=True)
    m.data = (np.log(m.data) + 1.0) * idf[m.indices]
    row = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    norms = np.sqrt(np.bincount(row, weights=np.square(m.data, dtype=np.float64), minlength=m.shape[0]))
    norms[norms == 0] = 1.0
    m.data = (m.data / norms[row]).astype(np.float32)
    return m


@dataclass
class TextModel:
    """A trained classifier: features, weights, calibration, thresholds and its provenance."""

    labels: list[str]
    features: _Features
    coef: np.ndarray  # (n_labels, n_features)
    intercept: np.ndarray  # (n_labels,)
    temperature: float = 1.0
    thresholds: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # ----- training -------------------------------------------------------------------------
    @classmethod
    def fit(cls, docs: list[str], labels: list[str], params: dict[str, Any] | None = None) -> TextModel:
        p = {**DEFAULT_PARAMS, **(params or {})}
        counts = _Features.count_all(docs, p)
        return cls.fit_counts(counts, np.arange(len(docs)), [labels[i] for i in range(len(docs))], p)

    @classmethod
    def fit_counts(cls, counts: Counts, rows: np.ndarray, labels: list[str], params: dict[str, Any]) -> TextModel:
        """Fit on some rows of precomputed counts (cross-validation folds share one analysis of the text)."""
        from sklearn.svm import LinearSVC

        if len(set(labels)) < 2:
            raise ModelError("至少需要两个类别 / at least two labels are needed to train")
        feats, x = _Features.fit_counts(counts, rows, params)
        if params.get("nb_scale"):
            classes, coef, intercept = _fit_nbsvm(x, labels, float(params["C"]), float(params.get("nb_alpha", 1.0)))
            return cls(classes, feats, coef, intercept, meta={"params": params})
        # Its coordinate descent visits rows in random order: seeded, so retraining gives the same model.
        svm = LinearSVC(C=params["C"], random_state=0)
        svm.fit(x, labels)
        coef = svm.coef_.astype(np.float32)
        intercept = svm.intercept_.astype(np.float32)
        if len(svm.classes_) == 2:  # LinearSVC keeps one row for two classes
            coef = np.vstack([-coef[0], coef[0]])
            intercept = np.array([-intercept[0], intercept[0]], dtype=np.float32)
        return cls(list(svm.classes_), feats, coef, intercept, meta={"params": params})

    # ----- inference ------------------------------------------------------------------------
    def scores(self, token_docs: list[str]) -> np.ndarray:
        x = self.features.transform(token_docs)
        return np.asarray(x @ self._weights_t()) + self.intercept

    def _weights_t(self) -> np.ndarray:
        """The weights as a C-ordered (n_features, n_labels) array, made once.

        A sparse row times a dense matrix is fast only when the matrix is C-ordered; `coef.T` of a C-ordered
        `coef` is not, and scipy then copies all the weights on every call (2.7 ms instead of 0.4 ms for one
        case). LinearSVC's own weights happened to be Fortran-ordered, which hid this.
        """
        cached = self.__dict__.get("_wt")
        if cached is None or cached[0] is not self.coef:
            cached = (self.coef, np.ascontiguousarray(self.coef.T))
            self.__dict__["_wt"] = cached
        return cached[1]

    def proba(self, token_docs: list[str]) -> np.ndarray:
        return softmax(self.scores(token_docs), self.temperature)

    def predict_top(self, token_docs: list[str], k: int = 3) -> list[list[tuple[str, float]]]:
        """The k most likely labels of each document, with calibrated probabilities."""
        p = self.proba(token_docs)
        k = min(k, p.shape[1])
        order = np.argsort(-p, axis=1)[:, :k]
        return [[(self.labels[j], float(p[i, j])) for j in order[i]] for i in range(p.shape[0])]

    def threshold(self, label: str) -> float:
        """Confidence needed to dispatch `label` without a person; above 1 means never automatically."""
        return float(self.thresholds.get(label, 1.01))

    @property
    def max_chars(self) -> int | None:
        """How much of a text the model reads (see zhizhi.dispatch.text.MAX_CHARS)."""
        value = self.meta.get("max_chars", self.meta.get("params", {}).get("max_chars"))
        return int(value) if value else None

    def prepare(self, raw_text: str) -> str:
        """Raw text → this model's input, exactly as its training and cross-validation saw raw text."""
        from zhizhi.dispatch.text import prepare

        return prepare(raw_text, max_chars=self.max_chars)

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unsaved"))

    # ----- storage --------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write the single-file model (arrays + a JSON header with their digest), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = self._arrays()
        header = {
            **self.meta,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "labels": self.labels,
            "temperature": self.temperature,
            "thresholds": self.thresholds,
            "word_ngram": list(self.features.word_ngram),
            "char_ngram": list(self.features.char_ngram),
            "max_chars": self.max_chars,
            "digest": _digest(arrays),
        }
        arrays["header"] = np.array(json.dumps(header, ensure_ascii=False, sort_keys=True))
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        tmp.replace(path)
        return path

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "word_vocab": self.features.word_vocab, "char_vocab": self.features.char_vocab,
            "word_idf": self.features.word_idf, "char_idf": self.features.char_idf,
            "coef": self.coef, "intercept": self.intercept,
        }

    @classmethod
    def load(cls, path: Path) -> TextModel:
        """Read a model file, refusing anything that is not exactly what `save` wrote."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"模型文件不存在 / model file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                names = set(z.files)
                expected = {"header", "word_vocab", "char_vocab", "word_idf", "char_idf", "coef", "intercept"}
                if names != expected:
                    raise ModelError(f"模型文件内容不符 / {path}: unexpected arrays {sorted(names ^ expected)}")
                header = json.loads(str(z["header"][()]))
                arrays = {k: z[k] for k in expected - {"header"}}
        except ModelError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, KeyError, json.JSONDecodeError, EOFError) as exc:
            raise ModelError(f"模型文件已损坏或不是 zhizhi 模型 / {path} is corrupt or not a zhizhi model: "
                             f"{exc}") from None
        if header.get("format") != FORMAT:
            raise ModelError(f"不是 zhizhi 分拨模型 / {path}: format {header.get('format')!r}, expected {FORMAT!r}")
        if header.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"模型格式版本不兼容 / {path}: format_version {header.get('format_version')!r}, "
                             f"this zhizhi reads {FORMAT_VERSION}; retrain with `zhizhi dispatch train`")
        if _digest(arrays) != header.get("digest"):
            raise ModelError(f"模型文件校验失败，可能被篡改 / {path}: the arrays do not match the recorded "
                             "sha256 digest (tampered or damaged); retrain or restore the file")
        labels = list(header["labels"])
        coef, intercept = arrays["coef"], arrays["intercept"]
        n_feat = len(arrays["word_vocab"]) + len(arrays["char_vocab"])
        if coef.shape != (len(labels), n_feat) or intercept.shape != (len(labels),):
            raise ModelError(f"模型数组尺寸不一致 / {path}: weights of shape {coef.shape} for "
                             f"{len(labels)} labels and {n_feat} features")
        feats = _Features(arrays["word_vocab"], arrays["char_vocab"], arrays["word_idf"], arrays["char_idf"],
                          tuple(header["word_ngram"]), tuple(header["char_ngram"]))  # type: ignore[arg-type]
        meta = {k: v for k, v in header.items()
                if k not in ("labels", "temperature", "thresholds", "digest", "word_ngram", "char_ngram")}
        meta["path"] = str(path)
        return cls(labels, feats, coef, intercept, float(header["temperature"]),
                   {k: float(v) for k, v in header["thresholds"].items()}, meta)


def nb_ratios(x: sparse.csr_matrix, y: np.ndarray, classes: list[str], alpha: float = 1.0) -> np.ndarray:
    """Per class, the log-count ratio of every feature: log of (its share of the class's feature presences)
    over (its share of the other classes'), presences smoothed by `alpha` (Wang & Manning's NB features)."""
    present = sparse.csr_matrix((np.ones(x.nnz, dtype=np.float64), x.indices, x.indptr), shape=x.shape)
    out = np.empty((len(classes), x.shape[1]), dtype=np.float64)
    total = np.asarray(present.sum(axis=0)).ravel()
    for j, label in enumerate(classes):
        pos = np.asarray(present[y == label].sum(axis=0)).ravel()
        p, q = pos + alpha, total - pos + alpha
        out[j] = np.log(p / p.sum()) - np.log(q / q.sum())
    return out


def _fit_nbsvm(x: sparse.csr_matrix, labels: list[str], C: float, alpha: float) -> tuple[list[str], np.ndarray,
                                                                                          np.ndarray]:
    """NB-SVM: for each class, a binary linear SVM (that class against the rest) on the features scaled by the
    class's naive-Bayes log-count ratios (`nb_ratios`).

    Why: on the corpus (docs/dispatch.md) it scores a few thousandths of macro-F1 above the plain SVM on every
    fold draw measured. It costs nothing at prediction time and changes nothing in the model file: the score
    (x ∘ r)·w + b is x·(r ∘ w) + b, so the stored weights are r ∘ w, one row per class as before.
    """
    from sklearn.svm import LinearSVC

    y = np.asarray(labels)
    classes = sorted(set(labels))
    ratios = nb_ratios(x, y, classes, alpha)
    coef = np.empty((len(classes), x.shape[1]), dtype=np.float32)
    intercept = np.empty(len(classes), dtype=np.float32)
    for j, label in enumerate(classes):
        r = ratios[j].astype(np.float32)
        scaled = x @ sparse.diags(r, format="csr")
        # Its coordinate descent visits rows in random order: seeded, so retraining gives the same model.
        svm = LinearSVC(C=C, random_state=0).fit(scaled, (y == label).astype(np.int8))
        coef[j] = r * svm.coef_[0]
        intercept[j] = svm.intercept_[0]
    return classes, coef, intercept


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = scores * temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, y_index: np.ndarray) -> float:
    """The scale of the scores that minimises the log-loss of out-of-fold predictions (temperature scaling)."""
    grid = np.exp(np.linspace(np.log(0.2), np.log(50.0), 120))
    best_t, best_loss = 1.0, np.inf
    rows = np.arange(len(y_index))
    for t in grid:
        p = softmax(scores, float(t))
        loss = -np.mean(np.log(np.clip(p[rows, y_index], 1e-12, None)))
        if loss < best_loss:
            best_t, best_loss = float(t), loss
    return best_t


def choose_thresholds(labels: list[str], y_true: list[str], y_pred: list[str], conf: np.ndarray,
                      target: float, min_support: int) -> dict[str, float]:
    """Per category, the lowest confidence at which the out-of-fold precision of that prediction stays ≥ target.

    Precision is measured over all predictions of the category at or above the threshold, so a
    category the model confuses often needs a higher confidence before a case skips the dispatcher;
    one that never reaches the target (or has too few predictions to tell) is never auto-dispatched.
    """
    out: dict[str, float] = {}
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    for label in labels:
        sel = yp == label
        if sel.sum() < min_support:
            out[label] = 1.01
            continue
        c = conf[sel]
        ok = (yt[sel] == label)
        order = np.argsort(-c)
        c, ok = c[order], ok[order]
        cum_prec = np.cumsum(ok) / np.arange(1, len(ok) + 1)
        chosen = 1.01
        for i in range(len(c) - 1, -1, -1):  # lowest threshold whose precision from the top holds
            if i + 1 >= min_support and cum_prec[i] >= target and (i + 1 == len(c) or c[i + 1] < c[i]):
                chosen = float(c[i])
                break
        out[label] = round(chosen, 4)
    return out


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def new_version(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
