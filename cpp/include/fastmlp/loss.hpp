// Losses, fused with their output activation (scikit-learn's definitions).
// For a batch of n rows and k outputs, with Z the output pre-activations,
// A = f(Z), D = A − Y, sample weights w_i (1 when none are given) and
// W = Σ_i w_i (= n unweighted):
//
//   squared_error    L = Σ_i w_i Σ_j (f(Z) − Y)²_ij / (2 W k)   dL/dZ_i = w_i f'(Z_i) ⊙ (f(Z_i) − Y_i) / (W k)
//   log_loss         L = −Σ_i w_i Y'_i · log softmax(Z_i) / W    dL/dZ_i = w_i (softmax(Z_i) − Y'_i) / W
//   binary_log_loss  L = Σ_i w_i Σ_j softplus(Z) − Y' ⊙ Z / W    dL/dZ_i = w_i (logistic(Z_i) − Y'_i) / W
//   poisson          L = Σ_i w_i Σ_j e^Z − Y ⊙ Z + Y log Y − Y / W   (exp output: half the Poisson
//                    deviance, scikit-learn's)                  dL/dZ_i = w_i (e^Z_i − Y_i) / W
//   huber            L = Σ_i w_i Σ_j h(D_ij) / (W k),  h(d) = d²/2 (|d| ≤ δ), δ (|d| − δ/2) (|d| > δ)
//                    dL/dZ_i = w_i f'(Z_i) ⊙ clip(D_i, −δ, δ) / (W k)               (PyTorch's HuberLoss)
//   absolute_error   L = Σ_i w_i Σ_j |D_ij| / (W k)              dL/dZ_i = w_i f'(Z_i) ⊙ sign(D_i) / (W k)
//   quantile         L = Σ_i w_i Σ_j ρ(Y − A)_ij / (W k),  ρ(r) = α r (r ≥ 0), (α − 1) r (r < 0)
//                    (the pinball loss)  dL/dZ_i = w_i f'(Z_i) ⊙ ((1 − α) [D_i > 0] − α [D_i < 0]) / (W k)
//
// Label smoothing ε (log losses): Y' = (1 − ε) Y + ε / K, K the number of
// classes — the k outputs of log_loss, 2 for each output of binary_log_loss
// (PyTorch's convention; ε = 0 is Y itself). The subgradients of the kinked
// losses at D = 0 are 0.
//
// The two cross-entropies are evaluated from the logits (log-sum-exp,
// softplus), so no log(0) can occur, and the gradient returned is always the
// exact derivative of the value returned — unless grad_scale ≠ 1, which only
// scikit-learn's multi-output squared_error quirk asks for (see LossScale).
#pragma once

#include <cmath>
#include <string>

#include "fastmlp/activation.hpp"

