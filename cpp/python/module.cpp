// fastmlp._core: translation between Python and the C++ core, nothing else.
// Arrays arrive C-contiguous in the network's dtype (the Python layer converts
// and validates them; the checks here only keep a direct caller from reading
// out of bounds). Every call that loops over data releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <omp.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "fastmlp/network.hpp"
#include "fastmlp/optimizer.hpp"
#include "fastmlp/parallel.hpp"
#include "fastmlp/trainer.hpp"

namespace py = pybind11;
using namespace fastmlp;

namespace {

template <class T>
using InArray =  // C order, this dtype and each element at an address that is a multiple of its size: NumPy's
                 // `aligned` flag (an unaligned array, from a byte buffer or an unpickled one, is copied)
    py::array_t<T, py::array::c_style | py::array::forcecast | py::detail::npy_api::NPY_ARRAY_ALIGNED_>;

// A network's precision by name: "bf16", or the full precision of its dtype
// ("fp32" for float32, "fp64" for float64).
template <class T>
const char* precision_name(gemm::Precision p) {
  if (p == gemm::Precision::BF16) return "bf16";
  return std::is_same_v<T, float> ? "fp32" : "fp64";
}
template <class T>
gemm::Precision parse_precision(const std::string& name) {
  if (name == "bf16") return gemm::Precision::BF16;
  if (name == precision_name<T>(gemm::Precision::Full)) return gemm::Precision::Full;
  throw std::invalid_argument(std::string("precision must be '") + precision_name<T>(gemm::Precision::Full) +
                              "' or 'bf16', got '" + name + "'");
}

// c[:, cols] = op(a) · op(b), the rest of c untouched (the GEMM layer, for the
// tests), in `precision`; bf16_room false: the scratch without the bf16
// fallback's buffers (its scalar loop).
template <class T>
void gemm_for_tests(const InArray<T>& a, const InArray<T>& b, bool transpose_a, bool transpose_b,
                    std::pair<Index, Index> cols, py::array_t<T, py::array::c_style> c, const std::string& precision,
                    bool bf16_room) {
  const gemm::Precision p = parse_precision<T>(precision);
  if (p == gemm::Precision::BF16 && !std::is_same_v<T, float>)
    throw std::invalid_argument("precision 'bf16' needs float32 arrays");
  if (a.ndim() != 2 || b.ndim() != 2 || c.ndim() != 2) throw std::invalid_argument("a, b and c must be 2-D");
  const Index m = transpose_a ? a.shape(1) : a.shape(0), k = transpose_a ? a.shape(0) : a.shape(1);
  const Index kb = transpose_b ? b.shape(1) : b.shape(0), n = transpose_b ? b.shape(0) : b.shape(1);
  if (k != kb) throw std::invalid_argument("op(a) and op(b) do not chain");
  if (c.shape(0) != m || c.shape(1) != n) throw std::invalid_argument("c must have shape (m, n)");
  if (cols.first < 0 || cols.second > n || cols.first > cols.second) throw std::invalid_argument("cols out of range");
  const gemm::Operand<T> A{a.data(), a.shape(1), transpose_a}, B{b.data(), b.shape(1), transpose_b};
  gemm::Scratch scratch;
  scratch.reserve(m, n, k, bf16_room ? p : gemm::Precision::Full);
  T* out = c.mutable_data();
  py::gil_scoped_release release;
  gemm::gemm<T>(m, n, k, A, B, out, n, Range{cols.first, cols.second}, false, &scratch, p);
}

// A writable NumPy view of C++ memory owned by `owner` (kept alive by the view).
template <class T>
py::array_t<T> view(py::handle owner, T* data, std::vector<py::ssize_t> shape) {
  std::vector<py::ssize_t> strides(shape.size());
  py::ssize_t stride = sizeof(T);
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return py::array_t<T>(shape, strides, data, owner);
}

void check_matrix(const py::array& a, const char* name, Index cols, const char* cols_what) {
  if (a.ndim() != 2)
    throw std::invalid_argument(std::string(name) + " must be 2-D, got " + std::to_string(a.ndim()) + "-D");
  if (a.shape(1) != cols)
    throw std::invalid_argument(std::string(name) + " must have " + std::to_string(cols) + " columns (" + cols_what +
                                "), got " + std::to_string(a.shape(1)));
}

template <class T>
void check_xy(const Network<T>& net, const InArray<T>& x, const InArray<T>& y) {
  check_matrix(x, "X", net.n_inputs(), "the network's inputs");
  check_matrix(y, "y", net.n_outputs(), "the network's outputs");
  if (x.shape(0) != y.shape(0))
    throw std::invalid_argument("X and y must have the same number of rows, got " + std::to_string(x.shape(0)) +
                                " and " + std::to_string(y.shape(0)));
}

std::unique_lock<std::mutex> claim(std::mutex& m) {
  std::unique_lock<std::mutex> lock(m, std::try_to_lock);
  if (!lock.owns_lock())
    throw std::runtime_error(
        "this Network is being trained by another thread; train one network from one thread at a time");
  return lock;
}

// An optimizer's state (velocity, moments) belongs to one training loop.
template <class T>
std::unique_lock<std::mutex> claim_optimizer(const Optimizer<T>& opt) {
  std::unique_lock<std::mutex> lock(opt.busy(), std::try_to_lock);
  if (!lock.owns_lock())
    throw std::runtime_error(
        "this optimizer is in use by another thread (step, reset or train_epoch); "
        "use one optimizer per network, from one thread at a time");
  return lock;
}

// A copy of an optimizer's state: reset() frees it, so a view could dangle.
template <class T>
py::array_t<T> copy_of(const Vector<T>& v) {
  return py::array_t<T>(py::ssize_t(v.size()), v.data());
}

// An optimizer's state by name (its arrays, and the step count `t` where it
// keeps one), for get_state/set_state: pickling and saving, so that training
// continues where it stopped.
template <class T>
py::dict get_state(Optimizer<T>& opt) {
  py::dict out;
  for (const auto& [name, vec] : opt.state()) out[name] = copy_of(*vec);
  if (const long long* t = opt.steps()) out["t"] = *t;
  return out;
}

// Everything is checked (arrays 1-D of one common length, t >= 0) before
// anything is copied in: a bad state changes nothing.
template <class T>
void set_state(Optimizer<T>& opt, const py::dict& state) {
  const auto parts = opt.state();
  std::vector<InArray<T>> arrays;
  for (const auto& part : parts) {
    if (!state.contains(part.first))
      throw std::invalid_argument(std::string("optimizer state lacks '") + part.first + "'");
    arrays.push_back(state[part.first].template cast<InArray<T>>());
    if (arrays.back().ndim() != 1 || arrays.back().shape(0) != arrays.front().shape(0))
      throw std::invalid_argument(std::string("optimizer state '") + part.first +
                                  "' must be 1-D and as long as the others");
  }
  long long t = 0;
  if (opt.steps() != nullptr) {
    if (!state.contains("t")) throw std::invalid_argument("optimizer state lacks 't'");
    t = state["t"].cast<long long>();
    if (t < 0) throw std::invalid_argument("optimizer state 't' must be >= 0, got " + std::to_string(t));
  }
  auto busy = claim_optimizer(opt);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    Vector<T>& dst = *parts[i].second;
    dst.resize(arrays[i].shape(0));
    std::copy(arrays[i].data(), arrays[i].data() + arrays[i].shape(0), dst.data());
  }
  if (long long* steps = opt.steps()) *steps = t;
}

