#include "hgqt/export/adder_graph.h"

#include <algorithm>
#include <queue>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "hgqt/util/checked_int.h"

namespace hgqt::exporters {

namespace {

using int128 = adder_int;
using u128 = unsigned __int128;

using util::checked_add;
using util::checked_mul;
using util::checked_shl;

// A value's linear form over the inputs: sum coef * x_input (+ konst), coefficients sorted by
// input. Its exact range follows, the inputs being independent.
struct Form {
  std::vector<std::pair<int64_t, int128>> coef;
  int128 konst = 0;
};

// The bits of magnitude of h >= 0.
int magnitude_bits(int128 h) {
  int b = 0;
  while (b < 127 && (h >> b) != 0) ++b;
  return b;
}

}  // namespace

int logic_bits(const AdderNode& a, int ka, const AdderNode& b, int kb, int width) {
  // An operand that is never negative is zero above its magnitude; a signed one extends its sign
  // up to the sum's width. Below the larger shift one operand is zero.
  auto top = [&](const AdderNode& n, int k) {
    return n.lo >= 0 ? std::min(width, k + magnitude_bits(n.hi)) : width;
  };
  return std::max(0, std::min(top(a, ka), top(b, kb)) - std::max(ka, kb));
}

namespace {

// One live term of an output: (neg ? -1 : 1) * v_node * 2^shift.
struct Term {
  int node;
  int shift;
  bool neg;
};

// Terms order canonically by (node, shift): the first of a pair is the pattern's `a`.
bool before(const Term& x, const Term& y) {
  return x.node != y.node ? x.node < y.node : x.shift < y.shift;
}

// A two-term pattern (x_a << ka) + rel * (x_b << kb), packed: a and b (24 bits each), ka and kb
// (7 bits each), rel (1 bit).
constexpr int kNodeBits = 24;
constexpr int kMaxNodes = 1 << kNodeBits;
constexpr int kMaxShiftDiff = 127;

uint64_t pack(int a, int b, int ka, int kb, bool sub) {
  return (static_cast<uint64_t>(a) << 39) | (static_cast<uint64_t>(b) << 15) |
         (static_cast<uint64_t>(ka) << 8) | (static_cast<uint64_t>(kb) << 1) | (sub ? 1u : 0u);
}
struct Pattern {
  int a, b, ka, kb;
  bool sub;
};
Pattern unpack(uint64_t k) {
  return {static_cast<int>(k >> 39), static_cast<int>((k >> 15) & (kMaxNodes - 1)),
          static_cast<int>((k >> 8) & 127), static_cast<int>((k >> 1) & 127), (k & 1) != 0};
}

// The pattern of two terms of one output (false: their shifts are too far apart), and where the
// pair's value sits: pair = (first.neg ? -1 : 1) * pattern * 2^m.
bool pattern_of(Term x, Term y, uint64_t& key, int& m, bool& neg) {
  if (before(y, x)) std::swap(x, y);
  m = std::min(x.shift, y.shift);
  const int ka = x.shift - m, kb = y.shift - m;
  if (ka > kMaxShiftDiff || kb > kMaxShiftDiff) return false;
  key = pack(x.node, y.node, ka, kb, x.neg != y.neg);
  neg = x.neg;
  return true;
}

// Pattern counts: an open-addressing table from pattern key to count (linear probing, keys never
// removed; a dead pattern keeps the count kDead). One probe sequence per update: the pair counts
// are the optimizer's inner loop (tens of millions of updates on a 784-input layer).
class PatternCounts {
 public:
  static constexpr int kDead = -1;
  PatternCounts() { rehash(1 << 16); }
  /// The count of `key` (0 when never seen).
  int get(uint64_t key) const {
    const size_t i = find(key);
    return keys_[i] == kEmpty ? 0 : vals_[i];
  }
  /// Adds delta to the count of a live key; returns the new count (kDead: the key is dead).
  int add(uint64_t key, int delta) {
    size_t i = find(key);
    if (keys_[i] == kEmpty) {
      if (delta <= 0) return 0;
      if ((used_ + 1) * 4 > keys_.size() * 3) {
        rehash(keys_.size() * 2);
        i = find(key);
      }
      keys_[i] = key;
      vals_[i] = 0;
      ++used_;
    }
    if (vals_[i] == kDead) return kDead;
    vals_[i] = std::max(0, vals_[i] + delta);
    return vals_[i];
  }
  void kill(uint64_t key) {
    add(key, 1);
    vals_[find(key)] = kDead;
  }

