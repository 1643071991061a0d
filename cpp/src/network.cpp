#include "fastmlp/network.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <stdexcept>

#include "fastmlp/dense.hpp"
#include "fastmlp/gemm.hpp"
#include "fastmlp/parallel.hpp"
#include "fastmlp/sparse.hpp"

namespace fastmlp {

namespace {

// Rows of one inference chunk: large enough for an efficient GEMM, small
// enough for the chunk's input rows and activations to stay in a core's L2.
// Measured (784-256-128-10, batch 1024, AMD EPYC, samples/s on 1 / 2 threads):
// 64 rows 322k / 558k, 128 rows 337k / 613k, 160 rows 331k / 629k,
// 192 rows 347k / 429k, 256 rows 274k / 364k.
// With the weights packed once (weight_packs.hpp; AMD EPYC Zen 4, 2 shared
// and busy cores, CPU-time rates of 1 and 2 threads): 64 to 512 rows all
// within the noise (155k-178k samples/s per core); 128 kept.
constexpr Index kForwardChunk = 128;
// ... and fewer rows through very wide layers: a chunk's buffer holds at most
// this many values, so inference memory stays bounded whatever the width.
constexpr Index kForwardBufferValues = Index(1) << 22;

// Read once: sysconf(_SC_PHYS_PAGES) is a sysinfo() system call, about a
// microsecond, and every forward() call checks its output against it.
double physical_memory_bytes() {
  static const double bytes = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? double(pages) * double(page) : 0.0;
  }();
  return bytes;
}

}  // namespace

void check_fits_in_memory(double bytes, const char* what) {
  const double have = physical_memory_bytes();
  if (bytes > 9.0e18 || (have > 0.0 && bytes > have))
    throw std::length_error(std::string(what) + " needs " + std::to_string(bytes / 1073741824.0) +
                            " GiB; this machine has " + std::to_string(have / 1073741824.0) +
                            " GiB (use a smaller batch_size or narrower layers)");
}

bool TrainingNoise::perturbs() const {
  return input_noise > 0.0 || std::any_of(dropout.begin(), dropout.end(), [](double p) { return p > 0.0; });
}

void TrainingNoise::check(Index n_layers) const {
  if (!dropout.empty() && Index(dropout.size()) != n_layers)
    throw std::invalid_argument("dropout must have one rate per layer input (the inputs, then each hidden layer): " +
                                std::to_string(n_layers) + " values, got " + std::to_string(dropout.size()));
  for (std::size_t l = 0; l < dropout.size(); ++l)
    if (!(dropout[l] >= 0.0 && dropout[l] < 1.0))
      throw std::invalid_argument("dropout[" + std::to_string(l) + "] must be in [0, 1), got " +
                                  std::to_string(dropout[l]));
  if (!(input_noise >= 0.0) || !std::isfinite(input_noise))
    throw std::invalid_argument("input_noise must be a finite number >= 0, got " + std::to_string(input_noise));
  if (!(max_norm >= 0.0) || !std::isfinite(max_norm))
    throw std::invalid_argument("max_norm must be a finite number >= 0, got " + std::to_string(max_norm));
}

// --- Construction: a list of layers compiled into ops over values.

template <class T>
Network<T>::Network(std::vector<Index> layer_sizes, std::vector<Activation> hidden, Activation output, double slope,
                    std::uint64_t seed, Init init)
    : shorthand_(true), hidden_(std::move(hidden)), output_(output), slope_(T(slope)) {
  if (layer_sizes.size() < 2)
    throw std::invalid_argument("layer_sizes must have at least 2 entries (inputs and outputs), got " +
                                std::to_string(layer_sizes.size()));
  for (std::size_t l = 0; l < layer_sizes.size(); ++l)
    if (layer_sizes[l] < 1)
      throw std::invalid_argument("layer_sizes[" + std::to_string(l) + "] must be >= 1, got " +
                                  std::to_string(layer_sizes[l]));
  const std::size_t n_hidden = std::max<std::size_t>(layer_sizes.size() - 2, 1);
  if (hidden_.size() == 1) hidden_.resize(n_hidden, hidden_.front());
  if (hidden_.size() != n_hidden)
    throw std::invalid_argument("activation must be one name or one per hidden layer (" +
                                std::to_string(layer_sizes.size() - 2) + "), got " + std::to_string(hidden_.size()));
  for (Activation f : hidden_)
    if (!activation_info(f).hidden)
      throw std::invalid_argument(std::string("activation '") + activation_name(f) +
                                  "' is for the output layer only (output_activation)");
  if (!std::isfinite(slope) || slope < 0.0)
    throw std::invalid_argument("leaky_relu slope must be a finite number >= 0, got " + std::to_string(slope));
  // Dense, Activation, Dropout (rate 0 until set_noise), ..., Dense.
  std::vector<LayerSpec> layers;
  for (std::size_t l = 0; l + 1 < layer_sizes.size(); ++l) {
    LayerSpec dense;
    dense.units = layer_sizes[l + 1];
    layers.push_back(dense);
    if (l + 2 < layer_sizes.size()) {
      LayerSpec f, drop;
      f.kind = LayerKind::Activation;
      f.activation = hidden_[l];
      drop.kind = LayerKind::Dropout;
      layers.push_back(f);
      layers.push_back(drop);
    }
  }
  n_inputs_ = layer_sizes.front();
  compile(std::move(layers));
  // Each layer's Glorot factor follows its own hidden activation (the output layer: the last hidden one's).
  for (std::size_t l = 0; l < dense_.size(); ++l) ops_[dense_[l]].activation = hidden_[std::min(l, hidden_.size() - 1)];
  initialize(seed, init);
}

