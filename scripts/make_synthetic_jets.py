#!/usr/bin/env python3
"""Synthetic stand-in for the hls4ml LHC jet tagging data set (16 high-level features, 5 classes).

THIS IS SYNTHETIC DATA, NOT THE PHYSICS DATA SET. No jets were simulated: the features are drawn
from hand-made class-dependent distributions that only borrow the names, signs and rough ranges of
the real high-level features, so that `configs/jet_tagger.yaml` (a 16-64-32-32-5 MLP) can be
trained, traced, exported and synthesized end to end on machines without the real data. The
accuracy reached on it says nothing about jet tagging.

Generative model, per jet of class k in (g, q, W, Z, t), equal class frequencies:
  * a 16-dim latent vector u ~ N(mu_k, D_k R D_k): R is a fixed correlation matrix (groups of
    related substructure variables share factors), mu_k and the scales D_k are fixed tables below;
    W and Z, and g and q, are deliberately close so that the classes overlap (moderate accuracy);
  * zlogz = -exp(u_0); the 13 ratios c1_*, c2_*, d2_*, m2_*, n2_* = exp(u_i) (log-normal);
    mass_mmdt = exp(u_14) (log-normal around ~30, 30, 80, 90, 170 GeV);
    multiplicity = Poisson(exp(u_15)) (a float count).
The class structure (mu, D, R) is fixed; --seed only changes the sampled jets.

Output (--out): the hls4ml jetImage HDF5 layout read by `read_jet_h5`: data set `jets` [N, 21]
float32 holding the 16 features followed by the one-hot columns j_g, j_q, j_w, j_z, j_t, and
`jetFeatureNames` (21 fixed-length byte strings).
Optional (--plain-out): a plain file for `hgqt emulate` / `hgqt export --tb-data` with x_test
[M, 16] float32 (raw features, not standardized: the archive standardizes itself) and y_test [M]
int32 class indices, M = --plain-n held-out jets drawn from an independent random stream.

Usage: /usr/bin/python3 scripts/make_synthetic_jets.py --out data/synthetic_jets.h5 \
           [--n 100000] [--seed 0] [--plain-out data/synthetic_jets_plain.h5] [--plain-n 20000]
"""
import argparse

import h5py
import numpy as np

FEATURES = [
    "zlogz", "c1_b0_mmdt", "c1_b1_mmdt", "c1_b2_mmdt", "c2_b1_mmdt", "c2_b2_mmdt",
    "d2_b1_mmdt", "d2_b2_mmdt", "d2_a1_b1_mmdt", "d2_a1_b2_mmdt", "m2_b1_mmdt", "m2_b2_mmdt",
    "n2_b1_mmdt", "n2_b2_mmdt", "mass_mmdt", "multiplicity",
]
CLASSES = ["j_g", "j_q", "j_w", "j_z", "j_t"]

# Latent means (log scale), rows: g, q, W, Z, t; columns follow FEATURES.
MU = np.array([
    # zlogz c1b0   c1b1   c1b2   c2b1   c2b2   d2b1  d2b2  d2a1b1 d2a1b2 m2b1   m2b2   n2b1   n2b2   mass  mult
    [1.05, -1.10, -1.90, -2.60, -1.70, -2.30, 0.95, 1.15, 0.70, 0.80, -2.55, -3.25, -1.05, -1.45, 3.35, 3.80],  # g
    [0.85, -1.35, -2.15, -2.85, -1.95, -2.55, 0.80, 1.00, 0.55, 0.65, -2.70, -3.40, -1.20, -1.60, 3.15, 3.45],  # q
    [0.75, -0.85, -1.85, -2.80, -2.30, -2.95, 0.35, 0.45, 0.15, 0.25, -2.85, -3.60, -1.45, -1.90, 4.38, 3.60],  # W
    [0.78, -0.85, -1.83, -2.77, -2.25, -2.90, 0.38, 0.48, 0.18, 0.28, -2.82, -3.57, -1.42, -1.87, 4.45, 3.64],  # Z
    [1.10, -0.65, -1.45, -2.20, -1.80, -2.40, 0.60, 0.75, 0.40, 0.50, -2.40, -3.05, -1.10, -1.50, 5.10, 4.05],  # t
])
# Latent standard deviations per class (same layout).
SCALE = np.array([
    [0.35, 0.45, 0.50, 0.55, 0.50, 0.55, 0.45, 0.50, 0.45, 0.50, 0.55, 0.60, 0.45, 0.50, 0.60, 0.30],  # g
    [0.40, 0.50, 0.55, 0.60, 0.55, 0.60, 0.50, 0.55, 0.50, 0.55, 0.60, 0.65, 0.50, 0.55, 0.65, 0.32],  # q
    [0.35, 0.35, 0.40, 0.45, 0.45, 0.50, 0.40, 0.45, 0.40, 0.45, 0.50, 0.55, 0.40, 0.45, 0.13, 0.28],  # W
    [0.35, 0.35, 0.40, 0.45, 0.45, 0.50, 0.40, 0.45, 0.40, 0.45, 0.50, 0.55, 0.40, 0.45, 0.13, 0.28],  # Z
    [0.30, 0.35, 0.40, 0.45, 0.40, 0.45, 0.40, 0.45, 0.40, 0.45, 0.45, 0.50, 0.40, 0.45, 0.18, 0.25],  # t
])
# Factor groups for the shared correlation matrix: variables of one group load on one factor.
GROUPS = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11], [12, 13], [0, 15], [14]]