 private:
  static constexpr uint64_t kEmpty = ~static_cast<uint64_t>(0);  // not a key (bit 63 is 0)
  static uint64_t mix(uint64_t x) {                              // splitmix64's finalizer
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }
  size_t find(uint64_t key) const {
    const size_t mask = keys_.size() - 1;
    size_t i = mix(key) & mask;
    while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & mask;
    return i;
  }
  void rehash(size_t n) {
    std::vector<uint64_t> keys(n, kEmpty);
    std::vector<int> vals(n, 0);
    keys.swap(keys_);
    vals.swap(vals_);
    for (size_t i = 0; i < keys.size(); ++i)
      if (keys[i] != kEmpty) {
        const size_t j = find(keys[i]);
        keys_[j] = keys[i];
        vals_[j] = vals[i];
      }
  }
  std::vector<uint64_t> keys_;
  std::vector<int> vals_;
  size_t used_ = 0;
};

class Builder {
 public:
  Builder(const CmvmProblem& p, const AdderGraphOptions& o, const std::string& what)
      : p_(p), o_(o), what_(what) {}

  AdderGraph run();

 private:
  int add_node(AdderNode n, Form f) {
    if (static_cast<int64_t>(g_.nodes.size()) >= kMaxNodes - 1)
      throw std::overflow_error(what_ + ": more than 2^24 adder graph nodes");
    int128 lo = f.konst, hi = f.konst;
    for (const auto& [j, c] : f.coef) {
      const int128 u = checked_mul(c, p_.input_lo[j], what_);
      const int128 v = checked_mul(c, p_.input_hi[j], what_);
      lo = checked_add(lo, std::min(u, v), what_);
      hi = checked_add(hi, std::max(u, v), what_);
    }
    n.lo = lo;
    n.hi = hi;
    n.width = adder_signed_width(lo, hi);
    if (n.width > 127) throw std::overflow_error(what_ + ": a partial sum exceeds 127 bits");
    g_.nodes.push_back(n);
    forms_.push_back(std::move(f));
    return static_cast<int>(g_.nodes.size()) - 1;
  }

  // The node (v_a << ka) + (sub ? -1 : 1) * (v_b << kb).
  int add_adder(int a, int b, int ka, int kb, bool sub) {
    AdderNode n;
    n.kind = AdderNode::Kind::Add;
    n.a = a;
    n.b = b;
    n.ka = ka;
    n.kb = kb;
    n.sub = sub;
    n.depth = std::max(g_.nodes[a].depth, g_.nodes[b].depth) + 1;
    const Form& fa = forms_[a];
    const Form& fb = forms_[b];
    Form f;
    f.konst =
        checked_add(checked_shl(fa.konst, ka, what_),
                    checked_mul(sub ? -1 : 1, checked_shl(fb.konst, kb, what_), what_), what_);
    size_t i = 0, k = 0;
    while (i < fa.coef.size() || k < fb.coef.size()) {
      int64_t j;
      int128 c = 0;
      if (k == fb.coef.size() || (i < fa.coef.size() && fa.coef[i].first < fb.coef[k].first)) {
        j = fa.coef[i].first;
        c = checked_shl(fa.coef[i++].second, ka, what_);
      } else if (i == fa.coef.size() || fb.coef[k].first < fa.coef[i].first) {
        j = fb.coef[k].first;
        c = checked_shl(fb.coef[k++].second, kb, what_);
        if (sub) c = -c;
      } else {
        j = fa.coef[i].first;
        int128 cb = checked_shl(fb.coef[k++].second, kb, what_);
        if (sub) cb = -cb;
        c = checked_add(checked_shl(fa.coef[i++].second, ka, what_), cb, what_);
      }
      if (c != 0) f.coef.emplace_back(j, c);
    }
    const int id = add_node(n, std::move(f));
    auto& nd = g_.nodes[id];
    nd.logic_bits = logic_bits(g_.nodes[a], ka, g_.nodes[b], kb, nd.width);
    return id;
  }

  // Sum of 2^depth over an output's live terms: its minimal tree depth is ceil(log2(.)).
  static int depth_of(uint64_t weight) {
    int d = 0;
    while ((static_cast<uint64_t>(1) << d) < weight) ++d;
    return d;
  }
  uint64_t weight(int node) const { return static_cast<uint64_t>(1) << g_.nodes[node].depth; }

