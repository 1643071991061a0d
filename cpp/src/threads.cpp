#include "fastmlp/threads.hpp"

#include <omp.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "fastmlp/tensor.hpp"

namespace fastmlp {

void set_num_threads(int n) {
  // An absurd count would make OpenMP fail to create its threads and abort.
  const int most = std::max(kMaxThreads, omp_get_num_procs());
  if (n < 1 || n > most)
    throw std::invalid_argument("n_threads must be in [1, " + std::to_string(most) + "], got " + std::to_string(n));
  omp_set_num_threads(n);
}

int get_num_threads() { return omp_get_max_threads(); }

}  // namespace fastmlp