template <class T>
const T* weights_of(const std::optional<InArray<T>>& w, Index rows) {
  if (!w) return nullptr;
  if (w->ndim() != 1 || w->shape(0) != rows)
    throw std::invalid_argument("sample_weight must be 1-D with one weight per sample (" + std::to_string(rows) +
                                "), got " + std::to_string(w->size()) + " values in " + std::to_string(w->ndim()) +
                                "-D");
  return w->data();
}

// scipy's CSR arrays (data, indices, indptr) as a view, checked for bounds.
template <class T>
CsrView<T> csr_of(const InArray<T>& data, const InArray<std::int64_t>& indices, const InArray<std::int64_t>& indptr,
                  Index rows, Index cols) {
  if (indptr.ndim() != 1 || indptr.shape(0) != rows + 1)
    throw std::invalid_argument("X.indptr must have n_rows + 1 = " + std::to_string(rows + 1) + " entries, got " +
                                std::to_string(indptr.size()));
  const std::int64_t* p = indptr.data();
  const std::int64_t nnz = p[rows];
  if (p[0] != 0 || data.ndim() != 1 || indices.ndim() != 1 || data.shape(0) < nnz || indices.shape(0) < nnz)
    throw std::invalid_argument(
        "X is not a valid CSR matrix: indptr[0] must be 0 and data/indices must hold indptr[-1] = " +
        std::to_string(nnz) + " entries");
  for (Index r = 0; r < rows; ++r)
    if (p[r + 1] < p[r]) throw std::invalid_argument("X.indptr must be non-decreasing");
  const std::int64_t* ix = indices.data();
  for (std::int64_t k = 0; k < nnz; ++k)
    if (ix[k] < 0 || ix[k] >= cols)
      throw std::invalid_argument("X.indices[" + std::to_string(k) + "] = " + std::to_string(ix[k]) +
                                  " is outside [0, " + std::to_string(cols) + ")");
  return CsrView<T>{data.data(), ix, p, rows, cols};
}

// Throws ValueError unless the rows × cols values of x are finite, with
// fastmlp._validation.check_finite's message: "X must be finite, got NaN at
// index (i, j)" — the first value that is not finite, "NaN" if any is NaN
// (else "infinity"). Runs without the GIL: one pass that vectorizes
// (v − v is 0 exactly when v is finite), a second one only on failure.
template <class T>
void check_finite(const T* x, Index rows, Index cols, const char* name) {
  const Index n = rows * cols;
  bool finite = true;
  {
    py::gil_scoped_release release;
    int all = 1;
    for (Index i = 0; i < n; ++i) all &= int(x[i] - x[i] == T(0));
    finite = all != 0;
  }
  if (finite) return;
  Index first = n;
  bool nan = false;
  for (Index i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]) && first == n) first = i;
    nan = nan || std::isnan(x[i]);
  }
  throw std::invalid_argument(std::string(name) + " must be finite, got " + (nan ? "NaN" : "infinity") + " at index (" +
                              std::to_string(first / cols) + ", " + std::to_string(first % cols) + ")");
}

// A new (rows, cols) output array, checked against the machine's memory first.
template <class T>
py::array_t<T> new_output(Index rows, Index cols) {
  check_fits_in_memory(double(rows) * double(cols) * sizeof(T), "forward's output (rows x outputs)");
  return py::array_t<T>({py::ssize_t(rows), py::ssize_t(cols)});
}

// The caller's output array, written in place: exactly (rows, cols), this
// dtype, C-contiguous and writable (never a converted copy, which would
// leave the caller's array untouched).
template <class T>
py::array_t<T> output_array(const py::array& out, Index rows, Index cols) {
  if (!py::isinstance<py::array_t<T>>(out) || !out.dtype().is(py::dtype::of<T>()))
    throw py::type_error("out must be a " + std::string(py::str(py::dtype::of<T>())) + " array, got " +
                         std::string(py::str(out.dtype())));
  if (out.ndim() != 2 || out.shape(0) != rows || out.shape(1) != cols)
    throw std::invalid_argument("out must have shape (" + std::to_string(rows) + ", " + std::to_string(cols) + ")");
  if (!(out.flags() & py::array::c_style) || !(out.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) ||
      !out.writeable())
    throw std::invalid_argument("out must be C-contiguous, aligned and writable");
  return py::reinterpret_borrow<py::array_t<T>>(out);
}

