// Conversion of data sets to tensors.
#include "hgqt/data/tensors.h"

namespace hgqt::data {

namespace {
std::string shape_str(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t n = 0; n < s.size(); ++n) t += (n ? ", " : "") + std::to_string(s[n]);
  return t + "]";
}
}  // namespace

TensorSplit to_tensors(const Dataset& d, const std::vector<int64_t>& input_shape, int64_t outputs,
                       bool classification, const std::string& what) {
  TensorSplit t;
  if (d.size() == 0) return t;
  int64_t per_sample = 1;
  for (auto s : input_shape) per_sample *= s;
  if (d.x.row_size() != per_sample) {
    std::vector<int64_t> sample(d.x.shape.begin() + 1, d.x.shape.end());
    throw DataError(what + ": samples have shape " + shape_str(sample) + " (" +
                    std::to_string(d.x.row_size()) + " values) but the model input is " +
                    shape_str(input_shape) + " (" + std::to_string(per_sample) + " values)");
  }
  if (d.y.rows() != d.x.rows())
    throw DataError(what + ": " + std::to_string(d.x.rows()) + " samples but " +
                    std::to_string(d.y.rows()) + " labels");
  std::vector<int64_t> xs{d.size()};
  xs.insert(xs.end(), input_shape.begin(), input_shape.end());
  t.x = torch::from_blob(const_cast<float*>(d.x.values.data()), xs, torch::kFloat).clone();
  auto y =
      torch::from_blob(const_cast<float*>(d.y.values.data()), d.y.shape, torch::kFloat).clone();
  if (classification) {
    if (y.dim() == 2 && y.size(1) > 1) {
      if (y.size(1) != outputs)
        throw DataError(what + ": one-hot labels have " + std::to_string(y.size(1)) +
                        " columns but the model has " + std::to_string(outputs) + " outputs");
      y = y.argmax(1);
    } else {
      y = y.reshape({-1});
      if ((y != y.round()).any().item<bool>())
        throw DataError(what + ": class labels must be integers");
    }
    y = y.to(torch::kLong);
    const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
    if (lo < 0 || hi >= outputs)
      throw DataError(what + ": class labels range over [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "] but the model has " + std::to_string(outputs) +
                      " outputs (classes 0.." + std::to_string(outputs - 1) + ")");
  } else {
    y = y.reshape({d.size(), -1});
    if (y.size(1) != outputs)
      throw DataError(what + ": targets have " + std::to_string(y.size(1)) +
                      " values per sample but the model has " + std::to_string(outputs) +
                      " outputs");
  }
  t.y = y;
  if (!d.teacher.shape.empty())
    t.teacher = torch::from_blob(const_cast<float*>(d.teacher.values.data()), d.teacher.shape,
                                 torch::kFloat)
                    .reshape({d.size(), -1})
                    .clone();
  return t;
}

TensorSplit to_autoencoder_tensors(const Dataset& d, const std::vector<int64_t>& input_shape,
                                   const std::vector<int64_t>& output_shape,
                                   const std::string& what) {
  TensorSplit t;
  if (d.size() == 0) return t;
  int64_t per_sample = 1, per_out = 1;
  for (auto s : input_shape) per_sample *= s;
  for (auto s : output_shape) per_out *= s;
  if (d.x.row_size() != per_sample) {
    std::vector<int64_t> sample(d.x.shape.begin() + 1, d.x.shape.end());
    throw DataError(what + ": samples have shape " + shape_str(sample) + " (" +
                    std::to_string(d.x.row_size()) + " values) but the model input is " +
                    shape_str(input_shape) + " (" + std::to_string(per_sample) + " values)");
  }
  if (per_out != per_sample)
    throw DataError(what + ": an autoencoder's output must match its input, but the model takes " +
                    shape_str(input_shape) + " (" + std::to_string(per_sample) +
                    " values) and outputs " + shape_str(output_shape) + " (" +
                    std::to_string(per_out) + " values)");
  std::vector<int64_t> xs{d.size()}, ys{d.size()};
  xs.insert(xs.end(), input_shape.begin(), input_shape.end());
  ys.insert(ys.end(), output_shape.begin(), output_shape.end());
  t.x = torch::from_blob(const_cast<float*>(d.x.values.data()), xs, torch::kFloat).clone();
  t.y = t.x.reshape(ys).clone();
  if (d.y.rows() == d.x.rows() && !d.y.values.empty()) {
    auto y =
        torch::from_blob(const_cast<float*>(d.y.values.data()), d.y.shape, torch::kFloat).clone();
    if (y.dim() == 2 && y.size(1) > 1) y = y.argmax(1).to(torch::kFloat);
    y = y.reshape({-1});
    if (y.size(0) == d.size() && (y == y.round()).all().item<bool>()) t.labels = y.to(torch::kLong);
  }
  return t;
}

}  // namespace hgqt::data
