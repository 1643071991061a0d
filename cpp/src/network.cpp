#include "fastmlp/network.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <stdexcept>

#include "fastmlp/dense.hpp"
#include "fastmlp/gemm.hpp"
#include "fastmlp/parallel.hpp"
#include "fastmlp/sparse.hpp"

namespace fastmlp {

namespace {

// Rows of one inference chunk: large enough for an efficient GEMM, small
// enough for the chunk's input rows and activations to stay in a core's L2.
// Measured (784-256-128-10, batch 1024, AMD EPYC, samples/s on 1 / 2 threads):
// 64 rows 322k / 558k, 128 rows 337k / 613k, 160 rows 331k / 629k,
// 192 rows 347k / 429k, 256 rows 274k / 364k.
// With the weights packed once (weight_packs.hpp; AMD EPYC Zen 4, 2 shared
// and busy cores, CPU-time rates of 1 and 2 threads): 64 to 512 rows all
// within the noise (155k-178k samples/s per core); 128 kept.
constexpr Index kForwardChunk = 128;
// ... and fewer rows through very wide layers: a chunk's buffer holds at most
// this many values, so inference memory stays bounded whatever the width.
constexpr Index kForwardBufferValues = Index(1) << 22;

double physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? double(pages) * double(page) : 0.0;
}

}  // namespace

void check_fits_in_memory(double bytes, const char* what) {
  const double have = physical_memory_bytes();
  if (bytes > 9.0e18 || (have > 0.0 && bytes > have))
    throw std::length_error(std::string(what) + " needs " + std::to_string(bytes / 1073741824.0) +
                            " GiB; this machine has " + std::to_string(have / 1073741824.0) +
                            " GiB (use a smaller batch_size or narrower layers)");
}

bool TrainingNoise::perturbs() const {
  return input_noise > 0.0 || std::any_of(dropout.begin(), dropout.end(), [](double p) { return p > 0.0; });
}

void TrainingNoise::check(Index n_layers) const {
  if (!dropout.empty() && Index(dropout.size()) != n_layers)
    throw std::invalid_argument("dropout must have one rate per layer input (the inputs, then each hidden layer): " +
                                std::to_string(n_layers) + " values, got " + std::to_string(dropout.size()));
  for (std::size_t l = 0; l < dropout.size(); ++l)
    if (!(dropout[l] >= 0.0 && dropout[l] < 1.0))
      throw std::invalid_argument("dropout[" + std::to_string(l) + "] must be in [0, 1), got " +
                                  std::to_string(dropout[l]));
  if (!(input_noise >= 0.0) || !std::isfinite(input_noise))
    throw std::invalid_argument("input_noise must be a finite number >= 0, got " + std::to_string(input_noise));
  if (!(max_norm >= 0.0) || !std::isfinite(max_norm))
    throw std::invalid_argument("max_norm must be a finite number >= 0, got " + std::to_string(max_norm));
}

template <class T>
void Workspace<T>::reserve(const std::vector<Index>& sizes, const std::vector<double>& dropout, Index n, bool dense_x) {
  const std::size_t layers = sizes.size() - 1;
  const auto wants_dropped = [&](std::size_t l) { return l + 1 < dropout.size() && dropout[l + 1] > 0.0; };
  bool ready = n <= rows && z.size() == layers && dropped.size() == layers && (!dense_x || x.rows() >= n);
  for (std::size_t l = 0; ready && l < layers; ++l) ready = (dropped[l].size() > 0) == wants_dropped(l);
  if (ready) return;
  n = std::max(n, rows);
  if (dense_x) x.resize(n, sizes.front());
  y.resize(n, sizes.back());
  w.resize(n);
  z.resize(layers);
  a.resize(layers);
  delta.resize(layers);
  dropped.resize(layers);
  for (std::size_t l = 0; l < layers; ++l) {
    z[l].resize(n, sizes[l + 1]);
    a[l].resize(n, sizes[l + 1]);
    delta[l].resize(n, sizes[l + 1]);
    if (wants_dropped(l)) {
      dropped[l].resize(n, sizes[l + 1]);
    } else {
      dropped[l].resize(0, 0);
    }
  }
  rows = n;
}