def correlation():
    """A fixed correlation matrix: a within-group factor, a global factor and unique noise."""
    rng = np.random.default_rng(20240611)  # fixed: the class structure does not depend on --seed
    n = len(FEATURES)
    load = np.zeros((n, len(GROUPS) + 1))
    for g, members in enumerate(GROUPS):
        for i in members:
            load[i, g] = rng.uniform(0.6, 0.85)
    load[:, -1] = rng.uniform(0.1, 0.35, n)
    cov = load @ load.T
    cov[np.diag_indices(n)] = 1.0  # unique variance fills the diagonal up to 1
    w, v = np.linalg.eigh(cov)
    cov = (v * np.maximum(w, 1e-3)) @ v.T  # keep it positive definite
    d = np.sqrt(np.diag(cov))
    return cov / np.outer(d, d)


def latent(rng, labels):
    corr = correlation()
    u = np.empty((labels.size, len(FEATURES)))
    for k in range(len(CLASSES)):
        idx = np.flatnonzero(labels == k)
        cov = corr * np.outer(SCALE[k], SCALE[k])
        u[idx] = rng.multivariate_normal(MU[k], cov, size=idx.size, method="cholesky")
    return u


def features(rng, u):
    x = np.exp(u)
    x[:, 0] = -x[:, 0]  # zlogz is negative
    x[:, 15] = rng.poisson(x[:, 15]).astype(np.float64)  # multiplicity: an integer count
    return x.astype(np.float32)


def sample(seed, n):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    x = features(rng, latent(rng, labels))
    return x, labels.astype(np.int32)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="HDF5 file in the hls4ml jetImage layout")
    p.add_argument("--n", type=int, default=100000, help="number of jets (default 100000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--plain-out", help="also write x_test/y_test (raw features, class indices) here")
    p.add_argument("--plain-n", type=int, default=20000,
                   help="held-out jets in --plain-out (default 20000)")
    a = p.parse_args()
    if a.n <= 0 or a.plain_n <= 0:
        p.error("--n and --plain-n must be positive")

    x, y = sample([a.seed, 0], a.n)
    onehot = np.eye(len(CLASSES), dtype=np.float32)[y]
    names = np.array([s.encode() for s in FEATURES + CLASSES], dtype="S16")
    with h5py.File(a.out, "w") as f:
        f.create_dataset("jets", data=np.concatenate([x, onehot], axis=1))
        f.create_dataset("jetFeatureNames", data=names)
        f.attrs["description"] = "SYNTHETIC stand-in for the hls4ml jet data (not physics data)"
        f.attrs["seed"] = a.seed
    counts = np.bincount(y, minlength=len(CLASSES))
    print(f"wrote {a.out}: jets {x.shape[0]}x{x.shape[1] + len(CLASSES)}, classes "
          + ", ".join(f"{c[2:]}={n}" for c, n in zip(CLASSES, counts)))

    if a.plain_out:
        xp, yp = sample([a.seed, 1], a.plain_n)  # an independent stream: held-out jets
        with h5py.File(a.plain_out, "w") as f:
            f.create_dataset("x_test", data=xp)
            f.create_dataset("y_test", data=yp)
            f.attrs["description"] = "SYNTHETIC stand-in for the hls4ml jet data (not physics data)"
            f.attrs["feature_names"] = np.array([s.encode() for s in FEATURES], dtype="S16")
            f.attrs["seed"] = a.seed
        print(f"wrote {a.plain_out}: x_test {xp.shape[0]}x{xp.shape[1]} (raw), y_test {yp.shape[0]}")


if __name__ == "__main__":
    main()
