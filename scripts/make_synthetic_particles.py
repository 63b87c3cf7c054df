#!/usr/bin/env python3
"""Synthetic jet-constituent (particle-list) data set for set models, 5 classes g, q, W, Z, t.

THIS IS SYNTHETIC DATA, NOT THE PHYSICS DATA SET. No event generator, parton shower or detector
simulation was run: each jet is a handful of "prongs" in a flat (eta, phi) plane, each prong is
sprayed with particles by hand-made class-dependent rules, so that set models (Deep Sets,
transformers over the particle list) have real structure to learn on machines without the hls4ml
LHC jet data. The accuracy reached on it says nothing about jet tagging.

Toy model, per jet of class k in (g, q, W, Z, t) (label indices 0..4, exactly equal counts):
  * jet pT uniform in [800, 1200] GeV; the network never sees it (features are relative), so a
    boson mass is only visible as m/pT and W (80.4 GeV) and Z (91.2 GeV) overlap;
  * prongs (small-angle, massless kinematics: m^2 = z (1 - z) pT^2 dR^2 + masses / fractions):
      g, q: one prong (gluon- or quark-like); with probability 0.55 (g) / 0.30 (q) a hard gluon
            emission adds a second prong, z log-uniform in [0.05, 0.5], angle log-uniform in
            [0.03, 0.6] rad (the QCD mass tail);
      W, Z: two quark prongs, z = (1 + cos theta) / 2 with dN/dcos theta ~ 1 + cos^2 theta,
            opening angle m / (pT sqrt(z (1 - z))) (~2 m / pT), m from a Breit-Wigner
            (80.4 / 2.1 GeV, 91.2 / 2.5 GeV); 15% of Z decay to b b-bar (two b prongs);
      t:    b + W (m ~ BW(172.8, 1.4 GeV)), z_b uniform in [0.15, 0.65], W -> two quark prongs;
    the prongs are placed so that their pT-weighted centroid is the origin, in a random azimuth;
  * particles per prong ~ Poisson(c_type * ln(pT_prong / 2 GeV) * G), G ~ Gamma(6) / 6 (one G per
    jet: overdispersion), c_type = quark 2.1, gluon 2.6, boson daughter 1.8, b 2.3 (at P = 32
    the mean multiplicity orders t > g > Z ~ W > q); momentum fractions within a prong are
    Dirichlet(alpha) with alpha = quark 0.55, gluon 0.9, boson daughter 0.55, b 0.8 (smaller:
    harder leading particles); a particle of pT p sits at a Rayleigh(s_type * (p / GeV)^-0.5)
    radius from its prong axis, s_type = quark 0.20, gluon 0.30, boson daughter 0.16, b 0.22 rad
    (softer: wider);
  * soft radiation: Poisson(lambda_k) particles with pT ~ 0.3 + Exp(1.5) GeV, lambda = g 6.0,
    q 3.5, W 1.5, Z 1.5, t 4.0; for q, g, t spread as a Gaussian (0.30 rad) around the jet axis,
    for the colour singlets W and Z along the segment between their two prongs (colour
    coherence), 0.06 rad around it;
  * pile-up / underlying event, the same for every class: Poisson(8 G') particles, G' ~
    Gamma(2) / 2 per jet (the amount varies a lot from jet to jet), pT ~ 0.5 + Exp(2.0) GeV,
    uniform over the jet area; it smears the ungroomed summary features below (mass,
    multiplicity), while a set model can learn to discount soft particles;
  * particles below 0.5 GeV or beyond dR = 0.8 rad of the axis are dropped (the jet: anti-kT
    R = 0.8 in spirit); the jet pT is the sum of the kept particles, the jet axis their
    pT-weighted (eta, phi) centroid.
The class structure (every constant above) is fixed; --seed only changes the sampled jets.

Per-particle features, in this order (F = --features):
  F = 3: pt_rel, deta, dphi
  F = 5: pt_rel, deta, dphi, log_pt_rel, dR
  pt_rel     particle pT / jet pT (the jet: all kept particles, also those beyond P), in (0, 1]
  deta, dphi eta and phi relative to the jet axis, in units of 0.2 rad (|.| <= ~4.2: R = 0.8)
  log_pt_rel ln(pt_rel) / 2 (in [-4, 0) given the 0.5 GeV threshold)
  dR         sqrt(deta^2 + dphi^2), in the same 0.2 rad units
Particles are sorted by pT, descending; lists are truncated to P = --particles and zero-padded
(a padding row is all zeros; a real particle has pt_rel > 0). The features are scaled so that no
standardizer is needed (a per-element standardizer breaks the permutation invariance of set
models: see docs/particles.md).

Summary (high-level) features, computed from the SAME truncated float32 particle lists, for the
comparison MLP (angles in rad; massless particles; z_i = pt_rel; no grooming):
  m_over_pt     jet mass / jet pT (from the listed particles' four-momenta)
  multiplicity  number of listed (non-padding) particles
  pt_sum        sum of pt_rel (< 1 when the list was truncated)
  lead_frac     pt_rel of the leading particle
  ptd           sqrt(sum z^2) / sum z
  girth         sum z dR / sum z
  lha           sum z sqrt(dR / 0.8) / sum z (Les Houches angularity)
  e2            sum_{i<j} z_i z_j dR_ij / (sum z)^2 (2-point energy correlator, beta = 1)
  tau1, tau2, tau3  N-subjettiness (beta = 1, sum z min_k dR_ik / sum z) with axes from a
                pT-weighted k-means (seeded kT-like: the leading particle, then the particle with
                the largest pt * dR^2 to its nearest axis so far; 4 Lloyd iterations; tau1 uses
                the pT-weighted centroid of the listed particles)
  tau21, tau32  tau2 / tau1, tau3 / tau2 (0 where the denominator is 0)

Output (--out), HDF5: x_train [N, P, F] float32, y_train [N] int64 (class indices), x_test
[M, P, F], y_test [M] (M = --n-test held-out jets from an independent random stream), s_train
[N, S] float32, s_test [M, S], feature_names [F] and summary_names [S] (fixed-length byte
strings), class_names [5]; attributes description, seed.

Usage: /usr/bin/python3 scripts/make_synthetic_particles.py --out data/synthetic_particles.h5 \
           [--n 100000] [--n-test N/5] [--particles 32] [--features 3|5] [--seed 0]
"""
import argparse
import os
import sys