template <class T>
Network<T>::Network(std::vector<Index> layer_sizes, std::vector<Activation> hidden, Activation output, double slope,
                    std::uint64_t seed, Init init)
    : sizes_(std::move(layer_sizes)), hidden_(std::move(hidden)), output_(output), slope_(T(slope)) {
  if (sizes_.size() < 2)
    throw std::invalid_argument("layer_sizes must have at least 2 entries (inputs and outputs), got " +
                                std::to_string(sizes_.size()));
  for (std::size_t l = 0; l < sizes_.size(); ++l)
    if (sizes_[l] < 1)
      throw std::invalid_argument("layer_sizes[" + std::to_string(l) + "] must be >= 1, got " +
                                  std::to_string(sizes_[l]));
  const std::size_t n_hidden = std::max<std::size_t>(sizes_.size() - 2, 1);
  if (hidden_.size() == 1) hidden_.resize(n_hidden, hidden_.front());
  if (hidden_.size() != n_hidden)
    throw std::invalid_argument("activation must be one name or one per hidden layer (" +
                                std::to_string(sizes_.size() - 2) + "), got " + std::to_string(hidden_.size()));
  for (Activation f : hidden_)
    if (!activation_info(f).hidden)
      throw std::invalid_argument(std::string("activation '") + activation_name(f) +
                                  "' is for the output layer only (output_activation)");
  if (!std::isfinite(slope) || slope < 0.0)
    throw std::invalid_argument("leaky_relu slope must be a finite number >= 0, got " + std::to_string(slope));
  // Count in floating point first: a product of huge sizes must not wrap.
  double count = 0.0;
  for (std::size_t l = 0; l + 1 < sizes_.size(); ++l)
    count += double(sizes_[l]) * double(sizes_[l + 1]) + double(sizes_[l + 1]);
  const double need = 2.0 * count * sizeof(T), have = physical_memory_bytes();
  if (count > 9.0e18 || (have > 0.0 && need > have))
    throw std::length_error("a network with layer_sizes of " + std::to_string(count) + " parameters needs " +
                            std::to_string(need / 1073741824.0) +
                            " GiB for parameters and gradients; this machine has " +
                            std::to_string(have / 1073741824.0) + " GiB");
  Index offset = 0;
  for (std::size_t l = 0; l + 1 < sizes_.size(); ++l) {
    weight_offset_.push_back(offset);
    offset += sizes_[l] * sizes_[l + 1] + sizes_[l + 1];
  }
  params_.resize(offset);
  grads_.setZero(offset);
  initialize(seed, init);
}

template <class T>
void Network<T>::initialize(std::uint64_t seed, Init init) {
  rng_.reseed(seed);
  seed_ = seed;
  steps_ = 0;
  for (Index l = 0; l < n_layers(); ++l) {
    const Index fan_in = sizes_[l], fan_out = sizes_[l + 1];
    T* w = params_.data() + weight_offset(l);
    T* b = params_.data() + bias_offset(l);
    // The factor follows the hidden activation (kActivations); with one per
    // hidden layer, layer l's own (the output layer: the last hidden layer's).
    const ActivationInfo& f = activation_info(hidden_[std::min<std::size_t>(std::size_t(l), hidden_.size() - 1)]);
    const double bound = init == Init::He ? std::sqrt(f.he_factor / double(fan_in))
                                          : std::sqrt(f.glorot_factor / double(fan_in + fan_out));
    for (Index i = 0; i < fan_in * fan_out; ++i) w[i] = T(bound * (2.0 * rng_.uniform() - 1.0));
    for (Index i = 0; i < fan_out; ++i) b[i] = init == Init::He ? T(0) : T(bound * (2.0 * rng_.uniform() - 1.0));
  }
}

template <class T>
template <class After>
void Network<T>::first_layer(const Input<T>& x, Index rows, T* z, Range c, gemm::Scratch* scratch, After&& after,
                             const gemm::PackedB* packed) const {
  const T* w = params_.data() + weight_offset(0);
  const T* b = params_.data() + bias_offset(0);
  if (x.csr == nullptr) {
    dense_forward(z, x.dense, w, packed, b, rows, sizes_[0], sizes_[1], c, scratch, precision_, after);
  } else {
    sparse_dense_forward(z, *x.csr, x.begin, w, b, rows, sizes_[0], sizes_[1], c);
    if (c.size() > 0) after(z, sizes_[1], 0, rows, c.begin, c.size());
  }
}

