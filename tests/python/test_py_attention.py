"""Attention from Python: a model with an attention block (its primitive layers by name, a
forward that is permutation equivariant per particle, EBOPs of both activation products) and the
einsum_dense layer against numpy."""
import numpy as np
import pytest
import torch

from hgqt_py import hgqt

WIDE = {"param": "kif", "k": 1, "i": 8, "f": 12, "overflow": "SAT", "round": "RND"}


def transformer(use_bias=True):
    return hgqt.build_model({
        "input_shape": [6, 3],
        "quantizer_defaults": {"datalane": {"granularity": "channel"}},
        "layers": [{"type": "dense", "name": "embed", "units": 4, "activation": "relu"},
                   {"type": "attention", "name": "mha", "num_heads": 2, "key_dim": 3,
                    "use_bias": use_bias},
                   {"type": "add", "name": "res", "inputs": ["embed", "mha"]}]})


def test_an_attention_block_is_its_primitive_layers():
    model = transformer()
    assert list(model.layers) == ["embed", "mha_q", "mha_k", "mha_v", "mha_qh", "mha_kh", "mha_vh",
                                  "mha_scores", "mha_softmax", "mha_context", "mha_merge", "mha",
                                  "res"]
    info = {i["name"]: i for i in model.layer_info()}
    assert info["mha_scores"]["type"] == "einsum"
    assert info["mha_scores"]["inputs"] == ["mha_qh", "mha_kh"]
    assert info["mha_scores"]["output_shape"] == [2, 6, 6]
    assert info["mha"]["output_shape"] == [6, 4]  # units default: the query's features
    assert "bias" not in model["mha_k"].quantizers  # no bias on K
    assert set(model["mha_scores"].quantizers) == {"input", "input2"}
    assert float(model["mha_scores"].ebops()) > 0


def test_attention_is_permutation_equivariant_per_particle():
    model = transformer()
    model.eval()
    x = torch.randn(5, 6, 3)
    perm = torch.randperm(6)
    with torch.no_grad():
        y = model(x)
        yp = model(x[:, perm])
    assert torch.equal(yp, y[:, perm])


def test_einsum_dense_projects_along_the_particle_axis():
    layer = hgqt.nn.QEinsumDense("phd,pj->jhd", [6, 2, 3], [4, 2, 3], use_bias=False,
                                 input_quantizer=WIDE, kernel_quantizer=WIDE)
    x = torch.randint(-128, 128, (5, 6, 2, 3)).float() / 64  # on the 2^-6 grid: exact
    with torch.no_grad():
        layer.kernel.copy_(torch.randint(-64, 64, (6, 4)).float() / 64)
    layer.eval()
    with torch.no_grad():
        y = layer(x)
    ref = np.einsum("bphd,pj->bjhd", x.numpy().astype(np.float64),
                    layer.kernel.detach().numpy().astype(np.float64))
    assert y.shape == (5, 4, 2, 3)
    np.testing.assert_array_equal(y.numpy().astype(np.float64), ref)


def test_blocks_and_two_input_layers_are_not_single_layers():
    with pytest.raises(ValueError, match="build it inside a model"):
        hgqt.nn.layer("attention", [6, 3], num_heads=2, key_dim=3)
    with pytest.raises(ValueError, match="reads two layers"):
        hgqt.nn.layer("einsum", [6, 3], equation="pc,pc->p")


def test_a_models_einsum_layer_is_a_two_input_module():
    # The einsum layer of a built model is a Python module: forward(a, b), its two quantizers,
    # differentiable EBOPs; with wide quantizers it is torch.einsum of the two operands.
    model = hgqt.build_model({
        "input_shape": [5, 3],
        "layers": [{"type": "quantize", "name": "a", "input_quantizer": WIDE},
                   {"type": "dense", "name": "b", "units": 4, "output_quantizer": WIDE},
                   {"type": "einsum", "name": "gram", "inputs": ["a", "b"], "equation": "pc,pd->cd",
                    "input_quantizer": WIDE, "input2_quantizer": WIDE}]})
    gram = model.layers["gram"]
    assert set(gram.quantizers) == {"input", "input2"}
    a = torch.randint(-64, 64, (7, 5, 3)).double() / 16
    b = torch.randint(-64, 64, (7, 5, 4)).double() / 16
    gram.double()
    y = gram(a, b)
    assert y.shape == (7, 3, 4)
    assert torch.equal(y, torch.einsum("npc,npd->ncd", a, b))
    # bits(a) * bits(b) per product: 5 * 3 * 4 products of operands of i + f = 20 bits (the
    # differentiable width of a signed activation, as in every layer's EBOPs).
    assert float(gram.ebops()) == pytest.approx(5 * 3 * 4 * 20 * 20)
