// The PID beta controller.
#include "hgqt/train/beta_pid.h"

#include <algorithm>
#include <cmath>

namespace hgqt::train {

double BetaPID::target_at(double since) const {
  const config::BetaPIDSpec& c = spec_;
  if (!(c.ramp_epochs > 0) || !(state_.start_ebops > c.target_ebops)) return c.target_ebops;
  const double frac = std::clamp(since / c.ramp_epochs, 0.0, 1.0);
  return state_.start_ebops * std::pow(c.target_ebops / state_.start_ebops, frac);
}

double BetaPID::update(double ebops, double t) {
  if (!std::isfinite(ebops) || !(ebops > 0)) return state_.beta;
  const config::BetaPIDSpec& c = spec_;
  if (state_.updates == 0) {
    state_.start_ebops = ebops;
    state_.start_time = std::isfinite(t) ? t : 0.0;
  }
  const double error = std::log10(ebops / target_at(t - state_.start_time));
  if (state_.updates++ == 0) {
    // Seed the integral so that p e + i integral = log10(init) (no derivative yet): the first
    // update returns init itself.
    state_.integral = (std::log10(c.init) - c.p * error) / c.i;
    state_.previous_error = error;
    state_.beta = c.init;
    return state_.beta;
  }
  const double integral = state_.integral + error;
  const double out = c.p * error + c.i * integral + c.d * (error - state_.previous_error);
  const double raw = std::pow(10.0, out);
  state_.beta = std::clamp(raw, c.min, c.max);
  if (state_.beta == raw) state_.integral = integral;  // a clamped update does not integrate
  state_.previous_error = error;
  return state_.beta;
}

}  // namespace hgqt::train
