"""The keyword baseline classifier over the packaged catalogue."""

from __future__ import annotations

from zhizhi.adapters.catalogue_files import load_catalogue
from zhizhi.dispatch.keywords import KeywordClassifier


def test_keywords_rank_categories_and_report_matches() -> None:
    catalogue = load_catalogue()
    clf = KeywordClassifier(catalogue)
    top = clf.suggest("小区门口的路灯不亮，晚上灯不亮很危险")[0]
    assert catalogue.category(top.category_code).name_zh == "路灯"
    assert "路灯" in top.matched and 0 < top.confidence <= 1
    assert clf.suggest("今天天气很好") == []
    assert len(clf.suggest("井盖缺失，路灯不亮，垃圾满溢", top=3)) == 3


def test_overlapping_terms_all_count() -> None:
    clf = KeywordClassifier(load_catalogue())
    # "路灯不亮" contains "路灯" and "灯不亮"; every term found counts toward the score.
    assert set(clf.suggest("路灯不亮")[0].matched) >= {"路灯", "路灯不亮"}
