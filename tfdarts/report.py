"""Self-contained HTML report of a search (and optional retrain / results), no TensorFlow.

`build_report` reads a saved search folder (``alphas.npz``, ``history.json``,
``genotype.json``), optionally a retrain folder and result records, and writes into
``out_dir``: ``report.html`` (figures embedded as base64 PNG data URIs, so the file can be
mailed or attached as a pipeline artifact), ``figures/*.png|svg``, ``stats.csv``,
``stats.json`` and, with records, ``results.csv`` / ``results.md``.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfdarts import analysis, contract
from tfdarts.fileio import atomic_open, read_json, write_json
from tfdarts.genotype import Genotype, parse_alphas

FINAL_COLUMNS = ("cell", "entropy_ratio", "entropy_mean", "entropy_min", "entropy_max",
                 "max_weight_mean", "margin_mean", "skip_weight_mean", "none_weight_mean",
                 "skip_top_edges", "skip_count", "param_free_share", "chosen_margin_mean",
                 "guessed_share", "genotype")
"""Columns of the final-epoch statistics table."""

SUMMARY_COLUMNS = ("cell", "entropy_ratio", "max_weight_mean", "margin_mean", "guessed_share",
                   "skip_count", "param_free_share")
"""Columns of the summary's final-snapshot table."""

EPOCH_COLUMNS = ("entropy_ratio", "max_weight_mean", "margin_mean", "skip_weight_mean",
                 "skip_count", "param_free_share", "gene_changed")
"""Per-cell columns of the compact per-epoch table."""

MAX_EPOCH_ROWS = 60
"""The per-epoch HTML table shows at most this many evenly spaced epochs (stats.csv has all)."""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222}
h1{border-bottom:2px solid #ccc;padding-bottom:.3em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em;margin:.4em 0}
.ok{background:#eaf7ea;border-left:4px solid #3a3;padding:.5em 1em}
figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:13px}
pre{background:#f7f7f7;padding:.6em;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:bold}
"""


# --- figures and data --------------------------------------------------------------------


def _final_genotype(run: analysis.SearchRun, normal: np.ndarray,
                    reduce: np.ndarray) -> Optional[Genotype]:
    """The saved genotype, else the one derived from the last finite snapshot."""
    if run.genotype is not None:
        return run.genotype
    if normal.shape[0] == 0:
        return None
    return parse_alphas(normal[-1], reduce[-1], run.primitives, run.nodes)


def _make_figures(fig_dir: str, run: analysis.SearchRun, normal: np.ndarray,
                  reduce: np.ndarray, epochs: List[int], genotype: Optional[Genotype],
                  retrain_history: Optional[Mapping[str, Any]], engine: str) -> Dict[str, List[str]]:
    """Writes every figure into `fig_dir`; returns paths keyed by figure name."""
    figs: Dict[str, List[str]] = {}
    stem = lambda name: os.path.join(fig_dir, name)  # noqa: E731
    for cell in analysis.CELL_TYPES:
        if genotype is not None:
            figs[f"cell_{cell}"] = analysis.plot_cell(
                getattr(genotype, cell), getattr(genotype, cell + "_concat"), stem(f"cell_{cell}"),
                f"{cell} cell", engine=engine)
    if normal.shape[0]:
        cells = {"normal": normal, "reduce": reduce}
        for cell, probs in cells.items():
            figs[f"heatmap_{cell}"] = analysis.plot_alpha_heatmap(
                probs[-1], run.primitives, run.nodes, stem(f"alphas_{cell}_final"),
                f"{cell} cell, epoch {epochs[-1]}")
            figs[f"evolution_{cell}"] = analysis.plot_alpha_evolution(
                probs, run.primitives, run.nodes, stem(f"alphas_{cell}_evolution"),
                f"{cell} cell: alpha weights per epoch", epochs=epochs)
        figs["op_trends"] = analysis.plot_op_trends(normal, reduce, run.primitives,
                                                    stem("op_trends"), epochs=epochs)
    curves = analysis.plot_learning_curves(run.history, retrain_history, stem("learning_curves"))
    if curves:
        figs["learning_curves"] = curves
    return figs


def _write_stats(out_dir: str, run: analysis.SearchRun, rows: List[Dict[str, Any]],
                 warnings: List[str]) -> None:
    """stats.csv (one row per epoch and cell) and stats.json (rows, final rows, warnings)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    with atomic_open(os.path.join(out_dir, contract.STATS_CSV)) as f:
        df.to_csv(f, index=False)
    final = rows[-2:] if rows else []
    write_json(os.path.join(out_dir, contract.STATS_JSON), {
        "search_dir": os.path.abspath(run.path), "primitives": list(run.primitives),
        "nodes": run.nodes, "epochs_recorded": run.num_epochs, "warnings": warnings,
        "final": final, "rows": rows})


# --- HTML pieces -------------------------------------------------------------------------


def _img(paths: Optional[Sequence[str]], caption: str, out_dir: str) -> str:
    """A <figure> with the PNG embedded as a data URI and a link to the SVG beside it."""
    if not paths:
        return ""
    png = next(p for p in paths if p.endswith(".png"))
    with open(png, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    links = " ".join(f'<a href="{html.escape(os.path.relpath(p, out_dir))}">{p.rsplit(".", 1)[-1]}</a>'
                     for p in paths)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)} ({links})</figcaption></figure>")


def _table(df: Any, index: bool = False) -> str:
    """An HTML table that scrolls sideways inside the page instead of overflowing it."""
    body = df.to_html(index=index, na_rep="", border=0,
                      float_format=lambda v: analysis.format_value(float(v)))
    return f'<div class="scroll">{body}</div>'


def _dl(facts: Sequence[Tuple[str, Any]]) -> str:
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
                    for k, v in facts if v not in (None, ""))
    return f"<dl>{items}</dl>"


