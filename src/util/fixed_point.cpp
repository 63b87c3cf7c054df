// Parsing and printing of the fixed-point mode names.
#include "hgqt/quant/fixed_point.h"

#include <stdexcept>

namespace hgqt::quant {

namespace {
[[noreturn]] void bad(const std::string& what, const std::string& got, const char* allowed) {
  throw std::invalid_argument("unknown " + what + " '" + got + "' (expected one of " + allowed +
                              ")");
}
}  // namespace

RoundingMode parse_rounding(const std::string& s) {
  if (s == "TRN") return RoundingMode::TRN;
  if (s == "RND") return RoundingMode::RND;
  if (s == "RND_CONV") return RoundingMode::RND_CONV;
  if (s == "S_RND") return RoundingMode::S_RND;
  bad("rounding mode", s, "TRN, RND, RND_CONV, S_RND");
}

OverflowMode parse_overflow(const std::string& s) {
  if (s == "WRAP") return OverflowMode::WRAP;
  if (s == "SAT") return OverflowMode::SAT;
  if (s == "SAT_SYM") return OverflowMode::SAT_SYM;
  bad("overflow mode", s, "WRAP, SAT, SAT_SYM");
}

Granularity parse_granularity(const std::string& s) {
  if (s == "tensor") return Granularity::Tensor;
  if (s == "channel") return Granularity::Channel;
  if (s == "element") return Granularity::Element;
  bad("granularity", s, "tensor, channel, element");
}

Parameterization parse_parameterization(const std::string& s) {
  if (s == "kif") return Parameterization::KIF;
  if (s == "kbi") return Parameterization::KBI;
  bad("parameterization", s, "kif, kbi");
}

const char* to_string(RoundingMode m) {
  switch (m) {
    case RoundingMode::TRN:
      return "TRN";
    case RoundingMode::RND:
      return "RND";
    case RoundingMode::RND_CONV:
      return "RND_CONV";
    case RoundingMode::S_RND:
      return "S_RND";
  }
  return "?";
}

const char* to_string(OverflowMode m) {
  switch (m) {
    case OverflowMode::WRAP:
      return "WRAP";
    case OverflowMode::SAT:
      return "SAT";
    case OverflowMode::SAT_SYM:
      return "SAT_SYM";
  }
  return "?";
}

const char* to_string(Granularity g) {
  switch (g) {
    case Granularity::Tensor:
      return "tensor";
    case Granularity::Channel:
      return "channel";
    case Granularity::Element:
      return "element";
  }
  return "?";
}

const char* to_string(Parameterization p) {
  return p == Parameterization::KIF ? "kif" : "kbi";
}

}  // namespace hgqt::quant