template <class T>
void check_rows_y(const Network<T>& n, const InArray<T>& y, Index rows) {
  check_matrix(y, "y", n.n_outputs(), "the network's outputs");
  if (y.shape(0) != rows)
    throw std::invalid_argument("X and y must have the same number of rows, got " + std::to_string(rows) + " and " +
                                std::to_string(y.shape(0)));
}

// One epoch's settings from Python, filled by field name
// (_core.EpochOptions(batch_size=..., shuffle=..., ...)); translated field by
// field into the core's EpochOptions by run_epoch.
struct EpochSettings {
  Index batch_size = 200;
  bool shuffle = true;  // ignored when the rows carry an order
  Regularization regularization;
  std::optional<LearningRateSchedule> schedule;
  double epoch = 0.0;
  Index world_size = 1;  // how many processes' batches one step stands for (data parallel)
  Index rank = 0;  // which of them this one is (its rows' place in the global batch)
  // The gradient hook's form: false, hook(grads, loss) -> loss averages over world_size
  // processes (the penalties divide by world_size × W); true, hook(grads, loss, W) ->
  // (loss, W_g) returns the global batch's weight total itself (GradientHook, trainer.hpp).
  bool weighted_hook = false;
};

// The rows of an epoch or an objective, filled by field name
// (_core.Rows_float32(x=..., y=..., ...)): dense `x`, or scipy's CSR arrays
// (data, indices, indptr, n_rows, n_cols); targets `y`; optional
// `sample_weight` and visiting `order` (one index per row).
template <class T>
struct Rows {
  std::optional<InArray<T>> x;
  std::optional<InArray<T>> data;
  std::optional<InArray<std::int64_t>> indices;
  std::optional<InArray<std::int64_t>> indptr;
  Index n_rows = 0;
  Index n_cols = 0;
  std::optional<InArray<T>> y;
  std::optional<InArray<T>> sample_weight;
  std::optional<InArray<std::int64_t>> order;
};

// A Rows checked against a network, as the core's Batch (which points into
// `rows` and into `csr`: keep both alive and in place while it is used).
template <class T>
struct CheckedRows {
  std::optional<CsrView<T>> csr;
  Batch<T> batch;
  CheckedRows(const CheckedRows&) = delete;
  CheckedRows& operator=(const CheckedRows&) = delete;

  CheckedRows(const Network<T>& n, const Rows<T>& rows) {
    if (!rows.y) throw std::invalid_argument("rows.y must be given");
    Index count;
    if (rows.x) {
      if (rows.data) throw std::invalid_argument("rows must hold either x (dense) or data (CSR), not both");
      check_xy(n, *rows.x, *rows.y);
      count = rows.x->shape(0);
      batch.x = rows.x->data();
    } else {
      if (!rows.data || !rows.indices || !rows.indptr)
        throw std::invalid_argument("rows must hold x (dense) or data, indices and indptr (CSR)");
      if (rows.n_cols != n.n_inputs())
        throw std::invalid_argument("X must have " + std::to_string(n.n_inputs()) + " columns, got " +
                                    std::to_string(rows.n_cols));
      csr = csr_of(*rows.data, *rows.indices, *rows.indptr, rows.n_rows, rows.n_cols);
      check_rows_y(n, *rows.y, rows.n_rows);
      count = rows.n_rows;
      batch.csr = &*csr;
    }
    batch.y = rows.y->data();
    batch.w = weights_of(rows.sample_weight, count);
    batch.rows = count;
  }
};

// A loss argument: a name of kLosses (its default parameters) or a _core.Loss.
Loss as_loss(const py::handle& loss) {
  if (py::isinstance<py::str>(loss)) return parse_loss(loss.cast<std::string>());
  if (py::isinstance<Loss>(loss)) return loss.cast<Loss>();
  throw py::type_error("loss must be a name (str) or a fastmlp._core.Loss, got " +
                       std::string(py::str(py::type::of(loss).attr("__name__"))));
}

// One epoch from Python: the options, Ctrl-C polling, the gradient hook, and
// the GIL released around the C++ loop.
template <class T>
double run_epoch(Network<T>& n, const Rows<T>& rows, Loss loss, Optimizer<T>& optimizer, const EpochSettings& settings,
                 const py::object& gradient_hook) {
  const CheckedRows<T> data(n, rows);
  EpochOptions options;
  options.batch_size = settings.batch_size;
  options.shuffle = settings.shuffle;
  options.regularization = settings.regularization;
  if (rows.order) {
    const auto& order = *rows.order;
    if (order.ndim() != 1 || order.shape(0) != data.batch.rows)
      throw std::invalid_argument("order must be 1-D with one index per sample (" + std::to_string(data.batch.rows) +
                                  "), got " + std::to_string(order.size()) + " elements");
    options.order = order.data();
  }
  if (settings.schedule) options.schedule = &*settings.schedule;
  options.epoch = settings.epoch;
  // Ctrl-C: Python's handler only sets a flag; look at it between batches.
  bool interrupted = false;
  options.should_stop = [&interrupted]() {
    py::gil_scoped_acquire acquire;
    interrupted = PyErr_CheckSignals() != 0;
    return interrupted;
  };
  // gradient_hook(grads, loss) -> loss, called with the GIL held and a view
  // of the gradient buffer, which it may change in place.
  if (settings.world_size < 1)
    throw std::invalid_argument("world_size must be >= 1, got " + std::to_string(settings.world_size));
  if (settings.rank < 0 || settings.rank >= settings.world_size)
    throw std::invalid_argument("rank must be in [0, world_size), got " + std::to_string(settings.rank));
  GradientHook<T> hook;
  hook.rank = settings.rank;
  if (!gradient_hook.is_none()) {
    const bool weighted = settings.weighted_hook;
    const double world = double(settings.world_size);
    hook.reduce = [&gradient_hook, &n, weighted, world](T* g, Index count, double* loss_value, double* weight) {
      py::gil_scoped_acquire acquire;
      py::array_t<T> grads({py::ssize_t(count)}, {py::ssize_t(sizeof(T))}, g,
                           py::cast(&n, py::return_value_policy::reference));
      if (!weighted) {
        py::object value = gradient_hook(grads, *loss_value);
        try {
          *loss_value = value.template cast<double>();
        } catch (const py::cast_error&) {
          throw py::type_error("gradient_hook must return the batch loss as a float, got " +
                               std::string(py::repr(value)));
        }
        *weight *= world;
        return;
      }
      py::object value = gradient_hook(grads, *loss_value, *weight);
      try {
        const auto pair = value.template cast<std::pair<double, double>>();
        *loss_value = pair.first;
        *weight = pair.second;
      } catch (const py::cast_error&) {
        throw py::type_error("a weighted gradient_hook must return (loss, weight_total) as floats, got " +
                             std::string(py::repr(value)));
      }
    };
  }
  double value;
  {
    py::gil_scoped_release release;
    auto busy = claim_optimizer(optimizer);
    value = train_epoch(n, optimizer, data.batch, loss, options, &hook);
  }
  if (interrupted) throw py::error_already_set();
  return value;
}

