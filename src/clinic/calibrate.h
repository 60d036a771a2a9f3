// Fitting a Calibration (scoring.h) on held-out data (docs/calibration.md):
//
// 1. Temperature T (and, by default, one bias per condition) minimising the
//    mean negative log-likelihood of softmax((loglik + bias) / T) over the
//    validation images. Written as softmax(β·loglik + c) with β = 1/T and
//    c = bias/T, the NLL is convex in (β, c), so the fit is:
//      - T alone: a scan of 121 values of log T over [1e-3, 1e3], then
//        golden-section search on log T between the neighbours of the best
//        (the NLL is convex in β = 1/T, hence unimodal in log T);
//      - with biases: Newton's method on (β, c) from (1/T, 0) with an L2
//        penalty λ·Σc² (λ = 1e-3, which also fixes softmax's free additive
//        constant), backtracking line search (the objective never
//        increases), stopped when the gradient norm < 1e-9 or after 100
//        steps. Conditions with no validation example keep bias 0.
//      bias = c·T is what calibration.json stores.
// 2. The red-flag threshold t: the largest t in (0, 0.5] such that at least
//    `target_sensitivity` of the malignant validation lesions are caught,
//    i.e. their true class is the top-1 answer or some red-flag condition
//    has calibrated probability >= t. Capped at 0.5 (a red-flag condition at
//    or above 50% is always flagged).
// 3. The uncertainty thresholds (p, m): among p, m in {0, 0.01, …, 1}, the
//    pair that leaves the most images "confident" (top-1 probability >= p
//    and top-two margin >= m) while the top-1 accuracy of those confident
//    images is at least `target_confident_accuracy` and they number at least
//    max(10, 2% of the images); ties go to the larger p, then the larger m.
//    When no pair qualifies, p = m = 1 (the system always says it is not
//    sure) and the report says the target was not met.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clinic/scoring.h"

namespace sg::clinic {

struct CalibrationData {
  std::vector<std::vector<double>> loglik;  // [image][condition], raw scores
  std::vector<int> truth;                   // condition index per image
};

struct CalibrateOptions {
  bool fit_bias = true;
  double bias_l2 = 1e-3;
  double target_sensitivity = 0.95;         // malignant lesions caught (top-1 or red flag)
  double target_confident_accuracy = 0.80;  // accuracy when the system says it is sure
  double red_flag_cap = 0.5;
};

struct TemperatureFit {
  double temperature = 1.0;
  std::vector<double> bias;  // empty when not fitted
  double nll_before = 0;     // T = 1, no bias
  double nll_after = 0;
  int iterations = 0;
};

// Mean NLL of softmax((loglik + bias)/T) at the true classes.
double mean_nll(const CalibrationData& d, double temperature, const std::vector<double>& bias = {});
// T only (bias stays empty).
TemperatureFit fit_temperature(const CalibrationData& d);
// T and one bias per condition (see above).
TemperatureFit fit_temperature_and_bias(const CalibrationData& d, double l2 = 1e-3);

struct RedFlagChoice {
  double threshold = 0.5;
  int64_t malignant_n = 0;
  int64_t caught = 0;          // at the chosen threshold
  double sensitivity = 0;      // caught / malignant_n (1 when malignant_n = 0)
  bool target_met = false;
  int64_t benign_n = 0, benign_flagged = 0;  // the referral cost at this threshold
};
// probs: calibrated, [image][condition]. malignant: per condition, which
// lesions must be caught; red_flag: per condition, which raise the flag.
RedFlagChoice choose_red_flag_threshold(const std::vector<std::vector<double>>& probs, const std::vector<int>& truth,
                                        const std::vector<bool>& malignant, const std::vector<bool>& red_flag,
                                        double target_sensitivity, double cap = 0.5);

struct UncertaintyChoice {
  double max_prob = 1.0, min_margin = 1.0;
  double coverage = 0;           // fraction of images confident
  double confident_accuracy = 0; // top-1 accuracy among them
  double error_capture = 0;      // fraction of wrong top-1 answers marked uncertain
  bool target_met = false;
};
UncertaintyChoice choose_uncertainty_thresholds(const std::vector<std::vector<double>>& probs,
                                                const std::vector<int>& truth, double target_accuracy);

struct CalibrationResult {
  Calibration calibration;
  TemperatureFit fit;
  RedFlagChoice red_flag;
  UncertaintyChoice uncertainty;
  int64_t n = 0;
};
// The whole fit. `malignant` and `red_flag` per condition as above.
CalibrationResult fit_calibration(const CalibrationData& d, const std::vector<bool>& malignant,
                                  const std::vector<bool>& red_flag, const CalibrateOptions& opt);

}  // namespace sg::clinic
