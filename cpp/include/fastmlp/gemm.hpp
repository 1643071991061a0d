// The GEMM layer: every matrix product the engine makes goes through gemm().
//
//   C[:, cols] (m × n, row stride ldc)  =  op(A) (m × k) · op(B) (k × n)   (+ C when accumulate)
//   then epilogue(tile) on each finished block of C (bias, activation: fused while the block is in cache)
//
// op(X) is X or Xᵀ of a row-major array (Operand). One thread computes the
// columns `cols` of C, serially: a team shares a product by columns, as the
// kernels of dense.hpp always have (parallel.hpp decides the shares).
//
// Two kernels, one chosen per CPU class at run time (gemm_kernel()):
//  - Kernel::Eigen   Eigen's GEMM (every scalar type, every instruction set);
//  - Kernel::Packed  a BLIS-style float kernel of our own: op(B) packed into
//                    panels of kNr columns and op(A) into strips of kMr rows
//                    (zero-padded, so the micro-kernel has no edge cases), a
//                    kMr × kNr register tile of FMAs (AVX-512: 8 × 32, AVX2:
//                    6 × 16), the epilogue run on each tile as it is stored.
//                    Built where the core is compiled with AVX2+FMA or AVX-512.
// FASTMLP_GEMM=eigen|packed forces one (tests, measurements); kernel_why()
// says why the one in use was chosen (show_config).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>

#include "fastmlp/tensor.hpp"

#if (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))) && !defined(FASTMLP_NO_PACKED_GEMM)
#include <immintrin.h>
#define FASTMLP_PACKED_GEMM 1
#endif

namespace fastmlp {

namespace gemm {

enum class Kernel { Eigen, Packed };

// True where this build has the packed float kernel.
constexpr bool packed_available() {
#ifdef FASTMLP_PACKED_GEMM
  return true;
#else
  return false;
#endif
}

// The kernel products of float use (double always uses Eigen): FASTMLP_GEMM if
// set (an unknown or unavailable name falls back to the default, and why()
// says so), else the default of this build. Read once.
Kernel kernel();
const char* kernel_name(Kernel k);
const char* kernel_why();
// Forces a kernel from now on (tests); false if it is not available here.
bool set_kernel(Kernel k);

// A row-major array read as op(X): element (i, p) of op(X) is x[i * ld + p],
// or x[p * ld + i] when transposed.
template <class T>
struct Operand {
  const T* data = nullptr;
  Index ld = 0;
  bool transposed = false;
  T at(Index i, Index p) const { return transposed ? data[p * ld + i] : data[i * ld + p]; }
};
template <class T>
Operand<T> plain(const T* x, Index ld) {
  return {x, ld, false};
}
template <class T>
Operand<T> transposed(const T* x, Index ld) {
  return {x, ld, true};
}

// An epilogue that does nothing.
struct NoEpilogue {
  template <class T>
  void operator()(T*, Index, Index, Index, Index, Index) const {}
};

// --- The packed kernel's geometry

#ifndef FASTMLP_GEMM_MR
#if defined(__AVX512F__)
#define FASTMLP_GEMM_MR 8
#define FASTMLP_GEMM_NR 32
#else
#define FASTMLP_GEMM_MR 6
#define FASTMLP_GEMM_NR 16
#endif
#define FASTMLP_GEMM_KC 384
#define FASTMLP_GEMM_MC 96
#define FASTMLP_GEMM_NC 1024
#endif
inline constexpr Index kMr = FASTMLP_GEMM_MR, kNr = FASTMLP_GEMM_NR;
inline constexpr Index kKc = FASTMLP_GEMM_KC;  // depth of a block: a kKc × kNr panel stays in L1/L2
inline constexpr Index kMc = FASTMLP_GEMM_MC;  // rows of A packed at once (kMc × kKc in L2); a multiple of kMr for both
inline constexpr Index kNc = FASTMLP_GEMM_NC;  // columns of B packed at once (kKc × kNc)
// Below this many rows of C, Eigen's product (a GEMV for one row): packing all
// of B for a few rows costs more than the packed kernel saves.
inline constexpr Index kMinPackedRows = 16;

// The scratch one thread's products pack into, sized by its owner (before any
// parallel region) for the largest product it will run: a block of op(A) of
// at most kMc rows and a panel of op(B) of at most kNc columns, each at most
// kKc deep — a few KB for a small network, at most 1.7 MB whatever the sizes.
struct Scratch {
  // Values a product with at most m rows, n columns and depth k packs: its A block, its B panel.
  static Index a_values(Index m, Index k) { return round_up(std::min(m, kMc), kMr) * std::min(k, kKc); }
  static Index b_values(Index n, Index k) { return round_up(std::min(n, kNc), kNr) * std::min(k, kKc); }
  std::unique_ptr<float, decltype(&std::free)> a{nullptr, &std::free}, b{nullptr, &std::free};
  Index a_size = 0, b_size = 0;  // values allocated
  // Room for every product of at most m rows, n columns and depth k (kept if larger). Throws std::bad_alloc.
  void reserve(Index m, Index n, Index k);
  bool fits(Index m, Index n, Index k) const { return a_values(m, k) <= a_size && b_values(n, k) <= b_size; }

