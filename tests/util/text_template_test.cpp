// util::render_template: substitution, sections, inverted sections, nesting, standalone tag
// lines, and the errors a broken template must raise.
#include "hgqt/util/text_template.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace {

using hgqt::util::render_template;
using hgqt::util::TemplateVars;

/// The message of the std::logic_error render_template throws ("" when it throws none).
std::string error_of(const std::string& text, const TemplateVars& vars) {
  try {
    render_template("t.tpl", text, vars);
  } catch (const std::logic_error& e) {
    return e.what();
  }
  return "";
}

TEST(TextTemplate, SubstitutesVariables) {
  EXPECT_EQ(render_template("t", "int {{name}}_top({{n}});\n", {{"name", "abc"}, {"n", "3"}}),
            "int abc_top(3);\n");
  EXPECT_EQ(render_template("t", "no tags at all\n", {}), "no tags at all\n");
  EXPECT_EQ(render_template("t", "", {}), "");
  EXPECT_EQ(render_template("t", "{{a}}{{a}}", {{"a", "x"}}), "xx");
  // Values are not scanned for tags; an empty value renders as nothing.
  EXPECT_EQ(render_template("t", "[{{v}}][{{e}}]", {{"v", "{{e}}"}, {"e", ""}}), "[{{e}}][]");
  // Single braces and "}}" outside a tag are text; braces around a tag too.
  EXPECT_EQ(render_template("t", "if {$x} }} {", {}), "if {$x} }} {");
  EXPECT_EQ(render_template("t", "set_part {{{part}}}", {{"part", "xc7"}}), "set_part {xc7}");
  EXPECT_EQ(render_template("t", "${X:-{{opt}}}", {{"opt", "-O1"}}), "${X:--O1}");
}

TEST(TextTemplate, SectionsKeepTheirTextWhenTheVariableIsSet) {
  const std::string t = "a{{#f}}[{{v}}]{{/f}}b";
  EXPECT_EQ(render_template("t", t, {{"f", "1"}, {"v", "x"}}), "a[x]b");
  EXPECT_EQ(render_template("t", t, {{"f", "yes"}, {"v", "x"}}), "a[x]b");
  EXPECT_EQ(render_template("t", t, {{"f", "0"}, {"v", "x"}}), "ab");
  EXPECT_EQ(render_template("t", t, {{"f", ""}, {"v", "x"}}), "ab");
}

TEST(TextTemplate, InvertedSectionsKeepTheirTextWhenTheVariableIsNotSet) {
  const std::string t = "{{#c}}CCS_RETURN(2);{{/c}}{{^c}}return 2;{{/c}}";
  EXPECT_EQ(render_template("t", t, {{"c", "1"}}), "CCS_RETURN(2);");
  EXPECT_EQ(render_template("t", t, {{"c", "0"}}), "return 2;");
  EXPECT_EQ(render_template("t", t, {{"c", ""}}), "return 2;");
}

TEST(TextTemplate, SectionsNest) {
  const std::string t = "{{#a}}A{{#b}}B{{^c}}!c{{/c}}{{/b}}{{^b}}~b{{/b}}{{/a}}.";
  EXPECT_EQ(render_template("t", t, {{"a", "1"}, {"b", "1"}, {"c", "0"}}), "AB!c.");
  EXPECT_EQ(render_template("t", t, {{"a", "1"}, {"b", "1"}, {"c", "1"}}), "AB.");
  EXPECT_EQ(render_template("t", t, {{"a", "1"}, {"b", "0"}, {"c", "0"}}), "A~b.");
  EXPECT_EQ(render_template("t", t, {{"a", "0"}, {"b", "1"}, {"c", "0"}}), ".");
  // The same name twice in a row (not nested) is fine.
  EXPECT_EQ(render_template("t", "{{#a}}x{{/a}}{{#a}}y{{/a}}", {{"a", "1"}}), "xy");
}

