// The template renderer of text_template.h: parses the whole template (checking every tag and
// name), then renders the tree.
#include "hgqt/util/text_template.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <vector>

namespace hgqt::util {

namespace {

struct Node {
  enum class Kind { Text, Var, Section };
  Kind kind = Kind::Text;
  std::string_view text;               ///< Text: the text
  const std::string* value = nullptr;  ///< Var, Section: the variable's value
  bool inverted = false;               ///< Section: {{^var}}
  std::vector<Node> children;          ///< Section: its content
};

bool is_blank(std::string_view s) {
  return s.find_first_not_of(" \t\r") == std::string_view::npos;
}

bool is_identifier(std::string_view s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

bool is_true(const std::string& v) {
  return !v.empty() && v != "0";
}

class Parser {
 public:
  Parser(std::string_view name, std::string_view text, const TemplateVars& vars)
      : name_(name), text_(text), vars_(vars) {}

  std::vector<Node> parse() {
    std::vector<Open> open(1);  // open[0]: the template itself
    size_t cursor = 0;
    while (true) {
      size_t p = text_.find("{{", cursor);
      if (p == std::string_view::npos) {
        add_text(open.back().nodes, text_.substr(cursor));
        break;
      }
      while (p + 2 < text_.size() && text_[p + 2] == '{') ++p;  // "{{{x}}}": "{" then {{x}}
      const size_t close = text_.find("}}", p + 2);
      if (close == std::string_view::npos) fail(p, "'{{' without its '}}'");
      const size_t end = close + 2;
      const std::string_view body = text_.substr(p + 2, close - p - 2);
      const std::string_view tag = text_.substr(p, end - p);
      const char sigil = body.empty() ? '\0' : body[0];
      const bool block = sigil == '#' || sigil == '^' || sigil == '/' || sigil == '!';
      const std::string_view var = block ? body.substr(1) : body;
      if (sigil != '!' && !is_identifier(var))
        fail(p, "malformed tag '" + std::string(tag) + "' (expected {{name}}, {{#name}}, " +
                    "{{^name}}, {{/name}} or {{! comment}})");

      // A block tag alone on its line takes the line with it.
      size_t text_end = p, next = end;
      if (block) {
        const size_t nl_before = text_.rfind('\n', p);
        const size_t line_start = nl_before == std::string_view::npos ? 0 : nl_before + 1;
        const size_t nl_after = text_.find('\n', end);
        const size_t line_end = nl_after == std::string_view::npos ? text_.size() : nl_after;
        if (line_start >= cursor && is_blank(text_.substr(line_start, p - line_start)) &&
            is_blank(text_.substr(end, line_end - end))) {
          text_end = line_start;
          next = nl_after == std::string_view::npos ? text_.size() : nl_after + 1;
        }
      }
      add_text(open.back().nodes, text_.substr(cursor, text_end - cursor));
      cursor = next;

      if (sigil == '!') continue;
      if (sigil == '/') {
        if (open.size() == 1) fail(p, "'" + std::string(tag) + "' closes no section");
        Open& top = open.back();
        if (top.name != var)
          fail(p, "'" + std::string(tag) + "' closes the section '" + std::string(top.tag) +
                      "' of line " + std::to_string(line_of(top.pos)));
        Node section;
        section.kind = Node::Kind::Section;
        section.value = top.value;
        section.inverted = top.inverted;
        section.children = std::move(top.nodes);
        open.pop_back();
        open.back().nodes.push_back(std::move(section));
        continue;
      }
      const std::string* value = lookup(p, var, tag);
      if (sigil == '#' || sigil == '^') {
        for (size_t i = 1; i < open.size(); ++i)
          if (open[i].name == var)
            fail(p, "section '" + std::string(tag) + "' inside the section '" +
                        std::string(open[i].tag) + "' of line " +
                        std::to_string(line_of(open[i].pos)) + " of the same name");
        Open o;
        o.name = var;
        o.tag = tag;
        o.pos = p;
        o.value = value;
        o.inverted = sigil == '^';
        open.push_back(std::move(o));
        continue;
      }
      Node v;
      v.kind = Node::Kind::Var;
      v.value = value;
      open.back().nodes.push_back(std::move(v));
    }
    if (open.size() > 1)
      fail(open.back().pos, "section '" + std::string(open.back().tag) +
                                "' is not closed (no '{{/" + std::string(open.back().name) +
                                "}}')");
    return std::move(open[0].nodes);
  }

 private:
  struct Open {
    std::string_view name, tag;
    size_t pos = 0;
    const std::string* value = nullptr;
    bool inverted = false;
    std::vector<Node> nodes;
  };

  int line_of(size_t pos) const {
    return 1 + static_cast<int>(std::count(text_.begin(), text_.begin() + pos, '\n'));
  }

  [[noreturn]] void fail(size_t pos, const std::string& what) const {
    throw std::logic_error("template '" + std::string(name_) + "' line " +
                           std::to_string(line_of(pos)) + ": " + what);
  }

  const std::string* lookup(size_t pos, std::string_view var, std::string_view tag) const {
    const auto it = vars_.find(std::string(var));
    if (it == vars_.end())
      fail(pos, "unknown variable '" + std::string(var) + "' in '" + std::string(tag) + "'");
    return &it->second;
  }

  static void add_text(std::vector<Node>& nodes, std::string_view s) {
    if (s.empty()) return;
    Node t;
    t.text = s;
    nodes.push_back(std::move(t));
  }

  std::string_view name_, text_;
  const TemplateVars& vars_;
};

void render_nodes(const std::vector<Node>& nodes, std::string& out) {
  for (const Node& n : nodes) {
    switch (n.kind) {
      case Node::Kind::Text:
        out += n.text;
        break;
      case Node::Kind::Var:
        out += *n.value;
        break;
      case Node::Kind::Section:
        if (is_true(*n.value) != n.inverted) render_nodes(n.children, out);
        break;
    }
  }
}

}  // namespace

std::string render_template(std::string_view name_for_errors, std::string_view text,
                            const TemplateVars& vars) {
  const std::vector<Node> nodes = Parser(name_for_errors, text, vars).parse();
  std::string out;
  out.reserve(text.size());
  render_nodes(nodes, out);
  return out;
}

}  // namespace hgqt::util
