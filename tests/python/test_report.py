"""`hgqt pareto RUN_DIR` and `hgqt plot RUN_DIR` on small run directories written here with known
values: the table's rows, the PNG files, and the error messages.

The hgqt binary is $HGQT_BUILD_DIR/hgqt (HGQT_BUILD_DIR defaults to build/, relative to the
repository). The plots need matplotlib in /usr/bin/python3 (python3-matplotlib), as hgqt does.
"""

import json
import pathlib
import re
import struct
import zlib

import pytest

from hgqt_paths import HGQT, run_hgqt  # noqa: E402

pytestmark = pytest.mark.skipif(not HGQT.is_file(), reason=f"no hgqt binary at {HGQT}: build it first")

# Five epochs of a classification run; the front is epochs 2, 4 and 5.
CLS_METRICS = [
    {"epoch": 1, "loss": 0.9, "accuracy": 0.60, "val_loss": 0.95, "val_accuracy": 0.55,
     "ebops": 90000.0, "beta": 1e-8, "lr": 0.003, "seconds": 1.0},
    {"epoch": 2, "loss": 0.7, "accuracy": 0.70, "val_loss": 0.75, "val_accuracy": 0.6875,
     "ebops": 40000.0, "beta": 2e-8, "lr": 0.003, "seconds": 1.0},
    {"epoch": 3, "loss": 0.6, "accuracy": 0.72, "val_loss": 0.70, "val_accuracy": 0.65,
     "ebops": 60000.0, "beta": 4e-8, "lr": 0.002, "seconds": 1.0},
    {"epoch": 4, "loss": 0.5, "accuracy": 0.80, "val_loss": 0.60, "val_accuracy": 0.78125,
     "ebops": 55000.0, "beta": 8e-8, "lr": 0.001, "seconds": 1.0},
    {"epoch": 5, "loss": 0.4, "accuracy": 0.85, "val_loss": 0.55, "val_accuracy": 0.8125,
     "ebops": 70000.0, "beta": 1.6e-7, "lr": 0.0005, "seconds": 1.0},
]
# pareto.json as the trainer writes it, deliberately not sorted here.
CLS_FRONT = [
    {"epoch": 5, "val_accuracy": 0.8125, "ebops": 70000.0, "path": "runs/fake/pareto/epoch0005.pt"},
    {"epoch": 2, "val_accuracy": 0.6875, "ebops": 40000.0, "path": "runs/fake/pareto/epoch0002.pt"},
    {"epoch": 4, "val_accuracy": 0.78125, "ebops": 55000.0, "path": "runs/fake/pareto/epoch0004.pt"},
]

REG_METRICS = [
    {"epoch": e, "loss": 1.0 / e, "accuracy": None, "val_loss": 1.5 / e, "val_accuracy": None,
     "ebops": 1000.0 * (5 - e), "beta": 1e-7 * e, "lr": 0.001, "seconds": 1.0}
    for e in range(1, 5)
]
REG_FRONT = [
    {"epoch": 4, "val_loss": 0.375, "ebops": 1000.0, "path": "runs/reg/pareto/epoch0004.pt"},
]


def make_run(tmp_path, metrics, front, name="run"):
    run = tmp_path / name
    (run / "pareto").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run / "pareto.json").write_text(json.dumps(front, indent=2))
    for e in front:
        (run / "pareto" / pathlib.Path(e["path"]).name).write_bytes(b"not a real checkpoint")
    return run


def hgqt(*args, env=None):
    return run_hgqt(*args, env=env)


def assert_png(path):
    """A valid PNG: signature, IHDR with a nonzero size, CRCs of every chunk, ending in IEND."""
    data = pathlib.Path(path).read_bytes()
    assert len(data) > 1000, f"{path}: {len(data)} bytes"
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG signature"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in chunk {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height = struct.unpack(">II", chunks[0][1][:8])
    assert width > 100 and height > 100
    assert any(k == b"IDAT" for k, _ in chunks)
    return width, height


