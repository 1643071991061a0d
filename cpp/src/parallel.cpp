#include "fastmlp/parallel.hpp"

#include <pthread.h>

#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

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

StepPlan plan_step(Index rows, Index n_params, Index width, std::size_t scalar_bytes) {
  const int threads = threads_for(double(rows) * double(n_params), kMinStepWork, rows);
  if (threads <= 1) return {1, 1};
  const StepPlan slices{threads, threads};
  const StepPlan shared{int(std::min<Index>(threads, std::max<Index>(1, width / kColumnAlign))), 1};
  const bool can_slice = rows >= kMinSliceRows * threads;
  switch (forced_split()) {
    case Forced::Slices:
      return can_slice ? slices : shared;
    case Forced::Columns:
      return shared;
    case Forced::None:
      break;
  }
  const double slice_bytes = double(threads) * double(n_params) * double(scalar_bytes);
  return can_slice && slice_bytes <= kMaxSliceGradientBytes ? slices : shared;
}

namespace detail {

namespace {

// The relay of a forked child: a thread made in the child, which starts the
// regions asked for by the forking thread. Its own OpenMP pool is new, and
// persists between regions (one hand-over per region, no thread creation).
struct Relay {
  std::mutex mutex;
  std::condition_variable wake;
  const std::function<void()>* job = nullptr;
  bool done = false;

  Relay() {
    std::thread([this] {
      std::unique_lock<std::mutex> lock(mutex);
      for (;;) {
        wake.wait(lock, [this] { return job != nullptr; });
        (*job)();
        job = nullptr;
        done = true;
        wake.notify_all();
      }
    }).detach();
  }
};

bool forked = false;     // this process is a fork() child ...
pthread_t forking_thread;  // ... and this is the thread that called fork()
// Made on first use in each child and never destroyed: its detached thread
// waits on it until the process ends. Only the forking thread uses it, so no
// lock guards it (a lock held at fork time could never be released).
Relay* relay_of_child = nullptr;

void after_fork_in_child() {
  forked = true;
  forking_thread = pthread_self();
  relay_of_child = nullptr;  // the parent's relay thread, if any, did not survive the fork
}

const int atfork_registered = pthread_atfork(nullptr, nullptr, after_fork_in_child);

}  // namespace

bool needs_relay() { return forked && pthread_equal(pthread_self(), forking_thread); }

void relay(const std::function<void()>& region) {
  (void)atfork_registered;
  if (relay_of_child == nullptr) relay_of_child = new Relay;
  Relay& r = *relay_of_child;
  std::unique_lock<std::mutex> lock(r.mutex);
  r.job = &region;
  r.done = false;
  r.wake.notify_all();
  r.wake.wait(lock, [&r] { return r.done; });
}

}  // namespace detail
}  // namespace parallel
}  // namespace fastmlp
