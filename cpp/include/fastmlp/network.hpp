// Network: owns every buffer of a multilayer perceptron made of layers.
//
// A network is a list of layers (layers.hpp: dense, activation, dropout, batch
// and layer normalization, residual blocks, an embedding), compiled into a flat
// list of ops over values (the tensors between them; value 0 the input). The
// shorthand of a list of sizes builds Dense, Activation, (Dropout), Dense, ...:
// layer l computes Z_l = A_{l-1} · W_l + b_l and A_l = f(Z_l), with W_l of
// shape (n_in, n_out) row-major (scikit-learn's coefs_ layout). All parameters
// live in one contiguous buffer (op after op: layers.hpp's PARAMETER LAYOUT; a
// dense stack: W_0, b_0, W_1, b_1, ...), all gradients in a second buffer of
// the same layout, so an optimizer step is one loop and an allreduce is one
// call; running statistics in a third. Workspaces are allocated once per batch
// size and reused.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fastmlp/activation.hpp"
#include "fastmlp/dropout.hpp"
#include "fastmlp/gemm.hpp"
#include "fastmlp/layers.hpp"
#include "fastmlp/loss.hpp"
#include "fastmlp/parallel.hpp"
#include "fastmlp/rng.hpp"
#include "fastmlp/tensor.hpp"
#include "fastmlp/weight_packs.hpp"