template <class T>
Network<T>::Network(Index n_inputs, std::vector<LayerSpec> layers, Activation output, double slope, std::uint64_t seed,
                    Init init)
    : n_inputs_(n_inputs), output_(output), slope_(T(slope)) {
  if (n_inputs < 1) throw std::invalid_argument("input_size must be >= 1, got " + std::to_string(n_inputs));
  if (!std::isfinite(slope) || slope < 0.0)
    throw std::invalid_argument("leaky_relu slope must be a finite number >= 0, got " + std::to_string(slope));
  compile(std::move(layers));
  for (const Op& op : ops_)
    if (op.kind == OpKind::Activation) hidden_.push_back(op.activation);
  if (hidden_.empty()) hidden_.push_back(Activation::Relu);
  initialize(seed, init);
}

namespace {

std::string where(const std::string& path) { return path.empty() ? "layers" : path; }

}  // namespace

// Appends the ops of `layers` reading value `in`; returns the value they
// output. param/state: the next free offsets; dense_seen and
// dropouts_since_dense: the dropout sites' counters (layers.hpp).
template <class T>
int Network<T>::add_ops(const std::vector<LayerSpec>& layers, int in, Index& param, Index& state, int& dense_seen,
                        int& dropouts_since_dense, bool top) {
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& spec = layers[i];
    const std::string at = std::string("layers[") + std::to_string(i) + "] (" + layer_kind_name(spec.kind) + ")";
    Op op;
    op.in = in;
    op.width_in = op.width = value_width_[std::size_t(in)];
    switch (spec.kind) {
      case LayerKind::Dense:
        if (spec.units < 1) throw std::invalid_argument(at + ": units must be >= 1, got " + std::to_string(spec.units));
        op.kind = OpKind::Dense;
        check_size(double(param) + double(op.width_in) * double(spec.units) + double(spec.units), double(state));
        op.width = spec.units;
        op.n_param = op.width_in * op.width + op.width;
        ++dense_seen;
        dropouts_since_dense = 0;
        break;
      case LayerKind::Activation:
        if (!activation_info(spec.activation).hidden)
          throw std::invalid_argument(at + ": activation '" + activation_name(spec.activation) +
                                      "' is for the output layer only (output_activation)");
        op.kind = OpKind::Activation;
        op.activation = spec.activation;
        break;
      case LayerKind::Dropout:
        if (!(spec.rate >= 0.0 && spec.rate < 1.0))
          throw std::invalid_argument(at + ": rate must be in [0, 1), got " + std::to_string(spec.rate));
        op.kind = OpKind::Dropout;
        op.rate = spec.rate;
        op.site = std::uint32_t(dense_seen) + 65536u * std::uint32_t(dropouts_since_dense++);
        break;
      case LayerKind::BatchNorm:
      case LayerKind::LayerNorm:
        if (!(spec.eps > 0.0) || !std::isfinite(spec.eps))
          throw std::invalid_argument(at + ": eps must be a finite number > 0, got " + std::to_string(spec.eps));
        if (spec.kind == LayerKind::BatchNorm && !(spec.momentum >= 0.0 && spec.momentum <= 1.0))
          throw std::invalid_argument(at + ": momentum must be in [0, 1], got " + std::to_string(spec.momentum));
        op.kind = spec.kind == LayerKind::BatchNorm ? OpKind::BatchNorm : OpKind::LayerNorm;
        op.eps = spec.eps;
        op.momentum = spec.momentum;
        check_size(double(param) + 2.0 * double(op.width), double(state) + 2.0 * double(op.width));
        op.n_param = 2 * op.width;
        if (op.kind == OpKind::BatchNorm) {
          op.state = state;
          state += 2 * op.width;
          whole_batch_ = true;
        }
        break;
      case LayerKind::Embedding: {
        if (!top || i != 0 || in != 0) throw std::invalid_argument(at + ": an embedding must be the first layer");
        const std::size_t k = spec.columns.size();
        if (k == 0 || spec.cardinalities.size() != k || spec.dims.size() != k)
          throw std::invalid_argument(at +
                                      ": columns, cardinalities and dims must be lists of the same length >= 1, "
                                      "got " +
                                      std::to_string(k) + ", " + std::to_string(spec.cardinalities.size()) + " and " +
                                      std::to_string(spec.dims.size()));
        std::vector<int> table_of(std::size_t(op.width_in), -1);
        for (std::size_t j = 0; j < k; ++j) {
          const Index col = spec.columns[j];
          if (col < 0 || col >= op.width_in)
            throw std::invalid_argument(at + ": columns[" + std::to_string(j) + "] must be a column of X (0 to " +
                                        std::to_string(op.width_in - 1) + "), got " + std::to_string(col));
          if (table_of[std::size_t(col)] >= 0)
            throw std::invalid_argument(at + ": column " + std::to_string(col) + " is listed twice");
          if (spec.cardinalities[j] < 1 || spec.dims[j] < 1)
            throw std::invalid_argument(at + ": cardinalities and dims must be >= 1, got " +
                                        std::to_string(spec.cardinalities[j]) + " and " + std::to_string(spec.dims[j]));
          table_of[std::size_t(col)] = int(j);
        }
        op.kind = OpKind::Embedding;
        op.code_columns = spec.columns;
        op.cardinalities = spec.cardinalities;
        for (Index col = 0; col < op.width_in; ++col)
          if (table_of[std::size_t(col)] < 0) op.columns.push_back({col, -1, 0, 0, 0});
        double tables = 0.0, width = double(op.width_in);
        for (std::size_t j = 0; j < k; ++j) {
          tables += double(spec.cardinalities[j]) * double(spec.dims[j]);
          width += double(spec.dims[j]) - 1.0;
        }
        check_size(double(param) + tables + width * 2.0, double(state));  // the tables, and a dense layer's least
        Index offset = 0;
        for (std::size_t j = 0; j < k; ++j) {
          for (Index d = 0; d < spec.dims[j]; ++d)
            op.columns.push_back({spec.columns[j], int(j), d, offset, spec.dims[j]});
          offset += spec.cardinalities[j] * spec.dims[j];
        }
        op.width = Index(op.columns.size());
        op.n_param = offset;
        break;
      }
      case LayerKind::Residual: {
        Op fork;
        fork.kind = OpKind::Fork;
        fork.in = in;
        fork.width_in = fork.width = op.width_in;
        fork.out = int(value_width_.size());
        value_width_.push_back(fork.width);
        const std::size_t fork_at = ops_.size();
        ops_.push_back(fork);
        const int f_out = add_ops(spec.layers, fork.out, param, state, dense_seen, dropouts_since_dense, false);
        if (value_width_[std::size_t(f_out)] != op.width_in)
          throw std::invalid_argument(at + ": its layers must output the width of its input (" +
                                      std::to_string(op.width_in) + "), got " +
                                      std::to_string(value_width_[std::size_t(f_out)]));
        op.kind = OpKind::Add;
        op.in = f_out;
        op.partner = in;
        op.out = int(value_width_.size());
        value_width_.push_back(op.width);
        ops_[fork_at].partner = op.out;
        ops_.push_back(op);
        in = op.out;
        continue;
      }
    }
    op.param = param;
    param += op.n_param;
    op.out = int(value_width_.size());
    value_width_.push_back(op.width);
    ops_.push_back(op);
    in = op.out;
  }
  return in;
}

