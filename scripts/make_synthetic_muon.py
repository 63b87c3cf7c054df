#!/usr/bin/env python3
"""Synthetic stand-in for the HGQ paper's muon-tracking task (ATLAS TGC trigger): a track's
angle regressed from the strip hits of three detector layers.

THIS IS SYNTHETIC DATA, NOT DETECTOR DATA. The real TGC data are not public; this file only has
the schema a muon-tracking model reads, so that `configs/muon_tracking_conv1d.yaml` can be trained
and exported end to end. Its figures say nothing about muon tracking.

Generative model, per event: a straight track with slope t ~ U(-1, 1) (the target, in units of
strips per layer spacing divided by 8) and offset x0 ~ U(12, 36) strips crosses layers z = 0, 1, 2
at strip x0 + 8 t z + N(0, 0.4); the nearest strip fires (a cluster of 2 with probability 0.3),
each layer misses its hit with probability 0.05, and every strip fires as noise with
probability 0.01.

Output (--out): HDF5 with x_train [N, 48, 3] float32 (48 strips x 3 layers, channels last, 0/1),
y_train [N, 1] float32 (t), x_test [M, 48, 3], y_test [M, 1] (M = N / 5, an independent stream).

Usage: /usr/bin/python3 scripts/make_synthetic_muon.py --out data/synthetic_muon.h5 [--n 60000] [--seed 0]
"""
import argparse

import h5py
import numpy as np

STRIPS, LAYERS, SPACING = 48, 3, 8.0


def events(n, rng):
    t = rng.uniform(-1.0, 1.0, n).astype(np.float32)
    x0 = rng.uniform(12.0, 36.0, n)
    x = np.zeros((n, STRIPS, LAYERS), np.float32)
    rows = np.arange(n)
    for z in range(LAYERS):
        pos = x0 + SPACING * t * z + rng.normal(0.0, 0.4, n)
        strip = np.rint(pos).astype(int)
        hit = (rng.random(n) >= 0.05) & (strip >= 0) & (strip < STRIPS)
        x[rows[hit], strip[hit], z] = 1.0
        # Two-strip clusters on the side the track passed.
        side = np.where(pos > strip, 1, -1)
        second = strip + side
        two = hit & (rng.random(n) < 0.3) & (second >= 0) & (second < STRIPS)
        x[rows[two], second[two], z] = 1.0
    x[rng.random(x.shape) < 0.01] = 1.0
    return x, t.reshape(-1, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.n < 10:
        ap.error("--n must be at least 10")
    x, y = events(a.n, np.random.default_rng(a.seed))
    xt, yt = events(a.n // 5, np.random.default_rng(a.seed + 1_000_003))
    with h5py.File(a.out, "w") as f:
        f["x_train"], f["y_train"], f["x_test"], f["y_test"] = x, y, xt, yt
        f.attrs["description"] = "synthetic muon-tracking stand-in (scripts/make_synthetic_muon.py)"
    print(f"wrote {a.out}: {a.n} train and {a.n // 5} test events, x [{STRIPS}, {LAYERS}], y = slope")


if __name__ == "__main__":
    main()
