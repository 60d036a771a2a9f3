// The differential diagnosis: catalogue conditions ranked by calibrated
// probability (summing to 1), how sure the system is in plain words, and red
// flags. A red-flag condition (malignant or premalignant, catalogue
// "red_flag") at or above the calibrated threshold means "refer urgently",
// whatever its rank; it is never hidden (DESIGN.md §8).
#pragma once
#include <string>
#include <vector>

#include "clinic/catalogue.h"
#include "clinic/language.h"
#include "clinic/scoring.h"

namespace sg::clinic {

struct Candidate {
  size_t index = 0;         // position in the catalogue
  std::string id;           // catalogue id
  double probability = 0;   // calibrated
  double log_likelihood = 0;  // the model's raw score
  int rank = 0;             // 1 = most likely
  bool red_flag = false;    // red-flag condition at or above the threshold
};

// How sure the system is.
enum class Certainty { High, Moderate, Low };
const char* certainty_name(Certainty c);  // "high", "moderate", "low"

// Where the model's scores were read: at the diagnosis in its own first answer
// ("... This could be a skin disease image of <condition>"), so the words and
// the numbers are one distribution; or, when that answer names no diagnosis
// there (another model's wording, a cut-off answer), as the answer to the
// scoring question.
enum class ScoreContext { FirstAnswer, ScoreQuestion };
const char* score_context_name(ScoreContext c);  // "first_answer" | "score_question"

struct Differential {
  std::vector<Candidate> ranked;   // every catalogue condition, most likely first
  double entropy = 0;              // nats
  double normalized_entropy = 0;   // entropy / log(n), 0..1
  double margin = 0;               // top-1 minus top-2 probability
  double top_probability = 0;
  Certainty certainty = Certainty::Low;
  bool uncertain = false;          // top < uncertain_max_prob or margin < uncertain_min_margin
  bool refer_urgently = false;     // some red flag raised
  std::vector<size_t> red_flags;   // indices into `ranked` of flagged candidates
  ScoreContext scored_at = ScoreContext::ScoreQuestion;
};

// Builds the differential from raw log-likelihoods (catalogue order).
Differential build_differential(const std::vector<double>& loglik, const Catalogue& cat, const Calibration& cal);
// From probabilities already calibrated (catalogue order, summing to 1).
Differential differential_from_probabilities(const std::vector<double>& probs, const std::vector<double>& loglik,
                                             const Catalogue& cat, const Calibration& cal);

// The candidates by the model's raw score (log-likelihood), highest first;
// ties keep the differential's order. Calibration biases can reorder `ranked`,
// so "the model's own top-scored condition" is by_raw_score(d)[0].
std::vector<const Candidate*> by_raw_score(const Differential& d);

// Plain-words rendering of the uncertainty: "The system is fairly sure: ..." etc.
std::string describe_uncertainty(const Differential& d, const Catalogue& cat, Language lang);
// Words for a probability: "very likely" (>=0.8), "likely" (>=0.5), "possible"
// (>=0.2), "less likely" (>=0.05), "unlikely".
std::string likelihood_words(double p, Language lang);
// Shannon entropy in nats of a probability vector.
double entropy_nats(const std::vector<double>& p);

}  // namespace sg::clinic
