// The beta controller (train.beta kind pid): drives the model's EBOPs to a target.
#pragma once

#include <cmath>
#include <cstdint>

#include "hgqt/config/config.h"

namespace hgqt::train {

/// A PID controller on the log of the EBOPs, as HGQ2's BetaPID. With e = log10(ebops / target)
/// (> 0 while the model is too large):
///   integral += e,  beta = 10^(p e + i integral + d (e - e_previous)),  clamped to [min, max].
/// With ramp_epochs R > 0 the target moves geometrically from the EBOPs E0 of the first update
/// to target_ebops T over R epochs: target(t) = E0 (T / E0)^min(1, t / R), t the epochs since
/// the first update (a model that starts below T is held at T).
/// The first update seeds the integral so that it returns `init` exactly: the switch from the
/// warmup beta to the controller is smooth. An update whose beta is clamped does not add its
/// error to the integral (conditional integration, against wind-up: a target the model cannot
/// reach for a while does not leave a huge integral behind). A non-finite or non-positive EBOPs
/// leaves everything unchanged.
class BetaPID {
 public:
  /// Everything the controller remembers (a resumed run restores it).
  struct State {
    double beta = 0;
    double integral = 0;
    double previous_error = 0;
    int64_t updates = 0;
    double start_ebops = 0;  ///< the EBOPs of the first update (the start of the target ramp)
    double start_time = 0;   ///< the `t` of the first update (0 when it had none)
  };

  explicit BetaPID(const config::BetaPIDSpec& spec) : spec_(spec) { state_.beta = spec.init; }
  /// Feeds one EBOPs measurement taken at training time `t` (epochs, any origin: the ramp runs
  /// from the `t` of the first update) and returns the new beta. Without `t` the target is
  /// target_ebops (no ramp).
  double update(double ebops, double t = INFINITY);
  /// The controller's target `since` epochs after its first update.
  double target_at(double since) const;
  double beta() const { return state_.beta; }
  const State& state() const { return state_; }
  void restore(const State& s) { state_ = s; }

 private:
  config::BetaPIDSpec spec_;
  State state_;
};

}  // namespace hgqt::train