import h5py
import numpy as np

CLASSES = ["g", "q", "W", "Z", "t"]
FEATURES = ["pt_rel", "deta", "dphi", "log_pt_rel", "dR"]
SUMMARIES = ["m_over_pt", "multiplicity", "pt_sum", "lead_frac", "ptd", "girth", "lha", "e2",
             "tau1", "tau2", "tau3", "tau21", "tau32"]

ANGLE_UNIT = 0.2  # rad per unit of deta, dphi, dR
JET_R = 0.8       # rad: particles beyond it are dropped
PT_MIN = 0.5      # GeV: particles below it are dropped
CHUNK = 8192      # jets per vectorised batch (fixed: the output depends on the seed only)

# Prong types: quark (QCD jet), gluon (QCD jet or emission), boson daughter quark, b quark.
QUARK, GLUON, DAUGHTER, BQUARK = 0, 1, 2, 3
MULT_C = np.array([2.1, 2.6, 1.8, 2.3])      # particles per prong: c * ln(pT / 2 GeV)
ALPHA = np.array([0.55, 0.9, 0.55, 0.8])     # Dirichlet concentration of momentum fractions
SPREAD = np.array([0.20, 0.30, 0.16, 0.22])  # rad at 1 GeV; radius ~ s * (pT / GeV)^-0.5
SPLIT_P = {0: 0.55, 1: 0.30}                 # hard-emission probability of g, q jets
SOFT_LAMBDA = np.array([6.0, 3.5, 1.5, 1.5, 4.0])
SOFT_PT = 1.5                                # GeV: soft-radiation pT ~ 0.3 + Exp(SOFT_PT)
PILEUP_LAMBDA = 8.0                          # class-independent soft particles per jet (mean)
PILEUP_SHAPE = 2.0                           # its per-jet mean ~ lambda * Gamma(shape) / shape
PILEUP_PT = 2.0                              # GeV: pile-up pT ~ PT_MIN + Exp(PILEUP_PT)
MASS = {2: (80.4, 2.1), 3: (91.2, 2.5), 4: (172.8, 1.4)}  # Breit-Wigner mass, width (GeV)
W_MASS = (80.4, 2.1)
Z_BB = 0.15                                  # fraction of Z -> b b-bar
MAX_PRONG_PARTICLES = 80
MAX_SOFT = 20
MAX_PILEUP = 40


