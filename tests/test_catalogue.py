"""The catalogue: packaged data quality, rule resolution, deadlines, and validation on load."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from zhizhi.adapters.catalogue_files import ENV_VAR, PACKAGED_DIR, load_catalogue
from zhizhi.domain.calendar import Duration
from zhizhi.domain.catalogue import (
    REQUIRED_STEPS,
    Catalogue,
    Category,
    DeadlineSettings,
    Department,
    EscalationPolicy,
    Kind,
    ResponsibilityRule,
    Severity,
)
from zhizhi.domain.errors import NotFound, ValidationFailed
from zhizhi.domain.places import Level

CORPUS_LABELS = ("城乡建设", "环境保护", "交通运输", "教育文体", "劳动和社会保障", "商贸旅游", "卫生计生")


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue(PACKAGED_DIR)


# -- the packaged data ----------------------------------------------------------------------


def test_size(catalogue: Catalogue) -> None:
    majors = catalogue.children(None)
    assert 15 <= len(majors) <= 20
    assert 80 <= len(catalogue.leaves()) <= 120
    assert {c.kind for c in majors} == {Kind.COMPONENT, Kind.INCIDENT}


def test_codes_follow_the_scheme(catalogue: Catalogue) -> None:
    for category in catalogue.categories():
        prefix = "C" if category.kind is Kind.COMPONENT else "I"
        if category.is_major:
            assert re.fullmatch(rf"{prefix}\d\d", category.code), category.code
        else:
            assert re.fullmatch(rf"{prefix}\d{{4}}", category.code), category.code
            assert category.code.startswith(category.parent_code or "?")


def test_names_are_unique(catalogue: Catalogue) -> None:
    names = [c.name_zh for c in catalogue.categories()]
    assert len(names) == len(set(names))


def test_corpus_labels_are_incident_majors_with_children(catalogue: Catalogue) -> None:
    for label in CORPUS_LABELS:
        category = catalogue.find_category(label)
        assert category is not None and category.is_major and category.kind is Kind.INCIDENT, label
        assert len(catalogue.children(category.code)) >= 4, label


def test_gbt30428_examples_present(catalogue: Catalogue) -> None:
    for name, kind in [("窨井盖", Kind.COMPONENT), ("路灯", Kind.COMPONENT), ("消防栓", Kind.COMPONENT),
                       ("交通标志", Kind.COMPONENT), ("暴露垃圾", Kind.INCIDENT), ("乱堆物料", Kind.INCIDENT),
                       ("占道经营", Kind.INCIDENT), ("违规广告", Kind.INCIDENT), ("道路积水", Kind.INCIDENT),
                       ("燃气泄漏", Kind.INCIDENT), ("违章停车", Kind.INCIDENT), ("噪音扰民", Kind.INCIDENT),
                       ("拖欠工资", Kind.INCIDENT), ("社保缴纳", Kind.INCIDENT), ("入学招生", Kind.INCIDENT)]:
        category = catalogue.find_category(name)
        assert category is not None and category.kind is kind and not category.is_major, name


def test_most_leaves_have_keywords(catalogue: Catalogue) -> None:
    leaves = catalogue.leaves()
    with_keywords = [c for c in leaves if c.keywords]
    assert len(with_keywords) >= 0.95 * len(leaves)
    assert "欠薪" in catalogue.category("I1001").keywords


def test_every_leaf_resolves_citywide(catalogue: Catalogue) -> None:
    for category in catalogue.leaves():
        answer = catalogue.responsible(category.code, [])
        department = catalogue.department(answer.department_code)
        assert answer.level in department.levels, category.code
        for step in REQUIRED_STEPS:
            assert catalogue.deadline(category.code, step).value > 0, (category.code, step)


@pytest.mark.parametrize(
    ("name", "department", "level"),
    [("暴露垃圾", "grid", Level.GRID), ("乱堆物料", "residents_committee", Level.COMMUNITY),
     ("违章停车", "enforcement", Level.STREET), ("拖欠工资", "hrss", Level.DISTRICT),
     ("燃气泄漏", "utilities", Level.DISTRICT), ("医疗保险", "medical_insurance", Level.DISTRICT)],
)
def test_handling_levels(catalogue: Catalogue, name: str, department: str, level: Level) -> None:
    category = catalogue.find_category(name)
    assert category is not None
    answer = catalogue.responsible(category.code, ["330100", "330106", "330106001"])
    assert (answer.department_code, answer.level) == (department, level)


def test_severity_inherits_from_major(catalogue: Catalogue) -> None:
    assert catalogue.category("I0402").severity is Severity.URGENT
    assert catalogue.category("I0401").severity is Severity.HIGH  # from 突发事件
    assert catalogue.category("I01").severity is Severity.NORMAL


def test_packaged_deadlines(catalogue: Catalogue) -> None:
    assert catalogue.deadline("I0402", "handle") == Duration.parse("2h")  # 小类
    assert catalogue.deadline("I0401", "handle") == Duration.parse("4h")  # 大类 突发事件
    assert catalogue.deadline("C0204", "handle") == Duration.parse("3wd")  # 大类 道路交通
    assert catalogue.deadline("I0601", "dispatch") == Duration.parse("2h")  # defaults
    assert catalogue.deadline("I0101", "accept") == Duration.parse("2h")
    assert catalogue.reopen_days("I1001") == 15
    assert catalogue.reopen_days("I0101") == 7
    assert catalogue.escalation("I0402") == EscalationPolicy(1.0, 1, 2.0)
    assert catalogue.escalation("I0501") == EscalationPolicy(4.0, 1, 48.0)
    with pytest.raises(NotFound):
        catalogue.deadline("I0101", "lunch")


def test_navigation(catalogue: Catalogue) -> None:
    assert [c.code for c in catalogue.children("I10")][:2] == ["I1001", "I1002"]
    assert all(c.kind is Kind.COMPONENT for c in catalogue.categories("component"))
    assert all(c.kind is Kind.INCIDENT for c in catalogue.categories(Kind.INCIDENT))
    assert catalogue.department("hrss").name_zh == "人力资源和社会保障"
    with pytest.raises(NotFound):
        catalogue.category("Z99")
    with pytest.raises(NotFound):
        catalogue.department("nobody")
    with pytest.raises(NotFound):
        catalogue.children("Z99")


def test_find_category(catalogue: Catalogue) -> None:
    assert catalogue.find_category("I0501").name_zh == "违章停车"  # type: ignore[union-attr]
    assert catalogue.find_category(" i0501 ").code == "I0501"  # type: ignore[union-attr]
    assert catalogue.find_category("违章停车").code == "I0501"  # type: ignore[union-attr]
    assert catalogue.find_category("illegal parking").code == "I0501"  # type: ignore[union-attr]
    assert catalogue.find_category("拖欠").code == "I1001"  # type: ignore[union-attr]
    assert catalogue.find_category("其他") is None  # ambiguous fragment
    assert catalogue.find_category("") is None
    assert catalogue.find_category("火星移民") is None


# -- rule resolution, on a catalogue built in code -----------------------------------------


def small_catalogue(
    rules: list[ResponsibilityRule] | None = None, deadlines: list[DeadlineSettings] | None = None
) -> Catalogue:
    categories = [
        Category("I01", "市容环境", "Street appearance", Kind.INCIDENT, severity=Severity.NORMAL),
        Category("I0101", "暴露垃圾", "Exposed rubbish", Kind.INCIDENT, "I01"),
        Category("I0102", "乱堆物料", "Piled materials", Kind.INCIDENT, "I01", severity=Severity.LOW),
    ]
    all_levels = frozenset(Level)
    departments = [Department(code, code, code, all_levels) for code in "ABCDE"]
    if rules is None:
        rules = [
            ResponsibilityRule("I01", "*", "A", Level.DISTRICT),
            ResponsibilityRule("I0101", "*", "B", Level.GRID),
            ResponsibilityRule("I01", "3301", "C", Level.DISTRICT),
            ResponsibilityRule("I0101", "330102", "D", Level.STREET),
            ResponsibilityRule("I0102", "330102", "E", Level.COMMUNITY),
        ]
    if deadlines is None:
        deadlines = [
            DeadlineSettings(None, {"dispatch": Duration.parse("2h"), "handle": Duration.parse("5wd"),
                                    "verify": Duration.parse("1d")}, reopen_days=3),
        ]
    return Catalogue(categories, departments, rules, deadlines)


def test_most_specific_rule_wins() -> None:
    cat = small_catalogue()
    assert cat.responsible("I0101", []).department_code == "B"  # 小类 over 大类, both citywide
    assert cat.responsible("I0102", []).department_code == "A"  # only the 大类 rule
    assert cat.responsible("I0101", ["3301", "330102", "G-17"]).department_code == "D"
    assert cat.responsible("I0102", ["3301", "330102", "G-17"]).department_code == "E"
    # a longer area wins even over a 小类 rule
    answer = cat.responsible("I0101", ["3301", "330103"])
    assert (answer.department_code, answer.level) == ("C", Level.DISTRICT)
    assert answer.rule.area == "3301"
    # any code of the chain may match (generated grid codes need not share the prefix)
    assert cat.responsible("I0102", ["G-330102-7"]).department_code == "A"
    assert cat.responsible("I01", ["3301"]).department_code == "C"


def test_deadline_inheritance_and_optional_accept() -> None:
    cat = small_catalogue()
    assert cat.deadline("I0101", "verify") == Duration(24, "h")
    assert cat.policy("I0101").accept is None
    with pytest.raises(NotFound):
        cat.deadline("I0101", "accept")
    assert cat.category("I0101").severity is Severity.NORMAL
    assert cat.category("I0102").severity is Severity.LOW


def test_escalation_policy() -> None:
    policy = EscalationPolicy(after_overdue_hours=1, levels_up=1, repeat_every_hours=2)
    assert policy.target_level(Level.GRID, 0.5) is Level.GRID
    assert policy.target_level(Level.GRID, 1) is Level.COMMUNITY
    assert policy.target_level(Level.GRID, 3) is Level.STREET
    assert policy.target_level(Level.STREET, 100) is Level.CITY
    assert EscalationPolicy(24).target_level(Level.STREET, 1000) is Level.DISTRICT


def test_rule_for_a_level_the_department_lacks() -> None:
    departments_rule = ResponsibilityRule("I01", "*", "A", Level.GRID)
    categories = [Category("I01", "市容环境", "", Kind.INCIDENT)]
    with pytest.raises(ValidationFailed, match="no unit at level grid"):
        Catalogue(categories, [Department("A", "A", "A", frozenset({Level.DISTRICT}))], [departments_rule],
                  [DeadlineSettings(None, {s: Duration(1, "h") for s in REQUIRED_STEPS})])


def test_deadline_defaults_must_have_required_steps() -> None:
    with pytest.raises(ValidationFailed, match="lack steps"):
        small_catalogue(deadlines=[DeadlineSettings(None, {"handle": Duration(1, "wd")})])


# -- loading files, and errors that name the file and row ------------------------------------


@pytest.fixture
def city_dir(tmp_path: Path) -> Path:
    target = tmp_path / "city"
    shutil.copytree(PACKAGED_DIR, target)
    return target


def append(path: Path, line: str) -> int:
    """Append a CSV line and return its line number."""
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text + line + "\n", encoding="utf-8")
    return text.count("\n") + 1


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def failure(directory: Path) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        load_catalogue(directory)
    return info.value


def test_unknown_parent(city_dir: Path) -> None:
    row = append(city_dir / "categories.csv", "I9999,I98,incident,无主小类,Orphan,,")
    error = failure(city_dir)
    assert error.details["file"] == "categories.csv" and error.details["row"] == row
    assert "unknown parent" in error.message and f"categories.csv:{row}" in error.message


def test_duplicate_category_code(city_dir: Path) -> None:
    row = append(city_dir / "categories.csv", "I0101,I01,incident,另一个暴露垃圾,Again,,")
    error = failure(city_dir)
    assert (error.details["file"], error.details["row"]) == ("categories.csv", row)
    assert "duplicate" in error.message


def test_kind_mismatch_with_parent(city_dir: Path) -> None:
    append(city_dir / "categories.csv", "I0199,C01,incident,错挂小类,Misfiled,,")
    assert "parent" in failure(city_dir).message


def test_bad_severity(city_dir: Path) -> None:
    row = append(city_dir / "categories.csv", "I0199,I01,incident,测试小类,Test,terrible,")
    error = failure(city_dir)
    assert error.details["row"] == row and "severity" in error.message


def test_rule_with_unknown_department(city_dir: Path) -> None:
    row = append(city_dir / "responsibility.csv", "I0101,330106,nobody,street,")
    error = failure(city_dir)
    assert (error.details["file"], error.details["row"]) == ("responsibility.csv", row)
    assert "unknown department" in error.message


def test_rule_with_unknown_category(city_dir: Path) -> None:
    row = append(city_dir / "responsibility.csv", "I7777,*,grid,grid,")
    error = failure(city_dir)
    assert (error.details["file"], error.details["row"]) == ("responsibility.csv", row)


def test_rule_with_bad_level(city_dir: Path) -> None:
    row = append(city_dir / "responsibility.csv", "I0101,330106,grid,province,")
    error = failure(city_dir)
    assert error.details["row"] == row and "level" in error.message


def test_duplicate_rule(city_dir: Path) -> None:
    row = append(city_dir / "responsibility.csv", "I0101,*,grid,grid,again")
    assert failure(city_dir).details["row"] == row


def test_leaf_without_citywide_rule(city_dir: Path) -> None:
    replace_in(city_dir / "responsibility.csv", "I07,*,ecology,district,\n", "")
    error = failure(city_dir)
    assert error.details["file"] == "categories.csv" and "I07" in error.message


def test_deadlines_for_unknown_category(city_dir: Path) -> None:
    (city_dir / "deadlines.toml").write_text(
        (city_dir / "deadlines.toml").read_text(encoding="utf-8") + '\n[categories.X42]\nhandle = "1wd"\n',
        encoding="utf-8",
    )
    error = failure(city_dir)
    assert error.details == {"file": "deadlines.toml", "row": "categories.X42", "category": "X42"}


def test_bad_duration(city_dir: Path) -> None:
    replace_in(city_dir / "deadlines.toml", 'handle = "5wd"', 'handle = "5 weeks"')
    error = failure(city_dir)
    assert error.details == {"file": "deadlines.toml", "row": "defaults.handle"}


def test_unknown_deadline_key(city_dir: Path) -> None:
    replace_in(city_dir / "deadlines.toml", "reopen_days = 7", "reopen_dayz = 7")
    assert failure(city_dir).details["row"] == "defaults.reopen_dayz"


def test_missing_file(city_dir: Path) -> None:
    (city_dir / "departments.csv").unlink()
    assert "departments.csv" in failure(city_dir).message


def test_comments_and_bom_are_accepted(city_dir: Path) -> None:
    path = city_dir / "responsibility.csv"
    path.write_text("\ufeff" + path.read_text(encoding="utf-8") + "# a comment,,,,\n\n", encoding="utf-8")
    assert len(load_catalogue(city_dir).rules) == len(load_catalogue(PACKAGED_DIR).rules)


def test_env_var_overrides_the_packaged_folder(city_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    append(city_dir / "responsibility.csv", "I0501,330106,traffic_police,district,本区交警管违停")
    monkeypatch.setenv(ENV_VAR, str(city_dir))
    cat = load_catalogue()
    answer = cat.responsible("I0501", ["330100", "330106", "330106001"])
    assert (answer.department_code, answer.level) == ("traffic_police", Level.DISTRICT)
    assert cat.responsible("I0501", ["330100", "330108"]).department_code == "enforcement"
    monkeypatch.delenv(ENV_VAR)
    assert load_catalogue().responsible("I0501", ["330106"]).department_code == "enforcement"
