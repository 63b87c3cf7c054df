// Fused autograd nodes of QDense: the layer in training, and its EBOPs.
#include "hgqt/nn/fused.h"

#include <ATen/ExpandUtils.h>

#include "hgqt/nn/layers.h"

namespace hgqt::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What the dense node reads besides its tensor inputs: prepared in fused_dense_forward (the
// plans hold the bit widths of this step; tracking rewrites i after the forward pass).
struct DenseSetup {
  quant::QuantPlanPtr in, kernel, bias;
  bool relu = false;                                    // apply the ReLU to the output
  bool relu_input = false;                              // x is a pre-activation: quantize relu(x)
  torch::Tensor absmax_in, absmax_kernel, absmax_bias;  // defined for tracking quantizers
};

struct SetupHolder : torch::CustomClassHolder {
  explicit SetupHolder(std::shared_ptr<const DenseSetup> s) : setup(std::move(s)) {}
  std::shared_ptr<const DenseSetup> setup;
};

// An input Function::apply accepts for "none" (LibTorch 1.13 refuses undefined tensors).
torch::Tensor none_like(const torch::Tensor& t) {
  return torch::empty({0}, t.options());
}

struct DenseNode : public torch::autograd::Function<DenseNode> {
  // Inputs: x, W, b (empty without bias), then (a, c) of the input, kernel and bias quantizers.
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor w,
                               torch::Tensor b, torch::Tensor ia, torch::Tensor ic,
                               torch::Tensor ka, torch::Tensor kc, torch::Tensor ba,
                               torch::Tensor bc, std::shared_ptr<const DenseSetup> setup) {
    const auto& s = *setup;
    auto xq = quant::quant_forward(*s.in, x, s.absmax_in, s.relu_input);
    auto wq = quant::quant_forward(*s.kernel, w, s.absmax_kernel);
    torch::Tensor bq, y;
    if (s.bias) {
      bq = quant::quant_forward(*s.bias, b, s.absmax_bias);
      y = torch::addmm(bq, xq, wq);
    } else {
      y = torch::mm(xq, wq);
    }
    if (s.relu) y.relu_();
    ctx->save_for_backward({x, xq, w, wq, b, bq.defined() ? bq : none_like(b), y});
    ctx->saved_data["setup"] = c10::IValue::make_capsule(c10::make_intrusive<SetupHolder>(setup));
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& xq = saved[1];
    const auto& w = saved[2];
    const auto& wq = saved[3];
    const auto& b = saved[4];
    const auto& bq = saved[5];
    const auto& y = saved[6];
    auto holder =
        c10::static_intrusive_pointer_cast<SetupHolder>(ctx->saved_data["setup"].toCapsule());
    const auto& s = *holder->setup;
    auto g = grads[0];
    if (s.relu) g = at::threshold_backward(g, y, 0);  // g where y > 0
    variable_list out(10);
    const bool need_in_params = ctx->needs_input_grad(3) || ctx->needs_input_grad(4);
    const bool need_k_params = ctx->needs_input_grad(5) || ctx->needs_input_grad(6);
    const bool need_b_params = ctx->needs_input_grad(7) || ctx->needs_input_grad(8);
    if (ctx->needs_input_grad(0) || need_in_params) {
      auto r = quant::quant_backward(*s.in, g.mm(wq.t()), x, xq, ctx->needs_input_grad(0),
                                     need_in_params, s.relu_input);
      out[0] = r.dx;
      out[3] = r.da;
      out[4] = r.dc;
    }
    if (ctx->needs_input_grad(1) || need_k_params) {
      auto r = quant::quant_backward(*s.kernel, xq.t().mm(g), w, wq, ctx->needs_input_grad(1),
                                     need_k_params);
      out[1] = r.dx;
      out[5] = r.da;
      out[6] = r.dc;
    }
    if (s.bias && (ctx->needs_input_grad(2) || need_b_params)) {
      auto r =
          quant::quant_backward(*s.bias, g.sum(0), b, bq, ctx->needs_input_grad(2), need_b_params);
      out[2] = r.dx;
      out[7] = r.da;
      out[8] = r.dc;
    }
    return out;
  }
};

torch::Tensor absmax_for(const quant::FixedQuantizer& q, const torch::Tensor& x, bool batch_axis) {
  if (!q->tracks_integer_bits()) return {};
  auto shape = x.sizes().vec();
  if (batch_axis) shape.erase(shape.begin());
  return torch::zeros(shape, x.options().dtype(torch::kDouble));
}

}  // namespace