class ArgumentError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message):
        raise ArgumentError(message)


def breit_wigner(rng, mean, width, n):
    """Cauchy-distributed masses, truncated to mean +- 5 widths."""
    m = mean + 0.5 * width * np.tan(np.pi * (rng.random(n) - 0.5))
    return np.clip(m, mean - 5 * width, mean + 5 * width)


def decay_fraction(rng, n):
    """z = (1 + cos theta) / 2 with dN/dcos theta ~ 1 + cos^2 theta (accept-reject)."""
    c = rng.uniform(-1.0, 1.0, (n, 4))
    u = rng.random((n, 4))
    ok = 2.0 * u <= 1.0 + c ** 2
    first = np.argmax(ok, axis=1)
    c = np.where(ok.any(axis=1), c[np.arange(n), first], c[:, 0])
    return np.clip(0.5 * (1.0 + c), 0.02, 0.98)


def unit_vectors(rng, n):
    a = rng.uniform(0.0, 2.0 * np.pi, n)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def prongs(rng, labels, pt_jet):
    """Prong pT [n, 3] (0: absent), positions [n, 3, 2] (rad) and types [n, 3]."""
    n = labels.size
    pt = np.zeros((n, 3))
    pos = np.zeros((n, 3, 2))
    kind = np.zeros((n, 3), dtype=np.int64)

    # QCD: one prong, sometimes a hard gluon emission.
    for k, first in ((0, GLUON), (1, QUARK)):
        idx = np.flatnonzero(labels == k)
        m = idx.size
        split = rng.random(m) < SPLIT_P[k]
        z = np.exp(rng.uniform(np.log(0.05), np.log(0.5), m)) * split
        theta = np.exp(rng.uniform(np.log(0.03), np.log(0.6), m))
        u = unit_vectors(rng, m)
        pt[idx, 0] = (1 - z) * pt_jet[idx]
        pt[idx, 1] = z * pt_jet[idx]
        pos[idx, 0] = (z * theta)[:, None] * u
        pos[idx, 1] = -((1 - z) * theta)[:, None] * u
        kind[idx, 0] = first
        kind[idx, 1] = GLUON

    # W, Z: two daughter quarks.
    for k in (2, 3):
        idx = np.flatnonzero(labels == k)
        m = idx.size
        mass = breit_wigner(rng, *MASS[k], m)
        z = decay_fraction(rng, m)
        theta = mass / (pt_jet[idx] * np.sqrt(z * (1 - z)))
        u = unit_vectors(rng, m)
        pt[idx, 0] = z * pt_jet[idx]
        pt[idx, 1] = (1 - z) * pt_jet[idx]
        pos[idx, 0] = ((1 - z) * theta)[:, None] * u
        pos[idx, 1] = -(z * theta)[:, None] * u
        kind[idx, :2] = DAUGHTER
        if k == 3:  # Z -> b b-bar: heavy-flavour prongs (softer, busier, wider)
            kind[idx[rng.random(m) < Z_BB], :2] = BQUARK

    # t: b + W, W -> two daughter quarks.
    idx = np.flatnonzero(labels == 4)
    m = idx.size
    mt = breit_wigner(rng, *MASS[4], m)
    mw = breit_wigner(rng, *W_MASS, m)
    zb = rng.uniform(0.15, 0.65, m)
    # m_t^2 = m_W^2 / (1 - z_b) + z_b (1 - z_b) pT^2 dR^2 (massless b)
    dr_pt = np.sqrt(np.maximum(mt ** 2 - mw ** 2 / (1 - zb), 1.0) / (zb * (1 - zb)))
    theta_bw = dr_pt / pt_jet[idx]
    u1 = unit_vectors(rng, m)
    pw = (1 - zb) * pt_jet[idx]
    w_pos = -(zb * theta_bw)[:, None] * u1
    zq = decay_fraction(rng, m)
    theta_qq = mw / (pw * np.sqrt(zq * (1 - zq)))
    u2 = unit_vectors(rng, m)
    pt[idx, 0] = zb * pt_jet[idx]
    pt[idx, 1] = zq * pw
    pt[idx, 2] = (1 - zq) * pw
    pos[idx, 0] = ((1 - zb) * theta_bw)[:, None] * u1
    pos[idx, 1] = w_pos + ((1 - zq) * theta_qq)[:, None] * u2
    pos[idx, 2] = w_pos - (zq * theta_qq)[:, None] * u2
    kind[idx, 0] = BQUARK
    kind[idx, 1:] = DAUGHTER
    return pt, pos, kind


