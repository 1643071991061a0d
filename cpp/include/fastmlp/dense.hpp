// The dense (fully connected) layer, on row-major batches.
//
//   forward   out (n, n_out) = inp (n, n_in) · W (n_in, n_out) + b (n_out)
//   backward  dW (n_in, n_out) = inpᵀ · dout
//             db (n_out)       = Σ_rows dout
//             dinp (n, n_in)   = dout · Wᵀ        (skipped when dinp is null)
//
// Called outside a parallel region with enough work, each product splits its
// output's columns across the threads (no thread duplicates another's work or
// memory); inside one (a thread's slice of a batch) it runs serially.
#pragma once

#include "fastmlp/parallel.hpp"
#include "fastmlp/tensor.hpp"

namespace fastmlp {

// body(c0, c1) over column blocks of [0, cols): split across the threads
// (whole cache lines each, parallel.hpp) when `work` multiply-adds warrant it.
template <class Body>
void for_column_blocks(Index cols, double work, Body&& body) {
  parallel::for_range(cols, work, parallel::kMinProductWork, parallel::kColumnAlign, body);
}

template <class T>
void dense_forward(T* out, const T* inp, const T* weight, const T* bias, Index n, Index n_in, Index n_out) {
  MatrixMap<T> o(out, n, n_out);
  ConstMatrixMap<T> x(inp, n, n_in), w(weight, n_in, n_out);
  ConstRowVectorMap<T> b(bias, n_out);
  for_column_blocks(n_out, double(n) * double(n_in) * double(n_out), [&](Index c0, Index c1) {
    auto oc = o.middleCols(c0, c1 - c0);
    oc.noalias() = x * w.middleCols(c0, c1 - c0);
    oc.rowwise() += b.segment(c0, c1 - c0);
  });
}

template <class T>
void dense_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight, Index n,
                    Index n_in, Index n_out) {
  ConstMatrixMap<T> d(dout, n, n_out), x(inp, n, n_in), w(weight, n_in, n_out);
  MatrixMap<T> dw(dweight, n_in, n_out);
  RowVectorMap<T> db(dbias, n_out);
  const double work = double(n) * double(n_in) * double(n_out);
  for_column_blocks(n_out, work, [&](Index c0, Index c1) {
    dw.middleCols(c0, c1 - c0).noalias() = x.transpose() * d.middleCols(c0, c1 - c0);
    db.segment(c0, c1 - c0).noalias() = d.middleCols(c0, c1 - c0).colwise().sum();
  });
  if (dinp != nullptr) {
    MatrixMap<T> dx(dinp, n, n_in);
    for_column_blocks(n_in, work, [&](Index c0, Index c1) {
      dx.middleCols(c0, c1 - c0).noalias() = d * w.middleRows(c0, c1 - c0).transpose();
    });
  }
}

}  // namespace fastmlp
