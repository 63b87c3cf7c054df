"""Errors from hgqt's C++ core reach Python as ValueError (bad arguments, configs, data) or
RuntimeError (everything else), with the C++ message."""
import numpy as np
import pytest
import torch

from hgqt_paths import run_hgqt
from hgqt_py import blobs_config, blobs_file, hgqt

SMALL = {"input_shape": [16], "layers": [{"type": "dense", "units": 8}]}

BAD_CONFIG = """name: bad
model:
  input_shape: [4]
  layers:
    - {type: dense, units: many}
data:
  train: {file: x.h5, features: x, labels: y}
"""


def test_a_bad_config_raises_valueerror_with_the_cli_message(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    with pytest.raises(ValueError) as err:
        hgqt.load_config(path)
    message = str(err.value)
    assert message.endswith("bad.yaml:5:28: model.layers[0].units: expected a positive integer, "
                            "got 'many'")
    cli = run_hgqt("train", path)
    assert cli.returncode != 0 and message in cli.stderr  # the same text as the command line


def test_config_and_layer_argument_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"^hgqt.nn.QDense: kernel_quantizer.bb: unknown key "
                                         r"\(did you mean 'b'\?\)"):
        hgqt.nn.QDense(4, 2, kernel_quantizer={"bb": 3})
    with pytest.raises(ValueError, match="round"):
        hgqt.nn.QDense(4, 2, kernel_quantizer={"round": "UP"})
    with pytest.raises(ValueError, match=r"^<model dict>: layers\[0\].type: expected one of dense.*got 'dance'"):
        hgqt.build_model({"input_shape": [4], "layers": [{"type": "dance"}]})
    with pytest.raises(ValueError, match="train.epochs"):
        hgqt.load_config(blobs_config(tmp_path / "x.h5"), {"train.epochs": -1})
    with pytest.raises(TypeError, match="quantizer settings"):
        hgqt.nn.QDense(4, 2, kernel_quantizer=6)
    with pytest.raises(TypeError, match="expected a path, a dict or an hgqt.Config"):
        hgqt.load_config(42)
    with pytest.raises(FileNotFoundError, match="no_such.yaml"):
        hgqt.load_config(tmp_path / "no_such.yaml")


def test_shape_errors_are_runtimeerrors_without_a_cpp_backtrace():
    model = hgqt.build_model(SMALL)
    with pytest.raises(RuntimeError) as err:
        model(torch.randn(3, 5))
    assert "model expects input [batch, [16]], got [3, 5]" in str(err.value)
    assert "Exception raised from" not in str(err.value)


def test_missing_files_raise_with_their_path(tmp_path):
    with pytest.raises(RuntimeError, match="nowhere.pt"):
        hgqt.load_checkpoint(tmp_path / "nowhere.pt")
    with pytest.raises(RuntimeError, match="nowhere.hgqt"):
        hgqt.load_archive(tmp_path / "nowhere.hgqt")
    with pytest.raises(ValueError, match="missing.h5"):
        hgqt.train(blobs_config(tmp_path / "missing.h5"), tmp_path / "run", verbose=False)
    with pytest.raises(RuntimeError, match="resume"):
        hgqt.train(tmp_path, resume=True)


def test_emulator_and_export_check_their_inputs(tmp_path):
    model = hgqt.build_model(SMALL)
    with pytest.raises(ValueError, match="5 values per sample, the archive's model takes 16"):
        hgqt.emulate(model, np.zeros((2, 5)))
    x = np.zeros((2, 16))
    x[1, 3] = np.nan
    with pytest.raises(ValueError, match="sample 1 holds a non-finite value"):
        hgqt.emulate(model, x)
    with pytest.raises(ValueError, match="not traced"):
        hgqt.export(model, tmp_path / "hls")
    with pytest.raises(ValueError, match="format must be hls, catapult, oneapi, verilog, qonnx or archive"):
        hgqt.export(model, tmp_path / "x", format="vhdl", allow_untraced=True)
    with pytest.raises(ValueError, match="part|name"):
        hgqt.export(model, tmp_path / "hls", allow_untraced=True, name="not an identifier")
    assert not (tmp_path / "hls").exists()
    with pytest.raises(TypeError, match="expected an hgqt.Model"):
        hgqt.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="data must be"):
        hgqt.trace(model, torch.zeros(16))


def test_resume_refuses_other_arguments(tmp_path):
    data = blobs_file(tmp_path / "b.h5")
    with pytest.raises(ValueError, match="resume=True continues a run exactly"):
        hgqt.train(blobs_config(data), tmp_path / "run", resume=True)