def particles(rng, labels):
    """Unsorted particles of a batch of jets: pT [n, K] (0: none) and (eta, phi) [n, K, 2]."""
    n = labels.size
    pt_jet = rng.uniform(800.0, 1200.0, n)
    ppt, ppos, pkind = prongs(rng, labels, pt_jet)
    active = ppt > 0

    # Multiplicity per prong (one overdispersion factor per jet), at least one particle each.
    boost = rng.gamma(6.0, 1.0 / 6.0, n)
    mu = MULT_C[pkind] * np.log(np.maximum(ppt, 2.0) / 2.0) * boost[:, None]
    count = np.where(active, np.clip(rng.poisson(mu), 1, MAX_PRONG_PARTICLES), 0)
    ends = np.cumsum(count, axis=1)
    width = int(ends[:, -1].max())
    slot = np.arange(width)[None, :]
    valid = slot < ends[:, -1:]
    prong = (slot >= ends[:, :1]).astype(np.int64) + (slot >= ends[:, 1:2])
    prong = np.minimum(prong, 2)
    rows = np.arange(n)[:, None]
    kind = pkind[rows, prong]

    # Dirichlet momentum fractions within each prong.
    w = rng.gamma(ALPHA[kind]) * valid
    w = np.maximum(w, 1e-300 * valid)
    wsum = np.zeros((n, 3))
    for p in range(3):
        wsum[:, p] = np.sum(w * (prong == p), axis=1)
    pt = np.where(valid, ppt[rows, prong] * w / np.maximum(wsum[rows, prong], 1e-300), 0.0)

    # Angular spread around the prong axis, wider for softer particles.
    sigma = SPREAD[kind] / np.sqrt(np.maximum(pt, 1e-3))
    r = sigma * np.sqrt(-2.0 * np.log1p(-rng.random(pt.shape)))
    a = rng.uniform(0.0, 2.0 * np.pi, pt.shape)
    pos = ppos[rows, prong] + np.stack([r * np.cos(a), r * np.sin(a)], axis=-1)

    # Soft radiation.
    nsoft = np.minimum(rng.poisson(SOFT_LAMBDA[labels]), MAX_SOFT)
    sslot = np.arange(MAX_SOFT)[None, :]
    spt = np.where(sslot < nsoft[:, None], 0.3 + rng.exponential(SOFT_PT, (n, MAX_SOFT)), 0.0)
    gauss = rng.normal(0.0, 1.0, (n, MAX_SOFT, 2))
    t = rng.uniform(-0.2, 1.2, (n, MAX_SOFT, 1))
    dipole = ppos[:, None, 0] + t * (ppos[:, None, 1] - ppos[:, None, 0]) + 0.06 * gauss
    singlet = ((labels == 2) | (labels == 3))[:, None, None]
    spos = np.where(singlet, dipole, 0.30 * gauss)

    # Pile-up / underlying event: the same for every class, uniform over the jet area.
    npu = rng.poisson(PILEUP_LAMBDA * rng.gamma(PILEUP_SHAPE, 1.0 / PILEUP_SHAPE, n))
    npu = np.minimum(npu, MAX_PILEUP)
    uslot = np.arange(MAX_PILEUP)[None, :]
    upt = np.where(uslot < npu[:, None], PT_MIN + rng.exponential(PILEUP_PT, (n, MAX_PILEUP)), 0.0)
    ur = JET_R * np.sqrt(rng.random((n, MAX_PILEUP)))
    ua = rng.uniform(0.0, 2.0 * np.pi, (n, MAX_PILEUP))
    upos = np.stack([ur * np.cos(ua), ur * np.sin(ua)], axis=-1)

    pt = np.concatenate([pt, spt, upt], axis=1)
    pos = np.concatenate([pos, spos, upos], axis=1)
    keep = (pt >= PT_MIN) & (np.hypot(pos[..., 0], pos[..., 1]) <= JET_R)
    keep[np.arange(n), np.argmax(pt, axis=1)] = True  # never an empty jet
    return np.where(keep, pt, 0.0), pos