torch::Tensor fused_dense_forward(QDenseImpl& d, const torch::Tensor& x, DenseChain chain) {
  auto setup = std::make_shared<DenseSetup>();
  setup->relu = d.options.activation() == Activation::ReLU && !chain.defer_relu;
  setup->relu_input = chain.relu_input;
  setup->in = d.iq->plan_for(x, true);
  setup->kernel = d.kq->plan_for(d.kernel, true);
  setup->absmax_in = absmax_for(d.iq, x, true);
  setup->absmax_kernel = absmax_for(d.kq, d.kernel, false);
  if (d.bq) {
    setup->bias = d.bq->plan_for(d.bias, true);
    setup->absmax_bias = absmax_for(d.bq, d.bias, false);
  }
  const auto b = d.bias.defined() ? d.bias : none_like(d.kernel);
  auto param = [&](const quant::FixedQuantizer& q, bool a) {
    if (!q) return none_like(d.kernel);
    return a ? q->param_a() : q->param_c();
  };
  auto y = DenseNode::apply(x, d.kernel, b, d.iq->param_a(), d.iq->param_c(), d.kq->param_a(),
                            d.kq->param_c(), param(d.bq, true), param(d.bq, false),
                            std::shared_ptr<const DenseSetup>(setup));
  if (setup->absmax_in.defined()) d.iq->track_integer_bits(setup->absmax_in);
  if (setup->absmax_kernel.defined()) d.kq->track_integer_bits(setup->absmax_kernel);
  if (setup->absmax_bias.defined()) d.bq->track_integer_bits(setup->absmax_bias);
  return y;
}

namespace {

struct DenseEbopsNode : public torch::autograd::Function<DenseEbopsNode> {
  // Inputs: (a, c) of the input, kernel and bias quantizers; `bits` their bits_and_slopes.
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor ia, torch::Tensor ic,
                               torch::Tensor ka, torch::Tensor kc, torch::Tensor ba,
                               torch::Tensor bc,
                               std::vector<quant::FixedQuantizerImpl::BitsAndSlopes> bits,
                               int64_t in, int64_t out) {
    auto b_in = bits[0].bits.expand({in});
    auto w_rows = bits[1].bits.expand({in, out}).sum(1);  // sum_o b_w[j, o]
    auto e = b_in.dot(w_rows);
    if (bits.size() > 2) e = e + bits[2].bits.mean() * static_cast<double>(out);
    ctx->saved_data["in"] = in;
    ctx->saved_data["out"] = out;
    std::vector<torch::Tensor> keep{b_in, w_rows};
    for (const auto& q : bits)
      for (const auto& t : {q.bits, q.da, q.dc}) keep.push_back(t.defined() ? t : none_like(b_in));
    ctx->save_for_backward(keep);
    return e;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const int64_t in = ctx->saved_data["in"].toInt(), out = ctx->saved_data["out"].toInt();
    const auto& g = grads[0];
    auto slopes = [&](size_t q, const torch::Tensor& d_bits, variable_list& res) {
      const auto& bits = saved[2 + 3 * q];
      const auto& da = saved[3 + 3 * q];
      const auto& dc = saved[4 + 3 * q];
      auto d = at::sum_to(d_bits, bits.sizes());
      if (da.numel() > 0) res[2 * q] = d * da;
      if (dc.numel() > 0) res[2 * q + 1] = d * dc;
    };
    variable_list res(9);          // one per forward argument; none for bits, in and out
    slopes(0, g * saved[1], res);  // d/db_in[j] = sum_o b_w[j,o]
    slopes(1, (g * saved[0]).unsqueeze(1).expand({in, out}), res);  // d/db_w[j,o] = b_in[j]
    if (saved.size() > 8) {
      const auto& bb = saved[8];
      slopes(2,
             (g * (static_cast<double>(out) / static_cast<double>(bb.numel()))).expand(bb.sizes()),
             res);
    }
    return res;
  }
};

}  // namespace

torch::Tensor fused_dense_ebops(const QDenseImpl& d) {
  std::vector<quant::FixedQuantizerImpl::BitsAndSlopes> bits{d.iq->bits_and_slopes(),
                                                             d.kq->bits_and_slopes()};
  if (d.bq) bits.push_back(d.bq->bits_and_slopes());
  auto none = none_like(d.kernel);
  return DenseEbopsNode::apply(d.iq->param_a(), d.iq->param_c(), d.kq->param_a(), d.kq->param_c(),
                               d.bq ? d.bq->param_a() : none, d.bq ? d.bq->param_c() : none,
                               std::move(bits), d.options.in_features(), d.options.out_features());
}

}  // namespace hgqt::nn