namespace fastmlp {

// A CSR matrix (scipy's layout, int64 indices, indptr[0] = 0) read in place:
// row r holds data[indptr[r] .. indptr[r+1]) at columns indices[...].
template <class T>
struct CsrView {
  const T* data = nullptr;
  const std::int64_t* indices = nullptr;
  const std::int64_t* indptr = nullptr;
  Index rows = 0, cols = 0;
};

// The input of a forward pass: `rows` rows of a dense row-major array, or rows
// [begin, begin + rows) of a CSR matrix (the first layer then multiplies
// sparse × dense and X is never densified).
template <class T>
struct Input {
  const T* dense = nullptr;
  const CsrView<T>* csr = nullptr;
  Index begin = 0;
};

// glorot: W, b ~ U(−s, s), s = √(c / (n_in + n_out)), c the hidden
//         activation's glorot_factor (scikit-learn's bounds: 2 for logistic,
//         6 otherwise);
// he:     W ~ U(−s, s), s = √(c / n_in), c the hidden activation's he_factor
//         (6; selu 3, LeCun's variance), b = 0.
enum class Init { Glorot, He };
struct InitInfo {
  Init value;
  const char* name;
};
inline constexpr InitInfo kInits[] = {{Init::Glorot, "glorot"}, {Init::He, "he"}};
Init parse_init(const std::string& name);  // a name of kInits; throws std::invalid_argument

// Throws std::length_error (Python: ValueError) when `bytes` exceed the
// machine's physical memory: such a request could only fail or, with the
// kernel's overcommit, end in an OOM kill when the memory is touched.
void check_fits_in_memory(double bytes, const char* what);

// One op of a compiled network (network.cpp: compile). A Residual is
// Fork (y = x, kept for the Add), its layers, Add (y = f(x) + x).
enum class OpKind { Dense, Activation, Dropout, BatchNorm, LayerNorm, Embedding, Fork, Add };
struct Op {
  OpKind kind = OpKind::Dense;
  int in = 0, out = 0;             // values
  Index width_in = 0, width = 0;   // of the input and the output
  Index param = 0, n_param = 0;    // its parameters' offset and count
  Index state = 0;                 // batch norm: its running statistics' offset
  Activation activation = Activation::Relu;  // activation; dense: the one its init factor follows
  double rate = 0.0, momentum = 0.0, eps = 0.0;
  std::uint32_t site = 0;          // dropout: the draws' site (dropout.hpp)
  int partner = -1;                // fork: its Add's output value; add: the skip value
  bool fused = false;              // activation: run in the preceding dense's epilogue
  std::vector<EmbeddingColumn> columns;            // embedding: each output column's source
  std::vector<Index> code_columns, cardinalities;  // embedding
};

// What one thread needs for a forward/backward pass over its slice of a
// batch: the gathered rows, each value's data and gradient (buffers shared
// where an op works in place: network.cpp's plan_buffers), and each
// normalization's statistics.
template <class T>
struct Workspace {
  Index rows = 0;
  Matrix<T> x, y;                      // the slice's rows, when gathered or perturbed (x: dense X only)
  Vector<T> w;                         // their sample weights
  std::vector<T> csr_data;             // the slice's rows of a sparse X, gathered
  std::vector<std::int64_t> csr_indices, csr_indptr;
  CsrView<T> csr_view;                 // ... and viewed
  std::vector<Matrix<T>> data, grad;   // buffers, rows × width
  std::vector<int> value_data, value_grad;  // per value: its buffers (-1: the input X / none)
  std::vector<double> rates;           // the dropout rates the buffers were planned for
  Matrix<T> out;                       // the output activation (the loss's A)
  std::vector<std::vector<double>> stats, sums;  // per op: normalization statistics and backward sums
};

// The regularizers that act during training only (inference and objective()
// never apply them):
//   dropout[l]   inverted dropout of layer l's input: l = 0 the network's
//                inputs, l >= 1 hidden layer l's output; each in [0, 1)
//   input_noise  σ of Gaussian noise added to the inputs (before dropout)
//   max_norm     > 0: after every update, each hidden unit's incoming weights
//                w (a column of W_l, l < L − 1) are scaled to ‖w‖₂ <= max_norm
// (dropout.hpp has the draws' formulas.)
struct TrainingNoise {
  std::vector<double> dropout;
  double input_noise = 0.0;
  double max_norm = 0.0;
  bool perturbs() const;  // dropout or input noise anywhere
  bool perturbs_inputs() const { return input_noise > 0.0 || (!dropout.empty() && dropout[0] > 0.0); }
  void check(Index n_layers) const;  // throws std::invalid_argument
};

template <class T>
class Network {
 public:
  // The shorthand: layer_sizes [n_inputs, hidden..., n_outputs]; hidden: one
  // activation for every hidden layer, or one per hidden layer.
  Network(std::vector<Index> layer_sizes, std::vector<Activation> hidden, Activation output, double slope,
          std::uint64_t seed, Init init);
  Network(std::vector<Index> layer_sizes, Activation hidden, Activation output, double slope, std::uint64_t seed,
          Init init)
      : Network(std::move(layer_sizes), std::vector<Activation>{hidden}, output, slope, seed, init) {}
  // A list of layers (layers.hpp) on n_inputs inputs; checked (std::invalid_argument).
  Network(Index n_inputs, std::vector<LayerSpec> layers, Activation output, double slope, std::uint64_t seed,
          Init init);
  ~Network();

  // [n_inputs, each dense layer's units...] (the shorthand's layer_sizes).
  const std::vector<Index>& layer_sizes() const { return sizes_; }
  // The dense layers' count (the shorthand's layers).
  Index n_layers() const { return Index(dense_.size()); }
  Index n_inputs() const { return n_inputs_; }
  Index n_outputs() const { return value_width_.back(); }
  Index n_params() const { return params_.size(); }
  Index n_state() const { return state_.size(); }
  // Built from layer_sizes (true) or from a list of layers.
  bool shorthand() const { return shorthand_; }
  const std::vector<LayerSpec>& layers() const { return layers_; }
  const std::vector<Op>& ops() const { return ops_; }
  // Any batch normalization: a training pass needs the whole batch (one
  // shared pass, never row slices) and at least 2 rows.
  bool needs_whole_batch() const { return whole_batch_; }
  // The shorthand's hidden activations (one per hidden layer; for a network
  // without hidden layers, the one its Glorot bound uses).
  Activation hidden_activation(Index l) const { return hidden_[std::size_t(l)]; }
  const std::vector<Activation>& hidden_activations() const { return hidden_; }
  Activation output_activation() const { return output_; }
  T slope() const { return slope_; }

