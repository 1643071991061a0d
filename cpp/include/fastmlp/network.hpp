// Network: owns every buffer of a multilayer perceptron.
//
// Layer l computes Z_l = A_{l-1} · W_l + b_l and A_l = f(Z_l), with W_l of
// shape (n_in, n_out) row-major (scikit-learn's coefs_ layout). All
// parameters live in one contiguous buffer, W_0, b_0, W_1, b_1, ..., and all
// gradients in a second buffer of the same layout, so an optimizer step is one
// loop and an allreduce is one call. Workspaces are allocated once per batch
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

// What one thread needs for a forward/backward pass over its slice of a
// batch: the gathered rows, and every layer's Z, A and delta (and, for a
// hidden layer whose output is dropped out, the dropped A).
template <class T>
struct Workspace {
  Index rows = 0;
  Matrix<T> x, y;                      // the slice's rows, when gathered or perturbed (x: dense X only)
  Vector<T> w;                         // their sample weights
  std::vector<T> csr_data;             // the slice's rows of a sparse X, gathered
  std::vector<std::int64_t> csr_indices, csr_indptr;
  CsrView<T> csr_view;                 // ... and viewed
  std::vector<Matrix<T>> z, a, delta;  // per layer, rows × n_out
  std::vector<Matrix<T>> dropped;      // per layer: A after dropout (empty where the next layer's input has none)
  // Sized for `rows` rows; dropout[l] > 0 for l >= 1 sizes dropped[l - 1];
  // x only for a dense X (a CSR X is gathered into csr_*, never densified).
  void reserve(const std::vector<Index>& sizes, const std::vector<double>& dropout, Index rows, bool dense_x);
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
  // hidden: one activation for every hidden layer, or one per hidden layer.
  Network(std::vector<Index> layer_sizes, std::vector<Activation> hidden, Activation output, double slope,
          std::uint64_t seed, Init init);
  Network(std::vector<Index> layer_sizes, Activation hidden, Activation output, double slope, std::uint64_t seed,
          Init init)
      : Network(std::move(layer_sizes), std::vector<Activation>{hidden}, output, slope, seed, init) {}
  ~Network();

  const std::vector<Index>& layer_sizes() const { return sizes_; }
  Index n_layers() const { return Index(sizes_.size()) - 1; }
  Index n_inputs() const { return sizes_.front(); }
  Index n_outputs() const { return sizes_.back(); }
  Index n_params() const { return params_.size(); }
  // Hidden layer l's activation (l < n_layers() - 1); for a network without
  // hidden layers, hidden_activations() holds the one its Glorot bound uses.
  Activation hidden_activation(Index l) const { return hidden_[std::size_t(l)]; }
  const std::vector<Activation>& hidden_activations() const { return hidden_; }
  Activation output_activation() const { return output_; }
  T slope() const { return slope_; }

  T* params() { return params_.data(); }
  const T* params() const { return params_.data(); }
  T* grads() { return grads_.data(); }
  const T* grads() const { return grads_.data(); }
  Index weight_offset(Index layer) const { return weight_offset_[layer]; }
  Index bias_offset(Index layer) const { return weight_offset_[layer] + sizes_[layer] * sizes_[layer + 1]; }

  // Draws new parameters; reseeds the shuffling generator from the same seed
  // and restarts the step count.
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
  void set_noise(TrainingNoise noise);  // checked; the caller holds busy()
  // Scales each hidden unit's incoming weights to norm <= noise().max_norm,
  // on thread t of a team (each its own columns).
  void apply_max_norm(int t, int team);

  // out (n, n_outputs) = the network's output for x (n, n_inputs), dense or
  // sparse. Reads the parameters only: safe to call from several threads.
  void forward(const T* x, Index n, T* out) const;
  void forward(const CsrView<T>& x, T* out) const;

  // Forward and backward over `rows` rows of x (y: their targets) into the
  // gradient buffer g (params' layout), weighted and normalized by `scale`
  // (loss.hpp); returns this thread's share of the batch's loss. Reads the
  // parameters, writes ws and g only. Run by thread t of a team of `team`
  // threads that share the pass: each computes its own columns of every
  // product and its own rows of the loss, with a barrier wherever a stage
  // reads what others wrote (team = 1: the whole pass on this thread).
  //
  // With `draw` (a training step's key and the position in the batch of
  // row 0), noise() perturbs the pass: input noise and dropout as in
  // dropout.hpp, the same masks in the backward pass.
  // `scratch`: the calling thread's packing scratch (step_scratch(t)).
  double forward_backward(const Input<T>& x, const T* y, Index rows, const LossScale<T>& scale, Loss loss,
                          Workspace<T>& ws, T* g, gemm::Scratch* scratch, int t = 0, int team = 1,
                          const DrawKey* draw = nullptr) const;

  // How a batch of `rows` rows is split across threads (parallel.hpp:
  // plan_step), with the slices' workspaces and gradient buffers sized;
  // allocates here only. A sparse X (dense_x false) reserves no dense rows.
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
  // Columns c of layer 0's Z = X·W_0 + b_0, for dense or sparse X; then
  // after(z, ld, row0, rows, col0, cols) on each finished block.
  // (packed: W_0 packed once, or null.)
  template <class After>
  void first_layer(const Input<T>& x, Index rows, T* z, Range c, gemm::Scratch* scratch, After&& after,
                   const gemm::PackedB* packed = nullptr) const;
  // packs: the weights packed once (float), or null.
  void forward_rows(const Input<T>& x, Index rows, T* out, T* buf0, T* buf1, gemm::Scratch* scratch,
                    const WeightPacks* packs) const;
  template <class RowsOf>
  void forward_chunked(Index n, T* out, RowsOf&& rows_of) const;
  std::unique_ptr<ForwardContext> take_context() const;
  void give_back(std::unique_ptr<ForwardContext> context) const;

  std::vector<Index> sizes_;
  std::vector<Index> weight_offset_;
  std::vector<Activation> hidden_;
  Activation output_;
  T slope_;
  std::uint64_t seed_ = 0, steps_ = 0;
  TrainingNoise noise_;
  gemm::Precision precision_ = gemm::Precision::Full;
  Vector<T> params_, grads_;
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
