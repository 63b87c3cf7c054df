"""Imports the hgqt Python package from the build tree (HGQT_BUILD_DIR/python), ahead of any
installed copy, and provides small data sets and configs for the binding tests."""
import sys

import numpy as np

from hgqt_paths import REPO, build_dir

sys.path.insert(0, str(build_dir() / "python"))

import hgqt  # noqa: E402  (the build tree's package; an ImportError here fails every test)

assert str(build_dir()) in hgqt.__file__, f"imported {hgqt.__file__}, not the build tree's hgqt"


def blobs(n, seed, dims=8, classes=3):
    """Gaussian blobs around fixed centers (the same for every seed): float32 x, int64 y."""
    centers = np.random.default_rng(1234).normal(0.0, 2.0, size=(classes, dims))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = centers[y] + rng.normal(0.0, 0.6, size=(n, dims))
    return x.astype(np.float32), y.astype(np.int64)


def blobs_file(path):
    """An HDF5 file with x_train/y_train (600) and x_test/y_test (300) blobs."""
    import h5py
    xtr, ytr = blobs(600, 1)
    xte, yte = blobs(300, 2)
    with h5py.File(path, "w") as f:
        f["x_train"], f["y_train"], f["x_test"], f["y_test"] = xtr, ytr, xte, yte
    return path


def blobs_config(data_file, epochs=3, name="blobs"):
    """An 8-16-3 HGQ classifier config (dict) on blobs_file."""
    return {
        "name": name,
        "model": {"input_shape": [8], "layers": [
            {"type": "dense", "units": 16, "activation": "relu"},
            {"type": "dense", "units": 3}]},
        "data": {"format": "hdf5",
                 "train": {"file": str(data_file), "features": "x_train", "labels": "y_train"},
                 "test": {"file": str(data_file), "features": "x_test", "labels": "y_test"},
                 "validation_split": 0.2},
        "train": {"epochs": epochs, "batch_size": 32, "lr": 0.01, "seed": 3,
                  "beta": {"kind": "constant", "value": 1e-6}},
    }
