"""scripts/bench_front.py end to end on a small synthetic jet set (1 epoch, four methods): it
trains, traces and emulates each, writes the table, the JSON and the PNG, reuses finished runs,
and computes the uniform-8 / HGQ ratio from the rows."""
import json
import subprocess

from hgqt_paths import HGQT, REPO

SCRIPT = REPO / "scripts" / "bench_front.py"


def run_front(tmp_path, *extra):
    return subprocess.run(
        ["/usr/bin/python3", str(SCRIPT), "--task", "jets", "--epochs", "1", "--jobs", "2",
         "--hgqt", str(HGQT), "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "front"),
         *extra], capture_output=True, text=True, timeout=600)


def test_bench_front_small_jets(tmp_path):
    (tmp_path / "data").mkdir()
    subprocess.run(["/usr/bin/python3", str(REPO / "scripts" / "make_synthetic_jets.py"), "--n", "3000",
                    "--out", str(tmp_path / "data" / "synthetic_jets.h5"), "--plain-out",
                    str(tmp_path / "data" / "synthetic_jets_plain.h5"), "--plain-n", "500"],
                   check=True, capture_output=True, timeout=120)
    methods = ["float", "uniform8", "hgq_1e-06", "lut_1e-05"]
    r = run_front(tmp_path, "--methods", *methods)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    front = json.loads((tmp_path / "front" / "front.json").read_text())
    rows = {row["method"]: row for row in front["rows"]}
    assert set(rows) == set(methods)
    for row in rows.values():
        assert 0 < row["accuracy"] <= 1 and row["ebops_exact"] > 0
        assert row["ebops_exact"] <= row["ebops_training"]
    assert rows["float"]["ebops_exact"] > rows["uniform8"]["ebops_exact"]
    assert rows["lut_1e-05"]["family"] == "HGQ-LUT"
    q = front["ratio"]
    if q["hgq"] is not None:  # within 1 point of near-float after one epoch, or not
        assert abs(q["ratio"] - rows["uniform8"]["ebops_exact"] / q["hgq"]["ebops_exact"]) < 1e-9
    table = (tmp_path / "front" / "front.md").read_text()
    assert "| hgq_1e-06 | HGQ |" in table and "| uniform8 | uniform |" in table
    png = (tmp_path / "front" / "front.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    # a second call reuses the finished runs (no training) and reports them again
    again = run_front(tmp_path, "--methods", "float")
    assert again.returncode == 0 and "float:" in again.stdout
    assert (tmp_path / "front" / "float" / "front.json").read_text() == \
        json.dumps(rows["float"], indent=1)
    # unknown method and missing data: one clear line, non-zero exit
    bad = run_front(tmp_path, "--methods", "nope")
    assert bad.returncode != 0 and "unknown methods ['nope']" in bad.stderr
    missing = subprocess.run(["/usr/bin/python3", str(SCRIPT), "--task", "jets", "--hgqt", str(HGQT),
                              "--data-dir", str(tmp_path / "none")], capture_output=True, text=True)
    assert missing.returncode != 0 and "synthetic_jets" in missing.stderr and "missing" in missing.stderr
