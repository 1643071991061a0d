// Activations: forward  A = f(Z)  and backward  dZ = dA ⊙ f'(Z)  (softmax: its
// Jacobian-vector product). Each derivative sits beside its forward and is
// computed from what is correct for it: the pre-activation Z where the output
// alone does not determine the slope (relu, leaky_relu), the output A where
// that is the cheap exact form (logistic, tanh, softmax).
#pragma once

#include <cmath>
#include <string>

#include "fastmlp/tensor.hpp"

namespace fastmlp {

enum class Activation { Identity, Logistic, Tanh, Relu, LeakyRelu, Softmax, Exp };

// "identity", "logistic" (alias "sigmoid"), "tanh", "relu", "leaky_relu",
// "softmax", "exp" (the output of Poisson regression); throws std::invalid_argument listing the valid names otherwise.
Activation parse_activation(const std::string& name);
const char* activation_name(Activation f);

// Numerically stable logistic: never evaluates exp of a large positive number.
template <class T>
inline T logistic(T z) {
  if (z >= T(0)) return T(1) / (T(1) + std::exp(-z));
  const T e = std::exp(z);
  return e / (T(1) + e);
}

// Applies f row by row: A[i,:] = f(Z[i,:]). A may alias Z except for relu
// and leaky_relu when a backward pass will need Z.
template <class T>
void activation_forward(Activation f, T slope, const T* z, T* a, Index rows, Index cols) {
  const Index size = rows * cols;
  switch (f) {
    case Activation::Identity:
      if (a != z) std::copy(z, z + size, a);
      return;
    case Activation::Logistic:
#pragma omp parallel for simd if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) a[i] = logistic(z[i]);
      return;
    case Activation::Tanh:
#pragma omp parallel for simd if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) a[i] = std::tanh(z[i]);
      return;
    case Activation::Relu:
#pragma omp parallel for simd if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) a[i] = z[i] > T(0) ? z[i] : T(0);
      return;
    case Activation::LeakyRelu:
#pragma omp parallel for simd if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) a[i] = z[i] > T(0) ? z[i] : slope * z[i];
      return;
    case Activation::Exp:
#pragma omp parallel for simd if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) a[i] = std::exp(z[i]);
      return;
    case Activation::Softmax:
#pragma omp parallel for if (size > kParallelElements)
      for (Index r = 0; r < rows; ++r) {
        const T* zr = z + r * cols;
        T* ar = a + r * cols;
        T m = zr[0];
        for (Index c = 1; c < cols; ++c) m = std::max(m, zr[c]);
        T s = T(0);
        for (Index c = 0; c < cols; ++c) s += (ar[c] = std::exp(zr[c] - m));
        const T inv = T(1) / s;
        for (Index c = 0; c < cols; ++c) ar[c] *= inv;
      }
      return;
  }
}

// dZ = dA ⊙ f'(Z) for elementwise f; for softmax dZ = A ⊙ (dA − rowsum(dA ⊙ A)).
// dZ may alias dA.
template <class T>
void activation_backward(Activation f, T slope, const T* da, const T* z, const T* a, T* dz,
                         Index rows, Index cols) {
  const Index size = rows * cols;
  switch (f) {
    case Activation::Identity:
      if (dz != da) std::copy(da, da + size, dz);
      return;
    case Activation::Logistic:
#pragma omp parallel for simd if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) dz[i] = da[i] * a[i] * (T(1) - a[i]);
      return;
    case Activation::Tanh:
#pragma omp parallel for simd if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) dz[i] = da[i] * (T(1) - a[i] * a[i]);
      return;
    case Activation::Relu:
#pragma omp parallel for simd if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) dz[i] = z[i] > T(0) ? da[i] : T(0);
      return;
    case Activation::LeakyRelu:
#pragma omp parallel for simd if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) dz[i] = z[i] > T(0) ? da[i] : slope * da[i];
      return;
    case Activation::Exp:
#pragma omp parallel for simd if (size > kParallelElements)
      for (Index i = 0; i < size; ++i) dz[i] = da[i] * a[i];
      return;
    case Activation::Softmax:
#pragma omp parallel for if (size > kParallelElements)
      for (Index r = 0; r < rows; ++r) {
        const T* dar = da + r * cols;
        const T* ar = a + r * cols;
        T* dzr = dz + r * cols;
        T s = T(0);
        for (Index c = 0; c < cols; ++c) s += dar[c] * ar[c];
        for (Index c = 0; c < cols; ++c) dzr[c] = ar[c] * (dar[c] - s);
      }
      return;
  }
}

}  // namespace fastmlp
