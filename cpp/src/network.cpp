#include "fastmlp/network.hpp"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "fastmlp/dense.hpp"

namespace fastmlp {

namespace {

// Rows of one inference chunk: large enough for an efficient GEMM, small
// enough for its activations to stay in cache.
constexpr Index kForwardChunk = 256;
// A thread slice of a training batch gets at least this many rows.
constexpr Index kMinSliceRows = 16;
// Above this many parameters, per-slice gradient buffers cost more memory
// traffic than Eigen's own parallel GEMM loses; one slice then.
constexpr Index kMaxSlicedParams = Index(1) << 22;

double physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? double(pages) * double(page) : 0.0;
}

}  // namespace

template <class T>
void Workspace<T>::reserve(const std::vector<Index>& sizes, Index n) {
  if (n <= rows && z.size() + 1 == sizes.size()) return;
  const std::size_t layers = sizes.size() - 1;
  z.resize(layers);
  a.resize(layers);
  delta.resize(layers);
  for (std::size_t l = 0; l < layers; ++l) {
    z[l].resize(n, sizes[l + 1]);
    a[l].resize(n, sizes[l + 1]);
    delta[l].resize(n, sizes[l + 1]);
  }
  rows = n;
}

template <class T>
Network<T>::Network(std::vector<Index> layer_sizes, Activation hidden, Activation output, double slope,
                    std::uint64_t seed, Init init)
    : sizes_(std::move(layer_sizes)), hidden_(hidden), output_(output), slope_(T(slope)) {
  if (sizes_.size() < 2)
    throw std::invalid_argument("layer_sizes must have at least 2 entries (inputs and outputs), got " +
                                std::to_string(sizes_.size()));
  for (std::size_t l = 0; l < sizes_.size(); ++l)
    if (sizes_[l] < 1)
      throw std::invalid_argument("layer_sizes[" + std::to_string(l) + "] must be >= 1, got " +
                                  std::to_string(sizes_[l]));
  if (hidden == Activation::Softmax)
    throw std::invalid_argument("activation 'softmax' is for the output layer only (output_activation)");
  if (!std::isfinite(slope) || slope < 0.0)
    throw std::invalid_argument("leaky_relu slope must be a finite number >= 0, got " + std::to_string(slope));
  // Count in floating point first: a product of huge sizes must not wrap.
  double count = 0.0;
  for (std::size_t l = 0; l + 1 < sizes_.size(); ++l)
    count += double(sizes_[l]) * double(sizes_[l + 1]) + double(sizes_[l + 1]);
  const double need = 2.0 * count * sizeof(T), have = physical_memory_bytes();
  if (count > 9.0e18 || (have > 0.0 && need > have))
    throw std::length_error("a network with layer_sizes of " + std::to_string(count) +
                            " parameters needs " + std::to_string(need / 1073741824.0) +
                            " GiB for parameters and gradients; this machine has " +
                            std::to_string(have / 1073741824.0) + " GiB");
  Index offset = 0;
  for (std::size_t l = 0; l + 1 < sizes_.size(); ++l) {
    weight_offset_.push_back(offset);
    offset += sizes_[l] * sizes_[l + 1] + sizes_[l + 1];
  }
  params_.resize(offset);
  grads_.setZero(offset);
  initialize(seed, init);
}

template <class T>
void Network<T>::initialize(std::uint64_t seed, Init init) {
  rng_.reseed(seed);
  for (Index l = 0; l < n_layers(); ++l) {
    const Index fan_in = sizes_[l], fan_out = sizes_[l + 1];
    T* w = params_.data() + weight_offset(l);
    T* b = params_.data() + bias_offset(l);
    const double bound = init == Init::He
                             ? std::sqrt(6.0 / double(fan_in))
                             : std::sqrt((hidden_ == Activation::Logistic ? 2.0 : 6.0) / double(fan_in + fan_out));
    for (Index i = 0; i < fan_in * fan_out; ++i) w[i] = T(bound * (2.0 * rng_.uniform() - 1.0));
    for (Index i = 0; i < fan_out; ++i) b[i] = init == Init::He ? T(0) : T(bound * (2.0 * rng_.uniform() - 1.0));
  }
}

template <class T>
void Network<T>::forward_rows(const T* x, Index rows, T* out, T* buf0, T* buf1) const {
  const T* in = x;
  for (Index l = 0; l < n_layers(); ++l) {
    const bool last = l + 1 == n_layers();
    T* dst = last ? out : (l % 2 == 0 ? buf0 : buf1);
    dense_forward(dst, in, params_.data() + weight_offset(l), params_.data() + bias_offset(l), rows,
                  sizes_[l], sizes_[l + 1]);
    activation_forward(last ? output_ : hidden_, slope_, dst, dst, rows, sizes_[l + 1]);
    in = dst;
  }
}

