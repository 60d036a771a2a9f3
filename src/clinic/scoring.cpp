#include "clinic/scoring.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace sg::clinic {

std::vector<double> calibrated_probabilities(const std::vector<double>& loglik, const Calibration& c) {
  if (loglik.empty()) return {};
  if (!(c.temperature > 0) || !std::isfinite(c.temperature))
    throw Error("calibration: temperature must be a positive number, not " + std::to_string(c.temperature));
  if (!c.class_bias.empty() && c.class_bias.size() != loglik.size())
    throw Error("calibration: " + std::to_string(c.class_bias.size()) + " class biases for " +
                std::to_string(loglik.size()) + " candidates");
  std::vector<double> z(loglik.size());
  double mx = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < z.size(); ++i) {
    if (std::isnan(loglik[i])) throw Error("calibration: score " + std::to_string(i) + " is not a number");
    const double b = c.class_bias.empty() ? 0.0 : c.class_bias[i];
    if (!std::isfinite(b)) throw Error("calibration: class bias " + std::to_string(i) + " is not finite");
    z[i] = (loglik[i] + b) / c.temperature;  // -inf stays -inf: probability 0
    mx = std::max(mx, z[i]);
  }
  if (!std::isfinite(mx)) {
    if (mx > 0) throw Error("calibration: a score is +infinity");
    return std::vector<double>(z.size(), 1.0 / static_cast<double>(z.size()));  // nothing known: uniform
  }
  double sum = 0;
  for (auto& v : z) sum += (v = std::exp(v - mx));
  for (auto& v : z) v /= sum;
  return z;
}

}  // namespace sg::clinic
