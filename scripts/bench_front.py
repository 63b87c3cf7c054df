#!/usr/bin/python3
"""Accuracy against exact EBOPs: HGQ, HGQ-LUT and uniform quantization-aware training, one budget.

Trains every method of a task with the same recipe (optimizer, learning rate, epochs, batch),
traces the last epoch's checkpoint on the training features, runs the integer emulator on the
test set (the accuracy the hardware has) and reads the exact EBOPs after the trace. Writes
OUT/front.json, OUT/front.md (a table) and OUT/front.png (accuracy vs exact EBOPs, log axis, one
line per method), and prints the ratio: exact EBOPs of uniform 8-bit QAT over those of the
smallest HGQ model within 1 point of the near-float accuracy.

  /usr/bin/python3 scripts/bench_front.py --task fmnist [--epochs 40] [--jobs 2] [--out DIR]
  /usr/bin/python3 scripts/bench_front.py --task jets   [--epochs 40] [--jobs 2] [--out DIR]

Methods (--methods picks some; a finished run in OUT is reused unless --retrain):
  float         wide fixed quantizers (weights 1+19 bits, datalane 1+10+12), not trainable, beta 0
  uniform8/6/4  B-bit per-tensor fixed widths, not trainable, beta 0: weights sign + B-1
                fraction bits (range [-1, 1)), datalane sign + 2 integer + B-3 fraction bits
  hgq_*         the recipe (RECIPE below): per-element trainable widths, weights starting at
                KBI b 4 i 1, beta log-ramped from 1e-8 to its value over the first quarter of
                the run, then held
  hgq_hold8_*   the same beta, weights starting at the library default (b 8, i 2)
  hgq_old_*     the old recipe: library defaults, beta log-ramped 1e-8 -> value over the run
  pid_*         the recipe's widths with the PID controller (target in training EBOPs; its
                target ramps over the first quarter, the default); pid_noramp_*: ramp_epochs 0
  lut_*         HGQ-LUT with the recipe: the hidden layers are lut_dense (fmnist: the 784-wide
                first layer stays an HGQ dense layer, as 50,176 per-connection MLPs do not fit
                the budget here)
One seed (0) per point: differences of a few tenths of a point are within seed noise.
Data: fmnist needs data/fashion_mnist.h5 (build/hgqt data fashion-mnist); jets needs
data/synthetic_jets.h5 and data/synthetic_jets_plain.h5 (scripts/make_synthetic_jets.py
--plain-out): THE JET FRONT IS ON SYNTHETIC DATA.
"""
import argparse
import concurrent.futures as cf
import copy
import json
import os
import re
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def uniform(bits):
    w = {"k": 1, "b": bits - 1, "i": 0, "trainable": False, "granularity": "tensor"}
    d = {"k": 1, "i": 2, "f": bits - 3, "trainable": False, "granularity": "tensor"}
    return {"weight": w, "datalane": d, "bias": dict(d)}


NEAR_FLOAT = {
    "weight": {"k": 1, "b": 19, "i": 3, "trainable": False, "granularity": "tensor"},
    "datalane": {"k": 1, "i": 10, "f": 12, "trainable": False, "granularity": "tensor"},
    "bias": {"k": 1, "i": 10, "f": 12, "trainable": False, "granularity": "tensor"},
}


def fmnist_layers(kind):
    if kind == "lut":
        return [{"type": "flatten"},
                {"type": "dense", "units": 64, "activation": "relu"},
                {"type": "lut_dense", "units": 32, "activation": "relu",
                 "input_quantizer": {"i": 2, "f": 3}},
                {"type": "lut_dense", "units": 10, "input_quantizer": {"i": 2, "f": 3}}]
    return [{"type": "flatten"},
            {"type": "dense", "units": 64, "activation": "relu"},
            {"type": "dense", "units": 32, "activation": "relu"},
            {"type": "dense", "units": 10}]


def jets_layers(kind):
    if kind == "lut":
        return [{"type": "lut_dense", "units": 16, "activation": "relu",
                 "input_quantizer": {"i": 2, "f": 3}},
                {"type": "lut_dense", "units": 8, "activation": "relu",
                 "input_quantizer": {"i": 2, "f": 3}},
                {"type": "dense", "units": 5}]
    return [{"type": "dense", "units": 64, "activation": "relu"},
            {"type": "dense", "units": 32, "activation": "relu"},
            {"type": "dense", "units": 32, "activation": "relu"},
            {"type": "dense", "units": 5}]


