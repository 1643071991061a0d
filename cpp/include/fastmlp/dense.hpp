// The dense (fully connected) layer, on row-major batches.
//
//   forward   out (n, n_out) = inp (n, n_in) · W (n_in, n_out) + b (n_out)
//   backward  dW (n_in, n_out) = inpᵀ · dout
//             db (n_out)       = Σ_rows dout
//             dinp (n, n_in)   = dout · Wᵀ        (skipped when dinp is null)
//
// Each kernel computes the columns `c` of its output only, serially: a team
// that runs a product together gives each thread its own columns (the
// caller decides, see parallel.hpp); one thread passes all of them. Every
// product goes through gemm.hpp, with the calling thread's packing scratch,
// in the network's precision (BF16: the products' operands rounded to bf16;
// the bias, the sums of db and everything else stay in T).
#pragma once

#include <type_traits>
#include <utility>

#include "fastmlp/gemm.hpp"
#include "fastmlp/tensor.hpp"

namespace fastmlp {

// out[:, c] = inp · W[:, c] + b[c]; then after(out, ld, row0, rows, col0, cols)
// on each finished block of out (an activation fused into the product).
// packed: W packed once (gemm::PackedB of W in `precision`, float only), or
// null: W's panels packed by the product.
template <class T, class After = gemm::NoEpilogue>
void dense_forward(T* out, const T* inp, const T* weight, const gemm::PackedB* packed, const T* bias, Index n,
                   Index n_in, Index n_out, Range c, gemm::Scratch* scratch = nullptr,
                   gemm::Precision precision = gemm::Precision::Full, After&& after = {}) {
  const auto epilogue = [&](T* o, Index ld, Index r0, Index rows, Index c0, Index cols) {
    for (Index i = r0; i < r0 + rows; ++i) {
      T* oi = o + i * ld;
#pragma omp simd
      for (Index j = c0; j < c0 + cols; ++j) oi[j] += bias[j];
    }
    after(o, ld, r0, rows, c0, cols);
  };
  if constexpr (std::is_same_v<T, float>) {
    if (packed != nullptr) {
      gemm::gemm(n, gemm::plain(inp, n_in), *packed, out, n_out, c, scratch, epilogue);
      return;
    }
  }
  gemm::gemm<T>(n, n_out, n_in, gemm::plain(inp, n_in), gemm::plain(weight, n_out), out, n_out, c, false, scratch,
                precision, epilogue);
}
template <class T, class After = gemm::NoEpilogue>
void dense_forward(T* out, const T* inp, const T* weight, const T* bias, Index n, Index n_in, Index n_out, Range c,
                   gemm::Scratch* scratch = nullptr, gemm::Precision precision = gemm::Precision::Full,
                   After&& after = {}) {
  dense_forward(out, inp, weight, nullptr, bias, n, n_in, n_out, c, scratch, precision, std::forward<After>(after));
}

// dW[:, c] = inpᵀ · dout[:, c],  db[c] = Σ_rows dout[:, c]
template <class T>
void dense_backward_weights(T* dweight, T* dbias, const T* dout, const T* inp, Index n, Index n_in, Index n_out,
                            Range c, gemm::Scratch* scratch = nullptr,
                            gemm::Precision precision = gemm::Precision::Full) {
  if (c.size() <= 0) return;
  gemm::gemm<T>(n_in, n_out, n, gemm::transposed(inp, n_in), gemm::plain(dout, n_out), dweight, n_out, c, false,
                scratch, precision);
  ConstMatrixMap<T> d(dout, n, n_out);
  RowVectorMap<T> db(dbias, n_out);
  db.segment(c.begin, c.size()).noalias() = d.middleCols(c.begin, c.size()).colwise().sum();
}

// dinp[:, c] = dout · W[c, :]ᵀ   (c: columns of dinp, rows of W)
template <class T>
void dense_backward_input(T* dinp, const T* dout, const T* weight, Index n, Index n_in, Index n_out, Range c,
                          gemm::Scratch* scratch = nullptr, gemm::Precision precision = gemm::Precision::Full) {
  gemm::gemm<T>(n, n_in, n_out, gemm::plain(dout, n_out), gemm::transposed(weight, n_out), dinp, n_in, c, false,
                scratch, precision);
}

}  // namespace fastmlp
