// The extension module _hgqt: error translation, configs, and C++ modules (models, layers,
// quantizers) handed to Python with their own tensors.
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "common.h"
#include "hgqt/config/config.h"
#include "hgqt/data/dataset.h"
#include "hgqt/util/allocator.h"

namespace hgqt::python {

std::string CppModule::kind() const {
  if (as_model()) return "model";
  if (as_quantizer()) return "quantizer";
  if (auto* l = as_layer()) return l->type_name();
  return module->name();
}
model::HGQModelImpl* CppModule::as_model() const {
  return dynamic_cast<model::HGQModelImpl*>(module.get());
}
nn::QLayer* CppModule::as_layer() const {
  return dynamic_cast<nn::QLayer*>(module.get());
}
quant::FixedQuantizerImpl* CppModule::as_quantizer() const {
  return dynamic_cast<quant::FixedQuantizerImpl*>(module.get());
}
model::HGQModel CppModule::model(const std::string& what) const {
  auto p = std::dynamic_pointer_cast<model::HGQModelImpl>(module);
  if (!p)
    throw std::invalid_argument(what +
                                ": expected an hgqt model (hgqt.build_model, "
                                "hgqt.load_checkpoint or hgqt.Sequential), got a '" +
                                kind() + "' module");
  return model::HGQModel(p);
}

quant::FixedQuantizerImpl& CppModule::quantizer(const std::string& what) const {
  if (auto* q = as_quantizer()) return *q;
  throw std::invalid_argument(what + ": '" + kind() + "' is not a quantizer");
}
nn::QLayer& CppModule::layer(const std::string& what) const {
  if (auto* l = as_layer()) return *l;
  throw std::invalid_argument(what + ": '" + kind() + "' is not a layer");
}

namespace {

// A YAML scalar as the Python value a user would write: bool, int, float, None or str.
py::object scalar_to_py(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return py::str(s);  // quoted: always a string
  if (s == "true" || s == "True") return py::bool_(true);
  if (s == "false" || s == "False") return py::bool_(false);
  if (s == "null" || s == "~" || s.empty()) return py::none();
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno == 0 && end && *end == '\0') return py::int_(v);
  errno = 0;
  const double d = std::strtod(s.c_str(), &end);
  if (errno == 0 && end && *end == '\0') return py::float_(d);
  if (s == ".nan" || s == "nan") return py::float_(std::nan(""));
  return py::str(s);
}

py::object yaml_to_py(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence: {
      py::list out;
      for (const auto& item : n) out.append(yaml_to_py(item));
      return out;
    }
    case YAML::NodeType::Map: {
      py::dict out;
      for (const auto& kv : n) out[py::str(kv.first.Scalar())] = yaml_to_py(kv.second);
      return out;
    }
    case YAML::NodeType::Scalar:
      return scalar_to_py(n);
    default:
      return py::none();
  }
}

py::list named_tensors(const torch::OrderedDict<std::string, torch::Tensor>& d) {
  py::list out;
  for (const auto& item : d) out.append(py::make_tuple(item.key(), item.value()));
  return out;
}

py::dict quantizer_options(const quant::QuantizerOptions& o) {
  py::dict d;
  d["shape"] = o.shape();
  d["param"] = o.param() == quant::Parameterization::KIF ? "kif" : "kbi";
  d["k"] = o.k();
  if (o.param() == quant::Parameterization::KIF)
    d["f"] = o.f();
  else
    d["b"] = o.b();
  d["i"] = o.i();
  d["round"] = quant::to_string(o.round());
  d["overflow"] = quant::to_string(o.overflow());
  d["granularity"] = quant::to_string(o.granularity());
  d["batch_axis"] = o.batch_axis();
  d["i_decay"] = o.i_decay();
  d["trainable"] = o.trainable();
  return d;
}

torch::Tensor forward(const CppModule& c, const torch::Tensor& x) {
  if (auto* m = c.as_model()) return m->forward(x);
  if (auto* q = c.as_quantizer()) return q->forward(x);
  if (auto* l = c.as_layer()) return l->forward(x);
  throw std::invalid_argument("module '" + c.kind() + "' has no forward");
}

