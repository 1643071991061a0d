#include "fastmlp/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <stdexcept>

namespace fastmlp {

namespace {

// grads_W += l2·W / rows for every weight matrix (biases excluded); returns
// the penalty 0.5·l2·Σ‖W‖² / rows.
template <class T>
double add_l2(Network<T>& net, double l2, Index rows) {
  double squares = 0.0;
  const T scale = T(l2 / double(rows));
  for (Index l = 0; l < net.n_layers(); ++l) {
    const Index size = net.layer_sizes()[l] * net.layer_sizes()[l + 1];
    const T* w = net.params() + net.weight_offset(l);
    T* g = net.grads() + net.weight_offset(l);
    double s = 0.0;
#pragma omp parallel for simd reduction(+ : s) if (size > kParallelElements)
    for (Index i = 0; i < size; ++i) {
      s += double(w[i]) * double(w[i]);
      g[i] += scale * w[i];
    }
    squares += s;
  }
  return 0.5 * l2 * squares / double(rows);
}

// Copies rows idx[0..rows) of src (width columns) into dst.
template <class T>
void gather_rows(T* dst, const T* src, const std::int64_t* idx, Index rows, Index width) {
  for (Index r = 0; r < rows; ++r)
    std::memcpy(dst + r * width, src + idx[r] * width, sizeof(T) * std::size_t(width));
}

}  // namespace

template <class T>
double train_epoch(Network<T>& net, Optimizer<T>& optimizer, const T* x, const T* y, Index n, Loss loss,
                   const EpochOptions& options) {
  std::unique_lock<std::mutex> lock(net.busy(), std::try_to_lock);
  if (!lock.owns_lock())
    throw std::runtime_error("this Network is being trained by another thread; train one network from one thread at a time");
  check_loss_output(loss, net.output_activation());
  if (n <= 0) throw std::invalid_argument("train_epoch needs at least one sample, got 0");
  if (options.batch_size < 1)
    throw std::invalid_argument("batch_size must be >= 1, got " + std::to_string(options.batch_size));
  if (!(options.l2 >= 0.0)) throw std::invalid_argument("l2 must be >= 0, got " + std::to_string(options.l2));
  if (options.order != nullptr)
    for (Index i = 0; i < n; ++i)
      if (options.order[i] < 0 || options.order[i] >= n)
        throw std::invalid_argument("order[" + std::to_string(i) + "] = " + std::to_string(options.order[i]) +
                                    " is outside [0, " + std::to_string(n) + ")");

  optimizer.prepare(net.n_params());  // throws here, before any parameter changes

  const Index batch = std::min(options.batch_size, n);
  const Index n_in = net.n_inputs(), n_out = net.n_outputs();
  EpochScratch<T>& scratch = net.epoch_scratch();
  const bool gather = options.order != nullptr || options.shuffle;
  if (gather) {
    scratch.order.resize(std::size_t(n));
    if (options.order != nullptr) {
      std::copy(options.order, options.order + n, scratch.order.begin());
    } else {
      std::iota(scratch.order.begin(), scratch.order.end(), std::int64_t(0));
      net.rng().shuffle(scratch.order.begin(), scratch.order.end());
    }
    if (scratch.x.rows() < batch || scratch.x.cols() != n_in) scratch.x.resize(batch, n_in);
    if (scratch.y.rows() < batch || scratch.y.cols() != n_out) scratch.y.resize(batch, n_out);
  }

  using Clock = std::chrono::steady_clock;
  auto last_poll = Clock::now();
  double total = 0.0;
  Index seen = 0;
  for (Index start = 0; start < n; start += batch) {
    if (options.should_stop && std::chrono::duration<double>(Clock::now() - last_poll).count() > kStopPollSeconds) {
      if (options.should_stop()) break;
      last_poll = Clock::now();
    }
    const Index rows = std::min(batch, n - start);
    const T* xb = x + start * n_in;
    const T* yb = y + start * n_out;
    if (gather) {
      gather_rows(scratch.x.data(), x, scratch.order.data() + start, rows, n_in);
      gather_rows(scratch.y.data(), y, scratch.order.data() + start, rows, n_out);
      xb = scratch.x.data();
      yb = scratch.y.data();
    }
    double value = net.loss_and_grad(xb, yb, rows, loss);
    if (options.l2 > 0.0) value += add_l2(net, options.l2, rows);
    optimizer.step(net.params(), net.grads(), net.n_params());
    total += value * double(rows);
    seen += rows;
  }
  return seen > 0 ? total / double(seen) : 0.0;
}

template double train_epoch(Network<float>&, Optimizer<float>&, const float*, const float*, Index, Loss,
                            const EpochOptions&);
template double train_epoch(Network<double>&, Optimizer<double>&, const double*, const double*, Index, Loss,
                            const EpochOptions&);

}  // namespace fastmlp
