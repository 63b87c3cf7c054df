"""`hgqt distill-targets TEACHER --data FILE --features X ...` with TorchScript teachers built
here in Python as an independent reference: the written data sets against the module's own
outputs, --out, --suffix, --target reconstruction_error, and the error messages.

The hgqt binary is $HGQT_BUILD_DIR/hgqt (HGQT_BUILD_DIR defaults to build/, relative to the
repository). Needs python3-torch, python3-h5py and python3-numpy in the interpreter running pytest
(/usr/bin/python3 -m pytest); skipped otherwise.
"""

from typing import Tuple

import pytest

np = pytest.importorskip("numpy")
h5py = pytest.importorskip("h5py")
torch = pytest.importorskip("torch")

from hgqt_paths import HGQT, run_hgqt  # noqa: E402

pytestmark = pytest.mark.skipif(not HGQT.is_file(), reason=f"no hgqt binary at {HGQT}: build it first")


def hgqt(*args):
    return run_hgqt(*args, timeout=120)


# ---- teachers


class FlatLinear(torch.nn.Module):
    """[N,3,4] -> [N,5]."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


class AutoEncoder(torch.nn.Module):
    """[N,3,4] -> [N,3,4] through Linear(12,12)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(12, 12)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1)).reshape(x.shape)


class TupleOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(torch.flatten(x, 1))
        return y, y


def save_teacher(module_cls, path, seed=0):
    torch.manual_seed(seed)
    m = module_cls().eval()
    scripted = torch.jit.script(m)
    torch.jit.save(scripted, str(path))
    return m


def reference(module, x):
    with torch.no_grad():
        y = module(torch.from_numpy(x))
    return y.numpy().reshape(len(x), -1)


def write_h5(path, seed=1, n_train=300, n_test=50):
    rng = np.random.default_rng(seed)
    sets = {
        "x_train": rng.standard_normal((n_train, 3, 4)).astype(np.float32),
        "x_test": rng.standard_normal((n_test, 3, 4)).astype(np.float32),
        "y_train": rng.integers(0, 5, size=n_train).astype(np.int64),
    }
    with h5py.File(path, "w") as f:
        for name, value in sets.items():
            f.create_dataset(name, data=value)
    return sets


def read_h5(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f.keys()}


def assert_sets_equal(got, want):
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.fixture
def setup(tmp_path):
    teacher = tmp_path / "teacher.pt"
    module = save_teacher(FlatLinear, teacher)
    data = tmp_path / "d.h5"
    sets = write_h5(data)
    return tmp_path, teacher, module, data, sets


# ---- outputs


def test_outputs_in_place_match_module(setup):
    _, teacher, module, data, sets = setup
    r = hgqt("distill-targets", teacher, "--data", data, "--features", "x_train",
             "--features", "x_test")
    assert r.returncode == 0, r.stdout + r.stderr
    got = read_h5(data)
    assert sorted(got) == sorted(list(sets) + ["x_train_teacher", "x_test_teacher"])
    for name, n in (("x_train", 300), ("x_test", 50)):
        out = got[name + "_teacher"]
        assert out.dtype == np.float32
        assert out.shape == (n, 5)
        want = reference(module, sets[name])
        assert np.allclose(out, want, atol=1e-5), np.abs(out - want).max()
    # The original data sets are still there and unchanged.
    assert_sets_equal({k: v for k, v in got.items() if not k.endswith("_teacher")}, sets)


def test_more_than_one_batch(tmp_path):
    """2500 samples: three batches of 1024, the last one partial."""
    teacher = tmp_path / "teacher.pt"
    module = save_teacher(FlatLinear, teacher, seed=5)
    data = tmp_path / "big.h5"
    sets = write_h5(data, seed=2, n_train=2500, n_test=10)
    r = hgqt("distill-targets", teacher, "--data", data, "--features", "x_train")
    assert r.returncode == 0, r.stdout + r.stderr
    got = read_h5(data)
    assert "x_test_teacher" not in got
    out = got["x_train_teacher"]
    assert out.shape == (2500, 5)
    assert np.allclose(out, reference(module, sets["x_train"]), atol=1e-5)


def test_out_to_another_file(setup):
    tmp, teacher, module, data, sets = setup
    before = read_h5(data)
    out_file = tmp / "sub_out.h5"
    r = hgqt("distill-targets", teacher, "--data", data, "--features", "x_test",
             "--out", out_file)
    assert r.returncode == 0, r.stdout + r.stderr
    # The original file is unchanged.
    assert_sets_equal(read_h5(data), before)
    got = read_h5(out_file)
    assert sorted(got) == sorted(list(sets) + ["x_test_teacher"])
    assert_sets_equal({k: v for k, v in got.items() if k != "x_test_teacher"}, sets)
    assert got["x_test_teacher"].shape == (50, 5)
    assert np.allclose(got["x_test_teacher"], reference(module, sets["x_test"]), atol=1e-5)


