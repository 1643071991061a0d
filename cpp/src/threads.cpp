#include "fastmlp/threads.hpp"

#include <omp.h>

#include <stdexcept>
#include <string>

namespace fastmlp {

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("n_threads must be >= 1, got " + std::to_string(n));
  omp_set_num_threads(n);
}

int get_num_threads() { return omp_get_max_threads(); }

}  // namespace fastmlp
