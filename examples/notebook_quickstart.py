# %% [markdown]
# # hgqt from Python: Fashion-MNIST end to end
#
# Percent-format cells (Jupyter, VS Code, `jupytext --to notebook`); also a plain script:
#
#     PYTHONPATH=build/python /usr/bin/python3 examples/notebook_quickstart.py
#
# Trains the HGQ MLP of `configs/fashion_mnist_mlp.yaml` with hgqt's C++ trainer, looks at the
# learned bit widths, plots the Pareto front, traces and exports the model to HLS, runs the
# integer emulator and checks that the emulator, the model's float64 reference and the HLS
# C simulation agree bit for bit.
#
# Environment: HGQT_EXAMPLE_EPOCHS (default: the config's 12), HGQT_EXAMPLE_OUT (default
# runs/notebook_quickstart), HGQT_EXAMPLE_CSIM=0 skips the HLS C simulation (g++).

# %%
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # a plain script writes PNG files
import matplotlib.pyplot as plt
import numpy as np
import torch

import hgqt

REPO = Path(__file__).resolve().parents[1] if "__file__" in globals() else Path.cwd()
OUT = Path(os.environ.get("HGQT_EXAMPLE_OUT", REPO / "runs" / "notebook_quickstart"))
DATA = REPO / "data" / "fashion_mnist.h5"
OUT.mkdir(parents=True, exist_ok=True)
print("hgqt", hgqt.__version__, "| torch", torch.__version__, "| output in", OUT)

# %% [markdown]
# ## Data
# `hgqt data fashion-mnist` converts Debian's `dataset-fashion-mnist` into one HDF5 file.

# %%
if not DATA.exists():
    hgqt_bin = os.environ.get("HGQT_BIN", str(REPO / "build" / "hgqt"))
    subprocess.run([hgqt_bin, "data", "fashion-mnist", "--out", str(DATA)], check=True)
with h5py.File(DATA, "r") as f:
    x_train = f["x_train"][:]
    x_test, y_test = f["x_test"][:], f["y_test"][:]
print("train", x_train.shape, x_train.dtype, "| test", x_test.shape)

# %% [markdown]
# ## Train with the C++ trainer
# The callback receives each epoch's metrics; the GIL is released while the trainer runs.

# %%
overrides = {}
if "HGQT_EXAMPLE_EPOCHS" in os.environ:
    epochs = int(os.environ["HGQT_EXAMPLE_EPOCHS"])
    # the config's recipe, shortened: beta ramps over the first quarter, then holds
    overrides = {"train.epochs": epochs,
                 "train.beta.points": [[0, 1e-8], [epochs / 4, 2e-7], [epochs, 2e-7]]}
config = hgqt.load_config(REPO / "configs" / "fashion_mnist_mlp.yaml", overrides)
history = []


def on_epoch(m):
    history.append(m)
    print(f"epoch {m['epoch']:2d}  loss {m['loss']:.4f}  val_acc {m['val_accuracy']:.4f}  "
          f"EBOPs {m['ebops']:9.0f}  beta {m['beta']:.1e}  ({m['seconds']:.1f} s)", flush=True)


t0 = time.time()
result = hgqt.train(config, OUT / "run", callback=on_epoch, overwrite=True, verbose=False)
print(f"trained {len(history)} epochs in {time.time() - t0:.0f} s; best: epoch "
      f"{result['best']['epoch']}, test accuracy {result['test']['accuracy']:.4f} "
      f"at {result['test']['ebops']:.0f} EBOPs")

# %% [markdown]
# ## The best model, its layers and bit widths