TEST(TextTemplate, BlockTagsAloneOnALineTakeTheLineWithThem) {
  const std::string t =
      "first\n"
      "{{! a comment,\n"
      "    over two lines }}\n"
      "  {{#a}}\n"
      "inside {{v}}\n"
      "{{/a}}  \n"
      "{{^a}}\n"
      "not a\n"
      "{{/a}}\n"
      "last\n";
  EXPECT_EQ(render_template("t", t, {{"a", "1"}, {"v", "x"}}), "first\ninside x\nlast\n");
  EXPECT_EQ(render_template("t", t, {{"a", "0"}, {"v", "x"}}), "first\nnot a\nlast\n");
  // With other text on the line, a block tag takes only itself; variable tags never take lines.
  EXPECT_EQ(render_template("t", "x {{#a}}\ny\n{{/a}} z\n", {{"a", "1"}}), "x \ny\n z\n");
  EXPECT_EQ(render_template("t", "{{v}}\n", {{"v", ""}}), "\n");
  // At the end of a text without a newline.
  EXPECT_EQ(render_template("t", "x\n{{#a}}\ny\n{{/a}}", {{"a", "1"}}), "x\ny\n");
  // A comment in a line renders as nothing.
  EXPECT_EQ(render_template("t", "a{{! note }}b\n", {}), "ab\n");
}

TEST(TextTemplate, UnknownVariablesThrowNamingTemplateAndVariable) {
  const std::string e = error_of("line one\nint {{nmae}};\n", {{"name", "x"}});
  EXPECT_NE(e.find("t.tpl"), std::string::npos) << e;
  EXPECT_NE(e.find("line 2"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown variable 'nmae'"), std::string::npos) << e;
  // Also in sections, and inside a section that is not kept: a typo fails whatever the values.
  EXPECT_NE(error_of("{{#flag}}x{{/flag}}", {}).find("unknown variable 'flag'"), std::string::npos);
  EXPECT_NE(error_of("{{^flag}}x{{/flag}}", {}).find("unknown variable 'flag'"), std::string::npos);
  EXPECT_NE(error_of("{{#a}}{{typo}}{{/a}}", {{"a", "0"}}).find("unknown variable 'typo'"),
            std::string::npos);
}

TEST(TextTemplate, UnclosedAndMismatchedSectionsThrow) {
  const TemplateVars v{{"a", "1"}, {"b", "1"}};
  std::string e = error_of("x\n{{#a}}never closed\n", v);
  EXPECT_NE(e.find("t.tpl"), std::string::npos) << e;
  EXPECT_NE(e.find("line 2"), std::string::npos) << e;
  EXPECT_NE(e.find("'{{#a}}' is not closed"), std::string::npos) << e;
  e = error_of("{{#a}}{{#b}}x{{/a}}{{/b}}", v);
  EXPECT_NE(e.find("'{{/a}}' closes the section '{{#b}}'"), std::string::npos) << e;
  e = error_of("x{{/a}}", v);
  EXPECT_NE(e.find("'{{/a}}' closes no section"), std::string::npos) << e;
  e = error_of("{{#a}}{{^a}}x{{/a}}{{/a}}", v);
  EXPECT_NE(e.find("inside the section '{{#a}}'"), std::string::npos) << e;
}

TEST(TextTemplate, MalformedTagsThrow) {
  for (const char* t : {"{{a", "x {{ a }}", "{{}}", "{{#}}x{{/}}", "{{a-b}}", "{{0}}"}) {
    const std::string e = error_of(t, {{"a", "1"}});
    EXPECT_NE(e.find("t.tpl"), std::string::npos) << t << ": " << e;
  }
  EXPECT_NE(error_of("{{a", {{"a", "1"}}).find("without its '}}'"), std::string::npos);
  EXPECT_NE(error_of("{{ a }}", {{"a", "1"}}).find("malformed tag '{{ a }}'"), std::string::npos);
}

}  // namespace
