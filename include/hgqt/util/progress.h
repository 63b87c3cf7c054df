// A one-line progress bar on stderr, drawn only on a terminal.
#pragma once

#include <chrono>
#include <string>

namespace hgqt::util {

/// Redraws at most ~10 times a second; silent when disabled or stderr is not a terminal.
class ProgressBar {
 public:
  ProgressBar(int64_t total, std::string label, bool enabled);
  /// Shows `done` of `total` with a free-form suffix (e.g. the running loss).
  void update(int64_t done, const std::string& suffix);
  /// Clears the line.
  void finish();

 private:
  int64_t total_;
  std::string label_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_, last_;
};

/// True when stderr is a terminal.
bool stderr_is_terminal();

}  // namespace hgqt::util