void register_errors() {
  // Bad arguments, configs and data: ValueError with the C++ message; the rest falls through to
  // pybind11's own translation (RuntimeError for std::exception).
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const config::ConfigError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const data::DataError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      // Shape and dtype checks inside LibTorch: the message without the C++ backtrace.
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });
}

}  // namespace

void init_modules(py::module_& m) {
  register_errors();

  py::class_<config::RunConfig>(m, "Config", py::module_local())
      .def_readonly("name", &config::RunConfig::name)
      .def_readonly("source_path", &config::RunConfig::source_path)
      .def("to_yaml", [](const config::RunConfig& c) { return config::to_yaml(c); })
      .def("model_yaml", [](const config::RunConfig& c) { return config::model_to_yaml(c.model); })
      .def("__repr__",
           [](const config::RunConfig& c) {
             return "<hgqt.Config '" + c.name + "'" +
                    (c.source_path.empty() ? std::string() : " from " + c.source_path) + ">";
           })
      .def("to_dict",
           [](const config::RunConfig& c) { return yaml_to_py(YAML::Load(config::to_yaml(c))); });

  m.def("load_config", &config::load_run_config, py::arg("path"), py::arg("overrides"));
  // `source_path`: the file a config came from, so that its relative data paths still resolve
  // against that file's folder after a re-parse (a Config with new overrides).
  m.def(
      "parse_config",
      [](const std::string& text, const std::string& origin,
         const std::vector<std::string>& overrides, const std::string& source_path) {
        auto c = config::parse_run_config(text, origin, overrides);
        c.source_path = source_path;
        return c;
      },
      py::arg("text"), py::arg("origin"), py::arg("overrides"), py::arg("source_path") = "");
  m.def("quantizer_defaults", [](const std::string& place) {
    quant::Place p;
    if (place == "weight")
      p = quant::Place::Weight;
    else if (place == "datalane")
      p = quant::Place::Datalane;
    else if (place == "bias")
      p = quant::Place::Bias;
    else
      throw std::invalid_argument("place: expected weight, datalane or bias, got '" + place + "'");
    return quantizer_options(quant::default_quantizer_options(p, {1}));
  });
  m.def("yaml_to_py", [](const std::string& text) { return yaml_to_py(YAML::Load(text)); });
  m.def("build_model",
        [](const config::RunConfig& c) { return CppModule{model::HGQModel(c.model).ptr()}; });
  m.def("build_model_yaml", [](const std::string& text, const std::string& origin) {
    return CppModule{model::HGQModel(config::parse_model_yaml(text, origin)).ptr()};
  });

  py::class_<CppModule>(m, "CppModule", py::module_local())
      .def_property_readonly("kind", &CppModule::kind)
      .def("same", [](const CppModule& a, const CppModule& b) { return a.module == b.module; })
      .def("parameters",
           [](const CppModule& c) { return named_tensors(c.module->named_parameters(false)); })
      .def("buffers",
           [](const CppModule& c) { return named_tensors(c.module->named_buffers(false)); })
      .def("state",
           [](const CppModule& c) {
             py::list out = named_tensors(c.module->named_parameters(true));
             for (auto& item : named_tensors(c.module->named_buffers(true))) out.append(item);
             return out;
           })
      .def("children",
           [](const CppModule& c) {
             py::list out;
             for (const auto& item : c.module->named_children())
               out.append(py::make_tuple(item.key(), CppModule{item.value()}));
             return out;
           })
      .def_property_readonly("training", [](const CppModule& c) { return c.module->is_training(); })
      .def("train", [](const CppModule& c, bool on) { c.module->train(on); })
      .def("to",
           [](const CppModule& c, const std::string& device, const std::string& dtype) {
             const torch::Device d(device);
             if (dtype.empty())
               c.module->to(d);
             else if (dtype == "float32")
               c.module->to(d, torch::kFloat32);
             else if (dtype == "float64")
               c.module->to(d, torch::kFloat64);
             else
               throw std::invalid_argument("hgqt modules hold float32 or float64 tensors, not " +
                                           dtype);
           })
      .def("forward", &forward)
      .def("forward_many",
           [](const CppModule& c, const std::vector<torch::Tensor>& xs) {
             return c.layer("several inputs").forward_many(xs);
           })
      .def("ebops",
           [](const CppModule& c) -> torch::Tensor {
             if (auto* m = c.as_model()) return m->ebops();
             if (auto* l = c.as_layer()) return l->ebops();
             throw std::invalid_argument("a '" + c.kind() +
                                         "' has no EBOPs (layers and models have)");
           })
      .def("bits_l1",
           [](const CppModule& c) -> torch::Tensor {
             if (auto* m = c.as_model()) return m->bits_l1();
             if (auto* q = c.as_quantizer()) return q->bits_l1();
             throw std::invalid_argument("bits_l1: needs a model or a quantizer, got '" + c.kind() +
                                         "'");
           })
      .def("constrain",
           [](const CppModule& c) {
             if (auto* m = c.as_model()) return m->constrain();
             if (auto* q = c.as_quantizer()) return q->constrain();
             if (auto* l = c.as_layer())
               for (auto& nq : l->quantizers()) nq.quantizer->constrain();
           })
      .def("describe",
           [](const CppModule& c) {
             std::ostringstream s;
             c.module->pretty_print(s);
             return s.str();
           })
      // Quantizers.
      .def("kif",
           [](const CppModule& c) {
             auto [k, i, f] = c.quantizer("kif").kif();
             return py::make_tuple(k, i, f);
           })
      .def("bits", [](const CppModule& c) { return c.quantizer("bits").bits(); })
      .def("quantizer_options",
           [](const CppModule& c) { return quantizer_options(c.quantizer("options").options); })
      .def("param_shape",
           [](const CppModule& c) { return c.quantizer("param_shape").param_shape(); })
      // Layers: (role, child name) of every quantizer, in data-flow order.
      .def("quantizer_roles",
           [](const CppModule& c) {
             py::list out;
             auto* l = c.as_layer();
             if (!l) return out;
             const auto children = c.module->named_children();
             for (const auto& nq : l->quantizers())
               for (const auto& item : children)
                 if (item.value().get() == nq.quantizer.ptr().get())
                   out.append(py::make_tuple(nq.role, item.key()));
             return out;
           })
      .def("output_shape",
           [](const CppModule& c, const std::vector<int64_t>& in) {
             return c.layer("output_shape").output_shape(in);
           })
      // Models.
      .def("layer_entries",
           [](const CppModule& c) {
             auto m = c.model("layers");
             py::list out;
             for (const auto& e : m->layers()) {
               py::list inputs;
               for (int64_t src : e.inputs)
                 inputs.append(src < 0 ? "input" : m->layers()[src].name);
               py::dict d;
               d["name"] = e.name;
               d["type"] = e.layer->type_name();
               d["inputs"] = inputs;
               d["input_shape"] = e.input_shape;
               d["output_shape"] = e.output_shape;
               out.append(d);
             }
             return out;
           })
      .def("input_shape", [](const CppModule& c) { return c.model("input_shape")->input_shape(); })
      .def("output_shape_of_model",
           [](const CppModule& c) { return c.model("output_shape")->output_shape(); })
      .def("model_yaml",
           [](const CppModule& c) { return config::model_to_yaml(c.model("model_yaml")->spec()); })
      .def("outputs_probabilities", [](const CppModule& c) {
        return c.model("outputs_probabilities")->outputs_probabilities();
      });
}

}  // namespace hgqt::python

PYBIND11_MODULE(_hgqt, m) {
  hgqt::util::tune_allocator();  // the training loop's tensors stay in the heap
  m.doc() = "hgqt's C++ core (use the hgqt package, not this module)";
  m.attr("__version__") = HGQT_VERSION;
  hgqt::python::init_modules(m);
  hgqt::python::init_pipeline(m);
}
