// Shared by the translation units of the hgqt Python extension (_hgqt).
#pragma once

#include <torch/extension.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "hgqt/model/checkpoint.h"
#include "hgqt/model/model.h"

namespace hgqt::python {

namespace py = pybind11;

/// A C++ module seen from Python: a model, a layer or a quantizer. Python's hgqt.nn.Module
/// wraps one; the tensors it hands out are the C++ module's own (same storage, same autograd
/// identity), so torch.optim and Python losses act on them directly.
struct CppModule {
  std::shared_ptr<torch::nn::Module> module;
  /// What the module is: "model", "quantizer" or the layer's type name (dense, conv2d, ...).
  std::string kind() const;
  model::HGQModelImpl* as_model() const;
  nn::QLayer* as_layer() const;
  quant::FixedQuantizerImpl* as_quantizer() const;
  /// The model, or a std::invalid_argument naming `what` needed one.
  model::HGQModel model(const std::string& what) const;
  /// The quantizer / layer, or a std::invalid_argument naming `what` needed one.
  quant::FixedQuantizerImpl& quantizer(const std::string& what) const;
  nn::QLayer& layer(const std::string& what) const;
};

/// Checkpoint metadata <-> Python dict (keys as in CheckpointMeta).
py::dict meta_to_dict(const model::CheckpointMeta& m);
model::CheckpointMeta meta_from_dict(const py::dict& d);

void init_modules(py::module_& m);
void init_pipeline(py::module_& m);

}  // namespace hgqt::python
