"""The results as static web pages, written by `report`: for every results folder an
`index.html` (the leaderboard, sortable by any column and filterable by family, estimator
and dataset; a chosen baseline's paired differences; the figures) and a page per model
(training and budget curves, the sample grids, the bound's terms, its rows, the kept
model and the exact `score` and `sample` commands); and `index.html` at the top, with
every folder's models in one leaderboard and links to each folder's page.

The pages work offline and from files: no server, no network, no external script or
style; what they need (a few lines of JavaScript and CSS) is inline, and curves are
inline SVG.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import re
from pathlib import Path

import pandas as pd

from genvar_bench.atomic import write_text_atomic

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.8em 0}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f3f3f3;cursor:pointer;user-select:none}td:first-child,th:first-child{text-align:left}
th[data-order=asc]::after{content:" \\25B2"}th[data-order=desc]::after{content:" \\25BC"}
td{white-space:nowrap}td.text{text-align:left;white-space:normal}tr.hidden{display:none}.note{color:#555;max-width:60em}
.filters label{margin-right:1em}img.figure{max-width:100%;border:1px solid #eee;margin:.4em 0}
code,pre{background:#f6f6f6;padding:.1em .3em}pre{padding:.6em;overflow-x:auto}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.3em}
"""

SCRIPT = """
function cellKey(row, index, numeric) {
  const cell = row.cells[index];
  const text = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
  if (!numeric) return text.toLowerCase();
  const value = parseFloat(text);
  return isNaN(value) ? null : value;
}
function sortBy(header) {
  const table = header.closest('table'), body = table.tBodies[0];
  const index = Array.from(header.parentNode.children).indexOf(header);
  const numeric = header.dataset.type === 'number';
  const ascending = header.dataset.order !== 'asc';
  table.querySelectorAll('th').forEach(h => { delete h.dataset.order; });
  header.dataset.order = ascending ? 'asc' : 'desc';
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellKey(a, index, numeric), y = cellKey(b, index, numeric);
    if (x === null || y === null) return (x === null) - (y === null);  // missing values last
    const order = numeric ? x - y : String(x).localeCompare(String(y));
    return ascending ? order : -order;
  });
  rows.forEach(row => body.appendChild(row));
}
function applyFilters() {
  const chosen = {};
  document.querySelectorAll('select.filter').forEach(s => { chosen[s.dataset.field] = s.value; });
  document.querySelectorAll('table.leaderboard tbody tr').forEach(row => {
    const shown = Object.entries(chosen).every(([field, value]) => !value || row.dataset[field] === value);
    row.classList.toggle('hidden', !shown);
  });
}
function applyBaseline(select) {
  const pairs = JSON.parse(document.getElementById('pairs').textContent);
  const baseline = select.value;
  document.querySelectorAll('table.leaderboard tbody tr').forEach(row => {
    const cell = row.querySelector('td.vs-baseline');
    if (!cell) return;
    const model = row.dataset.model;
    let text = '-', value = '';
    if (baseline && model === baseline) { text = '0 (baseline)'; value = '0'; }
    else if (baseline && pairs[model] && pairs[model][baseline]) {
      const [mean, half] = pairs[model][baseline];
      text = (mean >= 0 ? '+' : '') + mean.toFixed(2) + ' \\u00b1 ' + half.toFixed(2);
      value = String(mean);
    }
    cell.textContent = text;
    cell.dataset.value = value;
  });
}
document.addEventListener('DOMContentLoaded', () => {
  document.querySelectorAll('table.sortable th').forEach(h => h.addEventListener('click', () => sortBy(h)));
  document.querySelectorAll('select.filter').forEach(s => s.addEventListener('change', applyFilters));
  const baseline = document.getElementById('baseline');
  if (baseline) { baseline.addEventListener('change', () => applyBaseline(baseline)); applyBaseline(baseline); }
});
"""

FIGURE_FILES = ("test_nll.png", "budget.png", "posterior_gap.png", "ess.png", "gradient_snr.png",
                "bound_vs_k.png", "training_curves.png", "throughput.png")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<link rel=\"icon\" href=\"data:,\"><title>{_e(title)}</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head>\n<body>\n{body}\n</body></html>\n")


def slug(model: str) -> str:
    """A file name for a model label: readable, and unique by a digest of the label."""
    readable = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:60]
    return f"{readable}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


