// What `skingpt eval` and `skingpt calibrate` share: loading a labelled split,
// mapping its diagnoses to catalogue conditions, scoring every image once
// with the model (Consultant::score_image, catalogue order) behind a progress
// bar, and reading cached scores (scores.csv) back in catalogue order.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clinic/calibrate.h"
#include "clinic/catalogue.h"
#include "clinic/eval_report.h"
#include "clinic/labels.h"
#include "clinic/language.h"

namespace sg::app {

// The labelled rows of `split` in `csv` (derived splits as in clinic/splits.h),
// the first `limit` of them when limit > 0. Checks that every image file exists.
std::vector<clinic::LabelRow> load_split(const std::string& csv, const std::string& split, int64_t limit);

// Catalogue index of each row's dx; an unknown dx is an error naming file:line.
std::vector<int> truth_indices(const std::vector<clinic::LabelRow>& rows, const clinic::Catalogue& cat,
                               const std::string& file);

// Scores every row with the model in `model_dir` (each image decoded and
// encoded once), with a progress bar on stderr. Returns the scores in
// catalogue order; rows keep their labels with split set to `split`. With
// `with_patient`, each row's patient_of() goes before the first question.
clinic::ScoresFile score_split(const std::string& model_dir, const clinic::Catalogue& cat,
                               std::vector<clinic::LabelRow> rows, const std::string& split, clinic::Language lang,
                               int threads, double* seconds = nullptr, bool with_patient = false);

// Asks the first consultation question for the first `limit` rows (all when
// 0) and reads each answer back (clinic/answer_check.h): does it name the
// model's top-scored condition, and do its stated features match the
// measurement? `cal` is the calibration the report would use; answers are
// sampled at `temperature` (0 = greedy) with top-p 0.9, seed 0. With
// `csv_path`, writes one row per image (image_id, dx, top_scored, named,
// features stated/agreed, answer) for reading the answers themselves.
clinic::AnswerCheck check_answers(const std::string& model_dir, const clinic::Catalogue& cat,
                                  const clinic::Calibration& cal, const std::vector<clinic::LabelRow>& rows,
                                  clinic::Language lang, int threads, int64_t limit, float temperature,
                                  const std::string& csv_path = "", bool with_patient = false);

// A scores file reordered to the catalogue (columns matched by condition id);
// a file for other conditions is an error. Rows filtered to `split` unless empty.
clinic::ScoresFile load_scores(const std::string& path, const clinic::Catalogue& cat, const std::string& split,
                               int64_t limit);

// The executable's own path (for the default model lookup).
std::string self_exe_path();

void write_file(const std::string& path, const std::string& bytes);

}  // namespace sg::app
