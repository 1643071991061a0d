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
//
// Precision::BF16 (float only): the product of op(A) and op(B) with every
// operand rounded to bfloat16 (round to nearest even, as the hardware does),
// accumulated in float32:  C = Σ_p bf16(A[i,p]) · bf16(B[p,j]).  Two kernels:
//  - Bf16Kernel::Avx512Bf16  the packed kernel with pairs of bf16 values
//                            (vdpbf16ps: two products per float lane), where
//                            the CPU has AVX512-BF16 (build: AVX-512 BW/VL);
//  - Bf16Kernel::Fallback    the operands rounded into the scratch's buffers,
//                            then the float product (every CPU; never faster).
// FASTMLP_BF16=fallback forces the fallback.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>

#include "fastmlp/tensor.hpp"

#if (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))) && !defined(FASTMLP_NO_PACKED_GEMM)
#include <immintrin.h>
#define FASTMLP_PACKED_GEMM 1
#endif
// The AVX512-BF16 kernel: compiled where the build has AVX-512 F/BW/VL (its
// functions carry the bf16 target themselves), run where the CPU has it.
#if defined(FASTMLP_PACKED_GEMM) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__GNUC__)
#define FASTMLP_BF16_GEMM 1
#define FASTMLP_TARGET_BF16 __attribute__((target("avx512bf16,avx512bw,avx512vl,avx512f")))
#endif

namespace fastmlp {

namespace gemm {

enum class Kernel { Eigen, Packed };
enum class Precision { Full, BF16 };
enum class Bf16Kernel { Fallback, Avx512Bf16 };

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

// The kernel BF16 products use: Avx512Bf16 where built and the CPU has it,
// unless FASTMLP_BF16=fallback; read once. Like kernel(): a name, the reason,
// and a setter for tests (false where unavailable).
Bf16Kernel bf16_kernel();
bool bf16_native_available();  // built, and the CPU has AVX512-BF16
const char* bf16_kernel_name(Bf16Kernel k);
const char* bf16_kernel_why();
bool set_bf16_kernel(Bf16Kernel k);

// The bits of x rounded to bfloat16: round to nearest, ties to even; a
// denormal to a zero of its sign and a NaN kept quiet (vcvtneps2bf16's rule).
inline std::uint16_t bf16_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7F800000u) == 0) return std::uint16_t((u >> 16) & 0x8000u);       // zero or denormal
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return std::uint16_t((u >> 16) | 0x40u);  // NaN
  u += 0x7FFFu + ((u >> 16) & 1u);
  return std::uint16_t(u >> 16);
}
// x rounded to bfloat16, as a float.
inline float round_bf16(float x) {
  const std::uint32_t u = std::uint32_t(bf16_bits(x)) << 16;
  float r;
  std::memcpy(&r, &u, sizeof r);
  return r;
}

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
// Below this many columns of C, Eigen's product too: the packed kernel pads a
// panel to kNr columns, so an n-column product costs what a kNr-column one
// does (a 1-output layer: kNr times its work).
inline constexpr Index kMinPackedCols = kNr / 2;
// Whether a float product of m rows and n columns runs the packed kernel.
inline constexpr bool packed_shape(Index m, Index n) { return m >= kMinPackedRows && n >= kMinPackedCols; }

// Columns of op(B) the bf16 fallback rounds at once (its B buffer: k × this).
inline constexpr Index kRoundCols = 256;