def _number(value, digits: int = 2, signed: bool = False) -> tuple[str, str]:
    """(shown text, sort value) of a number; '-' and '' where missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return "-", ""
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text, repr(float(value))


def _td(text: str, value: str | None = None, css: str = "") -> str:
    attributes = f' data-value="{_e(value)}"' if value is not None else ""
    attributes += f' class="{css}"' if css else ""
    return f"<td{attributes}>{text}</td>"


def leaderboard_rows(summary: pd.DataFrame, folder: Path, link_prefix: str,
                     where: str = "") -> list[dict]:
    """The leaderboard's entries of one folder's summary (`tables.summarize`)."""
    from genvar_bench.figures import family_of

    entries = []
    for _, line in summary.iterrows():
        entries.append({
            "model": line["model"], "family": family_of(str(line["method"])),
            "dataset": folder.parent.name, "folder": where, "link": f"{link_prefix}pages/{slug(line['model'])}.html",
            "test_nll": line["test_nll"], "sd": line.get("test_nll_sd"), "seeds": line["seeds"],
            "ci95": line.get("test_nll_ci95"), "vs_best": line.get("vs_best"),
            "vs_best_ci95": line.get("vs_best_ci95"), "estimator": line["estimator"],
            "epochs": line.get("epochs"), "published": line.get("published") or "",
        })
    return entries


def leaderboard_html(entries: list[dict], with_baseline: bool, with_dataset: bool) -> str:
    """The sortable, filterable leaderboard table, with its filters above it."""
    def options(field: str) -> str:
        values = sorted({str(entry[field]) for entry in entries})
        return "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)

    filters = ['<p class="filters">Filter: ']
    fields = [("family", "family"), ("estimator", "estimator")] + ([("dataset", "dataset")] if with_dataset else [])
    for field, label in fields:
        filters.append(f'<label>{label} <select class="filter" data-field="{field}">'
                       f'<option value="">all</option>{options(field)}</select></label>')
    filters.append("</p>")
    headers = [("model", "text"), ("family", "text")] + (
        [("dataset", "text"), ("results folder", "text")] if with_dataset else []) + [
        ("test NLL (nats)", "number"), ("sd over seeds", "number"), ("seeds", "number"),
        ("95% CI (test examples)", "number"), ("vs best (paired)", "number")] + (
        [("vs baseline (paired)", "number")] if with_baseline else []) + [
        ("estimator", "text"), ("epochs", "number"), ("published (its own setting)", "text")]
    head = "".join(f'<th data-type="{kind}">{_e(name)}</th>' for name, kind in headers)
    rows = []
    for entry in entries:
        nll, nll_value = _number(entry["test_nll"])
        sd, sd_value = _number(entry["sd"])
        ci, ci_value = _number(entry["ci95"])
        vs, vs_value = _number(entry["vs_best"], signed=True)
        if vs != "-":
            vs += f" ± {_number(entry['vs_best_ci95'])[0]}"
        cells = [f'<td class="text"><a href="{_e(entry["link"])}">{_e(entry["model"])}</a></td>',
                 _td(_e(entry["family"]), css="text")]
        if with_dataset:
            cells += [_td(_e(entry["dataset"]), css="text"), _td(_e(entry["folder"]), css="text")]
        cells += [_td(nll, nll_value), _td(sd, sd_value), _td(str(entry["seeds"]), str(entry["seeds"])),
                  _td("± " + ci if ci != "-" else ci, ci_value), _td(vs, vs_value)]
        if with_baseline:
            cells.append(_td("-", "", css="vs-baseline"))
        epochs, epochs_value = _number(entry["epochs"], digits=0)
        cells += [_td(_e(entry["estimator"]), css="text"), _td(epochs, epochs_value),
                  _td(_e(entry["published"]) or "-", css="text")]
        rows.append(f'<tr data-model="{_e(entry["model"])}" data-family="{_e(entry["family"])}" '
                    f'data-estimator="{_e(entry["estimator"])}" data-dataset="{_e(entry["dataset"])}">'
                    + "".join(cells) + "</tr>")
    return ("".join(filters) + '<table class="sortable leaderboard"><thead><tr>' + head
            + "</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>")


def svg_chart(series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str,
              log_x: bool = False, width: int = 560, height: int = 300) -> str:
    """A line chart of named (x, y) series as inline SVG, with its axes' ranges written."""
    points = [(x, y) for values in series.values() for x, y in values
              if math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x)]
    if not points:
        return "<p>(no points)</p>"
    tx = (lambda x: math.log10(x)) if log_x else (lambda x: x)
    xs, ys = [tx(x) for x, _ in points], [y for _, y in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    left, right, top, bottom = 60, 10, 10, 40
    sx = lambda x: left + (tx(x) - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: top + (y1 - y) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 18 * len(series)}" '
             f'role="img" aria-label="{_e(y_label)} against {_e(x_label)}">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             f'fill="none" stroke="#999"/>']
    for value, anchor, y in ((y1, "end", top + 10), (y0, "end", height - bottom)):
        parts.append(f'<text x="{left - 4}" y="{y}" font-size="11" text-anchor="{anchor}">{value:.2f}</text>')
    low, high = (10 ** x0, 10 ** x1) if log_x else (x0, x1)
    parts.append(f'<text x="{left}" y="{height - bottom + 14}" font-size="11">{low:g}</text>')
    parts.append(f'<text x="{width - right}" y="{height - bottom + 14}" font-size="11" text-anchor="end">{high:g}</text>')
    parts.append(f'<text x="{(left + width) / 2}" y="{height - 8}" font-size="12" text-anchor="middle">'
                 f'{_e(x_label)}{" (log)" if log_x else ""}</text>')
    parts.append(f'<text x="12" y="{(top + height - bottom) / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(top + height - bottom) / 2})">{_e(y_label)}</text>')
    for index, (name, values) in enumerate(series.items()):
        colour = palette[index % len(palette)]
        kept = [(x, y) for x, y in values if math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in kept)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        if len(kept) < 12:
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in kept]
        parts.append(f'<text x="{left}" y="{height + 14 + 18 * index}" font-size="11" fill="{colour}">'
                     f'&#9632; {_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _artifact(row) -> str:
    """The row's artifact name (its files' stem), or "" (rows from before artifacts)."""
    value = row.get("artifact")
    return value if isinstance(value, str) else ""


def _commands(row, folder: Path) -> str:
    """The exact `score` and `sample` commands of a row's kept model, run from the folder
    that holds the results folder (the repository root for results/), with the --plugin and
    --data-dir they need."""
    from genvar_bench.registry import METHODS
    from genvar_bench.saved import ModelFileError, read_metadata

    try:
        where = folder.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        where = folder
    model = where / "models" / f"{_artifact(row)}.safetensors"
    plugin = ""
    record = METHODS.get(str(row["method"]))
    source_text = record.plugin if record is not None else None
    try:  # the kept model names the plug-in it was trained with
        source_text = read_metadata(folder / "models" / f"{_artifact(row)}.json").get("plugin") or source_text
    except ModelFileError:
        pass
    if source_text:
        source = Path(source_text)
        if source.suffix == ".py":
            try:
                source = source.resolve().relative_to(Path.cwd().resolve())
            except ValueError:
                if (Path("examples") / source.name).is_file():
                    source = Path("examples") / source.name
        plugin = f" --plugin {source.as_posix()}"
    data = " --data-dir ../shared/data" if row["dataset"] in ("mnist", "fashion-mnist", "fashion-mnist-grey") else ""
    return (f"python -m genvar_bench score {model.as_posix()}{plugin}{data}\n"
            f"python -m genvar_bench sample {model.as_posix()} --num 64 --out samples.png{plugin}")


def model_page(line, rows: pd.DataFrame, folder: Path, out_dir: Path, title: str) -> str:
    """A model's page: its figures, curves, bound's terms, rows and commands."""
    model = line["model"]
    body = [f'<p><a href="../index.html">&larr; {_e(title)}</a></p>', f"<h1>{_e(model)}</h1>",
            f'<p>Test NLL {line["test_nll"]:.2f} nats'
            + (f' ± {line["test_nll_sd"]:.2f} (sd over {line["seeds"]} seeds)'
               if not pd.isna(line.get("test_nll_sd", math.nan)) else f' ({line["seeds"]} seed)')
            + f', estimator {_e(line["estimator"])}, {_number(line.get("epochs"), 0)[0]} epochs.</p>']
    histories = {}
    for _, row in rows.iterrows():
        path = folder / "histories" / f"{_artifact(row)}.csv"
        if _artifact(row) and path.is_file():
            history = pd.read_csv(path)
            histories[f"seed {row['seed']} ({row['device']}, {row['backend']})"] = list(
                zip(history["epoch"].astype(float), history["loss"].astype(float)))
    if histories:
        body += ["<h2>Training curve</h2>",
                 '<p class="note">The training loss per pass: the bound for the latent-variable '
                 "models and diffusion; the DAE's is its reconstruction, the RBMs' the CD surrogate "
                 "(neither is a bound in nats on -log p(x)).</p>",
                 svg_chart(histories, "training passes", "training loss")]
    curves = {}
    estimator = ""
    for _, row in rows.iterrows():
        if isinstance(row.get("budget_curve"), str) and row["budget_curve"]:
            points = json.loads(row["budget_curve"])
            curves[f"seed {row['seed']}"] = [(float(p["epochs"]), float(p["test_nll"])) for p in points]
            estimator = str(row.get("budget_curve_estimator", ""))
    if curves:
        body += ["<h2>Test NLL against the training budget</h2>",
                 f'<p class="note">At the end of each stage of the IWAE schedule, by {_e(estimator)}.</p>',
                 svg_chart(curves, "training passes", "test NLL, nats", log_x=True)]
    terms = [name for name in ("test_bound", "test_reconstruction", "test_kl", "test_iw_bound_k1",
                               "test_iw_bound_k5", "test_iw_bound_k50", "test_iw_bound_k500",
                               "test_ess_mean", "test_ess_p1", "grad_snr_q", "grad_snr_p",
                               "grad_snr_q_init", "grad_snr_p_init", "test_log_z",
                               "test_neg_free_energy", "test_cd_objective")
             if name in rows and pd.to_numeric(rows[name], errors="coerce").notna().any()]
    if terms:
        body.append("<h2>The bound's terms and diagnostics (mean over seeds)</h2><table><tbody>")
        for name in terms:
            value = pd.to_numeric(rows[name], errors="coerce").mean()
            body.append(f'<tr><td>{_e(name)}</td><td>{value:.4g}</td></tr>')
        body.append("</tbody></table>")
        gap = line.get("elbo_gap")
        if gap is not None and not pd.isna(gap):
            body.append(f'<p>ELBO - NLL (E KL(q(tau|x) || p(tau|x))): {gap:.2f} ± '
                        f'{line.get("elbo_gap_ci95", math.nan):.2f}; k-sample bound - NLL: '
                        f'{line.get("k_gap", math.nan):.2f} ± {line.get("k_gap_ci95", math.nan):.2f} nats '
                        f"(95% intervals over test examples; `diagnostics.posterior_gaps`).</p>")
    body.append("<h2>Rows</h2><table class=\"sortable\"><thead><tr>"
                + "".join(f'<th data-type="{kind}">{name}</th>' for name, kind in (
                    ("seed", "number"), ("device", "text"), ("backend", "text"), ("test NLL", "number"),
                    ("test bound", "number"), ("train ex/s", "number"), ("commit", "text"),
                    ("kept model", "text")))
                + "</tr></thead><tbody>")
    commands = []
    for _, row in rows.sort_values("seed").iterrows():
        artifact = _artifact(row)
        model_file = folder / "models" / f"{artifact}.safetensors"
        kept = f"models/{artifact}.safetensors" if artifact and model_file.is_file() else (
            f"models/{artifact}.safetensors (not committed)" if artifact else "-")
        body.append("<tr>" + "".join([
            _td(str(row["seed"]), str(row["seed"])), _td(_e(row["device"]), css="text"),
            _td(_e(row["backend"]), css="text"), _td(*_number(row["test_nll"], 4)),
            _td(*_number(row["test_bound"], 4)), _td(*_number(row.get("train_examples_per_s"), 0)),
            _td(_e(row.get("git_commit", "")), css="text"), _td(_e(kept), css="text")]) + "</tr>")
        if artifact:
            commands.append(_commands(row, folder))
    body.append("</tbody></table>")
    grids = [_artifact(row) for _, row in rows.iterrows() if _artifact(row)
             and (folder / "samples" / f"{_artifact(row)}.png").is_file()]
    if grids:
        body.append("<h2>Samples</h2>")
        body += [f'<img class="figure" src="../samples/{_e(artifact)}.png" alt="samples of {_e(model)}, {_e(artifact)}">'
                 for artifact in grids[:3]]
    if commands:
        body += ["<h2>Use the kept model</h2>", "<p>From the repository root:</p>",
                 "<pre>" + _e("\n".join(commands)) + "</pre>"]
    return _page(f"{model}: {title}", "\n".join(body))


def folder_page(folder: Path, out_dir: Path,
                baseline: str | None = None) -> tuple[list[Path], pd.DataFrame]:
    """index.html of one results folder and its model pages: the files written and the
    folder's summary (`tables.summarize`)."""
    from genvar_bench.results import read_results
    from genvar_bench.tables import _group_labels, _model_groups, finished, summarize

    table = finished(read_results(folder))
    if table.empty:
        return [], pd.DataFrame()
    summary = summarize(table, folder)
    table = table.assign(_group=_model_groups(table))
    table["model"] = table["_group"].map(_group_labels(table))
    title = f"{folder.parent.name}, profile {folder.name}"
    where = _relative(folder, out_dir)
    if where != f"{folder.parent.name}/{folder.name}":  # a sweep's folder: say which
        title = f"{where}: {title}"
    entries = leaderboard_rows(summary, folder, "")
    pairs = summary.attrs.get("pairs", {})
    body = [f'<p><a href="{_e(_relative(out_dir / "index.html", folder))}">&larr; all results</a></p>',
            f"<h1>{_e(title)}</h1>",
            '<p class="note">Test NLL in nats, lower is better: mean over seeds. The estimator '
            "differs by method (importance sampling, a bound, or AIS for the RBMs): compare across "
            "estimators with care. 95% CI: over test examples. vs best / vs baseline: the paired "
            "mean difference on the same test examples, ± its 95% interval. Click a header to sort.</p>"]
    if pairs:
        options = "".join(f'<option value="{_e(m)}"{" selected" if m == baseline else ""}>{_e(m)}</option>'
                          for m in sorted(pairs))
        body.append(f'<p><label>Compare against <select id="baseline"><option value="">(choose a model)'
                    f"</option>{options}</select></label></p>")
        body.append('<script type="application/json" id="pairs">'
                    + json.dumps({m: {o: [round(v[0], 6), round(v[1], 6)] for o, v in others.items()
                                      if math.isfinite(v[0]) and math.isfinite(v[1])}
                                  for m, others in pairs.items()}).replace("</", "<\\/")
                    + "</script>")
    body.append(leaderboard_html(entries, bool(pairs), with_dataset=False))
    figures_present = [name for name in FIGURE_FILES if (folder / "figures" / name).is_file()]
    if figures_present:
        body.append("<h2>Figures</h2>")
        body += [f'<p><img class="figure" src="figures/{name}" alt="{_e(name)}"></p>' for name in figures_present]
    body.append('<p><a href="results.md">results.md</a> (every row) &middot; <a href="results.csv">results.csv</a></p>')
    written = [write_text_atomic(folder / "index.html", _page(title, "\n".join(body)))]
    for _, line in summary.iterrows():
        rows = table[table["model"] == line["model"]]
        path = folder / "pages" / f"{slug(line['model'])}.html"
        written.append(write_text_atomic(path, model_page(line, rows, folder, out_dir, title)))
    stale = {path for path in (folder / "pages").glob("*.html")} - set(written)
    for path in stale:
        path.unlink()
    return written, summary


def _relative(target: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(target, start)).as_posix()


def write_pages(out_dir: str | Path, baseline: str | None = None) -> list[Path]:
    """Every results folder's pages under out_dir, and out_dir/index.html over them all."""
    from genvar_bench.tables import results_folders

    out_dir = Path(out_dir)
    written: list[Path] = []
    entries: list[dict] = []
    folders = []
    for folder in results_folders(out_dir):
        pages, summary = folder_page(folder, out_dir, baseline)
        if not pages:
            continue
        written += pages
        folders.append(folder)
        relative = _relative(folder, out_dir)
        entries += leaderboard_rows(summary, folder, relative + "/", relative)
    if not folders:
        return written
    links = "".join(f'<li><a href="{_e(_relative(folder, out_dir))}/index.html">{_e(_relative(folder, out_dir))}</a></li>'
                    for folder in folders)
    body = ["<h1>genvar-bench results</h1>",
            '<p class="note">Every model of every results folder: test NLL in nats (lower is better), '
            "mean over seeds. Numbers from different datasets, binarizations, budgets or estimators "
            "are not comparable: filter by dataset and estimator. vs best is the paired difference to "
            "the best model of its own folder. Click a header to sort; open a model for its curves, "
            "samples and commands.</p>",
            f"<h2>Results folders</h2><ul>{links}</ul>",
            "<h2>Leaderboard</h2>", leaderboard_html(entries, False, with_dataset=True)]
    written.append(write_text_atomic(out_dir / "index.html", _page("genvar-bench results", "\n".join(body))))
    return written