 private:
  static Index round_up(Index x, Index to) { return (x + to - 1) / to * to; }
};

#ifdef FASTMLP_PACKED_GEMM
namespace detail {

#if defined(__AVX512F__)
using Reg = __m512;
inline Reg load(const float* p) { return _mm512_load_ps(p); }
inline Reg loadu(const float* p) { return _mm512_loadu_ps(p); }
inline void storeu(float* p, Reg v) { _mm512_storeu_ps(p, v); }
inline Reg bcast(const float* p) { return _mm512_set1_ps(*p); }
inline Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
inline Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
inline Reg zero() { return _mm512_setzero_ps(); }
inline constexpr Index kLanes = 16;
#else
using Reg = __m256;
inline Reg load(const float* p) { return _mm256_load_ps(p); }
inline Reg loadu(const float* p) { return _mm256_loadu_ps(p); }
inline void storeu(float* p, Reg v) { _mm256_storeu_ps(p, v); }
inline Reg bcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
inline Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
inline Reg zero() { return _mm256_setzero_ps(); }
inline constexpr Index kLanes = 8;
#endif
inline constexpr Index kVecs = kNr / kLanes;  // registers across a tile's row

// dst[c * ld_dst + r] = src[r * ld_src + c] for an 8 × 8 block (AVX shuffles).
inline void transpose8x8(const float* src, Index ld_src, float* dst, Index ld_dst) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld_src);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + i * ld_dst, t[i]);
}

// tile (kMr × kNr) = Σ_p a[p*kMr + i] · b[p*kNr + j] over kc steps; then
// c (row stride ldc) = tile, or c += tile when add. The whole tile is written.
inline void micro_kernel(Index kc, const float* a, const float* b, float* c, Index ldc, bool add_to_c) {
  Reg acc[kMr][kVecs];
  for (Index i = 0; i < kMr; ++i)
    for (Index v = 0; v < kVecs; ++v) acc[i][v] = zero();
  for (Index p = 0; p < kc; ++p, a += kMr, b += kNr) {
    Reg bv[kVecs];
    for (Index v = 0; v < kVecs; ++v) bv[v] = load(b + v * kLanes);
    for (Index i = 0; i < kMr; ++i) {
      const Reg ai = bcast(a + i);
      for (Index v = 0; v < kVecs; ++v) acc[i][v] = fma(ai, bv[v], acc[i][v]);
    }
  }
  for (Index i = 0; i < kMr; ++i)
    for (Index v = 0; v < kVecs; ++v) {
      float* ci = c + i * ldc + v * kLanes;
      storeu(ci, add_to_c ? add(loadu(ci), acc[i][v]) : acc[i][v]);
    }
}

