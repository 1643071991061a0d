// Training: a step over one mini-batch, and an epoch of steps, entirely in C++.
//
// A step is one parallel region (trainer.cpp: step): the gradients — by row
// slices summed afterwards, or by one pass the threads share column by column
// (parallel.hpp: plan_step decides) — then, each thread over its chunk of the
// parameters, the penalties, clipping and the optimizer's update. Every
// parameter is read and written once per step; a gradient hook (MPI) adds one
// synchronization, clipping by the global norm one barrier.
#pragma once

#include <cstdint>
#include <functional>

#include "fastmlp/network.hpp"
#include "fastmlp/optimizer.hpp"
#include "fastmlp/schedule.hpp"

namespace fastmlp {

// What is added to a batch's mean loss and gradient, and how the gradient is
// limited. With W the batch's weight sum (its row count when unweighted):
//   L  += (½·l2·Σ‖W_l‖² + l1·Σ|W_l|) / W          (weights only, biases excluded)
//   ∇W += (l2·W_l + l1·sign(W_l)) / W
// then, over the whole gradient buffer (biases included):
//   clip_value > 0:  g ← min(max(g, −clip_value), clip_value)
//   clip_norm  > 0:  g ← g · min(1, clip_norm / ‖g‖₂)
struct Regularization {
  double l2 = 0.0;
  double l1 = 0.0;
  double clip_value = 0.0;
  double clip_norm = 0.0;
  double grad_scale = 1.0;  // see LossScale: scikit-learn's multi-output squared_error
  void check() const;       // throws std::invalid_argument for a negative or non-finite value
};

// A mini-batch: `rows` rows of x (dense, or the CSR matrix csr) with targets
// y (n_outputs wide) and optional sample weights w — either rows
// [begin, begin + rows) of the arrays or, when `index` is given, rows
// index[0..rows).
template <class T>
struct Batch {
  const T* x = nullptr;
  const CsrView<T>* csr = nullptr;
  const T* y = nullptr;
  const T* w = nullptr;
  Index rows = 0;
  const std::int64_t* index = nullptr;
  Index begin = 0;
};

// Data-parallel training: called once per step, before the penalties and the
// update, with this process's batch gradients (summed over threads, n_params
// values) and mean loss, both normalized by the batch's weight sum W (its row
// count when unweighted), and *weight = W. It makes them the global batch's in
// place (e.g. with allreduces: g ← Σ_r W_r g_r / Σ_r W_r) and sets *weight to
// the global batch's weight total W_g, which every process must agree on: the
// penalties then divide by W_g, and W_g <= 0 skips the step (no update, not
// counted) as one process skips a batch of zero weight. `rank` is which of
// the global batch's parts this process's is: its rows are rows
// [rank·b, (rank+1)·b) of the global batch (b rows each), the rows whose
// dropout masks it draws.
template <class T>
struct GradientHook {
  std::function<void(T* grads, Index n, double* loss, double* weight)> reduce;
  Index rank = 0;
};

// Gradients of the batch's mean loss into net.grads() (no regularization);
// returns that loss. With draw_step, as a training step numbered *draw_step
// sees it: with net.noise()'s dropout and input noise (no step is taken or
// counted). The caller holds net.busy().
template <class T>
double loss_and_grad(Network<T>& net, const Batch<T>& batch, Loss loss, const std::uint64_t* draw_step = nullptr);

// The full objective of one batch, without a step: fills net.grads() with
// ∇(mean loss + penalties) (clipping excluded) and returns its value — what
// L-BFGS minimizes. The caller holds net.busy().
template <class T>
double objective(Network<T>& net, const Batch<T>& batch, Loss loss, const Regularization& reg);

struct EpochOptions {
  Index batch_size = 200;               // >= n means full-batch gradient descent
  bool shuffle = true;                  // ignored when `order` is given
  Regularization regularization;
  const std::int64_t* order = nullptr;  // n sample indices in [0, n): the visiting order
  // Sets optimizer.lr before every step when given; `epoch` is the schedule's
  // clock at the start of this epoch (epochs done before it).
  const LearningRateSchedule* schedule = nullptr;
  double epoch = 0.0;
  // Asked between batches, at most every kStopPollSeconds; returning true ends
  // the epoch after the current batch (used for Ctrl-C), parameters consistent.
  std::function<bool()> should_stop;
};

inline constexpr double kStopPollSeconds = 0.05;

// Visits the samples of `data` (its rows and index unused: all data.rows
// samples) in order — shuffled with the network's generator, given, or
// sequential — in mini-batches, one step each. Returns the mean over samples
// of each batch's loss with its penalties, taken before its update —
// scikit-learn's loss_curve_ value (when stopped early: over the samples
// visited). With sample weights each batch is normalized by its own weight
// sum (scikit-learn's convention); a batch whose weights sum to 0 is skipped.
template <class T>
double train_epoch(Network<T>& net, Optimizer<T>& optimizer, const Batch<T>& data, Loss loss,
                   const EpochOptions& options, const GradientHook<T>* hook = nullptr);

}  // namespace fastmlp