// Z = A·W + b and the hidden activation f(Z) fused into the product's epilogue
// (each block while it is in cache); the output activation (softmax needs whole
// rows) after the product.
template <class T>
void Network<T>::forward_rows(const Input<T>& x, Index rows, T* out, T* buf0, T* buf1, gemm::Scratch* scratch,
                              const WeightPacks* packs) const {
  const T* in = nullptr;
  for (Index l = 0; l < n_layers(); ++l) {
    const gemm::PackedB* packed = packs != nullptr ? &packs->layer(l) : nullptr;
    const bool last = l + 1 == n_layers();
    T* dst = last ? out : (l % 2 == 0 ? buf0 : buf1);
    const Range all{0, sizes_[l + 1]};
    const Activation f = last ? output_ : hidden_[l];
    const auto activate = [&](T* o, Index ld, Index r0, Index n, Index c0, Index cols) {
      if (!last) activation_forward(f, slope_, o + r0 * ld, o + r0 * ld, n, ld, Range{c0, c0 + cols});
    };
    if (l == 0) {
      first_layer(x, rows, dst, all, scratch, activate, packed);
    } else {
      dense_forward(dst, in, params_.data() + weight_offset(l), packed, params_.data() + bias_offset(l), rows,
                    sizes_[l], sizes_[l + 1], all, scratch, precision_, activate);
    }
    if (last) activation_forward(f, slope_, dst, dst, rows, sizes_[l + 1]);
    in = dst;
  }
}

// What one forward() call needs beyond the network: two activation buffers
// and a packing scratch per thread. Kept in a pool between calls (forward is
// const and may run on several threads at once: each call takes its own).
template <class T>
struct Network<T>::ForwardContext {
  Index chunk = 0, width = 0;
  std::vector<Matrix<T>> buffers;       // 2 per thread, chunk × width
  std::vector<gemm::Scratch> scratch;   // 1 per thread (float only)
  bool bf16_ready = false;              // the scratch holds the bf16 fallback's buffers too
  bool fits(int threads, Index chunk_rows, Index widest, gemm::Precision precision) const {
    return std::size_t(threads) * 2 <= buffers.size() && chunk_rows <= chunk && widest <= width &&
           (precision == gemm::Precision::Full || bf16_ready);
  }
  // depth: the widest layer, inputs included (the products' n and k).
  void reserve(int threads, Index chunk_rows, Index widest, Index depth, gemm::Precision precision) {
    chunk = std::max(chunk, chunk_rows);
    width = std::max(width, widest);
    buffers.assign(2 * std::size_t(threads), Matrix<T>(chunk, width));
    scratch.resize(std::size_t(threads));
    if constexpr (std::is_same_v<T, float>)
      for (auto& s : scratch) s.reserve(chunk, depth, depth, precision);
    bf16_ready = bf16_ready || precision == gemm::Precision::BF16;
  }
};

template <class T>
std::unique_ptr<typename Network<T>::ForwardContext> Network<T>::take_context() const {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!pool_.empty()) {
      auto context = std::move(pool_.back());
      pool_.pop_back();
      return context;
    }
  }
  return std::make_unique<ForwardContext>();
}

template <class T>
void Network<T>::give_back(std::unique_ptr<ForwardContext> context) const {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  pool_.push_back(std::move(context));
}

template <class T>
Network<T>::~Network() = default;

