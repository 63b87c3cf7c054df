"""scripts/make_synthetic_particles.py: the synthetic jet-constituent lists (format,
determinism, padding and ordering, class structure, summary features, argument errors)."""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hgqt_paths import REPO

SCRIPT = REPO / "scripts" / "make_synthetic_particles.py"
DATASETS = ["x_train", "y_train", "x_test", "y_test", "s_train", "s_test"]
N, N_TEST, P = 2000, 400, 16


def generate(path, *args):
    """Runs the generator; returns the completed process (asserts success)."""
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(path), *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def load(path):
    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in f.keys()}
        out["attrs"] = dict(f.attrs)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("particles")
    runs = {
        "a": ("--n", N, "--particles", P, "--seed", 0),
        "b": ("--n", N, "--particles", P, "--seed", 0),
        "c": ("--n", N, "--particles", P, "--seed", 1),
        # untruncated lists and the 5-feature layout, for the class statistics
        "wide": ("--n", 2500, "--n-test", 1000, "--particles", 64, "--features", 5, "--seed", 3),
    }
    out = {}
    for name, args in runs.items():
        r = generate(d / f"{name}.h5", *args)
        out[name] = load(d / f"{name}.h5")
        out[name]["stdout"] = r.stdout
    return out


def summary(data, name, split="train"):
    names = [s.decode() for s in data["summary_names"]]
    return data[f"s_{split}"][:, names.index(name)]


def test_shapes_dtypes_and_names(files):
    a = files["a"]
    assert a["x_train"].shape == (N, P, 3) and a["x_train"].dtype == np.float32
    assert a["y_train"].shape == (N,) and a["y_train"].dtype == np.int64
    assert a["x_test"].shape == (N_TEST, P, 3) and a["x_test"].dtype == np.float32
    assert a["y_test"].shape == (N_TEST,) and a["y_test"].dtype == np.int64
    s = len(a["summary_names"])
    assert 8 <= s <= 16
    assert a["s_train"].shape == (N, s) and a["s_train"].dtype == np.float32
    assert a["s_test"].shape == (N_TEST, s) and a["s_test"].dtype == np.float32
    assert list(a["feature_names"]) == [b"pt_rel", b"deta", b"dphi"]
    assert a["feature_names"].dtype.kind == "S"  # fixed-length byte strings
    assert list(a["class_names"]) == [b"g", b"q", b"W", b"Z", b"t"]
    assert "SYNTHETIC" in a["attrs"]["description"]
    w = files["wide"]
    assert w["x_train"].shape == (2500, 64, 5) and w["x_test"].shape == (1000, 64, 5)
    assert list(w["feature_names"]) == [b"pt_rel", b"deta", b"dphi", b"log_pt_rel", b"dR"]
    line = a["stdout"].strip()
    assert "\n" not in line and "x_train" in line and "multiplicity" in line


def test_same_seed_same_bytes_other_seed_differs(files):
    a, b, c = files["a"], files["b"], files["c"]
    for k in DATASETS:
        assert a[k].tobytes() == b[k].tobytes(), k
    for k in DATASETS:
        assert a[k].tobytes() != c[k].tobytes(), k
    # the held-out jets come from an independent stream, not the first training rows
    assert not np.array_equal(a["x_test"], a["x_train"][:N_TEST])


def test_finite_and_roughly_unit_scale(files):
    for data in files.values():
        for k in DATASETS:
            assert np.isfinite(data[k]).all(), k
    x = files["wide"]["x_train"]
    assert x[..., 0].min() >= 0 and x[..., 0].max() <= 1
    assert np.abs(x[..., 1:3]).max() <= 5.0  # deta, dphi in units of 0.2 rad, R = 0.8
    assert np.percentile(np.abs(x[..., 1:3][x[..., 0] > 0]), 99) < 4.0
    assert x[..., 3].min() >= -4.5 and x[..., 3].max() <= 0.0
    assert x[..., 4].min() >= 0 and x[..., 4].max() <= 5.0


