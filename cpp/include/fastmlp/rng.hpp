// A small, portable random generator (xoshiro256**, seeded by splitmix64).
// Written out rather than taken from <random> because the standard library's
// distributions differ between implementations: the same seed must give the
// same weights and the same shuffles on every machine and thread count.
#pragma once

#include <cstdint>
#include <utility>

namespace fastmlp {

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) { reseed(seed); }

  void reseed(std::uint64_t seed) {
    for (auto& s : state_) {
      seed += 0x9e3779b97f4a7c15ULL;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      s = z ^ (z >> 31);
    }
  }

  std::uint64_t next() {
    const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }

  // Uniform integer in [0, bound) (Lemire's multiply-shift; bias < 2^-32 for
  // bounds below 2^32, far under anything a shuffle could show).
  std::uint64_t below(std::uint64_t bound) { return std::uint64_t((unsigned __int128)next() * bound >> 64); }

  // Fisher–Yates.
  template <class It>
  void shuffle(It first, It last) {
    for (auto i = last - first - 1; i > 0; --i) std::swap(first[i], first[below(std::uint64_t(i) + 1)]);
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t state_[4];
};

}  // namespace fastmlp
