// One epoch of mini-batch training, entirely in C++: order the samples
// (shuffle with the network's generator, or a given order), gather each
// mini-batch into a reused buffer, forward, backward, regularize, clip, set
// the learning rate, step.
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

// Returns the mean over samples of each batch's loss (with its regularization
// terms), computed before that batch's update — scikit-learn's loss_curve_
// value. (When stopped early: the mean over the samples visited.)
// sample_weight: n weights >= 0 or null; each batch is normalized by its own
// weight sum (scikit-learn's convention); a batch whose weights sum to 0 is
// skipped (no step).
template <class T>
double train_epoch(Network<T>& net, Optimizer<T>& optimizer, const T* x, const T* y, Index n,
                   Loss loss, const EpochOptions& options, const T* sample_weight = nullptr);

// The same for a sparse X (CSR): mini-batches are gathered as small CSR
// matrices in reused buffers; X is never densified.
template <class T>
double train_epoch(Network<T>& net, Optimizer<T>& optimizer, const CsrView<T>& x, const T* y, Loss loss,
                   const EpochOptions& options, const T* sample_weight = nullptr);

// The full objective of one batch, without a step: fills net.grads() with
// ∇(mean loss + regularization) (clipping excluded) and returns its value.
// What L-BFGS minimizes. Holds net.busy().
template <class T>
double objective(Network<T>& net, const T* x, const T* y, Index n, Loss loss, const Regularization& reg,
                 const T* sample_weight = nullptr);
template <class T>
double objective(Network<T>& net, const CsrView<T>& x, const T* y, Loss loss, const Regularization& reg,
                 const T* sample_weight = nullptr);

}  // namespace fastmlp
