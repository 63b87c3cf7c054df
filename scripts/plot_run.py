#!/usr/bin/env python3
"""Plots of an hgqt run directory, drawn with matplotlib (Agg, no display needed).

    plot_run.py pareto   RUN_DIR OUT.png   # validation metric vs EBOPs (log x): every epoch faint,
                                           # the Pareto front (pareto.json) as line and markers
    plot_run.py training RUN_DIR OUT.png   # loss, accuracy, EBOPs (log y), beta (log y) vs epoch

`hgqt pareto` and `hgqt plot` run it with /usr/bin/python3 (Debian's python3-matplotlib) or
$HGQT_PYTHON. Exit status: 0 written, 1 bad input (message on stderr), 2 usage, 3 no matplotlib.
"""

import json
import math
import os
import sys


def fail(msg, code=1):
    print(f"plot_run.py: {msg}", file=sys.stderr)
    sys.exit(code)


def read_metrics(run):
    path = os.path.join(run, "metrics.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            fail(f"{path} is corrupt: line {n} is not valid JSON ({e})")
        if not isinstance(row, dict) or "epoch" not in row or "ebops" not in row:
            fail(f"{path} is corrupt: line {n} is not an epoch record")
        rows.append(row)
    if not rows:
        fail(f"{path} holds no epochs")
    return rows


def read_front(run):
    path = os.path.join(run, "pareto.json")
    try:
        with open(path, encoding="utf-8") as f:
            front = json.load(f)
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    except ValueError as e:
        fail(f"{path} is corrupt: not valid JSON ({e})")
    if not isinstance(front, list):
        fail(f"{path} is corrupt: expected a JSON array")
    return front


def number(v):
    """v as a float, or None when missing / null / not finite."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def series(rows, key):
    xs, ys = [], []
    for r in rows:
        x, y = number(r.get("epoch")), number(r.get(key))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def positive(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys) if y > 0]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_pareto(plt, run, out):
    rows = read_metrics(run)
    front = read_front(run)
    score = "val_accuracy"
    if front and "val_accuracy" not in front[0] and "val_loss" in front[0]:
        score = "val_loss"
    elif not front and not any(number(r.get("val_accuracy")) is not None for r in rows):
        score = "val_loss"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = [(number(r.get("ebops")), number(r.get(score))) for r in rows]
    pts = [(e, s) for e, s in pts if e is not None and s is not None and e > 0]
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color="tab:blue", alpha=0.25,
                   label=f"every epoch ({len(pts)})")
    fr = [(number(e.get("ebops")), number(e.get(score)), e.get("epoch")) for e in front]
    fr = sorted([f for f in fr if f[0] is not None and f[1] is not None and f[0] > 0])
    if fr:
        ax.plot([f[0] for f in fr], [f[1] for f in fr], "-o", color="tab:red", markersize=6,
                drawstyle="steps-post", label=f"Pareto front ({len(fr)})")
        for e, s, ep in fr:
            ax.annotate(f"{ep}", (e, s), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    compact_log_labels(ax.xaxis)
    ax.set_xlabel("EBOPs")
    ax.set_ylabel(score + (" (higher is better)" if score == "val_accuracy" else " (lower is better)"))
    ax.set_title(f"{os.path.basename(os.path.normpath(run))}: {score} vs EBOPs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def compact_log_labels(axis):
    """Short tick labels on a log axis (1.2M, 500k, 3e-07): matplotlib's default minor labels
    (1.2 x 10^6, ...) overlap when the data span less than a decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    def label(v, _pos):
        if v <= 0:
            return ""
        for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if v >= scale:
                return f"{v / scale:.3g}{suffix}"
        return f"{v:.3g}" if v >= 1 else f"{v:.0e}"

    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    axis.set_minor_formatter(FuncFormatter(label))


def plot_training(plt, run, out):
    rows = read_metrics(run)
    has_acc = any(number(r.get("accuracy")) is not None or number(r.get("val_accuracy")) is not None
                  for r in rows)
    panels = ["loss"] + (["accuracy"] if has_acc else []) + ["ebops", "beta"]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.4 * len(panels)), sharex=True)
    for ax, panel in zip(axes, panels):
        if panel in ("loss", "accuracy"):
            for key, style in ((panel, "-o"), ("val_" + panel, "--s")):
                xs, ys = series(rows, key)
                if xs:
                    ax.plot(xs, ys, style, markersize=3, label=key)
            ax.set_ylabel(panel)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        else:
            xs, ys = positive(*series(rows, panel))
            if xs:
                ax.plot(xs, ys, "-o", markersize=3, color="tab:green" if panel == "ebops" else "tab:purple")
                ax.set_yscale("log")
                compact_log_labels(ax.yaxis)
            ax.set_ylabel("EBOPs" if panel == "ebops" else "beta")
        ax.grid(True, which="both", alpha=0.3)
    axes[-1].set_xlabel("epoch")
    fig.suptitle(f"{os.path.basename(os.path.normpath(run))}: training")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv):
    if len(argv) != 4 or argv[1] not in ("pareto", "training"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, run, out = argv[1], argv[2], argv[3]
    if not os.path.isdir(run):
        fail(f"run directory '{run}' does not exist")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        fail(f"matplotlib is not available to {sys.executable} ({e}); "
             "apt-get install python3-matplotlib", 3)
    try:
        (plot_pareto if kind == "pareto" else plot_training)(plt, run, out)
    except OSError as e:
        fail(f"cannot write {out}: {e.strerror}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