// A record's constructor that sets its fields by keyword (an unknown name is
// an AttributeError, a wrong type a TypeError): swapping two values cannot
// compile into a silent mistake, as a positional constructor could.
template <class Record, class Class>
void keyword_init(Class& cls) {
  cls.def(py::init([](const py::kwargs& fields) {
    auto record = std::make_unique<Record>();
    py::object self = py::cast(record.get(), py::return_value_policy::reference);
    for (const auto& field : fields) py::setattr(self, field.first, field.second);
    return record;
  }));
}

// A list of layers from their JSON form (dicts with "kind" and the kind's
// fields; fastmlp.layers checks them first, the core again).
std::vector<LayerSpec> layer_specs(const py::list& layers) {
  std::vector<LayerSpec> out;
  for (const py::handle& item : layers) {
    const py::dict d = py::reinterpret_borrow<py::dict>(item);
    LayerSpec spec;
    spec.kind = parse_layer_kind(d["kind"].cast<std::string>());
    const auto get = [&](const char* key, auto fallback) {
      return d.contains(key) ? d[key].cast<decltype(fallback)>() : fallback;
    };
    spec.units = get("units", Index(0));
    if (d.contains("name")) spec.activation = parse_activation(d["name"].cast<std::string>());
    spec.rate = get("rate", 0.0);
    spec.momentum = get("momentum", 0.1);
    spec.eps = get("eps", 1e-5);
    if (d.contains("layers")) spec.layers = layer_specs(d["layers"].cast<py::list>());
    spec.columns = get("columns", std::vector<Index>{});
    spec.cardinalities = get("cardinalities", std::vector<Index>{});
    spec.dims = get("dims", std::vector<Index>{});
    out.push_back(std::move(spec));
  }
  return out;
}

