"""hgqt's Python bindings: models, layers and quantizers as torch.nn.Modules."""
import numpy as np
import pytest
import torch

from hgqt_py import REPO, blobs, hgqt

MLP = REPO / "configs" / "fashion_mnist_mlp.yaml"
SMALL = {"input_shape": [16], "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                         {"type": "dense", "units": 3}]}


def test_build_model_from_a_config_file_runs_numpy_and_tensors():
    model = hgqt.build_model(MLP)
    assert isinstance(model, torch.nn.Module) and isinstance(model, hgqt.Model)
    assert list(model.layers) == ["flatten_0", "dense_1", "dense_2", "dense_3"]
    assert model.input_shape == [28, 28] and model.output_shape == [10]
    x = np.random.default_rng(0).random((5, 28, 28))  # float64 numpy: converted to float32
    y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (5, 10) and y.dtype == torch.float32
    assert torch.equal(y, model(torch.as_tensor(x, dtype=torch.float32)))
    assert model["dense_1"] is model.dense_1 is model[1]
    info = model.layer_info()
    assert info[1] == {"name": "dense_1", "type": "dense", "inputs": ["flatten_0"],
                       "input_shape": [784], "output_shape": [64]}


def test_load_config_from_dict_with_overrides_round_trips():
    cfg = hgqt.load_config(MLP, {"train.epochs": 3, "train.lr": 0.5})
    d = cfg.to_dict()
    assert d["name"] == "fashion_mnist_mlp" and d["train"]["epochs"] == 3 and d["train"]["lr"] == 0.5
    assert [l["units"] for l in d["model"]["layers"][1:]] == [64, 32, 10]
    again = hgqt.load_config(d)  # a dict with the same structure
    assert again.to_yaml() == cfg.to_yaml()
    assert hgqt.load_config(cfg, ["train.epochs=7"]).to_dict()["train"]["epochs"] == 7
    assert hgqt.load_config(cfg) is cfg
    assert "fashion_mnist_mlp" in repr(cfg)


def test_parameters_and_buffers_are_the_cpp_tensors():
    model = hgqt.build_model(SMALL)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["dense_0.kernel", "dense_0.bias", "dense_0.iq.f", "dense_0.kq.i",
                     "dense_0.kq.b", "dense_0.bq.f", "dense_1.kernel", "dense_1.bias",
                     "dense_1.iq.f", "dense_1.kq.i", "dense_1.kq.b", "dense_1.bq.f"]
    x = torch.randn(4, 16)
    before = model(x)
    with torch.no_grad():
        model.dense_1.bias += 1.0  # in place, from Python: the C++ forward sees it
    after = model(x)
    assert not torch.equal(before, after)
    # state_dict / load_state_dict between two models.
    other = hgqt.build_model(SMALL)
    assert not torch.equal(other(x), after)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other(x), after)
    assert set(model.state_dict()) == set(n for n, _ in model.named_parameters()) | set(
        n for n, _ in model.named_buffers())


def test_train_and_eval_reach_the_cpp_modules():
    model = hgqt.build_model(SMALL)
    iq = model.dense_0.quantizers["input"]
    assert iq.options["overflow"] == "WRAP" and "i" in dict(iq.named_buffers())
    model.eval()
    assert not any(m.training for m in model.modules())
    i0 = iq.i.clone()
    model(torch.full((2, 16), 100.0))  # eval: WRAP quantizers do not track integer bits
    assert torch.equal(iq.i, i0)
    model.train()
    assert all(m.training for m in model.modules())
    model(torch.full((2, 16), 100.0))  # training: integer bits widen to hold |x| = 100
    assert (iq.i > i0).all() and (iq.i >= 7).all()