TASKS = {
    "fmnist": {
        "title": "Fashion-MNIST, 784-64-32-10 MLP",
        "input_shape": [28, 28],
        "layers": fmnist_layers,
        "data": {"format": "hdf5",
                 "train": {"file": "data/fashion_mnist.h5", "features": "x_train", "labels": "y_train"},
                 "test": {"file": "data/fashion_mnist.h5", "features": "x_test", "labels": "y_test"},
                 "validation_split": 0.1, "standardize": False, "split_seed": 42},
        "trace_data": "data/fashion_mnist.h5",
        "test_data": "data/fashion_mnist.h5",
        "batch_size": 128, "lr": 3.0e-3,
        "hgq": [1e-7, 2e-7, 3e-7, 1e-6, 3e-6],
        "hgq_old": [1e-7, 1e-6, 3e-6, 1e-5, 3e-5],
        "hgq_hold8": [1e-7, 3e-7, 1e-6],
        "pid": [3e5, 1.5e5],
        "pid_noramp": [1.5e5],
        "lut": [3e-7, 1e-6],
    },
    "jets": {
        "title": "synthetic jets (16 features, 5 classes), 16-64-32-32-5 MLP / lut_dense 16-16-8-5",
        "input_shape": [16],
        "layers": jets_layers,
        "data": {"format": "jet_hdf5", "train": {"file": "data/synthetic_jets.h5"},
                 "test_split": 0.2, "validation_split": 0.1, "standardize": True, "split_seed": 42},
        "trace_data": "data/synthetic_jets.h5",
        "test_data": "data/synthetic_jets_plain.h5",
        "batch_size": 1024, "lr": 3.0e-3,
        "hgq": [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4],
        "hgq_old": [1e-5, 1e-4, 3e-4],
        "hgq_hold8": [1e-6, 1e-5, 1e-4],
        "pid": [],
        "pid_noramp": [],
        "lut": [1e-6, 1e-5, 1e-4],
    },
}


# The HGQ recipe (issue 17): weights start narrow (KBI b 4, i 1) and grow where the loss needs
# them; beta rises log-linearly from 1e-8 to its final value over the first quarter of the run
# and is held there, so that the model has three quarters of the run to recover at its size.
RECIPE = {"weight": {"b": 4, "i": 1}}


# The families, in table order, with their plot style; RATIOS: whose smallest model within 1
# point of near-float is set against uniform 8-bit.
FAMILIES = {"near-float": "k*", "uniform": "s-", "HGQ": "o-", "HGQ, PID": "D",
            "HGQ, PID without target ramp": "x", "HGQ, beta held, weights from b 8": "v--",
            "HGQ, old recipe": "o:", "HGQ-LUT": "^-"}
RATIOS = {"HGQ": ("HGQ", "HGQ, PID"),
          "HGQ, beta held, weights from b 8": ("HGQ, beta held, weights from b 8",),
          "HGQ, old recipe": ("HGQ, old recipe",)}


def methods(task):
    t = TASKS[task]
    out = [("float", "near-float", "dense", NEAR_FLOAT, 0)]
    for b in (8, 6, 4):
        out.append((f"uniform{b}", "uniform", "dense", uniform(b), 0))
    for beta in t["hgq"]:
        out.append((f"hgq_{beta:.0e}", "HGQ", "dense", RECIPE, ("hold", beta)))
    for beta in t["hgq_old"]:
        out.append((f"hgq_old_{beta:.0e}", "HGQ, old recipe", "dense", None, ("ramp", beta)))
    for beta in t["hgq_hold8"]:
        out.append((f"hgq_hold8_{beta:.0e}", "HGQ, beta held, weights from b 8", "dense", None,
                    ("hold", beta)))
    for target in t["pid"]:
        out.append((f"pid_{target:.2g}", "HGQ, PID", "dense", RECIPE, ("pid", target)))
    for target in t["pid_noramp"]:
        out.append((f"pid_noramp_{target:.2g}", "HGQ, PID without target ramp", "dense", RECIPE,
                    ("pid0", target)))
    for beta in t["lut"]:
        out.append((f"lut_{beta:.0e}", "HGQ-LUT", "lut", RECIPE, ("hold", beta)))
    return out