// Runs the n rows in chunks of at most kForwardChunk rows through every layer,
// the chunks shared by the team (parallel.hpp);
// rows_of(r) is the Input at row r. A batch that one thread runs (n below
// 2 × kMinForwardRows: a single row, say) opens no parallel region.
template <class T>
template <class RowsOf>
void Network<T>::forward_chunked(Index n, T* out, RowsOf&& rows_of) const {
  if (n <= 0) return;
  const Index width = *std::max_element(sizes_.begin() + 1, sizes_.end());
  const int threads = parallel::threads_for(double(n), 0.0, n, parallel::kMinForwardRows);
  const Index chunk = std::max<Index>(1, std::min({n, kForwardChunk, kForwardBufferValues / width}));
  std::unique_ptr<ForwardContext> context = take_context();
  if (!context->fits(threads, chunk, width, precision_)) {
    check_fits_in_memory(2.0 * double(threads) * double(chunk) * double(width) * sizeof(T),
                         "forward's activation buffers (2 x threads x chunk rows x the widest layer)");
    try {
      // Sized before the region, for as many threads as asked (a team is never
      // larger): nothing may allocate, or throw, inside it.
      context->reserve(threads, chunk, width, *std::max_element(sizes_.begin(), sizes_.end()), precision_);
    } catch (...) {
      give_back(std::move(context));
      throw;
    }
  }
  // The weights packed once, for batches whose products use the panels (a
  // single row reads W in place: checking a pack would cost more than it
  // saves). Where they cannot be made, each product packs its own.
  std::shared_ptr<const WeightPacks> packs;
  if constexpr (std::is_same_v<T, float>) {
    if (n >= gemm::kMinPackedRows && 2.0 * double(n_params()) * sizeof(T) <= 0.25 * physical_memory_bytes()) try {
        packs = packs_.get(params_.data(), n_params(), sizes_, weight_offset_, precision_);
      } catch (const std::bad_alloc&) {
        packs = nullptr;
      }
  }
  ForwardContext& ctx = *context;
  // Chunks on one grid from row 0, dealt round-robin: a row's output depends
  // on its chunk only, never on the team that ran it (bit-identical for any
  // thread count, and when parallel.hpp's rule 5 shrinks the team).
  const Index chunks = (n + chunk - 1) / chunk;
  parallel::run(threads, [&](int t, int team) {
    for (Index q = t; q < chunks; q += team) {
      const Index r = q * chunk;
      forward_rows(rows_of(r), std::min(chunk, n - r), out + r * n_outputs(), ctx.buffers[2 * t].data(),
                   ctx.buffers[2 * t + 1].data(), &ctx.scratch[std::size_t(t)], packs.get());
    }
  });
  give_back(std::move(context));
}

template <class T>
void Network<T>::forward(const T* x, Index n, T* out) const {
  forward_chunked(n, out, [&](Index r) { return Input<T>{x + r * n_inputs()}; });
}

// A sparse first layer multiplies in T (Eigen's sparse product): a bf16
// network refuses a sparse X rather than mix precisions.
static void check_sparse_precision(gemm::Precision precision) {
  if (precision == gemm::Precision::BF16)
    throw std::invalid_argument(
        "precision 'bf16' takes dense X only; a sparse X needs precision 'fp32' (or X.toarray())");
}

template <class T>
void Network<T>::forward(const CsrView<T>& x, T* out) const {
  check_sparse_precision(precision_);
  forward_chunked(x.rows, out, [&](Index r) { return Input<T>{nullptr, &x, r}; });
}

