// Per-layer summary table.
#include "hgqt/model/summary.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace hgqt::model {

namespace {
BitStats stats_of(const nn::NamedQuantizer& q, const std::vector<int64_t>& shape) {
  auto [k, i, f] = q.quantizer->kif();
  auto bits = torch::relu(i + f).expand(shape).to(torch::kDouble);
  BitStats s;
  s.count = bits.numel();
  if (s.count == 0) return s;
  s.mean = bits.mean().item<double>();
  s.min = bits.min().item<double>();
  s.max = bits.max().item<double>();
  return s;
}

std::string shape_text(const std::vector<int64_t>& in, const std::vector<int64_t>& out) {
  auto one = [](const std::vector<int64_t>& s) {
    std::string t;
    for (size_t n = 0; n < s.size(); ++n) t += (n ? "x" : "") + std::to_string(s[n]);
    return t;
  };
  return one(in) + " -> " + one(out);
}
}  // namespace

std::vector<LayerSummary> summarize(const HGQModel& model) {
  torch::NoGradGuard no_grad;
  std::vector<LayerSummary> rows;
  for (const auto& e : model->layers()) {
    LayerSummary r;
    r.name = e.name;
    r.type = e.layer->type_name();
    r.shape = shape_text(e.input_shape, e.output_shape);
    for (const auto& p : e.module->parameters()) r.parameters += p.numel();
    for (const auto& q : e.layer->quantizers()) {
      if (q.role == "kernel") {
        r.weight_bits = stats_of(q, q.quantizer->options.shape());
        auto qw = q.quantizer->apply_eval(q.constant);
        r.zero_weight_share = (qw == 0).to(torch::kDouble).mean().item<double>();
      } else if ((q.role == "input" || (q.role == "output" && r.type == "activation")) &&
                 r.activation_bits.count == 0) {
        r.activation_bits = stats_of(q, q.quantizer->options.shape());
      }
    }
    r.ebops = e.layer->ebops().item<double>();
    rows.push_back(r);
  }
  return rows;
}

std::string format_summary(const std::vector<LayerSummary>& rows) {
  std::ostringstream os;
  char line[256];
  auto bits = [](const BitStats& s) {
    char b[64];
    if (s.count == 0) return std::string("-");
    std::snprintf(b, sizeof b, "%.2f [%g, %g]", s.mean, s.min, s.max);
    return std::string(b);
  };
  // Column widths fit the longest name, type and shape (conv shapes are long).
  int wn = 12, wt = 10, ws = 14;
  for (const auto& r : rows) {
    wn = std::max(wn, static_cast<int>(r.name.size()));
    wt = std::max(wt, static_cast<int>(r.type.size()));
    ws = std::max(ws, static_cast<int>(r.shape.size()));
  }
  auto row = [&](const std::string& a, const std::string& b, const std::string& c,
                 const std::string& d, const std::string& e, const std::string& f,
                 const std::string& g) {
    std::snprintf(line, sizeof line, "%-*s %-*s %-*s %-20s %-20s %8s %12s\n", wn, a.c_str(), wt,
                  b.c_str(), ws, c.c_str(), d.c_str(), e.c_str(), f.c_str(), g.c_str());
    os << line;
  };
  const size_t rule = static_cast<size_t>(wn + wt + ws) + 66;
  row("layer", "type", "shape", "weight bits", "act bits", "zero w", "EBOPs");
  os << std::string(rule, '-') << "\n";
  double total = 0;
  int64_t params = 0;
  auto num = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.0f", v);
    return std::string(b);
  };
  for (const auto& r : rows) {
    std::string zero = "-";
    if (r.weight_bits.count > 0) {
      char z[32];
      std::snprintf(z, sizeof z, "%.1f%%", 100.0 * r.zero_weight_share);
      zero = z;
    }
    row(r.name, r.type, r.shape, bits(r.weight_bits), bits(r.activation_bits), zero, num(r.ebops));
    total += r.ebops;
    params += r.parameters;
  }
  os << std::string(rule, '-') << "\n";
  row("total", "", std::to_string(params) + " params", "", "", "", num(total));
  return os.str();
}

}  // namespace hgqt::model