// Packs op(A)[i0 : i0 + mc, p0 : p0 + kc] into strips of kMr rows: strip s
// holds, for each p, its kMr values of column p (rows past mc are zeros).
inline void pack_a(const Operand<float>& A, Index i0, Index mc, Index p0, Index kc, float* out) {
  for (Index s = 0; s < mc; s += kMr, out += kMr * kc) {
    const Index rows = std::min(kMr, mc - s);
    if (A.transposed) {  // op(A)(i, p) = data[p * ld + i]: each p reads rows contiguous values
      for (Index p = 0; p < kc; ++p) {
        const float* src = A.data + (p0 + p) * A.ld + i0 + s;
        float* dst = out + p * kMr;
        Index i = 0;
        for (; i < rows; ++i) dst[i] = src[i];
        for (; i < kMr; ++i) dst[i] = 0.0f;
      }
    } else {  // op(A)(i, p) = data[i * ld + p]: kMr rows read side by side
      const float* src = A.data + (i0 + s) * A.ld + p0;
      Index p = 0;
      if (rows == kMr && kMr % 8 == 0)  // whole 8 × 8 blocks transposed in registers
        for (; p + 8 <= kc; p += 8)
          for (Index i = 0; i < kMr; i += 8) transpose8x8(src + i * A.ld + p, A.ld, out + p * kMr + i, kMr);
      for (; p < kc; ++p) {
        float* dst = out + p * kMr;
        Index i = 0;
        for (; i < rows; ++i) dst[i] = src[i * A.ld + p];
        for (; i < kMr; ++i) dst[i] = 0.0f;
      }
    }
  }
}

// Packs op(B)[p0 : p0 + kc, j0 : j0 + nc] into panels of kNr columns: panel q
// holds, for each p, its kNr values of row p (columns past nc are zeros).
inline void pack_b(const Operand<float>& B, Index p0, Index kc, Index j0, Index nc, float* out) {
  for (Index q = 0; q < nc; q += kNr, out += kNr * kc) {
    const Index cols = std::min(kNr, nc - q);
    if (!B.transposed) {  // row p of op(B) is contiguous
      for (Index p = 0; p < kc; ++p) {
        const float* src = B.data + (p0 + p) * B.ld + j0 + q;
        float* dst = out + p * kNr;
        if (cols == kNr) {
          std::memcpy(dst, src, sizeof(float) * kNr);
        } else {
          Index j = 0;
          for (; j < cols; ++j) dst[j] = src[j];
          for (; j < kNr; ++j) dst[j] = 0.0f;
        }
      }
    } else {  // op(B)(p, j) = data[j * ld + p]: kNr rows of the array read side by side
      const float* src = B.data + (j0 + q) * B.ld + p0;
      Index p = 0;
      if (cols == kNr)  // whole 8 × 8 blocks transposed in registers
        for (; p + 8 <= kc; p += 8)
          for (Index j = 0; j < kNr; j += 8) transpose8x8(src + j * B.ld + p, B.ld, out + p * kNr + j, kNr);
      for (; p < kc; ++p) {
        float* dst = out + p * kNr;
        Index j = 0;
        for (; j < cols; ++j) dst[j] = src[j * B.ld + p];
        for (; j < kNr; ++j) dst[j] = 0.0f;
      }
    }
  }
}

// C[i0 : i0 + mc, j0 : j0 + nc] (+)= packed A block · packed B panel over kc;
// the epilogue runs on each finished tile when `last` (the last depth block).
template <class Epilogue>
void macro_kernel(Index mc, Index nc, Index kc, const float* ap, const float* bp, float* c, Index ldc, Index i0,
                  Index j0, bool add_to_c, bool last, Epilogue& epilogue) {
  alignas(64) float edge[kMr * kNr];
  for (Index q = 0; q < nc; q += kNr) {
    const Index cols = std::min(kNr, nc - q);
    const float* b = bp + q * kc;
    for (Index s = 0; s < mc; s += kMr) {
      const Index rows = std::min(kMr, mc - s);
      const float* a = ap + s * kc;
      float* ct = c + (i0 + s) * ldc + j0 + q;
      if (rows == kMr && cols == kNr) {
        micro_kernel(kc, a, b, ct, ldc, add_to_c);
      } else {  // an edge tile: computed whole into `edge`, its valid part copied
        micro_kernel(kc, a, b, edge, kNr, false);
        for (Index i = 0; i < rows; ++i)
          for (Index j = 0; j < cols; ++j) ct[i * ldc + j] = (add_to_c ? ct[i * ldc + j] : 0.0f) + edge[i * kNr + j];
      }
      if (last) epilogue(c, ldc, i0 + s, rows, j0 + q, cols);
    }
  }
}