def jets(rng, labels, n_particles, n_features):
    """Sorted, truncated, zero-padded particle features [n, P, F] float32 of a batch of jets."""
    pt, pos = particles(rng, labels)
    total = pt.sum(axis=1, keepdims=True)
    axis = np.sum(pt[..., None] * pos, axis=1) / total
    order = np.argsort(-pt, axis=1, kind="stable")[:, :n_particles]
    rows = np.arange(labels.size)[:, None]
    pt = pt[rows, order]
    rel = (pos[rows, order] - axis[:, None, :]) / ANGLE_UNIT
    k = pt.shape[1]
    x = np.zeros((labels.size, n_particles, n_features))
    real = pt > 0
    x[:, :k, 0] = pt / total
    x[:, :k, 1] = rel[..., 0] * real
    x[:, :k, 2] = rel[..., 1] * real
    if n_features == 5:
        x[:, :k, 3] = np.where(real, 0.5 * np.log(np.where(real, pt / total, 1.0)), 0.0)
        x[:, :k, 4] = np.hypot(rel[..., 0], rel[..., 1]) * real
    return x.astype(np.float32)


def kmeans_axes(z, eta, phi, k):
    """pT-weighted k-means axes [n, k, 2], seeded kT-like (see the module docstring)."""
    n = z.shape[0]
    rows = np.arange(n)
    pts = np.stack([eta, phi], axis=-1)
    axes = np.zeros((n, k, 2))
    axes[:, 0] = pts[:, 0]
    for j in range(1, k):
        d2 = np.min(np.sum((pts[:, :, None, :] - axes[:, None, :j, :]) ** 2, axis=-1), axis=2)
        axes[:, j] = pts[rows, np.argmax(z * d2, axis=1)]
    for _ in range(4):
        d2 = np.sum((pts[:, :, None, :] - axes[:, None, :, :]) ** 2, axis=-1)
        near = np.argmin(d2, axis=2)
        for j in range(k):
            wj = z * (near == j)
            s = wj.sum(axis=1)
            c = np.sum(wj[..., None] * pts, axis=1) / np.maximum(s, 1e-30)[:, None]
            axes[:, j] = np.where((s > 0)[:, None], c, axes[:, j])
    return axes


def summaries(x):
    """The high-level features [n, S] float32 of particle lists x [n, P, F] (float32)."""
    x = x.astype(np.float64)
    z = x[..., 0]
    eta = x[..., 1] * ANGLE_UNIT
    phi = x[..., 2] * ANGLE_UNIT
    real = z > 0
    zsum = z.sum(axis=1)
    dr = np.hypot(eta, phi)

    px, py = z * np.cos(phi), z * np.sin(phi)
    pz, e = z * np.sinh(eta), z * np.cosh(eta)
    m2 = e.sum(1) ** 2 - px.sum(1) ** 2 - py.sum(1) ** 2 - pz.sum(1) ** 2
    mass = np.sqrt(np.maximum(m2, 0.0))

    mult = real.sum(axis=1).astype(np.float64)
    lead = z[:, 0]
    ptd = np.sqrt(np.sum(z ** 2, axis=1)) / zsum
    girth = np.sum(z * dr, axis=1) / zsum
    lha = np.sum(z * np.sqrt(dr / JET_R), axis=1) / zsum
    dij = np.hypot(eta[:, :, None] - eta[:, None, :], phi[:, :, None] - phi[:, None, :])
    e2 = 0.5 * np.einsum("ni,nj,nij->n", z, z, dij) / zsum ** 2

    taus = []
    for k in (1, 2, 3):
        if k == 1:
            axes = np.zeros((z.shape[0], 1, 2))
            axes[:, 0, 0] = np.sum(z * eta, 1) / zsum
            axes[:, 0, 1] = np.sum(z * phi, 1) / zsum
        else:
            axes = kmeans_axes(z, eta, phi, k)
        d = np.hypot(eta[:, :, None] - axes[:, None, :, 0], phi[:, :, None] - axes[:, None, :, 1])
        taus.append(np.sum(z * d.min(axis=2), axis=1) / zsum)
    tau1, tau2, tau3 = taus

    def ratio(a, b):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)

    s = np.stack([mass, mult, zsum, lead, ptd, girth, lha, e2, tau1, tau2, tau3,
                  ratio(tau2, tau1), ratio(tau3, tau2)], axis=1)
    return s.astype(np.float32)