def table_rows(stdout):
    """Rows of the table: {epoch: [score, ebops, exact, file]}."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", line)
        if m:
            rows[int(m.group(1))] = list(m.groups()[1:])
    return rows


# ---- hgqt pareto

def test_pareto_table_rows_and_png(tmp_path):
    run = make_run(tmp_path, CLS_METRICS, CLS_FRONT)
    r = hgqt("pareto", run)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(i for i, l in enumerate(lines) if l.split()[:2] == ["epoch", "val_accuracy"])
    assert "EBOPs" in lines[header] and "exact EBOPs" in lines[header] and "file" in lines[header]
    assert "3 checkpoint(s) of 5 epoch(s)" in r.stdout
    rows = table_rows("\n".join(lines[header + 1:]))
    assert list(rows) == [2, 4, 5]  # sorted by EBOPs, ascending
    assert rows[2][:3] == ["0.6875", "40000", "-"]
    assert rows[4][:3] == ["0.7812", "55000", "-"] or rows[4][:3] == ["0.7813", "55000", "-"]
    assert rows[5][:3] == ["0.8125", "70000", "-"]
    for epoch, row in rows.items():
        # the checkpoint is found in the run directory even though pareto.json names runs/fake/...
        assert row[3] == str(run / "pareto" / f"epoch{epoch:04d}.pt")
    assert "hgqt trace" in r.stdout  # how to get the exact EBOPs
    assert f"wrote {run / 'pareto.png'}" in r.stdout
    assert_png(run / "pareto.png")


def test_pareto_exact_ebops_from_traced_archive(tmp_path):
    run = make_run(tmp_path, CLS_METRICS, CLS_FRONT)
    for name, traced, exact in (("epoch0004.hgqt", True, 12345.0), ("e5.hgqt", False, 999.0)):
        (run / name).mkdir()
        (run / name / "model.json").write_text(json.dumps(
            {"format": "hgqt-archive", "trace": {"traced": traced, "samples": 10, "data": "x.h5",
                                                 "exact_ebops": exact}}))
    r = hgqt("pareto", run, "--no-plot")
    assert r.returncode == 0, r.stderr
    rows = table_rows(r.stdout)
    assert rows[4][2] == "12345"
    assert rows[5][2] == "-"  # an untraced archive has no exact EBOPs
    assert rows[2][2] == "-"
    assert str(run / "epoch0004.hgqt") in r.stdout
    assert not (run / "pareto.png").exists()


def test_pareto_exact_ebops_from_the_epoch_an_archive_records(tmp_path):
    # `hgqt trace` records the traced checkpoint's epoch: the archive's name does not matter.
    run = make_run(tmp_path, CLS_METRICS, CLS_FRONT)
    (run / "small.hgqt").mkdir()
    (run / "small.hgqt" / "model.json").write_text(json.dumps(
        {"format": "hgqt-archive", "trace": {"traced": True, "samples": 10, "data": "x.h5",
                                             "exact_ebops": 777.0, "checkpoint": "epoch0002.pt",
                                             "epoch": 2}}))
    r = hgqt("pareto", run, "--no-plot")
    assert r.returncode == 0, r.stderr
    rows = table_rows(r.stdout)
    assert rows[2][2] == "777"  # recorded, not assumed: no '*'
    assert rows[4][2] == "-" and rows[5][2] == "-"
    assert str(run / "small.hgqt") in r.stdout


def test_pareto_regression_run_and_out_option(tmp_path):
    run = make_run(tmp_path, REG_METRICS, REG_FRONT)
    out = tmp_path / "elsewhere" / "front.png"
    out.parent.mkdir()
    r = hgqt("pareto", run, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "val_loss (lower is better)" in r.stdout
    rows = table_rows(r.stdout)
    assert list(rows) == [4]
    assert rows[4][:3] == ["0.375000", "1000", "-"]
    assert_png(out)
    assert not (run / "pareto.png").exists()


def test_pareto_on_a_trained_run(tmp_path):
    from hgqt_py import blobs_config, blobs_file  # small data and config (imports the package)

    config = tmp_path / "blobs.yaml"  # JSON is YAML
    config.write_text(json.dumps(blobs_config(blobs_file(tmp_path / "blobs.h5"), epochs=4)))
    run = tmp_path / "run"
    r = hgqt("train", config, "--out", run)
    assert r.returncode == 0, r.stderr
    front = json.loads((run / "pareto.json").read_text())
    assert front and all((run / "pareto" / pathlib.Path(e["path"]).name).is_file() for e in front)
    r = hgqt("pareto", run, "--no-plot")
    assert r.returncode == 0, r.stderr
    assert sorted(table_rows(r.stdout)) == sorted(e["epoch"] for e in front)


# ---- hgqt plot

def test_plot_training_png(tmp_path):
    run = make_run(tmp_path, CLS_METRICS, CLS_FRONT)
    r = hgqt("plot", run)
    assert r.returncode == 0, r.stderr
    assert f"wrote {run / 'training.png'}" in r.stdout
    w, h = assert_png(run / "training.png")
    assert h > w  # subplots stacked: loss, accuracy, EBOPs, beta


def test_plot_regression_without_accuracy_and_out(tmp_path):
    run = make_run(tmp_path, REG_METRICS, REG_FRONT)
    out = tmp_path / "curves.png"
    r = hgqt("plot", run, "--out", out)
    assert r.returncode == 0, r.stderr
    assert_png(out)


# ---- errors: a message naming the file, exit status 1, never a crash

@pytest.mark.parametrize("cmd", ["pareto", "plot"])
def test_missing_run_dir(tmp_path, cmd):
    missing = tmp_path / "no_such_run"
    r = hgqt(cmd, missing)
    assert r.returncode == 1
    assert f"error: run directory '{missing}' does not exist" in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("cmd", [["pareto"], ["pareto", "--no-plot"], ["plot"]])
def test_corrupt_metrics(tmp_path, cmd):
    run = make_run(tmp_path, CLS_METRICS, CLS_FRONT)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 6, "ebops": 1\n')  # truncated line
    r = hgqt(*cmd, run)
    assert r.returncode == 1
    # hgqt itself finds it, before printing anything (not only the plot script)
    assert f"error: {run / 'metrics.jsonl'} is corrupt: line 6 is not valid JSON" in r.stderr
    assert r.stdout == ""
    assert not (run / "pareto.png").exists() and not (run / "training.png").exists()


def test_metrics_line_that_is_not_an_epoch(tmp_path):
    run = make_run(tmp_path, CLS_METRICS, CLS_FRONT)
    (run / "metrics.jsonl").write_text('[1, 2]\n')
    r = hgqt("pareto", run)
    assert r.returncode == 1
    assert f"{run / 'metrics.jsonl'} is corrupt: line 1 is not an epoch record" in r.stderr


def test_missing_metrics_and_corrupt_pareto(tmp_path):
    run = make_run(tmp_path, CLS_METRICS, CLS_FRONT)
    (run / "pareto.json").write_text("[{\"epoch\": 1,")
    r = hgqt("pareto", run)
    assert r.returncode == 1
    assert f"{run / 'pareto.json'} is corrupt" in r.stderr
    (run / "pareto.json").unlink()
    r = hgqt("pareto", run)
    assert r.returncode == 1
    assert f"{run / 'pareto.json'} not found" in r.stderr
    (run / "metrics.jsonl").unlink()
    r = hgqt("plot", run)
    assert r.returncode == 1
    assert f"{run / 'metrics.jsonl'} not found" in r.stderr


def test_missing_python_and_matplotlib(tmp_path):
    run = make_run(tmp_path, CLS_METRICS, CLS_FRONT)
    r = hgqt("plot", run, env={"HGQT_PYTHON": str(tmp_path / "no_python")})
    assert r.returncode == 1
    assert "no_python not found" in r.stderr and "HGQT_PYTHON" in r.stderr
    # An interpreter without matplotlib: Debian's python3 without its site packages (-S).
    nomp = tmp_path / "python_without_matplotlib"
    nomp.write_text("#!/bin/sh\nexec /usr/bin/python3 -S \"$@\"\n")
    nomp.chmod(0o755)
    r = hgqt("pareto", run, env={"HGQT_PYTHON": str(nomp)})
    assert r.returncode == 1
    assert "matplotlib is not available" in r.stderr
    assert "epoch" in r.stdout  # the table needs no Python