def _shown_source(source: Any) -> str:
    """A data source without the machine's absolute path (its last two parts)."""
    text = str(source or "")
    if not os.path.isabs(text):
        return text
    return os.path.join(*text.rstrip("/").split("/")[-2:])


def _context_section(context: Optional[Mapping[str, Any]]) -> str:
    """Data (source, split, fingerprint), hyperparameters and code version."""
    if not context:
        return ""
    spec, config = context.get("spec") or {}, context.get("config") or {}
    split = spec.get("split") or {}
    split_text = ", ".join(f"{k} {v}" for k, v in split.items() if v not in (None, 0, ""))
    data = [("dataset", spec.get("name")), ("source", _shown_source(spec.get("source"))),
            ("fingerprint", spec.get("fingerprint")), ("split", split_text),
            ("train / test examples", f"{spec.get('num_train')} / {spec.get('num_test')}"),
            ("input shape", spec.get("input_shape")), ("code version", context.get("code_version")),
            ("tfdarts", context.get("version"))]
    body = [_dl(data), "<h3>Hyperparameters</h3>"]
    for sec in ("search", "retrain", "data", "baselines"):
        items = [f"{key} {', '.join(map(str, v)) if isinstance(v, list) else v}"
                 for key, v in (config.get(sec) or {}).items() if key not in ("data_dir", "tfds_dir")]
        if items:
            body.append(f"<p><b>{sec}</b>: {html.escape(' · '.join(items))}</p>")
    return _section("Data and settings", "\n".join(body))


def _confusion_body(path: str) -> str:
    """The test confusion matrix (rows true, columns predicted) with per-class accuracy."""
    import pandas as pd

    blob = read_json(path)
    matrix = np.asarray(blob["matrix"], np.int64)
    names = [str(c) for c in blob.get("classes") or range(len(matrix))]
    df = pd.DataFrame(matrix, index=names, columns=names)
    totals = matrix.sum(axis=1)
    df["accuracy"] = np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)
    df.index.name = "true \\ predicted"
    return ("<p>Test split; rows are true classes, columns predicted ones; accuracy is per true "
            "class (recall).</p>" + _table(df, index=True))


