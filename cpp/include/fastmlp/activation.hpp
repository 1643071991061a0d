// Activations: forward  A = f(Z)  and backward  dZ = dA ⊙ f'(Z)  (softmax: its
// Jacobian-vector product). Each derivative sits beside its forward and is
// computed from what is correct for it: the pre-activation Z where the output
// alone does not determine the slope (relu, leaky_relu), the output A where
// that is the cheap exact form (logistic, tanh, softmax).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "fastmlp/tensor.hpp"

namespace fastmlp {

enum class Activation { Identity, Logistic, Tanh, Relu, LeakyRelu, Softmax, Exp };

// Every activation, in the order the names are listed everywhere (Python's
// lists, error messages): its name, whether a hidden layer may use it (softmax
// and exp are for the output layer only), and its Glorot initialization
// factor s² · (n_in + n_out) — scikit-learn's: 2 for logistic, 6 otherwise.
// Parsing, naming, the hidden-layer check and fastmlp._core.activations() are
// made from this table: a new activation is a row here plus its cases in
// activation_forward and activation_backward below.
struct ActivationInfo {
  Activation value;
  const char* name;
  bool hidden;
  double glorot_factor;
};
inline constexpr ActivationInfo kActivations[] = {
    {Activation::Identity, "identity", true, 6.0},
    {Activation::Logistic, "logistic", true, 2.0},
    {Activation::Tanh, "tanh", true, 6.0},
    {Activation::Relu, "relu", true, 6.0},
    {Activation::LeakyRelu, "leaky_relu", true, 6.0},
    {Activation::Softmax, "softmax", false, 6.0},
    {Activation::Exp, "exp", false, 6.0},  // the output of Poisson regression
};

// Other names accepted for an activation (listed right after it).
struct ActivationAlias {
  const char* alias;
  Activation value;
};
inline constexpr ActivationAlias kActivationAliases[] = {{"sigmoid", Activation::Logistic}};

// A name or alias of kActivations; throws std::invalid_argument listing the
// valid names otherwise.
Activation parse_activation(const std::string& name);
const char* activation_name(Activation f);
const ActivationInfo& activation_info(Activation f);

// Numerically stable logistic: never evaluates exp of a large positive number.
template <class T>
inline T logistic(T z) {
  if (z >= T(0)) return T(1) / (T(1) + std::exp(-z));
  const T e = std::exp(z);
  return e / (T(1) + e);
}

template <class T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// out[i] = f(in[i]) for i in [0, n), f an Eigen array expression of its
// argument (exp, tanh, logistic). On a plain Map, Eigen runs the elements
// before the first aligned address and after the last full packet through
// its scalar function and the rest through its vectorized one, which differ
// in the last bit: the same input would give different outputs at another
// address, in another chunk or on another thread count. Here every value is
// copied into a fixed, aligned block and goes through the vectorized code —
// bit-identical results wherever the data lies. out may alias in.
template <class T, class F>
void map_aligned(const T* in, T* out, Index n, F&& f) {
  constexpr Index kBlock = 64;  // a multiple of every packet size, 4 cache lines of float
  using Block = Eigen::Array<T, kBlock, 1>;
  alignas(64) T buffer[kBlock];
  Eigen::Map<Block, Eigen::Aligned64> block(buffer);
  for (Index i = 0; i < n; i += kBlock) {
    const Index m = std::min(kBlock, n - i);
    std::copy(in + i, in + i + m, buffer);
    std::fill(buffer + m, buffer + kBlock, T(0));
    block = f(block);
    std::copy(buffer, buffer + m, out + i);
  }
}

// softmax of one row, a(c) = exp(z(c) − max z) / Σ_c exp(z(c) − max z), summed
// in column order so the result depends on the row's values alone. a may alias z.
template <class T>
void softmax_row(const T* z, T* a, Index cols) {
  const T m = *std::max_element(z, z + cols);
  for (Index c = 0; c < cols; ++c) a[c] = z[c] - m;
  map_aligned(a, a, cols, [](const auto& x) { return x.exp(); });
  T s = T(0);
  for (Index c = 0; c < cols; ++c) s += a[c];
  for (Index c = 0; c < cols; ++c) a[c] /= s;
}

// A[i,:] = f(Z[i,:]), serially (callers split rows or columns across
// threads). A may alias Z (a backward pass of relu or leaky_relu then needs Z
// kept elsewhere). Eigen's vectorized exp, tanh and logistic.
template <class T>
void activation_forward(Activation f, T slope, const T* z, T* a, Index rows, Index cols) {
  if (f == Activation::Softmax) {
    for (Index r = 0; r < rows; ++r) softmax_row(z + r * cols, a + r * cols, cols);
    return;
  }
  const Index n = rows * cols;
  ConstArrayMap<T> Z(z, n);
  ArrayMap<T> A(a, n);
  switch (f) {
    case Activation::Identity:
      if (a != z) A = Z;
      break;
    case Activation::Logistic: map_aligned(z, a, n, [](const auto& x) { return x.logistic(); }); break;
    case Activation::Tanh: map_aligned(z, a, n, [](const auto& x) { return x.tanh(); }); break;
    case Activation::Relu: A = Z.max(T(0)); break;
    case Activation::LeakyRelu: A = (Z > T(0)).select(Z, slope * Z); break;
    case Activation::Exp: map_aligned(z, a, n, [](const auto& x) { return x.exp(); }); break;
    case Activation::Softmax: break;
  }
}

// dZ = dA ⊙ f'(Z) for elementwise f; for softmax dZ = A ⊙ (dA − rowsum(dA ⊙ A)).
// dZ may alias dA.
template <class T>
void activation_backward(Activation f, T slope, const T* da, const T* z, const T* a, T* dz, Index rows, Index cols) {
  if (f == Activation::Softmax) {
    for (Index r = 0; r < rows; ++r) {
      const T* dar = da + r * cols;
      const T* ar = a + r * cols;
      T* dzr = dz + r * cols;
      T s = T(0);  // in column order, as in softmax_row: independent of the address
      for (Index c = 0; c < cols; ++c) s += dar[c] * ar[c];
      for (Index c = 0; c < cols; ++c) dzr[c] = ar[c] * (dar[c] - s);
    }
    return;
  }
  const Index n = rows * cols;
  ConstArrayMap<T> dA(da, n), Z(z, n), A(a, n);
  ArrayMap<T> dZ(dz, n);
  switch (f) {
    case Activation::Identity:
      if (dz != da) dZ = dA;
      break;
    case Activation::Logistic: dZ = dA * A * (T(1) - A); break;
    case Activation::Tanh: dZ = dA * (T(1) - A * A); break;
    case Activation::Relu: dZ = (Z > T(0)).select(dA, T(0)); break;
    case Activation::LeakyRelu: dZ = (Z > T(0)).select(dA, slope * dA); break;
    case Activation::Exp: dZ = dA * A; break;
    case Activation::Softmax: break;
  }
}

// The same over columns c of each row only (an elementwise f: a team that
// shares a layer gives each thread the columns of its products).
template <class T>
void activation_forward(Activation f, T slope, const T* z, T* a, Index rows, Index cols, Range c) {
  if (c.size() == cols) return activation_forward(f, slope, z, a, rows, cols);
  for (Index r = 0; r < rows && c.size() > 0; ++r)
    activation_forward(f, slope, z + r * cols + c.begin, a + r * cols + c.begin, 1, c.size());
}

template <class T>
void activation_backward(Activation f, T slope, const T* da, const T* z, const T* a, T* dz, Index rows, Index cols,
                         Range c) {
  if (c.size() == cols) return activation_backward(f, slope, da, z, a, dz, rows, cols);
  for (Index r = 0; r < rows && c.size() > 0; ++r) {
    const Index at = r * cols + c.begin;
    activation_backward(f, slope, da + at, z + at, a + at, dz + at, 1, c.size());
  }
}

}  // namespace fastmlp
