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

template <class T>
void sparse_dense_forward(T* out, const CsrView<T>& x, Index begin, const T* weight, const T* bias, Index n,
                          Index n_in, Index n_out) {
  MatrixMap<T> o(out, n, n_out);
  ConstMatrixMap<T> w(weight, n_in, n_out);
  ConstRowVectorMap<T> b(bias, n_out);
  const auto xs = map_csr(x).middleRows(begin, n);
  const double work = double(x.indptr[begin + n] - x.indptr[begin]) * double(n_out);
  for_column_blocks(n_out, work, [&](Index c0, Index c1) {
    auto oc = o.middleCols(c0, c1 - c0);
    oc.noalias() = xs * w.middleCols(c0, c1 - c0);
    oc.rowwise() += b.segment(c0, c1 - c0);
  });
}

template <class T>
void sparse_dense_backward(T* dweight, T* dbias, const T* dout, const CsrView<T>& x, Index begin, Index n,
                           Index n_in, Index n_out) {
  ConstMatrixMap<T> d(dout, n, n_out);
  MatrixMap<T> dw(dweight, n_in, n_out);
  RowVectorMap<T> db(dbias, n_out);
  const auto xs = map_csr(x).middleRows(begin, n);
  const double work = double(x.indptr[begin + n] - x.indptr[begin]) * double(n_out);
  for_column_blocks(n_out, work, [&](Index c0, Index c1) {
    dw.middleCols(c0, c1 - c0).noalias() = xs.transpose() * d.middleCols(c0, c1 - c0);
    db.segment(c0, c1 - c0).noalias() = d.middleCols(c0, c1 - c0).colwise().sum();
  });
}

}  // namespace fastmlp
