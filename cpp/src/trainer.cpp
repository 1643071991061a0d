#include "fastmlp/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>

namespace fastmlp {

namespace {

void check_nonnegative(const char* name, double value) {
  if (!(value >= 0.0) || !std::isfinite(value))
    throw std::invalid_argument(std::string(name) + " must be a finite number >= 0, got " + std::to_string(value));
}

// ∇W += (l2·W + l1·sign(W)) / weight_sum for every weight matrix (biases
// excluded); returns (½·l2·Σ‖W‖² + l1·Σ|W|) / weight_sum.
template <class T>
double add_penalties(Network<T>& net, double l2, double l1, double weight_sum) {
  double squares = 0.0, absolutes = 0.0;
  const T c2 = T(l2 / weight_sum), c1 = T(l1 / weight_sum);
  for (Index l = 0; l < net.n_layers(); ++l) {
    const Index size = net.layer_sizes()[l] * net.layer_sizes()[l + 1];
    const T* w = net.params() + net.weight_offset(l);
    T* g = net.grads() + net.weight_offset(l);
    double s = 0.0, a = 0.0;
    if (l1 == 0.0) {
#pragma omp parallel for simd reduction(+ : s) if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) {
        s += double(w[i]) * double(w[i]);
        g[i] += c2 * w[i];
      }
    } else {
#pragma omp parallel for simd reduction(+ : s, a) if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) {
        s += double(w[i]) * double(w[i]);
        a += std::abs(double(w[i]));
        g[i] += c2 * w[i] + c1 * T((w[i] > T(0)) - (w[i] < T(0)));
      }
    }
    squares += s;
    absolutes += a;
  }
  return (0.5 * l2 * squares + l1 * absolutes) / weight_sum;
}

template <class T>
void clip_gradient(T* g, Index n, double clip_value, double clip_norm) {
  if (clip_value > 0.0) {
    const T c = T(clip_value);
#pragma omp parallel for simd if (n > kParallelElements)
    for (Index i = 0; i < n; ++i) g[i] = std::min(std::max(g[i], -c), c);
  }
  if (clip_norm > 0.0) {
    double squares = 0.0;
#pragma omp parallel for simd reduction(+ : squares) if (n > kParallelElements)
    for (Index i = 0; i < n; ++i) squares += double(g[i]) * double(g[i]);
    const double norm = std::sqrt(squares);
    if (norm > clip_norm) {
      const T scale = T(clip_norm / norm);
#pragma omp parallel for simd if (n > kParallelElements)
      for (Index i = 0; i < n; ++i) g[i] *= scale;
    }
  }
}

// Copies rows idx[0..rows) of src (width columns) into dst.
template <class T>
void gather_rows(T* dst, const T* src, const std::int64_t* idx, Index rows, Index width) {
  for (Index r = 0; r < rows; ++r)
    std::memcpy(dst + r * width, src + idx[r] * width, sizeof(T) * std::size_t(width));
}

// Mean loss + penalties of one batch, gradient in net.grads(); the caller holds net.busy().
template <class T>
double batch_objective(Network<T>& net, const T* x, const T* y, const T* w, double weight_sum, Index rows,
                       Loss loss, const Regularization& reg) {
  double value = net.loss_and_grad(x, y, rows, loss, w, weight_sum, reg.grad_scale);
  if (reg.l2 > 0.0 || reg.l1 > 0.0) value += add_penalties(net, reg.l2, reg.l1, weight_sum);
  return value;
}

template <class T>
double sum_of(const T* w, Index n) {
  double s = 0.0;
  for (Index i = 0; i < n; ++i) s += double(w[i]);
  return s;
}

}  // namespace

void Regularization::check() const {
  check_nonnegative("l2", l2);
  check_nonnegative("l1", l1);
  check_nonnegative("clip_value", clip_value);
  check_nonnegative("clip_norm", clip_norm);
  if (!(grad_scale > 0.0) || !std::isfinite(grad_scale))
    throw std::invalid_argument("grad_scale must be a finite number > 0, got " + std::to_string(grad_scale));
}

void LearningRateSchedule::check() const {
  check_nonnegative("base_lr", base_lr);
  check_nonnegative("gamma", gamma);
  check_nonnegative("min_lr", min_lr);
  check_nonnegative("warmup_epochs", warmup_epochs);
  if (!(step_size > 0.0) || !std::isfinite(step_size))
    throw std::invalid_argument("step_size must be a finite number > 0, got " + std::to_string(step_size));
  if (!(total_epochs > 0.0) || !std::isfinite(total_epochs))
    throw std::invalid_argument("total_epochs must be a finite number > 0, got " + std::to_string(total_epochs));
}