def test_reconstruction_error_with_suffix(tmp_path):
    teacher = tmp_path / "ae.pt"
    module = save_teacher(AutoEncoder, teacher, seed=7)
    data = tmp_path / "d.h5"
    sets = write_h5(data)
    r = hgqt("distill-targets", teacher, "--data", data, "--features", "x_train",
             "--features", "x_test", "--target", "reconstruction_error", "--suffix", "_err")
    assert r.returncode == 0, r.stdout + r.stderr
    got = read_h5(data)
    assert sorted(got) == sorted(list(sets) + ["x_train_err", "x_test_err"])
    for name, n in (("x_train", 300), ("x_test", 50)):
        out = got[name + "_err"]
        assert out.dtype == np.float32
        assert out.shape == (n, 1)
        x = sets[name]
        y = reference(module, x)
        want = np.mean((y.astype(np.float64) - x.reshape(n, -1).astype(np.float64)) ** 2,
                       axis=1, keepdims=True)
        assert np.allclose(out, want, atol=1e-5, rtol=1e-5), np.abs(out - want).max()
    assert_sets_equal({k: v for k, v in got.items() if not k.endswith("_err")}, sets)


def test_reconstruction_error_needs_same_size(setup):
    _, teacher, _, data, sets = setup  # FlatLinear: 12 values in, 5 out
    r = hgqt("distill-targets", teacher, "--data", data, "--features", "x_test",
             "--target", "reconstruction_error")
    assert r.returncode != 0
    assert r.stderr.strip()
    assert_sets_equal(read_h5(data), sets)


# ---- errors


def test_running_twice_refuses_and_keeps_file(setup):
    _, teacher, module, data, sets = setup
    r = hgqt("distill-targets", teacher, "--data", data, "--features", "x_test")
    assert r.returncode == 0, r.stdout + r.stderr
    before = read_h5(data)
    r = hgqt("distill-targets", teacher, "--data", data, "--features", "x_test")
    assert r.returncode != 0
    assert "already holds a data set" in r.stderr
    assert "x_test_teacher" in r.stderr
    # Still readable, data unchanged, no temporary copy left behind.
    assert_sets_equal(read_h5(data), before)
    assert sorted(q.name for q in data.parent.iterdir()) == ["d.h5", "teacher.pt"]
    assert np.allclose(before["x_test_teacher"], reference(module, sets["x_test"]), atol=1e-5)


def test_missing_teacher(setup):
    tmp, _, _, data, sets = setup
    missing = tmp / "nope.pt"
    r = hgqt("distill-targets", missing, "--data", data, "--features", "x_test")
    assert r.returncode != 0
    assert "does not exist" in r.stderr
    assert str(missing) in r.stderr
    assert_sets_equal(read_h5(data), sets)


def test_junk_teacher(setup):
    tmp, _, _, data, sets = setup
    junk = tmp / "junk.pt"
    junk.write_bytes(b"this is neither a zip archive nor a checkpoint\n" * 10)
    r = hgqt("distill-targets", junk, "--data", data, "--features", "x_test")
    assert r.returncode != 0
    assert "neither an hgqt checkpoint" in r.stderr
    assert_sets_equal(read_h5(data), sets)


def test_missing_features_data_set(setup):
    _, teacher, _, data, sets = setup
    r = hgqt("distill-targets", teacher, "--data", data, "--features", "x_test",
             "--features", "x_nothere")
    assert r.returncode != 0
    assert "x_nothere" in r.stderr
    # Nothing written, not even the data set that could be computed.
    assert_sets_equal(read_h5(data), sets)


def test_missing_data_file(setup):
    tmp, teacher, _, _, _ = setup
    missing = tmp / "no_such.h5"
    r = hgqt("distill-targets", teacher, "--data", missing, "--features", "x_test")
    assert r.returncode != 0
    assert r.stderr.strip()
    assert not missing.exists()


def test_tuple_output_teacher(setup):
    tmp, _, _, data, sets = setup
    teacher = tmp / "tuple.pt"
    save_teacher(TupleOut, teacher)
    r = hgqt("distill-targets", teacher, "--data", data, "--features", "x_test")
    assert r.returncode != 0
    assert str(teacher) in r.stderr or teacher.name in r.stderr, r.stderr
    assert "tuple" in r.stderr.lower()
    assert r.returncode > 0  # an error exit, not a signal
    assert_sets_equal(read_h5(data), sets)
    # No temporary copy of the data file is left behind.
    assert sorted(q.name for q in tmp.iterdir()) == ["d.h5", "teacher.pt", "tuple.pt"]