// Throws std::length_error when `count` parameters (and `state` values) do not
// fit in the machine's memory; counted in floating point by add_ops, before
// any integer product of sizes can wrap.
template <class T>
void Network<T>::check_size(double count, double state) const {
  const double need = (2.0 * count + state) * sizeof(T), have = physical_memory_bytes();
  if (count > 9.0e18 || (have > 0.0 && need > have))
    throw std::length_error(std::string(shorthand_ ? "a network with layer_sizes of " : "a network of layers of ") +
                            std::to_string(count) + " parameters needs " + std::to_string(need / 1073741824.0) +
                            " GiB for parameters and gradients; this machine has " +
                            std::to_string(have / 1073741824.0) + " GiB");
}

template <class T>
void Network<T>::compile(std::vector<LayerSpec> layers) {
  value_width_.assign(1, n_inputs_);
  Index param = 0, state = 0;
  int dense_seen = 0, dropouts = 0;
  add_ops(layers, 0, param, state, dense_seen, dropouts, true);
  if (dense_seen == 0) throw std::invalid_argument(where("") + " must contain at least one Dense layer");
  layers_ = std::move(layers);
  sizes_.assign(1, n_inputs_);
  Activation before = Activation::Relu;  // the last activation seen
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    Op& op = ops_[i];
    if (op.kind == OpKind::Activation) before = op.activation;
    if (op.kind == OpKind::Dense) {
      dense_.push_back(i);
      sizes_.push_back(op.width);
      penalized_.push_back({op.param, op.param + op.width_in * op.width});
      // The init factor follows the activation after it (before the next dense), else the last one before it.
      op.activation = before;
      for (std::size_t j = i + 1; j < ops_.size() && ops_[j].kind != OpKind::Dense; ++j)
        if (ops_[j].kind == OpKind::Activation) {
          op.activation = ops_[j].activation;
          break;
        }
    }
    if (op.kind == OpKind::Embedding) penalized_.push_back({op.param, op.param + op.n_param});
    if (op.kind == OpKind::Activation && i > 0 && ops_[i - 1].kind == OpKind::Dense && ops_[i - 1].out == op.in)
      op.fused = true;
  }
  check_size(double(param), double(state));
  params_.resize(param);
  grads_.setZero(param);
  state_.setZero(state);
  plan_eval_slots();
}

// forward()'s buffers: each value a slot of the chunk's buffers (-1: X,
// -2: the output array). An op that can work in place does, unless its input
// is X or kept for a residual's Add (pinned).
template <class T>
void Network<T>::plan_eval_slots() {
  eval_slot_.assign(value_width_.size(), -1);
  std::vector<int> pinned;
  const auto fresh = [&](int avoid) {
    for (int s = 0;; ++s)
      if (s != avoid && std::find(pinned.begin(), pinned.end(), s) == pinned.end()) {
        n_eval_slots_ = std::max(n_eval_slots_, s + 1);
        return s;
      }
  };
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    const int in = eval_slot_[std::size_t(op.in)];
    const bool shared = in < 0 || std::find(pinned.begin(), pinned.end(), in) != pinned.end();
    int out = in;
    switch (op.kind) {
      case OpKind::Fork: pinned.push_back(in); break;
      case OpKind::Dropout: break;
      case OpKind::Activation:
        if (!op.fused && shared) out = fresh(in);
        break;
      case OpKind::BatchNorm:
      case OpKind::LayerNorm:
      case OpKind::Add:
        if (shared) out = fresh(in);
        break;
      case OpKind::Dense:
      case OpKind::Embedding: out = fresh(in); break;
    }
    if (op.kind == OpKind::Add) pinned.pop_back();
    const bool writes =
        op.kind != OpKind::Fork && op.kind != OpKind::Dropout && !(op.kind == OpKind::Activation && op.fused);
    if (i + 1 == ops_.size() && writes) out = -2;
    eval_slot_[std::size_t(op.out)] = out;
  }
}

template <class T>
Index Network<T>::widest() const {
  return *std::max_element(value_width_.begin(), value_width_.end());
}

