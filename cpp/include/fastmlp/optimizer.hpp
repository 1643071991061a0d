// Optimizers: update policies over one flat parameter buffer. A step is
// begin_step() once, then update() over disjoint ranges that together cover
// the buffer — so the trainer can fuse the update into the same parallel pass
// that sums the threads' gradients. The state (velocity, moments) is owned
// here, sized by prepare() and tied to that parameter count from then on.
#pragma once

#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "fastmlp/tensor.hpp"

namespace fastmlp {

// One hyperparameter of an optimizer: its name, default and range [lo, hi]
// (open at an end where *_open); a flag (is_flag) is 0 or 1.
struct OptimizerParam {
  const char* name = nullptr;
  double default_value = 0.0;
  double lo = 0.0, hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false, is_flag = false;
};

// The optimizers, one row each: the one list of them. The hyperparameters are
// the constructor's arguments in order (lr first), with the defaults of
// fastmlp.optim; `state` names the arrays get_state()/set_state() carry (and
// the estimators' files store as optimizer_<name>), plus the step count `t`
// where counts_steps. Python's fastmlp.optim, the estimators' solvers and
// io.py read this table through _core.optimizers(). Unused slots: nullptr.
struct OptimizerInfo {
  const char* name;  // the class name (fastmlp.SGD); its solver= name is this in lower case
  OptimizerParam params[6];
  const char* state[3];
  bool counts_steps;
};

inline constexpr double kInf = std::numeric_limits<double>::infinity();

inline constexpr OptimizerInfo kOptimizers[] = {
    {"SGD",
     {{"lr", 0.01}, {"momentum", 0.0, 0.0, 1.0, false, true}, {"nesterov", 0.0, 0.0, 1.0, false, false, true}},
     {"velocity"},
     false},
    {"Adam",
     {{"lr", 0.001},
      {"beta1", 0.9, 0.0, 1.0, false, true},
      {"beta2", 0.999, 0.0, 1.0, false, true},
      {"eps", 1e-8, 0.0, kInf, true}},
     {"m", "v"},
     true},
    {"AdamW",
     {{"lr", 0.001},
      {"beta1", 0.9, 0.0, 1.0, false, true},
      {"beta2", 0.999, 0.0, 1.0, false, true},
      {"eps", 1e-8, 0.0, kInf, true},
      {"weight_decay", 0.01}},
     {"m", "v"},
     true},
    {"RMSprop", {{"lr", 0.001}, {"rho", 0.9, 0.0, 1.0, false, true}, {"eps", 1e-8, 0.0, kInf, true}}, {"v"}, false},
    {"Adagrad", {{"lr", 0.01}, {"eps", 1e-10, 0.0, kInf, true}}, {"G"}, false},
};

template <class T>
class Optimizer {
 public:
  explicit Optimizer(double lr) : lr(lr) {}
  virtual ~Optimizer() = default;

  // Checks the hyperparameters and sizes the state for n parameters; throws
  // (changing nothing) on a bad value or a state sized for another n.
  virtual void prepare(Index n) = 0;
  // Once per step, before update(): advances step counters and step sizes.
  virtual void begin_step() {}
  // params[i] ← update(params[i], grads[i]) for i in [begin, end).
  virtual void update(T* params, const T* grads, Index begin, Index end) = 0;
  // Forgets the state (moments, step count).
  virtual void reset() = 0;
  // The state arrays, named as in this optimizer's kOptimizers row, in order.
  virtual std::vector<std::pair<const char*, Vector<T>*>> state() = 0;
  // The step count t, or nullptr where the row says counts_steps = false.
  virtual long long* steps() { return nullptr; }

  // A whole step over n parameters.
  void step(T* params, const T* grads, Index n);

  double lr;  // read at every step, so a schedule may change it between steps

  // Held by whoever steps or resets this optimizer (its state is not shared).
  std::mutex& busy() const { return busy_; }

 protected:
  // Sizes `state` on first use; afterwards a different n is an error.
  static void bind(Vector<T>& state, Index n);

