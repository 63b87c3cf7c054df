// Access to the embedded project-file templates (the table itself is generated at build time).
#include "hgqt/export/templates.h"

#include <stdexcept>

namespace hgqt::exporters {

std::vector<std::string> template_names() {
  std::vector<std::string> names;
  for (const auto& [name, text] : embedded_templates()) names.push_back(name);
  return names;
}

const std::string& template_text(const std::string& name) {
  const auto& all = embedded_templates();
  const auto it = all.find(name);
  if (it == all.end()) {
    std::string known;
    for (const auto& [n, text] : all) known += (known.empty() ? "" : ", ") + n;
    throw std::logic_error("no embedded template '" + name + "' (embedded: " + known + ")");
  }
  return it->second;
}

std::string render_embedded_template(const std::string& name, const util::TemplateVars& vars) {
  return util::render_template(name, template_text(name), vars);
}

}  // namespace hgqt::exporters
