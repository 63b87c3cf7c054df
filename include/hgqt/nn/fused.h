// The training step of a quantized dense layer as two autograd nodes: the layer itself and its
// EBOPs, each with a hand-written backward pass (quantization.md sections 3 and 6).
#pragma once

#include <torch/torch.h>

namespace hgqt::nn {

class QDenseImpl;

/// act(iq(x) @ kq(W) + bq(b)) in training as one autograd node: the three quantizers through
/// their prepared plans (quant_forward / quant_backward, so the fused CPU kernel or the ATen
/// path, on any device), one matrix product with the bias, the activation in place, and
/// integer-bit tracking of WRAP quantizers as FixedQuantizer::forward does it. The output
/// quantizer, when there is one, stays its own node. Gradients equal those of the composed ops.
///
/// In a chain of dense layers (HGQModel in training) a ReLU layer whose only reader is another
/// dense layer leaves its ReLU to that reader (`defer_relu`: the output is the pre-activation),
/// and the reader applies it as it quantizes its input (`relu_input`, quant_forward): one pass
/// over the activations less in each direction.
struct DenseChain {
  bool relu_input = false;  ///< x is the pre-activation of a deferred ReLU
  bool defer_relu = false;  ///< return the pre-activation; the reader applies the ReLU
};
torch::Tensor fused_dense_forward(QDenseImpl& layer, const torch::Tensor& x, DenseChain chain = {});

/// QDense EBOPs, sum_{j,o} b_in[j] b_w[j,o] + mean(b_bias) n_out, as one autograd node whose
/// backward pass is the closed form d/db_in[j] = sum_o b_w[j,o], d/db_w[j,o] = b_in[j],
/// d/db_bias = n_out / |b_bias|, times the slopes of bits() (FixedQuantizer::bits_and_slopes).
torch::Tensor fused_dense_ebops(const QDenseImpl& layer);

}  // namespace hgqt::nn