def _prediction_body(path: str, fig_dir: str, out_dir: str) -> str:
    """Predicted against true test targets and the residuals, in target units."""
    import pandas as pd

    blob = read_json(path)
    true, pred = np.asarray(blob["true"], np.float64), np.asarray(blob["pred"], np.float64)
    names = list(blob.get("targets") or [f"target {k}" for k in range(true.shape[1])])
    paths = analysis.plot_predictions(true, pred, names, os.path.join(fig_dir, "predictions"))
    resid = pred - true
    rows = [{"target": n, "rmse": float(np.sqrt(np.mean(resid[:, k] ** 2))),
             "mae": float(np.mean(np.abs(resid[:, k]))), "bias": float(np.mean(resid[:, k])),
             "r2": float(1 - np.sum(resid[:, k] ** 2) / max(np.sum((true[:, k] - true[:, k].mean()) ** 2), 1e-12))}
            for k, n in enumerate(names)]
    return (_img(paths, "predicted vs true test targets and residuals (target units)", out_dir)
            + _table(pd.DataFrame(rows)))


def _evaluation_section(evaluation_dir: Optional[str], fig_dir: str, out_dir: str) -> str:
    if not evaluation_dir:
        return ""
    confusion = os.path.join(evaluation_dir, contract.CONFUSION_FILE)
    predictions = os.path.join(evaluation_dir, contract.PREDICTIONS_FILE)
    if os.path.exists(confusion):
        return _section("Test set: confusion matrix", _confusion_body(confusion))
    if os.path.exists(predictions):
        return _section("Test set: predictions", _prediction_body(predictions, fig_dir, out_dir))
    return ""


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _last_value(history: Optional[Mapping[str, Any]], key: str) -> Optional[float]:
    rows = (history or {}).get("epochs") or []
    values = [r.get(key) for r in rows if isinstance(r, Mapping) and r.get(key) is not None]
    return float(values[-1]) if values else None


def _best_value(history: Optional[Mapping[str, Any]], key: str, metric: str) -> Optional[float]:
    rows = (history or {}).get("epochs") or []
    values = [float(r[key]) for r in rows if isinstance(r, Mapping) and r.get(key) is not None]
    if not values:
        return None
    return min(values) if metric in ("rmse", "mae", "loss") else max(values)


def _facts(run: analysis.SearchRun, finite: int,
           retrain_history: Optional[Mapping[str, Any]]) -> str:
    metric = run.metric
    task = (run.history or {}).get("task")
    facts = [("dataset", run.dataset),
             ("task", json.dumps(task) if task else None), ("metric", metric),
             ("alpha snapshots", f"{run.num_epochs} ({finite} finite)"),
             ("nodes / ops",
              f"{run.nodes} nodes, {len(run.primitives)} ops: {', '.join(run.primitives)}"),
             (f"search val {metric} (best / last)",
              f"{_fmt(_best_value(run.history, 'val_metric', metric))} / "
              f"{_fmt(_last_value(run.history, 'val_metric'))}")]
    if retrain_history:
        facts.append((f"retrain test {metric} (last)",
                      _fmt(_last_value(retrain_history, "test_metric"))))
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
                    for k, v in facts if v is not None)
    return f"<dl>{items}</dl>"


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else analysis.format_value(value)


def _summary(run: analysis.SearchRun, finite: int, warnings: List[str],
             genotype: Optional[Genotype], rows: List[Dict[str, Any]],
             retrain_history: Optional[Mapping[str, Any]]) -> str:
    import pandas as pd

    if warnings:
        notes = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in warnings)
    else:
        notes = '<div class="ok">No warnings: no collapse, alphas moved away from uniform.</div>'
    body = [_facts(run, finite, retrain_history), "<h3>Warnings</h3>", notes]
    if rows:
        final = pd.DataFrame(rows[-2:])[list(SUMMARY_COLUMNS)]
        body += [f"<h3>Final snapshot (epoch {rows[-1]['epoch']})</h3>", _table(final)]
    if genotype is not None:
        cells = "\n".join(f"{cell}: {analysis.format_gene(getattr(genotype, cell))}"
                          for cell in analysis.CELL_TYPES)
        body += ["<h3>Genotype</h3>", f"<pre>{html.escape(cells)}</pre>",
                 f"<pre>{html.escape(json.dumps(genotype.to_dict()))}</pre>"]
    return _section("Summary", "\n".join(body))


