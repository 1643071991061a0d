// Inference's weights packed once (gemm::PackedB per layer) and kept while
// they are still the network's weights.
//
// Anything may change the parameters between two forward calls: a training
// step, an optimizer, initialize(), and also Python writing through the NumPy
// views (net.weights[l][...] = ..., params[:] = ..., load, unpickling), which
// C++ never sees. So a pack is never trusted by a counter: it is made from a
// copy of the flat parameters (the snapshot), and a call reuses it only while
// memcmp(params, snapshot) == 0, in the same precision and kernel; any
// difference makes a new one from a new copy. The packs are made from the
// snapshot, never from the live buffer, so a pack always equals the packing
// of its snapshot, whatever writes the buffer meanwhile.
//
// Cost (784-256-128-10, float32): the check reads the parameters and the
// snapshot (2 × 0.9 MB) once per call; the pack and the snapshot take one
// more copy of the weights each. Callers ask only where the products reuse
// the panels (batches of at least gemm::kMinPackedRows rows).
#pragma once

#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "fastmlp/gemm.hpp"
#include "fastmlp/tensor.hpp"

namespace fastmlp {

// Every layer's W packed from one snapshot of the flat parameters. Immutable
// once made: threads share it through a shared_ptr.
class WeightPacks {
 public:
  // A weight matrix of the flat parameters: k × n values from `offset`.
  struct Layer {
    Index offset, k, n;
  };
  // layer_of(l) for l < count: the matrices to pack, in params (n_params values).
  template <class LayerOf>
  WeightPacks(const float* params, Index n_params, Index count, LayerOf&& layer_of, gemm::Precision precision)
      : snapshot_(params, params + n_params), precision_(precision), panels_(gemm::PackedB::wanted(precision)) {
    layers_.resize(std::size_t(count));
    for (Index l = 0; l < count; ++l) {
      const Layer w = layer_of(l);
      layers_[std::size_t(l)].pack(snapshot_.data() + w.offset, w.k, w.n, precision);
    }
  }
  const gemm::PackedB& layer(Index l) const { return layers_[std::size_t(l)]; }
  // Made from exactly these parameters, for this precision and the kernel in use now.
  bool made_from(const float* params, Index n_params, gemm::Precision precision) const {
    return precision == precision_ && panels_ == gemm::PackedB::wanted(precision) &&
           std::size_t(n_params) == snapshot_.size() &&
           std::memcmp(params, snapshot_.data(), snapshot_.size() * sizeof(float)) == 0;
  }

 private:
  std::vector<float> snapshot_;
  gemm::Precision precision_;
  bool panels_;  // the kernel wanted panels when made
  std::vector<gemm::PackedB> layers_;
};

// The packs of one network, shared by its concurrent forward calls. get()
// checks the current packs without the lock (they are immutable; the
// shared_ptr keeps them alive if another call replaces them) and makes new
// ones under it, so one caller packs while the others wait, and no reader
// ever sees a pack half made.
class PackCache {
 public:
  // Packs equal to the packing of params now (WeightPacks' arguments; throws std::bad_alloc).
  template <class LayerOf>
  std::shared_ptr<const WeightPacks> get(const float* params, Index n_params, Index count, LayerOf&& layer_of,
                                         gemm::Precision precision) const {
    std::shared_ptr<const WeightPacks> packs;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      packs = current_;
    }
    if (packs != nullptr && packs->made_from(params, n_params, precision)) return packs;
    std::lock_guard<std::mutex> lock(mutex_);
    if (current_ != nullptr && current_ != packs && current_->made_from(params, n_params, precision)) return current_;
    current_.reset();  // the stale packs' memory goes before the new packs' comes
    current_ = std::make_shared<const WeightPacks>(params, n_params, count, layer_of, precision);
    return current_;
  }

 private:
  mutable std::mutex mutex_;
  mutable std::shared_ptr<const WeightPacks> current_;
};

}  // namespace fastmlp
