// Sparse input: the first layer multiplies a CSR batch by the dense weights
// (Eigen's sparse module, reading scipy's arrays in place); every later layer
// is the dense code path's.
//
//   forward   Z_0 (n, n_out) = X (n, n_in, sparse) · W_0 + b_0
//   backward  dW_0 = Xᵀ · dZ_0 (sparse transpose × dense), db_0 = Σ_rows dZ_0;
//             no dX is formed.
#include <omp.h>

#include <Eigen/SparseCore>
#include <algorithm>
#include <stdexcept>
#include <string>

#include "fastmlp/dense.hpp"
#include "fastmlp/network.hpp"

namespace fastmlp {

namespace {

template <class T>
using SparseMap = Eigen::Map<const Eigen::SparseMatrix<T, Eigen::RowMajor, std::int64_t>>;

template <class T>
SparseMap<T> map_csr(const CsrView<T>& x) {
  return SparseMap<T>(x.rows, x.cols, x.indptr[x.rows], x.indptr, x.indices, x.data);
}

constexpr Index kForwardChunk = 256;
constexpr Index kMinSliceRows = 16;

}  // namespace

template <class T>
void Network<T>::reserve_slices(int threads, Index n) {
  if (slices_.size() < std::size_t(threads)) slices_.resize(threads);
  for (int t = 0; t < threads; ++t) slices_[t].reserve(sizes_, (n + threads - 1) / threads);
  if (slice_grads_.size() + 1 < std::size_t(threads)) slice_grads_.resize(threads - 1);
  for (int t = 1; t < threads; ++t)
    if (slice_grads_[t - 1].size() != n_params()) slice_grads_[t - 1].resize(n_params());
}

template <class T>
void Network<T>::forward_rows_csr(const CsrView<T>& x, Index begin, Index rows, T* out, T* buf0, T* buf1) const {
  const SparseMap<T> xs = map_csr(x);
  const bool single = n_layers() == 1;
  T* z = single ? out : buf0;
  MatrixMap<T> z0(z, rows, sizes_[1]);
  z0.noalias() = xs.middleRows(begin, rows) * ConstMatrixMap<T>(params_.data() + weight_offset(0), sizes_[0], sizes_[1]);
  z0.rowwise() += ConstRowVectorMap<T>(params_.data() + bias_offset(0), sizes_[1]);
  activation_forward(single ? output_ : hidden_, slope_, z, z, rows, sizes_[1]);
  const T* in = z;
  for (Index l = 1; l < n_layers(); ++l) {
    const bool last = l + 1 == n_layers();
    T* dst = last ? out : (l % 2 == 0 ? buf0 : buf1);
    dense_forward(dst, in, params_.data() + weight_offset(l), params_.data() + bias_offset(l), rows, sizes_[l],
                  sizes_[l + 1]);
    activation_forward(last ? output_ : hidden_, slope_, dst, dst, rows, sizes_[l + 1]);
    in = dst;
  }
}

template <class T>
void Network<T>::forward(const CsrView<T>& x, T* out) const {
  const Index n = x.rows;
  if (n <= 0) return;
  const Index width = *std::max_element(sizes_.begin() + 1, sizes_.end());
  const Index threads = std::max<Index>(1, std::min<Index>(omp_get_max_threads(), n / kForwardChunk));
  const Index chunk = std::min(n, kForwardChunk);
  std::vector<Matrix<T>> buffers(2 * threads, Matrix<T>(chunk, width));
#pragma omp parallel num_threads(int(threads)) if (threads > 1)
  {
    const Index t = omp_get_thread_num();
    const Index begin = n * t / threads, end = n * (t + 1) / threads;
    for (Index r = begin; r < end; r += chunk) {
      const Index rows = std::min(chunk, end - r);
      forward_rows_csr(x, r, rows, out + r * n_outputs(), buffers[2 * t].data(), buffers[2 * t + 1].data());
    }
  }
}

template <class T>
double Network<T>::forward_backward_csr(const CsrView<T>& x, Index begin, const T* y, Index rows,
                                        const LossScale<T>& scale, Loss loss, Workspace<T>& ws, T* g) const {
  const SparseMap<T> xs = map_csr(x);
  const auto xb = xs.middleRows(begin, rows);
  const Index L = n_layers();
  {
    MatrixMap<T> z0(ws.z[0].data(), rows, sizes_[1]);
    z0.noalias() = xb * ConstMatrixMap<T>(params_.data() + weight_offset(0), sizes_[0], sizes_[1]);
    z0.rowwise() += ConstRowVectorMap<T>(params_.data() + bias_offset(0), sizes_[1]);
  }
  const T* in = ws.a[0].data();
  if (L > 1) activation_forward(hidden_, slope_, ws.z[0].data(), ws.a[0].data(), rows, sizes_[1]);
  for (Index l = 1; l < L; ++l) {
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
  for (Index l = L - 1; l >= 1; --l) {
    T* d_in = ws.delta[l - 1].data();
    dense_backward(d_in, g + weight_offset(l), g + bias_offset(l), ws.delta[l].data(), ws.a[l - 1].data(),
                   params_.data() + weight_offset(l), rows, sizes_[l], sizes_[l + 1]);
    activation_backward(hidden_, slope_, d_in, ws.z[l - 1].data(), ws.a[l - 1].data(), d_in, rows, sizes_[l]);
  }
  ConstMatrixMap<T> d0(ws.delta[0].data(), rows, sizes_[1]);
  MatrixMap<T>(g + weight_offset(0), sizes_[0], sizes_[1]).noalias() = xb.transpose() * d0;
  RowVectorMap<T>(g + bias_offset(0), sizes_[1]).noalias() = d0.colwise().sum();
  return value;
}

template <class T>
double Network<T>::loss_and_grad(const CsrView<T>& x, Index begin, const T* y, Index n, Loss loss,
                                 const T* sample_weight, double weight_total, double grad_scale) {
  check_loss_output(loss, output_);
  if (n <= 0) throw std::invalid_argument("loss_and_grad needs at least one sample, got 0");
  if (x.cols != n_inputs())
    throw std::invalid_argument("X must have " + std::to_string(n_inputs()) + " columns, got " + std::to_string(x.cols));
  if (begin < 0 || begin + n > x.rows)
    throw std::invalid_argument("rows [" + std::to_string(begin) + ", " + std::to_string(begin + n) +
                                ") are outside the sparse X of " + std::to_string(x.rows) + " rows");
  if (sample_weight != nullptr && !(weight_total > 0.0))
    throw std::invalid_argument("the sample weights must have a positive sum, got " + std::to_string(weight_total));
  const double total = sample_weight != nullptr ? weight_total : double(n);
  // The sparse transpose product is single-threaded inside Eigen: slice the
  // rows across threads as the dense path does.
  const int threads = n_params() > (Index(1) << 22)
                          ? 1
                          : int(std::max<Index>(1, std::min<Index>(omp_get_max_threads(), n / kMinSliceRows)));
  reserve_slices(threads, n);
  if (threads == 1)
    return forward_backward_csr(x, begin, y, n, LossScale<T>{sample_weight, total, grad_scale}, loss, slices_[0],
                                grads_.data());
  std::vector<double> partial(threads, 0.0);
  const Index n_out = n_outputs(), P = n_params();
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const Index b = n * t / threads, e = n * (t + 1) / threads;
    T* g = t == 0 ? grads_.data() : slice_grads_[t - 1].data();
    const LossScale<T> scale{sample_weight != nullptr ? sample_weight + b : nullptr, total, grad_scale};
    partial[t] = forward_backward_csr(x, begin + b, y + b * n_out, e - b, scale, loss, slices_[t], g);
#pragma omp barrier
    const Index p0 = P * t / threads, p1 = P * (t + 1) / threads;
    T* sum = grads_.data();
    for (int s = 1; s < threads; ++s) {
      const T* part = slice_grads_[s - 1].data();
#pragma omp simd
      for (Index i = p0; i < p1; ++i) sum[i] += part[i];
    }
  }
  double value = 0.0;
  for (double p : partial) value += p;
  return value;
}

template void Network<float>::forward(const CsrView<float>&, float*) const;
template void Network<double>::forward(const CsrView<double>&, double*) const;
template double Network<float>::loss_and_grad(const CsrView<float>&, Index, const float*, Index, Loss, const float*,
                                              double, double);
template double Network<double>::loss_and_grad(const CsrView<double>&, Index, const double*, Index, Loss,
                                               const double*, double, double);

}  // namespace fastmlp