 private:
  mutable std::mutex busy_;
};

// Stochastic gradient descent with momentum μ, in scikit-learn's form:
//   v ← μ·v − lr·g
//   p ← p + v                 (classical momentum)
//   p ← p + μ·v − lr·g        (Nesterov)
// With μ = 0 both reduce to p ← p − lr·g and no velocity is kept.
template <class T>
class SGD final : public Optimizer<T> {
 public:
  SGD(double lr, double momentum, bool nesterov);
  void prepare(Index n) override;
  void update(T* params, const T* grads, Index begin, Index end) override;
  void reset() override { velocity.resize(0); }
  std::vector<std::pair<const char*, Vector<T>*>> state() override { return {{"velocity", &velocity}}; }

  double momentum;
  bool nesterov;
  Vector<T> velocity;

 private:
  void check() const;
};

// Adam (Kingma & Ba, with the bias correction folded into the step size, as
// in their "efficient" form and in scikit-learn):
//   t ← t + 1
//   m ← β1·m + (1 − β1)·g
//   v ← β2·v + (1 − β2)·g²
//   p ← p − lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε)
template <class T>
class Adam final : public Optimizer<T> {
 public:
  Adam(double lr, double beta1, double beta2, double eps);
  void prepare(Index n) override;
  void begin_step() override;
  void update(T* params, const T* grads, Index begin, Index end) override;
  void reset() override {
    m.resize(0);
    v.resize(0);
    t = 0;
  }
  std::vector<std::pair<const char*, Vector<T>*>> state() override { return {{"m", &m}, {"v", &v}}; }
  long long* steps() override { return &t; }

  double beta1, beta2, eps;
  long long t = 0;
  Vector<T> m, v;

 private:
  void check() const;
  double step_size_ = 0.0;  // lr·√(1 − β2ᵗ)/(1 − β1ᵗ) of the current step
};

// Adam with decoupled weight decay λ (AdamW, Loshchilov & Hutter), in the
// same folded form: first p ← p − lr·λ·p, then the Adam step above. The decay
// acts on every parameter (biases too), as PyTorch's does by default.
template <class T>
class AdamW final : public Optimizer<T> {
 public:
  AdamW(double lr, double beta1, double beta2, double eps, double weight_decay);
  void prepare(Index n) override;
  void begin_step() override;
  void update(T* params, const T* grads, Index begin, Index end) override;
  void reset() override { adam.reset(); }
  std::vector<std::pair<const char*, Vector<T>*>> state() override { return adam.state(); }
  long long* steps() override { return adam.steps(); }

  Adam<T> adam;  // holds the moments and the step count
  double weight_decay;

 private:
  void check() const;
};

// RMSprop (Hinton):
//   v ← ρ·v + (1 − ρ)·g²
//   p ← p − lr·g / (√v + ε)
template <class T>
class RMSprop final : public Optimizer<T> {
 public:
  RMSprop(double lr, double rho, double eps);
  void prepare(Index n) override;
  void update(T* params, const T* grads, Index begin, Index end) override;
  void reset() override { v.resize(0); }
  std::vector<std::pair<const char*, Vector<T>*>> state() override { return {{"v", &v}}; }

  double rho, eps;
  Vector<T> v;

 private:
  void check() const;
};

// Adagrad (Duchi, Hazan & Singer):
//   G ← G + g²
//   p ← p − lr·g / (√G + ε)
template <class T>
class Adagrad final : public Optimizer<T> {
 public:
  Adagrad(double lr, double eps);
  void prepare(Index n) override;
  void update(T* params, const T* grads, Index begin, Index end) override;
  void reset() override { G.resize(0); }
  std::vector<std::pair<const char*, Vector<T>*>> state() override { return {{"G", &G}}; }

  double eps;
  Vector<T> G;

 private:
  void check() const;
};

// The optimizer of kOptimizers row `name` with these hyperparameters (the
// row's, in order); throws std::invalid_argument for an unknown name, a wrong
// count or a value out of range.
template <class T>
std::unique_ptr<Optimizer<T>> make_optimizer(const std::string& name, const std::vector<double>& hyperparameters);

}  // namespace fastmlp