@pytest.mark.parametrize("name,split", [("a", "train"), ("a", "test"), ("wide", "train")])
def test_padding_rows_zero_sorted_and_counted(files, name, split):
    x = files[name][f"x_{split}"]
    pt = x[..., 0]
    real = pt > 0
    assert real[:, 0].all()  # every jet has a particle
    assert (np.diff(real.astype(int), axis=1) <= 0).all()  # padding only after the particles
    assert (x[~real] == 0).all()  # padding rows are all zero
    assert (np.diff(pt, axis=1) <= 0).all()  # pT descending
    np.testing.assert_array_equal(summary(files[name], "multiplicity", split), real.sum(axis=1))
    assert (real.sum(axis=1) == x.shape[1]).any()  # some lists were truncated at P


def test_extra_features_derive_from_the_first_three(files):
    x = files["wide"]["x_train"].astype(np.float64)
    real = x[..., 0] > 0
    np.testing.assert_allclose(x[..., 3][real], 0.5 * np.log(x[..., 0][real]), atol=1e-5)
    np.testing.assert_allclose(x[..., 4][real], np.hypot(x[..., 1], x[..., 2])[real], atol=1e-5)
    assert (x[..., 3:][~real] == 0).all()


def test_classes_balanced(files):
    for data in files.values():
        for split in ("train", "test"):
            y = data[f"y_{split}"]
            counts = np.bincount(y, minlength=5)
            assert counts.size == 5 and counts.max() - counts.min() <= 1, counts


def test_class_structure(files):
    w = files["wide"]
    y = w["y_train"]
    mult = summary(w, "multiplicity")
    mass = summary(w, "m_over_pt")
    tau21 = summary(w, "tau21")
    tau32 = summary(w, "tau32")
    g, q, W, Z, t = range(5)

    def mean(v, k):
        return v[y == k].mean()

    assert mean(mult, t) > mean(mult, g) > mean(mult, q)
    assert mean(mass, t) > mean(mass, Z) > mean(mass, W) > mean(mass, q)
    assert mean(tau21, W) < mean(tau21, q) and mean(tau21, Z) < mean(tau21, g)  # 2-prong
    assert mean(tau32, t) < min(mean(tau32, k) for k in (g, q, W, Z))  # 3-prong
    # the sum of pt_rel over the listed particles is at most 1 (the jet: all its particles)
    assert summary(w, "pt_sum").max() <= 1.0 + 1e-5


def standardized(data):
    s, st = data["s_train"].astype(np.float64), data["s_test"].astype(np.float64)
    mu, sd = s.mean(axis=0), s.std(axis=0) + 1e-12
    return (s - mu) / sd, (st - mu) / sd


@pytest.mark.parametrize("name", ["a", "wide"])
def test_simple_classifiers_on_summaries_beat_chance(files, name):
    data = files[name]
    s, st = standardized(data)
    y, yt = data["y_train"], data["y_test"]
    means = np.stack([s[y == k].mean(axis=0) for k in range(5)])
    nearest = np.argmin(((st[:, None, :] - means[None]) ** 2).sum(axis=-1), axis=1)
    a = np.c_[s, np.ones(len(s))]
    w = np.linalg.lstsq(a, np.eye(5)[y], rcond=None)[0]
    linear = np.argmax(np.c_[st, np.ones(len(st))] @ w, axis=1)
    assert (nearest == yt).mean() > 0.45
    assert (linear == yt).mean() > 0.45
    # ...but the problem is not trivially separable
    assert (linear == yt).mean() < 0.95


@pytest.mark.parametrize("args,word", [
    (["--n", "0"], "--n"),
    (["--n", "-3"], "--n"),
    (["--particles", "0"], "--particles"),
    (["--n-test", "0"], "--n-test"),
    (["--features", "4"], "--features"),
    (["--n", "many"], "--n"),
])
def test_bad_arguments_exit_nonzero_with_one_line(tmp_path, args, word):
    out = tmp_path / "x.h5"
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0], r.stderr
    assert not out.exists()


def test_unwritable_output_exits_nonzero_with_one_line(tmp_path):
    for out in (tmp_path / "no_such_dir" / "x.h5", tmp_path):
        r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--n", "10"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "--out" in lines[0], r.stderr
