// `skingpt eval`: measures the differential on a labelled split
// (docs/evaluation.md). Every image is scored once (the model's own
// log-likelihood of each catalogue condition, exactly as `describe` scores
// it); the metrics are computed from raw probabilities (T = 1, no bias) and,
// when the model has a calibration.json, from calibrated ones. Writes
// OUT/scores.csv (reusable by `skingpt calibrate --scores`), metrics.json,
// reliability.png, confusion.png and report.html.
#include <cstdio>
#include <filesystem>
#include <thread>

#include "app/args.h"
#include "app/commands.h"
#include "app/eval_common.h"
#include "clinic/calibration_file.h"
#include "clinic/consultation.h"
#include "clinic/differential.h"
#include "clinic/eval_report.h"
#include "clinic/metrics.h"
#include "core/error.h"
#include "formats/image.h"

namespace sg::app {

namespace fs = std::filesystem;

namespace {

std::vector<clinic::EvalRecord> records_for(const clinic::ScoresFile& s, const std::vector<int>& truth,
                                            const clinic::Catalogue& cat, const clinic::Calibration& c) {
  std::vector<clinic::EvalRecord> out;
  out.reserve(s.rows.size());
  for (size_t i = 0; i < s.rows.size(); ++i) {
    const auto& row = s.rows[i];
    const clinic::Differential d = clinic::build_differential(row.loglik, cat, c);
    clinic::EvalRecord r;
    r.truth = truth[i];
    r.prob = clinic::calibrated_probabilities(row.loglik, c);
    r.flagged = d.refer_urgently;
    r.uncertain = d.uncertain;
    r.sex = row.label.sex;
    r.age = row.label.age;
    r.site = row.label.site;
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  std::string data, split, model_dir, out_dir, scores_path, calibration_path, conditions, lang_name = "en";
  int64_t limit = 0, answers = 0, threads = std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), 256);
  bool json = false;
  float answer_temp = 0.0f;
  bool with_patient = false;
  Args a("eval",
         "Measure the differential on a labelled split: balanced accuracy, per-condition recall and precision, "
         "top-3 accuracy, AUROC (melanoma, malignant vs benign), calibration error before and after calibration, "
         "malignant lesions missed, and all of it by sex, age band and body site. Writes scores.csv, metrics.json, "
         "reliability.png, confusion.png and report.html into --out. See docs/evaluation.md.");
  a.option("--data", &data, "labels CSV (image,dx,split,... ; image paths relative to the CSV)");
  a.option("--split", &split, "split to evaluate (ham10000_val / ham10000_fit are derived from ham10000_train by lesion)");
  a.option("--model", &model_dir, "model folder (default: $SKINGPT_MODEL, then models/skingpt-mini)");
  a.option("--out", &out_dir, "output folder (default: eval-<split>)");
  a.flag("--json", &json, "print the metrics as one JSON object instead of the summary");
  a.option("--limit", &limit, "evaluate only the first N images of the split (0 = all)");
  a.option("-t,--threads", &threads, "threads");
  a.option("--lang", &lang_name, "consultation language of the scoring prompt (en or ja)");
  a.option("--scores", &scores_path, "reuse raw scores from a scores.csv written by an earlier eval (no model run)");
  a.option("--calibration", &calibration_path, "calibration file to apply (default: the model's own, if any)");
  a.option("--conditions", &conditions, "condition catalogue (default: the model's conditions.json, else built-in)");
  a.option("--answers", &answers,
           "also ask the first consultation question for the first N images (-1 = all) and check that the answer "
           "names the top-scored condition and states the measured features");
  a.flag("--patient", &with_patient,
         "put each image's age, sex and site from the labels before the first question, as describe's "
         "--age/--sex/--site do (the differential is read from that answer)");
  a.option("--temp", &answer_temp, "with --answers: sampling temperature of the answers (describe's default: 0 = greedy)");
  if (!a.parse(argc, argv)) return 0;
  const clinic::Language lang = clinic::parse_language(lang_name);
  if (split.empty() && scores_path.empty()) throw Error("eval: give --split NAME (see --help)");
  if (answers != 0 && !scores_path.empty()) throw Error("eval: --answers runs the model; it cannot be used with --scores");
  if (with_patient && !scores_path.empty()) throw Error("eval: --patient runs the model; it cannot be used with --scores");

  // The model folder: required to score; with --scores only for its catalogue and calibration.
  std::string model;
  try {
    model = clinic::find_model_dir(model_dir, self_exe_path());
  } catch (const Error&) {
    if (scores_path.empty() || !model_dir.empty()) throw;
  }
  const clinic::Catalogue cat = clinic::Catalogue::resolve(conditions, model);

