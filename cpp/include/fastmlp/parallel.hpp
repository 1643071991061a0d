// The engine's parallel runtime: the one place that decides whether and how
// work is split across threads. No other file computes a partition or names
// a thread count; they call run() or for_elements() with the work they have.
//
// The rules, each the fix of a real defect:
//  1. Work is partitioned over the team OpenMP actually grants
//     (omp_get_num_threads() inside the region), never over the count asked
//     for: OMP_THREAD_LIMIT, OMP_DYNAMIC or a call from inside another
//     parallel region all grant fewer, and a partition by the asked count
//     then leaves rows, columns or parameters undone.
//  2. Every region asks for an explicit count (get_num_threads(), validated
//     and capped), never OpenMP's default: OMP_NUM_THREADS=3000 must not make
//     libgomp abort while creating threads.
//  3. After fork() the child's forking thread still points at GNU OpenMP's
//     pool of the parent's threads, which do not exist in the child: its next
//     multi-thread region would wait for them forever. A region asked for from
//     that thread runs on a relay thread made in the child instead, whose
//     pool is new — so a forked child works with the same thread count.
//  4. A body runs on every thread of the team and must not throw, allocate or
//     return early past a barrier: buffers are sized before the region.
//  5. A team whose threads do not get the CPU (other processes busy on the
//     machine, a container's CPU quota, several fits at once) is slower than
//     one thread: every thread waits at each barrier for the slowest, which
//     is waiting for a core. run() measures each region's share of the CPU
//     its team got and, while that share is low, runs regions on one thread
//     (see "Contention" below).
#pragma once

#include <omp.h>

#include <algorithm>
#include <functional>
#include <utility>

#include "fastmlp/tensor.hpp"

