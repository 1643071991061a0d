// Activations: forward  A = f(Z)  and backward  dZ = dA ⊙ f'(Z)  (softmax: its
// Jacobian-vector product). Each derivative sits beside its forward and is
// computed from what is correct for it: the pre-activation Z where the output
// alone does not determine the slope (relu, leaky_relu, gelu, silu, selu, mish,
// softplus, elu), the output A where that is the cheap exact form (logistic,
// tanh, softmax, exp).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include <unsupported/Eigen/SpecialFunctions>  // erf of an array (GELU)

#include "fastmlp/tensor.hpp"

namespace fastmlp {

enum class Activation {
  Identity,
  Logistic,
  Tanh,
  Relu,
  LeakyRelu,
  Softmax,
  Exp,
  Gelu,
  Silu,
  Selu,
  Mish,
  Softplus,
  Elu
};

// Every activation, in the order the names are listed everywhere (Python's
// lists, error messages): its name, whether a hidden layer may use it (softmax
// and exp are for the output layer only), and the two factors of the uniform
// initializations W ~ U(−s, s) (network.hpp's Init):
//   glorot_factor  s² · (n_in + n_out): scikit-learn's, 2 for logistic, 6 for
//                  the others (Var W = 2 / (n_in + n_out), Glorot's);
//   he_factor      s² · n_in: 6 (Var W = 2 / n_in, He's for ReLU-like units)
//                  except selu, 3 (Var W = 1 / n_in: LeCun's, the variance
//                  SELU's self-normalization is derived for).
// The smooth ReLU-likes (gelu, silu, mish, softplus, elu) take relu's factors;
// selu's Glorot factor 6 is LeCun's variance when n_in = n_out.
// Parsing, naming, the hidden-layer check and fastmlp._core.activations() are
// made from this table: a new activation is a row here plus its cases in
// activation_forward and activation_backward below.
struct ActivationInfo {
  Activation value;
  const char* name;
  bool hidden;
  double glorot_factor;
  double he_factor;
};
inline constexpr ActivationInfo kActivations[] = {
    {Activation::Identity, "identity", true, 6.0, 6.0},
    {Activation::Logistic, "logistic", true, 2.0, 6.0},
    {Activation::Tanh, "tanh", true, 6.0, 6.0},
    {Activation::Relu, "relu", true, 6.0, 6.0},
    {Activation::LeakyRelu, "leaky_relu", true, 6.0, 6.0},
    {Activation::Softmax, "softmax", false, 6.0, 6.0},
    {Activation::Exp, "exp", false, 6.0, 6.0},  // the output of Poisson regression
    {Activation::Gelu, "gelu", true, 6.0, 6.0},
    {Activation::Silu, "silu", true, 6.0, 6.0},
    {Activation::Selu, "selu", true, 6.0, 3.0},
    {Activation::Mish, "mish", true, 6.0, 6.0},
    {Activation::Softplus, "softplus", true, 6.0, 6.0},
    {Activation::Elu, "elu", true, 6.0, 6.0},
};

// Other names accepted for an activation (listed right after it).
struct ActivationAlias {
  const char* alias;
  Activation value;
};
inline constexpr ActivationAlias kActivationAliases[] = {{"sigmoid", Activation::Logistic},
                                                         {"swish", Activation::Silu}};

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

// SELU's constants (Klambauer et al. 2017), PyTorch's and ONNX's values.
inline constexpr double kSeluLambda = 1.0507009873554804934193349852946;
inline constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

// The smooth activations, one value at a time (std:: functions: the same bits
// at any address, chunk or thread count; float32's gelu, silu, mish and
// softplus run SmoothBlock below instead), each forward beside its derivative
// f'(z), which needs z (the output alone does not determine it).
//   gelu      f = z Φ(z),  Φ(z) = (1 + erf(z/√2)) / 2     f' = Φ(z) + z φ(z),  φ(z) = e^(−z²/2) / √(2π)
//   silu      f = z σ(z)                                   f' = σ(z) (1 + z (1 − σ(z)))
//   selu      f = λ z (z > 0),  λ α (e^z − 1) (z ≤ 0)      f' = λ (z > 0),  λ α e^z (z ≤ 0)
//   mish      f = z tanh(softplus(z))                      f' = t + z (1 − t²) σ(z),  t = tanh(softplus(z))
//   softplus  f = log(1 + e^z) = max(z, 0) + log1p(e^−|z|)  f' = σ(z)   (never overflows)
//   elu       f = z (z > 0),  e^z − 1 (z ≤ 0)  (α = 1)     f' = 1 (z > 0),  e^z (z ≤ 0)
// (The kinks of selu and elu at 0 take the z ≤ 0 side, as PyTorch does.)
template <class T>
struct Smooth {
  static constexpr double kInvSqrt2 = 0.70710678118654752440, kInvSqrt2Pi = 0.39894228040143267794;
  static T gelu(T z) { return T(0.5) * z * (T(1) + std::erf(z * T(kInvSqrt2))); }
  static T gelu_slope(T z) {
    return T(0.5) * (T(1) + std::erf(z * T(kInvSqrt2))) + z * std::exp(T(-0.5) * z * z) * T(kInvSqrt2Pi);
  }
  static T silu(T z) { return z * logistic(z); }
  static T silu_slope(T z) {
    const T s = logistic(z);
    return s * (T(1) + z * (T(1) - s));
  }
  static T selu(T z) { return z > T(0) ? T(kSeluLambda) * z : T(kSeluLambda * kSeluAlpha) * std::expm1(z); }
  static T selu_slope(T z) { return z > T(0) ? T(kSeluLambda) : T(kSeluLambda * kSeluAlpha) * std::exp(z); }
  static T mish(T z) { return z * std::tanh(softplus(z)); }
  static T mish_slope(T z) {
    const T t = std::tanh(softplus(z));
    return t + z * (T(1) - t * t) * logistic(z);
  }
  static T softplus(T z) { return std::max(z, T(0)) + std::log1p(std::exp(-std::abs(z))); }
  static T softplus_slope(T z) { return logistic(z); }
  static T elu(T z) { return z > T(0) ? z : std::expm1(z); }
  static T elu_slope(T z) { return z > T(0) ? T(1) : std::exp(z); }
};

// a[i] = f(z[i]);  dz[i] = da[i] · f'(z[i]).  a and dz may alias z or da.
template <class T, class F>
void map_each(const T* z, T* a, Index n, F f) {
  for (Index i = 0; i < n; ++i) a[i] = f(z[i]);
}
template <class T, class F>
void map_slope(const T* da, const T* z, T* dz, Index n, F slope) {
  for (Index i = 0; i < n; ++i) dz[i] = da[i] * slope(z[i]);
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
inline constexpr Index kMapBlock = 64;  // a multiple of every packet size, 4 cache lines of float
// f over in[0, n) block by block: each kMapBlock values copied into a fixed
// aligned buffer (zero-padded), f applied to all of it, then emit(i, m, r)
// given the block's first index, its m real values' count and the results.
template <class T, class F, class Emit>
void map_blocks(const T* in, Index n, F&& f, Emit&& emit) {
  using Block = Eigen::Array<T, kMapBlock, 1>;
  alignas(64) T buffer[kMapBlock];
  Eigen::Map<Block, Eigen::Aligned64> block(buffer);
  for (Index i = 0; i < n; i += kMapBlock) {
    const Index m = std::min(kMapBlock, n - i);
    std::copy(in + i, in + i + m, buffer);
    std::fill(buffer + m, buffer + kMapBlock, T(0));
    block = f(block);
    emit(i, m, static_cast<const T*>(buffer));
  }
}

// out = f(in). out may alias in.
template <class T, class F>
void map_aligned(const T* in, T* out, Index n, F&& f) {
  map_blocks(in, n, f, [&](Index i, Index m, const T* r) { std::copy(r, r + m, out + i); });
}

// dz = da · g(z), g a slope. dz may alias da or z.
template <class T, class G>
void map_aligned_slope(const T* da, const T* z, T* dz, Index n, G&& g) {
  map_blocks(z, n, g, [&](Index i, Index m, const T* r) {
    for (Index j = 0; j < m; ++j) dz[i + j] = da[i + j] * r[j];
  });
}

// The smooth activations of float32 over one block of map_aligned, with
// Eigen's vectorized exp, log1p, tanh and erf: Smooth's formulas (float64
// keeps Smooth's std:: functions, the reference's precision; selu and elu
// too, whose expm1 Eigen does not vectorize: slower as arrays than as
// std::expm1). Measured (1 thread, [256, 512, 512, 10], 2,048 rows, forward +
// backward, AMD EPYC Zen 4): gelu 84.5 → 59.9 ms, silu 91.1 → 66.4, softplus
// 101.0 → 71.9, mish 268.5 → 70.6; relu 55.6.
struct SmoothBlock {
  using Block = Eigen::Array<float, kMapBlock, 1>;
  static constexpr float kInvSqrt2 = float(Smooth<float>::kInvSqrt2), kInvSqrt2Pi = float(Smooth<float>::kInvSqrt2Pi);
  static Block softplus(const Block& x) { return x.max(0.0f) + (-x.abs()).exp().log1p(); }
  static Block gelu(const Block& x) { return 0.5f * x * (1.0f + (x * kInvSqrt2).erf()); }
  static Block gelu_slope(const Block& x) {
    return 0.5f * (1.0f + (x * kInvSqrt2).erf()) + x * (-0.5f * x * x).exp() * kInvSqrt2Pi;
  }
  // σ(x) = 1 / (1 + e^−x): exact in the tails (Eigen's float logistic is a
  // fit with an absolute error, 4e-4 relative at x = −8.8); e^−x = inf gives 0.
  static Block sigmoid(const Block& x) { return 1.0f / (1.0f + (-x).exp()); }
  static Block silu(const Block& x) { return x * sigmoid(x); }
  static Block silu_slope(const Block& x) {
    const Block s = sigmoid(x);
    return s * (1.0f + x * (1.0f - s));
  }
  static Block mish(const Block& x) { return x * softplus(x).tanh(); }
  static Block mish_slope(const Block& x) {
    const Block t = softplus(x).tanh();
    return t + x * (1.0f - t * t) * sigmoid(x);
  }
  static Block softplus_slope(const Block& x) { return sigmoid(x); }
};

// a = f(z) of a smooth activation: SmoothBlock's vectorized form for float,
// Smooth's scalar one for double. dz = da · f'(z) the same way.
template <class T, class Scalar, class Vector>
void smooth(const T* z, T* a, Index n, Scalar scalar, Vector vector) {
  if constexpr (std::is_same_v<T, float>)
    map_aligned(z, a, n, vector);
  else
    map_each(z, a, n, scalar);
}
template <class T, class Scalar, class Vector>
void smooth_slope(const T* da, const T* z, T* dz, Index n, Scalar scalar, Vector vector) {
  if constexpr (std::is_same_v<T, float>)
    map_aligned_slope(da, z, dz, n, vector);
  else
    map_slope(da, z, dz, n, scalar);
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
    case Activation::Gelu: smooth(z, a, n, Smooth<T>::gelu, SmoothBlock::gelu); break;
    case Activation::Silu: smooth(z, a, n, Smooth<T>::silu, SmoothBlock::silu); break;
    case Activation::Selu: map_each(z, a, n, Smooth<T>::selu); break;
    case Activation::Mish: smooth(z, a, n, Smooth<T>::mish, SmoothBlock::mish); break;
    case Activation::Softplus: smooth(z, a, n, Smooth<T>::softplus, SmoothBlock::softplus); break;
    case Activation::Elu: map_each(z, a, n, Smooth<T>::elu); break;
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
    case Activation::Gelu: smooth_slope(da, z, dz, n, Smooth<T>::gelu_slope, SmoothBlock::gelu_slope); break;
    case Activation::Silu: smooth_slope(da, z, dz, n, Smooth<T>::silu_slope, SmoothBlock::silu_slope); break;
    case Activation::Selu: map_slope(da, z, dz, n, Smooth<T>::selu_slope); break;
    case Activation::Mish: smooth_slope(da, z, dz, n, Smooth<T>::mish_slope, SmoothBlock::mish_slope); break;
    case Activation::Softplus:
      smooth_slope(da, z, dz, n, Smooth<T>::softplus_slope, SmoothBlock::softplus_slope);
      break;
    case Activation::Elu: map_slope(da, z, dz, n, Smooth<T>::elu_slope); break;
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
