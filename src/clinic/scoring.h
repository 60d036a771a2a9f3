// The contract between the consultation (which asks the model) and the
// evaluation/calibration tools (which measure it): for one photo, the model's
// own log-likelihood of each catalogue condition, turned into calibrated
// probabilities. Pure math here; no model code.
#pragma once
#include <string>
#include <vector>

namespace sg::clinic {

// Stored with a model as MODEL_DIR/calibration.json (docs/calibration.md).
struct Calibration {
  double temperature = 1.0;               // probabilities = softmax(loglik / T)
  std::vector<double> class_bias;         // optional per-candidate offset added before /T (empty = none)
  double uncertain_max_prob = 0.5;        // top probability below this → "not sure, see a dermatologist"
  double uncertain_min_margin = 0.15;     // or top-two margin below this
  double red_flag_threshold = 0.10;       // a malignant candidate at or above this → "refer urgently"
  std::string fitted_on;                  // e.g. "labels.csv split=ham10000_val, n=600"
};

// softmax((loglik + bias) / T), summing to 1.
std::vector<double> calibrated_probabilities(const std::vector<double>& loglik, const Calibration& c);

}  // namespace sg::clinic