template <class T>
void Network<T>::initialize(std::uint64_t seed, Init init) {
  rng_.reseed(seed);
  seed_ = seed;
  steps_ = 0;
  for (const Op& op : ops_) {
    T* p = params_.data() + op.param;
    switch (op.kind) {
      case OpKind::Dense: {
        const Index fan_in = op.width_in, fan_out = op.width;
        const ActivationInfo& f = activation_info(op.activation);
        const double bound = init == Init::He ? std::sqrt(f.he_factor / double(fan_in))
                                              : std::sqrt(f.glorot_factor / double(fan_in + fan_out));
        for (Index i = 0; i < fan_in * fan_out; ++i) p[i] = T(bound * (2.0 * rng_.uniform() - 1.0));
        T* b = p + fan_in * fan_out;
        for (Index i = 0; i < fan_out; ++i) b[i] = init == Init::He ? T(0) : T(bound * (2.0 * rng_.uniform() - 1.0));
        break;
      }
      case OpKind::BatchNorm:
      case OpKind::LayerNorm:
        std::fill(p, p + op.width, T(1));
        std::fill(p + op.width, p + 2 * op.width, T(0));
        if (op.kind == OpKind::BatchNorm) {
          std::fill(state_.data() + op.state, state_.data() + op.state + op.width, T(0));
          std::fill(state_.data() + op.state + op.width, state_.data() + op.state + 2 * op.width, T(1));
        }
        break;
      case OpKind::Embedding:  // U(−√3, √3): unit variance
        for (Index i = 0; i < op.n_param; ++i) p[i] = T(1.7320508075688772 * (2.0 * rng_.uniform() - 1.0));
        break;
      default: break;
    }
  }
}

template <class T>
void Network<T>::check_codes(const T* x, Index rows) const {
  if (ops_.front().kind != OpKind::Embedding) return;
  const Op& op = ops_.front();
  for (std::size_t j = 0; j < op.code_columns.size(); ++j) {
    const Index col = op.code_columns[j], card = op.cardinalities[j];
    for (Index i = 0; i < rows; ++i) {
      const T v = x[i * n_inputs_ + col];
      if (!(v >= T(0) && v < T(card) && v == std::floor(v)))
        throw std::invalid_argument("X[:, " + std::to_string(col) + "] holds an embedding's codes: integers in [0, " +
                                    std::to_string(card) + "), got " + std::to_string(double(v)) + " in row " +
                                    std::to_string(i));
    }
  }
}

// --- Forward (evaluation mode)

template <class T>
template <class After>
void Network<T>::dense(const Op& op, const Input<T>& x, const T* in, Index rows, T* z, Range c, gemm::Scratch* scratch,
                       After&& after, const gemm::PackedB* packed) const {
  const T* w = params_.data() + op.param;
  const T* b = w + op.width_in * op.width;
  if (op.in == 0 && x.csr != nullptr) {
    sparse_dense_forward(z, *x.csr, x.begin, w, b, rows, op.width_in, op.width, c);
    if (c.size() > 0) after(z, op.width, 0, rows, c.begin, c.size());
  } else {
    dense_forward(z, in, w, packed, b, rows, op.width_in, op.width, c, scratch, precision_, after);
  }
}

// Every op in evaluation mode over `rows` rows, each value in its slot
// (plan_eval_slots); a dense layer's activation fused into the product's
// epilogue (each block while it is in cache); the output activation (softmax
// needs whole rows) after the last op.
template <class T>
void Network<T>::forward_rows(const Input<T>& x, Index rows, T* out, T* const* slots, gemm::Scratch* scratch,
                              const WeightPacks* packs) const {
  const auto at = [&](int v) -> T* {
    const int s = eval_slot_[std::size_t(v)];
    return s == -2 ? out : s == -1 ? const_cast<T*>(x.dense) : slots[s];
  };
  const Range all_rows{0, rows};
  Index dense_seen = 0;  // the dense layers before op i
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    const Index w = op.width;
    const T* p = params_.data() + op.param;
    switch (op.kind) {
      case OpKind::Dense: {
        const Op* next = i + 1 < ops_.size() && ops_[i + 1].fused ? &ops_[i + 1] : nullptr;
        const auto activate = [&](T* o, Index ld, Index r0, Index n, Index c0, Index cols) {
          if (next != nullptr)
            activation_forward(next->activation, slope_, o + r0 * ld, o + r0 * ld, n, ld, Range{c0, c0 + cols});
        };
        dense(op, x, at(op.in), rows, at(op.out), Range{0, w}, scratch, activate,
              packs != nullptr ? &packs->layer(dense_seen) : nullptr);
        ++dense_seen;
        break;
      }
      case OpKind::Activation:
        if (!op.fused) activation_forward(op.activation, slope_, at(op.in), at(op.out), rows, w);
        break;
      case OpKind::BatchNorm:
        batch_norm_eval(at(op.in), at(op.out), rows, w, Range{0, w}, p, p + w, op.eps, state_.data() + op.state);
        break;
      case OpKind::LayerNorm:
        layer_norm_forward(at(op.in), at(op.out), rows, w, all_rows, p, p + w, op.eps, static_cast<double*>(nullptr));
        break;
      case OpKind::Embedding:
        embedding_forward(x.dense, n_inputs_, at(op.out), rows, w, Range{0, w}, op.columns, p);
        break;
      case OpKind::Add: {
        const T* f = at(op.in);
        const T* skip = at(op.partner);
        T* y = at(op.out);
        for (Index k = 0; k < rows * w; ++k) y[k] = f[k] + skip[k];
        break;
      }
      case OpKind::Fork:
      case OpKind::Dropout: break;
    }
  }
  const int last = ops_.back().out;
  if (eval_slot_[std::size_t(last)] != -2) std::copy_n(at(last), rows * n_outputs(), out);
  activation_forward(output_, slope_, out, out, rows, n_outputs());
}

