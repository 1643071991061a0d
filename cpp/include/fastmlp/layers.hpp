// Layers: what a network is made of, and the kernels of the kinds that are
// not a product (normalization, embedding, residual addition).
//
// A network is a list of LayerSpec (fastmlp.layers in Python; one JSON form,
// docs/layers.md). Network compiles it into a flat list of ops over "values"
// (the tensors between ops, value 0 the network's input): a Residual becomes
// Fork, its layers, Add. Parameters and non-trainable state are laid out op
// after op in one buffer each (the parameters' layout: PARAMETER LAYOUT below).
//
// Every kernel here works serially on the part of a batch its caller gives it:
// the columns c of a layer (batch norm, embedding, add: a column needs no other
// column) or the rows r (layer norm: a row needs its whole row). parallel.hpp's
// team splits a pass that way (network.cpp decides where a barrier goes).
//
// PARAMETER LAYOUT (per op, in list order, depth-first through Residual)
//   dense       W (n_in × units, row-major), b (units)
//   batch_norm  γ (w), β (w)                 state: running_mean (w), running_var (w)
//   layer_norm  γ (w), β (w)
//   embedding   table_j (cardinalities[j] × dims[j], row-major) for each j
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "fastmlp/activation.hpp"
#include "fastmlp/tensor.hpp"

