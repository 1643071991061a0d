#include "fastmlp/optimizer.hpp"

#include <cmath>
#include <iterator>
#include <stdexcept>

#include "fastmlp/parallel.hpp"

namespace fastmlp {

namespace {

void check_range(const char* name, double value, double lo, double hi) {
  if (!(value >= lo && value < hi))
    throw std::invalid_argument(std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                "), got " + std::to_string(value));
}

void check_lr(double lr) {
  if (!(lr >= 0.0) || !std::isfinite(lr))
    throw std::invalid_argument("lr must be a finite number >= 0, got " + std::to_string(lr));
}

}  // namespace

template <class T>
void Optimizer<T>::bind(Vector<T>& state, Index n) {
  if (state.size() == 0) {
    state.setZero(n);
  } else if (state.size() != n) {
    throw std::invalid_argument("this optimizer's state belongs to a network with " + std::to_string(state.size()) +
                                " parameters, got one with " + std::to_string(n) +
                                " (use one optimizer per network, or reset it)");
  }
}

template <class T>
void Optimizer<T>::step(T* params, const T* grads, Index n) {
  prepare(n);
  begin_step();
  parallel::for_elements(n, [&](Index b, Index e) { update(params, grads, b, e); });
}

template <class T>
SGD<T>::SGD(double lr, double momentum, bool nesterov) : Optimizer<T>(lr), momentum(momentum), nesterov(nesterov) {
  check();
}

template <class T>
void SGD<T>::check() const {
  check_lr(this->lr);
  check_range("momentum", momentum, 0.0, 1.0);
}

template <class T>
void SGD<T>::prepare(Index n) {
  check();
  if (momentum != 0.0) this->bind(velocity, n);
}

template <class T>
void SGD<T>::update(T* p, const T* g, Index begin, Index end) {
  const T lr = T(this->lr), mu = T(momentum);
  if (momentum == 0.0) {
#pragma omp simd
    for (Index i = begin; i < end; ++i) p[i] -= lr * g[i];
    return;
  }
  T* v = velocity.data();
  if (nesterov) {
#pragma omp simd
    for (Index i = begin; i < end; ++i) {
      v[i] = mu * v[i] - lr * g[i];
      p[i] += mu * v[i] - lr * g[i];
    }
  } else {
#pragma omp simd
    for (Index i = begin; i < end; ++i) {
      v[i] = mu * v[i] - lr * g[i];
      p[i] += v[i];
    }
  }
}

template <class T>
Adam<T>::Adam(double lr, double beta1, double beta2, double eps)
    : Optimizer<T>(lr), beta1(beta1), beta2(beta2), eps(eps) {
  check();
}

template <class T>
void Adam<T>::check() const {
  check_lr(this->lr);
  check_range("beta1", beta1, 0.0, 1.0);
  check_range("beta2", beta2, 0.0, 1.0);
  if (!(eps > 0.0) || !std::isfinite(eps))
    throw std::invalid_argument("eps must be a finite number > 0, got " + std::to_string(eps));
}

template <class T>
void Adam<T>::prepare(Index n) {
  check();
  this->bind(m, n);
  this->bind(v, n);
}

template <class T>
void Adam<T>::begin_step() {
  ++t;
  step_size_ = this->lr * std::sqrt(1.0 - std::pow(beta2, double(t))) / (1.0 - std::pow(beta1, double(t)));
}

template <class T>
void Adam<T>::update(T* p, const T* g, Index begin, Index end) {
  const T step = T(step_size_), b1 = T(beta1), b2 = T(beta2), e = T(eps);
  T* mm = m.data();
  T* vv = v.data();
#pragma omp simd
  for (Index i = begin; i < end; ++i) {
    mm[i] = b1 * mm[i] + (T(1) - b1) * g[i];
    vv[i] = b2 * vv[i] + (T(1) - b2) * g[i] * g[i];
    p[i] -= step * mm[i] / (std::sqrt(vv[i]) + e);
  }
}

template <class T>
AdamW<T>::AdamW(double lr, double beta1, double beta2, double eps, double weight_decay)
    : Optimizer<T>(lr), adam(lr, beta1, beta2, eps), weight_decay(weight_decay) {
  check();
}

template <class T>
void AdamW<T>::check() const {
  check_lr(this->lr);
  if (!(weight_decay >= 0.0) || !std::isfinite(weight_decay))
    throw std::invalid_argument("weight_decay must be a finite number >= 0, got " + std::to_string(weight_decay));
}

template <class T>
void AdamW<T>::prepare(Index n) {
  check();
  adam.lr = this->lr;
  adam.prepare(n);
}

template <class T>
void AdamW<T>::begin_step() {
  adam.lr = this->lr;
  adam.begin_step();
}

template <class T>
void AdamW<T>::update(T* p, const T* g, Index begin, Index end) {
  if (weight_decay != 0.0) {
    const T keep = T(1.0 - this->lr * weight_decay);
#pragma omp simd
    for (Index i = begin; i < end; ++i) p[i] *= keep;
  }
  adam.update(p, g, begin, end);
}

template <class T>
RMSprop<T>::RMSprop(double lr, double rho, double eps) : Optimizer<T>(lr), rho(rho), eps(eps) {
  check();
}

template <class T>
void RMSprop<T>::check() const {
  check_lr(this->lr);
  check_range("rho", rho, 0.0, 1.0);
  if (!(eps > 0.0) || !std::isfinite(eps))
    throw std::invalid_argument("eps must be a finite number > 0, got " + std::to_string(eps));
}

template <class T>
void RMSprop<T>::prepare(Index n) {
  check();
  this->bind(v, n);
}

template <class T>
void RMSprop<T>::update(T* p, const T* g, Index begin, Index end) {
  const T lr = T(this->lr), r = T(rho), e = T(eps);
  T* vv = v.data();
#pragma omp simd
  for (Index i = begin; i < end; ++i) {
    vv[i] = r * vv[i] + (T(1) - r) * g[i] * g[i];
    p[i] -= lr * g[i] / (std::sqrt(vv[i]) + e);
  }
}

template <class T>
Adagrad<T>::Adagrad(double lr, double eps) : Optimizer<T>(lr), eps(eps) {
  check();
}

template <class T>
void Adagrad<T>::check() const {
  check_lr(this->lr);
  if (!(eps > 0.0) || !std::isfinite(eps))
    throw std::invalid_argument("eps must be a finite number > 0, got " + std::to_string(eps));
}

template <class T>
void Adagrad<T>::prepare(Index n) {
  check();
  this->bind(G, n);
}

template <class T>
void Adagrad<T>::update(T* p, const T* g, Index begin, Index end) {
  const T lr = T(this->lr), e = T(eps);
  T* gg = G.data();
#pragma omp simd
  for (Index i = begin; i < end; ++i) {
    gg[i] += g[i] * g[i];
    p[i] -= lr * g[i] / (std::sqrt(gg[i]) + e);
  }
}

namespace {

const OptimizerInfo& optimizer_row(const std::string& name) {
  std::string known;
  for (const OptimizerInfo& row : kOptimizers) {
    if (name == row.name) return row;
    known += (known.empty() ? "'" : ", '") + std::string(row.name) + "'";
  }
  throw std::invalid_argument("unknown optimizer '" + name + "' (expected one of " + known + ")");
}

}  // namespace

template <class T>
std::unique_ptr<Optimizer<T>> make_optimizer(const std::string& name, const std::vector<double>& h) {
  const OptimizerInfo& row = optimizer_row(name);
  std::size_t n = 0;
  while (n < std::size(row.params) && row.params[n].name != nullptr) ++n;
  if (h.size() != n)
    throw std::invalid_argument(name + " takes " + std::to_string(n) + " hyperparameters, got " +
                                std::to_string(h.size()));
  // One line per row of kOptimizers: its constructor, the hyperparameters in the row's order.
  if (name == "SGD") return std::make_unique<SGD<T>>(h[0], h[1], h[2] != 0.0);
  if (name == "Adam") return std::make_unique<Adam<T>>(h[0], h[1], h[2], h[3]);
  if (name == "AdamW") return std::make_unique<AdamW<T>>(h[0], h[1], h[2], h[3], h[4]);
  if (name == "RMSprop") return std::make_unique<RMSprop<T>>(h[0], h[1], h[2]);
  if (name == "Adagrad") return std::make_unique<Adagrad<T>>(h[0], h[1]);
  throw std::logic_error("kOptimizers row '" + name + "' has no constructor in make_optimizer");
}

template std::unique_ptr<Optimizer<float>> make_optimizer(const std::string&, const std::vector<double>&);
template std::unique_ptr<Optimizer<double>> make_optimizer(const std::string&, const std::vector<double>&);
template class Optimizer<float>;
template class Optimizer<double>;
template class SGD<float>;
template class SGD<double>;
template class Adam<float>;
template class Adam<double>;
template class AdamW<float>;
template class AdamW<double>;
template class RMSprop<float>;
template class RMSprop<double>;
template class Adagrad<float>;
template class Adagrad<double>;

}  // namespace fastmlp