// The scratch one thread's products pack into, sized by its owner (before any
// parallel region) for the largest product it will run: a block of op(A) of
// at most kMc rows and a panel of op(B) of at most kNc columns, each at most
// kKc deep — a few KB for a small network, at most 1.7 MB whatever the sizes.
// For Precision::BF16 also the fallback's rounded operands: op(A) whole
// (m × k) and kRoundCols columns of op(B).
struct Scratch {
  // Values a product with at most m rows, n columns and depth k packs: its A block, its B panel.
  static Index a_values(Index m, Index k) { return round_up(std::min(m, kMc), kMr) * std::min(k, kKc); }
  static Index b_values(Index n, Index k) { return round_up(std::min(n, kNc), kNr) * std::min(k, kKc); }
  // ... and rounds (bf16 fallback).
  static Index rounded_a_values(Index m, Index k) { return m * k; }
  static Index rounded_b_values(Index n, Index k) { return std::min(n, kRoundCols) * k; }
  using Buffer = std::unique_ptr<float, decltype(&std::free)>;
  Buffer a{nullptr, &std::free}, b{nullptr, &std::free};
  Buffer rounded_a{nullptr, &std::free}, rounded_b{nullptr, &std::free};
  Index a_size = 0, b_size = 0, rounded_a_size = 0, rounded_b_size = 0;  // values allocated
  // Room for every product of at most m rows, n columns and depth k in
  // `precision` (kept if larger). Throws std::bad_alloc.
  void reserve(Index m, Index n, Index k, Precision precision = Precision::Full);
  bool fits(Index m, Index n, Index k) const { return a_values(m, k) <= a_size && b_values(n, k) <= b_size; }
  bool rounding_fits(Index m, Index n, Index k) const {
    return rounded_a_values(m, k) <= rounded_a_size && rounded_b_values(n, k) <= rounded_b_size;
  }

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

// C[i0 : i0 + mc, j0 : j0 + nc] (+)= packed A block · packed B panel of
// `depth` packed values (P: float, or a pair of bf16 in a uint32) with
// micro(depth, a, b, c, ldc, add) the tile kernel; the epilogue runs on each
// finished tile when `last` (the last depth block).
template <class P, class Micro, class Epilogue>
void macro_kernel(Index mc, Index nc, Index depth, const P* ap, const P* bp, float* c, Index ldc, Index i0, Index j0,
                  bool add_to_c, bool last, Micro&& micro, Epilogue& epilogue) {
  alignas(64) float edge[kMr * kNr];
  for (Index q = 0; q < nc; q += kNr) {
    const Index cols = std::min(kNr, nc - q);
    const P* b = bp + q * depth;
    for (Index s = 0; s < mc; s += kMr) {
      const Index rows = std::min(kMr, mc - s);
      const P* a = ap + s * depth;
      float* ct = c + (i0 + s) * ldc + j0 + q;
      if (rows == kMr && cols == kNr) {
        micro(depth, a, b, ct, ldc, add_to_c);
      } else {  // an edge tile: computed whole into `edge`, its valid part copied
        micro(depth, a, b, edge, kNr, false);
        for (Index i = 0; i < rows; ++i)
          for (Index j = 0; j < cols; ++j) ct[i * ldc + j] = (add_to_c ? ct[i * ldc + j] : 0.0f) + edge[i * kNr + j];
      }
      if (last) epilogue(c, ldc, i0 + s, rows, j0 + q, cols);
    }
  }
}

// The blocked product both packed kernels share (BLIS's loops): for each
// panel of kNc columns and each depth block of `block` values, op(B)'s block
// packed once, then for each kMc rows op(A)'s block packed and multiplied.
// P: the packed element, holding `per` values of the depth (float: 1; a bf16
// pair: 2); pack_a/pack_b(operand, first, count, p0, kc, out) pack a block,
// micro is the tile kernel. With `prepacked` (PackedB::panels, op(B) of n
// columns packed whole; cols.begin a multiple of kNr) op(B)'s blocks are read
// from it instead: block (p0, j0) starts at (p0 / block) · ⌈n⌉ · block / per
// + j0 · depth, ⌈n⌉ = n rounded up to kNr (every block but the last is full).
template <class P, class PackA, class PackB, class Micro, class Epilogue>
void blocked(Index m, Index k, const Operand<float>& A, const Operand<float>& B, float* c, Index ldc, Range cols,
             bool accumulate, P* ap, P* bp, Index block, Index per, PackA&& pack_a, PackB&& pack_b, Micro&& micro,
             Epilogue& epilogue, const P* prepacked = nullptr, Index n = 0) {
  const Index padded = (n + kNr - 1) / kNr * kNr;
  for (Index j0 = cols.begin; j0 < cols.end; j0 += kNc) {
    const Index nc = std::min(kNc, cols.end - j0);
    for (Index p0 = 0; p0 < k; p0 += block) {
      const Index kc = std::min(block, k - p0), depth = (kc + per - 1) / per;
      const P* b = bp;
      if (prepacked != nullptr) {
        b = prepacked + (p0 / block) * padded * (block / per) + j0 * depth;
      } else {
        pack_b(B, p0, kc, j0, nc, bp);
      }
      const bool add_to_c = accumulate || p0 > 0, last = p0 + kc >= k;
      for (Index i0 = 0; i0 < m; i0 += kMc) {
        const Index mc = std::min(kMc, m - i0);
        pack_a(A, i0, mc, p0, kc, ap);
        macro_kernel(mc, nc, depth, ap, b, c, ldc, i0, j0, add_to_c, last, micro, epilogue);
      }
    }
  }
}

// prepacked: op(B)'s PackedB panels, or null (packed here, block by block).
template <class Epilogue>
void packed(Index m, Index n, Index k, const Operand<float>& A, const Operand<float>& B, float* c, Index ldc,
            Range cols, bool accumulate, Scratch& scratch, Epilogue& epilogue, const float* prepacked = nullptr) {
  blocked(m, k, A, B, c, ldc, cols, accumulate, scratch.a.get(), scratch.b.get(), kKc, 1, pack_a, pack_b, micro_kernel,
          epilogue, prepacked, n);
}

#ifdef FASTMLP_BF16_GEMM
// The AVX512-BF16 kernel. A depth block of kc values is packed as ⌈kc/2⌉
// pairs: the word of pair t holds bf16(x[2t]) in its low half and
// bf16(x[2t + 1]) (0 past kc) in its high half, and vdpbf16ps adds both
// products of a pair into a float lane:  acc[j] += a₀·b₀[j] + a₁·b₁[j].
// Products of bf16 values are exact in float32, so each step is a float FMA.
namespace bf16 {

using Word = std::uint32_t;

// Depth of a packed block, in values: kKc pairs, the same bytes as a float block.
inline constexpr Index kKcValues = 2 * kKc;

// w[j] = bf16(r0[j]) | bf16(r1[j]) << 16 for j < n (r1 null: zeros).
FASTMLP_TARGET_BF16 inline void pair_rows(const float* r0, const float* r1, Index n, Word* w) {
  // 16-bit element e of the result: element e/2 of r0 (e even) or of r1 (e odd),
  // from cvtne2ps's [bf16(r0[0..15]) | bf16(r1[0..15])].
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (Index j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1u);
    const __m512 lo = _mm512_maskz_loadu_ps(m, r0 + j);
    const __m512 hi = r1 != nullptr ? _mm512_maskz_loadu_ps(m, r1 + j) : _mm512_setzero_ps();
    const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    _mm512_mask_storeu_epi32(w + j, m, _mm512_permutexvar_epi16(interleave, both));
  }
}

// Lines of values contiguous in depth (op(A) plain, op(B) transposed): line i
// (i < lines <= width) is src[i * ld + p], p < kc; writes out[t * width + i]
// for every pair t, lines past `lines` zero.
FASTMLP_TARGET_BF16 inline void pack_lines(const float* src, Index ld, Index lines, Index kc, Index width, Word* out) {
  const Index pairs = (kc + 1) / 2;
  Index i = 0;
  if (kc % 16 == 0)  // 8 lines × 8 pairs at a time: converted, then an 8 × 8 word transpose
    for (; i + 8 <= lines; i += 8)
      for (Index t = 0; t < pairs; t += 8) {
        alignas(32) Word block[8 * 8];
        for (Index r = 0; r < 8; ++r)
          _mm256_store_si256(reinterpret_cast<__m256i*>(block + 8 * r),
                             (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + (i + r) * ld + 2 * t)));
        transpose8x8(reinterpret_cast<const float*>(block), 8, reinterpret_cast<float*>(out + t * width + i), width);
      }
  for (; i < width; ++i)
    for (Index t = 0; t < pairs; ++t) {
      Word w = 0;
      if (i < lines) {
        const float* x = src + i * ld + 2 * t;
        w = Word(bf16_bits(x[0])) | (2 * t + 1 < kc ? Word(bf16_bits(x[1])) << 16 : 0u);
      }
      out[t * width + i] = w;
    }
}