namespace {

// Everything an epoch does except reading X: `batch_loss(idx, start, rows, y,
// w, weight_sum)` fills net.grads() with the mean loss's gradient for the
// rows idx[0..rows) (gathered) or start..start+rows (idx null) and returns it.
template <class T, class BatchLoss>
double run_epoch(Network<T>& net, Optimizer<T>& optimizer, const T* y, Index n, Loss loss,
                 const EpochOptions& options, const T* sample_weight, BatchLoss&& batch_loss) {
  check_loss_output(loss, net.output_activation());
  if (n <= 0) throw std::invalid_argument("train_epoch needs at least one sample, got 0");
  if (options.batch_size < 1)
    throw std::invalid_argument("batch_size must be >= 1, got " + std::to_string(options.batch_size));
  const Regularization& reg = options.regularization;
  reg.check();
  if (options.schedule != nullptr) options.schedule->check();
  if (options.order != nullptr)
    for (Index i = 0; i < n; ++i)
      if (options.order[i] < 0 || options.order[i] >= n)
        throw std::invalid_argument("order[" + std::to_string(i) + "] = " + std::to_string(options.order[i]) +
                                    " is outside [0, " + std::to_string(n) + ")");
  if (sample_weight != nullptr)
    for (Index i = 0; i < n; ++i)
      if (!(sample_weight[i] >= T(0)) || !std::isfinite(sample_weight[i]))
        throw std::invalid_argument("sample_weight[" + std::to_string(i) + "] = " +
                                    std::to_string(double(sample_weight[i])) + " is not a finite number >= 0");

  optimizer.prepare(net.n_params());  // throws here, before any parameter changes

  const Index batch = std::min(options.batch_size, n);
  const Index n_out = net.n_outputs();
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
    if (scratch.y.rows() < batch || scratch.y.cols() != n_out) scratch.y.resize(batch, n_out);
    if (sample_weight != nullptr && scratch.w.size() < batch) scratch.w.resize(batch);
  }

  const Index n_batches = (n + batch - 1) / batch;
  using Clock = std::chrono::steady_clock;
  auto last_poll = Clock::now();
  double total = 0.0;
  Index seen = 0;
  for (Index b = 0, start = 0; start < n; ++b, start += batch) {
    if (options.should_stop && std::chrono::duration<double>(Clock::now() - last_poll).count() > kStopPollSeconds) {
      if (options.should_stop()) break;
      last_poll = Clock::now();
    }
    const Index rows = std::min(batch, n - start);
    const T* yb = y + start * n_out;
    const T* wb = sample_weight != nullptr ? sample_weight + start : nullptr;
    const std::int64_t* idx = gather ? scratch.order.data() + start : nullptr;
    if (gather) {
      gather_rows(scratch.y.data(), y, idx, rows, n_out);
      yb = scratch.y.data();
      if (sample_weight != nullptr) {
        for (Index r = 0; r < rows; ++r) scratch.w[r] = sample_weight[idx[r]];
        wb = scratch.w.data();
      }
    }
    const double weight_sum = wb != nullptr ? sum_of(wb, rows) : double(rows);
    seen += rows;
    if (!(weight_sum > 0.0)) continue;  // all-zero weights: nothing to learn from this batch
    double value = batch_loss(idx, start, rows, yb, wb, weight_sum);
    if (reg.l2 > 0.0 || reg.l1 > 0.0) value += add_penalties(net, reg.l2, reg.l1, weight_sum);
    total += double(rows) * value;
    clip_gradient(net.grads(), net.n_params(), reg.clip_value, reg.clip_norm);
    if (options.schedule != nullptr)
      optimizer.lr = options.schedule->at(options.epoch + double(b) / double(n_batches), 1.0 / double(n_batches));
    optimizer.step(net.params(), net.grads(), net.n_params());
  }
  return seen > 0 ? total / double(seen) : 0.0;
}

std::unique_lock<std::mutex> claim(std::mutex& m) {
  std::unique_lock<std::mutex> lock(m, std::try_to_lock);
  if (!lock.owns_lock())
    throw std::runtime_error("this Network is being trained by another thread; train one network from one thread at a time");
  return lock;
}

}  // namespace

template <class T>
double train_epoch(Network<T>& net, Optimizer<T>& optimizer, const T* x, const T* y, Index n, Loss loss,
                   const EpochOptions& options, const T* sample_weight) {
  auto lock = claim(net.busy());
  const Index n_in = net.n_inputs();
  EpochScratch<T>& scratch = net.epoch_scratch();
  const Index batch = std::min(options.batch_size, std::max<Index>(n, 1));
  if ((options.order != nullptr || options.shuffle) && (scratch.x.rows() < batch || scratch.x.cols() != n_in))
    scratch.x.resize(batch, n_in);
  return run_epoch(net, optimizer, y, n, loss, options, sample_weight,
                   [&](const std::int64_t* idx, Index start, Index rows, const T* yb, const T* wb, double wsum) {
                     const T* xb = x + start * n_in;
                     if (idx != nullptr) {
                       gather_rows(scratch.x.data(), x, idx, rows, n_in);
                       xb = scratch.x.data();
                     }
                     return net.loss_and_grad(xb, yb, rows, loss, wb, wsum, options.regularization.grad_scale);
                   });
}

