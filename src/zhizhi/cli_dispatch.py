"""Commands for smart dispatch: train, evaluate and predict the text classifier.

`zhizhi dispatch train --data A.csv --data B.csv` (repeat `--data` for several files).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

dispatch_app = typer.Typer(help="Smart dispatch: train, evaluate and predict the text classifier.",
                           no_args_is_help=True)

# Sub-command groups this module adds to `zhizhi`, by name.
COMMANDS: dict[str, typer.Typer] = {"dispatch": dispatch_app}

console = Console()
err = Console(stderr=True)
KINDS = ("category", "department")


def _settings() -> Any:
    from zhizhi.config import Settings

    return Settings()


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def load_training(paths: list[Path], kind: str, catalogue: Any) -> list[Any]:
    """Examples from CSV files; for departments a file with a `reply` column and no label is labelled
    from its replies (see zhizhi.dispatch.departments)."""
    from zhizhi.dispatch.corpus import department_examples, load_examples, to_category_codes

    examples: list[Any] = []
    for p in paths:
        if not p.is_file():
            raise _fail(f"no such file: {p}")
        with open(p, encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
        if kind == "department" and "label" not in header and "reply" in header:
            examples.extend(department_examples(p))
        else:
            examples.extend(load_examples([p]))
    return to_category_codes(examples, catalogue) if kind == "category" else examples


def decisions_examples(settings: Any, catalogue: Any, kind: str) -> list[Any]:
    """The dispatchers' recorded choices, as training rows (the category's 大类, or the department)."""
    from zhizhi.adapters import db
    from zhizhi.adapters.orm_dispatch import DispatchStore
    from zhizhi.dispatch.corpus import Example
    from zhizhi.dispatch.text import prepare

    engine = db.make_engine(settings.resolved_database_url())
    db.upgrade(engine)
    out = []
    with db.session_factory(engine)() as session:
        for row in DispatchStore(session).decisions():
            if kind == "category":
                cat = catalogue.category(row.chosen_category)
                label = cat.parent_code or cat.code
            else:
                label = row.chosen_department
            out.append(Example(prepare(row.text), label, raw=row.text))
    engine.dispose()
    return out


@dispatch_app.command("train")
def train_cmd(
    data: Annotated[list[Path] | None, typer.Option("--data", help="labelled CSV (repeat for several files)")] = None,
    from_db: Annotated[bool, typer.Option("--from-db", help="add the dispatchers' recorded decisions")] = False,
    kind: Annotated[str, typer.Option(help="category | department")] = "category",
    folds: Annotated[int, typer.Option(help="cross-validation folds (metrics and thresholds)")] = 5,
    out: Annotated[Path | None, typer.Option(help="model folder (default: DATA_DIR/models)")] = None,
    precision: Annotated[float, typer.Option(help="precision target of the auto-dispatch thresholds")] = 0.95,
) -> None:
    """Train a model: cross-validated metrics, calibrated probabilities, per-category thresholds; no pickle."""
    from zhizhi.adapters.catalogue_files import load_catalogue
    from zhizhi.dispatch.corpus import CorpusError, files_hash
    from zhizhi.dispatch.training import params_for, train

    if kind not in KINDS:
        raise _fail(f"--kind must be one of {KINDS}")
    settings = _settings()
    catalogue = load_catalogue(settings.catalogue_dir)
    paths = list(data or [])
    try:
        examples = load_training(paths, kind, catalogue) if paths else []
    except CorpusError as exc:
        raise _fail(str(exc)) from None
    sources = [str(p) for p in paths]
    if from_db:
        db_rows = decisions_examples(settings, catalogue, kind)
        examples.extend(db_rows)
        sources.append(f"database: {len(db_rows)} dispatcher decisions")
    if not examples:
        raise _fail("no training rows: give --data FILE and/or --from-db")
    console.print(f"training a {kind} model on {len(examples)} rows ({sum(1 for e in examples if e.raw)} raw) …")
    model = train(examples, folds=folds, params=params_for(kind, precision_target=precision),
                  data_hash=files_hash(paths) if paths else "", sources=sources)
    model.meta["kind"] = kind
    folder = out or settings.models_dir()
    path = model.save(folder / f"dispatch-{kind}-{model.version}.npz")
    cv = model.meta["cv"]
    console.print(f"model: {path}")
    console.print(f"cv_macro_f1: {cv['macro_f1']:.4f}  (accuracy {cv['accuracy']:.4f}, {cv['folds']}-fold, "
                  f"scored on {cv['scored_on']}, n={cv['n']})")
    auto = cv["auto_dispatch"]
    console.print(f"auto-dispatch at the chosen thresholds: coverage {auto['coverage']:.1%}, "
                  f"precision {auto['precision']:.1%}")
    console.print(f"train_seconds: {model.meta['train_seconds']}")


def _load_model(model: Path | None, kind: str) -> Any:
    from zhizhi.dispatch.advisor import load_latest
    from zhizhi.dispatch.model import ModelError, TextModel

    try:
        m = TextModel.load(model) if model else load_latest(_settings().models_dir(), kind)
    except ModelError as exc:
        raise _fail(str(exc)) from None
    if m is None:
        raise _fail(f"no {kind} model yet: run `zhizhi dispatch train --kind {kind} --data FILE`")
    return m


@dispatch_app.command("evaluate")
def evaluate_cmd(
    data: Annotated[Path, typer.Option("--data", help="CSV with raw `text` (and `subject`) and `label`")],
    model: Annotated[Path | None, typer.Option(help="model file (default: the newest)")] = None,
    kind: Annotated[str, typer.Option(help="category | department")] = "category",
    report: Annotated[Path | None, typer.Option(help="report folder (default: DATA_DIR/reports)")] = None,
) -> None:
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion matrix; JSON report and PNG."""
    from zhizhi.adapters.catalogue_files import load_catalogue
    from zhizhi.dispatch.training import metrics

    m = _load_model(model, kind)
    settings = _settings()
    examples = load_training([data], kind, load_catalogue(settings.catalogue_dir))
    examples = [e for e in examples if e.raw is not None]
    if not examples:
        raise _fail(f"{data}: no raw-text rows (production sees raw text; evaluate on raw text)")
    top = m.predict_top([m.prepare(e.raw) for e in examples], k=1)
    y_true = [e.label for e in examples]
    y_pred = [t[0][0] for t in top]
    labels = sorted(set(m.labels) | set(y_true))
    res = metrics(y_true, y_pred, labels)
    console.print(f"model: {m.version}  rows: {res['n']}")
    console.print(f"accuracy: {res['accuracy']:.4f}")
    console.print(f"macro_f1: {res['macro_f1']:.4f}")
    table = Table("label", "precision", "recall", "f1", "support")
    for lab, v in res["per_class"].items():
        table.add_row(lab, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
    console.print(table)
    cm = Table("true \\ predicted", *labels)
    for lab, row in zip(labels, res["confusion"], strict=True):
        cm.add_row(lab, *map(str, row))
    console.print(cm)
    folder = report or settings.data_dir / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"dispatch-{kind}-eval-{m.version}"
    (folder / f"{stem}.json").write_text(json.dumps({**res, "model_version": m.version, "data": str(data)},
                                                    ensure_ascii=False, indent=2), encoding="utf-8")
    _confusion_png(res["confusion"], labels, folder / f"{stem}.png", f"{kind} model {m.version}")
    console.print(f"report: {folder / (stem + '.json')}  confusion matrix: {folder / (stem + '.png')}")


def _confusion_png(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    a = np.array(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(labels), 1.0 + 0.6 * len(labels)))
    ax.imshow(a, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, str(a[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if a[i, j] > a.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dispatch_app.command("predict")
def predict_cmd(
    data: Annotated[Path, typer.Option("--data", help="CSV with `text` (and optionally `subject`)")],
    out: Annotated[Path, typer.Option("--out", help="CSV written with the predictions added")],
    model: Annotated[Path | None, typer.Option(help="model file (default: the newest)")] = None,
    kind: Annotated[str, typer.Option(help="category | department")] = "category",
) -> None:
    """Add `predicted_label`, `confidence` and `top3` (label:probability|…) to each row."""
    from zhizhi.dispatch.corpus import raw_text, read_rows

    m = _load_model(model, kind)
    if not data.is_file():
        raise _fail(f"no such file: {data}")
    rows = read_rows(data)
    if rows and "text" not in rows[0] and "subject" not in rows[0]:
        raise _fail(f"{data}: needs a `text` (or `subject`) column")
    top = m.predict_top([m.prepare(raw_text(r) or "") for r in rows], k=3)
    fields = list(rows[0].keys()) if rows else ["text"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*fields, "predicted_label", "confidence", "auto", "top3"])
        w.writeheader()
        for r, t in zip(rows, top, strict=True):
            label, conf = t[0]
            w.writerow({**r, "predicted_label": label, "confidence": f"{conf:.4f}",
                        "auto": conf >= m.threshold(label), "top3": "|".join(f"{lab}:{p:.4f}" for lab, p in t)})
    console.print(f"{len(rows)} rows → {out} (model {m.version})")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(dispatch_app())