def test_ebops_gradient_reaches_the_kernel_bit_widths():
    # dense EBOPs = sum_{j,o} b_in[j] b_w[j,o] + mean(b_bias) n_out (quantization.md section 6):
    # d EBOPs / d b_w[j,o] = b_in[j], through the KBI parameter b where b > 0.
    model = hgqt.build_model(SMALL)
    layer = model.dense_0
    iq, kq = layer.quantizers["input"], layer.quantizers["kernel"]
    with torch.no_grad():
        iq.f.copy_(torch.arange(16, dtype=torch.float32).remainder(5))  # b_in = relu(2 + f)
    model.zero_grad()
    layer.ebops().backward()
    b_in = (iq.i + iq.f).clamp(min=0).round()
    expected = b_in.reshape(16, 1).expand(16, 8)
    assert torch.equal(kq.b.grad, expected)
    assert iq.f.grad is not None and torch.equal(iq.f.grad, kq.bits().detach().sum(1))


def test_python_loss_backpropagates_into_quantizer_bit_widths_and_input():
    model = hgqt.build_model(SMALL)
    x = torch.randn(32, 16, requires_grad=True)
    loss = model(x).pow(2).mean()  # a task loss computed in Python
    loss.backward()
    for name, role in [("dense_0", "input"), ("dense_0", "kernel"), ("dense_1", "kernel")]:
        q = model[name].quantizers[role]
        g = q.f.grad if q.options["param"] == "kif" else q.b.grad
        assert g is not None and g.abs().sum() > 0, f"{name}.{role} got no gradient"
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_torch_optim_trains_python_composed_layers():
    torch.manual_seed(0)
    net = torch.nn.Sequential(hgqt.nn.QDense(8, 16, activation="relu"), hgqt.nn.QDense(16, 3))
    x, y = (torch.as_tensor(a) for a in blobs(512, 5))
    e0 = hgqt.ebops(net).item()
    b0 = net[0].quantizers["kernel"].b.detach().clone()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(net(x), y) + 1e-4 * hgqt.ebops(net)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hgqt.constrain(net)
    net.eval()
    xt, yt = (torch.as_tensor(a) for a in blobs(512, 6))
    acc = (net(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.9, acc
    assert hgqt.ebops(net).item() < 0.8 * e0  # the EBOPs term shrank the bit widths
    assert not torch.equal(net[0].quantizers["kernel"].b, b0)


def test_layers_built_in_python_match_config_built_layers():
    torch.manual_seed(1)
    dense = hgqt.nn.QDense(16, 8, activation="relu", kernel_quantizer={"b": 5, "round": "TRN"},
                           output_quantizer={"i": 3, "f": 2})
    assert list(dense.quantizers) == ["input", "kernel", "bias", "output"]
    assert dense.quantizers["kernel"].options["b"] == 5.0
    assert dense.quantizers["kernel"].options["round"] == "TRN"
    model = hgqt.build_model({"input_shape": [16], "layers": [dict(dense.spec)]})
    model.load_state_dict({"dense_0." + k: v for k, v in dense.state_dict().items()})
    x = torch.randn(10, 16)
    assert torch.equal(model(x), dense(x))
    conv = hgqt.nn.QConv2d([8, 8, 1], 4, 3, padding="same", activation="relu")
    assert conv(torch.randn(2, 8, 8, 1)).shape == (2, 8, 8, 4)
    assert conv.quantizers["kernel"].b.shape == (3, 3, 1, 4)
    pool = hgqt.nn.layer("max_pool", [8, 8, 4], pool_size=2)
    assert pool.kind == "max_pool" and pool(torch.randn(2, 8, 8, 4)).shape == (2, 4, 4, 4)
    act = hgqt.nn.QActivation([5], "relu", quantizer={"i": 1, "f": 1, "overflow": "SAT"})
    out = act(torch.tensor([[-1.0, 0.3, 0.74, 0.76, 9.0]]))
    assert out.tolist() == [[0.0, 0.5, 0.5, 1.0, 1.5]]


def test_mean_over_six_particles_is_the_sum_times_the_quantized_scale():
    # 1/6 with 4 significant bits, by hand: shift = floor(log2 6) + 4 = 6, round(2^6 / 6) = 11.
    mean = hgqt.nn.layer("global_avg_pool", [6, 3], scale_bits=4)
    x = torch.randint(-16, 16, (4, 6, 3)).double() / 4
    assert torch.equal(mean(x), x.sum(1) * 11 / 64)
    # 8 bits (the default): round(2^10 / 6) = 171 at 2^-10.
    assert torch.equal(hgqt.nn.layer("global_avg_pool", [6, 3])(x), x.sum(1) * 171 / 1024)
    # A power-of-two count is the exact mean, whatever the bits.
    x8 = torch.randint(-16, 16, (4, 8, 3)).double() / 4
    assert torch.equal(hgqt.nn.layer("global_avg_pool", [8, 3], scale_bits=3)(x8), x8.mean(1))
    with pytest.raises(Exception, match="scale_bits"):
        hgqt.nn.layer("global_avg_pool", [6, 3], scale_bits=1)


def test_fixed_quantizer_by_hand():
    # KIF k=1 i=3 f=2 RND SAT: step 0.25, range [-8, 7.75]; RND rounds half up.
    q = hgqt.nn.FixedQuantizer([4], i=3, f=2, overflow="SAT", round="RND")
    q.eval()
    x = torch.tensor([[0.3, -1.1, 9.0, 0.125]])
    assert q(x).tolist() == [[0.25, -1.0, 7.75, 0.25]]
    k, i, f = q.kif()
    assert k.tolist() == [1, 1, 1, 1] and i.tolist() == [3, 3, 3, 3] and f.tolist() == [2, 2, 2, 2]
    assert q.bits().tolist() == [5, 5, 5, 5]
    w = hgqt.nn.FixedQuantizer([2, 3], place="weight")
    assert w.options["param"] == "kbi" and w.options["overflow"] == "SAT_SYM"


def test_sequential_shares_the_layers_and_saves(tmp_path):
    torch.manual_seed(2)
    a = hgqt.nn.QDense(8, 16, activation="relu")
    b = hgqt.nn.QDense(16, 3)
    x = torch.randn(6, 8)
    y = torch.nn.Sequential(a, b)(x)
    model = hgqt.Sequential(a, b)
    assert torch.equal(model(x), y)
    assert model[0] is a
    # The caller's layer now reads the model's own C++ tensors.
    assert a.kernel is dict(model._cpp.state())["dense_0.kernel"]
    with torch.no_grad():
        a.bias += 0.5
    assert not torch.equal(model(x), y)  # the model reads the layer's tensors
    path = model.save(str(tmp_path / "m.pt"), epoch=4)
    back = hgqt.load_checkpoint(path)
    assert back.meta["epoch"] == 4
    assert torch.equal(back(x), model(x))
    with pytest.raises(ValueError, match="built for input"):
        hgqt.Sequential(hgqt.nn.QDense(8, 4), hgqt.nn.QDense(5, 2))


def test_to_double_and_back():
    model = hgqt.build_model(SMALL)
    x = torch.randn(3, 16)
    y32 = model(x)
    model.double()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    y64 = model(x.double())
    assert y64.dtype == torch.float64
    assert torch.allclose(y64.float(), y32, atol=1e-4)
    model.float()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.equal(model(x), y32)


def test_layers_of_a_model_cannot_be_replaced_or_removed():
    model = hgqt.build_model(SMALL)
    with pytest.raises(TypeError, match="cannot replace 'dense_0'"):
        model.dense_0 = hgqt.nn.QDense(16, 8)
    with pytest.raises(TypeError, match="cannot remove 'dense_1'"):
        del model.dense_1
    with pytest.raises(TypeError, match="cannot add parameter 'extra'"):
        model.dense_0.extra = torch.nn.Parameter(torch.zeros(1))
    model.dense_0.bias = torch.nn.Parameter(torch.full((8,), 0.25))  # same shape: copied in
    assert torch.equal(dict(model._cpp.state())["dense_0.bias"], torch.full((8,), 0.25))


def test_per_particle_dense_shares_its_kernel_across_particles():
    torch.manual_seed(3)
    dense = hgqt.nn.QDense(3, 5, input_shape=[6, 3], activation="relu",
                           input_quantizer={"granularity": "channel"})
    assert dense.output_shape([6, 3]) == [6, 5]
    assert dense.quantizers["input"].f.shape == (1, 3)  # one width per feature, every particle
    assert dense.quantizers["kernel"].b.shape == (3, 5)
    dense.eval()
    x = torch.randn(4, 6, 3)
    y = dense(x)
    assert y.shape == (4, 6, 5)
    perm = torch.randperm(6)
    assert torch.equal(dense(x[:, perm]), y[:, perm])
    with pytest.raises(ValueError, match="must end in in_features = 3"):
        hgqt.nn.QDense(3, 5, input_shape=[6, 4])


def test_lut_dense_block_builds_trains_and_is_not_a_single_layer():
    model = hgqt.build_model({"input_shape": [6], "layers": [
        {"type": "lut_dense", "name": "h", "units": 3, "activation": "relu",
         "input_quantizer": {"i": 2, "f": 2}},
        {"type": "dense", "name": "out", "units": 2}]})
    assert list(model.layers)[:6] == ["h_in", "h_col", "h_fanout", "h_tables", "h_sum", "h"]
    tables = model.layers["h_tables"]
    assert set(tables.quantizers) == {"input", "output"}
    assert float(tables.ebops()) > 0
    x = torch.randn(32, 6)
    loss = model(x).pow(2).mean() + 1e-4 * model.ebops()
    loss.backward()
    assert tables.quantizers["input"].f.grad is not None
    with pytest.raises(ValueError, match="build it inside a model"):
        hgqt.nn.layer("lut_dense", [6], units=3)


def test_qlutdense_layer_composes_trains_and_emulates_bit_exactly():
    torch.manual_seed(0)
    lut = hgqt.nn.QLutDense(6, 4, activation="relu", name="h", input_quantizer={"i": 2, "f": 2})
    assert list(lut.layers) == ["h_in", "h_col", "h_fanout", "h_tables", "h_sum", "h"]
    assert lut.tables.quantizers["input"].f.shape == (6, 4)
    assert lut.spec["units"] == 4 and lut.spec["hidden"] == 8
    head = hgqt.nn.QDense(4, 3)
    x = torch.randn(64, 6)
    lut.eval()
    head.eval()
    expected = head(lut(x))
    model = hgqt.Sequential(lut, head)
    assert list(model.layers) == ["h_in", "h_col", "h_fanout", "h_tables", "h_sum", "h", "dense_1"]
    assert model["h_tables"] is lut.tables  # the caller's layers are the model's
    model.eval()
    assert torch.equal(model(x), expected)
    with pytest.raises(RuntimeError, match="part of an hgqt.Sequential"):
        lut(x)  # its values live in the model now
    # after another layer the block has no input quantize layer of its own; unnamed blocks are
    # named by position
    inner = hgqt.Sequential(hgqt.nn.QDense(6, 5, activation="relu"),
                            hgqt.nn.QLutDense(5, 3, hidden_layers=0), hgqt.nn.QLutDense(3, 2))
    assert list(inner.layers) == ["dense_0", "lut_dense_1_col", "lut_dense_1_fanout",
                                  "lut_dense_1_tables", "lut_dense_1_sum", "lut_dense_1",
                                  "lut_dense_2_col", "lut_dense_2_fanout", "lut_dense_2_tables",
                                  "lut_dense_2_sum", "lut_dense_2"]
    with pytest.raises(ValueError, match=r"built for input \[7\], but gets \[5\]"):
        hgqt.Sequential(hgqt.nn.QDense(6, 5), hgqt.nn.QLutDense(7, 3))
    # one step moves both quantizers of the connections
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {r: q.f.detach().clone() for r, q in lut.tables.quantizers.items()}
    loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 3, (64,))) + 1e-4 * model.ebops()
    loss.backward()
    opt.step()
    model.constrain()
    for role, q in lut.tables.quantizers.items():
        assert not torch.equal(q.f.detach(), before[role]), role
    # the archive's tables reproduce the eval forward bit for bit
    model.eval()
    hgqt.trace(model, x)
    got = hgqt.emulate(hgqt.to_archive(model), x)
    assert torch.equal(torch.as_tensor(got, dtype=torch.float64), model.forward_exact(x))
    with pytest.raises(TypeError, match="QLutDense: table_quantizer"):
        hgqt.nn.QLutDense(6, 4, table_quantizer=3)
