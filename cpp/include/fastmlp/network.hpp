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
#include <mutex>
#include <string>
#include <vector>

#include "fastmlp/activation.hpp"
#include "fastmlp/loss.hpp"
#include "fastmlp/rng.hpp"
#include "fastmlp/tensor.hpp"

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

// glorot: W, b ~ U(−s, s), s = √(c / (n_in + n_out)), c = 2 for a logistic
//         hidden activation and 6 otherwise (scikit-learn's bounds);
// he:     W ~ U(−s, s), s = √(6 / n_in), b = 0.
enum class Init { Glorot, He };
Init parse_init(const std::string& name);

// The activations, deltas and gathered inputs of one forward/backward pass
// over up to `rows` samples.
template <class T>
struct Workspace {
  Index rows = 0;
  std::vector<Matrix<T>> z, a, delta;  // per layer, rows × n_out
  void reserve(const std::vector<Index>& sizes, Index rows);
};

// What an epoch reuses from one batch to the next: the visiting order and the
// gathered mini-batch.
template <class T>
struct EpochScratch {
  std::vector<std::int64_t> order;
  Matrix<T> x, y;
  std::vector<T> csr_data;  // a gathered sparse mini-batch
  std::vector<std::int64_t> csr_indices, csr_indptr;
  Vector<T> w;  // the mini-batch's sample weights
};

template <class T>
class Network {
 public:
  Network(std::vector<Index> layer_sizes, Activation hidden, Activation output, double slope,
          std::uint64_t seed, Init init);

  const std::vector<Index>& layer_sizes() const { return sizes_; }
  Index n_layers() const { return Index(sizes_.size()) - 1; }
  Index n_inputs() const { return sizes_.front(); }
  Index n_outputs() const { return sizes_.back(); }
  Index n_params() const { return params_.size(); }
  Activation hidden_activation() const { return hidden_; }
  Activation output_activation() const { return output_; }
  T slope() const { return slope_; }

  T* params() { return params_.data(); }
  const T* params() const { return params_.data(); }
  T* grads() { return grads_.data(); }
  const T* grads() const { return grads_.data(); }
  Index weight_offset(Index layer) const { return weight_offset_[layer]; }
  Index bias_offset(Index layer) const { return weight_offset_[layer] + sizes_[layer] * sizes_[layer + 1]; }

  // Draws new parameters; reseeds the shuffling generator from the same seed.
  void initialize(std::uint64_t seed, Init init);
  Rng& rng() { return rng_; }

  // out (n, n_outputs) = the network's output for x (n, n_inputs).
  // Reads the parameters only: safe to call from several threads at once.
  void forward(const T* x, Index n, T* out) const;

  // Mean loss over the n rows (no regularization); fills grads().
  // y is (n, n_outputs). With sample_weight (n values, summing to
  // weight_total > 0) the mean is weighted: Σ w_i ℓ_i / Σ w_i (see loss.hpp;
  // grad_scale too). Not thread-safe: hold busy() around it.
  double loss_and_grad(const T* x, const T* y, Index n, Loss loss, const T* sample_weight = nullptr,
                       double weight_total = 0.0, double grad_scale = 1.0);

  // The same two for sparse input: rows [begin, begin + n) of x (the first
  // layer multiplies sparse × dense, the rest is as above); y (and
  // sample_weight) hold the n rows of that range. Defined in network_sparse.cpp.
  void forward(const CsrView<T>& x, T* out) const;
  double loss_and_grad(const CsrView<T>& x, Index begin, const T* y, Index n, Loss loss,
                       const T* sample_weight = nullptr, double weight_total = 0.0, double grad_scale = 1.0);

  // Held by whoever writes the parameters, gradients or workspaces.
  std::mutex& busy() const { return busy_; }
  EpochScratch<T>& epoch_scratch() { return epoch_; }

 private:
  // Forward and backward over `rows` rows into gradient buffer g, weighted
  // and normalized by `scale`; returns the slice's share of the batch loss.
  double forward_backward(const T* x, const T* y, Index rows, const LossScale<T>& scale, Loss loss,
                          Workspace<T>& ws, T* g) const;
  void forward_rows(const T* x, Index rows, T* out, T* buf0, T* buf1) const;
  double forward_backward_csr(const CsrView<T>& x, Index begin, const T* y, Index rows, const LossScale<T>& scale,
                              Loss loss, Workspace<T>& ws, T* g) const;
  void forward_rows_csr(const CsrView<T>& x, Index begin, Index rows, T* out, T* buf0, T* buf1) const;
  void reserve_slices(int threads, Index n);
  int slice_threads(Index rows) const;

  std::vector<Index> sizes_;
  std::vector<Index> weight_offset_;
  Activation hidden_, output_;
  T slope_;
  Vector<T> params_, grads_;
  Rng rng_;
  // Training scratch: one workspace per thread slice of the batch, and a
  // gradient buffer for every slice but the first (which writes grads_).
  std::vector<Workspace<T>> slices_;
  std::vector<Vector<T>> slice_grads_;
  EpochScratch<T> epoch_;
  mutable std::mutex busy_;
};

}  // namespace fastmlp
