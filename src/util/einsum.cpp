// Two-operand einsum equations (util/einsum.h).
#include "hgqt/util/einsum.h"

#include <stdexcept>

namespace hgqt::util {

namespace {
bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t n = 0; n < s.size(); ++n) out += (n ? ", " : "") + std::to_string(s[n]);
  return out + "]";
}

// Size of each letter (0: unused), checked against both operands.
std::vector<int64_t> letter_sizes(const EinsumEquation& eq, const std::vector<int64_t>& a,
                                  const std::vector<int64_t>& b) {
  std::vector<int64_t> size(128, 0);
  auto take = [&](const std::string& axes, const std::vector<int64_t>& shape, const char* name) {
    if (shape.size() != axes.size())
      throw std::invalid_argument("einsum " + eq.text() + ": operand " + name + " has shape " +
                                  shape_text(shape) + ", but the equation gives it " +
                                  std::to_string(axes.size()) + " axes ('" + axes + "')");
    for (size_t d = 0; d < axes.size(); ++d) {
      int64_t& s = size[static_cast<unsigned char>(axes[d])];
      if (shape[d] < 1)
        throw std::invalid_argument("einsum " + eq.text() + ": operand " + name + " has shape " +
                                    shape_text(shape) + " with an empty axis");
      if (s != 0 && s != shape[d])
        throw std::invalid_argument("einsum " + eq.text() + ": axis '" + std::string(1, axes[d]) +
                                    "' is " + std::to_string(s) + " in operand a " + shape_text(a) +
                                    " but " + std::to_string(shape[d]) + " in operand b " +
                                    shape_text(b));
      s = shape[d];
    }
  };
  take(eq.a, a, "a");
  take(eq.b, b, "b");
  return size;
}
}  // namespace

EinsumEquation parse_einsum(const std::string& equation) {
  std::string s;
  for (char c : equation)
    if (c != ' ') s += c;
  const size_t arrow = s.find("->"), comma = s.find(',');
  auto fail = [&](const std::string& why) {
    throw std::invalid_argument("einsum equation '" + equation + "': " + why +
                                " (expected two operands and an output, e.g. 'qhd,khd->hqk')");
  };
  if (arrow == std::string::npos || comma == std::string::npos || comma > arrow ||
      s.find(',', comma + 1) != std::string::npos || s.find("->", arrow + 2) != std::string::npos)
    fail("not of the form 'a,b->out'");
  EinsumEquation eq{s.substr(0, comma), s.substr(comma + 1, arrow - comma - 1), s.substr(arrow + 2),
                    ""};
  for (const std::string* part : {&eq.a, &eq.b, &eq.out}) {
    for (size_t n = 0; n < part->size(); ++n) {
      const char c = (*part)[n];
      if (!is_letter(c)) fail("'" + std::string(1, c) + "' is not an axis letter (a-z, A-Z)");
      if (part->find(c, n + 1) != std::string::npos)
        fail("axis '" + std::string(1, c) + "' appears twice in '" + *part + "'");
    }
  }
  if (eq.a.empty() || eq.b.empty()) fail("an operand has no axes");
  if (eq.out.empty()) fail("the output has no axes (a per-sample scalar); keep one axis");
  for (char c : eq.out)
    if (eq.a.find(c) == std::string::npos && eq.b.find(c) == std::string::npos)
      fail("output axis '" + std::string(1, c) + "' is in neither operand");
  for (const std::string* part : {&eq.a, &eq.b})
    for (char c : *part)
      if (eq.out.find(c) == std::string::npos) {
        if (eq.a.find(c) == std::string::npos || eq.b.find(c) == std::string::npos)
          fail("axis '" + std::string(1, c) +
               "' is summed over but appears in one operand only (sum it with a pool first)");
        if (eq.summed.find(c) == std::string::npos) eq.summed += c;
      }
  return eq;
}

std::vector<int64_t> einsum_output_shape(const EinsumEquation& eq, const std::vector<int64_t>& a,
                                         const std::vector<int64_t>& b) {
  const std::vector<int64_t> size = letter_sizes(eq, a, b);
  std::vector<int64_t> out;
  for (char c : eq.out) out.push_back(size[static_cast<unsigned char>(c)]);
  return out;
}

EinsumMap einsum_map(const EinsumEquation& eq, const std::vector<int64_t>& a,
                     const std::vector<int64_t>& b) {
  const std::vector<int64_t> size = letter_sizes(eq, a, b);
  // Row-major strides of each letter in each operand (0: absent).
  std::vector<int64_t> stride_a(128, 0), stride_b(128, 0);
  auto strides = [](const std::string& axes, const std::vector<int64_t>& shape,
                    std::vector<int64_t>& st) {
    int64_t s = 1;
    for (size_t d = axes.size(); d-- > 0;) {
      st[static_cast<unsigned char>(axes[d])] = s;
      s *= shape[d];
    }
  };
  strides(eq.a, a, stride_a);
  strides(eq.b, b, stride_b);
  // Every product is an entry here and an operation in hardware: 2^26 is far beyond what fits a
  // chip, and keeps the map below 1 GiB.
  const int64_t limit = int64_t{1} << 26;
  auto too_many = [&]() {
    return std::invalid_argument("einsum " + eq.text() + ": more than 2^26 products per sample");
  };
  auto count = [&](const std::string& letters) {
    int64_t n = 1;
    for (char c : letters) {
      n *= size[static_cast<unsigned char>(c)];
      if (n > limit) throw too_many();
    }
    return n;
  };
  const int64_t n_out = count(eq.out), n_sum = count(eq.summed);
  if (n_out * n_sum > limit) throw too_many();
  EinsumMap m;
  m.begin.reserve(static_cast<size_t>(n_out + 1));
  m.first.reserve(static_cast<size_t>(n_out * n_sum));
  m.second.reserve(static_cast<size_t>(n_out * n_sum));
  // Walks a multi-index over `letters` row-major, giving the offsets into a and b.
  auto offsets = [&](const std::string& letters, int64_t index, int64_t& oa, int64_t& ob) {
    oa = ob = 0;
    for (size_t d = letters.size(); d-- > 0;) {
      const unsigned char c = static_cast<unsigned char>(letters[d]);
      const int64_t k = index % size[c];
      index /= size[c];
      oa += k * stride_a[c];
      ob += k * stride_b[c];
    }
  };
  std::vector<int64_t> sum_a(static_cast<size_t>(n_sum)), sum_b(static_cast<size_t>(n_sum));
  for (int64_t s = 0; s < n_sum; ++s) offsets(eq.summed, s, sum_a[s], sum_b[s]);
  for (int64_t o = 0; o < n_out; ++o) {
    m.begin.push_back(static_cast<int64_t>(m.first.size()));
    int64_t oa = 0, ob = 0;
    offsets(eq.out, o, oa, ob);
    for (int64_t s = 0; s < n_sum; ++s) {
      m.first.push_back(oa + sum_a[s]);
      m.second.push_back(ob + sum_b[s]);
    }
  }
  m.begin.push_back(static_cast<int64_t>(m.first.size()));
  return m;
}

}  // namespace hgqt::util
