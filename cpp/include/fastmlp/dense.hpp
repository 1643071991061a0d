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

#include <omp.h>

#include <algorithm>

#include "fastmlp/tensor.hpp"

namespace fastmlp {

// Below this many multiply-adds a product runs on one thread.
inline constexpr double kMinParallelProduct = 2.0e6;

// body(c0, c1) over [0, cols), split in blocks of whole cache lines across the
// threads when work (multiply-adds) warrants it and no region is active.
template <class Body>
void for_column_blocks(Index cols, double work, Body&& body) {
  constexpr Index kAlign = 16;
  const Index threads = omp_in_parallel() || work < kMinParallelProduct
                            ? 1
                            : std::min<Index>(omp_get_max_threads(), std::max<Index>(1, cols / kAlign));
  if (threads <= 1) {
    body(Index(0), cols);
    return;
  }
#pragma omp parallel num_threads(int(threads))
  {
    const Index t = omp_get_thread_num();
    const auto edge = [&](Index k) { return k == threads ? cols : std::min(cols, (cols * k / threads) / kAlign * kAlign); };
    const Index c0 = edge(t), c1 = edge(t + 1);
    if (c1 > c0) body(c0, c1);
  }
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
