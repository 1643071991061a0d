// Name ↔ enum for activations, losses, initializations, schedules and layer kinds, and which
// loss goes with which output activation — all read from the tables in the
// headers (kActivations, kActivationAliases, kLosses, kInits, kSchedules):
// nothing here changes when a row is added there.
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

#include "fastmlp/activation.hpp"
#include "fastmlp/loss.hpp"
#include "fastmlp/network.hpp"
#include "fastmlp/schedule.hpp"

namespace fastmlp {

namespace {

// "'a', 'b', 'c'"
template <class Table, class Name>
std::string quoted_list(const Table& table, Name name_of) {
  std::string out;
  for (const auto& row : table) out += std::string(out.empty() ? "'" : ", '") + name_of(row) + "'";
  return out;
}

template <class Table>
auto parse_name(const Table& table, const std::string& what, const std::string& name) {
  for (const auto& row : table)
    if (name == row.name) return row.value;
  throw std::invalid_argument(what + " must be one of " + quoted_list(table, [](const auto& r) { return r.name; }) +
                              "; got '" + name + "'");
}

template <class Table, class E>
const auto& find_row(const Table& table, E value) {
  for (const auto& row : table)
    if (row.value == value) return row;
  throw std::logic_error("an enum value missing from its name table");
}

}  // namespace

Activation parse_activation(const std::string& name) {
  for (const ActivationInfo& row : kActivations)
    if (name == row.name) return row.value;
  for (const ActivationAlias& row : kActivationAliases)
    if (name == row.alias) return row.value;
  // Each name followed by its aliases: 'identity', 'logistic', 'sigmoid', 'tanh', ...
  std::string names;
  for (const ActivationInfo& row : kActivations) {
    names += std::string(names.empty() ? "'" : ", '") + row.name + "'";
    for (const ActivationAlias& alias : kActivationAliases)
      if (alias.value == row.value) names += std::string(", '") + alias.alias + "'";
  }
  throw std::invalid_argument("activation must be one of " + names + "; got '" + name + "'");
}

const ActivationInfo& activation_info(Activation f) { return find_row(kActivations, f); }

const char* activation_name(Activation f) { return activation_info(f).name; }

Loss parse_loss(const std::string& name) { return parse_name(kLosses, "loss", name); }

const LossInfo& loss_info(const Loss& loss) { return find_row(kLosses, loss.kind); }

const char* loss_name(const Loss& loss) { return loss_info(loss).name; }

void check_loss_params(const Loss& loss) {
  for (const LossParam& p : kLossParams) {
    const double v = loss.*p.field;
    if (!(p.lo_open ? v > p.lo : v >= p.lo) || !(p.hi_open ? v < p.hi : v <= p.hi)) {
      std::ostringstream msg;  // "loss parameter delta must be in (0, inf), got -1"
      msg << "loss parameter " << p.name << " must be in " << (p.lo_open ? "(" : "[") << p.lo << ", ";
      if (std::isinf(p.hi))
        msg << "inf";
      else
        msg << p.hi;
      msg << (p.hi_open ? ")" : "]") << ", got " << v;
      throw std::invalid_argument(msg.str());
    }
  }
}

void check_loss_output(const Loss& loss, Activation output) {
  check_loss_params(loss);
  const LossInfo& info = loss_info(loss);
  if (info.needs_output && output != info.output)
    throw std::invalid_argument(std::string("loss '") + info.name + "' needs output_activation '" +
                                activation_name(info.output) + "', got '" + activation_name(output) + "'");
}

Schedule parse_schedule(const std::string& name) { return parse_name(kSchedules, "schedule", name); }

Init parse_init(const std::string& name) { return parse_name(kInits, "init", name); }

LayerKind parse_layer_kind(const std::string& name) { return parse_name(kLayerKinds, "layer kind", name); }

const char* layer_kind_name(LayerKind kind) { return find_row(kLayerKinds, kind).name; }

}  // namespace fastmlp