def sample(seed, n, n_particles, n_features):
    """n jets: features [n, P, F] float32, labels [n] int64, summaries [n, S] float32."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    x = np.empty((n, n_particles, n_features), dtype=np.float32)
    s = np.empty((n, len(SUMMARIES)), dtype=np.float32)
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        x[lo:hi] = jets(rng, labels[lo:hi], n_particles, n_features)
        s[lo:hi] = summaries(x[lo:hi])
    return x, labels, s


def check_writable(path):
    if os.path.isdir(path):
        raise ArgumentError(f"--out {path}: is a directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ArgumentError(f"--out {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ArgumentError(f"--out {path}: not writable")


def parse(argv):
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--n", type=int, default=100000, help="training jets (default 100000)")
    p.add_argument("--n-test", type=int, help="held-out jets (default n/5, at least 1)")
    p.add_argument("--particles", type=int, default=32, help="particles per jet, P (default 32)")
    p.add_argument("--features", type=int, default=3, choices=(3, 5),
                   help="per-particle features, F: 3 (pt_rel, deta, dphi) or 5 (+ log_pt_rel, dR)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a = p.parse_args(argv)
    if a.n <= 0:
        raise ArgumentError(f"--n must be positive, got {a.n}")
    if a.n_test is None:
        a.n_test = max(1, a.n // 5)
    if a.n_test <= 0:
        raise ArgumentError(f"--n-test must be positive, got {a.n_test}")
    if a.particles <= 0:
        raise ArgumentError(f"--particles must be positive, got {a.particles}")
    if a.seed < 0:
        raise ArgumentError(f"--seed must be >= 0, got {a.seed}")
    check_writable(a.out)
    return a


def main(argv=None):
    prog = os.path.basename(sys.argv[0])
    try:
        a = parse(argv)
    except ArgumentError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2

    xtr, ytr, s_tr = sample([a.seed, 0], a.n, a.particles, a.features)
    xte, yte, s_te = sample([a.seed, 1], a.n_test, a.particles, a.features)  # independent stream

    def names(lst):
        return np.array([s.encode() for s in lst], dtype="S16")

    try:
        with h5py.File(a.out, "w") as f:
            f.create_dataset("x_train", data=xtr)
            f.create_dataset("y_train", data=ytr)
            f.create_dataset("x_test", data=xte)
            f.create_dataset("y_test", data=yte)
            f.create_dataset("s_train", data=s_tr)
            f.create_dataset("s_test", data=s_te)
            f.create_dataset("feature_names", data=names(FEATURES[:a.features]))
            f.create_dataset("summary_names", data=names(SUMMARIES))
            f.create_dataset("class_names", data=names(CLASSES))
            f.attrs["description"] = ("SYNTHETIC jet-constituent lists (toy model, not physics "
                                      "data): scripts/make_synthetic_particles.py")
            f.attrs["seed"] = a.seed
    except OSError as e:
        print(f"{prog}: error: cannot write {a.out}: {e}", file=sys.stderr)
        return 1

    mult = s_tr[:, SUMMARIES.index("multiplicity")]
    means = ", ".join(f"{c}={mult[ytr == k].mean():.1f}" for k, c in enumerate(CLASSES))
    print(f"wrote {a.out}: x_train {list(xtr.shape)}, x_test {list(xte.shape)}, "
          f"summaries {s_tr.shape[1]}, classes {np.bincount(ytr, minlength=5).tolist()}, "
          f"mean multiplicity {means}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
