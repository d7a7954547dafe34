"""Tables and plots of the experiment runner: mean ± sample standard deviation (and n) per metric per arm, the
per-seed numbers, the exact commands, and a bar chart with the per-seed values as dots.

:func:`aggregate` is plain arithmetic over the arms' records (``{"arm", "seed", "metrics": {key: value}}``);
:func:`write_report` writes ``report.md``, ``report.png`` (matplotlib, next to the table) and ``results.json``.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = ["aggregate", "markdown", "plot", "write_report", "fmt_mean_std"]


def aggregate(records: Sequence[Dict], metrics: Sequence[str], arms: Optional[Sequence[str]] = None
              ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{arm: {metric: {"mean", "std", "n", "values"}}}`` over the seeds of each arm: arithmetic mean and sample
    standard deviation (n - 1; ``nan`` for a single seed); NaN values and missing keys are left out of n. Arms in
    the order of ``arms`` (default: first appearance)."""
    order = list(arms) if arms is not None else list(dict.fromkeys(r["arm"] for r in records))
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for arm in order:
        rs = sorted((r for r in records if r["arm"] == arm), key=lambda r: r["seed"])
        if not rs:
            continue
        out[arm] = {}
        for m in metrics:
            vals = [float(r["metrics"][m]) for r in rs if m in r["metrics"] and r["metrics"][m] == r["metrics"][m]]
            seeds = [r["seed"] for r in rs if m in r["metrics"] and r["metrics"][m] == r["metrics"][m]]
            out[arm][m] = {"mean": statistics.fmean(vals) if vals else math.nan,
                           "std": statistics.stdev(vals) if len(vals) > 1 else math.nan,
                           "n": len(vals), "values": vals, "seeds": seeds}
    return out


def _digits(metric: str) -> int:
    leaf = metric.split("/")[-1]
    return 3 if leaf in ("ARI", "mask_person", "mask_bg", "eps") else (0 if leaf in ("clusters", "outliers") else 2)


def fmt_mean_std(cell: Dict[str, float], digits: int = 2) -> str:
    if not cell or cell["n"] == 0:
        return "–"
    if cell["n"] == 1:
        return f"{cell['mean']:.{digits}f} (n=1)"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f} (n={cell['n']})"


def markdown(title: str, agg: Dict, records: Sequence[Dict], metrics: Sequence[str], *, description: str = "",
             command: str = "", notes: Sequence[str] = (), failures: Optional[Dict[str, str]] = None,
             incomplete: bool = False, plot_file: str = "") -> str:
    lines = [f"# {title}", ""]
    if description:
        lines += [description, ""]
    if command:
        lines += ["Command (from the repository root):", "", f"    {command}", ""]
    if incomplete:
        lines += ["**Incomplete**: the time limit stopped the run; re-running the command continues it.", ""]
    lines += ["Mean ± sample standard deviation over seeds (n = seeds):", "",
              "| arm | " + " | ".join(metrics) + " |", "| --- |" + " --- |" * len(metrics)]
    for arm, cells in agg.items():
        lines.append(f"| {arm} | " + " | ".join(fmt_mean_std(cells[m], _digits(m)) for m in metrics) + " |")
    if plot_file:
        lines += ["", f"![{title}]({plot_file})"]
    lines += ["", "Per seed:", "", "| arm | seed | " + " | ".join(metrics) + " | minutes (all stages) |",
              "| --- | --- |" + " --- |" * (len(metrics) + 1)]
    for arm in agg:
        for r in sorted((r for r in records if r["arm"] == arm), key=lambda r: r["seed"]):
            vals = [f"{r['metrics'][m]:.{_digits(m)}f}" if m in r["metrics"] else "–" for m in metrics]
            lines.append(f"| {arm} | {r['seed']} | " + " | ".join(vals) + f" | {r.get('seconds', 0) / 60:.1f} |")
    runs = {}
    for r in records:
        for s in r.get("stages", []):
            runs.setdefault((r["arm"], s["stage"]), []).append((r["seed"], s["command"]))
    if runs:
        lines += ["", "Runs (`tools/train_net.py`, one child process each; seed 0's or the first seed's command):", ""]
        for (arm, stage), cmds in runs.items():
            seed, cmd = sorted(cmds)[0]
            lines.append(f"- {arm} / {stage} (seed {seed}): `{cmd}`")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    if failures:
        lines += ["", "Failed or skipped runs:", ""] + [
            f"- `{c}`: {(w.splitlines() or [''])[0]}" for c, w in failures.items()]
    return "\n".join(lines) + "\n"


def plot(agg: Dict, metrics: Sequence[str], path, title: str = "") -> str:
    """One panel per metric: a bar per arm (mean, sample-std error bar) and the per-seed values as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(agg)
    n = max(1, len(metrics))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 0.5, 3.0 * rows + 0.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(metrics):
        ax = axes[i // cols][i % cols]
        for j, arm in enumerate(arms):
            c = agg[arm].get(m) or {"mean": math.nan, "std": math.nan, "values": []}
            if c["mean"] != c["mean"]:  # this arm has no such metric: no bar
                continue
            color = colors[j % len(colors)]
            err = c["std"] if c["std"] == c["std"] else 0.0
            ax.bar(j, c["mean"], yerr=err, color=color, alpha=0.55,
                   capsize=3, label=arm)
            vals = c["values"]
            xs = [j + (k - (len(vals) - 1) / 2) * 0.12 for k in range(len(vals))]
            ax.scatter(xs, vals, color="black", s=12, zorder=3)
        ax.set_title(m, fontsize=9)
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels(arms, rotation=30, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for i in range(n, rows * cols):
        axes[i // cols][i % cols].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(str(path))), exist_ok=True)
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
    return str(path)


def write_report(comp, records: Sequence[Dict], out_dir, *, command: str = "", seeds: Sequence[int] = (),
                 failures: Optional[Dict[str, str]] = None, incomplete: bool = False) -> Path:
    """``report.md`` (table, per-seed numbers, commands, notes), ``report.png`` and ``results.json`` of the
    comparison ``comp`` under ``out_dir``; prints the table. Returns the markdown path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arms = [a.name for a in comp.arms]
    agg = aggregate(records, comp.metrics, arms)
    png = ""
    if agg:
        png = plot(aggregate(records, comp.plot_metrics or comp.metrics, arms), comp.plot_metrics or comp.metrics,
                   out_dir / "report.png", title=comp.name)
    text = markdown(f"{comp.name}: {', '.join(agg) or 'no finished arm'}", agg, records, comp.metrics,
                    description=comp.description, command=command, notes=comp.notes, failures=failures,
                    incomplete=incomplete, plot_file=os.path.basename(png) if png else "")
    md = out_dir / "report.md"
    md.write_text(text)
    (out_dir / "results.json").write_text(json.dumps({"comparison": comp.name, "seeds": list(seeds),
                                                      "command": command, "aggregate": agg,
                                                      "records": list(records)}, indent=1))
    print(text, flush=True)
    print(f"[report] {md}" + (f" and {png}" if png else ""), flush=True)
    return md
