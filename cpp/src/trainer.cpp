#include "fastmlp/trainer.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <stdexcept>

namespace fastmlp {

namespace {

// Copies rows index[0..rows) of src (width columns) into dst.
template <class T>
void gather_rows(T* dst, const T* src, const std::int64_t* index, Index rows, Index width) {
  for (Index r = 0; r < rows; ++r)
    std::memcpy(dst + r * width, src + index[r] * width, sizeof(T) * std::size_t(width));
}

// On parameters [begin, end): g += l2/rows · W over the weight entries (not
// the biases); returns Σ W² over those entries.
template <class T>
double add_l2(const Network<T>& net, T* g, double l2, Index rows, Index begin, Index end) {
  const T* w = net.params();
  const T scale = T(l2 / double(rows));
  double squares = 0.0;
  for (Index l = 0; l < net.n_layers(); ++l) {
    const Index w0 = std::max(begin, net.weight_offset(l)), w1 = std::min(end, net.bias_offset(l));
#pragma omp simd reduction(+ : squares)
    for (Index i = w0; i < w1; ++i) {
      squares += double(w[i]) * double(w[i]);
      g[i] += scale * w[i];
    }
  }
  return squares;
}

// The parallel step; optimizer may be null (gradients only). Without a hook
// it is one pass: each thread's slice forward/backward, a barrier, then each
// thread's chunk of parameters summed, regularized and updated. A hook splits
// it in two around the hook's call.
template <class T>
double step(Network<T>& net, Optimizer<T>* optimizer, const Batch<T>& batch, Loss loss, double l2,
            const GradientHook<T>* hook) {
  const Index rows = batch.rows, n_in = net.n_inputs(), n_out = net.n_outputs(), P = net.n_params();
  const int threads = net.prepare_slices(rows);
  const bool split = hook != nullptr && hook->reduce;
  const Index l2_rows = rows * (split ? hook->world_size : 1);
  if (optimizer != nullptr) optimizer->begin_step();
  // Per-thread sums, added in thread order afterwards: deterministic.
  double loss_part[kMaxThreads] = {}, l2_part[kMaxThreads] = {};
  auto regularize_and_update = [&](int t) {
    const Index p0 = P * t / threads, p1 = P * (t + 1) / threads;
    if (l2 > 0.0) l2_part[t] = add_l2(net, net.grads(), l2, l2_rows, p0, p1);
    if (optimizer != nullptr) optimizer->update(net.params(), net.grads(), p0, p1);
  };
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num();
    const Index r0 = rows * t / threads, r1 = rows * (t + 1) / threads;
    Workspace<T>& ws = net.slice_workspace(t);
    const T* x = batch.x + r0 * n_in;
    const T* y = batch.y + r0 * n_out;
    if (batch.index != nullptr) {
      gather_rows(ws.x.data(), batch.x, batch.index + r0, r1 - r0, n_in);
      gather_rows(ws.y.data(), batch.y, batch.index + r0, r1 - r0, n_out);
      x = ws.x.data();
      y = ws.y.data();
    }
    loss_part[t] = net.forward_backward(x, y, r1 - r0, rows, loss, ws, net.slice_grads(t));
#pragma omp barrier
    const Index p0 = P * t / threads, p1 = P * (t + 1) / threads;
    T* g = net.grads();
    for (int s = 1; s < threads; ++s) {
      const T* part = net.slice_grads(s);
#pragma omp simd
      for (Index i = p0; i < p1; ++i) g[i] += part[i];
    }
    if (!split) regularize_and_update(t);
  }
  double value = 0.0;
  for (int t = 0; t < threads; ++t) value += loss_part[t];
  if (split) {
    hook->reduce(net.grads(), P, &value);
#pragma omp parallel num_threads(threads) if (threads > 1)
    regularize_and_update(omp_get_thread_num());
  }
  double squares = 0.0;
  for (int t = 0; t < threads; ++t) squares += l2_part[t];
  return value + 0.5 * l2 * squares / double(l2_rows);
}

}  // namespace

template <class T>
double loss_and_grad(Network<T>& net, const Batch<T>& batch, Loss loss) {
  check_loss_output(loss, net.output_activation());
  if (batch.rows <= 0) throw std::invalid_argument("loss_and_grad needs at least one sample, got 0");
  return step<T>(net, nullptr, batch, loss, 0.0, nullptr);
}

template <class T>
double train_step(Network<T>& net, Optimizer<T>& optimizer, const Batch<T>& batch, Loss loss, double l2,
                  const GradientHook<T>* hook) {
  return step(net, &optimizer, batch, loss, l2, hook);
}

template <class T>
double train_epoch(Network<T>& net, Optimizer<T>& optimizer, const T* x, const T* y, Index n, Loss loss,
                   const EpochOptions& options, const GradientHook<T>* hook) {
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

  const Index batch_size = std::min(options.batch_size, n);
  const bool gather = options.order != nullptr || options.shuffle;
  std::vector<std::int64_t>& order = net.epoch_order();
  if (gather) {
    order.resize(std::size_t(n));
    if (options.order != nullptr) {
      std::copy(options.order, options.order + n, order.begin());
    } else {
      std::iota(order.begin(), order.end(), std::int64_t(0));
      net.rng().shuffle(order.begin(), order.end());
    }
  }

  using Clock = std::chrono::steady_clock;
  auto last_poll = Clock::now();
  double total = 0.0;
  Index seen = 0;
  for (Index start = 0; start < n; start += batch_size) {
    if (options.should_stop && std::chrono::duration<double>(Clock::now() - last_poll).count() > kStopPollSeconds) {
      if (options.should_stop()) break;
      last_poll = Clock::now();
    }
    const Index rows = std::min(batch_size, n - start);
    const Batch<T> batch = gather ? Batch<T>{x, y, rows, order.data() + start}
                                  : Batch<T>{x + start * net.n_inputs(), y + start * net.n_outputs(), rows};
    total += train_step(net, optimizer, batch, loss, options.l2, hook) * double(rows);
    seen += rows;
  }
  return seen > 0 ? total / double(seen) : 0.0;
}

#define FASTMLP_INSTANTIATE(T)                                                                        \
  template double loss_and_grad(Network<T>&, const Batch<T>&, Loss);                                  \
  template double train_step(Network<T>&, Optimizer<T>&, const Batch<T>&, Loss, double,                \
                             const GradientHook<T>*);                                                \
  template double train_epoch(Network<T>&, Optimizer<T>&, const T*, const T*, Index, Loss, const EpochOptions&, \
                              const GradientHook<T>*);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
