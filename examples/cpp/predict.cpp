// Serves a model trained in Python: loads the .npz that MLPClassifier.save,
// MLPRegressor.save or Network.save wrote, and prints a prediction for every
// row of a CSV file of inputs (one sample a line, comma-separated).
//
//   python examples/cpp/train_and_save.py out/     # iris, string labels: out/model.npz, out/X.csv
//   ./predict out/model.npz out/X.csv              # label,p_setosa,p_versicolor,p_virginica per row
//
// A classifier prints its predicted label (classes_[argmax]) and predict_proba;
// a regressor or network its outputs. Exits 1 with the loader's message if
// the file is not a readable fastmlp model.
#include <fastmlp/io.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL.npz X.csv\n", argv[0]);
    return 2;
  }
  try {
    fastmlp::SavedModel info;
    // double: a float64 model gives Python's probabilities exactly (float would round them).
    const auto net = fastmlp::load_network<double>(argv[1], &info);
    const fastmlp::Index n_in = net->n_inputs(), n_out = net->n_outputs();

    std::vector<double> x;
    std::ifstream in(argv[2]);
    if (!in) throw std::runtime_error(std::string("cannot read ") + argv[2]);
    for (std::string line; std::getline(in, line);) {
      std::stringstream cells(line);
      fastmlp::Index k = 0;
      for (std::string cell; std::getline(cells, cell, ','); ++k) x.push_back(std::stod(cell));
      if (k != n_in)
        throw std::runtime_error("a row of " + std::to_string(k) + " values; the model takes " + std::to_string(n_in));
    }
    const fastmlp::Index n = fastmlp::Index(x.size()) / n_in;

    std::vector<double> out(std::size_t(n * n_out));
    net->forward(x.data(), n, out.data());
    const bool classifier = info.estimator == "MLPClassifier";
    const bool multilabel = info.y_type == "multilabel-indicator";
    const fastmlp::Index width = classifier && !multilabel ? fastmlp::Index(info.classes.size()) : n_out;
    std::vector<double> proba(std::size_t(n * width));
    if (classifier) fastmlp::classifier_proba(info, out.data(), n, n_out, proba.data());

    for (fastmlp::Index i = 0; i < n; ++i) {
      const double* row = classifier ? &proba[std::size_t(i * width)] : &out[std::size_t(i * n_out)];
      if (classifier && !multilabel) {
        const auto best = std::max_element(row, row + width) - row;  // ties: the first, as NumPy's argmax
        std::printf("%s,", info.classes[std::size_t(best)].c_str());
      }
      for (fastmlp::Index j = 0; j < width; ++j) std::printf(j ? ",%.17g" : "%.17g", row[j]);
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
