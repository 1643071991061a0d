#include "fastmlp/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>

#include "fastmlp/parallel.hpp"

namespace fastmlp {

namespace {

void check_nonnegative(const char* name, double value) {
  if (!(value >= 0.0) || !std::isfinite(value))
    throw std::invalid_argument(std::string(name) + " must be a finite number >= 0, got " + std::to_string(value));
}

// Σ of the batch's sample weights (its row count when it has none).
template <class T>
double weight_sum(const Batch<T>& b) {
  if (b.w == nullptr) return double(b.rows);
  double s = 0.0;
  for (Index r = 0; r < b.rows; ++r) s += double(b.w[b.index != nullptr ? b.index[r] : b.begin + r]);
  return s;
}

// Rows [r0, r1) of the batch as the network's input, its targets and its
// weights: read in place, or — when the batch is an index — gathered into ws
// by gather() first (ws.csr_* sized by size_csr_gather).
template <class T>
struct Slice {
  Input<T> x;
  const T* y;
  const T* w;
};

// Gathers rows `own` (counted from r0) of the slice [r0, r1) into ws, so that
// a team sharing one slice gathers it together, each thread its own rows. A
// CSR slice is gathered whole by the thread whose `own` starts at 0 (its
// row pointers are a running sum). Nothing to do for a batch read in place.
template <class T>
void gather(const Batch<T>& b, Index r0, Index r1, Index n_in, Index n_out, Workspace<T>& ws, Range own) {
  if (b.index == nullptr) return;
  const std::int64_t* idx = b.index + r0;
  if (b.csr != nullptr) {
    if (own.begin != 0 || own.size() == 0) return;
    own = Range{0, r1 - r0};
  }
  for (Index r = own.begin; r < own.end; ++r)
    std::memcpy(ws.y.data() + r * n_out, b.y + idx[r] * n_out, sizeof(T) * std::size_t(n_out));
  if (b.w != nullptr)
    for (Index r = own.begin; r < own.end; ++r) ws.w[r] = b.w[idx[r]];
  if (b.csr == nullptr) {
    for (Index r = own.begin; r < own.end; ++r)
      std::memcpy(ws.x.data() + r * n_in, b.x + idx[r] * n_in, sizeof(T) * std::size_t(n_in));
    return;
  }
  const CsrView<T>& x = *b.csr;
  std::int64_t at = 0;
  ws.csr_indptr[0] = 0;
  for (Index r = 0; r < r1 - r0; ++r) {
    const std::int64_t k0 = x.indptr[idx[r]], k1 = x.indptr[idx[r] + 1];
    std::copy(x.data + k0, x.data + k1, ws.csr_data.data() + at);
    std::copy(x.indices + k0, x.indices + k1, ws.csr_indices.data() + at);
    at += k1 - k0;
    ws.csr_indptr[r + 1] = at;
  }
  ws.csr_view = CsrView<T>{ws.csr_data.data(), ws.csr_indices.data(), ws.csr_indptr.data(), r1 - r0, x.cols};
}

template <class T>
Slice<T> slice_of(const Batch<T>& b, Index r0, Index n_in, Index n_out, const Workspace<T>& ws) {
  if (b.index == nullptr) {
    const Index first = b.begin + r0;
    Input<T> x = b.csr != nullptr ? Input<T>{nullptr, b.csr, first} : Input<T>{b.x + first * n_in};
    return {x, b.y + first * n_out, b.w != nullptr ? b.w + first : nullptr};
  }
  const T* w = b.w != nullptr ? ws.w.data() : nullptr;
  if (b.csr == nullptr) return {Input<T>{ws.x.data()}, ws.y.data(), w};
  return {Input<T>{nullptr, &ws.csr_view, 0}, ws.y.data(), w};
}

// Sizes the CSR gather buffers of each slice (before the parallel region:
// nothing may allocate, or throw, inside it).
template <class T>
void size_csr_gather(Network<T>& net, const Batch<T>& b, int slices) {
  if (b.csr == nullptr || b.index == nullptr) return;
  for (int k = 0; k < slices; ++k) {
    const Range rows = parallel::part(b.rows, k, slices);
    std::int64_t nnz = 0;
    for (Index r = rows.begin; r < rows.end; ++r) nnz += b.csr->indptr[b.index[r] + 1] - b.csr->indptr[b.index[r]];
    Workspace<T>& ws = net.slice_workspace(k);
    if (ws.csr_data.size() < std::size_t(nnz)) {
      ws.csr_data.resize(std::size_t(nnz));
      ws.csr_indices.resize(std::size_t(nnz));
    }
    ws.csr_indptr.resize(std::size_t(rows.size()) + 1);
  }
}

// On parameters [begin, end): ∇W += (l2·W + l1·sign(W)) / scale over the
// penalized entries (dense W, embedding tables: Network::penalized); returns ½·l2·ΣW² + l1·Σ|W| over them.
template <class T>
double add_penalties(const Network<T>& net, T* g, double l2, double l1, double scale, Index begin, Index end) {
  const T* w = net.params();
  const T c2 = T(l2 / scale), c1 = T(l1 / scale);
  double squares = 0.0, absolutes = 0.0;
  for (const Range& p : net.penalized()) {
    const Index w0 = std::max(begin, p.begin), w1 = std::min(end, p.end);
    if (l1 == 0.0) {
#pragma omp simd reduction(+ : squares)
      for (Index i = w0; i < w1; ++i) {
        squares += double(w[i]) * double(w[i]);
        g[i] += c2 * w[i];
      }
    } else {
#pragma omp simd reduction(+ : squares, absolutes)
      for (Index i = w0; i < w1; ++i) {
        squares += double(w[i]) * double(w[i]);
        absolutes += std::abs(double(w[i]));
        g[i] += c2 * w[i] + c1 * T((w[i] > T(0)) - (w[i] < T(0)));
      }
    }
  }
  return 0.5 * l2 * squares + l1 * absolutes;
}

// One step over a batch (optimizer null: gradients only), in three phases:
//
//  A. gradients  Network::prepare_step plans it (parallel.hpp):
//                - row slices: the batch's rows are cut into `slices` slices;
//                  the team's thread t runs slices t, t + team, ...: gathers
//                  the rows, runs forward and backward into slice k's
//                  gradient buffer (slice 0's is net.grads()). Every slice
//                  is run whatever team OpenMP grants, so every buffer summed
//                  in B was written;
//                - columns: the team shares one pass over the whole batch,
//                  each thread computing its columns of every product into
//                  net.grads() (no copies, nothing to sum);
//                - serial: one thread.
//  B. reduce     (slices only) net.grads() += slices 1.., each thread over
//                its own chunk of the parameters, in slice order (the sum
//                does not depend on the team).
//  C. finish     Over the same chunk: penalties, clip_value, clip_norm, the
//                optimizer's update.
//  D. max-norm   (noise().max_norm > 0) each thread over its columns of every
//                hidden layer's W: scales a unit's incoming weights to the
//                limit (a column needs every chunk updated: one barrier).
//
// A training step (optimizer given) with dropout or input noise draws them
// with the key (seed, net.steps(), row in the batch) — the same masks for any
// plan and team — and counts itself in net.steps() (every training step does).
//
// Barriers: between A and B/C (B and C read every thread's gradients), and
// inside C for clip_norm (the norm needs every chunk's squares); none between
// B and C (a thread finishes the chunk it reduced). Without a hook A, B and C
// are one parallel region; a gradient hook (MPI allreduce) runs between B
// and C, outside any region.
template <class T>
double step(Network<T>& net, Optimizer<T>* optimizer, const Batch<T>& batch, Loss loss, const Regularization& reg,
            bool clip, const GradientHook<T>* hook, const std::uint64_t* draw_step = nullptr) {
  const Index rows = batch.rows, n_in = net.n_inputs(), n_out = net.n_outputs(), P = net.n_params();
  const double W = weight_sum(batch);
  const parallel::StepPlan plan = net.prepare_step(rows, batch.csr == nullptr);
  const int slices = plan.slices;
  size_csr_gather(net, batch, slices);
  const bool split = hook != nullptr && hook->reduce;
  double penalty_scale = W;  // the (global, with a hook) batch's weight total
  const bool penalize = reg.l2 > 0.0 || reg.l1 > 0.0;
  const bool clip_value = clip && reg.clip_value > 0.0, clip_norm = clip && reg.clip_norm > 0.0;
  const bool max_norm = optimizer != nullptr && net.noise().max_norm > 0.0;
  // The draws' key: a training step's own number, or the one asked for.
  // A training step updates batch normalization's running statistics (one shared pass: needs_whole_batch).
  T* running = optimizer != nullptr ? net.state() : nullptr;
  const bool perturb = (optimizer != nullptr || draw_step != nullptr) && net.perturbs();
  const std::uint64_t step_number = draw_step != nullptr ? *draw_step : net.steps();
  // Row r of this batch is row rank·rows + r of the global batch (data parallel: every process
  // has `rows` rows in this step), so R processes draw what one process with R·rows would.
  const Index row_base = hook != nullptr ? hook->rank * rows : 0;
  const auto draw = [&](Index row0) { return DrawKey{net.seed(), step_number, row_base + row0}; };
  // A step is counted (begin_step) only once it can no longer fail: here, or after
  // the hook returns — a hook that throws leaves the optimizer as it was.
  if (optimizer != nullptr && !split) optimizer->begin_step();
  // Partial sums (per slice, or per thread of a shared pass), added in index
  // order afterwards: deterministic for a given plan and team.
  double loss_part[kMaxThreads] = {}, penalty_part[kMaxThreads] = {}, norm_part[kMaxThreads] = {};

  const auto gradients = [&](int t, int team) {
    if (slices == 1) {  // one pass, shared by the team
      Workspace<T>& ws = net.slice_workspace(0);
      gather(batch, 0, rows, n_in, n_out, ws, parallel::part(rows, t, team));
      parallel::barrier(team);
      const Slice<T> s = slice_of(batch, 0, n_in, n_out, ws);
      const DrawKey key = draw(0);
      loss_part[t] = net.forward_backward(s.x, s.y, rows, LossScale<T>{s.w, W, reg.grad_scale}, loss, ws, net.grads(),
                                          net.step_scratch(t), t, team, perturb ? &key : nullptr, running);
      return;
    }
    for (int k = t; k < slices; k += team) {
      const Range r = parallel::part(rows, k, slices);
      Workspace<T>& ws = net.slice_workspace(k);
      gather(batch, r.begin, r.end, n_in, n_out, ws, Range{0, r.size()});
      const Slice<T> s = slice_of(batch, r.begin, n_in, n_out, ws);
      const DrawKey key = draw(r.begin);
      loss_part[k] = net.forward_backward(s.x, s.y, r.size(), LossScale<T>{s.w, W, reg.grad_scale}, loss, ws,
                                          net.slice_grads(k), net.step_scratch(t), 0, 1, perturb ? &key : nullptr);
    }
  };
  const auto reduce = [&](int t, int team) {
    const Range c = parallel::part(P, t, team);
    T* g = net.grads();
    for (int k = 1; k < slices; ++k) {
      const T* part = net.slice_grads(k);
#pragma omp simd
      for (Index i = c.begin; i < c.end; ++i) g[i] += part[i];
    }
  };
  const auto finish = [&](int t, int team) {
    const Range c = parallel::part(P, t, team);
    T* g = net.grads();
    if (penalize) penalty_part[t] = add_penalties(net, g, reg.l2, reg.l1, penalty_scale, c.begin, c.end);
    if (clip_value) {
      const T v = T(reg.clip_value);
#pragma omp simd
      for (Index i = c.begin; i < c.end; ++i) g[i] = std::min(std::max(g[i], -v), v);
    }
    if (clip_norm) {
      double squares = 0.0;
#pragma omp simd reduction(+ : squares)
      for (Index i = c.begin; i < c.end; ++i) squares += double(g[i]) * double(g[i]);
      norm_part[t] = squares;
      parallel::barrier(team);
      double total = 0.0;
      for (int s = 0; s < team; ++s) total += norm_part[s];
      const double norm = std::sqrt(total);
      if (norm > reg.clip_norm) {
        const T scale = T(reg.clip_norm / norm);
#pragma omp simd
        for (Index i = c.begin; i < c.end; ++i) g[i] *= scale;
      }
    }
    if (optimizer != nullptr) optimizer->update(net.params(), g, c.begin, c.end);
    if (max_norm) {
      parallel::barrier(team);  // a unit's column spans every thread's chunk
      net.apply_max_norm(t, team);
    }
  };

  parallel::run(plan.threads, [&](int t, int team) {
    gradients(t, team);
    parallel::barrier(team);
    reduce(t, team);
    if (!split) finish(t, team);
  });
  double value = 0.0;
  for (int k = 0; k < kMaxThreads; ++k) value += loss_part[k];
  if (split) {
    hook->reduce(net.grads(), P, &value, &penalty_scale);
    if (!(penalty_scale > 0.0)) return 0.0;  // the global batch weighs nothing: skipped everywhere
    if (optimizer != nullptr) optimizer->begin_step();
    parallel::run(plan.threads, finish);
  }
  if (optimizer != nullptr) net.set_steps(net.steps() + 1);
  double penalty = 0.0;
  for (int t = 0; t < kMaxThreads; ++t) penalty += penalty_part[t];
  return value + penalty / penalty_scale;
}

template <class T>
void check_batch(const Network<T>& net, const Batch<T>& b, Loss loss) {
  check_loss_output(loss, net.output_activation());
  if (b.rows <= 0) throw std::invalid_argument("X must have at least one sample, got 0");
  if (b.csr != nullptr && b.csr->cols != net.n_inputs())
    throw std::invalid_argument("X must have " + std::to_string(net.n_inputs()) + " columns, got " +
                                std::to_string(b.csr->cols));
  if (b.x != nullptr && b.index == nullptr) net.check_codes(b.x + b.begin * net.n_inputs(), b.rows);
}

// Input noise and input dropout write a perturbed copy of X: dense X only.
template <class T>
void check_perturbable(const Network<T>& net, const Batch<T>& b) {
  if (b.csr != nullptr && net.noise().perturbs_inputs())
    throw std::invalid_argument(
        "input_noise and input dropout (dropout[0]) need a dense X, got a sparse X (densify X, or set them to 0)");
}

}  // namespace

void Regularization::check() const {
  check_nonnegative("l2", l2);
  check_nonnegative("l1", l1);
  check_nonnegative("clip_value", clip_value);
  check_nonnegative("clip_norm", clip_norm);
  if (!(grad_scale > 0.0) || !std::isfinite(grad_scale))
    throw std::invalid_argument("grad_scale must be a finite number > 0, got " + std::to_string(grad_scale));
}

void LearningRateSchedule::check() const {
  // > 0, as fastmlp.schedules.Schedule says: a schedule of rate 0 trains nothing.
  if (!(base_lr > 0.0) || !std::isfinite(base_lr))
    throw std::invalid_argument("base_lr must be a finite number > 0, got " + std::to_string(base_lr));
  check_nonnegative("gamma", gamma);
  check_nonnegative("min_lr", min_lr);
  check_nonnegative("warmup_epochs", warmup_epochs);
  if (!(step_size > 0.0) || !std::isfinite(step_size))
    throw std::invalid_argument("step_size must be a finite number > 0, got " + std::to_string(step_size));
  if (!(total_epochs > 0.0) || !std::isfinite(total_epochs))
    throw std::invalid_argument("total_epochs must be a finite number > 0, got " + std::to_string(total_epochs));
}

namespace {

// One batch's objective and gradients without a step (draw_step: as that
// training step draws its dropout and noise), after the checks both callers need.
template <class T>
double evaluate(Network<T>& net, const Batch<T>& batch, Loss loss, const Regularization& reg,
                const std::uint64_t* draw_step) {
  check_batch(net, batch, loss);
  if (draw_step != nullptr) check_perturbable(net, batch);
  reg.check();
  const double W = weight_sum(batch);
  if (!(W > 0.0)) throw std::invalid_argument("sample_weight must have a positive sum, got " + std::to_string(W));
  return step<T>(net, nullptr, batch, loss, reg, false, nullptr, draw_step);
}

}  // namespace

template <class T>
double loss_and_grad(Network<T>& net, const Batch<T>& batch, Loss loss, const std::uint64_t* draw_step) {
  return evaluate(net, batch, loss, Regularization{}, draw_step);
}

template <class T>
double objective(Network<T>& net, const Batch<T>& batch, Loss loss, const Regularization& reg) {
  return evaluate(net, batch, loss, reg, nullptr);
}

template <class T>
double train_epoch(Network<T>& net, Optimizer<T>& optimizer, const Batch<T>& data, Loss loss,
                   const EpochOptions& options, const GradientHook<T>* hook) {
  std::unique_lock<std::mutex> lock(net.busy(), std::try_to_lock);
  if (!lock.owns_lock())
    throw std::runtime_error(
        "this Network is being trained by another thread; train one network from one thread at a time");
  check_batch(net, data, loss);
  check_perturbable(net, data);
  const Index n = data.rows;
  if (options.batch_size < 1)
    throw std::invalid_argument("batch_size must be >= 1, got " + std::to_string(options.batch_size));
  options.regularization.check();
  if (options.schedule != nullptr) options.schedule->check();
  // The schedule's clock: a negative one would make the warm-up factor, and the rate, negative.
  if (!(options.epoch >= 0.0) || !std::isfinite(options.epoch))
    throw std::invalid_argument("epoch must be a finite number >= 0, got " + std::to_string(options.epoch));
  if (options.order != nullptr)
    for (Index i = 0; i < n; ++i)
      if (options.order[i] < 0 || options.order[i] >= n)
        throw std::invalid_argument("order[" + std::to_string(i) + "] = " + std::to_string(options.order[i]) +
                                    " is outside [0, " + std::to_string(n) + ")");
  if (data.w != nullptr)
    for (Index i = 0; i < n; ++i)
      if (!(data.w[i] >= T(0)) || !std::isfinite(data.w[i]))
        throw std::invalid_argument("sample_weight[" + std::to_string(i) + "] = " + std::to_string(double(data.w[i])) +
                                    " is not a finite number >= 0");
  optimizer.prepare(net.n_params());  // throws here, before any parameter changes

  const Index batch_size = std::min(options.batch_size, n);
  const bool gather = options.order != nullptr || options.shuffle;
  std::vector<std::int64_t>& order = net.epoch_order();
  if (gather) {
    order.resize(std::size_t(n));
    if (options.order != nullptr) {
      std::copy(options.order, options.order + n, order.begin());
    } else {
      std::iota(order.begin(), order.end(), std::int64_t(0));
      net.rng().shuffle(order.begin(), order.end());
    }
  }

  const Index n_batches = (n + batch_size - 1) / batch_size;
  using Clock = std::chrono::steady_clock;
  auto last_poll = Clock::now();
  double total = 0.0;
  Index seen = 0;
  for (Index b = 0, start = 0; start < n; ++b, start += batch_size) {
    if (options.should_stop && std::chrono::duration<double>(Clock::now() - last_poll).count() > kStopPollSeconds) {
      if (options.should_stop()) break;
      last_poll = Clock::now();
    }
    Batch<T> batch = data;
    batch.rows = std::min(batch_size, n - start);
    // Batch normalization cannot learn from a batch of one row: a last row left alone joins this batch.
    if (net.needs_whole_batch() && n - start - batch.rows == 1) ++batch.rows;
    if (gather) {
      batch.index = order.data() + start;
    } else {
      batch.begin = data.begin + start;
    }
    seen += batch.rows;
    start += batch.rows - std::min(batch_size, n - start);  // the row a batch took from the next
    // All-zero weights: nothing to learn from this batch — but with a hook the other processes'
    // part of the global batch may weigh something, so the step runs and the hook decides.
    if (!(weight_sum(batch) > 0.0) && (hook == nullptr || !hook->reduce)) continue;
    if (options.schedule != nullptr)
      optimizer.lr = options.schedule->at(options.epoch + double(b) / double(n_batches), 1.0 / double(n_batches));
    total += step(net, &optimizer, batch, loss, options.regularization, true, hook) * double(batch.rows);
  }
  return seen > 0 ? total / double(seen) : 0.0;
}

#define FASTMLP_INSTANTIATE(T)                                                                        \
  template double loss_and_grad(Network<T>&, const Batch<T>&, Loss, const std::uint64_t*);            \
  template double objective(Network<T>&, const Batch<T>&, Loss, const Regularization&);               \
  template double train_epoch(Network<T>&, Optimizer<T>&, const Batch<T>&, Loss, const EpochOptions&, \
                              const GradientHook<T>*);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
