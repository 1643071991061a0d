// Training: a step over one mini-batch, and an epoch of steps, entirely in C++.
//
// A step is one parallel pass: each thread gathers its slice of the batch,
// runs forward and backward on it into its own gradient buffer; then each
// thread takes a chunk of the parameters, sums the threads' gradients there,
// adds the L2 term and applies the optimizer's update — one fork/join per
// batch, every parameter read and written once.
#pragma once

#include <cstdint>
#include <functional>

#include "fastmlp/network.hpp"
#include "fastmlp/optimizer.hpp"

namespace fastmlp {

// A mini-batch: `rows` rows of x (n_inputs wide) and y (n_outputs wide),
// either rows [0, rows) or, when `index` is given, rows index[0..rows).
template <class T>
struct Batch {
  const T* x;
  const T* y;
  Index rows;
  const std::int64_t* index = nullptr;
};

// Gradients of the batch's mean loss into net.grads() (no regularization);
// returns that loss. The caller holds net.busy().
template <class T>
double loss_and_grad(Network<T>& net, const Batch<T>& batch, Loss loss);

// Data-parallel training: called once per step with the batch's gradients
// (summed over threads, n_params values) and its mean loss, before the L2
// term and the update — e.g. to average both over processes with an
// allreduce, in place. Its `world_size` is how many such batches the result
// stands for (the L2 term then divides by world_size × rows).
template <class T>
struct GradientHook {
  std::function<void(T* grads, Index n, double* loss)> reduce;
  Index world_size = 1;
};

// One step: the gradients of L = mean loss + 0.5·l2·Σ‖W‖²/rows (biases
// excluded), then optimizer's update. Returns L, taken before the update.
// The caller holds net.busy() and has called optimizer.prepare(n_params).
template <class T>
double train_step(Network<T>& net, Optimizer<T>& optimizer, const Batch<T>& batch, Loss loss, double l2,
                  const GradientHook<T>* hook = nullptr);

struct EpochOptions {
  Index batch_size = 200;               // >= n means full-batch gradient descent
  bool shuffle = true;                  // ignored when `order` is given
  double l2 = 0.0;                      // see train_step
  const std::int64_t* order = nullptr;  // n sample indices in [0, n): the visiting order
  // Asked between batches, at most every kStopPollSeconds; returning true ends
  // the epoch after the current batch (used for Ctrl-C), parameters consistent.
  std::function<bool()> should_stop;
};

inline constexpr double kStopPollSeconds = 0.05;

// Visits the n samples in order (shuffled with the network's generator, given,
// or sequential) in mini-batches, one train_step each. Returns the mean over
// samples of each batch's loss taken before its update — scikit-learn's
// loss_curve_ value (when stopped early: the mean over the samples visited).
template <class T>
double train_epoch(Network<T>& net, Optimizer<T>& optimizer, const T* x, const T* y, Index n,
                   Loss loss, const EpochOptions& options, const GradientHook<T>* hook = nullptr);

}  // namespace fastmlp
