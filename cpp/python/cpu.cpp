// fastmlp._cpu: which x86-64 micro-architecture level this CPU (and OS) runs.
// Built without any -march flag, so that it imports on every x86-64 CPU: the
// package asks it which variant of the core is safe *before* importing one,
// because importing a variant the CPU cannot run dies with SIGILL, which no
// try/except can catch.
#include <pybind11/pybind11.h>

#include <string>

namespace py = pybind11;

namespace {

#if defined(__x86_64__) && defined(__GNUC__)
#define FASTMLP_X86 1
// One entry per feature that show_config() reports.
// clang-format off
#define FASTMLP_FEATURES(X) \
  X("sse4.2") X("popcnt") X("avx") X("avx2") X("fma") X("bmi2") \
  X("avx512f") X("avx512bw") X("avx512cd") X("avx512dq") X("avx512vl")
// clang-format on
#endif

// 0: not x86-64; 1: x86-64 (SSE2); 2: x86-64-v2 (SSE4.2, POPCNT);
// 3: x86-64-v3 (AVX2, FMA, BMI2); 4: x86-64-v4 (AVX-512 F/BW/CD/DQ/VL).
// __builtin_cpu_supports also checks that the OS saves the AVX/AVX-512 state.
int level() {
#if defined(FASTMLP_X86)
  __builtin_cpu_init();
#if !defined(__clang__) && __GNUC__ >= 12
  if (__builtin_cpu_supports("x86-64-v4")) return 4;
  if (__builtin_cpu_supports("x86-64-v3")) return 3;
  if (__builtin_cpu_supports("x86-64-v2")) return 2;
#else  // compilers that do not know the level names: the defining features
  const bool v2 =
      __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("ssse3");
  const bool v3 = v2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl");
  if (v4) return 4;
  if (v3) return 3;
  if (v2) return 2;
#endif
  return 1;
#else
  return 0;
#endif
}

py::dict features() {
  py::dict out;
#if defined(FASTMLP_X86)
  __builtin_cpu_init();
#define FASTMLP_FEATURE(name) out[name] = bool(__builtin_cpu_supports(name));
  FASTMLP_FEATURES(FASTMLP_FEATURE)
#undef FASTMLP_FEATURE
#endif
  return out;
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "The CPU's x86-64 level, read before fastmlp chooses a variant of its core.";
  m.def("level", &level, "0: not x86-64, 1: x86-64, 2: x86-64-v2, 3: x86-64-v3 (AVX2, FMA), 4: x86-64-v4 (AVX-512)");
  m.def("features", &features, "The instruction-set extensions that fastmlp cares about: name -> bool");
}