  clinic::ScoresFile scores;
  double seconds = 0;
  std::string data_name;
  if (!scores_path.empty()) {
    if (!data.empty()) throw Error("eval: give --data or --scores, not both");
    scores = load_scores(scores_path, cat, split, limit);
    data_name = scores_path;
    if (split.empty()) split = scores.rows.front().label.split;
  } else {
    auto rows = load_split(data, split, limit);
    if (rows.empty()) throw Error(data + ": split " + split + " has no rows");
    truth_indices(rows, cat, data);  // fail before the long run
    scores = score_split(model, cat, std::move(rows), split, lang, static_cast<int>(threads), &seconds, with_patient);
    data_name = data;
  }
  const std::vector<int> truth = [&] {
    std::vector<clinic::LabelRow> labels;
    for (const auto& r : scores.rows) labels.push_back(r.label);
    return truth_indices(labels, cat, data_name);
  }();

  if (out_dir.empty()) out_dir = "eval-" + split;
  fs::create_directories(out_dir);
  std::string scores_out;
  if (scores_path.empty()) {
    scores_out = (fs::path(out_dir) / "scores.csv").string();
    write_file(scores_out, clinic::scores_csv(scores));
  }

  // Calibration: explicit file, else the model's for this language.
  std::optional<clinic::Calibration> cal;
  std::string cal_source = "none";
  if (!calibration_path.empty()) {
    cal = clinic::load_calibration(calibration_path, cat);
    cal_source = calibration_path;
  } else if (!model.empty()) {
    cal = clinic::find_calibration(model, lang, cat, &cal_source);
    if (!cal) cal_source = "none";
  }

  clinic::MetricsSpec spec;
  spec.classes = cat.ids();
  for (const auto& c : cat.conditions()) spec.malignant.push_back(c.malignancy != clinic::Malignancy::Benign);

  clinic::EvalResult r;
  r.data = data_name;
  r.split = split;
  r.model = model.empty() ? std::string("(scores only)") : fs::path(model).filename().string();
  if (r.model.empty()) r.model = fs::path(model).parent_path().filename().string();
  r.catalogue_source = cat.source();
  r.language = clinic::language_code(lang);
  r.patient_details = with_patient;
  r.class_ids = cat.ids();
  for (const auto& c : cat.conditions()) r.class_names.push_back(c.name.en);
  r.malignant = spec.malignant;
  // Raw: T = 1 and no bias, with the same thresholds (the model's, or the defaults).
  r.raw_thresholds = cal ? *cal : clinic::Calibration{};
  r.raw_thresholds.temperature = 1.0;
  r.raw_thresholds.class_bias.clear();
  r.raw = clinic::compute_metrics(records_for(scores, truth, cat, r.raw_thresholds), spec);
  std::vector<clinic::EvalRecord> headline_records;
  if (cal) {
    r.calibration = cal;
    r.calibration_source = cal_source;
    headline_records = records_for(scores, truth, cat, *cal);
    r.calibrated = clinic::compute_metrics(headline_records, spec);
  } else {
    r.calibration_source = "none";
    headline_records = records_for(scores, truth, cat, r.raw_thresholds);
  }
  r.breakdowns = clinic::compute_breakdowns(headline_records, spec);
  if (answers != 0) {
    std::vector<clinic::LabelRow> labels;
    for (const auto& row : scores.rows) labels.push_back(row.label);
    r.answers = check_answers(model, cat, cal ? *cal : clinic::Calibration{}, labels, lang, static_cast<int>(threads),
                              answers < 0 ? 0 : answers, answer_temp, (fs::path(out_dir) / "answers.csv").string(),
                              with_patient);
  }
  r.seconds = seconds;
  r.scores_file = scores_out;

  const auto rel_png = encode_png(clinic::draw_reliability(r.raw, r.calibrated ? &*r.calibrated : nullptr));
  const auto conf_png = encode_png(clinic::draw_confusion(
      r.headline(), r.class_ids, std::string(r.headline_calibrated() ? "CALIBRATED" : "RAW") + " - " + split));
  const std::string json_text = clinic::eval_json(r);
  write_file((fs::path(out_dir) / "reliability.png").string(), std::string(rel_png.begin(), rel_png.end()));
  write_file((fs::path(out_dir) / "confusion.png").string(), std::string(conf_png.begin(), conf_png.end()));
  write_file((fs::path(out_dir) / "metrics.json").string(), json_text);
  write_file((fs::path(out_dir) / "report.html").string(), clinic::eval_html(r, rel_png, conf_png));

  if (json) {
    std::fputs(json_text.c_str(), stdout);
  } else {
    std::fputs(clinic::eval_text(r).c_str(), stdout);
    std::printf("\nWrote %s/{%s%smetrics.json, reliability.png, confusion.png, report.html}\n", out_dir.c_str(),
                scores_out.empty() ? "" : "scores.csv, ", r.answers ? "answers.csv, " : "");
  }
  return 0;
}

}  // namespace sg::app
