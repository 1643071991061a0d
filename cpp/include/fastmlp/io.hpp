// Reading the model files that Python writes: fastmlp.Network.save
// ("fastmlp.network") and the estimators' save ("fastmlp.estimator"), so that
// a model trained in Python is served from C++.
//
// A file is a NumPy .npz archive: a zip of .npy arrays, stored uncompressed
// (np.savez), with JSON metadata in the 0-d text array __fastmlp__ (the format
// is python/fastmlp/io.py's docstring). The whole file is read once into
// memory and parsed with every offset and size checked against it: a
// truncated, damaged (CRC-32), forged or foreign file throws
// std::runtime_error naming the path and what is wrong, and nothing is
// allocated beyond the file's own size before the metadata and every array
// header agree. Only regular files are read (a FIFO or a device is refused).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "fastmlp/network.hpp"

namespace fastmlp {

// What a file says about its model beside the network.
struct SavedModel {
  std::string format;     // "fastmlp.network" or "fastmlp.estimator"
  std::string estimator;  // "MLPClassifier" or "MLPRegressor"; empty for a network file
  std::string dtype;      // the stored parameters' type: "float32" or "float64"
  // A classifier's: "binary" (one logistic output p; predict_proba is [1 − p, p]),
  // "multiclass" (softmax outputs) or "multilabel-indicator" (one logistic output per label).
  std::string y_type;
  // A classifier's classes_, in column order, as text: strings as they are (UTF-8),
  // integers in decimal, booleans as "False"/"True", floats as %.17g.
  std::vector<std::string> classes;
};

// The network stored in `path` (either format), its parameters converted to T
// (a float64 model read as double gives Python's results exactly). Training-only
// settings (dropout, input noise, max-norm, the optimizer's state) are not read:
// the network is for inference (forward). `info`, when given, receives the
// file's description. Throws std::runtime_error for an unreadable, damaged or
// foreign file.
template <class T>
std::unique_ptr<Network<T>> load_network(const std::string& path, SavedModel* info = nullptr);

// A classifier's predict_proba from its network's output `out` (n rows of
// net.n_outputs()): the binary case's [1 − p, p], the others' outputs as they are;
// `proba` holds n × classes.size() values (multilabel: n × n_outputs).
template <class T>
void classifier_proba(const SavedModel& info, const T* out, Index n, Index n_outputs, T* proba);

extern template std::unique_ptr<Network<float>> load_network<float>(const std::string&, SavedModel*);
extern template std::unique_ptr<Network<double>> load_network<double>(const std::string&, SavedModel*);
extern template void classifier_proba<float>(const SavedModel&, const float*, Index, Index, float*);
extern template void classifier_proba<double>(const SavedModel&, const double*, Index, Index, double*);

}  // namespace fastmlp
