"""report.html: one self-contained page (inline CSS, PNGs as data: URIs, no scripts, no links
to anything outside the file), so it opens offline in any browser and can be mailed as is.

Every string that comes from the user's data or files (class names, paths, texts) goes through
`html.escape`.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import PurePath
from typing import Any

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.muted { color: #666; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 8em; }
.card .value { font-size: 1.6em; font-weight: 600; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
thead th { background: #f3f5f8; }
td.diagonal { background: #e8f0fb; font-weight: 600; }
img.figure { max-width: 100%; height: auto; border: 1px solid #eee; }
.mistakes { display: flex; flex-wrap: wrap; gap: 0.8em; }
.mistake { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em; width: 220px; font-size: 0.85em;
           overflow-wrap: anywhere; }
.mistake img { image-rendering: pixelated; max-width: 200px; display: block; margin-bottom: 0.3em; }
.mistake blockquote { margin: 0.3em 0; padding-left: 0.5em; border-left: 3px solid #ccc; }
.wrong { color: #b00020; font-weight: 600; }
details { margin: 0.5em 0; }
"""

DIAGONAL = " class='diagonal'"
SKIPPED_SHOWN = 50


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _cell(value: Any) -> str:
    """A config value as readable text: lists as 32,64 and nested things as JSON."""
    if isinstance(value, (list, tuple)):
        return escape(",".join(map(str, value)) or "(none)")
    if isinstance(value, dict):
        return escape(json.dumps(value, ensure_ascii=False))
    return escape(str(value))


