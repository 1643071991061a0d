// Trains a two-class spiral with fastmlp's C++ core and prints the training
// accuracy. Exits 1 if the network did not learn it (accuracy below 0.95), so
// that CI notices a broken package, not just a broken build.
#include <fastmlp/network.hpp>
#include <fastmlp/optimizer.hpp>
#include <fastmlp/trainer.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  using T = float;
  // The spiral of fastmlp.datasets.make_spiral: a point of class c at radius r
  // lies at angle 3πr + πc + noise, at distance r from the origin.
  const fastmlp::Index n = 1000, n_classes = 2;
  const double pi = 3.14159265358979323846;
  std::mt19937_64 gen(0);
  std::normal_distribution<double> noise(0.0, 0.1);
  std::vector<T> x(n * 2), y(n * n_classes, T(0));  // row-major; y one-hot
  std::vector<int> label(n);
  for (fastmlp::Index i = 0; i < n; ++i) {
    const int c = int(i % n_classes);
    const double r = double(i / n_classes) / double(n / n_classes - 1);
    const double theta = 3 * pi * r + 2 * pi * c / n_classes + noise(gen);
    x[2 * i] = T(r * std::cos(theta));
    x[2 * i + 1] = T(r * std::sin(theta));
    y[i * n_classes + c] = T(1);
    label[i] = c;
  }

  fastmlp::Network<T> net({2, 64, 64, n_classes}, fastmlp::Activation::Relu, fastmlp::Activation::Softmax,
                          /*slope=*/0.01, /*seed=*/0, fastmlp::Init::Glorot);
  fastmlp::Adam<T> adam(/*lr=*/0.01, /*beta1=*/0.9, /*beta2=*/0.999, /*eps=*/1e-8);
  fastmlp::Batch<T> data;  // the whole training set, dense and row-major
  data.x = x.data();
  data.y = y.data();
  data.rows = n;
  fastmlp::EpochOptions options;
  options.batch_size = 64;
  double loss = 0;
  for (int epoch = 1; epoch <= 200; ++epoch) {
    loss = fastmlp::train_epoch(net, adam, data, fastmlp::Loss::LogLoss, options);
    if (epoch % 50 == 0) std::printf("epoch %3d  loss %.5f\n", epoch, loss);
  }

  std::vector<T> proba(n * n_classes);
  net.forward(x.data(), n, proba.data());
  int correct = 0;
  for (fastmlp::Index i = 0; i < n; ++i)
    correct += (proba[i * n_classes + 1] > proba[i * n_classes]) == (label[i] == 1);
  const double accuracy = double(correct) / double(n);
  std::printf("spiral: %lld samples, training accuracy %.4f\n", static_cast<long long>(n), accuracy);
  return accuracy >= 0.95 ? 0 : 1;
}
