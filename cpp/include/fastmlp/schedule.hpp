// Learning-rate schedules, evaluated before every optimizer step of an epoch.
//
// The clock p counts epochs, fractionally: before batch b (0-based) of
// n_b batches in epoch e (0-based), p = e + b / n_b, and δ = 1 / n_b. With
// base rate η₀, warmup length w (epochs) and q = max(0, p − w):
//
//   warmup factor   ω = min(1, (p + δ) / w)          (ω = 1 when w = 0)
//   constant        η = ω·η₀
//   step            η = ω·η₀·γ^⌊q / s⌋               (γ every s epochs)
//   exponential     η = ω·η₀·γ^q                     (γ per epoch, smoothly)
//   cosine          η = ω·(η_min + (η₀ − η_min)·(1 + cos(π·min(q, T)/T))/2),  T = total − w
//
// scikit-learn's own 'invscaling' and 'adaptive' change the rate between
// epochs and live with the estimators; these run inside the epoch in C++.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

namespace fastmlp {

enum class Schedule { Constant, Step, Exponential, Cosine };

struct ScheduleInfo {
  Schedule value;
  const char* name;
};
inline constexpr ScheduleInfo kSchedules[] = {{Schedule::Constant, "constant"},
                                              {Schedule::Step, "step"},
                                              {Schedule::Exponential, "exponential"},
                                              {Schedule::Cosine, "cosine"}};
Schedule parse_schedule(const std::string& name);  // a name of kSchedules; throws std::invalid_argument

struct LearningRateSchedule {
  Schedule kind = Schedule::Constant;
  double base_lr = 1e-3;       // η₀
  double gamma = 0.1;          // γ: step, exponential
  double step_size = 10.0;     // s: step (epochs)
  double total_epochs = 200;   // cosine: the schedule's length including warmup (epochs)
  double min_lr = 0.0;         // η_min: cosine
  double warmup_epochs = 0.0;  // w

  // The rate for the step that starts at clock p, δ = 1 / batches per epoch.
  double at(double p, double delta) const {
    const double w = warmup_epochs;
    const double warm = w > 0.0 ? std::min(1.0, (p + delta) / w) : 1.0;
    const double q = std::max(0.0, p - w);
    switch (kind) {
      case Schedule::Constant: return warm * base_lr;
      case Schedule::Step: return warm * base_lr * std::pow(gamma, std::floor(q / step_size));
      case Schedule::Exponential: return warm * base_lr * std::pow(gamma, q);
      case Schedule::Cosine: {
        const double T = std::max(total_epochs - w, 1e-12);
        const double c = 0.5 * (1.0 + std::cos(M_PI * std::min(q, T) / T));
        return warm * (min_lr + (base_lr - min_lr) * c);
      }
    }
    return base_lr;
  }

  // Throws std::invalid_argument for a value outside its domain.
  void check() const;
};

}  // namespace fastmlp