template <class T>
double Network<T>::forward_backward(const Input<T>& x_in, const T* y, Index rows, const LossScale<T>& scale, Loss loss,
                                    Workspace<T>& ws, T* g, gemm::Scratch* scratch, int t, int team,
                                    const DrawKey* draw) const {
  const Index L = n_layers();
  // This thread's columns of a layer of n units: the same share in the
  // forward and the backward pass, so a thread reads back the columns of Z,
  // A and delta it wrote itself, and needs a barrier only before a product
  // that reads whole rows.
  const auto mine = [&](Index n) { return parallel::part(n, t, team, parallel::kColumnAlign); };
  const auto W = [&](Index l) { return params_.data() + weight_offset(l); };
  const auto b = [&](Index l) { return params_.data() + bias_offset(l); };
  // Dropout rate of layer l's input (0: none, or not a training pass).
  const auto rate = [&](Index l) {
    return draw != nullptr && std::size_t(l) < noise_.dropout.size() ? noise_.dropout[std::size_t(l)] : 0.0;
  };
  Input<T> x = x_in;
  if (draw != nullptr && noise_.perturbs_inputs()) {  // X̃ into ws.x, each thread its rows (dense X only)
    const Range r = parallel::part(rows, t, team);
    perturb_inputs(ws.x.data(), x.dense, r.begin, r.end, sizes_[0], noise_.input_noise, rate(0), *draw);
    x = Input<T>{ws.x.data()};
    parallel::barrier(team);
  }
  // Layer l's input: X̃, A_{l-1}, or A_{l-1} after dropout.
  const auto input_of = [&](Index l) -> const T* {
    return rate(l) > 0.0 ? ws.dropped[l - 1].data() : ws.a[l - 1].data();
  };
  for (Index l = 0; l < L; ++l) {
    const Range c = mine(sizes_[l + 1]);
    T* z = ws.z[l].data();
    T* a = ws.a[l].data();
    // A_l = f(Z_l) of each block of Z_l as the product finishes it (hidden layers).
    const auto activate = [&](T* o, Index ld, Index r0, Index n, Index c0, Index cols) {
      if (l + 1 < L) activation_forward(hidden_[l], slope_, o + r0 * ld, a + r0 * ld, n, ld, Range{c0, c0 + cols});
    };
    if (l == 0) {
      first_layer(x, rows, z, c, scratch, activate);
    } else {
      dense_forward(z, input_of(l), W(l), b(l), rows, sizes_[l], sizes_[l + 1], c, scratch, precision_, activate);
    }
    if (l + 1 < L) {
      if (rate(l + 1) > 0.0)
        dropout_columns(ws.dropped[l].data(), ws.a[l].data(), rows, sizes_[l + 1], c, rate(l + 1), std::uint32_t(l + 1),
                        *draw);
    }
    parallel::barrier(team);  // the next product, or the loss, reads whole rows
  }
  // The loss needs whole rows of Z (softmax): each thread takes its rows.
  const Range r = parallel::part(rows, t, team);
  const Index k = sizes_[L];
  LossScale<T> part_scale = scale;
  if (scale.sample_weight != nullptr) part_scale.sample_weight += r.begin;
  if (scale.total <= 0.0) part_scale.total = double(rows);
  const double value = r.size() > 0 ? output_loss_grad(loss, output_, slope_, ws.z[L - 1].data() + r.begin * k,
                                                       y + r.begin * k, ws.a[L - 1].data() + r.begin * k,
                                                       ws.delta[L - 1].data() + r.begin * k, r.size(), k, part_scale)
                                    : 0.0;
  parallel::barrier(team);  // delta of the output layer is complete
  for (Index l = L - 1; l >= 1; --l) {
    const Range c_out = mine(sizes_[l + 1]), c_in = mine(sizes_[l]);
    dense_backward_weights(g + weight_offset(l), g + bias_offset(l), ws.delta[l].data(), input_of(l), rows, sizes_[l],
                           sizes_[l + 1], c_out, scratch, precision_);
    T* d_in = ws.delta[l - 1].data();
    dense_backward_input(d_in, ws.delta[l].data(), W(l), rows, sizes_[l], sizes_[l + 1], c_in, scratch, precision_);
    if (rate(l) > 0.0)  // dL/dA = dL/dÃ · m / (1 − p), the forward pass's mask
      dropout_columns(d_in, d_in, rows, sizes_[l], c_in, rate(l), std::uint32_t(l), *draw);
    activation_backward(hidden_[l - 1], slope_, d_in, ws.z[l - 1].data(), ws.a[l - 1].data(), d_in, rows, sizes_[l],
                        c_in);
    parallel::barrier(team);  // the next layer's input gradient reads whole rows of delta
  }
  // Layer 0: no gradient with respect to the input is needed.
  const Range c0 = mine(sizes_[1]);
  if (x.csr == nullptr) {
    dense_backward_weights(g + weight_offset(0), g + bias_offset(0), ws.delta[0].data(), x.dense, rows, sizes_[0],
                           sizes_[1], c0, scratch, precision_);
  } else {
    sparse_dense_backward(g + weight_offset(0), g + bias_offset(0), ws.delta[0].data(), *x.csr, x.begin, rows,
                          sizes_[0], sizes_[1], c0);
  }
  return value;
}

