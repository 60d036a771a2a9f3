// What `skingpt eval` shows and writes (docs/evaluation.md): the metrics as
// one JSON object, a plain-text summary, a reliability diagram and a
// confusion matrix drawn as PNG (with a tiny built-in 5×7 bitmap font for the
// labels), and one self-contained HTML page (no external assets; the two
// PNGs embedded as data: URIs).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "clinic/metrics.h"
#include "clinic/scoring.h"
#include "formats/image.h"

namespace sg::clinic {

// `skingpt eval --answers`: the first consultation answer read back
// (answer_check.h) against the model's own scores and the measured features.
struct AnswerCheck {
  int64_t n = 0;                   // images whose first question was answered (refused photos are not)
  int64_t names_top_scored = 0;    // the answer names the condition with the highest raw score
  int64_t names_report_top = 0;    // ... the differential's top (calibrated when calibrated)
  int64_t names_none = 0;          // no catalogue condition named
  int64_t features_stated = 0, features_agreed = 0;  // ConceptAgreement summed over images
  double temperature = 0;          // of the answers (0 = greedy)
  // Where the words and the scores part: by the margin between the two highest
  // raw scores (nats), bins [0, 0.5), [0.5, 1), [1, inf). A near tie is where
  // the model itself is torn, and where an answer can name the runner-up.
  static constexpr double kMarginEdges[2] = {0.5, 1.0};
  int64_t by_margin_n[3] = {}, by_margin_names_top[3] = {};
  int64_t names_second_scored = 0;  // the answer names the condition scored second (share of n in JSON)
  static int margin_bin(double margin) {  // NaN (two -inf scores) counts as a tie
    return !(margin >= kMarginEdges[0]) ? 0 : margin < kMarginEdges[1] ? 1 : 2;
  }
};

struct EvalResult {
  std::string data;             // labels CSV or scores file
  std::string split;
  std::string model;            // model folder name
  std::string catalogue_source;
  std::string language = "en";
  bool patient_details = false;  // age/sex/site were put before the first question (eval --patient)
  std::vector<std::string> class_ids;    // catalogue order
  std::vector<std::string> class_names;  // for people (English)
  std::vector<bool> malignant;
  // Raw: softmax(loglik) (T = 1, no bias), flagged/uncertain with the
  // thresholds of `calibration` (or the defaults when there is none).
  Calibration raw_thresholds;
  Metrics raw;
  // Calibrated: with the model's calibration.json, when there is one.
  std::optional<Calibration> calibration;
  std::string calibration_source;  // path or "none"
  std::optional<Metrics> calibrated;
  // Breakdowns of the headline probabilities (calibrated when available).
  std::vector<Breakdown> breakdowns;
  std::optional<AnswerCheck> answers;
  double seconds = 0;           // scoring time
  std::string scores_file;      // where the raw scores were cached ("" = none)

  bool headline_calibrated() const { return calibrated.has_value(); }
  const Metrics& headline() const { return calibrated ? *calibrated : raw; }
};

std::string eval_json(const EvalResult& r);  // one object, pretty-printed
std::string eval_text(const EvalResult& r);  // the readable summary

// Two panels (raw, calibrated; the second empty when there is no
// calibration): per-bin accuracy bars against the diagonal, gaps shaded.
Image draw_reliability(const Metrics& raw, const Metrics* calibrated);
// Rows = true class, columns = top-1 answer; cell shade = row-normalised
// fraction (recall on the diagonal), counts written in the cells.
Image draw_confusion(const Metrics& m, const std::vector<std::string>& class_ids, const std::string& title);

// Text in the built-in 5×7 font (digits, A–Z (lower case drawn as upper),
// space and . , % - / ( ) : = < > _ + ?), `scale` pixels per font pixel.
void draw_text(Image& img, int x, int y, const std::string& text, const uint8_t rgb[3], int scale = 1);
int text_width(const std::string& text, int scale = 1);

std::string eval_html(const EvalResult& r, const std::vector<uint8_t>& reliability_png,
                      const std::vector<uint8_t>& confusion_png);

std::string base64(const std::vector<uint8_t>& bytes);

}  // namespace sg::clinic