// What one forward() call needs beyond the network: the slots' buffers and a
// packing scratch per thread. Kept in a pool between calls (forward is const
// and may run on several threads at once: each call takes its own).
template <class T>
struct Network<T>::ForwardContext {
  Index chunk = 0, width = 0;
  int per_thread = 0;
  std::vector<Matrix<T>> buffers;       // per_thread per thread, chunk × width
  std::vector<T*> slots;                // their data
  std::vector<gemm::Scratch> scratch;   // 1 per thread (float only)
  bool bf16_ready = false;              // the scratch holds the bf16 fallback's buffers too
  bool fits(int threads, int slots_per_thread, Index chunk_rows, Index widest, gemm::Precision precision) const {
    return slots_per_thread <= per_thread && std::size_t(threads * per_thread) <= buffers.size() &&
           chunk_rows <= chunk && widest <= width && (precision == gemm::Precision::Full || bf16_ready);
  }
  // depth: the widest value, inputs included (the products' n and k).
  void reserve(int threads, int slots_per_thread, Index chunk_rows, Index widest, Index depth,
               gemm::Precision precision) {
    chunk = std::max(chunk, chunk_rows);
    width = std::max(width, widest);
    per_thread = std::max(per_thread, slots_per_thread);
    buffers.assign(std::size_t(threads * per_thread), Matrix<T>(chunk, width));
    slots.resize(buffers.size());
    for (std::size_t k = 0; k < buffers.size(); ++k) slots[k] = buffers[k].data();
    scratch.resize(std::size_t(threads));
    if constexpr (std::is_same_v<T, float>)
      for (auto& s : scratch) s.reserve(chunk, depth, depth, precision);
    bf16_ready = bf16_ready || precision == gemm::Precision::BF16;
  }
};

template <class T>
std::unique_ptr<typename Network<T>::ForwardContext> Network<T>::take_context() const {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!pool_.empty()) {
      auto context = std::move(pool_.back());
      pool_.pop_back();
      return context;
    }
  }
  return std::make_unique<ForwardContext>();
}

template <class T>
void Network<T>::give_back(std::unique_ptr<ForwardContext> context) const {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  pool_.push_back(std::move(context));
}

template <class T>
Network<T>::~Network() = default;

// Runs the n rows in chunks of at most kForwardChunk rows through every layer,
// the chunks shared by the team (parallel.hpp);
// rows_of(r) is the Input at row r. A batch that one thread runs (n below
// 2 × kMinForwardRows: a single row, say) opens no parallel region.
template <class T>
template <class RowsOf>
void Network<T>::forward_chunked(Index n, T* out, RowsOf&& rows_of) const {
  if (n <= 0) return;
  const Index width = *std::max_element(value_width_.begin() + 1, value_width_.end());
  const int threads = parallel::threads_for(double(n), 0.0, n, parallel::kMinForwardRows);
  const Index chunk = std::max<Index>(1, std::min({n, kForwardChunk, kForwardBufferValues / width}));
  const int per_thread = std::max(n_eval_slots_, 1);
  std::unique_ptr<ForwardContext> context = take_context();
  if (!context->fits(threads, per_thread, chunk, width, precision_)) {
    check_fits_in_memory(double(per_thread) * double(threads) * double(chunk) * double(width) * sizeof(T),
                         "forward's activation buffers (threads x chunk rows x the widest layer, per buffer)");
    try {
      // Sized before the region, for as many threads as asked (a team is never
      // larger): nothing may allocate, or throw, inside it.
      context->reserve(threads, per_thread, chunk, width, widest(), precision_);
    } catch (...) {
      give_back(std::move(context));
      throw;
    }
  }
  // The weights packed once, for batches whose products use the panels (a
  // single row reads W in place: checking a pack would cost more than it
  // saves). Where they cannot be made, each product packs its own.
  std::shared_ptr<const WeightPacks> packs;
  if constexpr (std::is_same_v<T, float>) {
    if (n >= gemm::kMinPackedRows && 2.0 * double(n_params()) * sizeof(T) <= 0.25 * physical_memory_bytes()) try {
        packs = packs_.get(
            params_.data(), n_params(), n_layers(),
            [&](Index l) { return WeightPacks::Layer{weight_offset(l), fan_in(l), fan_out(l)}; }, precision_);
      } catch (const std::bad_alloc&) {
        packs = nullptr;
      }
  }
  ForwardContext& ctx = *context;
  // Chunks on one grid from row 0, dealt round-robin: a row's output depends
  // on its chunk only, never on the team that ran it (bit-identical for any
  // thread count, and when parallel.hpp's rule 5 shrinks the team).
  const Index chunks = (n + chunk - 1) / chunk;
  parallel::run(threads, [&](int t, int team) {
    for (Index q = t; q < chunks; q += team) {
      const Index r = q * chunk;
      forward_rows(rows_of(r), std::min(chunk, n - r), out + r * n_outputs(),
                   ctx.slots.data() + std::size_t(t * ctx.per_thread), &ctx.scratch[std::size_t(t)], packs.get());
    }
  });
  give_back(std::move(context));
}

template <class T>
void Network<T>::forward(const T* x, Index n, T* out) const {
  check_codes(x, n);
  forward_chunked(n, out, [&](Index r) { return Input<T>{x + r * n_inputs()}; });
}

// A sparse X goes to a dense first layer only (Eigen's sparse product, in T):
// a bf16 network refuses it rather than mix precisions.
template <class T>
static void check_sparse(const std::vector<Op>& ops, gemm::Precision precision) {
  if (precision == gemm::Precision::BF16)
    throw std::invalid_argument(
        "precision 'bf16' takes dense X only; a sparse X needs precision 'fp32' (or X.toarray())");
  bool ok = ops.front().kind == OpKind::Dense;
  for (std::size_t i = 1; i < ops.size(); ++i) ok = ok && ops[i].in != 0 && ops[i].partner != 0;
  if (!ok)
    throw std::invalid_argument(
        "a sparse X needs a network whose first layer is Dense (and reads X alone); "
        "densify X (X.toarray())");
}

