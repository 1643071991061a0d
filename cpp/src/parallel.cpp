#include "fastmlp/parallel.hpp"

#include <pthread.h>
#include <time.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace fastmlp {

int thread_limit() { return kMaxThreads; }

void set_num_threads(int n) {
  // An absurd count would make OpenMP fail to create its threads and abort.
  const int most = thread_limit();
  if (n < 1 || n > most)
    throw std::invalid_argument("n_threads must be in [1, " + std::to_string(most) + "], got " + std::to_string(n));
  omp_set_num_threads(n);
}

// OpenMP's setting is the one knob (set_num_threads, OMP_NUM_THREADS and
// threadpoolctl all act on it); an OMP_NUM_THREADS above the limit is capped
// here, since it never went through set_num_threads' check.
int get_num_threads() { return std::clamp(omp_get_max_threads(), 1, thread_limit()); }

namespace parallel {

namespace {

// FASTMLP_STEP_SPLIT=slices|columns forces one design for every batch that
// goes parallel; unset or anything else: the rule of plan_step.
enum class Forced { None, Slices, Columns };
Forced forced_split() {
  static const Forced forced = [] {
    const char* v = std::getenv("FASTMLP_STEP_SPLIT");
    if (v == nullptr) return Forced::None;
    const std::string s(v);
    return s == "slices" ? Forced::Slices : s == "columns" ? Forced::Columns : Forced::None;
  }();
  return forced;
}

}  // namespace

StepPlan plan_step(Index rows, Index n_params, Index width, std::size_t scalar_bytes, bool whole_batch) {
  const int threads = threads_for(double(rows) * double(n_params), kMinStepWork, rows);
  if (threads <= 1) return {1, 1};
  const StepPlan slices{threads, threads};
  const StepPlan shared{int(std::min<Index>(threads, std::max<Index>(1, width / kColumnAlign))), 1};
  const bool can_slice = !whole_batch && rows >= kMinSliceRows * threads;
  switch (forced_split()) {
    case Forced::Slices: return can_slice ? slices : shared;
    case Forced::Columns: return shared;
    case Forced::None: break;
  }
  const double slice_bytes = double(threads) * double(n_params) * double(scalar_bytes);
  return can_slice && slice_bytes <= kMaxSliceGradientBytes ? slices : shared;
}

namespace {

// The contention monitor's state (rule 5). A spin flag, not a mutex: a region
// that finds it taken skips recording (one region less in the window), and a
// fork while it is held cannot leave the child blocked (the child clears it).
struct Monitor {
  std::atomic_flag busy = ATOMIC_FLAG_INIT;
  double wall = 0.0, cpu = 0.0;  // the current window: Σ wall time, Σ least CPU time
  double backoff = kMinBackoff;
  std::atomic<double> until{0.0};  // back off until this wall time
  std::atomic<double> efficiency{-1.0};
};
Monitor monitor;

bool adaptive() {
  static const bool on = [] {
    const char* v = std::getenv("FASTMLP_ADAPTIVE_THREADS");
    return v == nullptr || std::string(v) != "0";
  }();
  return on;
}

}  // namespace

int team_cap() {
  const double until = monitor.until.load(std::memory_order_relaxed);
  return until > 0.0 && detail::wall_seconds() < until ? 1 : kMaxThreads;
}

std::pair<double, double> contention_state() {
  const double left = monitor.until.load() - detail::wall_seconds();
  return {monitor.efficiency.load(), left > 0.0 ? left : 0.0};
}

namespace detail {

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double wall_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

void record_region(double wall, double least_cpu, int team) {
  if (!adaptive() || team <= 1 || monitor.busy.test_and_set(std::memory_order_acquire)) return;
  monitor.wall += wall;
  monitor.cpu += least_cpu;
  if (monitor.wall >= kContentionWindow) {
    const double efficiency = monitor.cpu / monitor.wall;
    monitor.efficiency.store(efficiency);
    if (efficiency < kMinEfficiency) {
      monitor.until.store(wall_seconds() + monitor.backoff);
      monitor.backoff = std::min(kMaxBackoff, 2.0 * monitor.backoff);
    } else {
      monitor.backoff = kMinBackoff;
    }
    monitor.wall = monitor.cpu = 0.0;
  }
  monitor.busy.clear(std::memory_order_release);
}

namespace {

// The relay of a forked child: a thread made in the child, which starts the
// regions asked for by the forking thread. Its own OpenMP pool is new, and
// persists between regions (one hand-over per region, no thread creation).
// POSIX threads directly, not std::thread/std::condition_variable: GCC 12's
// condition_variable::wait needs GLIBCXX_3.4.30, which would raise the
// wheel's manylinux tag from 2_34 to 2_35.
struct Relay {
  pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
  const std::function<void()>* job = nullptr;
  bool done = false;

  static void* serve(void* self) {
    Relay& r = *static_cast<Relay*>(self);
    pthread_mutex_lock(&r.mutex);
    for (;;) {
      while (r.job == nullptr) pthread_cond_wait(&r.wake, &r.mutex);
      (*r.job)();
      r.job = nullptr;
      r.done = true;
      pthread_cond_broadcast(&r.wake);
    }
    return nullptr;
  }

  // Runs region on the relay thread and waits for it.
  void run(const std::function<void()>& region) {
    pthread_mutex_lock(&mutex);
    job = &region;
    done = false;
    pthread_cond_broadcast(&wake);
    while (!done) pthread_cond_wait(&wake, &mutex);
    pthread_mutex_unlock(&mutex);
  }
};

// A relay with its thread started; nullptr if the thread could not be made
// (the caller then runs the region single-threaded).
Relay* start_relay() {
  Relay* r = new Relay;
  pthread_t thread;
  if (pthread_create(&thread, nullptr, &Relay::serve, r) != 0) {
    delete r;
    return nullptr;
  }
  pthread_detach(thread);
  return r;
}

bool forked = false;     // this process is a fork() child ...
pthread_t forking_thread;  // ... and this is the thread that called fork()
// Made on first use in each child and never destroyed: its detached thread
// waits on it until the process ends. Only the forking thread uses it, so no
// lock guards it (a lock held at fork time could never be released).
Relay* relay_of_child = nullptr;

void after_fork_in_child() {
  monitor.busy.clear();  // held by another thread of the parent at fork time, perhaps
  forked = true;
  forking_thread = pthread_self();
  relay_of_child = nullptr;  // the parent's relay thread, if any, did not survive the fork
}

const int atfork_registered = pthread_atfork(nullptr, nullptr, after_fork_in_child);

}  // namespace

bool needs_relay() { return forked && pthread_equal(pthread_self(), forking_thread); }

bool relay(const std::function<void()>& region) {
  (void)atfork_registered;
  if (relay_of_child == nullptr) relay_of_child = start_relay();
  if (relay_of_child == nullptr) return false;
  relay_of_child->run(region);
  return true;
}

}  // namespace detail
}  // namespace parallel
}  // namespace fastmlp