namespace fastmlp {

// A loss and its parameters: Loss::Huber converts to a Loss with the default
// parameters (each loss reads only its own, kLosses' `param`).
struct Loss {
  enum Kind { SquaredError, LogLoss, BinaryLogLoss, Poisson, Huber, AbsoluteError, Quantile };
  Kind kind = SquaredError;
  double delta = 1.0;            // huber: > 0
  double alpha = 0.5;            // quantile: in (0, 1)
  double label_smoothing = 0.0;  // log_loss, binary_log_loss: in [0, 1)
  constexpr Loss(Kind k = SquaredError) : kind(k) {}  // NOLINT(google-explicit-constructor): Loss::LogLoss is a Loss
};

// Every loss, in the order the names are listed everywhere, the output
// activation it is fused with (needs_output), when it needs one (the others
// take any), and the name of the parameter it reads (kLossParams; null: none).
// Parsing, naming, check_loss_output and fastmlp._core.losses() are made from
// this table.
struct LossInfo {
  Loss::Kind value;
  const char* name;
  bool needs_output;
  Activation output;  // meaningful when needs_output
  const char* param;
};
inline constexpr LossInfo kLosses[] = {
    {Loss::SquaredError, "squared_error", false, Activation::Identity, nullptr},
    {Loss::LogLoss, "log_loss", true, Activation::Softmax, "label_smoothing"},
    {Loss::BinaryLogLoss, "binary_log_loss", true, Activation::Logistic, "label_smoothing"},
    {Loss::Poisson, "poisson", true, Activation::Exp, nullptr},
    {Loss::Huber, "huber", false, Activation::Identity, "delta"},
    {Loss::AbsoluteError, "absolute_error", false, Activation::Identity, nullptr},
    {Loss::Quantile, "quantile", false, Activation::Identity, "alpha"},
};

// Each parameter of Loss: its field and its range (lo, hi), each end open or
// closed; its default is Loss{}'s. fastmlp._core.loss_params() and the checks
// of Python's loss specs are made from this table.
struct LossParam {
  const char* name;
  double Loss::* field;
  double lo, hi;
  bool lo_open, hi_open;
};
inline constexpr LossParam kLossParams[] = {
    {"delta", &Loss::delta, 0.0, HUGE_VAL, true, true},
    {"alpha", &Loss::alpha, 0.0, 1.0, true, true},
    {"label_smoothing", &Loss::label_smoothing, 0.0, 1.0, false, true},
};

// A name of kLosses (default parameters); throws std::invalid_argument listing the valid names.
Loss parse_loss(const std::string& name);
const char* loss_name(const Loss& loss);
const LossInfo& loss_info(const Loss& loss);

// Throws std::invalid_argument unless every parameter of `loss` lies in its
// range (kLossParams), naming the parameter, its range and the value.
void check_loss_params(const Loss& loss);

// Throws std::invalid_argument unless `output` is the activation `loss` is
// fused with (kLosses) and its parameters are in range (check_loss_params).
void check_loss_output(const Loss& loss, Activation output);

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

// The regression losses other than squared_error, at one element d of D = A − Y:
// value = ℓ(d) and slope = dℓ/dd (see the table at the top).
template <class T>
void robust_loss(const Loss& loss, T d, double& value, T& slope) {
  switch (loss.kind) {
    case Loss::Huber:
      if (std::abs(double(d)) <= loss.delta) {
        value = 0.5 * double(d) * double(d);
        slope = d;
      } else {
        value = loss.delta * (std::abs(double(d)) - 0.5 * loss.delta);
        slope = T(d > T(0) ? loss.delta : -loss.delta);
      }
      return;
    case Loss::AbsoluteError:
      value = std::abs(double(d));
      slope = d > T(0) ? T(1) : d < T(0) ? T(-1) : T(0);
      return;
    case Loss::Quantile:  // r = −d: ρ(r) = α r (r ≥ 0), (α − 1) r (r < 0)
      value = d < T(0) ? -loss.alpha * double(d) : (1.0 - loss.alpha) * double(d);
      slope = d < T(0) ? T(-loss.alpha) : d > T(0) ? T(1.0 - loss.alpha) : T(0);
      return;
    default: value = 0.0; slope = T(0);
  }
}

// Writes A = f(Z) and dZ = dL/dZ for one slice of `rows` rows; returns the
// slice's share Σ_i w_i ℓ_i / W of the batch's loss.
template <class T>
double output_loss_grad(const Loss& loss, Activation output, T slope, const T* z, const T* y, T* a, T* dz, Index rows,
                        Index cols, const LossScale<T>& scale = {}) {
  const double W = scale.total > 0.0 ? scale.total : double(rows);
  const T* sw = scale.sample_weight;
  auto weight = [sw](Index r) { return sw != nullptr ? sw[r] : T(1); };
  double total = 0.0;
  switch (loss.kind) {
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
      const bool smooth = loss.label_smoothing > 0.0;  // Y' = keep · Y + spread
      const T keep = T(1.0 - loss.label_smoothing), spread = T(loss.label_smoothing / double(cols));
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
          const T yc = smooth ? keep * yr[c] + spread : yr[c];
          row -= double(yc) * double(zr[c] - lse);
          ar[c] *= inv_s;
          dzr[c] = wr * (ar[c] - yc) * inv;
        }
        total += double(wr) * row;
      }
      return total / W;
    }
    case Loss::BinaryLogLoss: {
      const T inv = T(scale.grad_scale / W);
      const bool smooth = loss.label_smoothing > 0.0;  // Y' = keep · Y + spread, K = 2
      const T keep = T(1.0 - loss.label_smoothing), spread = T(loss.label_smoothing / 2.0);
      for (Index r = 0; r < rows; ++r) {
        const T wr = weight(r);
        double row = 0.0;
        for (Index i = r * cols; i < (r + 1) * cols; ++i) {
          const T zi = z[i];
          const T yi = smooth ? keep * y[i] + spread : y[i];
          row += double(Smooth<T>::softplus(zi)) - double(yi) * double(zi);
          a[i] = logistic(zi);
          dz[i] = wr * (a[i] - yi) * inv;
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
    case Loss::Huber:
    case Loss::AbsoluteError:
    case Loss::Quantile: {
      activation_forward(output, slope, z, a, rows, cols);
      const T inv = T(scale.grad_scale / (W * double(cols)));
      for (Index r = 0; r < rows; ++r) {
        const T wr = weight(r);
        double row = 0.0;
        for (Index i = r * cols; i < (r + 1) * cols; ++i) {
          double value;
          T g;
          robust_loss(loss, a[i] - y[i], value, g);
          row += value;
          dz[i] = wr * g * inv;
        }
        total += double(wr) * row;
      }
      activation_backward(output, slope, dz, z, a, dz, rows, cols);
      return total / (W * double(cols));
    }
  }
  return total;
}

}  // namespace fastmlp