template <class T>
void Network<T>::forward(const T* x, Index n, T* out) const {
  if (n <= 0) return;
  const Index width = *std::max_element(sizes_.begin() + 1, sizes_.end());
  const Index threads = std::max<Index>(1, std::min<Index>(omp_get_max_threads(), n / kForwardChunk));
  const Index chunk = std::min(n, kForwardChunk);
  // Allocated before the parallel region: an exception must not escape it.
  std::vector<Matrix<T>> buffers(2 * threads, Matrix<T>(chunk, width));
#pragma omp parallel num_threads(int(threads)) if (threads > 1)
  {
    const Index t = omp_get_thread_num();
    const Index begin = n * t / threads, end = n * (t + 1) / threads;
    for (Index r = begin; r < end; r += chunk) {
      const Index rows = std::min(chunk, end - r);
      forward_rows(x + r * n_inputs(), rows, out + r * n_outputs(), buffers[2 * t].data(),
                   buffers[2 * t + 1].data());
    }
  }
}

template <class T>
double Network<T>::forward_backward(const T* x, const T* y, Index rows, const LossScale<T>& scale, Loss loss,
                                    Workspace<T>& ws, T* g) const {
  const Index L = n_layers();
  const T* in = x;
  for (Index l = 0; l < L; ++l) {
    T* z = ws.z[l].data();
    dense_forward(z, in, params_.data() + weight_offset(l), params_.data() + bias_offset(l), rows, sizes_[l],
                  sizes_[l + 1]);
    if (l + 1 < L) {
      activation_forward(hidden_, slope_, z, ws.a[l].data(), rows, sizes_[l + 1]);
      in = ws.a[l].data();
    }
  }
  const double value = output_loss_grad(loss, output_, slope_, ws.z[L - 1].data(), y, ws.a[L - 1].data(),
                                        ws.delta[L - 1].data(), rows, sizes_[L], scale);
  for (Index l = L - 1; l >= 0; --l) {
    const T* in_l = l == 0 ? x : ws.a[l - 1].data();
    T* d_in = l == 0 ? nullptr : ws.delta[l - 1].data();
    dense_backward(d_in, g + weight_offset(l), g + bias_offset(l), ws.delta[l].data(), in_l,
                   params_.data() + weight_offset(l), rows, sizes_[l], sizes_[l + 1]);
    if (l > 0)
      activation_backward(hidden_, slope_, d_in, ws.z[l - 1].data(), ws.a[l - 1].data(), d_in, rows, sizes_[l]);
  }
  return value;
}

template <class T>
int Network<T>::slice_threads(Index rows) const {
  if (n_params() > kMaxSlicedParams) return 1;
  return int(std::max<Index>(1, std::min<Index>(omp_get_max_threads(), rows / kMinSliceRows)));
}

template <class T>
double Network<T>::loss_and_grad(const T* x, const T* y, Index n, Loss loss, const T* sample_weight,
                                 double weight_total, double grad_scale) {
  check_loss_output(loss, output_);
  if (n <= 0) throw std::invalid_argument("loss_and_grad needs at least one sample, got 0");
  if (sample_weight != nullptr && !(weight_total > 0.0))
    throw std::invalid_argument("the sample weights must have a positive sum, got " + std::to_string(weight_total));
  const double total = sample_weight != nullptr ? weight_total : double(n);
  const int threads = slice_threads(n);
  // Every allocation happens here, before any buffer is written.
  if (slices_.size() < std::size_t(threads)) slices_.resize(threads);
  for (int t = 0; t < threads; ++t) slices_[t].reserve(sizes_, (n + threads - 1) / threads);
  if (slice_grads_.size() + 1 < std::size_t(threads)) slice_grads_.resize(threads - 1);
  for (int t = 1; t < threads; ++t)
    if (slice_grads_[t - 1].size() != n_params()) slice_grads_[t - 1].resize(n_params());
  if (threads == 1)
    return forward_backward(x, y, n, LossScale<T>{sample_weight, total, grad_scale}, loss, slices_[0], grads_.data());

  // Batch-parallel: each thread runs every layer on its slice of the rows into
  // its own gradient buffer; the buffers are then summed, each thread a chunk.
  std::vector<double> partial(threads, 0.0);
  const Index n_in = n_inputs(), n_out = n_outputs(), P = n_params();
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const Index begin = n * t / threads, end = n * (t + 1) / threads;
    T* g = t == 0 ? grads_.data() : slice_grads_[t - 1].data();
    const LossScale<T> scale{sample_weight != nullptr ? sample_weight + begin : nullptr, total, grad_scale};
    partial[t] = forward_backward(x + begin * n_in, y + begin * n_out, end - begin, scale, loss, slices_[t], g);
#pragma omp barrier
    const Index p0 = P * t / threads, p1 = P * (t + 1) / threads;
    T* total = grads_.data();
    for (int s = 1; s < threads; ++s) {
      const T* part = slice_grads_[s - 1].data();
#pragma omp simd
      for (Index i = p0; i < p1; ++i) total[i] += part[i];
    }
  }
  double value = 0.0;
  for (double p : partial) value += p;
  return value;
}

template class Network<float>;
template class Network<double>;
template struct Workspace<float>;
template struct Workspace<double>;

}  // namespace fastmlp
