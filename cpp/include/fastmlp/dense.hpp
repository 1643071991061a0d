// The dense (fully connected) layer, on row-major batches.
//
//   forward   out (n, n_out) = inp (n, n_in) · W (n_in, n_out) + b (n_out)
//   backward  dW (n_in, n_out) = inpᵀ · dout
//             db (n_out)       = Σ_rows dout
//             dinp (n, n_in)   = dout · Wᵀ        (skipped when dinp is null)
#pragma once

#include "fastmlp/tensor.hpp"

namespace fastmlp {

template <class T>
void dense_forward(T* out, const T* inp, const T* weight, const T* bias, Index n, Index n_in,
                   Index n_out) {
  MatrixMap<T> o(out, n, n_out);
  o.noalias() = ConstMatrixMap<T>(inp, n, n_in) * ConstMatrixMap<T>(weight, n_in, n_out);
  o.rowwise() += ConstRowVectorMap<T>(bias, n_out);
}

template <class T>
void dense_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                    Index n, Index n_in, Index n_out) {
  ConstMatrixMap<T> d(dout, n, n_out);
  MatrixMap<T>(dweight, n_in, n_out).noalias() = ConstMatrixMap<T>(inp, n, n_in).transpose() * d;
  RowVectorMap<T>(dbias, n_out).noalias() = d.colwise().sum();
  if (dinp != nullptr)
    MatrixMap<T>(dinp, n, n_in).noalias() = d * ConstMatrixMap<T>(weight, n_in, n_out).transpose();
}

}  // namespace fastmlp
