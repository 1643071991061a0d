#include "fastmlp/gemm.hpp"

#include <atomic>
#include <new>
#include <string>

namespace fastmlp::gemm {

namespace {

// The default kernel of this build, by measurement (1 thread, float32, GFLOP/s
// of the engine's product shapes; benchmarks/gemm.py, docs/benchmark.md):
//  - AVX-512 builds: the packed kernel (AMD EPYC Zen 4: 85-100 against
//    Eigen's 65-82 on every shape, OpenBLAS 90-93);
//  - AVX2 builds: Eigen (Zen 4 with AVX2 forced: Eigen 73-99, the packed
//    6 × 16 kernel 79-98, neither ahead on every shape);
//  - without AVX2: Eigen, the only one built.
#if defined(FASTMLP_PACKED_GEMM) && defined(__AVX512F__)
constexpr Kernel kDefault = Kernel::Packed;
constexpr const char* kDefaultWhy = "default for this build (AVX-512): measured faster than Eigen's GEMM";
#elif defined(FASTMLP_PACKED_GEMM)
constexpr Kernel kDefault = Kernel::Eigen;
constexpr const char* kDefaultWhy = "default for this build (AVX2): measured on par with the packed kernel";
#else
constexpr Kernel kDefault = Kernel::Eigen;
constexpr const char* kDefaultWhy = "default for this build (no AVX2/FMA: the packed kernel is not built)";
#endif

struct Choice {
  Kernel kernel;
  std::string why;
};

Choice from_environment() {
  const char* v = std::getenv("FASTMLP_GEMM");
  if (v == nullptr || *v == '\0') return {kDefault, kDefaultWhy};
  const std::string s(v);
  if (s == "eigen") return {Kernel::Eigen, "FASTMLP_GEMM=eigen"};
  if (s == "packed") {
    if (packed_available()) return {Kernel::Packed, "FASTMLP_GEMM=packed"};
    return {kDefault, std::string("FASTMLP_GEMM=packed, but this build has no packed kernel (it needs AVX2+FMA); ") +
                          kDefaultWhy};
  }
  return {kDefault, "FASTMLP_GEMM='" + s + "' is not a kernel (eigen, packed); " + kDefaultWhy};
}

Choice& choice() {
  static Choice c = from_environment();
  return c;
}

std::atomic<Kernel>& current() {
  static std::atomic<Kernel> k{choice().kernel};
  return k;
}

}  // namespace

Kernel kernel() { return current().load(std::memory_order_relaxed); }

const char* kernel_name(Kernel k) { return k == Kernel::Packed ? "packed" : "eigen"; }

// The choice's reason while it stands; a kernel forced since by set_kernel() says so.
const char* kernel_why() { return kernel() == choice().kernel ? choice().why.c_str() : "forced by set_kernel()"; }

bool set_kernel(Kernel k) {
  if (k == Kernel::Packed && !packed_available()) return false;
  current().store(k, std::memory_order_relaxed);
  return true;
}

namespace {

bool cpu_has_avx512bf16() {
#ifdef FASTMLP_BF16_GEMM
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

struct Bf16Choice {
  Bf16Kernel kernel;
  std::string why;
};

Bf16Choice bf16_from_environment() {
  const char* v = std::getenv("FASTMLP_BF16");
  const std::string s = v == nullptr ? "" : v;
  std::string why;
  if (s == "fallback") return {Bf16Kernel::Fallback, "FASTMLP_BF16=fallback"};
  if (!s.empty() && s != "avx512bf16") why = "FASTMLP_BF16='" + s + "' is not a kernel (avx512bf16, fallback); ";
  if (bf16_native_available()) return {Bf16Kernel::Avx512Bf16, why + "the CPU has AVX512-BF16"};
#ifdef FASTMLP_BF16_GEMM
  return {Bf16Kernel::Fallback, why + "the CPU has no AVX512-BF16: operands rounded, float32 products"};
#else
  return {Bf16Kernel::Fallback,
          why + "this build has no AVX512-BF16 kernel (it needs AVX-512 BW/VL): operands rounded, float32 products"};
#endif
}

Bf16Choice& bf16_choice() {
  static Bf16Choice c = bf16_from_environment();
  return c;
}

std::atomic<Bf16Kernel>& bf16_current() {
  static std::atomic<Bf16Kernel> k{bf16_choice().kernel};
  return k;
}

}  // namespace

bool bf16_native_available() {
  static const bool available = cpu_has_avx512bf16();
  return available;
}

Bf16Kernel bf16_kernel() { return bf16_current().load(std::memory_order_relaxed); }

const char* bf16_kernel_name(Bf16Kernel k) { return k == Bf16Kernel::Avx512Bf16 ? "avx512bf16" : "fallback"; }

const char* bf16_kernel_why() {
  return bf16_kernel() == bf16_choice().kernel ? bf16_choice().why.c_str() : "forced by set_bf16_kernel()";
}

bool set_bf16_kernel(Bf16Kernel k) {
  if (k == Bf16Kernel::Avx512Bf16 && !bf16_native_available()) return false;
  bf16_current().store(k, std::memory_order_relaxed);
  return true;
}

void Scratch::reserve(Index m, Index n, Index k, Precision precision) {
  const auto grow = [](Buffer& buffer, Index& size, Index values) {
    if (values <= size) return;
    // aligned_alloc wants a size that is a multiple of the alignment
    void* p = std::aligned_alloc(64, (std::size_t(values) * sizeof(float) + 63) / 64 * 64);
    if (p == nullptr) throw std::bad_alloc();
    buffer.reset(static_cast<float*>(p));
    size = values;
  };
  grow(a, a_size, a_values(m, k));
  grow(b, b_size, b_values(n, k));
  if (precision == Precision::BF16) {
    grow(rounded_a, rounded_a_size, rounded_a_values(m, k));
    grow(rounded_b, rounded_b_size, rounded_b_values(n, k));
  }
}

bool PackedB::wanted(Precision precision) {
  if (precision == Precision::BF16) {
#ifdef FASTMLP_BF16_GEMM
    return bf16_kernel() == Bf16Kernel::Avx512Bf16;
#else
    return false;
#endif
  }
  return packed_available() && kernel() == Kernel::Packed;
}

void PackedB::pack(const float* source, Index rows, Index cols, Precision how) {
  values = source;
  k = rows;
  n = cols;
  precision = how;
  panels.reset();
  if (!wanted(how) || k <= 0 || n <= 0) return;
#ifdef FASTMLP_PACKED_GEMM
  // Depth blocks of `block` values, `per` values a packed element (both 4 bytes).
  const bool bf16 = how == Precision::BF16;
  const Index block = bf16 ? 2 * kKc : kKc, per = bf16 ? 2 : 1, padded = (n + kNr - 1) / kNr * kNr;
  Index elements = 0;
  for (Index p0 = 0; p0 < k; p0 += block) elements += padded * ((std::min(block, k - p0) + per - 1) / per);
  void* p = std::aligned_alloc(64, (std::size_t(elements) * sizeof(float) + 63) / 64 * 64);
  if (p == nullptr) throw std::bad_alloc();
  panels.reset(static_cast<float*>(p));
  const Operand<float> B = plain(values, n);
  float* out = panels.get();
  for (Index p0 = 0; p0 < k; p0 += block) {
    const Index kc = std::min(block, k - p0);
#ifdef FASTMLP_BF16_GEMM
    if (bf16) {
      detail::bf16::pack_b(B, p0, kc, 0, n, reinterpret_cast<detail::bf16::Word*>(out));
      out += padded * ((kc + 1) / 2);
      continue;
    }
#endif
    detail::pack_b(B, p0, kc, 0, n, out);
    out += padded * kc;
  }
#endif
}

}  // namespace fastmlp::gemm
