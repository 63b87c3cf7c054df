"""scripts/make_torchscript_teacher.py on a tiny synthetic Fashion-MNIST-shaped HDF5 file written
here: the saved TorchScript module, its JSON summary, and the error messages.

Needs python3-torch, python3-h5py and python3-numpy in the interpreter running pytest
(/usr/bin/python3 -m pytest); skipped otherwise.
"""

import json
import pathlib
import subprocess
import sys

import pytest

np = pytest.importorskip("numpy")
h5py = pytest.importorskip("h5py")
torch = pytest.importorskip("torch")

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_torchscript_teacher.py"

JSON_KEYS = {"epochs", "seed", "heldout_accuracy", "test_accuracy", "train_seconds",
             "torch_version"}


def synthetic(n, rng):
    """Noise images whose class k (0..9) is decided by a bright horizontal band at rows
    [2k+4, 2k+6)."""
    y = rng.integers(0, 10, size=n).astype(np.int64)
    x = (rng.random((n, 28, 28)) * 0.3).astype(np.float32)
    for i, k in enumerate(y):
        x[i, 2 * k + 4:2 * k + 6, :] = 1.0
    return x, y


def write_h5(path, n_train=600, n_test=100, seed=1, **override):
    rng = np.random.default_rng(seed)
    x_train, y_train = synthetic(n_train, rng)
    x_test, y_test = synthetic(n_test, rng)
    sets = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    sets.update(override)
    with h5py.File(path, "w") as f:
        for name, value in sets.items():
            if value is not None:
                f.create_dataset(name, data=value)
    return path


def run_script(*args, timeout=120):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher")
    data = write_h5(tmp / "tiny.h5")
    out = tmp / "sub" / "teacher.ts"
    r = run_script("--data", data, "--out", out, "--epochs", "1", "--batch-size", "32",
                   "--seed", "3", "--threads", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r


def test_saved_module_loads_and_gives_logits(trained):
    out, r = trained
    assert out.is_file()
    m = torch.jit.load(str(out))
    m.eval()
    x = torch.rand(7, 28, 28)
    with torch.no_grad():
        y = m(x)
    assert tuple(y.shape) == (7, 10)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert "epoch 1/1" in r.stdout and "held-out accuracy" in r.stdout


def test_json_summary(trained):
    out, _ = trained
    summary = json.loads(pathlib.Path(str(out) + ".json").read_text())
    assert JSON_KEYS <= set(summary)
    assert summary["epochs"] == 1
    assert summary["seed"] == 3
    assert summary["torch_version"] == torch.__version__
    # 600 train rows, the last round(600 * 0.1) = 60 held out.
    assert summary["train_rows"] == 540 and summary["heldout_rows"] == 60
    assert summary["test_rows"] == 100
    for key in ("heldout_accuracy", "test_accuracy"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["train_seconds"] > 0


def test_same_seed_same_teacher(trained, tmp_path):
    out, _ = trained
    data = write_h5(tmp_path / "tiny.h5")  # the same file as the fixture's (same generator seed)
    again = tmp_path / "again.ts"
    r = run_script("--data", data, "--out", again, "--epochs", "1", "--batch-size", "32",
                   "--seed", "3", "--threads", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    x = torch.rand(16, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = torch.jit.load(str(out)).eval()(x)
        b = torch.jit.load(str(again)).eval()(x)
    assert torch.equal(a, b)
    sa = json.loads(pathlib.Path(str(out) + ".json").read_text())
    sb = json.loads(pathlib.Path(str(again) + ".json").read_text())
    assert (sa["heldout_accuracy"], sa["test_accuracy"]) == (sb["heldout_accuracy"], sb["test_accuracy"])


def test_missing_data_file(tmp_path):
    missing = tmp_path / "no_such_file.h5"
    r = run_script("--data", missing, "--out", tmp_path / "t.ts")
    assert r.returncode != 0
    assert str(missing) in r.stderr
    assert not (tmp_path / "t.ts").exists()


def test_missing_data_set(tmp_path):
    data = write_h5(tmp_path / "d.h5", n_train=50, n_test=10, y_test=None)
    r = run_script("--data", data, "--out", tmp_path / "t.ts")
    assert r.returncode != 0
    assert "y_test" in r.stderr


def test_wrong_shape(tmp_path):
    data = write_h5(tmp_path / "d.h5", n_train=50, n_test=10,
                    x_train=np.zeros((50, 784), np.float32))
    r = run_script("--data", data, "--out", tmp_path / "t.ts")
    assert r.returncode != 0
    assert "x_train" in r.stderr and "[50, 784]" in r.stderr