def _figures_section(title: str, figs: Dict[str, List[str]], keys: Sequence[str],
                     captions: Sequence[str], out_dir: str, empty: str) -> str:
    parts = [_img(figs.get(k), c, out_dir) for k, c in zip(keys, captions) if figs.get(k)]
    return _section(title, "\n".join(parts) if parts else f"<p>{html.escape(empty)}</p>")


def _epoch_table(rows: List[Dict[str, Any]]) -> str:
    """Wide per-epoch table: one row per epoch, (cell, statistic) columns."""
    import pandas as pd

    if not rows:
        return "<p>No alpha snapshots.</p>"
    df = pd.DataFrame(rows)
    wide = df.pivot(index="epoch", columns="cell", values=list(EPOCH_COLUMNS))
    wide = wide.swaplevel(0, 1, axis=1)[[(c, s) for c in analysis.CELL_TYPES for s in EPOCH_COLUMNS]]
    note = ""
    if len(wide) > MAX_EPOCH_ROWS:
        wide = wide.iloc[analysis.select_epochs(len(wide), MAX_EPOCH_ROWS)]
        note = f"<p>{MAX_EPOCH_ROWS} evenly spaced epochs shown; stats.csv has all of them.</p>"
    return note + _table(wide, index=True)


def _stats_section(rows: List[Dict[str, Any]]) -> str:
    import pandas as pd

    if not rows:
        return _section("Statistics", "<p>No alpha snapshots.</p>")
    final = pd.DataFrame(rows[-2:])[list(FINAL_COLUMNS)]
    body = ["<p>entropy_ratio = mean edge entropy / ln K (1 = uniform); margin = chosen op "
            "weight minus runner-up (non-none ops); skip_count and param_free_share refer to "
            "the chosen edges; gene_changed = derived cell differs from the previous epoch.</p>",
            f"<h3>Final epoch ({rows[-1]['epoch']})</h3>", _table(final),
            "<h3>Per epoch</h3>", _epoch_table(rows)]
    return _section("Statistics", "\n".join(body))


def _confidence_section(run: analysis.SearchRun, normal: np.ndarray, reduce: np.ndarray) -> str:
    """Per chosen edge: the op, its runner-up and the margin, guesses flagged."""
    import pandas as pd

    if not len(normal):
        return _section("Confidence of the choice", "<p>No alpha snapshots.</p>")
    threshold = analysis.noise_margin(len(run.primitives))
    body = [f"<p>margin = weight of the chosen op minus the runner-up on its edge; a margin "
            f"below {threshold:.4f} ({analysis.NOISE_MARGIN_FRACTION:g} of the uniform weight "
            f"1/{len(run.primitives)}) is within noise: that op was guessed, not chosen.</p>"]
    for cell, probs in (("normal", normal[-1]), ("reduce", reduce[-1])):
        rows = analysis.choice_confidence(probs, run.primitives, run.nodes)
        guessed = sum(r["guessed"] for r in rows)
        body += [f"<h3>{cell} cell: {len(rows) - guessed} of {len(rows)} ops chosen, {guessed} guessed</h3>",
                 _table(pd.DataFrame(rows))]
    return _section("Confidence of the choice", "\n".join(body))


def _eigen_section(history: Optional[Mapping[str, Any]]) -> str:
    """The dominant alpha-Hessian eigenvalue per epoch (the collapse signal), when recorded."""
    import pandas as pd

    rows = [r for r in (history or {}).get("epochs") or [] if r.get("eigenvalue") is not None]
    if not rows:
        return ""
    df = pd.DataFrame([{"epoch": r["epoch"], "eigenvalue": r["eigenvalue"],
                        "early_stop": bool(r.get("early_stop"))} for r in rows])
    note = ("<p>Dominant eigenvalue of the Hessian of the validation loss w.r.t. the alphas "
            "(power iteration on fixed validation batches). A steady rise signals collapse "
            "toward parameter-free cells (Zela et al., ICLR 2020).</p>")
    return _section("Collapse signal", note + _table(df))