// Lines of values strided in depth (op(A) transposed, op(B) plain): pair t
// reads src[(2t) * ld + j] and src[(2t + 1) * ld + j], j < count; writes
// out[t * width + j], columns past `count` zero.
FASTMLP_TARGET_BF16 inline void pack_rows(const float* src, Index ld, Index count, Index kc, Index width, Word* out) {
  for (Index t = 0; t < (kc + 1) / 2; ++t) {
    Word* dst = out + t * width;
    pair_rows(src + 2 * t * ld, 2 * t + 1 < kc ? src + (2 * t + 1) * ld : nullptr, count, dst);
    for (Index j = count; j < width; ++j) dst[j] = 0;
  }
}

// op(A)[i0 : i0 + mc, p0 : p0 + kc] into strips of kMr rows of pairs.
FASTMLP_TARGET_BF16 inline void pack_a(const Operand<float>& A, Index i0, Index mc, Index p0, Index kc, Word* out) {
  const Index pairs = (kc + 1) / 2;
  for (Index s = 0; s < mc; s += kMr, out += kMr * pairs) {
    const Index rows = std::min(kMr, mc - s);
    if (A.transposed) {
      pack_rows(A.data + p0 * A.ld + i0 + s, A.ld, rows, kc, kMr, out);
    } else {
      pack_lines(A.data + (i0 + s) * A.ld + p0, A.ld, rows, kc, kMr, out);
    }
  }
}

