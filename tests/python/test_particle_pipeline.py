"""The Deep Sets config end to end through the CLI on a small synthetic particle set: train, trace,
emulate (checked against the LibTorch float64 forward), and permutation invariance of the
trained, traced archive in the integer emulator."""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hgqt_paths import REPO, run_hgqt
from hgqt_py import hgqt

GENERATOR = REPO / "scripts" / "make_synthetic_particles.py"
CONFIG = REPO / "configs" / "jet_deepsets.yaml"


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("particles")
    data = tmp / "particles.h5"
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(data), "--n", "3000",
                    "--n-test", "500", "--features", "5", "--seed", "4"], check=True,
                   capture_output=True)
    run = tmp / "run"
    r = run_hgqt("train", CONFIG, "--out", run, "--set", f"data.train.file={data}",
                 "--set", f"data.test.file={data}", "--set", "train.epochs=3",
                 "--set", "train.threads=1", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test accuracy:" in r.stdout
    archive = run / "model.hgqt"
    r = run_hgqt("trace", run, "--data", data, "--out", archive)
    assert r.returncode == 0, r.stdout + r.stderr
    return data, archive


def test_trace_and_emulator_match_the_float64_forward(traced):
    data, archive = traced
    for scale in ("1", "8"):  # 8: overflow-inducing inputs
        r = run_hgqt("emulate", archive, "--data", data, "--scale", scale, "--check")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "LibTorch eval float64: 0 mismatches" in r.stdout, r.stdout


def test_permuting_the_particles_gives_identical_outputs(traced):
    data, archive = traced
    with h5py.File(data, "r") as f:
        x = f["x_test"][:]
    a = hgqt.load_archive(archive)
    y = hgqt.emulate(a, x)
    assert len(np.unique(y, axis=0)) > 20  # the outputs depend on the input
    rng = np.random.default_rng(0)
    for _ in range(3):
        perm = np.stack([rng.permutation(x.shape[1]) for _ in range(x.shape[0])])
        xp = np.take_along_axis(x, perm[:, :, None], axis=1)
        assert np.array_equal(hgqt.emulate(a, xp), y)


def test_a_classifier_without_aggregation_is_one_clear_error(traced, tmp_path):
    # Per-particle layers keep the particle axis: cross entropy needs [classes].
    data, _ = traced
    r = run_hgqt("train", CONFIG, "--out", tmp_path / "run", "--set", f"data.train.file={data}",
                 "--set", f"data.test.file={data}", "--set", "model.layers=[{type: dense, units: 5}]")
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert ("train.loss cross_entropy needs a model output of one axis [classes], but the model's "
            "output is [32, 5]") in err[0]
