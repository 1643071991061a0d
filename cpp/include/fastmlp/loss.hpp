// Losses, fused with their output activation (scikit-learn's definitions).
// For a batch of n rows and k outputs, with Z the output pre-activations,
// sample weights w_i (1 when none are given) and W = Σ_i w_i (= n unweighted):
//
//   squared_error    L = Σ_i w_i Σ_j (f(Z) − Y)²_ij / (2 W k)   dL/dZ_i = w_i f'(Z_i) ⊙ (f(Z_i) − Y_i) / (W k)
//   log_loss         L = −Σ_i w_i Y_i · log softmax(Z_i) / W     dL/dZ_i = w_i (softmax(Z_i) − Y_i) / W
//   binary_log_loss  L = Σ_i w_i Σ_j softplus(Z) − Y ⊙ Z / W     dL/dZ_i = w_i (logistic(Z_i) − Y_i) / W
//   poisson          L = Σ_i w_i Σ_j e^Z − Y ⊙ Z + Y log Y − Y / W   (exp output: half the Poisson
//                    deviance, scikit-learn's)                  dL/dZ_i = w_i (e^Z_i − Y_i) / W
//
// The two cross-entropies are evaluated from the logits (log-sum-exp,
// softplus), so no log(0) can occur, and the gradient returned is always the
// exact derivative of the value returned — unless grad_scale ≠ 1, which only
// scikit-learn's multi-output squared_error quirk asks for (see LossScale).
#pragma once

#include <string>

#include "fastmlp/activation.hpp"

namespace fastmlp {

enum class Loss { SquaredError, LogLoss, BinaryLogLoss, Poisson };

// Every loss, in the order the names are listed everywhere, and the output
// activation it is fused with (needs_output), when it needs one: squared_error
// takes any. Parsing, naming, check_loss_output and fastmlp._core.losses()
// are made from this table.
struct LossInfo {
  Loss value;
  const char* name;
  bool needs_output;
  Activation output;  // meaningful when needs_output
};
inline constexpr LossInfo kLosses[] = {
    {Loss::SquaredError, "squared_error", false, Activation::Identity},
    {Loss::LogLoss, "log_loss", true, Activation::Softmax},
    {Loss::BinaryLogLoss, "binary_log_loss", true, Activation::Logistic},
    {Loss::Poisson, "poisson", true, Activation::Exp},
};

// A name of kLosses; throws std::invalid_argument listing the valid names.
Loss parse_loss(const std::string& name);
const char* loss_name(Loss loss);
const LossInfo& loss_info(Loss loss);

// Throws std::invalid_argument unless `output` is the activation `loss` is
// fused with (kLosses).
void check_loss_output(Loss loss, Activation output);

// How a slice of a batch is weighted and normalized.
template <class T>
struct LossScale {
  const T* sample_weight = nullptr;  // one weight per row of the slice; null: every row weighs 1
  double total = 0.0;                // W: Σ weights of the whole batch (all slices); 0: the slice's rows
  // Multiplies dL/dZ (not L). scikit-learn trains multi-output squared_error
  // on the gradient of the sum over outputs while reporting the mean: its
  // estimators pass k here; everything else passes 1.
  double grad_scale = 1.0;
};

// Writes A = f(Z) and dZ = dL/dZ for one slice of `rows` rows; returns the
// slice's share Σ_i w_i ℓ_i / W of the batch's loss.
template <class T>
double output_loss_grad(Loss loss, Activation output, T slope, const T* z, const T* y, T* a, T* dz, Index rows,
                        Index cols, const LossScale<T>& scale = {}) {
  const double W = scale.total > 0.0 ? scale.total : double(rows);
  const T* sw = scale.sample_weight;
  auto weight = [sw](Index r) { return sw != nullptr ? sw[r] : T(1); };
  double total = 0.0;
  switch (loss) {
    case Loss::SquaredError: {
      activation_forward(output, slope, z, a, rows, cols);
      const T inv = T(scale.grad_scale / (W * double(cols)));
      for (Index r = 0; r < rows; ++r) {
        const T wr = weight(r);
        double row = 0.0;
        for (Index i = r * cols; i < (r + 1) * cols; ++i) {
          const T d = a[i] - y[i];
          row += double(d) * double(d);
          dz[i] = wr * d * inv;
        }
        total += double(wr) * row;
      }
      activation_backward(output, slope, dz, z, a, dz, rows, cols);
      return total / (2.0 * W * double(cols));
    }
    case Loss::LogLoss: {
      const T inv = T(scale.grad_scale / W);
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
        const T wr = weight(r);
        double row = 0.0;
        for (Index c = 0; c < cols; ++c) {
          row -= double(yr[c]) * double(zr[c] - lse);
          ar[c] *= inv_s;
          dzr[c] = wr * (ar[c] - yr[c]) * inv;
        }
        total += double(wr) * row;
      }
      return total / W;
    }
    case Loss::BinaryLogLoss: {
      const T inv = T(scale.grad_scale / W);
      for (Index r = 0; r < rows; ++r) {
        const T wr = weight(r);
        double row = 0.0;
        for (Index i = r * cols; i < (r + 1) * cols; ++i) {
          const T zi = z[i];
          const T softplus = std::max(zi, T(0)) + std::log1p(std::exp(-std::abs(zi)));
          row += double(softplus) - double(y[i]) * double(zi);
          a[i] = logistic(zi);
          dz[i] = wr * (a[i] - y[i]) * inv;
        }
        total += double(wr) * row;
      }
      return total / W;
    }
    case Loss::Poisson: {
      const T inv = T(scale.grad_scale / W);
      for (Index r = 0; r < rows; ++r) {
        const T wr = weight(r);
        double row = 0.0;
        for (Index i = r * cols; i < (r + 1) * cols; ++i) {
          a[i] = std::exp(z[i]);
          const double yi = double(y[i]);
          row += double(a[i]) - yi * double(z[i]) + (yi > 0.0 ? yi * std::log(yi) : 0.0) - yi;
          dz[i] = wr * (a[i] - y[i]) * inv;
        }
        total += double(wr) * row;
      }
      return total / W;
    }
  }
  return total;
}

}  // namespace fastmlp