template <class T>
void bind_dtype(py::module_& m, const std::string& suffix) {
  using Net = Network<T>;
  py::class_<Net>(m, ("Network" + suffix).c_str())
      // activation: one name for every hidden layer, or a list with one per hidden layer.
      .def(py::init([](std::vector<Index> sizes, const std::variant<std::string, std::vector<std::string>>& activation,
                       const std::string& output, double slope, std::uint64_t seed, const std::string& init) {
             std::vector<Activation> hidden;
             if (const auto* one = std::get_if<std::string>(&activation)) {
               hidden.push_back(parse_activation(*one));
             } else {
               for (const std::string& name : std::get<std::vector<std::string>>(activation))
                 hidden.push_back(parse_activation(name));
             }
             return new Net(std::move(sizes), std::move(hidden), parse_activation(output), slope, seed,
                            parse_init(init));
           }),
           py::arg("layer_sizes"), py::arg("activation"), py::arg("output_activation"), py::arg("slope"),
           py::arg("seed"), py::arg("init"))
      // A list of layers, in their JSON form (fastmlp.layers.to_spec; docs/layers.md).
      .def(py::init([](Index input_size, const py::list& layers, const std::string& output, double slope,
                       std::uint64_t seed, const std::string& init) {
             return new Net(input_size, layer_specs(layers), parse_activation(output), slope, seed, parse_init(init));
           }),
           py::arg("input_size"), py::arg("layers"), py::arg("output_activation"), py::arg("slope"), py::arg("seed"),
           py::arg("init"))
      .def_property_readonly("shorthand", &Net::shorthand)
      .def_property_readonly("n_state", &Net::n_state)
      .def_property_readonly("needs_whole_batch", &Net::needs_whole_batch)
      .def_property_readonly("layer_sizes", &Net::layer_sizes)
      .def_property_readonly("n_inputs", &Net::n_inputs)
      .def_property_readonly("n_params", &Net::n_params)
      .def_property_readonly("activations",
                             [](const Net& n) {
                               std::vector<std::string> names;
                               for (Activation f : n.hidden_activations()) names.emplace_back(activation_name(f));
                               return names;
                             })
      .def_property_readonly("seed", &Net::seed)
      .def_property("steps", &Net::steps,
                    [](Net& n, std::uint64_t steps) {
                      auto lock = claim(n.busy());
                      n.set_steps(steps);
                    })
      .def_property(
          "precision", [](const Net& n) { return precision_name<T>(n.precision()); },
          [](Net& n, const std::string& name) {
            const gemm::Precision p = parse_precision<T>(name);
            auto lock = claim(n.busy());
            n.set_precision(p);
          })
      .def_property_readonly("dropout", [](const Net& n) { return n.noise().dropout; })
      .def_property_readonly("input_noise", [](const Net& n) { return n.noise().input_noise; })
      .def_property_readonly("max_norm", [](const Net& n) { return n.noise().max_norm; })
      .def(
          "set_noise",
          [](Net& n, std::vector<double> dropout, double input_noise, double max_norm) {
            TrainingNoise noise;
            noise.dropout = std::move(dropout);
            noise.input_noise = input_noise;
            noise.max_norm = max_norm;
            auto lock = claim(n.busy());
            n.set_noise(std::move(noise));
          },
          py::arg("dropout"), py::arg("input_noise"), py::arg("max_norm"))
      .def(
          "draws",
          [](const Net& n, Index rows, std::uint64_t step) {
            // What training step `step` draws for a batch of `rows` rows: the
            // input noise σ·ε (rows × n_inputs, or None) and, per layer input, the
            // keep mask m (rows × width, 0/1; None where the rate is 0).
            if (rows < 1) throw std::invalid_argument("rows must be >= 1, got " + std::to_string(rows));
            const TrainingNoise& noise = n.noise();
            const DrawKey key{n.seed(), step, 0};
            // Drawn by the training step's own kernels (dropout.hpp), on zeros and ones.
            py::object eps = py::none();
            if (noise.input_noise > 0.0) {
              py::array_t<T> e = new_output<T>(rows, n.n_inputs());
              T* d = e.mutable_data();
              std::fill(d, d + rows * n.n_inputs(), T(0));
              perturb_inputs(d, d, 0, rows, n.n_inputs(), noise.input_noise, 0.0, key);  // 0 + σ·ε
              eps = e;
            }
            py::list masks;
            if (!n.shorthand()) {  // one per Dropout layer, in order
              for (const Op& op : n.ops()) {
                if (op.kind != OpKind::Dropout) continue;
                if (op.rate <= 0.0) {
                  masks.append(py::none());
                  continue;
                }
                py::array_t<T> m = new_output<T>(rows, op.width);
                T* d = m.mutable_data();
                std::fill(d, d + rows * op.width, T(1));
                dropout_columns(d, d, rows, op.width, Range{0, op.width}, op.rate, op.site, key);
                for (Index i = 0; i < rows * op.width; ++i) d[i] = d[i] != T(0) ? T(1) : T(0);
                masks.append(m);
              }
              return py::make_tuple(eps, masks);
            }
            for (Index l = 0; l < n.n_layers(); ++l) {
              const double p = l < Index(noise.dropout.size()) ? noise.dropout[std::size_t(l)] : 0.0;
              if (p <= 0.0) {
                masks.append(py::none());
                continue;
              }
              const Index width = n.layer_sizes()[std::size_t(l)];
              py::array_t<T> m = new_output<T>(rows, width);
              T* d = m.mutable_data();
              std::fill(d, d + rows * width, T(1));
              dropout_columns(d, d, rows, width, Range{0, width}, p, std::uint32_t(l), key);  // 1/(1 − p) or 0
              for (Index i = 0; i < rows * width; ++i) d[i] = d[i] != T(0) ? T(1) : T(0);
              masks.append(m);
            }
            return py::make_tuple(eps, masks);
          },
          py::arg("rows"), py::arg("step"))
      .def_property_readonly("output_activation", [](const Net& n) { return activation_name(n.output_activation()); })
      .def_property_readonly("slope", [](const Net& n) { return double(n.slope()); })
      .def_property_readonly("params",
                             [](py::object self) {
                               Net& n = self.cast<Net&>();
                               return view<T>(self, n.params(), {n.n_params()});
                             })
      .def_property_readonly("grads",
                             [](py::object self) {
                               Net& n = self.cast<Net&>();
                               return view<T>(self, n.grads(), {n.n_params()});
                             })
      .def(
          "layer_views",
          [](py::object self, bool grads) {
            // [(W_0, b_0), (W_1, b_1), ...] as views of the parameter (or gradient) buffer.
            Net& n = self.cast<Net&>();
            T* base = grads ? n.grads() : n.params();
            py::list out;
            for (Index l = 0; l < n.n_layers(); ++l) {
              const Index fan_in = n.fan_in(l), fan_out = n.fan_out(l);
              out.append(py::make_tuple(view<T>(self, base + n.weight_offset(l), {fan_in, fan_out}),
                                        view<T>(self, base + n.bias_offset(l), {fan_out})));
            }
            return out;
          },
          py::arg("grads"))
      .def_property_readonly("state",
                             [](py::object self) {
                               Net& n = self.cast<Net&>();
                               return view<T>(self, n.state(), {n.n_state()});
                             })
      .def(
          "param_views",
          [](py::object self, bool grads) {
            // Per op with parameters or state, in order: (kind, {name: view of params, grads or state}).
            Net& n = self.cast<Net&>();
            T* base = grads ? n.grads() : n.params();
            py::list out;
            for (const Op& op : n.ops()) {
              py::dict views;
              const Index w = op.width;
              switch (op.kind) {
                case OpKind::Dense:
                  views["W"] = view<T>(self, base + op.param, {op.width_in, w});
                  views["b"] = view<T>(self, base + op.param + op.width_in * w, {w});
                  out.append(py::make_tuple("dense", views));
                  break;
                case OpKind::BatchNorm:
                case OpKind::LayerNorm:
                  views["weight"] = view<T>(self, base + op.param, {w});
                  views["bias"] = view<T>(self, base + op.param + w, {w});
                  if (op.kind == OpKind::BatchNorm && !grads) {
                    views["running_mean"] = view<T>(self, n.state() + op.state, {w});
                    views["running_var"] = view<T>(self, n.state() + op.state + w, {w});
                  }
                  out.append(py::make_tuple(op.kind == OpKind::BatchNorm ? "batch_norm" : "layer_norm", views));
                  break;
                case OpKind::Embedding: {
                  Index offset = op.param;
                  for (std::size_t j = 0; j < op.cardinalities.size(); ++j) {
                    Index dims = 0;
                    for (const EmbeddingColumn& e : op.columns) dims += e.table == int(j) ? 1 : 0;
                    views[py::str("table" + std::to_string(j))] =
                        view<T>(self, base + offset, {op.cardinalities[j], dims});
                    offset += op.cardinalities[j] * dims;
                  }
                  out.append(py::make_tuple("embedding", views));
                  break;
                }
                default: break;
              }
            }
            return out;
          },
          py::arg("grads"))
      .def(
          "initialize",
          [](Net& n, std::uint64_t seed, const std::string& init) {
            const Init how = parse_init(init);
            auto lock = claim(n.busy());
            n.initialize(seed, how);
          },
          py::arg("seed"), py::arg("init"))
      .def(
          "forward",
          [](const Net& n, const InArray<T>& x, std::optional<py::array> out, bool finite_checked) {
            check_matrix(x, "X", n.n_inputs(), "the network's inputs");
            const Index rows = x.shape(0);
            if (!finite_checked) check_finite(x.data(), rows, n.n_inputs(), "X");
            py::array_t<T> dst = out ? output_array<T>(*out, rows, n.n_outputs()) : new_output<T>(rows, n.n_outputs());
            T* data = dst.mutable_data();
            {
              py::gil_scoped_release release;
              n.forward(x.data(), rows, data);
            }
            return dst;
          },
          py::arg("X"), py::arg("out") = py::none(), py::arg("finite_checked") = false)
      .def(
          "forward_csr",
          [](const Net& n, const InArray<T>& data, const InArray<std::int64_t>& indices,
             const InArray<std::int64_t>& indptr, Index rows, Index cols) {
            if (cols != n.n_inputs())
              throw std::invalid_argument("X must have " + std::to_string(n.n_inputs()) + " columns, got " +
                                          std::to_string(cols));
            const CsrView<T> x = csr_of(data, indices, indptr, rows, cols);
            py::array_t<T> out = new_output<T>(rows, n.n_outputs());
            T* dst = out.mutable_data();
            {
              py::gil_scoped_release release;
              n.forward(x, dst);
            }
            return out;
          },
          py::arg("data"), py::arg("indices"), py::arg("indptr"), py::arg("rows"), py::arg("cols"))
      .def(
          "loss_and_grad",
          [](Net& n, const InArray<T>& x, const InArray<T>& y, const py::object& loss,
             std::optional<InArray<T>> sample_weight, std::optional<std::uint64_t> draw_step) {
            const Loss l = as_loss(loss);
            check_xy(n, x, y);
            const Batch<T> batch{x.data(), nullptr, y.data(), weights_of(sample_weight, x.shape(0)), x.shape(0)};
            py::gil_scoped_release release;
            auto lock = claim(n.busy());
            return loss_and_grad(n, batch, l, draw_step ? &*draw_step : nullptr);
          },
          py::arg("X"), py::arg("y"), py::arg("loss"), py::arg("sample_weight") = py::none(),
          py::arg("draw_step") = py::none())
      .def(
          "objective",
          [](Net& n, const Rows<T>& rows, const py::object& loss, const Regularization& reg) {
            const Loss l = as_loss(loss);
            const CheckedRows<T> data(n, rows);
            py::gil_scoped_release release;
            auto lock = claim(n.busy());
            return objective(n, data.batch, l, reg);
          },
          py::arg("rows"), py::arg("loss"), py::arg("regularization"))
      .def(
          "train_epoch",
          [](Net& n, const Rows<T>& rows, const py::object& loss, Optimizer<T>& optimizer, const EpochSettings& options,
             const py::object& gradient_hook) {
            return run_epoch(n, rows, as_loss(loss), optimizer, options, gradient_hook);
          },
          py::arg("rows"), py::arg("loss"), py::arg("optimizer"), py::arg("options"),
          py::arg("gradient_hook") = py::none())
      .def(
          "shuffled_order",
          // The order train_epoch(shuffle=True) would visit n samples in, drawn from (and advancing)
          // the same generator: an epoch streamed batch by batch from Python (fastmlp.data) visits
          // the samples of the in-memory epoch.
          [](Net& n, Index count) {
            if (count < 0) throw std::invalid_argument("n must be >= 0, got " + std::to_string(count));
            py::array_t<std::int64_t> order(count);
            std::int64_t* p = order.mutable_data();
            std::iota(p, p + count, std::int64_t(0));
            auto lock = claim(n.busy());
            n.rng().shuffle(p, p + count);
            return order;
          },
          py::arg("n"));

  py::class_<Rows<T>> rows(m, ("Rows" + suffix).c_str());
  keyword_init<Rows<T>>(rows);
  rows.def_readwrite("x", &Rows<T>::x)
      .def_readwrite("data", &Rows<T>::data)
      .def_readwrite("indices", &Rows<T>::indices)
      .def_readwrite("indptr", &Rows<T>::indptr)
      .def_readwrite("n_rows", &Rows<T>::n_rows)
      .def_readwrite("n_cols", &Rows<T>::n_cols)
      .def_readwrite("y", &Rows<T>::y)
      .def_readwrite("sample_weight", &Rows<T>::sample_weight)
      .def_readwrite("order", &Rows<T>::order);

  // Every optimizer of kOptimizers, made by name from its hyperparameters.
  py::class_<Optimizer<T>>(m, ("Optimizer" + suffix).c_str())
      .def(py::init(&make_optimizer<T>), py::arg("name"), py::arg("hyperparameters"))
      .def_readwrite("lr", &Optimizer<T>::lr)
      .def_property_readonly("t",
                             [](Optimizer<T>& opt) {
                               const long long* t = opt.steps();
                               return t == nullptr ? 0LL : *t;
                             })
      .def("get_state", &get_state<T>)
      .def("set_state", &set_state<T>, py::arg("state"))
      .def("reset",
           [](Optimizer<T>& opt) {
             auto busy = claim_optimizer(opt);
             opt.reset();
           })
      .def(
          "step",
          [](Optimizer<T>& opt, Net& n) {
            py::gil_scoped_release release;
            auto busy = claim_optimizer(opt);
            auto lock = claim(n.busy());
            opt.step(n.params(), n.grads(), n.n_params());
          },
          py::arg("net"));
}

}  // namespace