# %%
model = hgqt.load_checkpoint(result["best_checkpoint"])
model.eval()
print(hgqt.format_summary(model))
first = next(layer for layer in model.layers.values() if layer.kind == "dense")
k, i, f = first.quantizers["input"].kif()
input_bits = (k + i + f).clamp(min=0).reshape(28, 28)  # sign + integer + fractional bits
kernel_bits = first.quantizers["kernel"].bits().detach()  # [784, 64], sign excluded

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
im = axes[0].imshow(input_bits.numpy(), cmap="viridis")
axes[0].set_title("input bits per pixel (first dense layer)")
fig.colorbar(im, ax=axes[0])
im = axes[1].imshow(kernel_bits.numpy().T, aspect="auto", cmap="viridis", interpolation="nearest")
axes[1].set_title("kernel bits [64 units x 784 inputs]")
fig.colorbar(im, ax=axes[1])
fig.tight_layout()
fig.savefig(OUT / "bit_widths.png", dpi=80)
print(f"pixels with 0 bits (pruned inputs): {(input_bits == 0).sum().item()} of 784; "
      f"weights with 0 bits: {(kernel_bits == 0).float().mean().item():.1%}")

# %% [markdown]
# ## Accuracy against EBOPs: every epoch and the Pareto front

# %%
front = json.loads((OUT / "run" / "pareto.json").read_text())
fig, ax = plt.subplots(figsize=(6, 4))
ax.scatter([m["ebops"] for m in history], [m["val_accuracy"] for m in history], label="epochs")
ax.plot([p["ebops"] for p in front], [p["val_accuracy"] for p in front], "r.-", label="Pareto front")
ax.set_xscale("log")
ax.set_xlabel("EBOPs")
ax.set_ylabel("validation accuracy")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "pareto.png", dpi=80)
print("Pareto front:", [(p["epoch"], round(p["val_accuracy"], 4), p["ebops"]) for p in front])

# %% [markdown]
# ## Trace, export HLS, emulate
# The trace calibrates every activation quantizer on training data so that nothing overflows;
# the emulator then reproduces the hardware bit for bit.

# %%
stats = hgqt.trace(model, x_train[:20000])
print(f"trace: {stats['samples']} samples, {stats['passes']} passes, EBOPs "
      f"{stats['ebops_before']:.0f} -> {stats['exact_ebops']:.0f} (exact)")
archive = hgqt.to_archive(model, name="fmnist_mlp")
hls_dir = hgqt.export(archive, OUT / "hls", format="hls", tb_inputs=x_test[:500])
print("HLS project:", hls_dir)

y_emu, emu_stats = hgqt.emulate(archive, x_test, return_stats=True)
y_ref = model.forward_exact(x_test).numpy()
mismatches = int((y_emu != y_ref).any(axis=1).sum())
print(f"emulator vs float64 model on {len(x_test)} test images: {mismatches} mismatching rows; "
      f"emulator accuracy {(y_emu.argmax(1) == y_test).mean():.4f}; overflows {emu_stats}")
assert mismatches == 0, "the emulator must be bit-exact with the model"

# %% [markdown]
# ## HLS C simulation
# The exported testbench compares the HLS C++ (ap_fixed) with the emulator's outputs on the
# 500 test images; hgqt ships an ap_fixed simulation header for g++.

# %%
cxx = shutil.which(os.environ.get("CXX", "g++"))
if os.environ.get("HGQT_EXAMPLE_CSIM", "1") != "0" and cxx:
    ap_include = os.environ.get("AP_TYPES_INCLUDE", str(REPO / "tests" / "ap_types_sim"))
    subprocess.run([cxx, "-O1", "-std=c++17", f"-I{ap_include}", "myproject_test.cpp",
                    "firmware/myproject.cpp", "-o", "myproject_tb"], cwd=hls_dir, check=True)
    sim = subprocess.run(["./myproject_tb"], cwd=hls_dir, capture_output=True, text=True)
    line = [l for l in sim.stdout.splitlines() if "hls testbench:" in l]
    print(line[-1] if line else sim.stdout[-500:])
    assert sim.returncode == 0, "HLS C simulation found mismatches"
else:
    print("HLS C simulation skipped (HGQT_EXAMPLE_CSIM=0 or no g++)")
print("done: figures in", OUT)