def beta_spec(beta, epochs):
    """0; ("hold", b): log ramp 1e-8 -> b over the first quarter, then b; ("ramp", b): log ramp
    1e-8 -> b over the whole run (the old recipe); ("pid", E): the controller, target E
    (training EBOPs), its target ramped over the first quarter (the default)."""
    if not beta:
        return 0
    kind, value = beta
    if kind in ("pid", "pid0"):
        return {"kind": "pid", "target_ebops": value, "init": 1e-8, "interval_steps": 10,
                "max": 1e-3, **({"ramp_epochs": 0} if kind == "pid0" else {})}
    end = epochs if kind == "ramp" else max(1, epochs // 4)
    points = [[0, 1e-8], [end, value]] + ([[epochs, value]] if end < epochs else [])
    return {"kind": "log", "points": points}


def make_config(task, name, kind, defaults, beta, epochs, threads, data_dir):
    t = TASKS[task]
    data = copy.deepcopy(t["data"])
    for part in ("train", "test"):
        if part in data:
            data[part]["file"] = os.path.join(data_dir, os.path.basename(data[part]["file"]))
    model = {"input_shape": t["input_shape"], "layers": t["layers"](kind)}
    if defaults:
        model["quantizer_defaults"] = defaults
    train = {"epochs": epochs, "batch_size": t["batch_size"], "optimizer": "adam", "lr": t["lr"],
             "lr_schedule": "cosine", "loss": "cross_entropy", "gamma": 0, "seed": 0,
             "threads": threads, "beta": beta_spec(beta, epochs)}
    return {"name": f"front_{task}_{name}", "model": model, "data": data, "train": train}


def run(cmd, log):
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        f.write(p.stdout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {p.returncode}), see {log}")
    return p.stdout


def one(args, task, m):
    name, family, kind, defaults, beta = m
    run_dir = os.path.join(args.out, name)
    log = run_dir + ".log"
    result = os.path.join(run_dir, "front.json")
    cfg = make_config(task, name, kind, defaults, beta, args.epochs, args.threads, args.data_dir)
    text = yaml.safe_dump(cfg, default_flow_style=None, sort_keys=False)
    cfg_path = os.path.join(args.out, name + ".yaml")
    # a finished run is reused only for the same config (epochs, data, method)
    if os.path.exists(result) and not args.retrain and os.path.exists(cfg_path):
        with open(cfg_path) as f:
            if f.read() == text:
                with open(result) as g:
                    return json.load(g)
    os.makedirs(args.out, exist_ok=True)
    if os.path.exists(log):
        os.remove(log)
    if os.path.exists(result):
        os.remove(result)
    with open(cfg_path, "w") as f:
        f.write(text)
    t0 = time.time()
    run([args.hgqt, "train", cfg_path, "--quiet", "--overwrite", "--out", run_dir], log)
    train_s = time.time() - t0
    t = TASKS[task]
    archive = os.path.join(run_dir, "model.hgqt")
    out = run([args.hgqt, "trace", os.path.join(run_dir, "last.pt"), "--data",
               os.path.join(args.data_dir, os.path.basename(t["trace_data"])), "--out", archive], log)
    mm = re.search(r"EBOPs: (\d+) in training, (\d+) exact after the trace", out)
    if not mm:
        raise RuntimeError(f"no EBOPs line in the trace output, see {log}")
    out = run([args.hgqt, "emulate", archive, "--data",
               os.path.join(args.data_dir, os.path.basename(t["test_data"])),
               "--threads", str(args.threads)], log)
    acc = re.search(r"accuracy: ([0-9.]+)", out)
    if not acc:
        raise RuntimeError(f"no accuracy line in the emulator output, see {log}")
    r = {"method": name, "family": family, "beta": beta_text(beta), "epochs": args.epochs,
         "accuracy": float(acc.group(1)), "ebops_training": int(mm.group(1)),
         "ebops_exact": int(mm.group(2)), "train_seconds": round(train_s, 1)}
    with open(result, "w") as f:
        json.dump(r, f, indent=1)
    return r


def beta_text(beta):
    if not beta:
        return "0"
    kind, value = beta
    return {"hold": f"{value:.0e} from epoch E/4", "ramp": f"{value:.0e} at the end",
            "pid": f"PID, target {value:.2g}",
            "pid0": f"PID, target {value:.2g}, ramp_epochs 0"}[kind]


def ratio(rows, families):
    near = [r for r in rows if r["family"] == "near-float"]
    u8 = [r for r in rows if r["method"] == "uniform8"]
    hgq = [r for r in rows if r["family"] in families]
    if not near or not u8 or not hgq:
        return None
    within = [r for r in hgq if r["accuracy"] >= near[0]["accuracy"] - 0.01 - 1e-9]
    if not within:
        return {"near_float": near[0]["accuracy"], "uniform8": u8[0], "hgq": None, "ratio": None}
    best = min(within, key=lambda r: r["ebops_exact"])
    return {"near_float": near[0]["accuracy"], "uniform8": u8[0], "hgq": best,
            "ratio": u8[0]["ebops_exact"] / max(best["ebops_exact"], 1)}


def report(args, task, rows):
    order = list(FAMILIES)
    rows = sorted(rows, key=lambda r: (order.index(r["family"]), -r["ebops_exact"]))
    lines = [f"{TASKS[task]['title']}, {args.epochs} epochs each (last epoch, traced; accuracy "
             "from the integer emulator on the test set)", "",
             "| method | family | beta | accuracy | exact EBOPs | EBOPs in training | train s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['family']} | {r['beta']} | {100 * r['accuracy']:.2f}% | "
                     f"{r['ebops_exact']:,} | {r['ebops_training']:,} | {r['train_seconds']:.0f} |")
    ratios = {label: ratio(rows, fams) for label, fams in RATIOS.items()}
    for label, qq in ratios.items():
        if not qq:
            continue
        lines.append("")
        if qq["hgq"]:
            lines.append(
                f"{label}: uniform 8-bit {qq['uniform8']['ebops_exact']:,} exact EBOPs "
                f"({100 * qq['uniform8']['accuracy']:.2f}%) / smallest model within 1 point of "
                f"near-float ({100 * qq['near_float']:.2f}%), {qq['hgq']['method']} "
                f"{qq['hgq']['ebops_exact']:,} ({100 * qq['hgq']['accuracy']:.2f}%) = "
                f"**{qq['ratio']:.1f}**")
        else:
            lines.append(f"{label}: no model within 1 point of near-float "
                         f"({100 * qq['near_float']:.2f}%)")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "front.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "front.json"), "w") as f:
        json.dump({"task": task, "epochs": args.epochs, "rows": rows, "ratio": ratios["HGQ"],
                   "ratios": ratios}, f, indent=1)
    print(text)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench_front: matplotlib is missing, no PNG", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fam, style in FAMILIES.items():
        pts = sorted((r["ebops_exact"], 100 * r["accuracy"], r["method"]) for r in rows
                     if r["family"] == fam)
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=fam, markersize=7)
        for x, y, n in pts:
            if fam == "uniform":
                ax.annotate(n.replace("uniform", "") + "-bit", (x, y), textcoords="offset points",
                            xytext=(4, -10), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("exact EBOPs after the trace (HGQ-LUT: LUT estimate of the tables + EBOPs), log")
    ax.set_ylabel("test accuracy, integer emulator (%)")
    ax.set_title(f"{TASKS[task]['title']}, {args.epochs} epochs", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "front.png"), dpi=110)
    print(f"wrote {os.path.join(args.out, 'front.png')}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    p.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    p.add_argument("--out", help="output folder (default runs/front_TASK)")
    p.add_argument("--methods", nargs="*", help="run only these methods (names as in the table)")
    p.add_argument("--retrain", action="store_true", help="retrain runs that already finished")
    p.add_argument("--hgqt", default=os.path.join(ROOT, "build", "hgqt"))
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data"),
                   help="folder of the data files (default data/)")
    a = p.parse_args()
    if a.epochs < 1 or a.jobs < 1 or a.threads < 1:
        p.error("--epochs, --jobs and --threads must be at least 1")
    a.out = os.path.abspath(a.out or os.path.join(ROOT, "runs", f"front_{a.task}"))
    a.data_dir = os.path.abspath(a.data_dir)
    t = TASKS[a.task]
    for d in {t["trace_data"], t["test_data"]}:
        if not os.path.exists(os.path.join(a.data_dir, os.path.basename(d))):
            sys.exit(f"bench_front: {os.path.join(a.data_dir, os.path.basename(d))} is missing "
                     f"(see the usage in {__file__})")
    if not os.path.exists(a.hgqt):
        sys.exit(f"bench_front: {a.hgqt} is missing (scripts/build.sh)")
    todo = methods(a.task)
    if a.methods:
        unknown = set(a.methods) - {m[0] for m in todo}
        if unknown:
            p.error(f"unknown methods {sorted(unknown)}; known: {[m[0] for m in todo]}")
        todo = [m for m in todo if m[0] in a.methods]
    rows, failed = [], []
    with cf.ThreadPoolExecutor(max_workers=a.jobs) as ex:
        futs = {ex.submit(one, a, a.task, m): m[0] for m in todo}
        for fut in cf.as_completed(futs):
            try:
                r = fut.result()
                rows.append(r)
                print(f"{r['method']}: {100 * r['accuracy']:.2f}%, exact EBOPs {r['ebops_exact']:,} "
                      f"({r['train_seconds']:.0f} s)", flush=True)
            except RuntimeError as e:
                failed.append(futs[fut])
                print(f"bench_front: {futs[fut]}: {e}", file=sys.stderr, flush=True)
    # the report covers every finished run in OUT of this budget, also earlier invocations
    for m in methods(a.task):
        path = os.path.join(a.out, m[0], "front.json")
        if m[0] not in {r["method"] for r in rows} and os.path.exists(path):
            with open(path) as f:
                r = json.load(f)
            if r.get("epochs") == a.epochs:
                rows.append(r)
    report(a, a.task, rows)
    if failed:
        sys.exit(f"bench_front: {len(failed)} runs failed: {failed}")


if __name__ == "__main__":
    main()