namespace fastmlp {

// The thread count fastmlp's regions ask for: set_num_threads()'s value, else
// OpenMP's default (OMP_NUM_THREADS), capped at thread_limit().
void set_num_threads(int n);  // throws std::invalid_argument outside [1, thread_limit()]
int get_num_threads();
// The most threads a region asks for (kMaxThreads): per-thread partial sums are
// fixed arrays of that size, and no MLP layer scales past it.
int thread_limit();

namespace parallel {

// --- When to go parallel: every threshold, with the measurement that set it.

// Elementwise loops (activations, optimizer steps): below this many values a
// fork/join costs more than the loop (benchmarks/: "small", 32-64-64-1).
inline constexpr Index kMinElements = Index(1) << 15;
// A team's shares of a product's columns are whole cache lines (16 floats),
// so no two threads write one line.
inline constexpr Index kColumnAlign = 16;
// Training: a batch of fewer multiply-adds (rows × parameters) runs on one
// thread (benchmarks/: "small" is never slower on 2 threads than on 1).
inline constexpr double kMinStepWork = 4.0e6;
// Training splits a batch's rows into slices of at least this many rows
// (else the team shares one pass, see plan_step). Measured on 4 of 16 cores
// (Xeon, mnist batch 128, the engine before the shared pass): 4 slices of 32
// rows 130k samples/s; one slice whose products forked a region each, 72k.
inline constexpr Index kMinSliceRows = 16;
// Inference gives each thread at least this many rows.
inline constexpr Index kMinForwardRows = 64;

// --- How a training step is split

// threads > 1 and slices = threads: row slices, one gradient buffer each,
// summed afterwards; threads > 1 and slices = 1: one pass shared by the
// team, every product split by columns (no gradient copies); threads = 1:
// serial.
struct StepPlan {
  int threads = 1;
  int slices = 1;
};

// Row slices only while their gradient buffers (one per thread, summed after
// every step) stay in cache; beyond, the shared pass, which writes each
// gradient once. Measured on 2 threads (AMD EPYC Zen 5, 32 MB L3, samples/s,
// slices vs shared pass): mnist, 2 × 0.9 MB of slice gradients, 266k vs 261k;
// wide, 2 × 84 MB, 1,902 vs 2,119.
inline constexpr double kMaxSliceGradientBytes = 8.0 * (1 << 20);

// The plan for a batch of `rows` rows through a network of n_params
// parameters of scalar_bytes each, whose widest layer has `width` units (a
// shared pass uses at most one thread per kColumnAlign columns of it).
// FASTMLP_STEP_SPLIT=slices|columns forces one design (for measurements).
// whole_batch: the pass needs every row at once (batch normalization's
// statistics): never row slices.
StepPlan plan_step(Index rows, Index n_params, Index width, std::size_t scalar_bytes, bool whole_batch = false);

// --- Partitions

// Part k of `parts` contiguous parts of [0, n); inner boundaries are rounded
// down to multiples of `align` (the last part takes the remainder).
inline Range part(Index n, int k, int parts, Index align = 1) {
  const auto edge = [&](int j) { return j >= parts ? n : std::min(n, (n * j / parts) / align * align); };
  return {edge(k), edge(k + 1)};
}

// How many threads `work` is worth: 1 below min_work, else get_num_threads(),
// and never more than items / min_items (each thread gets min_items or more).
inline int threads_for(double work, double min_work, Index items, Index min_items = 1) {
  if (work < min_work) return 1;
  const Index most = std::max<Index>(1, items / std::max<Index>(1, min_items));
  return int(std::min<Index>(get_num_threads(), most));
}

// --- Contention (rule 5)
//
// Every region's team records each thread's CPU time (the clock of its own
// CPU time) against the region's wall time. Over a window of at least
// kContentionWindow seconds of regions, efficiency = Σ (the least CPU time of
// a thread of the region) / Σ wall time: close to 1 when every thread has a
// core, about cores / runnable threads when they share them. The least, not
// the mean: a thread that waits at a barrier for a partner who has no core
// spins, and its CPU time says nothing of the progress made; the slowest
// thread sets the pace of a team that meets at barriers. Below
// kMinEfficiency (a team of 2 then does less than one thread would), regions
// run on one thread for a back-off period, doubled
// after each window that is still starved (kMinBackoff .. kMaxBackoff), then
// the whole team is tried again. Measured on 2 cores (AMD EPYC Zen 4, mnist
// 784-256-128-10, batch 128, samples/s) beside two busy processes: 2 threads
// 22,700, 1 thread 58,000, OMP_WAIT_POLICY=passive 30,000.
// FASTMLP_ADAPTIVE_THREADS=0 turns it off (every region gets the asked count).
inline constexpr double kContentionWindow = 0.02;
inline constexpr double kMinEfficiency = 0.75;
inline constexpr double kMinBackoff = 0.1, kMaxBackoff = 3.2;

// The most threads a region gets now: 1 while backing off, else kMaxThreads.
int team_cap();
// (efficiency of the last full window, or -1 before the first; seconds left in
// the current back-off, 0 if none) — for show_config and the tests.
std::pair<double, double> contention_state();

namespace detail {
double thread_cpu_seconds();  // this thread's CPU time
double wall_seconds();        // a monotonic clock
// Adds one region (its wall time, the least CPU time of a thread of its team
// and the team's size) to the window.
void record_region(double wall, double least_cpu, int team);
bool needs_relay();  // this thread forked and its OpenMP pool is gone
// Runs region on the child's relay thread; false if no thread could be made.
bool relay(const std::function<void()>& region);
}  // namespace detail

// body(t, team) for t in [0, team) on `team` threads, team ≤ threads being
// what OpenMP grants. With threads ≤ 1, or inside an active parallel region
// (fastmlp's own, or a user's OpenMP code), body(0, 1) runs here.
// Regions are measured, and limited to one thread under contention (rule 5).
template <class Body>
void run(int threads, Body&& body) {
  threads = std::min(threads, team_cap());
  if (threads <= 1 || omp_in_parallel()) {
    body(0, 1);
    return;
  }
  double cpu[kMaxThreads];
  int granted = 1;
  const auto region = [&] {
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), team = omp_get_num_threads();
      const double start = detail::thread_cpu_seconds();
      body(t, team);
      cpu[t] = detail::thread_cpu_seconds() - start;
      if (t == 0) granted = team;
    }
  };
  const double start = detail::wall_seconds();
  const auto measured = [&] {
    double least = cpu[0];
    for (int t = 1; t < granted; ++t) least = std::min(least, cpu[t]);
    detail::record_region(detail::wall_seconds() - start, least, granted);
  };
  if (!detail::needs_relay()) {
    region();
    measured();
  } else if (detail::relay(region)) {
    measured();
  } else {
    body(0, 1);  // no thread could be made for the relay: this one does the work
  }
}

// A barrier of the current team; nothing for a team of one (which may be
// running inside a user's own parallel region, whose barrier is not ours).
inline void barrier(int team) {
  if (team > 1) {
#pragma omp barrier
  }
}

// body(begin, end) over one part of [0, n) per thread, when n values (one
// unit of work each) reach kMinElements; else one call over all of them.
template <class Body>
void for_elements(Index n, Body&& body) {
  if (n <= 0) return;
  run(threads_for(double(n), double(kMinElements), n), [&](int t, int team) {
    const Range r = part(n, t, team);
    if (r.size() > 0) body(r.begin, r.end);
  });
}

}  // namespace parallel
}  // namespace fastmlp