template <class T>
void Network<T>::forward(const CsrView<T>& x, T* out) const {
  check_sparse<T>(ops_, precision_);
  forward_chunked(x.rows, out, [&](Index r) { return Input<T>{nullptr, &x, r}; });
}

// --- Training: forward (batch statistics) and backward

// Each value's buffers for a training pass: a dense layer, an activation, a
// dropout that draws, a normalization, an embedding and an add write a new
// value; a fork, and a dropout of rate 0, pass theirs on. The gradients: a
// value needs one when something before it has parameters; an op without
// parameters whose backward pass works in place (activation, dropout, norms,
// fork) shares its input's.
template <class T>
void Network<T>::reserve_workspace(Workspace<T>& ws, Index n, bool dense_x) const {
  const std::size_t V = value_width_.size();
  // Planned for these rows and these dropout rates already (checked without allocating: every step asks).
  bool ready = n <= ws.rows && ws.value_data.size() == V && (!dense_x || ws.x.rows() >= n);
  std::size_t k = 0;
  for (const Op& op : ops_)
    if (ready && op.kind == OpKind::Dropout) ready = k < ws.rates.size() && ws.rates[k++] == op.rate;
  if (ready && k == ws.rates.size()) return;
  std::vector<double> rates;
  for (const Op& op : ops_)
    if (op.kind == OpKind::Dropout) rates.push_back(op.rate);
  n = std::max(n, ws.rows);
  std::vector<bool> need(V, false);
  std::vector<int> data(V, -1), grad(V, -1);
  std::vector<Index> data_width, grad_width;
  for (const Op& op : ops_) {
    const std::size_t in = std::size_t(op.in), out = std::size_t(op.out);
    const bool passes = op.kind == OpKind::Fork || (op.kind == OpKind::Dropout && op.rate == 0.0);
    if (passes) {
      data[out] = data[in];
    } else {
      data[out] = int(data_width.size());
      data_width.push_back(op.width);
    }
    need[out] = need[in] || op.n_param > 0 || (op.kind == OpKind::Add && need[std::size_t(op.partner)]);
    if (!need[out]) continue;
    const bool in_place = op.kind == OpKind::Activation || op.kind == OpKind::Dropout || op.kind == OpKind::BatchNorm ||
                          op.kind == OpKind::LayerNorm || op.kind == OpKind::Fork;
    if (in_place && need[in]) {
      grad[out] = grad[in];
    } else {
      grad[out] = int(grad_width.size());
      grad_width.push_back(op.width);
    }
  }
  if (dense_x) ws.x.resize(n, n_inputs_);
  ws.y.resize(n, n_outputs());
  ws.w.resize(n);
  ws.out.resize(n, n_outputs());
  ws.data.resize(data_width.size());
  for (std::size_t k = 0; k < data_width.size(); ++k) ws.data[k].resize(n, data_width[k]);
  ws.grad.resize(grad_width.size());
  for (std::size_t k = 0; k < grad_width.size(); ++k) ws.grad[k].resize(n, grad_width[k]);
  ws.stats.resize(ops_.size());
  ws.sums.resize(ops_.size());
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    const bool norm = op.kind == OpKind::BatchNorm || op.kind == OpKind::LayerNorm;
    ws.stats[i].resize(!norm ? 0 : op.kind == OpKind::BatchNorm ? 2 * std::size_t(op.width) : 2 * std::size_t(n));
    ws.sums[i].resize(norm ? 2 * std::size_t(op.width) : 0);
  }
  ws.value_data = std::move(data);
  ws.value_grad = std::move(grad);
  ws.rates = std::move(rates);
  ws.rows = n;
}