namespace fastmlp {

enum class LayerKind { Dense, Activation, Dropout, BatchNorm, LayerNorm, Residual, Embedding };

struct LayerKindInfo {
  LayerKind value;
  const char* name;  // the JSON "kind"
};
inline constexpr LayerKindInfo kLayerKinds[] = {
    {LayerKind::Dense, "dense"},          {LayerKind::Activation, "activation"}, {LayerKind::Dropout, "dropout"},
    {LayerKind::BatchNorm, "batch_norm"}, {LayerKind::LayerNorm, "layer_norm"},  {LayerKind::Residual, "residual"},
    {LayerKind::Embedding, "embedding"}};
LayerKind parse_layer_kind(const std::string& name);  // throws std::invalid_argument
const char* layer_kind_name(LayerKind kind);

// One layer of a network's description; the fields its kind reads.
struct LayerSpec {
  LayerKind kind = LayerKind::Dense;
  Index units = 0;                            // dense: output width
  Activation activation = Activation::Relu;  // activation
  double rate = 0.0;                          // dropout: in [0, 1)
  double momentum = 0.1, eps = 1e-5;          // batch_norm (momentum, eps), layer_norm (eps)
  std::vector<LayerSpec> layers;              // residual: y = x + layers(x)
  // embedding (the first layer only): X's columns `columns` hold integer codes
  // in [0, cardinalities[j]); the output is X's other columns, in order, then
  // table_j[code_j] for each j.
  std::vector<Index> columns, cardinalities, dims;
};

// --- Batch normalization (PyTorch's BatchNorm1d), over columns c of x (n × w)
//
// train: μ_j = Σ_i x_ij / n, σ²_j = Σ_i (x_ij − μ_j)² / n, s_j = 1/√(σ²_j + eps),
//        y_ij = γ_j (x_ij − μ_j) s_j + β_j; stats = (μ, s) for the backward pass;
//        with `running` (mean, var): mean ← (1 − m)·mean + m·μ,
//        var ← (1 − m)·var + m·σ²·n/(n − 1).
// eval:  the same with μ = running mean, σ² = running var.
// y may be x.
template <class T>
void batch_norm_forward(const T* x, T* y, Index n, Index w, Range c, const T* gamma, const T* beta, double eps,
                        double* stats, T* running, double momentum) {
  double* mu = stats;
  double* inv = stats + w;
  for (Index j = c.begin; j < c.end; ++j) mu[j] = inv[j] = 0.0;
  for (Index i = 0; i < n; ++i)
    for (Index j = c.begin; j < c.end; ++j) mu[j] += double(x[i * w + j]);
  for (Index j = c.begin; j < c.end; ++j) mu[j] /= double(n);
  for (Index i = 0; i < n; ++i)
    for (Index j = c.begin; j < c.end; ++j) {
      const double d = double(x[i * w + j]) - mu[j];
      inv[j] += d * d;
    }
  for (Index j = c.begin; j < c.end; ++j) {
    const double var = inv[j] / double(n);
    if (running != nullptr) {
      running[j] = T((1.0 - momentum) * double(running[j]) + momentum * mu[j]);
      running[w + j] = T((1.0 - momentum) * double(running[w + j]) + momentum * var * double(n) / double(n - 1));
    }
    inv[j] = 1.0 / std::sqrt(var + eps);
  }
  for (Index i = 0; i < n; ++i)
    for (Index j = c.begin; j < c.end; ++j)
      y[i * w + j] = T(double(gamma[j]) * (double(x[i * w + j]) - mu[j]) * inv[j] + double(beta[j]));
}

template <class T>
void batch_norm_eval(const T* x, T* y, Index n, Index w, Range c, const T* gamma, const T* beta, double eps,
                     const T* running) {
  for (Index i = 0; i < n; ++i)
    for (Index j = c.begin; j < c.end; ++j) {
      const double s = 1.0 / std::sqrt(double(running[w + j]) + eps);
      y[i * w + j] = T(double(gamma[j]) * (double(x[i * w + j]) - double(running[j])) * s + double(beta[j]));
    }
}

// x̂ = (x − μ)s:  dβ_j = Σ_i dy_ij,  dγ_j = Σ_i dy_ij x̂_ij,
// dx_ij = γ_j s_j (dy_ij − dβ_j/n − x̂_ij dγ_j/n)   (dx may be dy; null: skipped).
template <class T>
void batch_norm_backward(const T* x, const T* dy, T* dx, Index n, Index w, Range c, const T* gamma, const double* stats,
                         T* dgamma, T* dbeta, double* sums) {
  const double* mu = stats;
  const double* inv = stats + w;
  double* sb = sums;
  double* sg = sums + w;
  for (Index j = c.begin; j < c.end; ++j) sb[j] = sg[j] = 0.0;
  for (Index i = 0; i < n; ++i)
    for (Index j = c.begin; j < c.end; ++j) {
      const double d = double(dy[i * w + j]);
      sb[j] += d;
      sg[j] += d * (double(x[i * w + j]) - mu[j]) * inv[j];
    }
  for (Index j = c.begin; j < c.end; ++j) {
    dbeta[j] = T(sb[j]);
    dgamma[j] = T(sg[j]);
  }
  if (dx == nullptr) return;
  for (Index i = 0; i < n; ++i)
    for (Index j = c.begin; j < c.end; ++j) {
      const double xh = (double(x[i * w + j]) - mu[j]) * inv[j];
      dx[i * w + j] =
          T(double(gamma[j]) * inv[j] * (double(dy[i * w + j]) - sb[j] / double(n) - xh * sg[j] / double(n)));
    }
}

// --- Layer normalization (PyTorch's LayerNorm(w)), over rows r of x (n × w)
//
// μ_i = Σ_j x_ij / w, σ²_i = Σ_j (x_ij − μ_i)² / w, s_i = 1/√(σ²_i + eps),
// y_ij = γ_j (x_ij − μ_i) s_i + β_j; stats = (μ, s), each n long. y may be x.
template <class T>
void layer_norm_forward(const T* x, T* y, Index n, Index w, Range r, const T* gamma, const T* beta, double eps,
                        double* stats) {
  for (Index i = r.begin; i < r.end; ++i) {
    const T* xi = x + i * w;
    double mu = 0.0, var = 0.0;
    for (Index j = 0; j < w; ++j) mu += double(xi[j]);
    mu /= double(w);
    for (Index j = 0; j < w; ++j) var += (double(xi[j]) - mu) * (double(xi[j]) - mu);
    const double s = 1.0 / std::sqrt(var / double(w) + eps);
    if (stats != nullptr) {
      stats[i] = mu;
      stats[n + i] = s;
    }
    T* yi = y + i * w;
    for (Index j = 0; j < w; ++j) yi[j] = T(double(gamma[j]) * (double(xi[j]) - mu) * s + double(beta[j]));
  }
}

// Columns c: dβ_j = Σ_i dy_ij, dγ_j = Σ_i dy_ij x̂_ij (x̂ = (x − μ)s).
template <class T>
void layer_norm_backward_params(const T* x, const T* dy, Index n, Index w, Range c, const double* stats, T* dgamma,
                                T* dbeta, double* sums) {
  double* sb = sums;
  double* sg = sums + w;
  for (Index j = c.begin; j < c.end; ++j) sb[j] = sg[j] = 0.0;
  for (Index i = 0; i < n; ++i)
    for (Index j = c.begin; j < c.end; ++j) {
      const double d = double(dy[i * w + j]);
      sb[j] += d;
      sg[j] += d * (double(x[i * w + j]) - stats[i]) * stats[n + i];
    }
  for (Index j = c.begin; j < c.end; ++j) {
    dbeta[j] = T(sb[j]);
    dgamma[j] = T(sg[j]);
  }
}

// Rows r: g = γ ⊙ dy_i, dx_i = s_i (g − mean(g) − x̂_i mean(g ⊙ x̂_i))   (dx may be dy).
template <class T>
void layer_norm_backward_input(const T* x, const T* dy, T* dx, Index n, Index w, Range r, const T* gamma,
                               const double* stats) {
  for (Index i = r.begin; i < r.end; ++i) {
    const double mu = stats[i], s = stats[n + i];
    double a = 0.0, b = 0.0;
    for (Index j = 0; j < w; ++j) {
      const double g = double(gamma[j]) * double(dy[i * w + j]);
      a += g;
      b += g * (double(x[i * w + j]) - mu) * s;
    }
    a /= double(w);
    b /= double(w);
    for (Index j = 0; j < w; ++j) {
      const double g = double(gamma[j]) * double(dy[i * w + j]);
      dx[i * w + j] = T(s * (g - a - (double(x[i * w + j]) - mu) * s * b));
    }
  }
}

// --- Embedding: where output column j comes from.
struct EmbeddingColumn {
  Index source;  // X's column (a numeric column, or the code column of table `table`)
  int table;     // -1: a numeric column copied; else the table
  Index dim;     // the table's column
  Index offset;  // the table's offset in the layer's parameters
  Index width;   // the table's dims
};

// Columns c of y (n × w_out) from x (n × n_in): a numeric column copied, or
// table[code, dim] with code = x[i, source] (checked beforehand: check_codes).
template <class T>
void embedding_forward(const T* x, Index n_in, T* y, Index n, Index w_out, Range c,
                       const std::vector<EmbeddingColumn>& cols, const T* params) {
  for (Index i = 0; i < n; ++i)
    for (Index j = c.begin; j < c.end; ++j) {
      const EmbeddingColumn& e = cols[std::size_t(j)];
      const T v = x[i * n_in + e.source];
      y[i * w_out + j] = e.table < 0 ? v : params[e.offset + Index(v) * e.width + e.dim];
    }
}

// d table[code, dim] = Σ_{rows with that code} dy[i, j] for the table columns j in c.
template <class T>
void embedding_backward(const T* x, Index n_in, const T* dy, Index n, Index w_out, Range c,
                        const std::vector<EmbeddingColumn>& cols, const std::vector<Index>& cardinalities, T* grads) {
  for (Index j = c.begin; j < c.end; ++j) {
    const EmbeddingColumn& e = cols[std::size_t(j)];
    if (e.table < 0) continue;
    for (Index k = 0; k < cardinalities[std::size_t(e.table)]; ++k) grads[e.offset + k * e.width + e.dim] = T(0);
  }
  for (Index i = 0; i < n; ++i)
    for (Index j = c.begin; j < c.end; ++j) {
      const EmbeddingColumn& e = cols[std::size_t(j)];
      if (e.table >= 0) grads[e.offset + Index(x[i * n_in + e.source]) * e.width + e.dim] += dy[i * w_out + j];
    }
}

}  // namespace fastmlp
