// The dense layer with a sparse (CSR) input: Eigen's sparse module reads
// scipy's arrays in place, so X is never densified.
//
//   forward   out (n, n_out) = X[begin : begin+n] (sparse) · W (n_in, n_out) + b
//   backward  dW = X[begin : begin+n]ᵀ · dout,  db = Σ_rows dout  (no dX: X is the input)
#pragma once

#include <Eigen/SparseCore>

#include "fastmlp/dense.hpp"
#include "fastmlp/network.hpp"

namespace fastmlp {

template <class T>
using SparseMap = Eigen::Map<const Eigen::SparseMatrix<T, Eigen::RowMajor, std::int64_t>>;

template <class T>
SparseMap<T> map_csr(const CsrView<T>& x) {
  return SparseMap<T>(x.rows, x.cols, x.indptr[x.rows], x.indptr, x.indices, x.data);
}

// As dense_forward: columns c of the output only.
template <class T>
void sparse_dense_forward(T* out, const CsrView<T>& x, Index begin, const T* weight, const T* bias, Index n, Index n_in,
                          Index n_out, Range c) {
  if (c.size() <= 0) return;
  MatrixMap<T> o(out, n, n_out);
  ConstMatrixMap<T> w(weight, n_in, n_out);
  ConstRowVectorMap<T> b(bias, n_out);
  const auto xs = map_csr(x).middleRows(begin, n);
  auto oc = o.middleCols(c.begin, c.size());
  oc.noalias() = xs * w.middleCols(c.begin, c.size());
  oc.rowwise() += b.segment(c.begin, c.size());
}

// As dense_backward_weights: columns c of dW and db only.
template <class T>
void sparse_dense_backward(T* dweight, T* dbias, const T* dout, const CsrView<T>& x, Index begin, Index n, Index n_in,
                           Index n_out, Range c) {
  if (c.size() <= 0) return;
  ConstMatrixMap<T> d(dout, n, n_out);
  MatrixMap<T> dw(dweight, n_in, n_out);
  RowVectorMap<T> db(dbias, n_out);
  const auto xs = map_csr(x).middleRows(begin, n);
  dw.middleCols(c.begin, c.size()).noalias() = xs.transpose() * d.middleCols(c.begin, c.size());
  db.segment(c.begin, c.size()).noalias() = d.middleCols(c.begin, c.size()).colwise().sum();
}

}  // namespace fastmlp
