// The PID beta controller.
#include "hgqt/train/beta_pid.h"

#include <algorithm>
#include <cmath>

namespace hgqt::train {

double BetaPID::update(double ebops) {
  if (!std::isfinite(ebops) || !(ebops > 0)) return state_.beta;
  const config::BetaPIDSpec& c = spec_;
  const double error = std::log10(ebops / c.target_ebops);
  if (state_.updates == 0) {
    // Seed: p e + i integral = log10(init), and no derivative yet.
    state_.integral = (std::log10(c.init) - c.p * error) / c.i;
    state_.previous_error = error;
  }
  const double integral = state_.updates == 0 ? state_.integral : state_.integral + error;
  const double out = c.p * error + c.i * integral + c.d * (error - state_.previous_error);
  const double raw = std::pow(10.0, out);
  const double beta = std::clamp(raw, c.min, c.max);
  if (beta == raw || state_.updates == 0) state_.integral = integral;
  state_.previous_error = error;
  state_.beta = beta;
  ++state_.updates;
  return beta;
}

}  // namespace hgqt::train
