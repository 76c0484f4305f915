"""Smart dispatch, pure parts: text preparation, the model file, thresholds, level rules, duplicates, tasks."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from zhizhi.dispatch.corpus import Example
from zhizhi.dispatch.duplicates import Candidate, DuplicateRules, find_duplicate
from zhizhi.dispatch.levels import LevelRules, LevelRulesError
from zhizhi.dispatch.model import FORMAT_VERSION, ModelError, TextModel, choose_thresholds
from zhizhi.dispatch.text import prepare, tokens_segmented
from zhizhi.dispatch.training import train
from zhizhi.domain.errors import IllegalAction, ValidationFailed
from zhizhi.domain.places import Level
from zhizhi.domain.whistle import TaskState, WhistleTask, all_done

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

# Three small 大类 worth of made-up complaints (the real corpus is exercised in test_dispatch_corpus.py).
TOPICS = {
    "I09": ["学校乱收费", "幼儿园入园难", "老师体罚学生", "培训机构退费", "学区划片不合理", "校车超载"],
    "I10": ["公司拖欠工资", "社保断缴", "工伤认定难", "农民工讨薪", "养老金待遇", "劳动合同被辞退"],
    "I06": ["小区物业乱收费", "房屋漏水开裂", "拆迁补偿不公", "加装电梯", "老旧小区改造", "房产证办不下来"],
}
FILLER = ["请相关部门尽快处理", "已经持续很久", "希望领导重视", "影响很大", "多次联系无果", "恳请解决"]


def synthetic_examples() -> list[Example]:
    out = []
    for label, topics in TOPICS.items():
        for i, topic in enumerate(topics):
            for j, filler in enumerate(FILLER):
                raw = f"A{j}区{topic}，{filler}。{topics[(i + j) % len(topics)]}"
                out.append(Example(prepare(raw), label, raw=raw))
    return out


@pytest.fixture(scope="module")
def small_model() -> TextModel:
    return train(synthetic_examples(), folds=3, params={"min_df": 1, "min_support": 3}, data_hash="test")


def test_text_preparation_removes_masked_places_and_boilerplate() -> None:
    tokens = prepare("尊敬的领导您好！A3区住建局：A市A3区洋湖街道物业公司乱收费，电话13812345678，谢谢！").split()
    assert "住建局" in tokens and "物业公司" in tokens and "乱收费" in tokens
    assert not any(t.startswith("A") for t in tokens)
    assert not any(t in ("您好", "谢谢", "尊敬的领导") for t in tokens)
    assert not any(ch.isdigit() for t in tokens for ch in t)
    # Segmented corpus text gets the same cleaning: "A3 区" goes, words stay.
    assert tokens_segmented("市 西湖 A3 区 大道 的 施工") == ["市", "西湖", "大道", "施工"]


def test_model_round_trip_gives_identical_predictions(small_model: TextModel, tmp_path: Path) -> None:
    path = small_model.save(tmp_path / "dispatch-category-1.npz")
    loaded = TextModel.load(path)
    docs = [prepare("孩子上幼儿园乱收费"), prepare("老板拖欠工资三个月"), prepare("物业不管房屋漏水")]
    assert loaded.labels == small_model.labels
    np.testing.assert_allclose(loaded.proba(docs), small_model.proba(docs), rtol=1e-5)
    assert [t[0][0] for t in loaded.predict_top(docs)] == ["I09", "I10", "I06"]
    assert loaded.thresholds == small_model.thresholds
    assert loaded.meta["data_hash"] == "test" and loaded.meta["cv"]["folds"] == 3
    # The file is a plain zip of .npy arrays: nothing in it is a pickle.
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(f"{k}.npy" for k in (
            "header", "word_vocab", "char_vocab", "word_idf", "char_idf", "coef", "intercept"))
        for name in z.namelist():
            assert b"\x80\x04" not in z.read(name)[:200] or name == "header.npy"


def _rewrite(path: Path, out: Path, change: dict[str, object]) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(change)  # type: ignore[arg-type]
    with open(out, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def test_tampered_model_is_refused(small_model: TextModel, tmp_path: Path) -> None:
    path = small_model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as z:
        coef = z["coef"].copy()
        header = json.loads(str(z["header"][()]))
    coef[0, 0] += 0.5  # one weight changed
    _rewrite(path, tmp_path / "tampered.npz", {"coef": coef})
    with pytest.raises(ModelError, match=r"篡改|tampered"):
        TextModel.load(tmp_path / "tampered.npz")
    header["format_version"] = FORMAT_VERSION + 1
    _rewrite(path, tmp_path / "future.npz", {"header": np.array(json.dumps(header))})
    with pytest.raises(ModelError, match=r"不兼容|format_version"):
        TextModel.load(tmp_path / "future.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ModelError, match="corrupt"):
        TextModel.load(tmp_path / "junk.npz")
    # An object array would need pickle to load; it is refused, never executed.
    _rewrite(path, tmp_path / "pickled.npz", {"coef": np.array([object()], dtype=object)})
    with pytest.raises(ModelError):
        TextModel.load(tmp_path / "pickled.npz")


def test_thresholds_keep_precision_and_skip_unreliable_categories() -> None:
    # Category a: confident predictions right, unsure ones wrong. Category b: mostly wrong.
    y_pred = ["a"] * 10 + ["b"] * 10
    y_true = ["a"] * 8 + ["b"] * 2 + ["a"] * 6 + ["b"] * 4
    conf = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.6, 0.5] + [0.9] * 10)
    th = choose_thresholds(["a", "b"], y_true, y_pred, conf, target=0.95, min_support=3)
    assert th["a"] == pytest.approx(0.92)  # the 8 right ones, none of the wrong ones
    assert th["b"] > 1.0  # never reaches 95 %: never auto-dispatched
    th_few = choose_thresholds(["a", "b"], y_true, y_pred, conf, target=0.95, min_support=20)
    assert th_few == {"a": 1.01, "b": 1.01}  # too few predictions to tell


def test_auto_flag_follows_the_threshold(small_model: TextModel) -> None:
    top = small_model.predict_top([prepare("学校乱收费，老师体罚学生，幼儿园入园难")])[0]
    label, p = top[0]
    assert label == "I09"
    assert (p >= small_model.threshold(label)) == (p >= small_model.thresholds[label])
    assert small_model.threshold("unknown") > 1.0
    cv = small_model.meta["cv"]
    assert 0 <= cv["auto_dispatch"]["coverage"] <= 1 and cv["macro_f1"] > 0.8


DEPT_LEVELS = {"grid": frozenset({Level.GRID}), "street_office": frozenset({Level.STREET}),
               "ops_center": frozenset({Level.CITY, Level.DISTRICT, Level.STREET}),
               "housing": frozenset({Level.CITY, Level.DISTRICT}), "hrss": frozenset({Level.CITY, Level.DISTRICT})}


def decide(rules: LevelRules, text: str, *, severity: str = "normal", linked: int = 0, dept: str = "grid",
           level: Level = Level.GRID, category: str = "I0101"):  # type: ignore[no-untyped-def]
    return rules.decide(category_code=category, category_name="暴露垃圾", parent_code="I01", severity=severity,
                        text=text, linked_reports=linked, default_department=dept, default_level=level,
                        department_levels=DEPT_LEVELS)


def test_level_rules() -> None:
    rules = LevelRules.load()
    plain = decide(rules, "路边有一堆垃圾")
    assert plain.level is Level.GRID and plain.department_code == "grid" and plain.tier == "琐事不出网格"
    assert "责任清单" in plain.reasons[0]
    # Vulnerable people: one level up; the grid team has no community unit, so the fallback takes it.
    old = decide(rules, "独居老人门口垃圾堆积")
    assert old.level is Level.COMMUNITY and old.department_code == "residents_committee"
    assert any("涉及弱势群体" in r for r in old.reasons)
    # Severity words: at least district (难事区镇会商).
    grave = decide(rules, "垃圾堆起火，浓烟很大")
    assert grave.level is Level.DISTRICT and grave.tier == "难事区镇会商" and grave.department_code == "ops_center"
    # Many linked reports.
    assert decide(rules, "垃圾", linked=3).level is Level.COMMUNITY
    assert decide(rules, "垃圾", linked=2).level is Level.GRID
    # High-severity category: at least street; rules never lift above the ceiling (district).
    assert decide(rules, "垃圾", severity="high").level is Level.STREET
    stacked = decide(rules, "老人小孩身边燃气泄漏起火", severity="urgent", linked=5)
    assert stacked.level is Level.DISTRICT
    # A department already above the level keeps it; the explanation is a sentence for the timeline.
    d = decide(rules, "拖欠工资", dept="hrss", level=Level.DISTRICT, category="I1001")
    assert d.level is Level.DISTRICT and d.department_code == "hrss" and d.tier == "区县职能部门处置"
    assert d.explain("人力资源和社会保障").startswith("派遣至人力资源和社会保障（区县级处置")


def test_level_rules_file_is_validated() -> None:
    with pytest.raises(LevelRulesError, match="exactly one condition"):
        LevelRules.from_dict({"rule": [{"name": "x", "words": ["a"], "severity": ["high"], "raise": 1}]})
    with pytest.raises(LevelRulesError, match="no effect"):
        LevelRules.from_dict({"rule": [{"name": "x", "words": ["a"]}]})
    with pytest.raises(LevelRulesError, match="unknown level"):
        LevelRules.from_dict({"rule": [{"name": "x", "words": ["a"], "at_least": "planet"}]})


def test_duplicate_needs_place_time_and_text() -> None:
    rules = DuplicateRules(window_hours=72, max_distance_m=300, min_similarity=0.5)
    base = Candidate(1, "解放碑路口井盖缺失，晚上很危险", T0, "g1", 106.5775, 29.5570, "C0101")
    text = "解放碑路口的井盖缺失了，晚上很危险"
    m = find_duplicate(text, T0 + timedelta(hours=5), "g2", 106.5780, 29.5572, [base], rules)
    assert m is not None and m.case_id == 1 and m.similarity >= 0.5 and m.distance_m is not None
    assert m.distance_m < 100
    # Too far, too late, different text, different 大类: no match.
    assert find_duplicate(text, T0, "g2", 106.60, 29.57, [base], rules) is None
    assert find_duplicate(text, T0 + timedelta(hours=80), "g1", 106.5775, 29.5570, [base], rules) is None
    assert find_duplicate("小区门口垃圾没人清运", T0, "g1", 106.5775, 29.5570, [base], rules) is None
    assert find_duplicate(text, T0, "g1", None, None, [base], rules, category="I0101") is None
    # Same grid counts even without coordinates.
    assert find_duplicate(text, T0, "g1", None, None, [base], rules, category="C0102") is not None


def test_whistle_task_states() -> None:
    t = WhistleTask(1, 1, "housing", "排查", T0, "街道", report_by=T0 + timedelta(hours=2))
    with pytest.raises(IllegalAction):
        t.finish(T0, "done")
    assert not t.is_overdue(T0) and t.is_overdue(T0 + timedelta(hours=3))
    with pytest.raises(ValidationFailed):
        t.report_in(T0, T0 - timedelta(hours=1))
    t.report_in(T0, T0 + timedelta(days=1), "检测楼体")
    assert t.state is TaskState.REPORTED and t.task == "检测楼体"
    with pytest.raises(IllegalAction):
        t.report_in(T0, T0 + timedelta(days=2))
    assert not all_done([t])
    with pytest.raises(ValidationFailed):
        t.finish(T0, " ")
    t.finish(T0 + timedelta(hours=5), "已加固")
    assert all_done([t]) and not all_done([])


def test_whistle_task_overdue_marked_once_per_deadline() -> None:
    t = WhistleTask(1, 1, "housing", "排查", T0, "街道", report_by=T0 + timedelta(hours=2))
    assert t.deadline == T0 + timedelta(hours=2)
    assert not t.mark_overdue(T0 + timedelta(hours=1))  # not late yet
    assert t.mark_overdue(T0 + timedelta(hours=3)) and t.overdue_since == T0 + timedelta(hours=3)
    assert not t.mark_overdue(T0 + timedelta(hours=4))  # the same missed deadline is urged once
    t.report_in(T0 + timedelta(hours=5), T0 + timedelta(hours=10))  # late, with its own deadline
    assert t.overdue_since is None and t.deadline == T0 + timedelta(hours=10)
    assert not t.mark_overdue(T0 + timedelta(hours=9))
    assert t.mark_overdue(T0 + timedelta(hours=11))  # the new deadline missed: a new lateness
    t.finish(T0 + timedelta(hours=12), "已加固")
    assert t.deadline is None and not t.is_overdue(T0 + timedelta(days=9))


def test_fast_ngram_counts_equal_sklearns() -> None:
    """The batch counters (packed n-gram keys, searchsorted) give exactly sklearn's counts, edge cases included:
    empty texts, tabs, characters outside the basic plane, and n-grams that would run across two texts."""
    from zhizhi.dispatch.model import _CharCounter, _SklearnCounter, _WordCounter

    docs = [e.tokens for e in synthetic_examples()]
    model = TextModel.fit(docs, [e.label for e in synthetic_examples()], {"min_df": 1})
    f = model.features
    probe = [*docs[::-1], "", "物业", "  ", "物业 乱收费\t\t房屋", "😀😀 物业 收费", "收费 物业", "费物"]
    for fast, vocab, ngram, analyzer in ((_WordCounter, f.word_vocab, f.word_ngram, "word"),
                                         (_CharCounter, f.char_vocab, f.char_ngram, "char")):
        want = _SklearnCounter(vocab, ngram, analyzer).count(probe)
        got = fast(vocab, ngram).count(probe)
        assert want.sum() > 0 and got.shape == want.shape
        assert abs(got - want).sum() == 0, analyzer
    # Longer n-grams than the packed keys hold fall back to sklearn.
    wide = TextModel.fit(docs, [e.label for e in synthetic_examples()], {"min_df": 1, "char_ngram": [2, 4],
                                                                          "word_ngram": [1, 3]}).features
    for fast, vocab, ngram, analyzer in ((_WordCounter, wide.word_vocab, (1, 3), "word"),
                                         (_CharCounter, wide.char_vocab, (2, 4), "char")):
        counter = fast(vocab, ngram)
        assert not counter.packed
        assert abs(counter.count(probe) - _SklearnCounter(vocab, ngram, analyzer).count(probe)).sum() == 0


def test_user_dictionary_applies_to_the_segmenter() -> None:
    """Department words of the user dictionary stay whole, and the Rust segmenter cuts like jieba."""
    from zhizhi.dispatch.text import _jieba_segmenter, _segmenter

    text = "A3区住房和城乡建设局和人社局不作为，街道办事处请回复"
    assert "住房和城乡建设局" in _segmenter()(text) and "人社局" in _segmenter()(text)
    assert _segmenter()(text) == _jieba_segmenter()(text)


def test_cross_validation_finds_the_segmented_twin_of_a_raw_row() -> None:
    """The same message in raw and in the corpus's segmented form differs by segmenter and stop list; its
    twin must still be found (and left out of the fold that tests the raw row), an unrelated row not."""
    from zhizhi.dispatch.text import tokens_segmented
    from zhizhi.dispatch.training import find_twins

    raw = "小区物业乱收费，房屋漏水开裂，多次联系物业无果"
    twin = "小区 物业 乱 收费 房屋 漏水 开 裂 联系 物业 无果 尽快 解决 领导 严重"  # their cut, their stop list
    other = "公司 拖欠 工资 半年 农民工 讨薪 无果"
    examples = [Example(prepare(raw), "I06", raw=raw),
                Example(" ".join(tokens_segmented(other)), "I10"),
                Example(" ".join(tokens_segmented(twin)), "I06")]
    a, b = set(examples[0].tokens.split()), set(examples[2].tokens.split())
    cosine = len(a & b) / (len(a) * len(b)) ** 0.5
    assert 0.5 <= cosine < 0.8  # a pair that the former 0.8 threshold missed
    twins = find_twins(examples, np.array([0]), np.array([1, 2]))
    assert twins.tolist() == [2, -1, -1]
    assert find_twins(examples[:2], np.array([0]), np.array([1])).tolist() == [-1, -1]


def test_nbsvm_weights_are_the_svm_on_naive_bayes_scaled_features() -> None:
    """NB-SVM (the category default): per class, a binary SVM on the features times the class's log-count
    ratios; the stored weights are ratio × SVM weight, so scoring stays one product with the plain features."""
    from scipy import sparse
    from sklearn.svm import LinearSVC

    from zhizhi.dispatch.model import DEFAULT_PARAMS, _Features, nb_ratios
    from zhizhi.dispatch.training import params_for

    # Ratios by hand: feature 0 is in both docs of class a and none of b; feature 1 in one doc of each.
    x = sparse.csr_matrix(np.array([[0.5, 0.0], [0.2, 0.7], [0.0, 0.9]]))
    r = nb_ratios(x, np.array(["a", "a", "b"]), ["a", "b"], alpha=1.0)
    p_a, q_a = np.array([3.0, 2.0]), np.array([1.0, 2.0])  # presences + 1: class a, the rest
    assert np.allclose(r[0], np.log(p_a / p_a.sum()) - np.log(q_a / q_a.sum()))
    assert np.allclose(r[1], np.log(q_a / q_a.sum()) - np.log(p_a / p_a.sum()))

    examples = synthetic_examples()
    docs, labels = [e.tokens for e in examples], [e.label for e in examples]
    assert DEFAULT_PARAMS["nb_scale"] and params_for("department")["nb_scale"] is False
    params = {**DEFAULT_PARAMS, "min_df": 1}
    model = TextModel.fit(docs, labels, params)
    _, xs = _Features.fit_counts(_Features.count_all(docs, params), np.arange(len(docs)), params)
    ratios = nb_ratios(xs, np.array(labels), model.labels)
    for j, label in enumerate(model.labels):
        svm = LinearSVC(C=1.0, random_state=0).fit(xs @ sparse.diags(ratios[j].astype(np.float32)),
                                                    [int(v == label) for v in labels])
        assert np.allclose(model.coef[j], ratios[j] * svm.coef_[0], atol=1e-5)
        assert model.intercept[j] == pytest.approx(svm.intercept_[0], abs=1e-5)
    plain = TextModel.fit(docs, labels, {**params, "nb_scale": False})
    assert not np.allclose(plain.coef, model.coef, atol=1e-3)
    assert np.allclose(plain.coef, LinearSVC(C=1.0, random_state=0).fit(xs, labels).coef_, atol=1e-5)
    # Scoring is the usual product: the NB model classifies its training texts. Its weights are C-ordered, so
    # scoring uses a C-ordered transposed copy (scipy would copy the weights on every call otherwise).
    assert [top[0][0] for top in model.predict_top(docs)] == labels
    wt = model._weights_t()
    assert wt.flags["C_CONTIGUOUS"] and np.array_equal(wt, model.coef.T) and model._weights_t() is wt
