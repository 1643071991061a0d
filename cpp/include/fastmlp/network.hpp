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

// glorot: W, b ~ U(−s, s), s = √(c / (n_in + n_out)), c = 2 for a logistic
//         hidden activation and 6 otherwise (scikit-learn's bounds);
// he:     W ~ U(−s, s), s = √(6 / n_in), b = 0.
enum class Init { Glorot, He };
Init parse_init(const std::string& name);

// Throws std::length_error (Python: ValueError) when `bytes` exceed the
// machine's physical memory: such a request could only fail or, with the
// kernel's overcommit, end in an OOM kill when the memory is touched.
void check_fits_in_memory(double bytes, const char* what);

// What one thread needs for a forward/backward pass over its slice of a
// batch: the gathered rows, and every layer's Z, A and delta.
template <class T>
struct Workspace {
  Index rows = 0;
  Matrix<T> x, y;                      // the slice's rows, when gathered
  std::vector<Matrix<T>> z, a, delta;  // per layer, rows × n_out
  void reserve(const std::vector<Index>& sizes, Index rows);
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

  // Forward and backward over `rows` rows of x (y: targets) into the gradient
  // buffer g (params' layout), every term scaled by 1/scale_rows; returns
  // Σ row losses / scale_rows. Reads the parameters, writes ws and g only.
  double forward_backward(const T* x, const T* y, Index rows, Index scale_rows, Loss loss,
                          Workspace<T>& ws, T* g) const;

  // How many threads a batch of `rows` rows is split across (see network.cpp),
  // with their workspaces and gradient buffers sized; allocates here only.
  int prepare_slices(Index rows);
  Workspace<T>& slice_workspace(int t) { return slices_[t]; }
  // Thread t's gradient buffer: grads() for t = 0.
  T* slice_grads(int t) { return t == 0 ? grads_.data() : slice_grads_[t - 1].data(); }

  // Held by whoever writes the parameters, gradients or workspaces.
  std::mutex& busy() const { return busy_; }
  // The visiting order of the current epoch, reused between epochs.
  std::vector<std::int64_t>& epoch_order() { return order_; }

 private:
  void forward_rows(const T* x, Index rows, T* out, T* buf0, T* buf1) const;

  std::vector<Index> sizes_;
  std::vector<Index> weight_offset_;
  Activation hidden_, output_;
  T slope_;
  Vector<T> params_, grads_;
  Rng rng_;
  std::vector<Workspace<T>> slices_;
  std::vector<Vector<T>> slice_grads_;
  std::vector<std::int64_t> order_;
  mutable std::mutex busy_;
};

}  // namespace fastmlp
