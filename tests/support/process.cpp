// Helpers of the tests that run external tools.
#include "support/process.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace hgqt::testing {

CommandResult run_command(const std::string& cmd) {
  CommandResult r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, got);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

bool on_path(const std::string& program) {
  return std::system(("command -v " + program + " >/dev/null 2>&1").c_str()) == 0;
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string quoted(const std::string& s) {
  return "'" + s + "'";
}

size_t count_of(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = s.find(needle); pos != std::string::npos; pos = s.find(needle, pos + 1)) ++n;
  return n;
}

std::string ap_include_dir() {
  const char* env = std::getenv("AP_TYPES_INCLUDE");
  if (env && *env) return env;
#ifdef AP_TYPES_INCLUDE
  if (std::string(AP_TYPES_INCLUDE).size() > 0) return AP_TYPES_INCLUDE;
#endif
  return std::string(HGQT_SOURCE_DIR) + "/tests/ap_types_sim";
}

std::filesystem::path fresh_test_dir(const std::string& group, const std::string& name,
                                     bool create) {
  const auto dir = std::filesystem::path(HGQT_BINARY_DIR) / group / name;
  std::filesystem::remove_all(dir);
  if (create) std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace hgqt::testing
