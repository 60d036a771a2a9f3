// The consultation (issue 6): one photo, the paper's four questions in one
// conversation (image encoded once), the differential scored by the model's
// own likelihood of "This could be a skin disease image of <condition>" where
// its first answer says that, calibrated, with photo quality checked first
// and the project's own lesion measurements beside the model's words.
// Produces a Report (report.h renders it as text, JSON or HTML).
//
// For evaluation and calibration tools: score_image() is exactly the scoring
// consult() does with its default options (the same greedy first answer,
// patient details, prefix and phrases), so numbers measured with it hold for
// the report.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clinic/catalogue.h"
#include "clinic/differential.h"
#include "clinic/labels.h"
#include "clinic/language.h"
#include "clinic/lesion.h"
#include "clinic/quality.h"
#include "clinic/scoring.h"
#include "formats/image.h"
#include "model/skingpt.h"

namespace sg {
class ThreadPool;
}

namespace sg::clinic {

struct PatientInfo {
  std::optional<int> age;
  std::string sex, site, history;
  bool empty() const { return !age && sex.empty() && site.empty() && history.empty(); }
};

// The wording of the consultation in one language.
struct ConsultationScript {
  std::string score_question;          // asked (not recorded) before scoring
  std::string answer_prefix;           // "This could be a skin disease image of "
  std::vector<std::string> questions;  // the paper's four questions, in order
};
const ConsultationScript& consultation_script(Language lang);
// The answer texts scored for each catalogue condition (the phrases in `lang`).
std::vector<std::string> scoring_phrases(const Catalogue& cat, Language lang);
// "Patient: 54-year-old woman; site: back; history: ..." or "" when empty.
std::string patient_context(const PatientInfo& p, Language lang);
// A labelled row's age, sex and site as a user would give them to describe
// (--age/--sex/--site), in `lang`: the training texts' patient context and
// what eval --patient asks with.
PatientInfo patient_of(const LabelRow& row, Language lang);
// The consultation's first question, after the patient context when there is one.
std::string first_question(const PatientInfo& p, Language lang);

struct ConsultOptions {
  int64_t max_new_tokens = 300;        // per answer
  // Greedy by default: a report must say the same thing for the same photo,
  // and the answers agree more often with the scored differential (measured
  // in models/skingpt-mini/README.md). SkinGPT-4 sampled (temperature 1.0,
  // top-p 0.9); `describe --temp 1` restores that.
  SamplerParams sampling{0.0f, 0, 0.9f, 1.0f, 0};
  bool ask_questions = true;           // false: the first question only (the differential is read from its answer)
  size_t question_limit = SIZE_MAX;    // ask only the first N of the four questions
  QualityThresholds quality;
  // Progress: called with a stage ("quality", "encode", "score", "question 1/4", ...).
  std::function<void(const std::string&)> on_stage;
  // Streams each answer's text as it is generated (question index, text piece).
  std::function<void(int, const std::string&)> on_text;
};

struct ModelAnswer {
  std::string question;
  std::string answer;
};

struct Timings {
  double quality_ms = 0, encode_ms = 0, score_ms = 0, questions_ms = 0, total_ms = 0;
};

constexpr int kReportSchemaVersion = 1;

struct Report {
  int schema_version = kReportSchemaVersion;
  Language language = Language::En;
  std::string image_name;              // file name only (no directories)
  int image_width = 0, image_height = 0;
  PatientInfo patient;
  QualityReport quality;
  bool assessed = false;               // false: refused photo, the model was not run
  LesionFeatures lesion;               // measured (also for refused photos when possible)
  std::vector<ModelAnswer> answers;    // the four questions and the model's answers
  Differential differential;           // empty when !assessed
  bool calibrated = false;             // calibration.json for this language was used
  Calibration calibration;             // the parameters used (defaults when !calibrated)
  std::string calibration_source;      // path or "none"
  std::string catalogue_source;
  std::string model_name;              // model folder name (no directories)
  Timings timings;
  const Catalogue* catalogue = nullptr;  // for names; must outlive the report
};

class Consultant {
 public:
  // `model` and `catalogue` must outlive the Consultant. Throws when the
  // calibration's conditions do not match the catalogue.
  Consultant(const SkinGptModel& model, const Catalogue& catalogue, Calibration calibration, ThreadPool& pool,
             int64_t n_ctx = 2048);
  ~Consultant();

  // Marks the calibration as fitted (calibration.json found) or defaults; only
  // changes what the report says.
  void set_calibration_source(std::string source, bool calibrated);

  // Raw log-likelihood of each catalogue condition (catalogue order) as
  // consult() scores it: the first answer generated greedily, the image
  // encoded once. Deterministic. Does not check photo quality. `where`, when
  // given, receives the context the scores were read in.
  // `patient` goes before the first question as in consult().
  std::vector<double> score_image(const Image& img, Language lang = Language::En, const PatientInfo& patient = {},
                                  ScoreContext* where = nullptr);
  // Same from an already preprocessed image (CHW at the vision model's size).
  std::vector<double> score_preprocessed(const float* chw, Language lang = Language::En,
                                         const PatientInfo& patient = {}, ScoreContext* where = nullptr);

  // The whole consultation. `image_name` is only shown in the report.
  Report consult(const Image& img, const PatientInfo& patient, Language lang, const ConsultOptions& opt = {},
                 const std::string& image_name = "");

  const Catalogue& catalogue() const { return cat_; }
  const Calibration& calibration() const { return cal_; }
  int64_t image_encodes() const { return encodes_; }  // total vision-encoder runs (for tests)
  // The image embeddings of the last consultation (empty before the first):
  // a caller that continues the case later (follow-up questions) keeps them
  // instead of running the vision encoder on the photo again.
  const std::vector<float>& image_embeddings() const;

 private:
  struct FirstTurn {
    std::string answer;
    std::vector<double> loglik;
    ScoreContext scored_at = ScoreContext::ScoreQuestion;
    double score_ms = 0;
  };
  // Asks `question` (the first, in a conversation holding only the image),
  // reads the scores where the answer names a diagnosis, and leaves the
  // conversation holding that one turn.
  FirstTurn first_turn(const std::string& question, Language lang, const ChatOptions& co,
                       const std::function<void(const std::string&)>& on_stage = {});

  const SkinGptModel& m_;
  const Catalogue& cat_;
  Calibration cal_;
  ThreadPool& pool_;
  std::unique_ptr<Conversation> conv_;
  std::string cal_source_ = "none";
  bool calibrated_ = false;
  int64_t encodes_ = 0;
};

// Measures photo quality and the lesion without any model; the refused-photo
// report (and what consult() returns for a refused photo).
Report assess_only(const Image& img, const PatientInfo& patient, Language lang, const Catalogue& cat,
                   const QualityThresholds& t = {}, const std::string& image_name = "");

// Model folder search for the CLI: explicit --model; $SKINGPT_MODEL;
// ./models/skingpt-mini; <exe dir>/../models/skingpt-mini. Returns the first
// folder holding vision.gguf and llm.gguf, or throws sg::Error saying the
// default model is not installed and how to point --model at one.
std::string find_model_dir(const std::string& explicit_dir, const std::string& exe_path);

}  // namespace sg::clinic
