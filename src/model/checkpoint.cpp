// Checkpoint files: torch archive with the model spec and metadata as JSON.
#include "hgqt/model/checkpoint.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

namespace hgqt::model {

namespace fs = std::filesystem;

namespace {
constexpr const char* kMetaKey = "hgqt_meta";
constexpr const char* kSpecKey = "hgqt_model_spec";
constexpr int kFormatVersion = 1;
}  // namespace

void save_checkpoint(const std::string& path, HGQModel& model, const CheckpointMeta& meta,
                     const std::function<void(torch::serialize::OutputArchive&)>& extra) {
  nlohmann::json j;
  j["format_version"] = kFormatVersion;
  j["hgqt_version"] = HGQT_VERSION;
  j["epoch"] = meta.epoch;
  j["val_accuracy"] = meta.val_accuracy;
  j["val_loss"] = meta.val_loss;
  j["ebops"] = meta.ebops;
  j["beta"] = meta.beta;
  j["loss"] = meta.loss;
  j["feature_mean"] = meta.feature_mean;
  j["feature_std"] = meta.feature_std;
  j["config"] = meta.config_yaml;
  torch::serialize::OutputArchive archive;
  model->save(archive);
  archive.write(kMetaKey, c10::IValue(j.dump()));
  archive.write(kSpecKey, c10::IValue(config::model_to_yaml(model->spec())));
  if (extra) extra(archive);
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp";
  try {
    archive.save_to(tmp);
    fs::rename(tmp, target);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw std::runtime_error("cannot write checkpoint '" + path + "': " + e.what());
  }
}

Checkpoint load_checkpoint(const std::string& path) {
  if (!fs::is_regular_file(path)) throw std::runtime_error("no checkpoint file '" + path + "'");
  torch::serialize::InputArchive archive;
  c10::IValue meta_v, spec_v;
  try {
    archive.load_from(path);
    if (!archive.try_read(kMetaKey, meta_v) || !archive.try_read(kSpecKey, spec_v))
      throw std::runtime_error("it has no hgqt metadata");
  } catch (const std::exception& e) {
    throw std::runtime_error("'" + path + "' is not an hgqt checkpoint: " + e.what());
  }
  Checkpoint ck;
  const auto j = nlohmann::json::parse(meta_v.toStringRef());
  if (j.value("format_version", 0) > kFormatVersion)
    throw std::runtime_error("checkpoint '" + path + "' has format version " +
                             std::to_string(j.value("format_version", 0)) +
                             ", newer than this hgqt reads (" + std::to_string(kFormatVersion) +
                             ")");
  ck.meta.epoch = j.value("epoch", int64_t{0});
  // NaN is written as JSON null (regression runs have no accuracy; a loss may be NaN).
  auto number = [&](const char* key) {
    auto it = j.find(key);
    return it == j.end() ? 0.0 : it->is_null() ? std::nan("") : it->get<double>();
  };
  ck.meta.val_accuracy = number("val_accuracy");
  ck.meta.val_loss = number("val_loss");
  ck.meta.ebops = number("ebops");
  ck.meta.beta = j.value("beta", 0.0);
  ck.meta.loss = j.value("loss", std::string("cross_entropy"));
  ck.meta.feature_mean = j.value("feature_mean", std::vector<float>{});
  ck.meta.feature_std = j.value("feature_std", std::vector<float>{});
  ck.meta.config_yaml = j.value("config", std::string());
  ck.model = HGQModel(config::parse_model_yaml(spec_v.toStringRef(), path));
  try {
    ck.model->load(archive);
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint '" + path +
                             "' does not match its model spec: " + e.what());
  }
  ck.model->eval();
  return ck;
}

std::string resolve_checkpoint_path(const std::string& p) {
  if (fs::is_directory(p)) {
    for (const char* name : {"best.pt", "last.pt"}) {
      auto c = fs::path(p) / name;
      if (fs::is_regular_file(c)) return c.string();
    }
    throw std::runtime_error("run directory '" + p + "' has no best.pt or last.pt");
  }
  return p;
}

}  // namespace hgqt::model
