// The dense (fully connected) layer, on row-major batches.
//
//   forward   out (n, n_out) = inp (n, n_in) · W (n_in, n_out) + b (n_out)
//   backward  dW (n_in, n_out) = inpᵀ · dout
//             db (n_out)       = Σ_rows dout
//             dinp (n, n_in)   = dout · Wᵀ        (skipped when dinp is null)
//
// Each kernel computes the columns `c` of its output only, serially: a team
// that runs a product together gives each thread its own columns (the
// caller decides, see parallel.hpp); one thread passes all of them.
#pragma once

#include "fastmlp/tensor.hpp"

namespace fastmlp {

// out[:, c] = inp · W[:, c] + b[c]
template <class T>
void dense_forward(T* out, const T* inp, const T* weight, const T* bias, Index n, Index n_in, Index n_out, Range c) {
  if (c.size() <= 0) return;
  MatrixMap<T> o(out, n, n_out);
  ConstMatrixMap<T> x(inp, n, n_in), w(weight, n_in, n_out);
  ConstRowVectorMap<T> b(bias, n_out);
  auto oc = o.middleCols(c.begin, c.size());
  oc.noalias() = x * w.middleCols(c.begin, c.size());
  oc.rowwise() += b.segment(c.begin, c.size());
}

// dW[:, c] = inpᵀ · dout[:, c],  db[c] = Σ_rows dout[:, c]
template <class T>
void dense_backward_weights(T* dweight, T* dbias, const T* dout, const T* inp, Index n, Index n_in, Index n_out,
                            Range c) {
  if (c.size() <= 0) return;
  ConstMatrixMap<T> d(dout, n, n_out), x(inp, n, n_in);
  MatrixMap<T> dw(dweight, n_in, n_out);
  RowVectorMap<T> db(dbias, n_out);
  dw.middleCols(c.begin, c.size()).noalias() = x.transpose() * d.middleCols(c.begin, c.size());
  db.segment(c.begin, c.size()).noalias() = d.middleCols(c.begin, c.size()).colwise().sum();
}

// dinp[:, c] = dout · W[c, :]ᵀ   (c: columns of dinp, rows of W)
template <class T>
void dense_backward_input(T* dinp, const T* dout, const T* weight, Index n, Index n_in, Index n_out, Range c) {
  if (c.size() <= 0) return;
  ConstMatrixMap<T> d(dout, n, n_out), w(weight, n_in, n_out);
  MatrixMap<T> dx(dinp, n, n_in);
  dx.middleCols(c.begin, c.size()).noalias() = d * w.middleRows(c.begin, c.size()).transpose();
}

}  // namespace fastmlp