  void count_pair(const Term& x, const Term& y, int delta) {
    uint64_t key;
    int m;
    bool neg;
    if (!pattern_of(x, y, key, m, neg)) return;
    const int c = count_.add(key, delta);
    // Every increment queues the pattern at its new score (a queue entry may be stale: share()
    // requeues it at the current score). Queuing less often (at 2, 3, 4 and every fourth
    // occurrence) was 10% faster but picked worse patterns: 6% more LUTs on a 784-input MLP.
    if (delta > 0 && c >= 2) heap_.emplace(score(key, c), key);
  }
  // Patterns save (count - 1) adders of their estimated logic bits.
  int64_t score(uint64_t key, int count) const {
    const Pattern q = unpack(key);
    const auto& a = g_.nodes[q.a];
    const auto& b = g_.nodes[q.b];
    const int w = std::max(a.width + q.ka, b.width + q.kb) + 1;
    return static_cast<int64_t>(count - 1) * std::max(1, logic_bits(a, q.ka, b, q.kb, w));
  }

  void share();
  bool apply(uint64_t key);
  AdderOutput finish(size_t o);

  const CmvmProblem& p_;
  const AdderGraphOptions& o_;
  const std::string& what_;
  AdderGraph g_;
  std::vector<Form> forms_;
  std::vector<std::vector<Term>> terms_;  // live terms per output
  std::vector<uint64_t> weight_;          // per output: sum of 2^depth of its live terms
  std::vector<int> bound_;                // per output: the deepest tree allowed
  std::vector<int> input_node_;           // per input: its node (-1: not read)
  PatternCounts count_;
  std::unordered_map<uint64_t, int> made_;  // the shared node of every pattern applied
  std::priority_queue<std::pair<int64_t, uint64_t>> heap_;
  std::vector<std::vector<int>> where_;  // per node: the outputs that may hold a term of it
};

AdderGraph Builder::run() {
  const size_t n_in = p_.input_lo.size();
  if (p_.input_hi.size() != n_in)
    throw std::invalid_argument(what_ + ": input_lo and input_hi differ in size");
  if (!p_.konst.empty() && p_.konst.size() != p_.outputs.size())
    throw std::invalid_argument(what_ + ": konst has " + std::to_string(p_.konst.size()) +
                                " entries for " + std::to_string(p_.outputs.size()) + " outputs");
  for (size_t j = 0; j < n_in; ++j)
    if (p_.input_lo[j] > p_.input_hi[j])
      throw std::invalid_argument(what_ + ": input " + std::to_string(j) + " has lo > hi");
  input_node_.assign(n_in, -1);
  const size_t n_out = p_.outputs.size();
  terms_.assign(n_out, {});
  weight_.assign(n_out, 0);
  bound_.assign(n_out, 0);
  // Input nodes in input order, then each output's terms (equal digits of one output merge:
  // x + x = x << 1, x - x = 0).
  for (size_t o = 0; o < n_out; ++o)
    for (const auto& d : p_.outputs[o]) {
      if (d.input < 0 || static_cast<size_t>(d.input) >= n_in)
        throw std::invalid_argument(what_ + ": output " + std::to_string(o) + " reads input " +
                                    std::to_string(d.input) + " of " + std::to_string(n_in));
      if (d.shift < 0 || d.shift > 126)
        throw std::invalid_argument(what_ + ": output " + std::to_string(o) + " has shift " +
                                    std::to_string(d.shift) + " (0 to 126)");
      input_node_[d.input] = 0;
    }
  for (size_t j = 0; j < n_in; ++j) {
    if (input_node_[j] < 0) continue;
    AdderNode n;
    n.kind = AdderNode::Kind::Input;
    n.input = static_cast<int64_t>(j);
    Form f;
    f.coef.emplace_back(static_cast<int64_t>(j), 1);
    input_node_[j] = add_node(n, std::move(f));
  }
  int64_t pairs = 0;
  for (size_t o = 0; o < n_out; ++o) {
    // Sum the digits per (input, shift) exactly, then recode each input's total in signed digits.
    std::vector<std::pair<int64_t, int128>> per_input;
    for (const auto& d : p_.outputs[o])
      per_input.emplace_back(d.input, checked_shl(d.neg ? -1 : 1, d.shift, what_));
    std::sort(per_input.begin(), per_input.end(),
              [](const auto& x, const auto& y) { return x.first < y.first; });
    auto& ts = terms_[o];
    for (size_t i = 0; i < per_input.size();) {
      int128 c = 0;
      const int64_t j = per_input[i].first;
      for (; i < per_input.size() && per_input[i].first == j; ++i)
        c = checked_add(c, per_input[i].second, what_);
      for (const auto& [k, digit] : naf_digits(c)) {
        if (k > 126) throw std::overflow_error(what_ + ": a coefficient exceeds 127 bits");
        ts.push_back({input_node_[j], k, digit < 0});
      }
    }
    const int64_t t = static_cast<int64_t>(ts.size());
    pairs += t * (t - 1) / 2;
    uint64_t w = p_.konst.empty() || p_.konst[o] == 0 ? 0 : 1;
    for (const auto& x : ts) w += weight(x.node);
    weight_[o] = w;
    bound_[o] = depth_of(w) + std::max(0, o_.extra_depth);
  }
  if (o_.share && pairs > o_.max_pairs)
    g_.note = "not shared: " + std::to_string(pairs) +
              " digit pairs exceed the optimizer's limit " + std::to_string(o_.max_pairs);
  else if (o_.share)
    share();
  g_.outputs.resize(n_out);
  for (size_t o = 0; o < n_out; ++o) g_.outputs[o] = finish(o);
  for (auto& n : g_.nodes) n.uses = 0;
  for (const auto& n : g_.nodes)
    if (n.kind == AdderNode::Kind::Add) {
      ++g_.nodes[n.a].uses;
      ++g_.nodes[n.b].uses;
    }
  for (const auto& out : g_.outputs)
    if (out.node >= 0) ++g_.nodes[out.node].uses;
  // Drop nodes nothing reads (a shared pattern whose every use was later absorbed cannot occur,
  // but inputs of outputs that cancelled to zero can), renumbering the rest.
  std::vector<int> renum(g_.nodes.size(), -1);
  AdderGraph out;
  for (size_t i = 0; i < g_.nodes.size(); ++i) {
    if (g_.nodes[i].uses == 0) continue;
    AdderNode n = g_.nodes[i];
    if (n.kind == AdderNode::Kind::Add) {
      n.a = renum[n.a];
      n.b = renum[n.b];
    }
    renum[i] = static_cast<int>(out.nodes.size());
    out.nodes.push_back(n);
  }
  out.outputs = g_.outputs;
  for (auto& o : out.outputs)
    if (o.node >= 0) o.node = renum[o.node];
  out.note = g_.note;
  for (const auto& n : out.nodes) {
    if (n.kind != AdderNode::Kind::Add) continue;
    ++out.adders;
    if (n.uses > 1) ++out.shared_adders;
    out.adder_bits += n.width;
    out.logic_bits += n.logic_bits;
  }
  for (const auto& o : out.outputs)
    if (o.node >= 0) out.depth = std::max(out.depth, out.nodes[o.node].depth);
  return out;
}

void Builder::share() {
  where_.assign(g_.nodes.size(), {});
  for (size_t o = 0; o < terms_.size(); ++o) {
    const auto& ts = terms_[o];
    for (size_t i = 0; i < ts.size(); ++i) {
      auto& w = where_[ts[i].node];
      if (w.empty() || w.back() != static_cast<int>(o)) w.push_back(static_cast<int>(o));
      for (size_t k = i + 1; k < ts.size(); ++k) count_pair(ts[i], ts[k], +1);
    }
  }
  while (!heap_.empty()) {
    const auto [s, key] = heap_.top();
    heap_.pop();
    const int c = count_.get(key);
    if (c < 2) continue;  // gone, or dead (kDead)
    const int64_t now = score(key, c);
    if (now != s) {  // stale entry: requeue at the current score
      heap_.emplace(now, key);
      continue;
    }
    if (!apply(key)) {
      count_.kill(key);
    }
  }
}

// Substitutes the pattern `key` into every output where it occurs (non-overlapping occurrences,
// within the depth bound). False when fewer than two occurrences qualify (nothing is changed).
bool Builder::apply(uint64_t key) {
  const Pattern q = unpack(key);
  const int new_depth = std::max(g_.nodes[q.a].depth, g_.nodes[q.b].depth) + 1;
  struct Hit {
    int out;
    size_t i, k;  // positions in terms_[out]
    int m;
    bool neg;
  };
  std::vector<Hit> hits;
  std::vector<int> outs = where_[q.a];
  if (q.a != q.b) {
    const auto& wb = where_[q.b];
    std::vector<int> both;
    std::set_intersection(outs.begin(), outs.end(), wb.begin(), wb.end(), std::back_inserter(both));
    outs.swap(both);
  }
  for (const int o : outs) {
    const auto& ts = terms_[o];
    std::vector<char> used(ts.size(), 0);
    uint64_t w = weight_[o];
    std::vector<size_t> ia, ib;
    for (size_t i = 0; i < ts.size(); ++i) {
      if (ts[i].node == q.a) ia.push_back(i);
      if (ts[i].node == q.b) ib.push_back(i);
    }
    for (const size_t i : ia) {
      if (used[i]) continue;
      for (const size_t k : ib) {
        if (k == i || used[k]) continue;
        uint64_t kk;
        int m;
        bool neg;
        if (!pattern_of(ts[i], ts[k], kk, m, neg) || kk != key) continue;
        const uint64_t w2 =
            w - weight(ts[i].node) - weight(ts[k].node) + (static_cast<uint64_t>(1) << new_depth);
        if (depth_of(w2) > bound_[o]) continue;
        w = w2;
        used[i] = used[k] = 1;
        hits.push_back({o, i, k, m, neg});
        break;
      }
    }
  }
  if (hits.size() < 2) return false;
  // (x_a << ka) - x_b with ka > 0 is built as -(x_b - (x_a << ka)): the low ka bits of a
  // difference whose subtrahend is the shifted operand are the minuend's bits (no logic); the
  // sign goes to the terms, which carry signs for free.
  const bool flip = q.sub && q.ka > 0;
  int n;
  if (const auto it = made_.find(key); it != made_.end()) {
    n = it->second;
  } else {
    n = flip ? add_adder(q.b, q.a, q.kb, q.ka, true) : add_adder(q.a, q.b, q.ka, q.kb, q.sub);
    made_.emplace(key, n);
    where_.emplace_back();
  }
  if (flip)
    for (auto& h : hits) h.neg = !h.neg;
  // Rewrite output by output (hits are grouped by output).
  for (size_t h = 0; h < hits.size();) {
    const int o = hits[h].out;
    auto& ts = terms_[o];
    std::vector<char> gone(ts.size(), 0);
    std::vector<Term> added;
    for (; h < hits.size() && hits[h].out == o; ++h) {
      gone[hits[h].i] = gone[hits[h].k] = 1;
      added.push_back({n, hits[h].m, hits[h].neg});
    }
    // Pair counts: remove every pair touching a gone term (once), add the new terms' pairs.
    for (size_t i = 0; i < ts.size(); ++i) {
      if (!gone[i]) continue;
      for (size_t k = 0; k < ts.size(); ++k)
        if (k != i && (!gone[k] || k > i)) count_pair(ts[i], ts[k], -1);
    }
    std::vector<Term> kept;
    kept.reserve(ts.size());
    for (size_t i = 0; i < ts.size(); ++i)
      if (!gone[i]) kept.push_back(ts[i]);
    for (const auto& t : added) {
      for (const auto& u : kept) count_pair(t, u, +1);
      kept.push_back(t);
      weight_[o] += weight(n);
    }
    for (size_t i = 0; i < ts.size(); ++i)
      if (gone[i]) weight_[o] -= weight(ts[i].node);
    ts.swap(kept);
    where_[n].push_back(o);
  }
  std::sort(where_[n].begin(), where_[n].end());
  where_[n].erase(std::unique(where_[n].begin(), where_[n].end()), where_[n].end());
  return true;
}

// What is left of output o summed by trees that always add the two shallowest values (the
// depth-optimal order), the constant as one more leaf. Where the depth bound allows, the positive
// and the negative terms are summed apart and subtracted at the end: the partial sums of
// never-negative values stay never-negative, so no adder below the last one extends a sign.
AdderOutput Builder::finish(size_t o) {
  struct Leaf {
    int depth, width, node, shift;
    bool neg;
    bool operator>(const Leaf& y) const {
      return depth != y.depth   ? depth > y.depth
             : width != y.width ? width > y.width
                                : node > y.node;
    }
  };
  std::vector<Leaf> leaves;
  for (const auto& t : terms_[o]) {
    const auto& nd = g_.nodes[t.node];
    leaves.push_back({nd.depth, nd.width + t.shift, t.node, t.shift, t.neg});
  }
  const int128 k = p_.konst.empty() ? 0 : p_.konst[o];
  if (k != 0) {
    int tz = 0;
    while (((k >> tz) & 1) == 0) ++tz;
    AdderNode c;
    c.kind = AdderNode::Kind::Const;
    c.value = (k < 0 ? -k : k) >> tz;
    Form f;
    f.konst = c.value;
    const int node = add_node(c, std::move(f));
    leaves.push_back({0, g_.nodes[node].width + tz, node, tz, k < 0});
  }
  if (leaves.empty()) return {};
  // x + y = (x.neg ? -1 : 1) * 2^m * ((v_x << kx) + (x.neg == y.neg ? 1 : -1) * (v_y << ky)).
  // A positive operand goes first, so that the sum is negative only when both are (a negative
  // root costs a negation at the output).
  auto combine = [&](Leaf x, Leaf y) {
    if (x.neg != y.neg) {
      if (x.neg) std::swap(x, y);
    } else if (x.shift > y.shift || (x.shift == y.shift && x.node > y.node)) {
      std::swap(x, y);
    }
    const int m = std::min(x.shift, y.shift);
    const int n = add_adder(x.node, y.node, x.shift - m, y.shift - m, x.neg != y.neg);
    const auto& nd = g_.nodes[n];
    return Leaf{nd.depth, nd.width + m, n, m, x.neg};
  };
  auto reduce = [&](const std::vector<Leaf>& ls) {
    std::priority_queue<Leaf, std::vector<Leaf>, std::greater<Leaf>> pq(ls.begin(), ls.end());
    while (pq.size() > 1) {
      const Leaf x = pq.top();
      pq.pop();
      const Leaf y = pq.top();
      pq.pop();
      pq.push(combine(x, y));
    }
    return pq.top();
  };
  std::vector<Leaf> pos, neg;
  uint64_t wp = 0, wn = 0;
  for (const auto& l : leaves) {
    (l.neg ? neg : pos).push_back(l);
    (l.neg ? wn : wp) += static_cast<uint64_t>(1) << l.depth;
  }
  Leaf r;
  if (!pos.empty() && !neg.empty() && std::max(depth_of(wp), depth_of(wn)) + 1 <= bound_[o])
    r = combine(reduce(pos), reduce(neg));
  else
    r = reduce(leaves);
  return {r.node, r.shift, r.neg};
}

}  // namespace

int adder_signed_width(adder_int lo, adder_int hi) {
  int w = 1;
  while (w < 128) {
    const int128 lim = static_cast<int128>(1) << (w - 1);
    if (lo >= -lim && hi <= lim - 1) break;
    ++w;
  }
  return w;
}

std::vector<std::pair<int, int>> naf_digits(adder_int m) {
  const bool neg = m < 0;
  u128 u = neg ? static_cast<u128>(0) - static_cast<u128>(m) : static_cast<u128>(m);
  std::vector<std::pair<int, int>> d;
  for (int k = 0; u != 0; ++k, u >>= 1) {
    if ((u & 1) == 0) continue;
    const int digit = (u & 3) == 1 ? 1 : -1;  // 2 - (u mod 4)
    d.emplace_back(k, neg ? -digit : digit);
    if (digit == 1)
      u -= 1;
    else
      u += 1;
  }
  return d;
}

AdderGraph build_adder_graph(const CmvmProblem& p, const AdderGraphOptions& options,
                             const std::string& what) {
  Builder b(p, options, what);
  return b.run();
}

std::vector<adder_int> evaluate(const AdderGraph& g, const std::vector<adder_int>& x) {
  std::vector<int128> v(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const auto& n = g.nodes[i];
    switch (n.kind) {
      case AdderNode::Kind::Input:
        if (n.input < 0 || static_cast<size_t>(n.input) >= x.size())
          throw std::invalid_argument("adder graph: input " + std::to_string(n.input) + " missing");
        v[i] = x[n.input];
        break;
      case AdderNode::Kind::Const:
        v[i] = n.value;
        break;
      case AdderNode::Kind::Add: {
        const int128 a = v[n.a] * (static_cast<int128>(1) << n.ka);
        const int128 b = v[n.b] * (static_cast<int128>(1) << n.kb);
        v[i] = n.sub ? a - b : a + b;
        break;
      }
    }
    if (v[i] < n.lo || v[i] > n.hi)
      throw std::invalid_argument("adder graph: node " + std::to_string(i) +
                                  " outside its range (an input outside its range?)");
  }
  std::vector<int128> y(g.outputs.size(), 0);
  for (size_t o = 0; o < g.outputs.size(); ++o) {
    const auto& out = g.outputs[o];
    if (out.node < 0) continue;
    const int128 r = v[out.node] * (static_cast<int128>(1) << out.shift);
    y[o] = out.neg ? -r : r;
  }
  return y;
}

}  // namespace hgqt::exporters
