// Row-major matrix types shared by every kernel: NumPy's C order, so an input
// array is read in place through Eigen::Map, never copied.
#pragma once

#include <Eigen/Core>
#include <cstdint>

namespace fastmlp {

using Index = Eigen::Index;

template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <class T>
using RowVector = Eigen::Matrix<T, 1, Eigen::Dynamic>;

template <class T>
using MatrixMap = Eigen::Map<Matrix<T>>;  // unaligned: may view NumPy memory
template <class T>
using ConstMatrixMap = Eigen::Map<const Matrix<T>>;
template <class T>
using RowVectorMap = Eigen::Map<RowVector<T>>;
template <class T>
using ConstRowVectorMap = Eigen::Map<const RowVector<T>>;

// A half-open range [begin, end) of indices: a thread's share of rows,
// columns or parameters (parallel.hpp decides the shares).
struct Range {
  Index begin = 0, end = 0;
  Index size() const { return end - begin; }
};

// The most threads fastmlp asks for (parallel.hpp: thread_limit()).
inline constexpr int kMaxThreads = 256;

}  // namespace fastmlp
