// Name ↔ enum for activations, losses and initializations, and which loss
// goes with which output activation.
#include <stdexcept>
#include <string>

#include "fastmlp/activation.hpp"
#include "fastmlp/loss.hpp"
#include "fastmlp/network.hpp"
#include "fastmlp/schedule.hpp"

namespace fastmlp {

Activation parse_activation(const std::string& name) {
  if (name == "identity") return Activation::Identity;
  if (name == "logistic" || name == "sigmoid") return Activation::Logistic;
  if (name == "tanh") return Activation::Tanh;
  if (name == "relu") return Activation::Relu;
  if (name == "leaky_relu") return Activation::LeakyRelu;
  if (name == "softmax") return Activation::Softmax;
  if (name == "exp") return Activation::Exp;
  throw std::invalid_argument("activation must be one of 'identity', 'logistic', 'sigmoid', 'tanh', "
                              "'relu', 'leaky_relu', 'softmax', 'exp'; got '" + name + "'");
}

const char* activation_name(Activation f) {
  switch (f) {
    case Activation::Identity: return "identity";
    case Activation::Logistic: return "logistic";
    case Activation::Tanh: return "tanh";
    case Activation::Relu: return "relu";
    case Activation::LeakyRelu: return "leaky_relu";
    case Activation::Softmax: return "softmax";
    case Activation::Exp: return "exp";
  }
  return "?";
}

Loss parse_loss(const std::string& name) {
  if (name == "squared_error") return Loss::SquaredError;
  if (name == "log_loss") return Loss::LogLoss;
  if (name == "binary_log_loss") return Loss::BinaryLogLoss;
  if (name == "poisson") return Loss::Poisson;
  throw std::invalid_argument("loss must be one of 'squared_error', 'log_loss', 'binary_log_loss', 'poisson'; got '" +
                              name + "'");
}

const char* loss_name(Loss loss) {
  switch (loss) {
    case Loss::SquaredError: return "squared_error";
    case Loss::LogLoss: return "log_loss";
    case Loss::BinaryLogLoss: return "binary_log_loss";
    case Loss::Poisson: return "poisson";
  }
  return "?";
}

void check_loss_output(Loss loss, Activation output) {
  if (loss == Loss::LogLoss && output != Activation::Softmax)
    throw std::invalid_argument(std::string("loss 'log_loss' needs output_activation 'softmax', got '") +
                                activation_name(output) + "'");
  if (loss == Loss::BinaryLogLoss && output != Activation::Logistic)
    throw std::invalid_argument(
        std::string("loss 'binary_log_loss' needs output_activation 'logistic', got '") +
        activation_name(output) + "'");
  if (loss == Loss::Poisson && output != Activation::Exp)
    throw std::invalid_argument(std::string("loss 'poisson' needs output_activation 'exp', got '") +
                                activation_name(output) + "'");
}

Schedule parse_schedule(const std::string& name) {
  if (name == "constant") return Schedule::Constant;
  if (name == "step") return Schedule::Step;
  if (name == "exponential") return Schedule::Exponential;
  if (name == "cosine") return Schedule::Cosine;
  throw std::invalid_argument("schedule must be one of 'constant', 'step', 'exponential', 'cosine'; got '" +
                              name + "'");
}

Init parse_init(const std::string& name) {
  if (name == "glorot") return Init::Glorot;
  if (name == "he") return Init::He;
  throw std::invalid_argument("init must be one of 'glorot', 'he'; got '" + name + "'");
}

}  // namespace fastmlp