  T* params() { return params_.data(); }
  const T* params() const { return params_.data(); }
  T* grads() { return grads_.data(); }
  const T* grads() const { return grads_.data(); }
  T* state() { return state_.data(); }
  const T* state() const { return state_.data(); }
  // Dense layer l's W (fan_in × fan_out) and b.
  Index weight_offset(Index layer) const { return ops_[dense_[std::size_t(layer)]].param; }
  Index bias_offset(Index layer) const {
    const Op& op = ops_[dense_[std::size_t(layer)]];
    return op.param + op.width_in * op.width;
  }
  Index fan_in(Index layer) const { return ops_[dense_[std::size_t(layer)]].width_in; }
  Index fan_out(Index layer) const { return ops_[dense_[std::size_t(layer)]].width; }
  // [begin, end) ranges of the parameters that L2/L1 penalize: dense W and
  // embedding tables (not biases, not normalization's γ, β).
  const std::vector<Range>& penalized() const { return penalized_; }

  // Draws new parameters and state; reseeds the shuffling generator from the
  // same seed and restarts the step count.
  void initialize(std::uint64_t seed, Init init);
  Rng& rng() { return rng_; }
  std::uint64_t seed() const { return seed_; }
  // Training steps taken since initialize(): the `step` of the dropout and
  // noise draws (dropout.hpp).
  std::uint64_t steps() const { return steps_; }
  void set_steps(std::uint64_t steps) { steps_ = steps; }
  // The precision of the matrix products (gemm.hpp): Full, or BF16 (float
  // networks only: operands rounded to bf16, float32 accumulation; the
  // parameters, gradients, optimizer state, biases, activations and loss stay
  // float32). Throws std::invalid_argument for BF16 on a double network; the
  // caller holds busy().
  gemm::Precision precision() const { return precision_; }
  void set_precision(gemm::Precision precision);
  const TrainingNoise& noise() const { return noise_; }
  // Checked; the caller holds busy(). noise.dropout (one rate per dense
  // layer's input) is the shorthand's: a network of layers takes Dropout layers.
  void set_noise(TrainingNoise noise);
  // A training step draws something: input noise, or a dropout rate > 0.
  bool perturbs() const;
  // Scales each hidden unit's incoming weights to norm <= noise().max_norm,
  // on thread t of a team (each its own columns).
  void apply_max_norm(int t, int team);
  // Throws std::invalid_argument unless every embedding code column of the
  // rows x (rows × n_inputs) holds integers in range.
  void check_codes(const T* x, Index rows) const;

  // out (n, n_outputs) = the network's output for x (n, n_inputs), dense or
  // sparse, in evaluation mode (dropout off, batch normalization's running
  // statistics). Reads the parameters only: safe to call from several threads.
  void forward(const T* x, Index n, T* out) const;
  void forward(const CsrView<T>& x, T* out) const;

  // Forward (training mode: batch statistics) and backward over `rows` rows
  // of x (y: their targets) into the gradient buffer g (params' layout),
  // weighted and normalized by `scale` (loss.hpp); returns this thread's share
  // of the batch's loss. Reads the parameters, writes ws and g only (and
  // `running`, the state buffer, when given: batch normalization's running
  // statistics, a training step's). Run by thread t of a team of `team`
  // threads that share the pass: each computes its own columns of every
  // product and its own rows of the loss, with a barrier wherever a stage
  // reads what others wrote (team = 1: the whole pass on this thread).
  //
  // With `draw` (a training step's key and the position in the batch of
  // row 0), noise() and the dropout layers perturb the pass (dropout.hpp),
  // the same masks in the backward pass.
  // `scratch`: the calling thread's packing scratch (step_scratch(t)).
  double forward_backward(const Input<T>& x, const T* y, Index rows, const LossScale<T>& scale, Loss loss,
                          Workspace<T>& ws, T* g, gemm::Scratch* scratch, int t = 0, int team = 1,
                          const DrawKey* draw = nullptr, T* running = nullptr) const;