template <class Epilogue>
void packed(Index m, Index n, Index k, const Operand<float>& A, const Operand<float>& B, float* c, Index ldc,
            Range cols, bool accumulate, Scratch& scratch, Epilogue& epilogue) {
  float* ap = scratch.a.get();
  float* bp = scratch.b.get();
  for (Index j0 = cols.begin; j0 < cols.end; j0 += kNc) {
    const Index nc = std::min(kNc, cols.end - j0);
    for (Index p0 = 0; p0 < k; p0 += kKc) {
      const Index kc = std::min(kKc, k - p0);
      pack_b(B, p0, kc, j0, nc, bp);
      const bool add_to_c = accumulate || p0 > 0, last = p0 + kc >= k;
      for (Index i0 = 0; i0 < m; i0 += kMc) {
        const Index mc = std::min(kMc, m - i0);
        pack_a(A, i0, mc, p0, kc, ap);
        macro_kernel(mc, nc, kc, ap, bp, c, ldc, i0, j0, add_to_c, last, epilogue);
      }
    }
  }
}

}  // namespace detail
#endif  // FASTMLP_PACKED_GEMM

// Eigen's product over the same operands.
template <class T>
void eigen_product(Index m, Index n, Index k, const Operand<T>& A, const Operand<T>& B, T* c, Index ldc, Range cols,
                   bool accumulate) {
  using Strided = Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>>;
  Eigen::Map<Matrix<T>, 0, Eigen::OuterStride<>> C(c, m, ldc, Eigen::OuterStride<>(ldc));
  auto out = C.middleCols(cols.begin, cols.size());
  const auto product = [&](const auto& a, const auto& b) {
    if (accumulate) {
      out.noalias() += a * b;
    } else {
      out.noalias() = a * b;
    }
  };
  const Strided a_plain(A.data, A.transposed ? k : m, A.transposed ? m : k, Eigen::OuterStride<>(A.ld));
  const Strided b_plain(B.data, B.transposed ? n : k, B.transposed ? k : n, Eigen::OuterStride<>(B.ld));
  if (!A.transposed && !B.transposed) product(a_plain, b_plain.middleCols(cols.begin, cols.size()));
  if (!A.transposed && B.transposed) product(a_plain, b_plain.middleRows(cols.begin, cols.size()).transpose());
  if (A.transposed && !B.transposed) product(a_plain.transpose(), b_plain.middleCols(cols.begin, cols.size()));
  if (A.transposed && B.transposed)
    product(a_plain.transpose(), b_plain.middleRows(cols.begin, cols.size()).transpose());
}

// The product, then epilogue(c, ldc, row0, rows, col0, cols) over the result
// (per tile with the packed kernel, once over rows × `cols` with Eigen's).
// The packed kernel runs only where `scratch` fits the product (float); else Eigen's.
template <class T, class Epilogue = NoEpilogue>
void gemm(Index m, Index n, Index k, const Operand<T>& A, const Operand<T>& B, T* c, Index ldc, Range cols,
          bool accumulate, Scratch* scratch, Epilogue&& epilogue = {}) {
  if (cols.size() <= 0 || m <= 0) return;
  if (k <= 0) {  // an empty sum
    if (!accumulate)
      for (Index i = 0; i < m; ++i) std::fill(c + i * ldc + cols.begin, c + i * ldc + cols.end, T(0));
    epilogue(c, ldc, 0, m, cols.begin, cols.size());
    return;
  }
#ifdef FASTMLP_PACKED_GEMM
  if constexpr (std::is_same_v<T, float>) {
    if (m >= kMinPackedRows && scratch != nullptr && scratch->fits(m, n, k) && kernel() == Kernel::Packed) {
      detail::packed(m, n, k, A, B, c, ldc, cols, accumulate, *scratch, epilogue);
      return;
    }
  }
#else
  (void)scratch;
#endif
  eigen_product(m, n, k, A, B, c, ldc, cols, accumulate);
  epilogue(c, ldc, 0, m, cols.begin, cols.size());
}

}  // namespace gemm
}  // namespace fastmlp