def _results_section(records: Sequence[Mapping[str, Any]], out_dir: str) -> str:
    if not records:
        return _section("Results", "<p>No result records given.</p>")
    df = analysis.results_table(records)
    analysis.save_table(df, out_dir)
    return _section("Results", _table(df) + f'<p>Also in <a href="{contract.RESULTS_CSV}">{contract.RESULTS_CSV}</a> '
                    f'and <a href="{contract.RESULTS_MD}">{contract.RESULTS_MD}</a>.</p>')


def _page(title: str, sections: Sequence[str]) -> str:
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1><p>Generated {stamp} by tfdarts.report.</p>\n"
            + "\n".join(s for s in sections if s) + "\n</body></html>\n")


# --- entry point -------------------------------------------------------------------------


def build_report(out_dir: str, search_dir: str, retrain_dir: Optional[str] = None,
                 records: Sequence[Mapping[str, Any]] = (),
                 title: str = "tfdarts architecture search report",
                 engine: str = "auto", evaluation_dir: Optional[str] = None,
                 context: Optional[Mapping[str, Any]] = None) -> str:
    """Writes the HTML report of a search and its statistics and figures.

    Args:
        out_dir: Output folder (created).
        search_dir: Search folder with ``alphas.npz`` (required), ``history.json`` and
            ``genotype.json`` (optional; without it the genotype is derived from the last
            snapshot).
        retrain_dir: Optional retrain folder with ``history.json``.
        records: Optional result records for `analysis.results_table`.
        title: Page title.
        engine: Cell-diagram engine for `analysis.plot_cell` (``auto``, ``dot``,
            ``matplotlib``).
        evaluation_dir: Optional evaluation folder (``confusion.json`` or
            ``predictions.json``) for the test-set section.
        context: Optional ``{"spec": data spec dict, "config": config dict,
            "code_version", "version"}`` for the data-and-settings section.

    Returns:
        Path of ``<out_dir>/report.html``.
    """
    os.makedirs(out_dir, exist_ok=True)
    run = analysis.load_search(search_dir)
    retrain_history = analysis.read_history(retrain_dir)
    finite = analysis.finite_epochs(run.normal, run.reduce)
    normal, reduce = run.normal[:finite], run.reduce[:finite]
    epochs = run.epochs[:finite]
    warnings = analysis.diagnose(run.normal, run.reduce, run.primitives, run.nodes,
                                 run.genotype if _plain_derivation(run) else None)
    rows = analysis.epoch_stats(normal, reduce, run.primitives, run.nodes, epochs)
    genotype = _final_genotype(run, normal, reduce)
    _write_stats(out_dir, run, rows, warnings)
    figs = _make_figures(os.path.join(out_dir, contract.FIGURES_DIR), run, normal, reduce, epochs, genotype,
                         retrain_history, engine)
    fig_dir = os.path.join(out_dir, contract.FIGURES_DIR)
    sections = [_summary(run, finite, warnings, genotype, rows, retrain_history), _context_section(context),
                _evaluation_section(evaluation_dir, fig_dir, out_dir),
                *_figure_sections(run, figs, normal, reduce, rows, out_dir), _results_section(records, out_dir)]
    path = os.path.join(out_dir, contract.REPORT_FILE)
    with atomic_open(path) as f:
        f.write(_page(title, sections))
    return path


def _plain_derivation(run: analysis.SearchRun) -> bool:
    """The genotype was derived by the plain rule, so the alphas can check it.

    A genotype derived with edge weights or a skip limit is checked by the search itself.
    """
    derivation = (run.history or {}).get("derivation") or {}
    return not derivation.get("edge_normalisation") and derivation.get("max_skips", -1) < 0


