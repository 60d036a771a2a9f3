#include "app/eval_common.h"

#include "clinic/answer_check.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "app/progress.h"
#include "clinic/consultation.h"
#include "clinic/report.h"
#include "clinic/splits.h"
#include "core/error.h"
#include "core/threads.h"
#include "formats/image.h"
#include "model/skingpt.h"

namespace sg::app {

namespace fs = std::filesystem;

std::vector<clinic::LabelRow> load_split(const std::string& csv, const std::string& split, int64_t limit) {
  if (csv.empty()) throw Error("give --data CSV (a labels file: image,dx,split,... as in ../shared/data/ham10000)");
  if (split.empty()) throw Error("give --split NAME (e.g. ham10000_val or isic2018_task3_test)");
  if (limit < 0) throw Error("--limit must be >= 0");
  auto rows = clinic::select_split(clinic::read_labels_csv(csv), split, csv);
  if (limit > 0 && static_cast<int64_t>(rows.size()) > limit) rows.resize(static_cast<size_t>(limit));
  for (const auto& r : rows) {
    std::error_code ec;
    if (!fs::is_regular_file(r.image_path, ec))
      throw Error(csv + ":" + std::to_string(r.line) + ": image '" + r.image + "' not found (looked for " +
                  r.image_path + ")");
  }
  return rows;
}

std::vector<int> truth_indices(const std::vector<clinic::LabelRow>& rows, const clinic::Catalogue& cat,
                               const std::string& file) {
  std::vector<int> t;
  t.reserve(rows.size());
  for (const auto& r : rows) {
    const auto i = cat.index_of(r.dx);
    if (!i) {
      std::string ids;
      for (const auto& id : cat.ids()) ids += (ids.empty() ? "" : ", ") + id;
      throw Error(file + ":" + std::to_string(r.line) + ": dx '" + r.dx + "' is not a condition of the catalogue (" +
                  cat.source() + ": " + ids + ")");
    }
    t.push_back(static_cast<int>(*i));
  }
  return t;
}

clinic::ScoresFile score_split(const std::string& model_dir, const clinic::Catalogue& cat,
                               std::vector<clinic::LabelRow> rows, const std::string& split, clinic::Language lang,
                               int threads, double* seconds, bool with_patient) {
  if (threads < 1 || threads > 256) throw Error("--threads must be in 1..256");
  auto model = SkinGptModel::load(model_dir);
  ThreadPool pool(threads);
  // Raw scores only: the calibration does not change score_image().
  clinic::Consultant consultant(*model, cat, clinic::Calibration{}, pool);
  clinic::ScoresFile out;
  out.condition_ids = cat.ids();
  Progress bar("scoring", rows.size(), "images");
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < rows.size(); ++i) {
    clinic::ScoredRow s;
    s.label = std::move(rows[i]);
    const Image img = decode_image(s.label.image_path);
    s.loglik = consultant.score_image(img, lang, with_patient ? clinic::patient_of(s.label, lang) : clinic::PatientInfo{});
    if (s.loglik.size() != cat.size()) throw Error("internal: score_image returned the wrong number of scores");
    s.label.split = split;
    s.label.extra.clear();
    out.rows.push_back(std::move(s));
    bar.update(i + 1);
  }
  bar.finish();
  if (seconds) *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

clinic::AnswerCheck check_answers(const std::string& model_dir, const clinic::Catalogue& cat,
                                  const clinic::Calibration& cal, const std::vector<clinic::LabelRow>& rows,
                                  clinic::Language lang, int threads, int64_t limit, float temperature,
                                  const std::string& csv_path, bool with_patient) {
  if (threads < 1 || threads > 256) throw Error("--threads must be in 1..256");
  auto model = SkinGptModel::load(model_dir);
  ThreadPool pool(threads);
  clinic::Consultant consultant(*model, cat, cal, pool);
  clinic::ConsultOptions opt;
  opt.question_limit = 1;
  opt.sampling.temperature = temperature;
  const size_t n = limit > 0 ? std::min(rows.size(), static_cast<size_t>(limit)) : rows.size();
  clinic::AnswerCheck out;
  out.temperature = temperature;
  std::string csv = "image_id,dx,top_scored,named,margin,features_stated,features_agreed,answer\n";
  Progress bar("answers", n, "images");
  for (size_t i = 0; i < n; ++i) {
    const clinic::Report r =
        consultant.consult(decode_image(rows[i].image_path), with_patient ? clinic::patient_of(rows[i], lang) : clinic::PatientInfo{},
                           lang, opt, rows[i].image);
    bar.update(i + 1);
    if (!r.assessed || r.answers.empty()) continue;
    ++out.n;
    const auto by_score = clinic::by_raw_score(r.differential);
    const double margin = by_score.size() > 1 ? by_score[0]->log_likelihood - by_score[1]->log_likelihood : 0.0;
    const int bin = clinic::AnswerCheck::margin_bin(margin);
    char margin_text[32];
    std::snprintf(margin_text, sizeof margin_text, "%.4f", margin);
    ++out.by_margin_n[bin];
    // Read back as the report reads it (its note under the description).
    const auto names = clinic::description_names(r);
    if (!names) ++out.names_none;
    else {
      const bool top = names->candidate == by_score[0];
      out.names_top_scored += top;
      out.by_margin_names_top[bin] += top;
      out.names_second_scored += by_score.size() > 1 && names->candidate == by_score[1];
      out.names_report_top += names->candidate->rank == 1;
    }
    const auto agree = clinic::concept_agreement(r.answers[0].answer, r.lesion, lang);
    out.features_stated += agree.stated();
    out.features_agreed += agree.agreed();
    csv += clinic::csv_field(rows[i].image_id) + ',' + clinic::csv_field(rows[i].dx) + ',' +
           by_score[0]->id + ',' + (names ? names->candidate->id : std::string()) + ',' + margin_text + ',' +
           std::to_string(agree.stated()) + ',' + std::to_string(agree.agreed()) + ',' +
           clinic::csv_field(r.answers[0].answer) + '\n';
  }
  bar.finish();
  if (!csv_path.empty()) write_file(csv_path, csv);
  return out;
}

clinic::ScoresFile load_scores(const std::string& path, const clinic::Catalogue& cat, const std::string& split,
                               int64_t limit) {
  clinic::ScoresFile f = clinic::read_scores_csv(path);
  std::vector<int> col(cat.size(), -1);
  for (size_t k = 0; k < f.condition_ids.size(); ++k) {
    const auto i = cat.index_of(f.condition_ids[k]);
    if (!i) throw Error(path + ": condition '" + f.condition_ids[k] + "' is not in the catalogue (" + cat.source() + ")");
    col[*i] = static_cast<int>(k);
  }
  for (size_t i = 0; i < cat.size(); ++i)
    if (col[i] < 0) throw Error(path + ": no scores for condition '" + cat[i].id + "' of the catalogue (" +
                                cat.source() + "); score the data again with 'skingpt eval'");
  clinic::ScoresFile out;
  out.condition_ids = cat.ids();
  std::vector<clinic::LabelRow> labels;
  for (auto& r : f.rows) labels.push_back(r.label);
  std::vector<size_t> keep;
  if (split.empty()) {
    for (size_t i = 0; i < f.rows.size(); ++i) keep.push_back(i);
  } else {
    // select_split keeps file order and line numbers (unique per row).
    std::set<int> lines;
    for (const auto& s : clinic::select_split(labels, split, path)) lines.insert(s.line);
    for (size_t i = 0; i < f.rows.size(); ++i)
      if (lines.count(f.rows[i].label.line)) keep.push_back(i);
  }
  if (limit > 0 && static_cast<int64_t>(keep.size()) > limit) keep.resize(static_cast<size_t>(limit));
  for (size_t i : keep) {
    clinic::ScoredRow r;
    r.label = f.rows[i].label;
    for (size_t k = 0; k < cat.size(); ++k) r.loglik.push_back(f.rows[i].loglik[col[k]]);
    out.rows.push_back(std::move(r));
  }
  if (out.rows.empty()) throw Error(path + ": no scored rows" + (split.empty() ? "" : " of split " + split));
  return out;
}

std::string self_exe_path() {
  std::error_code ec;
  const auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error(path + ": cannot write");
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f.flush()) throw Error(path + ": write failed");
}

}  // namespace sg::app
