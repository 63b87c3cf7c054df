"""examples/notebook_quickstart.py runs end to end (one epoch): trains on Fashion-MNIST, plots,
traces, exports HLS, and finds the emulator, the float64 model and the HLS C simulation equal."""
import os
import subprocess
import sys

from hgqt_paths import HGQT, REPO, build_dir


def test_notebook_quickstart_runs_end_to_end(tmp_path):
    env = dict(os.environ, HGQT_EXAMPLE_EPOCHS="1", HGQT_EXAMPLE_OUT=str(tmp_path),
               HGQT_BIN=str(HGQT), PYTHONPATH=str(build_dir() / "python"))
    run = subprocess.run([sys.executable, str(REPO / "examples" / "notebook_quickstart.py")],
                         capture_output=True, text=True, env=env, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "epoch  1" in out and "trained 1 epochs" in out
    assert "0 mismatching rows" in out
    assert "hls testbench: 500 samples, 0 mismatches" in out
    for name in ("bit_widths.png", "pareto.png", "hls/firmware/myproject.cpp", "run/best.pt"):
        assert (tmp_path / name).exists(), name