  // How a batch of `rows` rows is split across threads (parallel.hpp:
  // plan_step; one shared pass where needs_whole_batch()), with the slices'
  // workspaces and gradient buffers sized; allocates here only. A sparse X
  // (dense_x false) reserves no dense rows.
  parallel::StepPlan prepare_step(Index rows, bool dense_x = true);
  Workspace<T>& slice_workspace(int k) { return slices_[k]; }
  // Slice k's gradient buffer: grads() for k = 0.
  T* slice_grads(int k) { return k == 0 ? grads_.data() : slice_grads_[k - 1].data(); }
  // Thread t's packing scratch for the step's products (sized by prepare_step).
  gemm::Scratch* step_scratch(int t) { return &step_scratch_[std::size_t(t)]; }

  // Held by whoever writes the parameters, gradients or workspaces.
  std::mutex& busy() const { return busy_; }
  // The visiting order of the current epoch, reused between epochs.
  std::vector<std::int64_t>& epoch_order() { return order_; }

 private:
  struct ForwardContext;
  void compile(std::vector<LayerSpec> layers);
  void check_size(double count, double state) const;
  int add_ops(const std::vector<LayerSpec>& layers, int in, Index& param, Index& state, int& dense_seen,
              int& dropouts_since_dense, bool top);
  void plan_eval_slots();
  void reserve_workspace(Workspace<T>& ws, Index rows, bool dense_x) const;
  Index widest() const;
  // Dense op `op` (the first op: X dense or sparse) over columns c, then
  // after(z, ld, row0, rows, col0, cols) on each finished block (packed: its
  // W packed once, or null).
  template <class After>
  void dense(const Op& op, const Input<T>& x, const T* in, Index rows, T* z, Range c, gemm::Scratch* scratch,
             After&& after, const gemm::PackedB* packed = nullptr) const;
  // packs: every dense layer's W packed once (float), or null.
  void forward_rows(const Input<T>& x, Index rows, T* out, T* const* slots, gemm::Scratch* scratch,
                    const WeightPacks* packs) const;
  template <class RowsOf>
  void forward_chunked(Index n, T* out, RowsOf&& rows_of) const;
  std::unique_ptr<ForwardContext> take_context() const;
  void give_back(std::unique_ptr<ForwardContext> context) const;

  Index n_inputs_ = 0;
  bool shorthand_ = false, whole_batch_ = false;
  std::vector<LayerSpec> layers_;
  std::vector<Op> ops_;
  std::vector<Index> value_width_;   // per value
  std::vector<int> eval_slot_;       // per value: forward()'s buffer (-1: X, -2: out)
  int n_eval_slots_ = 0;
  std::vector<std::size_t> dense_;   // the dense ops, in order
  std::vector<Range> penalized_;
  std::vector<Index> sizes_;
  std::vector<Activation> hidden_;
  Activation output_;
  T slope_;
  std::uint64_t seed_ = 0, steps_ = 0;
  TrainingNoise noise_;
  gemm::Precision precision_ = gemm::Precision::Full;
  Vector<T> params_, grads_, state_;
  Rng rng_;
  std::vector<Workspace<T>> slices_;
  std::vector<Vector<T>> slice_grads_;
  std::vector<gemm::Scratch> step_scratch_;  // one per thread of a step
  // forward()'s buffers, kept between calls: each call takes one (or makes one).
  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<ForwardContext>> pool_;
  PackCache packs_;  // forward()'s weights, packed once (float)
  std::vector<std::int64_t> order_;
  mutable std::mutex busy_;
};

}  // namespace fastmlp