def _key_value_table(values: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{escape(str(k))}</th><td class='text'>{_cell(v)}</td></tr>" for k, v in values.items())
    return f"<table>{rows}</table>"


def _figure(figures: dict[str, bytes], name: str, alt: str) -> str:
    if name not in figures:
        return "<p class='muted'>(figure not available)</p>"
    return f"<img class='figure' src='{data_uri(figures[name])}' alt='{escape(alt)}'>"


def _headline(report: dict[str, Any]) -> str:
    cards = [
        ("accuracy", _number(report["accuracy"])),
        ("macro F1", _number(report["macro_f1"])),
        ("weighted F1", _number(report["weighted_f1"])),
        ("inputs scored", f"{report['n_samples']:,}"),
        ("mistakes", f"{len(report.get('misclassified', [])):,}"),
        ("ECE (15 bins)", _number(report.get("calibration", {}).get("ece"))),
    ]
    return "<div class='cards'>" + "".join(
        f"<div class='card'><div class='muted'>{name}</div><div class='value'>{value}</div></div>" for name, value in cards
    ) + "</div>"


def _baseline(report: dict[str, Any]) -> str:
    """evaluate --baseline: the linear model against the CNN, on the same inputs."""
    baseline = report.get("linear_baseline")
    if not baseline:
        return ""
    if "error" in baseline:
        return f"<h2>Linear baseline</h2><p>None: {escape(baseline['error'])}</p>"
    copies = baseline.get("scored_copies_of_fitted_inputs")
    copies_note = (
        f"<p><b>{copies} of the scored inputs are exact copies of inputs the baseline was fitted on</b>; its "
        "score counts them.</p>" if copies else ""
    )
    from pipelines.baseline import cnn_against_baseline

    gap, verdict = cnn_against_baseline(baseline)
    verdict = f"<b>{verdict}</b>" if gap < 0 else verdict
    return (
        "<h2>Linear baseline</h2>"
        f"<p>A {escape(baseline['model'])}, fitted on the run's {baseline['fitted_on']:,} training and validation "
        f"inputs, scored on the same {baseline['n_samples']:,} inputs: the CNN {verdict} it by {abs(gap):.3f}.</p>"
        "<table><thead><tr><th>model</th><th>accuracy</th><th>macro F1</th></tr></thead><tbody>"
        f"<tr><td>CNN</td><td>{_number(baseline['cnn_accuracy'])}</td><td>{_number(baseline['cnn_macro_f1'])}</td></tr>"
        f"<tr><td>linear baseline</td><td>{_number(baseline['accuracy'])}</td><td>{_number(baseline['macro_f1'])}</td></tr>"
        f"</tbody></table>{copies_note}<p class='muted'>Fitted and scored in {baseline['seconds']:.1f} s.</p>"
    )


def _per_class(report: dict[str, Any]) -> str:
    def cells(s: dict[str, Any]) -> str:
        counted = s.get("in_averages", True)  # reports before the field: every class counted
        return "".join(f"<td>{_number(s[k]) if counted else '-'}</td>" for k in ("precision", "recall", "f1"))

    rows = "".join(
        f"<tr class='class-row'><td>{escape(label)}</td>{cells(s)}<td>{s['support']}</td></tr>"
        for label, s in report["per_class"].items()
    )
    note = "" if all(s.get("in_averages", True) for s in report["per_class"].values()) else (
        "<p class='muted'>-: no test inputs of this class and none predicted as it; not in macro-F1.</p>"
    )
    return (
        "<table><thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{note}"
    )


def _confusion_table(report: dict[str, Any]) -> str:
    labels = report["labels"]
    header = "".join(f"<th>{escape(label)}</th>" for label in labels)
    rows = "".join(
        f"<tr><th>{escape(labels[t])}</th>"
        + "".join(f"<td{DIAGONAL if t == p else ''}>{count}</td>" for p, count in enumerate(row))
        + "</tr>"
        for t, row in enumerate(report["confusion_matrix"])
    )
    opened = " open" if len(labels) <= 15 else ""
    return (
        f"<details{opened}><summary>Counts (rows: true class, columns: predicted class)</summary>"
        f"<table class='confusion'><thead><tr><th>true \\ predicted</th>{header}</tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
    )


def _top_confusions(report: dict[str, Any]) -> str:
    confusions = report.get("top_confusions", [])
    if not confusions:
        return "<p>No class was mistaken for another.</p>"
    rows = "".join(
        f"<tr><td>{escape(c['true'])}</td><td class='text'>{escape(c['predicted'])}</td><td>{c['count']}</td></tr>"
        for c in confusions
    )
    return f"<table><thead><tr><th>true</th><th>predicted as</th><th>inputs</th></tr></thead><tbody>{rows}</tbody></table>"


def _mistakes(previews: list[dict[str, Any]], total: int) -> str:
    if not previews:
        return "<p>No mistakes on this data.</p>"
    cards = []
    for mistake in previews:
        picture = f"<img src='{data_uri(mistake['png'])}' alt='{escape(mistake['input'])}'>" if "png" in mistake else ""
        snippet = f"<blockquote>{escape(mistake['snippet'])}</blockquote>" if "snippet" in mistake else ""
        name = mistake["input"]
        if name != mistake.get("id", name):  # a file: its name, the full path on hover
            name = f"<span title='{escape(name)}'>{escape(PurePath(name).name)}</span>"
        else:
            name = escape(name)
        cards.append(
            f"<div class='mistake'>{picture}{snippet}<div>{name}</div>"
            f"<div>true <b>{escape(mistake['true'])}</b>, predicted <span class='wrong'>{escape(mistake['predicted'])}</span>"
            f" ({mistake['confidence']:.1%})</div></div>"
        )
    note = f"<p class='muted'>The {len(previews)} most confident of {total:,} mistakes; report.json lists all.</p>"
    return note + "<div class='mistakes'>" + "".join(cards) + "</div>"


def _skipped_list(entries: list[dict[str, str]], where: str) -> str:
    if not entries:
        return f"<p>No input skipped in {where}.</p>"
    items = "".join(
        f"<li>{escape(str(e.get('input', '')))}: {escape(str(e.get('reason', '')))}</li>" for e in entries[:SKIPPED_SHOWN]
    )
    more = f"<li>… and {len(entries) - SKIPPED_SHOWN:,} more (see report.json)</li>" if len(entries) > SKIPPED_SHOWN else ""
    return f"<details><summary>{len(entries):,} input(s) skipped in {where}</summary><ul>{items}{more}</ul></details>"


def _data(report: dict[str, Any]) -> str:
    data = report.get("data", {})
    splits = dict(data.get("class_counts", {}))
    splits["scored here"] = data.get("evaluated_class_counts", {})
    columns = list(splits)
    rows = "".join(
        f"<tr><td>{escape(label)}</td>" + "".join(f"<td>{splits[c].get(label, 0)}</td>" for c in columns) + "</tr>"
        for label in report["labels"]
    )
    totals = "<tr><th>total</th>" + "".join(f"<th>{sum(splits[c].values())}</th>" for c in columns) + "</tr>"
    own = "its own held-out test split" if data.get("own_test_split") else "data given with --data"
    copies = data.get("test_copies_of_training_inputs")
    return (
        f"<p>Scored on {escape(scored_location(data))} ({own}); trained on "
        f"{escape(str(data.get('trained_on')))}.</p>"
        + (f"<p><b>{copies} of the scored inputs are exact copies of training inputs</b>; these scores count them.</p>" if copies else "")
        + f"<table><thead><tr><th>class</th>{''.join(f'<th>{escape(c)}</th>' for c in columns)}</tr></thead>"
        f"<tbody>{rows}{totals}</tbody></table>"
        + _skipped_list(data.get("skipped_in_training", []), "training")
        + _skipped_list(data.get("skipped_in_evaluation", []), "this evaluation")
    )


def _model(report: dict[str, Any]) -> str:
    model = report.get("model", {})
    shape = " x ".join(str(d) for d in model.get("input_shape", []))
    return (
        f"<p>{escape(str(model.get('modality', '')))} model, {model.get('parameters', 0):,} parameters, input "
        f"{escape(shape)}; {model.get('epochs_run')} epoch(s) run, best epoch {model.get('best_epoch')}"
        f"{' (interrupted)' if model.get('interrupted') else ''}.</p>"
        "<h3>Model</h3>" + _key_value_table(model.get("spec", {}))
        + "<h3>Training</h3>" + _key_value_table(model.get("train", {}))
        + "<h3>Preprocessing</h3>" + _key_value_table(model.get("preprocess", {}))
    )


def _calibration_table(calibration: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{b['lower']:.3f} – {b['upper']:.3f}</td><td>{b['count']}</td>"
        f"<td>{_number(b['accuracy'])}</td><td>{_number(b['confidence'])}</td></tr>"
        for b in calibration.get("bins", [])
    )
    return (
        "<details><summary>Bin table</summary><table><thead><tr><th>confidence</th><th>inputs</th>"
        f"<th>accuracy</th><th>mean confidence</th></tr></thead><tbody>{rows}</tbody></table></details>"
    )


def scored_location(data: dict[str, Any]) -> str:
    """Where a report's inputs came from, for people: `location`, and the folder of it scored
    (`location` alone is what `compare` matches, as a run trained on it records it)."""
    location, folder = str(data.get("location", "")), data.get("folder")
    return f"{location}, its {folder}/ folder" if folder else location


def render_report(report: dict[str, Any], figures: dict[str, bytes], previews: list[dict[str, Any]]) -> str:
    """The whole page for a report.json dictionary, its figures (PNG bytes by file name) and the
    previews of the most confident mistakes (see `mistake_previews.previews`)."""
    timing = report.get("timing", {})
    calibration = report.get("calibration", {})
    title = f"{report['modality']} run {report['run']}"
    sections = [
        f"<h1>Evaluation report</h1><p class='muted'>{escape(title)} · scored on {escape(scored_location(report['data']))}</p>",
        _headline(report),
        _baseline(report),
        "<h2>Per class</h2>", _per_class(report),
        "<h2>Confusion matrix</h2>",
        _figure(figures, "confusion_matrix.png", "confusion matrix, counts and shares"),
        _confusion_table(report),
        "<h3>Most frequent confusions</h3>", _top_confusions(report),
        "<h2>Training curves</h2>", _figure(figures, "training_curves.png", "loss and accuracy per epoch"),
        "<h2>Calibration</h2>",
        f"<p>Expected calibration error {_number(calibration.get('ece'))}: the average gap between how sure the "
        "model was and how often it was right. The bars should follow the diagonal.</p>",
        _figure(figures, "reliability.png", "reliability diagram"), _calibration_table(calibration),
        "<h2>Most confident mistakes</h2>", _mistakes(previews, len(report.get("misclassified", []))),
        "<h2>Data</h2>", _data(report),
        "<h2>Model</h2>", _model(report),
        "<h2>Timing</h2>", _key_value_table(timing),
        "<h2>Environment</h2>", _key_value_table(report.get("environment", {})),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
