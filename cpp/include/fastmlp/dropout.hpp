// Training-time perturbations: dropout masks and Gaussian input noise, drawn
// from a counter-based generator.
//
// Every random value is a pure function of (seed, step, site, row, unit): the
// network's seed, the training step's number, the site (which layer's input is
// perturbed), the row's position in the batch and the unit (column). Nothing
// is a stream consumed in order, so a seed gives the same masks, and the same
// trained weights, whatever the thread count or the way a batch is split.
//
// Inverted dropout at a site with rate p (the site's values A):
//   Ã[r, j] = A[r, j] · m[r, j] / (1 − p),   m[r, j] = 1 if bits(r, j) ≥ ⌊p·2³²⌋ else 0
// with bits(r, j) = unit_bits(row_key(seed, step, site, r), j), uniform on 32
// bits; the backward pass multiplies dL/dÃ by the same m / (1 − p).
//
// Input noise with standard deviation σ (site kNoiseSite), by Box–Muller:
//   ε[r, j] = √(−2 ln u₁) · cos(2π u₂),  u₁ = (bits(r, 2j) + ½) / 2³², u₂ = bits(r, 2j+1) / 2³²
//   X̃ = (X + σ·ε) ⊙ m₀ / (1 − p₀)       (then input dropout, site 0)
#pragma once

#include <cmath>
#include <cstdint>

#include "fastmlp/tensor.hpp"

namespace fastmlp {

inline constexpr std::uint32_t kNoiseSite = 0xFFFF;

// splitmix64's finalizer (a bijection of 64 bits with full avalanche).
inline std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A 32-bit integer hash (a bijection; "lowbias32"): 32-bit multiplies only,
// so it vectorizes with AVX2 as well as AVX-512.
inline std::uint32_t hash32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// The key of one row at one site of one step (computed once per row). The
// site's low 16 bits go beside the row; its high bits (a second dropout layer
// after one dense layer: site s + 65536·k, layers.hpp) are mixed into the
// step's key first, so no two sites share a key.
inline std::uint64_t row_key(std::uint64_t seed, std::uint64_t step, std::uint32_t site, std::uint64_t row) {
  std::uint64_t base = mix64(mix64(seed) ^ step);
  if (site >> 16) base = mix64(base ^ std::uint64_t(site >> 16));
  return mix64(base ^ ((std::uint64_t(site & 0xFFFF) << 48) ^ row));
}

// 32 random bits for unit j of the row whose key is `key`.
inline std::uint32_t unit_bits(std::uint64_t key, std::uint32_t j) {
  return hash32(hash32(std::uint32_t(key) ^ j) + std::uint32_t(key >> 32));
}

// The smallest kept value of unit_bits for a dropout rate p in [0, 1).
inline std::uint32_t keep_threshold(double p) { return std::uint32_t(std::ldexp(p, 32)); }

// Where and when a perturbation is drawn: a training step's key, and the
// position in the batch of the first row handed to a kernel.
struct DrawKey {
  std::uint64_t seed = 0;
  std::uint64_t step = 0;
  Index row0 = 0;
};

// dst[r, j] = src[r, j] · m[r, j] / (1 − p) for rows [0, rows) and columns c
// of a row-major (rows × cols) array; dst may be src.
template <class T>
void dropout_columns(T* dst, const T* src, Index rows, Index cols, Range c, double p, std::uint32_t site,
                     const DrawKey& key) {
  const std::uint32_t threshold = keep_threshold(p);
  const T scale = T(1.0 / (1.0 - p));
  for (Index r = 0; r < rows; ++r) {
    const std::uint64_t k = row_key(key.seed, key.step, site, std::uint64_t(key.row0 + r));
    const T* s = src + r * cols;
    T* d = dst + r * cols;
#pragma omp simd
    for (Index j = c.begin; j < c.end; ++j) d[j] = unit_bits(k, std::uint32_t(j)) >= threshold ? s[j] * scale : T(0);
  }
}

// The standard normal value ε[r, j] of the input noise, for the row key k.
inline double gaussian(std::uint64_t k, std::uint32_t j) {
  const double u1 = (double(unit_bits(k, 2 * j)) + 0.5) * 0x1.0p-32;
  const double u2 = double(unit_bits(k, 2 * j + 1)) * 0x1.0p-32;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Rows [r0, r1) of X̃ = (X + σ·ε) ⊙ m₀ / (1 − p₀) into dst (both rows × cols,
// row-major; dst may be x). sigma = 0: no noise; p = 0: no dropout.
template <class T>
void perturb_inputs(T* dst, const T* x, Index r0, Index r1, Index cols, double sigma, double p, const DrawKey& key) {
  const std::uint32_t threshold = keep_threshold(p);
  const T scale = T(1.0 / (1.0 - p));
  for (Index r = r0; r < r1; ++r) {
    const T* s = x + r * cols;
    T* d = dst + r * cols;
    if (sigma > 0.0) {
      const std::uint64_t k = row_key(key.seed, key.step, kNoiseSite, std::uint64_t(key.row0 + r));
      for (Index j = 0; j < cols; ++j) d[j] = s[j] + T(sigma * gaussian(k, std::uint32_t(j)));
      s = d;
    }
    if (p > 0.0) {
      const std::uint64_t k = row_key(key.seed, key.step, 0, std::uint64_t(key.row0 + r));
#pragma omp simd
      for (Index j = 0; j < cols; ++j) d[j] = unit_bits(k, std::uint32_t(j)) >= threshold ? s[j] * scale : T(0);
    } else if (s != d) {
      for (Index j = 0; j < cols; ++j) d[j] = s[j];
    }
  }
}

}  // namespace fastmlp