// op(B)[p0 : p0 + kc, j0 : j0 + nc] into panels of kNr columns of pairs.
FASTMLP_TARGET_BF16 inline void pack_b(const Operand<float>& B, Index p0, Index kc, Index j0, Index nc, Word* out) {
  const Index pairs = (kc + 1) / 2;
  for (Index q = 0; q < nc; q += kNr, out += kNr * pairs) {
    const Index cols = std::min(kNr, nc - q);
    if (B.transposed) {
      pack_lines(B.data + (j0 + q) * B.ld + p0, B.ld, cols, kc, kNr, out);
    } else {
      pack_rows(B.data + p0 * B.ld + j0 + q, B.ld, cols, kc, kNr, out);
    }
  }
}

// tile (kMr × kNr) = Σ_t Σ_{h=0,1} a[t*kMr + i].h · b[t*kNr + j].h over `pairs`; stored as micro_kernel's.
FASTMLP_TARGET_BF16 inline void micro_kernel(Index pairs, const Word* a, const Word* b, float* c, Index ldc,
                                             bool add_to_c) {
  static_assert(kNr == 32 && kLanes == 16, "the bf16 tile is 8 x 32 floats");
  __m512 acc[kMr][2];
  for (Index i = 0; i < kMr; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (Index t = 0; t < pairs; ++t, a += kMr, b += kNr) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 16);
    for (Index i = 0; i < kMr; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(int(a[i]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  for (Index i = 0; i < kMr; ++i)
    for (Index v = 0; v < 2; ++v) {
      float* ci = c + i * ldc + v * 16;
      _mm512_storeu_ps(ci, add_to_c ? _mm512_add_ps(_mm512_loadu_ps(ci), acc[i][v]) : acc[i][v]);
    }
}

// A few rows of C (m <= 4: one row at inference) by op(B) plain,
// with nothing packed but op(A)'s pairs: each pair of B's rows is converted
// as the product reads it (the same loads and as many instructions as float
// FMAs), so a call costs one pass over B, not a packing of B and then a pass.
// C[:, j : j + 16] stays in registers over a depth block of kKcValues.
template <int M>  // the rows, a constant: the accumulators stay in registers
FASTMLP_TARGET_BF16 void few_rows(Index k, const Operand<float>& A, const float* b, Index ldb, float* c, Index ldc,
                                  Range cols, bool accumulate, Word* ap) {
  constexpr Index m = M;
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (Index p0 = 0; p0 < k; p0 += kKcValues) {
    const Index kc = std::min(kKcValues, k - p0), pairs = (kc + 1) / 2;
    pack_a(A, 0, m, p0, kc, ap);  // one strip: ap[t * kMr + i] is row i's pair t
    const bool add_to_c = accumulate || p0 > 0;
    for (Index j = cols.begin; j < cols.end; j += 16) {
      const __mmask16 mask = cols.end - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (cols.end - j)) - 1u);
      __m512 acc[M];
      for (Index i = 0; i < m; ++i)
        acc[i] = add_to_c ? _mm512_maskz_loadu_ps(mask, c + i * ldc + j) : _mm512_setzero_ps();
      const float* bj = b + p0 * ldb + j;
      for (Index t = 0; t < pairs; ++t) {
        const __m512 lo = _mm512_maskz_loadu_ps(mask, bj + 2 * t * ldb);
        const __m512 hi = 2 * t + 1 < kc ? _mm512_maskz_loadu_ps(mask, bj + (2 * t + 1) * ldb) : _mm512_setzero_ps();
        const __m512bh w = (__m512bh)_mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        for (Index i = 0; i < m; ++i)
          acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)_mm512_set1_epi32(int(ap[t * kMr + i])), w);
      }
      for (Index i = 0; i < m; ++i) _mm512_mask_storeu_ps(c + i * ldc + j, mask, acc[i]);
    }
  }
}