template <class T>
double Network<T>::forward_backward(const Input<T>& x_in, const T* y, Index rows, const LossScale<T>& scale, Loss loss,
                                    Workspace<T>& ws, T* g, gemm::Scratch* scratch, int t, int team,
                                    const DrawKey* draw, T* running) const {
  // This thread's columns of a value of n units: the same share in the
  // forward and the backward pass, so a thread reads back the columns it
  // wrote itself; its rows for a stage that needs whole rows (layer norm, the
  // loss). A barrier goes before a stage that reads what others wrote since
  // the last one: whole rows after columns were written, or columns after rows.
  const auto mine = [&](Index n) { return parallel::part(n, t, team, parallel::kColumnAlign); };
  const Range my_rows = parallel::part(rows, t, team);
  // `written`: what this pass wrote since the last barrier (a set of kColumns, kRows).
  enum Part { kNone = 0, kColumns = 1, kRows = 2, kWhole = 3 };
  int written = kNone;
  const auto sync = [&](Part reads) {
    if ((reads == kWhole && written != kNone) || (reads == kColumns && (written & kRows)) ||
        (reads == kRows && (written & kColumns))) {
      parallel::barrier(team);
      written = kNone;
    }
  };
  Input<T> x = x_in;
  if (draw != nullptr && noise_.perturbs_inputs()) {  // X̃ into ws.x, each thread its rows (dense X only)
    const double p0 = noise_.dropout.empty() ? 0.0 : noise_.dropout[0];
    perturb_inputs(ws.x.data(), x.dense, my_rows.begin, my_rows.end, n_inputs_, noise_.input_noise, p0, *draw);
    x = Input<T>{ws.x.data()};
    written = kRows;
  }
  const auto data = [&](int v) -> T* {
    const int k = ws.value_data[std::size_t(v)];
    return k < 0 ? const_cast<T*>(x.dense) : ws.data[std::size_t(k)].data();
  };
  const auto grad = [&](int v) -> T* {
    const int k = ws.value_grad[std::size_t(v)];
    return k < 0 ? nullptr : ws.grad[std::size_t(k)].data();
  };
  const T* params = params_.data();
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    const Index w = op.width;
    const T* p = params + op.param;
    switch (op.kind) {
      case OpKind::Dense: {
        sync(kWhole);
        // A = f(Z) of each block of Z as the product finishes it, when an activation follows.
        const Op* next = i + 1 < ops_.size() && ops_[i + 1].fused ? &ops_[i + 1] : nullptr;
        T* a = next != nullptr ? data(next->out) : nullptr;
        const auto activate = [&](T* o, Index ld, Index r0, Index n, Index c0, Index cols) {
          if (next != nullptr)
            activation_forward(next->activation, slope_, o + r0 * ld, a + r0 * ld, n, ld, Range{c0, c0 + cols});
        };
        dense(op, x, data(op.in), rows, data(op.out), mine(w), scratch, activate);
        break;
      }
      case OpKind::Activation:
        if (op.fused) continue;
        sync(kColumns);
        activation_forward(op.activation, slope_, data(op.in), data(op.out), rows, w, mine(w));
        break;
      case OpKind::Dropout: {
        if (op.rate == 0.0) continue;
        sync(kColumns);
        const Range c = mine(w);
        if (draw != nullptr) {
          dropout_columns(data(op.out), data(op.in), rows, w, c, op.rate, op.site, *draw);
        } else {  // not a training step: the identity
          const T* src = data(op.in);
          T* dst = data(op.out);
          for (Index r = 0; r < rows; ++r) std::copy(src + r * w + c.begin, src + r * w + c.end, dst + r * w + c.begin);
        }
        break;
      }
      case OpKind::BatchNorm:
        sync(kColumns);
        batch_norm_forward(data(op.in), data(op.out), rows, w, mine(w), p, p + w, op.eps, ws.stats[i].data(),
                           running != nullptr ? running + op.state : nullptr, op.momentum);
        break;
      case OpKind::LayerNorm:
        sync(kRows);
        layer_norm_forward(data(op.in), data(op.out), rows, w, my_rows, p, p + w, op.eps, ws.stats[i].data());
        written |= kRows;
        continue;
      case OpKind::Embedding:
        sync(kWhole);
        embedding_forward(x.dense, n_inputs_, data(op.out), rows, w, mine(w), op.columns, p);
        break;
      case OpKind::Fork: continue;
      case OpKind::Add: {
        sync(kColumns);
        const Range c = mine(w);
        const T* f = data(op.in);
        const T* skip = data(op.partner);
        T* out = data(op.out);
        for (Index r = 0; r < rows; ++r)
          for (Index j = c.begin; j < c.end; ++j) out[r * w + j] = f[r * w + j] + skip[r * w + j];
        break;
      }
    }
    written |= kColumns;
  }
  // The loss needs whole rows of Z (softmax): each thread takes its rows.
  sync(kRows);
  const int last = ops_.back().out;
  const Index k = n_outputs();
  LossScale<T> part_scale = scale;
  if (scale.sample_weight != nullptr) part_scale.sample_weight += my_rows.begin;
  if (scale.total <= 0.0) part_scale.total = double(rows);
  const double value = my_rows.size() > 0
                           ? output_loss_grad(loss, output_, slope_, data(last) + my_rows.begin * k,
                                              y + my_rows.begin * k, ws.out.data() + my_rows.begin * k,
                                              grad(last) + my_rows.begin * k, my_rows.size(), k, part_scale)
                           : 0.0;
  written |= kRows;
  for (std::size_t i = ops_.size(); i-- > 0;) {
    const Op& op = ops_[i];
    T* dy = grad(op.out);
    if (dy == nullptr) continue;  // nothing before it learns
    T* dx = grad(op.in);          // null: the gradient of X (or of what only X feeds) is not needed
    const Index w = op.width;
    const T* p = params + op.param;
    switch (op.kind) {
      case OpKind::Dense: {
        sync(kWhole);
        const Range c_out = mine(w);
        T* gw = g + op.param;
        T* gb = gw + op.width_in * w;
        if (op.in == 0 && x.csr != nullptr) {
          sparse_dense_backward(gw, gb, dy, *x.csr, x.begin, rows, op.width_in, w, c_out);
        } else {
          dense_backward_weights(gw, gb, dy, data(op.in), rows, op.width_in, w, c_out, scratch, precision_);
        }
        if (dx == nullptr) continue;
        dense_backward_input(dx, dy, p, rows, op.width_in, w, mine(op.width_in), scratch, precision_);
        break;
      }
      case OpKind::Activation:
        if (dx == nullptr) continue;
        sync(kColumns);
        activation_backward(op.activation, slope_, dy, data(op.in), data(op.out), dx, rows, w, mine(w));
        break;
      case OpKind::Dropout:  // dL/dA = dL/dÃ · m / (1 − p), the forward pass's mask (in place)
        if (dx == nullptr || op.rate == 0.0 || draw == nullptr) continue;
        sync(kColumns);
        dropout_columns(dx, dy, rows, w, mine(w), op.rate, op.site, *draw);
        break;
      case OpKind::BatchNorm:
        sync(kColumns);
        batch_norm_backward(data(op.in), dy, dx, rows, w, mine(w), p, ws.stats[i].data(), g + op.param,
                            g + op.param + w, ws.sums[i].data());
        break;
      case OpKind::LayerNorm:
        sync(kColumns);
        layer_norm_backward_params(data(op.in), dy, rows, w, mine(w), ws.stats[i].data(), g + op.param,
                                   g + op.param + w, ws.sums[i].data());
        if (dx == nullptr) continue;
        parallel::barrier(team);  // the rows of dy are read whole: every thread's sums are done with them
        written = kNone;
        layer_norm_backward_input(data(op.in), dy, dx, rows, w, my_rows, p, ws.stats[i].data());
        written |= kRows;
        continue;
      case OpKind::Embedding:
        sync(kColumns);
        embedding_backward(x.dense, n_inputs_, dy, rows, w, mine(w), op.columns, op.cardinalities, g + op.param);
        break;
      case OpKind::Fork: {  // the input's gradient: through the block plus the skip's
        if (dx == nullptr) continue;
        sync(kColumns);
        const Range c = mine(w);
        const T* skip = grad(op.partner);
        for (Index r = 0; r < rows; ++r)
          for (Index j = c.begin; j < c.end; ++j) dx[r * w + j] += skip[r * w + j];
        break;
      }
      case OpKind::Add: {
        if (dx == nullptr || dx == dy) continue;
        sync(kColumns);
        const Range c = mine(w);
        for (Index r = 0; r < rows; ++r) std::copy(dy + r * w + c.begin, dy + r * w + c.end, dx + r * w + c.begin);
        break;
      }
    }
    written |= kColumns;
  }
  return value;
}

