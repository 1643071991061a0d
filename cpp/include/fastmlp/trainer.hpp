// One epoch of mini-batch training, entirely in C++: order the samples
// (shuffle with the network's generator, or a given order), gather each
// mini-batch into a reused buffer, forward, backward, regularize, step.
#pragma once

#include <cstdint>
#include <functional>

#include "fastmlp/network.hpp"
#include "fastmlp/optimizer.hpp"

namespace fastmlp {

struct EpochOptions {
  Index batch_size = 200;               // >= n means full-batch gradient descent
  bool shuffle = true;                  // ignored when `order` is given
  double l2 = 0.0;                      // adds 0.5·l2·Σ‖W‖² / batch rows (biases excluded)
  const std::int64_t* order = nullptr;  // n sample indices in [0, n): the visiting order
  // Asked between batches, at most every kStopPollSeconds; returning true ends
  // the epoch after the current batch (used for Ctrl-C), parameters consistent.
  std::function<bool()> should_stop;
};

inline constexpr double kStopPollSeconds = 0.05;

// Returns the mean over samples of each batch's loss (with its L2 term),
// computed before that batch's update — scikit-learn's loss_curve_ value.
// (When stopped early: the mean over the samples visited.)
template <class T>
double train_epoch(Network<T>& net, Optimizer<T>& optimizer, const T* x, const T* y, Index n,
                   Loss loss, const EpochOptions& options);

}  // namespace fastmlp
