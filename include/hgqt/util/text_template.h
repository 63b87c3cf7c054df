// A small text template renderer: the exporters' project files are templates filled by it.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace hgqt::util {

/// The values a template is filled with: variable name -> text.
using TemplateVars = std::map<std::string, std::string>;

/// Renders `text` with `vars`. The tags:
///   {{var}}              the value of var, verbatim (values are not scanned for tags)
///   {{#var}}...{{/var}}  kept when var is non-empty and not "0"
///   {{^var}}...{{/var}}  kept when var is empty or "0"
///   {{! comment }}       dropped
/// Names are C identifiers. Braces around a tag are text: "{{{x}}}" is "{", {{x}}, "}". Sections
/// may nest, but not inside a section of the same name. A section or comment tag alone on its line
/// (only spaces or tabs besides it) removes the whole line with its newline, so such tags can sit
/// on lines of their own. Every name is checked when the template is parsed, also inside sections
/// that are not kept: an unknown variable, a malformed tag, an unclosed or mismatched section
/// throws std::logic_error naming the template (`name_for_errors`), the line and the tag. Example:
/// render_template("t", "{{#a}}x={{x}}{{/a}}", {{"a", "1"}, {"x", "2"}}) == "x=2"
std::string render_template(std::string_view name_for_errors, std::string_view text,
                            const TemplateVars& vars);

}  // namespace hgqt::util
