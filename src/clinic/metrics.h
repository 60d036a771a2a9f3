// Evaluation metrics for the differential (docs/evaluation.md): from one
// record per image (true class, probability vector over the catalogue,
// whether the red flag was raised) to balanced accuracy, per-class recall
// and precision, top-3 accuracy, confusion matrix, AUROC (melanoma vs rest,
// malignant vs benign), expected calibration error with reliability data,
// the malignant lesions that were neither the top-1 answer nor flagged, and
// all of these by sex, age band and body site. Pure math; no model code.
//
// Conventions:
//   - top-1 = the first index of the maximal probability; top-k ranks by
//     probability descending, ties broken by catalogue index.
//   - Classes absent from the data (no true example) are left out of
//     balanced accuracy and of macro averages; their recall is NaN.
//     Precision of a class never predicted is NaN.
//   - AUROC is the Mann–Whitney rank statistic with mid-ranks for ties
//     (a tie between a positive and a negative counts 1/2); NaN when either
//     group is empty. Melanoma: score p(mel). Malignant vs benign: score =
//     sum of the probabilities of the malignant classes.
//   - ECE: B equal-width bins on the top-1 confidence, bin b = (b/B, (b+1)/B]
//     (confidence 0 falls in bin 0); ECE = sum_b n_b/N |accuracy_b −
//     mean confidence_b|. B = 15 by default.
//   - NaN values are "undefined" (JSON null).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace sg::clinic {

struct EvalRecord {
  int truth = -1;            // class index
  std::vector<double> prob;  // one per class, summing to 1
  bool flagged = false;      // red flag raised ("refer urgently")
  bool uncertain = false;    // the report said "not sure, see a dermatologist"
  std::string sex;           // "male" / "female" / "" (unknown)
  double age = NAN;          // years, NaN unknown
  std::string site;          // body site, "" unknown
};

struct MetricsSpec {
  std::vector<std::string> classes;  // class ids, in probability order
  std::vector<bool> malignant;       // per class: counts as malignant (mel, bcc, akiec for HAM10000)
  std::string melanoma = "mel";      // id of the melanoma class ("" or absent: no melanoma AUROC)
  int ece_bins = 15;
};

struct ClassStats {
  int64_t support = 0;     // true examples
  int64_t predicted = 0;   // top-1 predictions of this class
  int64_t correct = 0;     // true positives
  double recall = NAN;     // correct / support
  double precision = NAN;  // correct / predicted
};

struct ReliabilityBin {
  double lo = 0, hi = 0;
  int64_t count = 0;
  double mean_confidence = NAN, accuracy = NAN;
};

struct Metrics {
  int64_t n = 0;
  int classes_present = 0;
  double accuracy = NAN;
  double balanced_accuracy = NAN;  // mean recall over classes present
  double macro_precision = NAN;    // mean precision over classes present that were predicted
  double top3_accuracy = NAN;
  double auroc_melanoma = NAN;
  double auroc_malignant = NAN;
  double ece = NAN;
  double nll = NAN;                // mean −log p(truth)
  double brier = NAN;              // mean sum_k (p_k − [k = truth])²
  std::vector<ClassStats> per_class;              // one per class
  std::vector<std::vector<int64_t>> confusion;    // [truth][top-1]
  std::vector<ReliabilityBin> reliability;        // ece_bins bins
  // Safety: malignant = spec.malignant[truth].
  int64_t malignant_n = 0;
  int64_t malignant_top1 = 0;             // top-1 answer is the true class
  int64_t malignant_flagged = 0;          // red flag raised
  int64_t malignant_missed_unflagged_n = 0;  // neither top-1 nor flagged
  double malignant_missed_unflagged = NAN;   // ... as a fraction of malignant_n
  int64_t malignant_missed_unreferred_n = 0; // neither top-1, flagged, nor marked uncertain
  double malignant_missed_unreferred = NAN;
  int64_t benign_n = 0, benign_flagged = 0;
  double benign_flag_rate = NAN;          // benign lesions sent for urgent referral
  double uncertain_rate = NAN;            // fraction marked "not sure"
};

Metrics compute_metrics(const std::vector<EvalRecord>& records, const MetricsSpec& spec);

// AUROC of `score` for positives (label true) vs negatives; NaN if a group is empty.
double auroc(const std::vector<double>& score, const std::vector<bool>& positive);
// ECE with `bins` equal-width bins; `reliability` receives the bins when not null.
double expected_calibration_error(const std::vector<double>& confidence, const std::vector<bool>& correct, int bins,
                                  std::vector<ReliabilityBin>* reliability = nullptr);

// "<30", "30-44", "45-59", "60-74", ">=75", "unknown".
std::string age_band(double age);

struct Group {
  std::string name;  // e.g. "female", "30-44", "back", "unknown"
  Metrics metrics;
};
struct Breakdown {
  std::string by;    // "sex", "age", "site"
  std::vector<Group> groups;
};
// The metrics per sex (female, male, unknown), per age band (in band order)
// and per body site (alphabetical, "unknown" last). Groups with no record
// are left out.
std::vector<Breakdown> compute_breakdowns(const std::vector<EvalRecord>& records, const MetricsSpec& spec);

}  // namespace sg::clinic
