// Thread control. The OpenMP setting is the one knob: Eigen's parallel GEMM,
// fastmlp's own loops, OMP_NUM_THREADS and threadpoolctl all act on it.
#pragma once

namespace fastmlp {

void set_num_threads(int n);  // n >= 1
int get_num_threads();

}  // namespace fastmlp