def _figure_sections(run: analysis.SearchRun, figs: Dict[str, List[str]], normal: np.ndarray,
                     reduce: np.ndarray, rows: List[Dict[str, Any]], out_dir: str) -> List[str]:
    source = contract.GENOTYPE_FILE if run.genotype is not None else "derived from the last snapshot"
    return [
        _figures_section("Genotype", figs, ["cell_normal", "cell_reduce"],
                         [f"normal cell ({source})", f"reduction cell ({source})"], out_dir,
                         "No genotype available."),
        _figures_section("Final alpha weights", figs, ["heatmap_normal", "heatmap_reduce"],
                         ["normal cell, last snapshot", "reduction cell, last snapshot"],
                         out_dir, "No alpha snapshots."),
        _figures_section("Alpha evolution", figs,
                         ["op_trends", "evolution_normal", "evolution_reduce"],
                         ["mean weight of each op over all edges",
                          "normal cell per epoch (weight minus uniform 1/K; shared relative scale)",
                          "reduction cell per epoch (weight minus uniform 1/K; shared relative scale)"],
                         out_dir, "No alpha snapshots."),
        _confidence_section(run, normal, reduce),
        _eigen_section(run.history),
        _stats_section(rows),
        _figures_section("Learning curves", figs, ["learning_curves"],
                         ["search (train / val) and retrain (train / test)"], out_dir,
                         "No training history found."),
    ]


def build_given_report(out_dir: str, genotype: Genotype, origin: str,
                       retrain_dir: Optional[str] = None, records: Sequence[Mapping[str, Any]] = (),
                       title: str = "tfdarts report of a given cell", engine: str = "auto",
                       evaluation_dir: Optional[str] = None,
                       context: Optional[Mapping[str, Any]] = None) -> str:
    """The report of a cell that was given, not searched (no alphas to show).

    Writes ``report.html``, the cell diagrams, the retrain curves, the results table
    and a ``stats.json`` without search statistics.

    Args:
        out_dir: Output folder (created).
        genotype: The retrained cell.
        origin: Where it came from (a published name or a file).
        retrain_dir: Optional retrain folder with ``history.json``.
        records: Optional result records for `analysis.results_table`.
        title: Page title.
        engine: Cell-diagram engine for `analysis.plot_cell`.
        evaluation_dir: As for `build_report`.
        context: As for `build_report`.

    Returns:
        Path of ``<out_dir>/report.html``.
    """
    os.makedirs(out_dir, exist_ok=True)
    fig_dir = os.path.join(out_dir, contract.FIGURES_DIR)
    os.makedirs(fig_dir, exist_ok=True)
    figs = {f"cell_{cell}": analysis.plot_cell(getattr(genotype, cell), getattr(genotype, cell + "_concat"),
                                               os.path.join(fig_dir, f"cell_{cell}"), f"{cell} cell",
                                               engine=engine)
            for cell in analysis.CELL_TYPES}
    retrain_history = analysis.read_history(retrain_dir)
    curves = analysis.plot_learning_curves(None, retrain_history, os.path.join(fig_dir, "learning_curves"))
    if curves:
        figs["learning_curves"] = curves
    write_json(os.path.join(out_dir, contract.STATS_JSON),
               {"given": origin, "genotype": genotype.to_dict(), "warnings": [], "rows": []})
    cells = "\n".join(f"{cell}: {analysis.format_gene(getattr(genotype, cell))}" for cell in analysis.CELL_TYPES)
    facts = (f"<dl><dt>cell</dt><dd>given ({html.escape(origin)}), not searched: no alphas, "
             f"no collapse signals</dd><dt>retrain test metric (last)</dt>"
             f"<dd>{_fmt(_last_value(retrain_history, 'test_metric'))}</dd></dl>")
    sections = [_section("Summary", facts + f"<h3>Genotype</h3><pre>{html.escape(cells)}</pre>"),
                _context_section(context), _evaluation_section(evaluation_dir, fig_dir, out_dir),
                _figures_section("Genotype", figs, ["cell_normal", "cell_reduce"],
                                 ["normal cell (given)", "reduction cell (given)"], out_dir, "No genotype."),
                _figures_section("Learning curves", figs, ["learning_curves"], ["retrain (train / test)"],
                                 out_dir, "No training history found."),
                _results_section(records, out_dir)]
    path = os.path.join(out_dir, contract.REPORT_FILE)
    with atomic_open(path) as f:
        f.write(_page(title, sections))
    return path