template <class T>
void Network<T>::set_precision(gemm::Precision precision) {
  if (precision == gemm::Precision::BF16 && !std::is_same_v<T, float>)
    throw std::invalid_argument("precision 'bf16' needs a float32 network (dtype float32); this one is float64");
  precision_ = precision;
}

template <class T>
void Network<T>::set_noise(TrainingNoise noise) {
  noise.check(n_layers());
  // An embedding's code columns are integers: noise would make them other numbers.
  if (ops_.front().kind == OpKind::Embedding && noise.input_noise > 0.0)
    throw std::invalid_argument(
        "input_noise perturbs every input column, an embedding's codes too: "
        "a network whose first layer is an Embedding takes input_noise 0");
  // The inputs' dropout draws at site 0, as a Dropout layer before the first dense layer would.
  if (!shorthand_ && std::any_of(noise.dropout.begin(), noise.dropout.end(), [](double p) { return p > 0.0; }))
    throw std::invalid_argument(
        "dropout (one rate per dense layer's input) is for a network of layer_sizes; "
        "a network of layers takes Dropout layers");
  if (noise.dropout.empty()) noise.dropout.assign(std::size_t(n_layers()), 0.0);
  if (shorthand_) {  // the Dropout after hidden layer l takes dropout[l + 1]
    std::size_t l = 1;
    for (Op& op : ops_)
      if (op.kind == OpKind::Dropout) op.rate = noise.dropout[l++];
  }
  noise_ = std::move(noise);
}

template <class T>
bool Network<T>::perturbs() const {
  return noise_.perturbs_inputs() || std::any_of(ops_.begin(), ops_.end(), [](const Op& op) {
           return op.kind == OpKind::Dropout && op.rate > 0.0;
         });
}

template <class T>
void Network<T>::apply_max_norm(int t, int team) {
  const double limit = noise_.max_norm;
  constexpr Index kBlock = 64;  // columns whose norms are summed in one pass over the rows
  for (Index l = 0; l + 1 < n_layers(); ++l) {
    const Index n_in = fan_in(l), n_out = fan_out(l);
    T* w = params_.data() + weight_offset(l);
    const Range c = parallel::part(n_out, t, team);
    for (Index j0 = c.begin; j0 < c.end; j0 += kBlock) {
      const Index j1 = std::min(c.end, j0 + kBlock);
      double squares[kBlock] = {};
      for (Index i = 0; i < n_in; ++i)
        for (Index j = j0; j < j1; ++j) squares[j - j0] += double(w[i * n_out + j]) * double(w[i * n_out + j]);
      T factor[kBlock];
      bool any = false;
      for (Index j = j0; j < j1; ++j) {
        const double norm = std::sqrt(squares[j - j0]);
        factor[j - j0] = norm > limit ? T(limit / norm) : T(1);
        any = any || norm > limit;
      }
      if (!any) continue;
      for (Index i = 0; i < n_in; ++i)
        for (Index j = j0; j < j1; ++j) w[i * n_out + j] *= factor[j - j0];
    }
  }
}

template <class T>
parallel::StepPlan Network<T>::prepare_step(Index rows, bool dense_x) {
  if (!dense_x) check_sparse<T>(ops_, precision_);
  if (whole_batch_ && rows < 2)
    throw std::invalid_argument("batch normalization needs at least 2 rows per training batch, got " +
                                std::to_string(rows));
  const Index width = *std::max_element(value_width_.begin() + 1, value_width_.end());
  const parallel::StepPlan plan = parallel::plan_step(rows, n_params(), width, sizeof(T), whole_batch_);
  const int slices = plan.slices;
  const Index per_slice = (rows + slices - 1) / slices;
  // Checked before anything is resized: a batch of many rows through wide
  // layers must fail cleanly here, not be killed by the kernel mid-epoch.
  double per_row = double(dense_x ? n_inputs() : 0) + 2.0 * double(n_outputs());
  for (std::size_t v = 1; v < value_width_.size(); ++v) per_row += 2.0 * double(value_width_[v]);  // data, gradient
  check_fits_in_memory(
      (double(slices) * double(per_slice) * per_row + double(slices - 1) * double(n_params())) * sizeof(T),
      "the training workspace (batch rows x (dense inputs + outputs + 2 x every layer's width))");
  if (slices_.size() < std::size_t(slices)) slices_.resize(slices);
  for (int k = 0; k < slices; ++k) reserve_workspace(slices_[k], per_slice, dense_x);
  if (slice_grads_.size() + 1 < std::size_t(slices)) slice_grads_.resize(slices - 1);
  for (int k = 1; k < slices; ++k)
    if (slice_grads_[k - 1].size() != n_params()) slice_grads_[k - 1].resize(n_params());
  if (step_scratch_.size() < std::size_t(plan.threads)) step_scratch_.resize(std::size_t(plan.threads));
  if constexpr (std::is_same_v<T, float>) {  // the step's products: m and k up to the rows or the widest layer
    const Index most = std::max(rows, widest());
    for (auto& s : step_scratch_) s.reserve(most, widest(), most, precision_);
  }
  return plan;
}

template class Network<float>;
template class Network<double>;

}  // namespace fastmlp
