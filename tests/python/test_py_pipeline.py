"""hgqt's Python bindings: the C++ trainer with a callback, checkpoints, trace, archive,
emulator, exporters and the summary."""
import importlib.util
import json
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
import torch

from hgqt_py import REPO, blobs, blobs_config, blobs_file, hgqt


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-epoch blobs run through hgqt.train with a callback."""
    tmp = tmp_path_factory.mktemp("trained")
    data = blobs_file(tmp / "blobs.h5")
    seen = []
    result = hgqt.train(blobs_config(data), tmp / "run", callback=seen.append, verbose=False)
    return tmp, data, result, seen


def test_train_calls_back_every_epoch_and_reports(trained):
    tmp, _, result, seen = trained
    assert [m["epoch"] for m in seen] == [1, 2, 3]
    assert set(seen[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "ebops",
                            "beta", "lr", "seconds"}
    assert result["history"] == seen
    # The callback's figures are the run's metrics.jsonl lines.
    lines = [json.loads(l) for l in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [l["val_accuracy"] for l in lines] == [m["val_accuracy"] for m in seen]
    assert result["test"]["samples"] == 300 and result["test"]["accuracy"] > 0.9
    assert result["run_dir"] == str(tmp / "run")
    for name in ("last.pt", "best.pt", "resume.pt", "config.yaml", "pareto.json"):
        assert (tmp / "run" / name).exists(), name
    best = hgqt.load_checkpoint(tmp / "run")  # a run directory: its best.pt
    assert best.checkpoint_path == result["best_checkpoint"]
    assert best.meta["epoch"] == result["best"]["epoch"]
    assert best.meta["ebops"] == result["best"]["ebops"]


def test_train_refuses_an_existing_run(trained):
    tmp, data, _, _ = trained
    with pytest.raises(FileExistsError, match="already holds a run"):
        hgqt.train(blobs_config(data), tmp / "run", verbose=False)


def test_callback_returning_false_stops_and_the_run_resumes(tmp_path):
    data = blobs_file(tmp_path / "blobs.h5")
    result = hgqt.train(blobs_config(data), tmp_path / "run", verbose=False,
                        callback=lambda m: m["epoch"] < 1)
    assert result["interrupted"] and [m["epoch"] for m in result["history"]] == [1]
    assert (tmp_path / "run" / "resume.pt").exists()
    rest = hgqt.train(tmp_path / "run", resume=True, verbose=False)
    # The whole run's history: epoch 1 as saved, then the two resumed epochs.
    assert rest["resumed"] and [m["epoch"] for m in rest["history"]] == [1, 2, 3]
    assert rest["history"][0]["val_loss"] == result["history"][0]["val_loss"]
    assert rest["test"]["samples"] == 300


def test_a_callback_exception_ends_the_run_and_propagates(tmp_path):
    data = blobs_file(tmp_path / "blobs.h5")

    def boom(m):
        raise ZeroDivisionError(f"callback failed at epoch {m['epoch']}")

    with pytest.raises(ZeroDivisionError, match="callback failed at epoch 1"):
        hgqt.train(blobs_config(data), tmp_path / "run", callback=boom, verbose=False)
    assert (tmp_path / "run" / "last.pt").exists()  # what was saved stays


def test_train_releases_the_gil(tmp_path):
    data = blobs_file(tmp_path / "blobs.h5")
    counts = {"during": 0}
    running = threading.Event()
    done = threading.Event()

    def count():
        while not done.is_set():
            if running.is_set():
                counts["during"] += 1

    thread = threading.Thread(target=count)
    thread.start()
    epochs_seen = []
    running.set()
    t0 = time.time()
    try:
        hgqt.train(blobs_config(data, epochs=6), tmp_path / "run", verbose=False,
                   callback=epochs_seen.append)
    finally:
        seconds = time.time() - t0
        running.clear()
        done.set()
        thread.join()
    assert len(epochs_seen) == 6
    # With the GIL held the thread would run only inside the 6 callbacks; released, it counts
    # the whole time (well over 10^5 iterations per second of training).
    assert counts["during"] > 10_000 * seconds, (counts, seconds)


@pytest.fixture(scope="module")
def traced(trained):
    tmp, data, result, _ = trained
    model = hgqt.load_checkpoint(result["best_checkpoint"])
    x, _ = blobs(400, 7)
    stats = hgqt.trace(model, x)
    return tmp, model, stats


def test_trace_reports_and_marks_the_model(traced):
    _, model, stats = traced
    assert stats["samples"] == 400 and stats["passes"] >= 1 and stats["quantizers"] >= 2
    assert not model.training
    assert model.trace_info["samples"] == 400
    archive = hgqt.to_archive(model)
    assert archive.trace["traced"] and archive.trace["exact_ebops"] == stats["exact_ebops"]
    assert archive.input_size == 8 and archive.output_size == 3


def test_emulator_is_bit_exact_with_the_model_and_keeps_the_input_kind(traced):
    tmp, model, _ = traced
    x, y = blobs(300, 8)
    ref = model.forward_exact(x)
    assert ref.dtype == torch.float64
    archive = hgqt.to_archive(model)
    out_np = hgqt.emulate(archive, x)
    assert isinstance(out_np, np.ndarray) and out_np.shape == (300, 3)
    assert np.array_equal(out_np, ref.numpy())
    out_t, stats = hgqt.emulate(model, torch.as_tensor(x), return_stats=True)
    assert isinstance(out_t, torch.Tensor) and torch.equal(out_t, ref)
    assert stats["samples"] == 300
    # Saved and read back: the same outputs.
    archive.save(str(tmp / "model.hgqt"))
    assert np.array_equal(hgqt.emulate(tmp / "model.hgqt", x), out_np)
    assert (out_np.argmax(1) == y).mean() > 0.9
    # A model rebuilt from the archive computes the same outputs.
    rebuilt = hgqt.from_archive(tmp / "model.hgqt")
    assert torch.equal(rebuilt.forward_exact(x), ref)
    # And the float32 model agrees on the class of every sample.
    assert torch.equal(model(x).argmax(1), ref.argmax(1))


def test_export_hls_verilog_qonnx_and_archive(traced):
    tmp, model, _ = traced
    x, _ = blobs(200, 9)
    hls = hgqt.export(model, tmp / "hls", format="hls", tb_inputs=x)
    assert (tmp / "hls" / "firmware" / "myproject.cpp").exists()
    expected = hgqt.emulate(model, x)
    tb = np.loadtxt(tmp / "hls" / "tb_data" / "tb_output_predictions.dat").reshape(200, 3)
    assert np.array_equal(tb, expected)  # the testbench expects the emulator's outputs
    gxx = shutil.which("g++")
    if gxx:  # the C simulation of the exported HLS against those outputs
        subprocess.run([gxx, "-O1", "-std=c++17", f"-I{REPO / 'tests' / 'ap_types_sim'}",
                        "myproject_test.cpp", "firmware/myproject.cpp", "-o", "tb"],
                       cwd=hls, check=True)
        sim = subprocess.run(["./tb"], cwd=hls, capture_output=True, text=True)
        assert sim.returncode == 0 and "200 samples, 0 mismatches" in sim.stdout, sim.stdout
    # The ac_fixed dialect: a Catapult project, simulated with the ac_fixed simulation header.
    cat = hgqt.export(model, tmp / "cat", format="catapult", tb_inputs=x)
    assert "ac_fixed<" in (tmp / "cat" / "firmware" / "defines.h").read_text()
    assert (tmp / "cat" / "build_prj.tcl").exists()
    if gxx:
        subprocess.run([gxx, "-O1", "-std=c++17", f"-I{REPO / 'tests' / 'ac_types_sim'}",
                        "myproject_test.cpp", "firmware/myproject.cpp", "-o", "tb"],
                       cwd=cat, check=True)
        sim = subprocess.run(["./tb"], cwd=cat, capture_output=True, text=True)
        assert sim.returncode == 0 and "200 samples, 0 mismatches" in sim.stdout, sim.stdout
    hgqt.export(model, tmp / "oneapi", format="oneapi", tb_inputs=x)
    assert "fpga_emu" in (tmp / "oneapi" / "CMakeLists.txt").read_text()
    v = hgqt.export(model, tmp / "rtl", format="verilog", name="net", pipeline_stages=2,
                    const_mult="shared", adder_depth=1)
    assert "module net" in (tmp / "rtl" / "net.v").read_text() and v == str(tmp / "rtl")
    ports = json.loads((tmp / "rtl" / "ports.json").read_text())
    assert all(g["depth"] <= g["tree_depth"] + 1 for g in ports["adder_graphs"])
    assert ports["latency_cycles"] == 2
    # registers placed for a clock period: a short one needs more cycles than a long one
    hgqt.export(model, tmp / "rtl_fast", format="verilog", clock_ns=0.8)
    hgqt.export(model, tmp / "rtl_slow", format="verilog", clock_ns=50.0)
    fast = json.loads((tmp / "rtl_fast" / "ports.json").read_text())
    slow = json.loads((tmp / "rtl_slow" / "ports.json").read_text())
    assert fast["latency_cycles"] > slow["latency_cycles"] >= 1
    assert fast["timing"]["clock_period_ns"] == 0.8
    with pytest.raises(ValueError, match="not both"):
        hgqt.export(model, tmp / "rtl_both", format="verilog", clock_ns=2.0, pipeline_stages=2)
    report = hgqt.export(model, tmp / "m.onnx", format="qonnx", allow_widening=True,
                         rnd_as_offset_floor=True)
    assert report["path"] == str(tmp / "m.onnx") and report["quant_nodes"] > 0
    assert (tmp / "m.onnx").stat().st_size > 0
    hgqt.export(model, tmp / "exported.hgqt", format="archive")
    assert hgqt.load_archive(tmp / "exported.hgqt").trace["traced"]


def test_summary_rows_add_up_to_the_model(traced):
    _, model, _ = traced
    rows = hgqt.summary(model, as_frame=False)
    assert [r["name"] for r in rows] == ["dense_0", "dense_1"]
    # Weights, biases and the quantizers' bit-width parameters, as PyTorch counts them.
    for row in rows:
        layer = model[row["name"]]
        assert row["parameters"] == sum(p.numel() for p in layer.parameters())
    assert sum(r["ebops"] for r in rows) == pytest.approx(model.ebops().item())
    assert 0 < rows[0]["weight_bits_mean"] <= 8
    table = hgqt.format_summary(model)
    assert "dense_0" in table and "total" in table
    default = hgqt.summary(model)
    if importlib.util.find_spec("pandas") is None:
        assert default == rows
        with pytest.raises(ImportError, match="pandas"):
            hgqt.summary(model, as_frame=True)
    else:
        assert list(default["name"]) == ["dense_0", "dense_1"]


def test_ctrl_c_saves_the_state_and_raises_keyboardinterrupt(tmp_path):
    import os
    import signal
    data = blobs_file(tmp_path / "blobs.h5")
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))

    def start_timer(m):  # once the trainer's loop runs
        if m["epoch"] == 1:
            timer.start()

    try:
        with pytest.raises(KeyboardInterrupt, match=r"saved .*resume.pt; continue with "
                                                    r"hgqt.train\(.*resume=True\)"):
            hgqt.train(blobs_config(data, epochs=100000), tmp_path / "run", verbose=False,
                       callback=start_timer)
    finally:
        timer.cancel()
    assert (tmp_path / "run" / "resume.pt").exists()
    # The saved state is a valid hgqt checkpoint of the model at the interruption.
    assert hgqt.load_checkpoint(tmp_path / "run" / "resume.pt").input_shape == [8]


def test_only_false_stops_and_the_callback_must_be_callable(tmp_path):
    data = blobs_file(tmp_path / "blobs.h5")
    result = hgqt.train(blobs_config(data, epochs=2), tmp_path / "run", verbose=False,
                        callback=lambda m: {"seen": m["epoch"]})  # not False: runs on
    assert not result["interrupted"] and len(result["history"]) == 2
    with pytest.raises(TypeError, match="callback must be callable"):
        hgqt.train(blobs_config(data), tmp_path / "run2", callback=True)


def test_a_config_with_new_overrides_keeps_its_folder_for_data_paths(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "cfg").mkdir()
    blobs_file(tmp_path / "data" / "b.h5")
    cfg = blobs_config("../data/b.h5", epochs=1)  # relative to the config file's folder
    (tmp_path / "cfg" / "c.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    config = hgqt.load_config(tmp_path / "cfg" / "c.yaml")
    again = hgqt.load_config(config, {"train.epochs": 2})
    assert again.source_path == config.source_path
    result = hgqt.train(again, tmp_path / "run", verbose=False)
    assert len(result["history"]) == 2


def test_trace_and_forward_exact_check_their_batches(traced):
    _, model, _ = traced
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        hgqt.trace(model, torch.zeros(4, 8), batch_size=0)
    with pytest.raises(ValueError, match="needs at least one sample"):
        model.forward_exact(torch.zeros(0, 8))
    with pytest.raises(ValueError, match=r"data must be \[samples, \*\[8\]\]"):
        hgqt.trace(model, torch.zeros(4, 9))
