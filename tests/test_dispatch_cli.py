"""`zhizhi dispatch train | evaluate | predict` on small CSV files, and department labels from real replies."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_dispatch import FILLER, TOPICS
from typer.testing import CliRunner

from zhizhi.cli import app
from zhizhi.geo.demo_city import find_shared_data

runner = CliRunner()
NAMES = {"I09": "教育文体", "I10": "劳动和社会保障", "I06": "城乡建设"}


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def labelled_rows(shift: int = 0) -> list[dict[str, str]]:
    rows = []
    for code, topics in TOPICS.items():
        for i, topic in enumerate(topics):
            for j, filler in enumerate(FILLER):
                rows.append({"subject": f"关于{topic}", "text": f"{filler}，{topics[(i + j + shift) % len(topics)]}",
                             "label": NAMES[code]})
    return rows


def test_train_evaluate_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIZHI_DATA_DIR", str(tmp_path / "var"))
    train_csv = write_csv(tmp_path / "train.csv", labelled_rows())
    seg_csv = write_csv(tmp_path / "seg.csv", [{"text_segmented": "学校 乱收费 老师", "label": "教育文体"},
                                               {"text_segmented": "公司 拖欠 工资", "label": "劳动和社会保障"}])
    r = runner.invoke(app, ["dispatch", "train", "--data", str(train_csv), "--data", str(seg_csv), "--folds", "3"])
    assert r.exit_code == 0, r.output
    assert "cv_macro_f1:" in r.output and "scored on raw text" in r.output
    models = list((tmp_path / "var" / "models").glob("dispatch-category-*.npz"))
    assert len(models) == 1
    test_csv = write_csv(tmp_path / "test.csv", [{"text": f"{r['subject']}{r['text']}", "label": r["label"]}
                                                 for r in labelled_rows(shift=2)])
    r = runner.invoke(app, ["dispatch", "evaluate", "--data", str(test_csv)])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("macro_f1: "))
    assert 0.8 <= float(line.split()[1]) <= 1.0
    reports = tmp_path / "var" / "reports"
    report = json.loads(next(reports.glob("*.json")).read_text(encoding="utf-8"))
    assert set(report["labels"]) == {"I06", "I09", "I10"} and len(report["confusion"]) == 3
    assert next(reports.glob("*.png")).read_bytes()[:4] == b"\x89PNG"
    out = tmp_path / "pred.csv"
    r = runner.invoke(app, ["dispatch", "predict", "--data", str(test_csv), "--out", str(out)])
    assert r.exit_code == 0, r.output
    with open(out, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {"predicted_label", "confidence", "top3", "auto"} <= set(rows[0])
    assert len(rows[0]["top3"].split("|")) == 3
    right = sum(1 for row in rows if row["predicted_label"] == {v: k for k, v in NAMES.items()}[row["label"]])
    assert right / len(rows) >= 0.8


def test_bad_inputs_are_refused_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIZHI_DATA_DIR", str(tmp_path / "var"))
    r = runner.invoke(app, ["dispatch", "train", "--data", str(write_csv(tmp_path / "x.csv", [{"text": "a"}]))])
    assert r.exit_code == 1 and "label" in r.output
    r = runner.invoke(app, ["dispatch", "evaluate", "--data", str(tmp_path / "x.csv")])
    assert r.exit_code == 1 and "no category model" in r.output
    (tmp_path / "var" / "models").mkdir(parents=True)
    (tmp_path / "var" / "models" / "dispatch-category-1.npz").write_bytes(b"garbage")
    r = runner.invoke(app, ["dispatch", "predict", "--data", str(tmp_path / "x.csv"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "corrupt" in r.output


SHARED = find_shared_data()


@pytest.mark.skipif(SHARED is None or not (SHARED / "complaints").is_dir(), reason="shared data folder absent")
def test_department_labels_from_real_replies() -> None:
    from zhizhi.dispatch.corpus import REPLIES, read_rows
    from zhizhi.dispatch.departments import extract_department

    assert SHARED is not None
    rows = {r["id"]: r for r in read_rows(SHARED / "complaints" / REPLIES)}
    labelled = [d for r in rows.values() if (d := extract_department(r["reply"])) is not None]
    assert 0.5 < len(labelled) / len(rows) < 0.7
    # The hand-checked sample still gets exactly the labels that were checked.
    check = Path(__file__).resolve().parents[1] / "src/zhizhi/data/dispatch/department_check.csv"
    lines = [x.split(",") for x in check.read_text(encoding="utf-8").splitlines()
             if x and not x.startswith(("#", "id,"))]
    assert len(lines) == 100
    for msg_id, label, level, _ok in lines:
        d = extract_department(rows[msg_id]["reply"])
        assert d is not None and (d.department_code, d.level.name.lower()) == (label, level), msg_id
    assert extract_department("网友：您好！留言已收悉") is None
    d = extract_department("您好，您反映的问题已转交县住建局核处。2018年5月24日")
    assert d is not None and d.department_code == "housing" and d.level.name == "DISTRICT"