template <class Epilogue>
void packed(Index m, Index n, Index k, const Operand<float>& A, const Operand<float>& B, float* c, Index ldc,
            Range cols, bool accumulate, Scratch& scratch, Epilogue& epilogue, const Word* prepacked = nullptr) {
  Word* ap = reinterpret_cast<Word*>(scratch.a.get());
  if (m <= 4 && !A.transposed && !B.transposed) {
    if (m == 1) few_rows<1>(k, A, B.data, B.ld, c, ldc, cols, accumulate, ap);
    if (m == 2) few_rows<2>(k, A, B.data, B.ld, c, ldc, cols, accumulate, ap);
    if (m == 3) few_rows<3>(k, A, B.data, B.ld, c, ldc, cols, accumulate, ap);
    if (m == 4) few_rows<4>(k, A, B.data, B.ld, c, ldc, cols, accumulate, ap);
    epilogue(c, ldc, 0, m, cols.begin, cols.size());
    return;
  }
  Word* bp = reinterpret_cast<Word*>(scratch.b.get());
  blocked(m, k, A, B, c, ldc, cols, accumulate, ap, bp, kKcValues, 2, pack_a, pack_b, micro_kernel, epilogue, prepacked,
          n);
}

}  // namespace bf16
#endif  // FASTMLP_BF16_GEMM
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

