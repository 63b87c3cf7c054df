"""The particle-list configs end to end through the CLI on small synthetic particle sets: Deep
Sets, the transformer (attention blocks: products of two activations, the scaled table softmax)
and the Linformer (P = 64, keys and values projected along the particle axis). Each is trained,
traced and emulated (checked against the LibTorch float64 forward); the trained, traced Deep Sets
and transformer archives are permutation invariant in the integer emulator."""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hgqt_paths import REPO, run_hgqt
from hgqt_py import hgqt

GENERATOR = REPO / "scripts" / "make_synthetic_particles.py"
CONFIG = REPO / "configs" / "jet_deepsets.yaml"
# config and particles per jet
MODELS = {"deepsets": ("jet_deepsets.yaml", 32),
          "transformer": ("jet_transformer.yaml", 32),
          "linformer": ("jet_linformer.yaml", 64)}
# The Linformer's projection reads particle slots: its outputs depend on the order by design.
INVARIANT = ["deepsets", "transformer"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """trained(name) -> (data, archive): the config trained for 3 epochs on a small synthetic set
    and traced, once per module."""
    done = {}

    def get(name):
        if name not in done:
            config, particles = MODELS[name]
            tmp = tmp_path_factory.mktemp(name)
            data = tmp / "particles.h5"
            subprocess.run([sys.executable, str(GENERATOR), "--out", str(data), "--n", "3000",
                            "--n-test", "500", "--features", "5", "--particles", str(particles),
                            "--seed", "4"], check=True, capture_output=True)
            run = tmp / "run"
            r = run_hgqt("train", REPO / "configs" / config, "--out", run, "--set",
                         f"data.train.file={data}", "--set", f"data.test.file={data}", "--set",
                         "train.epochs=3", "--set", "train.threads=1", timeout=900)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "test accuracy:" in r.stdout
            archive = run / "model.hgqt"
            r = run_hgqt("trace", run, "--data", data, "--out", archive)
            assert r.returncode == 0, r.stdout + r.stderr
            done[name] = (data, archive)
        return done[name]

    return get


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trace_and_emulator_match_the_float64_forward(trained, name):
    data, archive = trained(name)
    for scale in ("1", "8"):  # 8: overflow-inducing inputs
        r = run_hgqt("emulate", archive, "--data", data, "--scale", scale, "--check")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "LibTorch eval float64: 0 mismatches" in r.stdout, r.stdout


@pytest.mark.parametrize("name", INVARIANT)
def test_permuting_the_particles_gives_identical_outputs(trained, name):
    data, archive = trained(name)
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


def test_a_classifier_without_aggregation_is_one_clear_error(trained, tmp_path):
    # Per-particle layers keep the particle axis: cross entropy needs [classes].
    data, _ = trained("deepsets")
    r = run_hgqt("train", CONFIG, "--out", tmp_path / "run", "--set", f"data.train.file={data}",
                 "--set", f"data.test.file={data}", "--set", "model.layers=[{type: dense, units: 5}]")
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert ("train.loss cross_entropy needs a model output of one axis [classes], but the model's "
            "output is [32, 5]") in err[0]
