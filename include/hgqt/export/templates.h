// The project files the exporters write around a design (testbenches, build scripts, READMEs)
// come from the templates under src/export/templates/, embedded into the library at build time.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "hgqt/util/text_template.h"

namespace hgqt::exporters {

/// Every embedded template: file name (e.g. "hls_testbench.cpp.tpl") -> text. Defined in the
/// source that cmake/embed_templates.cmake generates in the build tree.
const std::map<std::string, std::string>& embedded_templates();

/// The names of the embedded templates, sorted.
std::vector<std::string> template_names();

/// The text of the embedded template `name`. Throws std::logic_error for an unknown name.
const std::string& template_text(const std::string& name);

/// util::render_template of the embedded template `name` with `vars`.
/// Example: render_embedded_template("verilator_Makefile.tpl", {{"name", "myproject"}})
std::string render_embedded_template(const std::string& name, const util::TemplateVars& vars);

}  // namespace hgqt::exporters
