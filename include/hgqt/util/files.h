// Small file helpers shared by the trainer and the CLI.
#pragma once

#include <string>

namespace hgqt::util {

/// Writes `text` to `path` via a temporary file and a rename, so readers never see half a file.
/// Throws std::runtime_error naming the path.
void write_text_atomic(const std::string& path, const std::string& text);
/// Copies a file atomically (temporary copy, then rename).
void copy_file_atomic(const std::string& from, const std::string& to);
/// Appends one line to a file, creating it when absent.
void append_line(const std::string& path, const std::string& line);

}  // namespace hgqt::util