// The full-precision product: the packed kernel where `scratch` fits it
// (float), else Eigen's; then the epilogue (per tile, or once over the result).
template <class T, class Epilogue>
void full_product(Index m, Index n, Index k, const Operand<T>& A, const Operand<T>& B, T* c, Index ldc, Range cols,
                  bool accumulate, Scratch* scratch, Epilogue& epilogue) {
#ifdef FASTMLP_PACKED_GEMM
  if constexpr (std::is_same_v<T, float>) {
    if (packed_shape(m, n) && scratch != nullptr && scratch->fits(m, n, k) && kernel() == Kernel::Packed) {
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

// The BF16 product without the AVX512-BF16 kernel: op(A) rounded whole into
// the scratch, op(B) kRoundCols columns at a time, then the float product of
// the rounded copies. Where the owner reserved no room (Scratch::reserve with
// Precision::BF16), a scalar loop: slow, never wrong, never allocating.
template <class Epilogue>
void bf16_fallback(Index m, Index n, Index k, const Operand<float>& A, const Operand<float>& B, float* c, Index ldc,
                   Range cols, bool accumulate, Scratch* scratch, Epilogue& epilogue) {
  if (scratch == nullptr || !scratch->rounding_fits(m, n, k)) {
    for (Index i = 0; i < m; ++i)
      for (Index j = cols.begin; j < cols.end; ++j) {
        float sum = 0.0f;
        for (Index p = 0; p < k; ++p) sum += round_bf16(A.at(i, p)) * round_bf16(B.at(p, j));
        c[i * ldc + j] = accumulate ? c[i * ldc + j] + sum : sum;
      }
    epilogue(c, ldc, 0, m, cols.begin, cols.size());
    return;
  }
  float* ra = scratch->rounded_a.get();  // op(A), m × k
  if (A.transposed) {
    for (Index p = 0; p < k; ++p)
      for (Index i = 0; i < m; ++i) ra[i * k + p] = round_bf16(A.data[p * A.ld + i]);
  } else {
    for (Index i = 0; i < m; ++i)
      for (Index p = 0; p < k; ++p) ra[i * k + p] = round_bf16(A.data[i * A.ld + p]);
  }
  float* rb = scratch->rounded_b.get();  // op(B)[:, j0 : j0 + nc], k × nc
  for (Index j0 = cols.begin; j0 < cols.end; j0 += kRoundCols) {
    const Index nc = std::min(kRoundCols, cols.end - j0);
    if (B.transposed) {
      for (Index j = 0; j < nc; ++j)
        for (Index p = 0; p < k; ++p) rb[p * nc + j] = round_bf16(B.data[(j0 + j) * B.ld + p]);
    } else {
      for (Index p = 0; p < k; ++p)
        for (Index j = 0; j < nc; ++j) rb[p * nc + j] = round_bf16(B.data[p * B.ld + j0 + j]);
    }
    // The block's columns start at 0 in the product, at j0 in C and for the epilogue.
    const auto shifted = [&](float* o, Index ld, Index r0, Index rows, Index c0, Index count) {
      epilogue(o - j0, ld, r0, rows, c0 + j0, count);
    };
    full_product<float>(m, nc, k, plain(static_cast<const float*>(ra), k), plain(static_cast<const float*>(rb), nc),
                        c + j0, ldc, Range{0, nc}, accumulate, scratch, shifted);
  }
}

// The product, then epilogue(c, ldc, row0, rows, col0, cols) over the result
// (per tile with the packed kernels, once over rows × `cols` with Eigen's):
// full precision as full_product; BF16 (float only) with bf16_kernel().
template <class T, class Epilogue = NoEpilogue>
void gemm(Index m, Index n, Index k, const Operand<T>& A, const Operand<T>& B, T* c, Index ldc, Range cols,
          bool accumulate, Scratch* scratch, Precision precision = Precision::Full, Epilogue&& epilogue = {}) {
  if (cols.size() <= 0 || m <= 0) return;
  if (k <= 0) {  // an empty sum
    if (!accumulate)
      for (Index i = 0; i < m; ++i) std::fill(c + i * ldc + cols.begin, c + i * ldc + cols.end, T(0));
    epilogue(c, ldc, 0, m, cols.begin, cols.size());
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (precision == Precision::BF16) {
#ifdef FASTMLP_BF16_GEMM
      if (scratch != nullptr && scratch->fits(m, n, k) && bf16_kernel() == Bf16Kernel::Avx512Bf16) {
        detail::bf16::packed(m, n, k, A, B, c, ldc, cols, accumulate, *scratch, epilogue);
        return;
      }
#endif
      bf16_fallback(m, n, k, A, B, c, ldc, cols, accumulate, scratch, epilogue);
      return;
    }
  }
  (void)precision;
  full_product(m, n, k, A, B, c, ldc, cols, accumulate, scratch, epilogue);
}

// op(B) of products that reuse it (inference's weights): a plain k × n float
// matrix, its values (row-major, not owned) and, where the kernel of its
// precision is the packed one, its panels packed once, in that kernel's
// layout: the depth blocks (kKc floats, or kKcValues as bf16 pairs) one after
// another, each the kernel's pack_b of all n columns (see detail::blocked).
struct PackedB {
  Index k = 0, n = 0;
  const float* values = nullptr;
  Precision precision = Precision::Full;
  Scratch::Buffer panels{nullptr, &std::free};  // null: no packed kernel for `precision` here now
  // Packs values (k × n) for the kernel `precision` uses now; throws std::bad_alloc.
  void pack(const float* values, Index k, Index n, Precision precision);
  // Whether pack() now would make panels (the kernel of `precision` is the packed one).
  static bool wanted(Precision precision);
};

// C[:, cols] = op(A) · B, then epilogue as gemm(): the same product as
// gemm(m, B.n, B.k, A, plain(B.values, B.n), ..., B.precision), with B's
// panels read from the pack where its kernel runs (rows enough, the kernel
// still the one packed for, cols starting on a panel), instead of packed again.
template <class Epilogue = NoEpilogue>
void gemm(Index m, const Operand<float>& A, const PackedB& B, float* c, Index ldc, Range cols, Scratch* scratch,
          Epilogue&& epilogue = {}) {
  const bool usable = B.panels != nullptr && PackedB::wanted(B.precision) && cols.begin % kNr == 0 && cols.size() > 0 &&
                      B.k > 0 && scratch != nullptr && scratch->fits(m, B.n, B.k);
#ifdef FASTMLP_PACKED_GEMM
  if (usable && B.precision == Precision::Full && packed_shape(m, B.n)) {
    detail::packed(m, B.n, B.k, A, plain(B.values, B.n), c, ldc, cols, false, *scratch, epilogue, B.panels.get());
    return;
  }
#endif
#ifdef FASTMLP_BF16_GEMM
  if (usable && B.precision == Precision::BF16 && m > 4) {
    detail::bf16::packed(m, B.n, B.k, A, plain(B.values, B.n), c, ldc, cols, false, *scratch, epilogue,
                         reinterpret_cast<const detail::bf16::Word*>(B.panels.get()));
    return;
  }
#endif
  (void)usable;
  gemm<float>(m, B.n, B.k, A, plain(B.values, B.n), c, ldc, cols, false, scratch, B.precision, epilogue);
}

}  // namespace gemm
}  // namespace fastmlp
