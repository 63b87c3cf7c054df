// The embedded project-file templates (src/export/templates/): each is embedded as its file
// reads, and each is rendered by an export with the variables its generator passes (a variable
// the generator does not pass throws, in any dialect, so the export fails).
#include "hgqt/export/templates.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "hgqt/export/hls.h"
#include "hgqt/export/verilog.h"
#include "support/process.h"
#include "support/random_archive.h"

using namespace hgqt;
namespace fs = std::filesystem;
using hgqt::testing::read_text;

namespace {

TEST(ExportTemplates, EmbeddedAsTheirFilesRead) {
  const fs::path dir = fs::path(HGQT_SOURCE_DIR) / "src" / "export" / "templates";
  std::set<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().extension() == ".tpl") files.insert(entry.path().filename().string());
  const auto names = exporters::template_names();
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), files);
  for (const auto& name : names)
    EXPECT_EQ(exporters::template_text(name), read_text(dir / name)) << name;
}

TEST(ExportTemplates, UnknownNameThrows) {
  try {
    exporters::template_text("no_such.tpl");
    FAIL() << "expected std::logic_error";
  } catch (const std::logic_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("no_such.tpl"), std::string::npos) << m;
    EXPECT_NE(m.find("hls_testbench.cpp.tpl"), std::string::npos) << m;
  }
}

TEST(ExportTemplates, EveryTemplateNeedsItsVariables) {
  // Rendering without variables fails: each template uses some, so a generator that stopped
  // passing one would fail its export.
  for (const auto& name : exporters::template_names()) {
    try {
      exporters::render_embedded_template(name, {});
      ADD_FAILURE() << name << " rendered without variables";
    } catch (const std::logic_error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

TEST(ExportTemplates, EveryTemplateIsRenderedByAnExport) {
  // The output file of each template, by export format.
  const std::map<std::string, std::pair<std::string, std::string>> rendered_as{
      {"hls_testbench.cpp.tpl", {"hls", "tpl_top_test.cpp"}},
      {"hls_README.md.tpl", {"hls", "README.md"}},
      {"vitis_build_prj.tcl.tpl", {"hls", "build_prj.tcl"}},
      {"catapult_build_prj.tcl.tpl", {"catapult", "build_prj.tcl"}},
      {"oneapi_sycl.cpp.tpl", {"oneapi", "tpl_top_sycl.cpp"}},
      {"oneapi_CMakeLists.txt.tpl", {"oneapi", "CMakeLists.txt"}},
      {"verilator_tb.cpp.tpl", {"verilog", "tb_tpl_top.cpp"}},
      {"run_verilator.sh.tpl", {"verilog", "run_verilator.sh"}},
      {"verilator_Makefile.tpl", {"verilog", "Makefile"}}};
  for (const auto& name : exporters::template_names())
    EXPECT_EQ(rendered_as.count(name), 1u)
        << name << ": a new template; add the file it renders to this test";

  hgqt::testing::RandomArchiveOptions o;
  o.sizes = {6, 5, 3};
  o.seed = 3;
  const auto a = hgqt::testing::random_mlp_archive(o);
  const auto x = hgqt::testing::random_inputs(a, 3, 7, 1.0);
  std::map<std::string, fs::path> dirs;
  for (const char* format : {"hls", "catapult", "oneapi"}) {
    dirs[format] = hgqt::testing::fresh_test_dir("templates_test_tmp", format, true);
    exporters::HlsOptions ho;
    ho.name = "tpl_top";
    ho.dialect = exporters::hls_dialect(format);
    exporters::export_hls(a, dirs[format].string(), ho, x, 3);
  }
  dirs["verilog"] = hgqt::testing::fresh_test_dir("templates_test_tmp", "verilog", true);
  exporters::VerilogOptions vo;
  vo.name = "tpl_top";
  exporters::export_verilog(a, dirs["verilog"].string(), vo, x, 3);

  for (const auto& [name, where] : rendered_as) {
    const std::string text = read_text(dirs.at(where.first) / where.second);
    EXPECT_FALSE(text.empty()) << name << " -> " << where.first << "/" << where.second;
    EXPECT_EQ(text.find("{{"), std::string::npos) << name << ": a tag left in the output";
    EXPECT_NE(text.find("tpl_top"), std::string::npos) << name << ": the name is missing";
  }
  for (const auto& [format, dir] : dirs) fs::remove_all(dir);
}

}  // namespace
