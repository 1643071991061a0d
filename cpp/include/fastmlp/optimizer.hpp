// Optimizers: update policies over one flat parameter buffer. A step is
// begin_step() once, then update() over disjoint ranges that together cover
// the buffer — so the trainer can fuse the update into the same parallel pass
// that sums the threads' gradients. The state (velocity, moments) is owned
// here, sized by prepare() and tied to that parameter count from then on.
#pragma once

#include <mutex>
#include <string>

#include "fastmlp/tensor.hpp"

namespace fastmlp {

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

  double eps;
  Vector<T> G;

 private:
  void check() const;
};

}  // namespace fastmlp
