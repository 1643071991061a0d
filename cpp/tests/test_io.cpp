// fastmlp::load_network against files written by Python (tests/cpp_models.py):
//
//   python tests/cpp_models.py DIR && test_io DIR
//
// Each model's forward pass (and a classifier's predict_proba) must equal
// Python's outputs: to 1e-12 relative for float64 models read as double, 1e-5
// as float; its description (dtype, class, y_type, classes) must be the file's.
// Then damaged and foreign files must throw std::runtime_error with the
// expected words, and nothing else may escape. Prints one line per check and
// exits 1 if any failed.
#include <fastmlp/io.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s  %s\n", ok ? "ok  " : "FAIL", what.c_str());
  failures += ok ? 0 : 1;
}

std::vector<std::vector<double>> read_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<std::vector<double>> rows;
  for (std::string line; std::getline(in, line);) {
    std::vector<double> row;
    std::stringstream cells(line);
    for (std::string cell; std::getline(cells, cell, ',');) row.push_back(std::stod(cell));
    rows.push_back(row);
  }
  return rows;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

template <class T>
void check_model(const std::string& dir, const std::string& name, double rtol) {
  const std::string base = dir + "/" + name;
  fastmlp::SavedModel info;
  const auto net = fastmlp::load_network<T>(base + ".npz", &info);
  const auto X = read_csv(base + ".X.csv"), expected = read_csv(base + ".expected.csv");
  const auto lines = read_lines(base + ".info.txt");
  const fastmlp::Index n = fastmlp::Index(X.size()), n_in = net->n_inputs(), n_out = net->n_outputs();
  std::vector<T> x, out(std::size_t(n * n_out));
  for (const auto& row : X)
    for (double v : row) x.push_back(T(v));
  check(fastmlp::Index(X[0].size()) == n_in, name + ": n_inputs " + std::to_string(n_in));
  net->forward(x.data(), n, out.data());
  std::vector<T> result = out;
  if (!info.estimator.empty() && info.estimator == "MLPClassifier") {
    result.resize(std::size_t(n) * expected[0].size());
    fastmlp::classifier_proba(info, out.data(), n, n_out, result.data());
  }
  double worst = 0;
  bool shape_ok = expected.size() == X.size() && result.size() == X.size() * expected[0].size();
  for (std::size_t i = 0; shape_ok && i < expected.size(); ++i)
    for (std::size_t j = 0; j < expected[i].size(); ++j) {
      const double want = expected[i][j], got = double(result[i * expected[i].size() + j]);
      worst = std::max(worst, std::abs(got - want) / std::max(std::abs(want), 1e-3));
    }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g", worst);
  check(shape_ok && worst <= rtol, name + " as " + (sizeof(T) == 4 ? "float" : "double") +
                                       ": outputs equal Python's (max relative difference " + buf + ")");
  std::vector<std::string> classes(lines.begin() + 3, lines.end());
  check(info.dtype == lines[0] && info.estimator == lines[1] && info.y_type == lines[2] && info.classes == classes,
        name + ": dtype " + info.dtype + ", class '" + info.estimator + "', y_type '" + info.y_type + "', " +
            std::to_string(info.classes.size()) + " classes");
}

// load_network(path) must throw std::runtime_error whose message holds `words`.
void check_refused(const std::string& path, const std::string& words, const std::string& what) {
  try {
    fastmlp::load_network<double>(path);
    check(false, what + ": loaded");
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    check(msg.find(words) != std::string::npos && msg.find(path) != std::string::npos,
          what + ": \"" + msg.substr(0, 160) + "\"");
  } catch (const std::exception& e) {
    check(false, what + ": threw another type: " + e.what());
  }
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR  (DIR written by python tests/cpp_models.py DIR)\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  try {
    for (const char* name : {"clf_str", "clf_binary", "reg", "net", "layers"}) {
      check_model<double>(dir, name, 1e-12);
      check_model<float>(dir, name, 1e-4);
    }
    check_model<float>(dir, "clf_f32", 1e-6);
    check_model<double>(dir, "clf_f32", 1e-6);
  } catch (const std::exception& e) {
    check(false, std::string("loading a Python model threw: ") + e.what());
  }

  check_refused(dir + "/missing.npz", "cannot open", "a missing file");
  check_refused(dir, "is a directory", "a directory");
  check_refused("/dev/null", "not a regular file", "a character device");
  check_refused(dir + "/foreign.npz", "no __fastmlp__ metadata", "an .npz without metadata");
  check_refused(dir + "/compressed.npz", "np.savez_compressed", "a compressed .npz");
  check_refused(dir + "/clf_str.X.csv", "not a zip archive", "a text file");
  check_refused(dir + "/forged_shape.npz", "coefs_0 must be of shape (6, 8)", "weights the metadata does not describe");
  check_refused(dir + "/forged_sizes.npz", "more parameters than the file holds", "layer sizes beyond the file");
  check_refused(dir + "/forged_layers.npz", "more parameters than the file holds", "layers beyond the file");

  // Damage a good file: every truncation refused; a flipped byte in an array refused (CRC-32).
  const std::string good = slurp(dir + "/clf_str.npz"), damaged = dir + "/damaged.npz";
  bool all_refused = true;
  for (std::size_t len = 0; len < good.size(); len += 1 + len / 16) {
    write(damaged, good.substr(0, len));
    try {
      fastmlp::load_network<double>(damaged);
      all_refused = false;
    } catch (const std::runtime_error&) {
    }
  }
  check(all_refused, "every truncation of a model file is refused with std::runtime_error");
  std::string flipped = good;
  flipped[good.size() / 3] = char(flipped[good.size() / 3] ^ 0x20);
  write(damaged, flipped);
  check_refused(damaged, "CRC-32", "a flipped byte");
  // A forged member size: the central directory's size fields of the first member made huge.
  std::string forged = good;
  const std::size_t cd = forged.rfind(std::string("PK\x01\x02", 4), forged.size());
  const std::size_t first = forged.find(std::string("PK\x01\x02", 4));
  if (first != std::string::npos && cd != std::string::npos) {
    for (int k = 0; k < 8; ++k) forged[first + 20 + std::size_t(k)] = char(0x7f);
    write(damaged, forged);
    check_refused(damaged, "bytes", "a forged member size");
  }
  std::remove(damaged.c_str());

  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "passed", failures);
  return failures ? 1 : 0;
}
