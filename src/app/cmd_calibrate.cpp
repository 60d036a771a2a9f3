// `skingpt calibrate`: fits the temperature (and per-condition biases), the
// red-flag threshold for a target sensitivity and the uncertainty thresholds
// on a validation split, and stores them with the model as calibration.json
// (docs/calibration.md). Scores come from the model, or from a scores.csv
// written by `skingpt eval` (--scores).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "app/args.h"
#include "app/commands.h"
#include "app/eval_common.h"
#include "clinic/calibrate.h"
#include "clinic/calibration_file.h"
#include "clinic/consultation.h"
#include "core/error.h"

namespace sg::app {

namespace fs = std::filesystem;

int cmd_calibrate(int argc, char** argv) {
  std::string data, split, model_dir, out, scores_path, save_scores, conditions, lang_name = "en";
  double target_sens = 0.95, target_acc = 0.80;
  int64_t limit = 0, threads = std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), 256);
  bool no_bias = false, allow_test = false, json_out = false;
  Args a("calibrate",
         "Fit the calibration of the differential on a validation split (never the test split): the temperature "
         "and per-condition biases (minimum negative log-likelihood), the red-flag threshold that catches the "
         "target share of malignant lesions, and the 'not sure' thresholds. Writes calibration.json next to the "
         "model. See docs/calibration.md.");
  a.option("--data", &data, "labels CSV (image,dx,split,... ; image paths relative to the CSV)");
  a.option("--split", &split, "validation split (e.g. ham10000_val: a lesion-level hold-out of ham10000_train)");
  a.option("--model", &model_dir, "model folder (default: $SKINGPT_MODEL, then models/skingpt-mini)");
  a.option("--out", &out, "where to write (default: MODEL/calibration.json, or calibration.ja.json for --lang ja)");
  a.option("--scores", &scores_path, "use raw scores from a scores.csv written by 'skingpt eval' (no model run)");
  a.option("--save-scores", &save_scores, "also write the raw scores computed here to this scores.csv");
  a.option("--target-sensitivity", &target_sens,
           "share of malignant lesions that must be the top-1 answer or flagged for urgent referral");
  a.option("--target-accuracy", &target_acc, "top-1 accuracy required when the system says it is sure");
  a.flag("--no-bias", &no_bias, "fit the temperature only (no per-condition bias)");
  a.option("--limit", &limit, "use only the first N images of the split (0 = all)");
  a.option("-t,--threads", &threads, "threads");
  a.option("--lang", &lang_name, "consultation language of the scoring prompt (en or ja)");
  a.option("--conditions", &conditions, "condition catalogue (default: the model's conditions.json, else built-in)");
  a.flag("--allow-test-split", &allow_test, "allow a split whose name contains 'test' (model selection on test data)");
  a.flag("--json", &json_out, "print the fitted calibration file and its diagnostics as JSON");
  if (!a.parse(argc, argv)) return 0;
  const clinic::Language lang = clinic::parse_language(lang_name);
  if (split.empty() && scores_path.empty()) throw Error("calibrate: give --split NAME (see --help)");
  if (!allow_test && split.find("test") != std::string::npos)
    throw Error("calibrate: split '" + split +
                "' looks like a test split; calibrating on it would make the test figures meaningless. Use a "
                "validation split (e.g. ham10000_val), or --allow-test-split if you really mean it");

  std::string model;
  try {
    model = clinic::find_model_dir(model_dir, self_exe_path());
  } catch (const Error&) {
    if (scores_path.empty() || out.empty() || !model_dir.empty()) throw;
  }
  const clinic::Catalogue cat = clinic::Catalogue::resolve(conditions, model);

  clinic::ScoresFile scores;
  std::string data_name;
  if (!scores_path.empty()) {
    if (!data.empty()) throw Error("calibrate: give --data or --scores, not both");
    scores = load_scores(scores_path, cat, split, limit);
    data_name = scores_path;
    if (split.empty()) split = scores.rows.front().label.split;
    if (!allow_test && split.find("test") != std::string::npos)
      throw Error("calibrate: " + scores_path + " holds split '" + split + "', a test split (see --allow-test-split)");
  } else {
    auto rows = load_split(data, split, limit);
    if (rows.empty()) throw Error(data + ": split " + split + " has no rows");
    truth_indices(rows, cat, data);
    scores = score_split(model, cat, std::move(rows), split, lang, static_cast<int>(threads));
    data_name = data;
    if (!save_scores.empty()) write_file(save_scores, clinic::scores_csv(scores));
  }
  std::vector<clinic::LabelRow> labels;
  for (const auto& r : scores.rows) labels.push_back(r.label);
  clinic::CalibrationData d;
  d.truth = truth_indices(labels, cat, data_name);
  for (const auto& r : scores.rows) d.loglik.push_back(r.loglik);

  std::vector<bool> malignant, red_flag;
  for (const auto& c : cat.conditions()) {
    malignant.push_back(c.malignancy != clinic::Malignancy::Benign);
    red_flag.push_back(c.red_flag);
  }
  clinic::CalibrateOptions opt;
  opt.fit_bias = !no_bias;
  opt.target_sensitivity = target_sens;
  opt.target_confident_accuracy = target_acc;
  const clinic::CalibrationResult res = clinic::fit_calibration(d, malignant, red_flag, opt);
  clinic::Calibration cal = res.calibration;
  cal.fitted_on = fs::path(data_name).filename().string() + " split=" + split + ", n=" + std::to_string(res.n);

  if (out.empty()) out = (fs::path(model) / clinic::calibration_file_name(lang)).string();
  // The file of calibration_file.h plus a "metrics" object with the fit's diagnostics.
  nlohmann::json j = nlohmann::json::parse(clinic::calibration_to_json(cal, cat, lang));
  const auto& rf = res.red_flag;
  const auto& un = res.uncertainty;
  j["metrics"] = {{"n", res.n},
                  {"nll_uncalibrated", res.fit.nll_before},
                  {"nll_calibrated", res.fit.nll_after},
                  {"bias_fitted", !no_bias},
                  {"target_sensitivity", target_sens},
                  {"malignant_n", rf.malignant_n},
                  {"malignant_caught", rf.caught},
                  {"sensitivity", rf.sensitivity},
                  {"sensitivity_target_met", rf.target_met},
                  {"benign_n", rf.benign_n},
                  {"benign_flagged", rf.benign_flagged},
                  {"target_confident_accuracy", target_acc},
                  {"confident_coverage", un.coverage},
                  {"confident_accuracy", un.confident_accuracy},
                  {"errors_marked_uncertain", un.error_capture},
                  {"accuracy_target_met", un.target_met}};
  const std::string text = j.dump(2) + "\n";
  clinic::parse_calibration(text, out, cat);  // what we write must load
  if (const auto dir = fs::path(out).parent_path(); !dir.empty()) fs::create_directories(dir);
  write_file(out + ".tmp", text);
  fs::rename(out + ".tmp", out);

  if (json_out) {
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  std::printf("Calibrated on %s split %s: %lld images.\n", data_name.c_str(), split.c_str(),
              static_cast<long long>(res.n));
  std::printf("  temperature            %.4g%s\n", cal.temperature, no_bias ? "" : " (with per-condition biases)");
  std::printf("  NLL                    %.4f -> %.4f\n", res.fit.nll_before, res.fit.nll_after);
  if (cal.temperature >= 999.0)
    std::printf("  note: the temperature is at the top of its range: the scores carry almost no information "
                "about the diagnosis on this data (the probabilities are close to the class frequencies)\n");
  if (cal.temperature <= 1.001e-3)
    std::printf("  note: the temperature is at the bottom of its range: the validation data is separated perfectly; "
                "use more (and harder) validation images\n");
  std::printf("  red-flag threshold     %.4g: %lld of %lld malignant lesions top-1 or flagged (%.1f%%, target %.0f%%)%s\n",
              cal.red_flag_threshold, static_cast<long long>(rf.caught), static_cast<long long>(rf.malignant_n),
              100 * rf.sensitivity, 100 * target_sens, rf.target_met ? "" : "  [TARGET NOT MET]");
  std::printf("                         %lld of %lld benign lesions would be flagged\n",
              static_cast<long long>(rf.benign_flagged), static_cast<long long>(rf.benign_n));
  std::printf("  'not sure' below       top probability %.2f or margin %.2f: %.0f%% of images confident, %.1f%% "
              "of them right (target %.0f%%)%s\n",
              cal.uncertain_max_prob, cal.uncertain_min_margin, 100 * un.coverage, 100 * un.confident_accuracy,
              100 * target_acc, un.target_met ? "" : "  [TARGET NOT MET: always 'not sure']");
  std::printf("Wrote %s\n", out.c_str());
  return 0;
}

}  // namespace sg::app
