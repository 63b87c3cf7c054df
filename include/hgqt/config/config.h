// Run configuration: the typed form of a YAML config file (no LibTorch here).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "hgqt/util/avg_scale.h"

namespace YAML {
class Node;
}

namespace hgqt::config {

/// A user error in a configuration: names the key path, the file and line, and what was expected.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Overrides for one quantizer; unset fields keep the defaults of the quantizer's place.
/// Example (YAML): `kernel_quantizer: {b: 6, i: 1, round: RND_CONV, granularity: channel}`
struct QuantizerSpec {
  std::optional<std::string> param;        ///< "kif" or "kbi"
  std::optional<int> k;                    ///< sign bit, 0 or 1
  std::optional<double> b;                 ///< KBI: bits without sign
  std::optional<double> i;                 ///< integer bits (sign excluded)
  std::optional<double> f;                 ///< KIF: fractional bits
  std::optional<std::string> round;        ///< TRN, RND, RND_CONV, S_RND
  std::optional<std::string> overflow;     ///< WRAP, SAT, SAT_SYM
  std::optional<std::string> granularity;  ///< tensor, channel, element
  std::optional<double> i_decay;           ///< WRAP activations: integer-bit decay per step
  std::optional<bool> trainable;           ///< train the bit widths (default true)

  /// Fields set in `over` replace those of this spec.
  QuantizerSpec merged(const QuantizerSpec& over) const;
};

/// One layer of the `model.layers` list.
struct LayerSpec {
  /// dense, conv1d, conv2d, batchnorm, activation, quantize, flatten, reshape, max_pool,
  /// avg_pool, sum_pool, global_max_pool, global_avg_pool, global_sum_pool, add, concatenate, lut,
  /// softmax, einsum (an `attention` block in the YAML is read as the layers it stands for:
  /// expand_attention)
  std::string type;
  std::string name;  ///< optional; defaults to "<type>_<index>"
  /// Layers it reads ("input": the model input); empty: the previous layer. add and
  /// concatenate need two or more, einsum two.
  std::vector<std::string> inputs;
  /// dense: output features (0, only in an expanded attention block: as many as the features of
  /// layer `units_from`, the block's query source)
  int64_t units = 0;
  std::string units_from;
  int64_t filters = 0;               ///< conv: output channels
  std::vector<int64_t> kernel_size;  ///< conv: one entry (used for every axis) or one per axis
  std::vector<int64_t> strides;      ///< conv, pools: as kernel_size; empty: 1 (pools: pool_size)
  std::string padding = "valid";     ///< conv: valid | same (Keras semantics)
  std::vector<int64_t> pool_size;    ///< max_pool, avg_pool: window, as kernel_size
  /// avg_pool, global_avg_pool over a window that is not a power of two: significant bits of the
  /// quantized 1 / window (util::avg_scale)
  int scale_bits = util::kDefaultAvgScaleBits;
  std::vector<int64_t> shape;  ///< reshape: per-sample target shape (one -1 allowed)
  int64_t axis = -1;           ///< concatenate: per-sample axis (negative from the end)
  bool batchnorm = false;      ///< dense, conv: batch norm folded into kernel and bias
  std::string function;        ///< lut: the tabulated function (tanh, sigmoid, ...)
  std::string equation;        ///< einsum: "qhd,khd->hqk" (util/einsum.h)
  double input_scale = 1.0;    ///< softmax: the softmax of input_scale * x
  /// attention (a block read_model expands; see expand_attention): heads and per-head widths
  int64_t num_heads = 0, key_dim = 0, value_dim = 0;
  int64_t projected_length = 0;  ///< linformer_attention: k, the keys' and values' rows
  /// lut_dense (a block read_model expands; see expand_lut_dense) and its learned_lut layer: the
  /// width of each connection's hidden layer, 1 or 0 hidden layers, the widest table input
  int64_t hidden = 8, hidden_layers = 1, max_table_bits = 12;
  std::vector<int64_t> output_shape;  ///< einsum_dense: per-sample output shape
  /// The index in ModelSpec::blocks of the block this layer was expanded from; -1: none.
  int block = -1;
  /// Its index in the YAML's model.layers (the block's, for an expanded layer); -1: unknown.
  int yaml_index = -1;
  double momentum = 0.99;             ///< batch norm: moving average momentum
  double epsilon = 1e-3;              ///< batch norm: variance epsilon
  std::string activation = "linear";  ///< dense/conv/add/activation: linear or relu
  bool use_bias = true;               ///< dense
  /// Per-layer quantizer overrides, keyed by role: input, kernel, bias, output (dense);
  /// output (activation); input (quantize); input, exp_input, exp_output, inv_input, inv_output,
  /// output (softmax); input, input2, output (einsum). A present `output` key enables the dense
  /// layer's optional output quantizer.
  std::map<std::string, QuantizerSpec> quantizers;
  int line = 0;  ///< 1-based line in the config file (0 when unknown), for error messages
};

/// The primitive layers an `attention` block stands for (multi-head attention, no masks):
///   <name>_in: a quantize layer, when the block reads the model input;
///   <name>_q, <name>_k, <name>_v: per-particle dense projections to num_heads * key_dim
///     (values: value_dim) features; no bias on K (it cancels in the softmax);
///   <name>_qh, <name>_kh, <name>_vh: reshapes to [P, heads, dim];
///   <name>_scores: einsum qhd,khd->hqk (products of two activations, not re-quantized);
///   <name>_softmax: the table softmax over the keys, input_scale 1 / sqrt(key_dim);
///   <name>_context: einsum hqk,khv->qhv; <name>_merge: reshape to [P, heads * value_dim];
///   <name>: the output dense projection to `units` features (0: as many as the query has;
///   units_from names the query's source).
/// A `linformer_attention` block adds <name>_kp and <name>_vp after the key and value reshapes:
/// einsum_dense phd,pj->jhd layers that project the P keys and values to projected_length rows.
/// `previous`: the layer before the block (its default input; "input" for the first layer).
std::vector<LayerSpec> expand_attention(const LayerSpec& block, const std::string& previous);

/// The primitive layers a `lut_dense` block (HGQ-LUT: y_o = act(sum_i T_io(x_i)), one learned
/// table per connection) stands for, on a flat input [I]:
///   <name>_in: a quantize layer, when the block reads the model input;
///   <name>_col: reshape to [I, 1]; <name>_fanout: concatenate of `units` copies, [I, units];
///   <name>_tables: learned_lut on [I, units] (the block's input_quantizer per connection, its
///     table_quantizer as the tables' output quantizer; hidden, hidden_layers, max_table_bits);
///   <name>_sum: global_sum_pool over the I inputs, [units];
///   <name>: an activation layer (the block's activation and output_quantizer).
std::vector<LayerSpec> expand_lut_dense(const LayerSpec& block, const std::string& previous);

/// The `model:` section.
struct ModelSpec {
  std::vector<int64_t> input_shape;  ///< per-sample shape, batch excluded
  /// Defaults by place: weight, datalane (activations and inputs), bias.
  std::map<std::string, QuantizerSpec> defaults;
  std::vector<LayerSpec> layers;
  /// The blocks (attention) as written, which `layers` holds expanded; the YAML writer writes
  /// them back in place of their layers.
  std::vector<LayerSpec> blocks;
};

/// Where one split of the data comes from.
struct SplitSource {
  std::string file;      ///< path (relative paths are resolved against the config's folder)
  std::string features;  ///< HDF5 data set of the features (hdf5 format)
  std::string labels;    ///< HDF5 data set of the labels (hdf5 format)
  /// HDF5 data set of precomputed teacher outputs (hgqt distill-targets), one row per sample;
  /// used by train.distillation when it names no teacher.
  std::string teacher;
  bool present() const { return !file.empty(); }
};

/// The `data:` section.
struct DataSpec {
  std::string format = "hdf5";  ///< hdf5, jet_csv, jet_hdf5
  SplitSource train;
  SplitSource validation;         ///< optional separate validation file
  SplitSource test;               ///< optional separate test file
  double validation_split = 0.1;  ///< used when no validation file is given
  double test_split = 0.0;        ///< carve a test set out of train (jet recipe: 0.2)
  bool standardize = false;       ///< fit mean/std on train, store with the run
  uint64_t split_seed = 42;
  std::vector<std::string> feature_names;  ///< jet formats: columns to use (default: the 16)
  /// Class labels kept in the train and validation splits (empty: every class). The test split
  /// is never filtered: with train.target input, its other classes are the anomalies.
  std::vector<int64_t> classes;
  /// Labels counted as anomalies (positives) in the test ROC AUC of an autoencoder run; empty:
  /// every test label not in `classes`. Only allowed with `classes`; disjoint from it.
  std::vector<int64_t> anomaly_classes;
};

/// A point of a piecewise beta schedule: at `epoch`, beta = `value`.
struct BetaPoint {
  double epoch = 0;
  double value = 0;
};

/// `kind: pid`: a PID controller on log10 EBOPs that drives the EBOPs to `target_ebops`
/// (train::BetaPID has the control law).
struct BetaPIDSpec {
  double target_ebops = 0;  ///< > 0, required
  double init = 1e-6;       ///< beta during warmup, and the controller's first output
  /// Gains on log10(EBOPs / target) (i > 0); the defaults suit interval_steps 10 on the
  /// Fashion-MNIST MLP (EBOPs follow beta with a lag of epochs; a larger i overshoots).
  double p = 2.0, i = 0.1, d = 0.0;
  int64_t warmup_epochs = 1;  ///< epochs trained at `init` before the controller engages
  /// Epochs over which the controller's target moves from the EBOPs it found when it engaged
  /// down to target_ebops (geometrically), so that the model shrinks no faster than training
  /// recovers; 0: the target from the start. -1 (unset, written nowhere): the trainer takes a
  /// quarter of train.epochs (result.json records it).
  double ramp_epochs = -1;
  int64_t interval_steps = 0;    ///< 0: one update per epoch; n: one every n steps (mean EBOPs)
  double min = 0.0, max = 1e-2;  ///< bounds of beta (min <= init <= max)
};

/// The beta (EBOPs weight) schedule.
struct BetaSchedule {
  std::string kind = "constant";  ///< constant, linear, log, pid
  double value = 0.0;             ///< constant
  std::vector<BetaPoint> points;  ///< linear/log: interpolated per epoch, held after the last
  BetaPIDSpec pid;                ///< pid
};

/// `train.early_stopping`: stop when the monitored validation figure has not improved for
/// `patience` (counted) epochs.
struct EarlyStoppingSpec {
  bool enabled = false;  ///< true when the key is given
  int64_t patience = 5;  ///< counted epochs without improvement before stopping
  double min_delta = 0;  ///< an improvement must beat the best by more than this
  std::string monitor;   ///< val_accuracy | val_loss (default by train.loss)
  /// > 0: only epochs whose EBOPs are below this count (improve or use up patience).
  std::optional<double> ebops_below;
};

/// `train.distillation`: knowledge distillation from a teacher.
/// Loss = alpha * L(true labels) + (1 - alpha) * L_distill(student, teacher).
struct DistillationSpec {
  bool enabled = false;  ///< true when the key is given
  /// A TorchScript file, an hgqt checkpoint or an hgqt run directory (its best.pt); relative to
  /// the config's folder. Empty: the teacher outputs precomputed in the data (data.*.teacher).
  std::string teacher;
  double alpha = 0.5;        ///< weight of the true-label loss, in [0, 1]
  double temperature = 1.0;  ///< kl: softmax temperature T (the loss is multiplied by T^2)
  std::string loss;          ///< kl | mse | huber (default: kl for cross_entropy, else mse)
  double huber_delta = 1.0;  ///< huber: where the loss turns from quadratic to linear
  /// output: match the teacher's outputs; reconstruction_error: regress the teacher
  /// autoencoder's per-sample reconstruction MSE (an anomaly score; one output, alpha 0).
  std::string target = "output";
  /// How the teacher's outputs are read for kl: logits | probabilities. An hgqt teacher that
  /// ends in a softmax layer is always read as probabilities.
  std::string teacher_outputs = "logits";
};

/// The `train:` section.
struct TrainSpec {
  int64_t epochs = 10;
  int64_t batch_size = 256;
  std::string optimizer = "adam";  ///< adam, sgd
  double lr = 1e-3;
  double momentum = 0.9;  ///< sgd
  double weight_decay = 0.0;
  std::string lr_schedule = "cosine";  ///< cosine, constant, step, cosine_restarts
  double min_lr = 0.0;                 ///< floor of cosine, cosine_restarts and step
  int64_t lr_step_epochs = 10;         ///< step: multiply the lr by lr_gamma every this many epochs
  double lr_gamma = 0.1;               ///< step: factor in (0, 1]
  int64_t lr_restart_epochs = 10;      ///< cosine_restarts: length of the first period (epochs)
  double lr_restart_mult = 2.0;        ///< cosine_restarts: each period is this (>= 1) times longer
  uint64_t seed = 0;
  std::string loss = "cross_entropy";  ///< cross_entropy, mse
  /// labels: fit the data set's labels; input: fit the (flattened) input itself, an autoencoder
  /// (needs loss mse, the default then, and a model whose output size equals its input size).
  std::string target = "labels";
  BetaSchedule beta;
  double gamma = 0.0;           ///< L1 weight on bit parameters
  int64_t threads = 0;          ///< 0: leave LibTorch's default
  std::string device = "auto";  ///< auto, cpu, cuda
  EarlyStoppingSpec early_stopping;
  DistillationSpec distillation;
};

/// A whole run configuration.
struct RunConfig {
  std::string name = "run";
  std::string source_path;  ///< the file it was read from ("" when built in code)
  ModelSpec model;
  DataSpec data;
  TrainSpec train;
};

/// Reads and validates a config file; `overrides` are "dotted.key=value" strings applied first.
/// Throws ConfigError naming file, line, key path and what was expected.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});

/// Parses a config from YAML text; `origin` names it in errors. `source_path` is left empty
/// (load_run_config sets it).
RunConfig parse_run_config(const std::string& yaml_text, const std::string& origin,
                           const std::vector<std::string>& overrides = {});

/// Emits the fully resolved config (every default written out) as YAML text.
std::string to_yaml(const RunConfig& config);

/// Emits just the model section (used inside checkpoints to rebuild the model).
std::string model_to_yaml(const ModelSpec& model);
/// Parses a model section emitted by model_to_yaml.
ModelSpec parse_model_yaml(const std::string& yaml_text, const std::string& origin);

/// The learning rate of optimizer step `step` (0-based, counted over the whole run) with
/// `steps_per_epoch` steps per epoch; the trainer sets it before every step.
/// cosine: min_lr + (lr - min_lr) (1 + cos(pi step / total)) / 2, total = steps_per_epoch * epochs
///   (lr when total <= 1); constant: lr; step: max(min_lr, lr * lr_gamma^floor(e / lr_step_epochs))
///   with e the whole epoch of the step; cosine_restarts: the cosine over periods of
///   lr_restart_epochs, lr_restart_epochs * lr_restart_mult, ... epochs (fractional epoch
///   step / steps_per_epoch), restarting at lr at the start of each period.
double lr_at(const TrainSpec& train, int64_t step, int64_t steps_per_epoch);

/// beta at a (fractional) epoch (kind pid: its init; the trainer runs the controller).
double beta_at(const BetaSchedule& schedule, double epoch);

}  // namespace hgqt::config