template <class T>
double train_epoch(Network<T>& net, Optimizer<T>& optimizer, const CsrView<T>& x, const T* y, Loss loss,
                   const EpochOptions& options, const T* sample_weight) {
  auto lock = claim(net.busy());
  if (x.cols != net.n_inputs())
    throw std::invalid_argument("X must have " + std::to_string(net.n_inputs()) + " columns, got " +
                                std::to_string(x.cols));
  EpochScratch<T>& scratch = net.epoch_scratch();
  return run_epoch(net, optimizer, y, x.rows, loss, options, sample_weight,
                   [&](const std::int64_t* idx, Index start, Index rows, const T* yb, const T* wb, double wsum) {
                     if (idx == nullptr)
                       return net.loss_and_grad(x, start, yb, rows, loss, wb, wsum, options.regularization.grad_scale);
                     // Gather the mini-batch as a small CSR in reused buffers
                     // (they grow to the largest batch seen, then stay).
                     std::int64_t nnz = 0;
                     for (Index r = 0; r < rows; ++r) nnz += x.indptr[idx[r] + 1] - x.indptr[idx[r]];
                     if (scratch.csr_data.size() < std::size_t(nnz)) {
                       scratch.csr_data.resize(std::size_t(nnz));
                       scratch.csr_indices.resize(std::size_t(nnz));
                     }
                     scratch.csr_indptr.resize(std::size_t(rows) + 1);
                     std::int64_t at = 0;
                     scratch.csr_indptr[0] = 0;
                     for (Index r = 0; r < rows; ++r) {
                       const std::int64_t b0 = x.indptr[idx[r]], b1 = x.indptr[idx[r] + 1];
                       std::copy(x.data + b0, x.data + b1, scratch.csr_data.data() + at);
                       std::copy(x.indices + b0, x.indices + b1, scratch.csr_indices.data() + at);
                       at += b1 - b0;
                       scratch.csr_indptr[r + 1] = at;
                     }
                     const CsrView<T> batch{scratch.csr_data.data(), scratch.csr_indices.data(),
                                            scratch.csr_indptr.data(), rows, x.cols};
                     return net.loss_and_grad(batch, 0, yb, rows, loss, wb, wsum, options.regularization.grad_scale);
                   });
}

template <class T>
double objective(Network<T>& net, const T* x, const T* y, Index n, Loss loss, const Regularization& reg,
                 const T* sample_weight) {
  auto lock = claim(net.busy());
  check_loss_output(loss, net.output_activation());
  if (n <= 0) throw std::invalid_argument("objective needs at least one sample, got 0");
  reg.check();
  const double weight_sum = sample_weight != nullptr ? sum_of(sample_weight, n) : double(n);
  if (!(weight_sum > 0.0))
    throw std::invalid_argument("sample_weight must have a positive sum, got " + std::to_string(weight_sum));
  return batch_objective(net, x, y, sample_weight, weight_sum, n, loss, reg);
}

template <class T>
double objective(Network<T>& net, const CsrView<T>& x, const T* y, Loss loss, const Regularization& reg,
                 const T* sample_weight) {
  auto lock = claim(net.busy());
  reg.check();
  const Index n = x.rows;
  const double weight_sum = sample_weight != nullptr ? sum_of(sample_weight, n) : double(n);
  if (!(weight_sum > 0.0))
    throw std::invalid_argument("sample_weight must have a positive sum, got " + std::to_string(weight_sum));
  double value = net.loss_and_grad(x, 0, y, n, loss, sample_weight, weight_sum, reg.grad_scale);
  if (reg.l2 > 0.0 || reg.l1 > 0.0) value += add_penalties(net, reg.l2, reg.l1, weight_sum);
  return value;
}

#define FASTMLP_INSTANTIATE(T)                                                                              \
  template double train_epoch(Network<T>&, Optimizer<T>&, const T*, const T*, Index, Loss, const EpochOptions&, \
                              const T*);                                                                    \
  template double objective(Network<T>&, const T*, const T*, Index, Loss, const Regularization&, const T*); \
  template double train_epoch(Network<T>&, Optimizer<T>&, const CsrView<T>&, const T*, Loss, const EpochOptions&, \
                              const T*);                                                                    \
  template double objective(Network<T>&, const CsrView<T>&, const T*, Loss, const Regularization&, const T*);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
