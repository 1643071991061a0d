// Losses, fused with their output activation (scikit-learn's definitions).
// For a batch of n rows and k outputs, with Z the output pre-activations:
//
//   squared_error    L = Σ (f(Z) − Y)² / (2 n k)        dL/dZ = f'(Z)ᵀ (f(Z) − Y) / (n k)
//   log_loss         L = −Σ Y ⊙ log softmax(Z) / n      dL/dZ = (softmax(Z) − Y) / n
//   binary_log_loss  L = Σ softplus(Z) − Y ⊙ Z / n      dL/dZ = (logistic(Z) − Y) / n
//
// The two cross-entropies are evaluated from the logits (log-sum-exp,
// softplus), so no log(0) can occur, and the gradient returned is always the
// exact derivative of the value returned.
#pragma once

#include <string>

#include "fastmlp/activation.hpp"

namespace fastmlp {

enum class Loss { SquaredError, LogLoss, BinaryLogLoss };

// "squared_error", "log_loss", "binary_log_loss"; throws std::invalid_argument.
Loss parse_loss(const std::string& name);
const char* loss_name(Loss loss);

// Throws std::invalid_argument unless the pair is valid: log_loss needs a
// softmax output, binary_log_loss a logistic one, squared_error takes any.
void check_loss_output(Loss loss, Activation output);

// Mean loss of the batch; writes A = f(Z) and dZ = dL/dZ (scaled by
// 1/scale_rows instead of 1/rows when scale_rows > 0, so that a batch split
// across threads still yields the whole batch's gradient). Returns the SUM of
// per-row losses divided by the same count.
template <class T>
double output_loss_grad(Loss loss, Activation output, T slope, const T* z, const T* y, T* a, T* dz,
                        Index rows, Index cols, Index scale_rows = 0) {
  const Index n = scale_rows > 0 ? scale_rows : rows;
  double total = 0.0;
  switch (loss) {
    case Loss::SquaredError: {
      activation_forward(output, slope, z, a, rows, cols);
      const T inv = T(1) / (T(n) * T(cols));
      for (Index i = 0; i < rows * cols; ++i) {
        const T d = a[i] - y[i];
        total += double(d) * double(d);
        dz[i] = d * inv;
      }
      activation_backward(output, slope, dz, z, a, dz, rows, cols);
      return total / (2.0 * double(n) * double(cols));
    }
    case Loss::LogLoss: {
      const T inv = T(1) / T(n);
      for (Index r = 0; r < rows; ++r) {
        const T* zr = z + r * cols;
        const T* yr = y + r * cols;
        T* ar = a + r * cols;
        T* dzr = dz + r * cols;
        T m = zr[0];
        for (Index c = 1; c < cols; ++c) m = std::max(m, zr[c]);
        T s = T(0);
        for (Index c = 0; c < cols; ++c) s += (ar[c] = std::exp(zr[c] - m));
        const T lse = m + std::log(s);
        const T inv_s = T(1) / s;
        double row = 0.0;
        for (Index c = 0; c < cols; ++c) {
          row -= double(yr[c]) * double(zr[c] - lse);
          ar[c] *= inv_s;
          dzr[c] = (ar[c] - yr[c]) * inv;
        }
        total += row;
      }
      return total / double(n);
    }
    case Loss::BinaryLogLoss: {
      const T inv = T(1) / T(n);
      for (Index i = 0; i < rows * cols; ++i) {
        const T zi = z[i];
        const T softplus = std::max(zi, T(0)) + std::log1p(std::exp(-std::abs(zi)));
        total += double(softplus) - double(y[i]) * double(zi);
        a[i] = logistic(zi);
        dz[i] = (a[i] - y[i]) * inv;
      }
      return total / double(n);
    }
  }
  return total;
}

}  // namespace fastmlp
