// Activations: forward  A = f(Z)  and backward  dZ = dA ⊙ f'(Z)  (softmax: its
// Jacobian-vector product). Each derivative sits beside its forward and is
// computed from what is correct for it: the pre-activation Z where the output
// alone does not determine the slope (relu, leaky_relu), the output A where
// that is the cheap exact form (logistic, tanh, softmax).
#pragma once

#include <omp.h>

#include <cmath>
#include <string>

#include "fastmlp/tensor.hpp"

namespace fastmlp {

enum class Activation { Identity, Logistic, Tanh, Relu, LeakyRelu, Softmax, Exp };

// "identity", "logistic" (alias "sigmoid"), "tanh", "relu", "leaky_relu",
// "softmax", "exp" (the output of Poisson regression); throws
// std::invalid_argument listing the valid names otherwise.
Activation parse_activation(const std::string& name);
const char* activation_name(Activation f);

// Numerically stable logistic: never evaluates exp of a large positive number.
template <class T>
inline T logistic(T z) {
  if (z >= T(0)) return T(1) / (T(1) + std::exp(-z));
  const T e = std::exp(z);
  return e / (T(1) + e);
}

// Runs body(begin, end) over [0, size), split across the OpenMP threads when
// the size warrants it (and serially inside an enclosing parallel region).
template <class Body>
void for_chunks(Index size, Body&& body) {
  if (size <= kParallelElements) {
    body(Index(0), size);
    return;
  }
#pragma omp parallel
  {
    const Index t = omp_get_thread_num(), n = omp_get_num_threads();
    body(size * t / n, size * (t + 1) / n);
  }
}

template <class T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// A[i,:] = f(Z[i,:]). A may alias Z (a backward pass of relu or leaky_relu
// then needs Z kept elsewhere). Eigen's vectorized exp, tanh and logistic.
template <class T>
void activation_forward(Activation f, T slope, const T* z, T* a, Index rows, Index cols) {
  if (f == Activation::Softmax) {
    for_chunks(rows, [&](Index r0, Index r1) {
      for (Index r = r0; r < r1; ++r) {
        ConstArrayMap<T> zr(z + r * cols, cols);
        ArrayMap<T> ar(a + r * cols, cols);
        ar = (zr - zr.maxCoeff()).exp();
        ar /= ar.sum();
      }
    });
    return;
  }
  for_chunks(rows * cols, [&](Index b, Index e) {
    ConstArrayMap<T> Z(z + b, e - b);
    ArrayMap<T> A(a + b, e - b);
    switch (f) {
      case Activation::Identity:
        if (a != z) A = Z;
        break;
      case Activation::Logistic:
        A = Z.logistic();
        break;
      case Activation::Tanh:
        A = Z.tanh();
        break;
      case Activation::Relu:
        A = Z.max(T(0));
        break;
      case Activation::LeakyRelu:
        A = (Z > T(0)).select(Z, slope * Z);
        break;
      case Activation::Exp:
        A = Z.exp();
        break;
      case Activation::Softmax:
        break;
    }
  });
}

// dZ = dA ⊙ f'(Z) for elementwise f; for softmax dZ = A ⊙ (dA − rowsum(dA ⊙ A)).
// dZ may alias dA.
template <class T>
void activation_backward(Activation f, T slope, const T* da, const T* z, const T* a, T* dz,
                         Index rows, Index cols) {
  if (f == Activation::Softmax) {
    for_chunks(rows, [&](Index r0, Index r1) {
      for (Index r = r0; r < r1; ++r) {
        ConstArrayMap<T> dar(da + r * cols, cols), ar(a + r * cols, cols);
        ArrayMap<T> dzr(dz + r * cols, cols);
        const T s = (dar * ar).sum();
        dzr = ar * (dar - s);
      }
    });
    return;
  }
  for_chunks(rows * cols, [&](Index b, Index e) {
    ConstArrayMap<T> dA(da + b, e - b), Z(z + b, e - b), A(a + b, e - b);
    ArrayMap<T> dZ(dz + b, e - b);
    switch (f) {
      case Activation::Identity:
        if (dz != da) dZ = dA;
        break;
      case Activation::Logistic:
        dZ = dA * A * (T(1) - A);
        break;
      case Activation::Tanh:
        dZ = dA * (T(1) - A * A);
        break;
      case Activation::Relu:
        dZ = (Z > T(0)).select(dA, T(0));
        break;
      case Activation::LeakyRelu:
        dZ = (Z > T(0)).select(dA, slope * dA);
        break;
      case Activation::Exp:
        dZ = dA * A;
        break;
      case Activation::Softmax:
        break;
    }
  });
}

}  // namespace fastmlp