template <class T>
void Network<T>::set_precision(gemm::Precision precision) {
  if (precision == gemm::Precision::BF16 && !std::is_same_v<T, float>)
    throw std::invalid_argument("precision 'bf16' needs a float32 network (dtype float32); this one is float64");
  precision_ = precision;
}

template <class T>
void Network<T>::set_noise(TrainingNoise noise) {
  noise.check(n_layers());
  if (noise.dropout.empty()) noise.dropout.assign(std::size_t(n_layers()), 0.0);
  noise_ = std::move(noise);
}

template <class T>
void Network<T>::apply_max_norm(int t, int team) {
  const double limit = noise_.max_norm;
  constexpr Index kBlock = 64;  // columns whose norms are summed in one pass over the rows
  for (Index l = 0; l + 1 < n_layers(); ++l) {
    const Index n_in = sizes_[l], n_out = sizes_[l + 1];
    T* w = params_.data() + weight_offset(l);
    const Range c = parallel::part(n_out, t, team);
    for (Index j0 = c.begin; j0 < c.end; j0 += kBlock) {
      const Index j1 = std::min(c.end, j0 + kBlock);
      double squares[kBlock] = {};
      for (Index i = 0; i < n_in; ++i)
        for (Index j = j0; j < j1; ++j) squares[j - j0] += double(w[i * n_out + j]) * double(w[i * n_out + j]);
      T factor[kBlock];
      bool any = false;
      for (Index j = j0; j < j1; ++j) {
        const double norm = std::sqrt(squares[j - j0]);
        factor[j - j0] = norm > limit ? T(limit / norm) : T(1);
        any = any || norm > limit;
      }
      if (!any) continue;
      for (Index i = 0; i < n_in; ++i)
        for (Index j = j0; j < j1; ++j) w[i * n_out + j] *= factor[j - j0];
    }
  }
}

template <class T>
parallel::StepPlan Network<T>::prepare_step(Index rows, bool dense_x) {
  if (!dense_x) check_sparse_precision(precision_);
  const Index width = *std::max_element(sizes_.begin() + 1, sizes_.end());
  const parallel::StepPlan plan = parallel::plan_step(rows, n_params(), width, sizeof(T));
  const int slices = plan.slices;
  const Index per_slice = (rows + slices - 1) / slices;
  // Checked before anything is resized: a batch of many rows through wide
  // layers must fail cleanly here, not be killed by the kernel mid-epoch.
  double per_row = double(dense_x ? n_inputs() : 0) + double(n_outputs());
  for (Index l = 0; l < n_layers(); ++l) {  // z, a, delta (and the dropped a)
    const bool dropped = std::size_t(l + 1) < noise_.dropout.size() && noise_.dropout[std::size_t(l + 1)] > 0.0;
    per_row += (dropped ? 4.0 : 3.0) * double(sizes_[l + 1]);
  }
  check_fits_in_memory(
      (double(slices) * double(per_slice) * per_row + double(slices - 1) * double(n_params())) * sizeof(T),
      "the training workspace (batch rows x (dense inputs + outputs + 3 x every layer's width))");
  if (slices_.size() < std::size_t(slices)) slices_.resize(slices);
  for (int k = 0; k < slices; ++k) slices_[k].reserve(sizes_, noise_.dropout, per_slice, dense_x);
  if (slice_grads_.size() + 1 < std::size_t(slices)) slice_grads_.resize(slices - 1);
  for (int k = 1; k < slices; ++k)
    if (slice_grads_[k - 1].size() != n_params()) slice_grads_[k - 1].resize(n_params());
  if (step_scratch_.size() < std::size_t(plan.threads)) step_scratch_.resize(std::size_t(plan.threads));
  if constexpr (std::is_same_v<T, float>) {  // the step's products: m and k up to the rows or the widest layer
    const Index widest = *std::max_element(sizes_.begin(), sizes_.end()), most = std::max(rows, widest);
    for (auto& s : step_scratch_) s.reserve(most, widest, most, precision_);
  }
  return plan;
}

template class Network<float>;
template class Network<double>;
template struct Workspace<float>;
template struct Workspace<double>;

}  // namespace fastmlp
