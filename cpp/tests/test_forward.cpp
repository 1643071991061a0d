// Inference's batch-1 path: Network<T>::forward on one row, once warm,
// allocates nothing and opens no parallel region (no fork/join); a batch's
// calls reuse their buffers and packed weights (no allocation either).
//
//   test_forward        (prints one line per check, exits 1 if any failed)
//
// Every allocation of the process is counted here (malloc and its relatives
// replaced, forwarding to glibc's); the threads are counted in
// /proc/self/status (OpenMP starts its workers at the first region of more
// than one thread). The probes are checked too: a batch of many rows does
// open a region where 2 threads are allowed.
#include <fastmlp/network.hpp>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

extern "C" {
void* __libc_malloc(std::size_t);
void __libc_free(void*);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
}

namespace {
std::atomic<long> allocations{0};
void counted() { allocations.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

extern "C" {
void* malloc(std::size_t n) {
  counted();
  return __libc_malloc(n);
}
void free(void* p) { __libc_free(p); }
void* calloc(std::size_t count, std::size_t n) {
  counted();
  return __libc_calloc(count, n);
}
void* realloc(void* p, std::size_t n) {
  counted();
  return __libc_realloc(p, n);
}
void* memalign(std::size_t alignment, std::size_t n) {
  counted();
  return __libc_memalign(alignment, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
  counted();
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
  counted();
  void* p = __libc_memalign(alignment, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s  %s\n", ok ? "ok  " : "FAIL", what.c_str());
  failures += ok ? 0 : 1;
}

int threads_now() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  return -1;
}

// probe: also check that the probes see a team (the first network of the process only).
template <class T>
void check_network(const char* name, fastmlp::gemm::Precision precision, bool probe) {
  using fastmlp::Index;
  fastmlp::Network<T> net({784, 256, 128, 10}, fastmlp::Activation::Relu, fastmlp::Activation::Softmax, 0.01, 0,
                          fastmlp::Init::Glorot);
  net.set_precision(precision);
  const Index batch = 300;
  std::vector<T> x(std::size_t(batch) * 784), out(std::size_t(batch) * 10);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = T(0.001) * T(i % 997) - T(0.5);

  const int threads = threads_now();
  for (int i = 0; i < 3; ++i) net.forward(x.data(), 1, out.data());  // warm: the buffers are made
  long before = allocations.load();
  for (int i = 0; i < 1000; ++i) net.forward(x.data() + (i % batch) * 784, 1, out.data());
  long made = allocations.load() - before;  // read before any string is built
  const int after = threads_now();
  check(made == 0, std::string(name) + ": 1000 one-row calls allocate nothing (" + std::to_string(made) + ")");
  check(after == threads, std::string(name) + ": one-row calls start no thread (" + std::to_string(threads) + " -> " +
                              std::to_string(after) + ")");

  // The probes work: 1024 rows on 2 threads open a region (its workers appear).
  if (probe && fastmlp::get_num_threads() >= 2) {
    std::vector<T> big(std::size_t(1024) * 784, T(0.25)), big_out(std::size_t(1024) * 10);
    const long allocated = allocations.load();
    net.forward(big.data(), 1024, big_out.data());
    const bool allocated_more = allocations.load() > allocated;
    check(threads_now() > threads && allocated_more,
          std::string(name) + ": the probes see a batch of 1024 rows start its team and size its buffers");
  }
  // A batch through the packed kernels (float; double products are Eigen's,
  // which allocates its own blocks per product) reuses its buffers and packs.
  if (std::is_same_v<T, float> && fastmlp::gemm::kernel() == fastmlp::gemm::Kernel::Packed) {
    for (int i = 0; i < 3; ++i) net.forward(x.data(), batch, out.data());  // warm: buffers, packs, team
    before = allocations.load();
    for (int i = 0; i < 20; ++i) net.forward(x.data(), batch, out.data());
    made = allocations.load() - before;
    check(made == 0, std::string(name) + ": 20 calls of " + std::to_string(batch) +
                         " rows allocate nothing: buffers and packed weights reused (" + std::to_string(made) + ")");
  }
}

}  // namespace

int main() {
  check_network<float>("float32", fastmlp::gemm::Precision::Full, true);  // first: no region opened before
  check_network<float>("bf16", fastmlp::gemm::Precision::BF16, false);
  check_network<double>("float64", fastmlp::gemm::Precision::Full, false);
  std::printf("%s\n", failures == 0 ? "all passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
