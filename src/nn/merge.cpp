// Merge layers: QAdd and QConcatenate.
#include "hgqt/nn/merge.h"

#include <stdexcept>

#include "hgqt/nn/conv.h"
#include "hgqt/util/shape.h"

namespace hgqt::nn {

using quant::Place;
using quant::QuantizerOptions;

namespace {
std::string shapes_string(const std::vector<std::vector<int64_t>>& shapes) {
  std::string s;
  for (size_t n = 0; n < shapes.size(); ++n) s += (n ? ", " : "") + shape_string(shapes[n]);
  return s;
}

std::vector<std::vector<int64_t>> per_sample_shapes(const std::vector<torch::Tensor>& xs,
                                                    const std::string& name) {
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& x : xs) {
    if (!x.defined() || x.dim() < 1)
      throw std::invalid_argument(name + ": every input must be a batch tensor");
    if (x.size(0) != xs[0].size(0))
      throw std::invalid_argument(name + ": inputs have different batch sizes (" +
                                  std::to_string(xs[0].size(0)) + " and " +
                                  std::to_string(x.size(0)) + ")");
    shapes.push_back(x.sizes().slice(1).vec());
  }
  return shapes;
}

void check_count(size_t n, const std::string& name) {
  if (n < 2)
    throw std::invalid_argument(name + " layer takes two or more inputs, got " + std::to_string(n));
}
}  // namespace

// ------------------------------------------------------------------------- QAdd
QAddImpl::QAddImpl(QAddOptions options_) : options(std::move(options_)) {
  reset();
}

void QAddImpl::reset() {
  if (options.output_quantizer()) {
    if (options.shape().empty())
      throw std::invalid_argument("add: an output quantizer needs the per-sample shape");
    oq = register_module("oq", quant::FixedQuantizer(quantizer_for(
                                   options.output_quantizer(), Place::Datalane, options.shape())));
  }
}

void QAddImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::QAdd(" << shape_string(options.shape()) << ", " << to_string(options.activation())
    << ")";
}

torch::Tensor QAddImpl::forward(const torch::Tensor&) {
  throw std::invalid_argument("add layer takes two or more inputs, got 1 (use forward_many)");
}

torch::Tensor QAddImpl::forward_many(const std::vector<torch::Tensor>& xs) {
  check_count(xs.size(), type_name());
  const auto out = output_shape_many(per_sample_shapes(xs, type_name()));
  // Torch broadcasts from the last axis with the batch axis in front: an input of lower
  // per-sample rank is viewed as [B, 1, ..., shape] first.
  auto aligned = [&](const torch::Tensor& x) {
    if (x.dim() == static_cast<int64_t>(out.size()) + 1) return x;
    std::vector<int64_t> v{x.size(0)};
    v.resize(1 + out.size() - (x.dim() - 1), 1);
    for (int64_t d = 1; d < x.dim(); ++d) v.push_back(x.size(d));
    return x.view(v);
  };
  auto y = aligned(xs[0]);
  for (size_t n = 1; n < xs.size(); ++n) y = y + aligned(xs[n]);
  y = apply_activation(y, options.activation());
  return oq ? oq->forward(y) : y;
}

std::vector<NamedQuantizer> QAddImpl::quantizers() const {
  if (oq) return {{"output", oq, {}}};
  return {};
}

std::vector<int64_t> QAddImpl::output_shape(const std::vector<int64_t>&) const {
  throw std::invalid_argument("add layer takes two or more inputs, got 1");
}

std::vector<int64_t> QAddImpl::output_shape_many(
    const std::vector<std::vector<int64_t>>& shapes) const {
  check_count(shapes.size(), type_name());
  const auto out = util::broadcast_shape(shapes);
  if (!out || (!options.shape().empty() && *out != options.shape()))
    throw std::invalid_argument(
        "add layer" +
        (options.shape().empty() ? std::string() : " built for " + shape_string(options.shape())) +
        " needs inputs that broadcast to one shape (numpy rules, from the last axis), got " +
        shapes_string(shapes));
  return *out;
}

// ------------------------------------------------------------------------- QConcatenate
QConcatenateImpl::QConcatenateImpl(QConcatenateOptions options_) : options(std::move(options_)) {}

void QConcatenateImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::QConcatenate(axis " << options.axis() << ")";
}

torch::Tensor QConcatenateImpl::forward(const torch::Tensor&) {
  throw std::invalid_argument(
      "concatenate layer takes two or more inputs, got 1 (use forward_many)");
}

int64_t QConcatenateImpl::resolved_axis(int64_t rank) const {
  const int64_t a = options.axis() < 0 ? options.axis() + rank : options.axis();
  if (a < 0 || a >= rank)
    throw std::invalid_argument("concatenate: axis " + std::to_string(options.axis()) +
                                " is out of range for per-sample inputs with " +
                                std::to_string(rank) + " axes");
  return a;
}

torch::Tensor QConcatenateImpl::forward_many(const std::vector<torch::Tensor>& xs) {
  check_count(xs.size(), type_name());
  const auto shapes = per_sample_shapes(xs, type_name());
  output_shape_many(shapes);
  return torch::cat(xs, resolved_axis(static_cast<int64_t>(shapes[0].size())) + 1);
}

std::vector<int64_t> QConcatenateImpl::output_shape(const std::vector<int64_t>&) const {
  throw std::invalid_argument("concatenate layer takes two or more inputs, got 1");
}

std::vector<int64_t> QConcatenateImpl::output_shape_many(
    const std::vector<std::vector<int64_t>>& shapes) const {
  check_count(shapes.size(), type_name());
  const int64_t rank = static_cast<int64_t>(shapes[0].size());
  const int64_t a = resolved_axis(rank);
  auto out = shapes[0];
  for (size_t n = 1; n < shapes.size(); ++n) {
    bool ok = static_cast<int64_t>(shapes[n].size()) == rank;
    for (int64_t d = 0; ok && d < rank; ++d)
      if (d != a && shapes[n][d] != shapes[0][d]) ok = false;
    if (!ok)
      throw std::invalid_argument("concatenate along per-sample axis " + std::to_string(a) +
                                  " needs the other axes to match, got " + shapes_string(shapes));
    out[a] += shapes[n][a];
  }
  return out;
}

}  // namespace hgqt::nn