// One source, several modules: `_core` (a build for one machine) or
// `_core_<variant>` (the wheel's per-CPU variants); CMake names it.
#ifndef FASTMLP_MODULE_NAME
#define FASTMLP_MODULE_NAME _core
#endif
#ifndef FASTMLP_VARIANT
#define FASTMLP_VARIANT "unknown"
#endif

PYBIND11_MODULE(FASTMLP_MODULE_NAME, m) {
  m.doc() = "fastmlp's compiled core (C++17, Eigen, OpenMP). Use the fastmlp package, not this module.";
  py::class_<Regularization>(m, "Regularization")
      .def(py::init([](double l2, double l1, double clip_value, double clip_norm, double grad_scale) {
             Regularization r;
             r.l2 = l2;
             r.l1 = l1;
             r.clip_value = clip_value;
             r.clip_norm = clip_norm;
             r.grad_scale = grad_scale;
             r.check();
             return r;
           }),
           py::arg("l2") = 0.0, py::arg("l1") = 0.0, py::arg("clip_value") = 0.0, py::arg("clip_norm") = 0.0,
           py::arg("grad_scale") = 1.0)
      .def_readonly("l2", &Regularization::l2)
      .def_readonly("l1", &Regularization::l1)
      .def_readonly("clip_value", &Regularization::clip_value)
      .def_readonly("clip_norm", &Regularization::clip_norm)
      .def_readonly("grad_scale", &Regularization::grad_scale);
  // A loss with its parameters (loss.hpp's Loss); each loss reads only its own (kLosses' param).
  py::class_<Loss>(m, "Loss")
      .def(py::init([](const std::string& name, double delta, double alpha, double label_smoothing) {
             Loss loss = parse_loss(name);
             loss.delta = delta;
             loss.alpha = alpha;
             loss.label_smoothing = label_smoothing;
             check_loss_params(loss);
             return loss;
           }),
           py::arg("name"), py::arg("delta") = Loss{}.delta, py::arg("alpha") = Loss{}.alpha,
           py::arg("label_smoothing") = Loss{}.label_smoothing)
      .def_property_readonly("name", [](const Loss& loss) { return std::string(loss_name(loss)); })
      .def_readonly("delta", &Loss::delta)
      .def_readonly("alpha", &Loss::alpha)
      .def_readonly("label_smoothing", &Loss::label_smoothing);
  py::class_<LearningRateSchedule>(m, "LearningRateSchedule")
      .def(py::init([](const std::string& kind, double base_lr, double gamma, double step_size, double total_epochs,
                       double min_lr, double warmup_epochs) {
             LearningRateSchedule s;
             s.kind = parse_schedule(kind);
             s.base_lr = base_lr;
             s.gamma = gamma;
             s.step_size = step_size;
             s.total_epochs = total_epochs;
             s.min_lr = min_lr;
             s.warmup_epochs = warmup_epochs;
             s.check();
             return s;
           }),
           py::arg("kind"), py::arg("base_lr"), py::arg("gamma") = 0.1, py::arg("step_size") = 10.0,
           py::arg("total_epochs") = 200.0, py::arg("min_lr") = 0.0, py::arg("warmup_epochs") = 0.0)
      .def("at", &LearningRateSchedule::at, py::arg("p"), py::arg("delta"));
  py::class_<EpochSettings> epoch_options(m, "EpochOptions");
  keyword_init<EpochSettings>(epoch_options);
  epoch_options.def_readwrite("batch_size", &EpochSettings::batch_size)
      .def_readwrite("shuffle", &EpochSettings::shuffle)
      .def_readwrite("regularization", &EpochSettings::regularization)
      .def_readwrite("schedule", &EpochSettings::schedule)
      .def_readwrite("epoch", &EpochSettings::epoch)
      .def_readwrite("world_size", &EpochSettings::world_size)
      .def_readwrite("rank", &EpochSettings::rank)
      .def_readwrite("weighted_hook", &EpochSettings::weighted_hook);
  bind_dtype<float>(m, "_float32");
  bind_dtype<double>(m, "_float64");
  // The names the core accepts, from its tables (activation.hpp, loss.hpp,
  // network.hpp, schedule.hpp, optimizer.hpp): the Python package's lists are made from these.
  m.def("activations", []() {
    std::vector<std::tuple<std::string, bool, double, double>> out;
    for (const ActivationInfo& row : kActivations)
      out.emplace_back(row.name, row.hidden, row.glorot_factor, row.he_factor);
    return out;
  });
  m.def("activation_aliases", []() {
    std::vector<std::pair<std::string, std::string>> out;
    for (const ActivationAlias& row : kActivationAliases) out.emplace_back(row.alias, activation_name(row.value));
    return out;
  });
  m.def("optimizers", []() {  // (name, [(param, default, lo, hi, lo_open, hi_open, is_flag)], [state], counts_steps)
    using Param = std::tuple<std::string, double, double, double, bool, bool, bool>;
    std::vector<std::tuple<std::string, std::vector<Param>, std::vector<std::string>, bool>> out;
    for (const OptimizerInfo& row : kOptimizers) {
      std::vector<Param> params;
      for (const OptimizerParam& p : row.params)
        if (p.name != nullptr)
          params.emplace_back(p.name, p.default_value, p.lo, p.hi, p.lo_open, p.hi_open, p.is_flag);
      std::vector<std::string> state;
      for (const char* name : row.state)
        if (name != nullptr) state.emplace_back(name);
      out.emplace_back(row.name, params, state, row.counts_steps);
    }
    return out;
  });
  m.def("losses", []() {
    using Name = std::optional<std::string>;
    std::vector<std::tuple<std::string, Name, Name>> out;
    for (const LossInfo& row : kLosses)
      out.emplace_back(row.name, row.needs_output ? Name(activation_name(row.output)) : std::nullopt,
                       row.param != nullptr ? Name(row.param) : std::nullopt);
    return out;
  });
  m.def("loss_params", []() {  // (name, default, lo, hi, lo_open, hi_open)
    std::vector<std::tuple<std::string, double, double, double, bool, bool>> out;
    for (const LossParam& p : kLossParams) out.emplace_back(p.name, Loss{}.*p.field, p.lo, p.hi, p.lo_open, p.hi_open);
    return out;
  });
  m.def("inits", []() {
    std::vector<std::string> out;
    for (const InitInfo& row : kInits) out.emplace_back(row.name);
    return out;
  });
  m.def("schedules", []() {
    std::vector<std::string> out;
    for (const ScheduleInfo& row : kSchedules) out.emplace_back(row.name);
    return out;
  });
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &get_num_threads);
  m.def("thread_limit", &thread_limit);
  // For the tests: calls fn() on thread 0 of an OpenMP region of `threads`
  // threads started here, outside fastmlp's runtime — as another library's
  // parallel code calling into fastmlp would.
  m.def(
      "_call_in_openmp_region",
      [](const py::function& fn, int threads) {
        if (threads < 1 || threads > thread_limit()) throw std::invalid_argument("threads out of range");
        std::exception_ptr error;
        py::gil_scoped_release release;
#pragma omp parallel num_threads(threads)
        if (omp_get_thread_num() == 0) {
          py::gil_scoped_acquire acquire;
          try {
            fn();
          } catch (...) {
            error = std::current_exception();
          }
        }
        if (error) std::rethrow_exception(error);
      },
      py::arg("fn"), py::arg("threads"));
  m.def("build_info", []() {
    py::dict info;
    info["version"] = FASTMLP_VERSION;
    info["variant"] = FASTMLP_VARIANT;
#if defined(__clang__)
    info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    info["compiler"] = std::string("gcc ") + __VERSION__;
#endif
    info["cxx_flags"] = FASTMLP_CXX_FLAGS;
    info["eigen"] = std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
                    std::to_string(EIGEN_MINOR_VERSION);
    // Eigen's own string omits AVX2 and FMA below AVX-512; its macros say what its kernels use.
    std::string simd;
    auto add = [&simd](bool on, const char* name) {
      if (on) simd += simd.empty() ? name : std::string(", ") + name;
    };
#if defined(EIGEN_VECTORIZE_AVX512)
    add(true, "AVX512");
#endif
#if defined(EIGEN_VECTORIZE_AVX2)
    add(true, "AVX2");
#endif
#if defined(EIGEN_VECTORIZE_FMA)
    add(true, "FMA");
#endif
#if defined(EIGEN_VECTORIZE_AVX)
    add(true, "AVX");
#endif
#if defined(EIGEN_VECTORIZE_SSE4_2)
    add(true, "SSE4.2");
#endif
#if defined(EIGEN_VECTORIZE_SSE2)
    add(true, "SSE2");
#endif
#if defined(EIGEN_VECTORIZE_NEON)
    add(true, "NEON");
#endif
    info["eigen_simd"] = simd.empty() ? std::string("none") : simd;
    info["eigen_max_align_bytes"] = int(EIGEN_MAX_ALIGN_BYTES);
    info["openmp"] = _OPENMP;  // the spec's date, yyyymm: 201511 is OpenMP 4.5
    info["gemm_kernel"] = gemm::kernel_name(gemm::kernel());
    info["gemm_why"] = gemm::kernel_why();
    info["gemm_kernels"] =
        gemm::packed_available() ? std::vector<std::string>{"eigen", "packed"} : std::vector<std::string>{"eigen"};
    info["bf16_kernel"] = gemm::bf16_kernel_name(gemm::bf16_kernel());
    info["bf16_why"] = gemm::bf16_kernel_why();
    info["bf16_kernels"] = gemm::bf16_native_available() ? std::vector<std::string>{"avx512bf16", "fallback"}
                                                         : std::vector<std::string>{"fallback"};
    return info;
  });
  // For the tests: the GEMM layer itself (gemm.hpp) on NumPy arrays, and the
  // kernel it uses from now on.
  m.def(
      "_set_gemm_kernel",
      [](const std::string& name) {
        if (name != "eigen" && name != "packed")
          throw std::invalid_argument("kernel must be 'eigen' or 'packed', got '" + name + "'");
        if (!gemm::set_kernel(name == "packed" ? gemm::Kernel::Packed : gemm::Kernel::Eigen))
          throw std::invalid_argument("this build has no packed GEMM kernel (it needs AVX2+FMA)");
      },
      py::arg("name"));
  m.def(
      "_set_bf16_kernel",
      [](const std::string& name) {
        if (name != "avx512bf16" && name != "fallback")
          throw std::invalid_argument("kernel must be 'avx512bf16' or 'fallback', got '" + name + "'");
        if (!gemm::set_bf16_kernel(name == "fallback" ? gemm::Bf16Kernel::Fallback : gemm::Bf16Kernel::Avx512Bf16))
          throw std::invalid_argument("the AVX512-BF16 kernel is not available here (this build or this CPU lacks it)");
      },
      py::arg("name"));
  // For the tests and show_config: (efficiency of the last window of regions, seconds of
  // one-thread back-off left) — parallel.hpp, rule 5.
  m.def("_contention_state", &parallel::contention_state);
  m.def("_gemm", &gemm_for_tests<float>, py::arg("a"), py::arg("b"), py::arg("transpose_a"), py::arg("transpose_b"),
        py::arg("cols"), py::arg("c"), py::arg("precision") = "fp32", py::arg("bf16_room") = true);
  m.def("_gemm", &gemm_for_tests<double>, py::arg("a"), py::arg("b"), py::arg("transpose_a"), py::arg("transpose_b"),
        py::arg("cols"), py::arg("c"), py::arg("precision") = "fp64", py::arg("bf16_room") = true);
}
