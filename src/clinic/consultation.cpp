#include "clinic/consultation.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "core/threads.h"

namespace sg::clinic {

namespace fs = std::filesystem;

const ConsultationScript& consultation_script(Language lang) {
  // English: SkinGPT-4's clinical evaluation questions (DESIGN.md §3) and the
  // answer form its training texts use. The scoring question and prefix are a
  // contract with training: a model trained on other wording should be
  // calibrated (skingpt calibrate), which absorbs part of the difference.
  static const ConsultationScript en{
      "What skin disease is shown in this image?",
      "This could be a skin disease image of ",
      {"Could you describe the skin disease in this image for me?",
       "Please provide a paragraph listing additional features you observed in the image.",
       "Based on the previous information, please provide a detailed explanation of the cause of this skin disease.",
       "What treatment and medication should be recommended for this case?"}};
  static const ConsultationScript ja{
      "この画像に写っている皮膚疾患は何ですか？",
      "これは次の皮膚疾患の画像と考えられます：",
      {"この画像の皮膚疾患について説明していただけますか？日本語で答えてください。",
       "画像で観察されたその他の特徴を一段落にまとめて挙げてください。",
       "これまでの情報に基づいて、この皮膚疾患の原因を詳しく説明してください。",
       "この症例にはどのような治療や薬が推奨されますか？"}};
  return lang == Language::Ja ? ja : en;
}

std::vector<std::string> scoring_phrases(const Catalogue& cat, Language lang) {
  std::vector<std::string> v;
  for (const auto& c : cat.conditions()) v.push_back(c.phrase.get(lang));
  return v;
}

namespace {

// Text typed by a user goes into the prompt: keep it on one line, without the
// template's separator, and short.
std::string clean(const std::string& s, size_t max = 300) {
  std::string o;
  for (char c : s) o += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  for (size_t p; (p = o.find("###")) != std::string::npos;) o.replace(p, 3, " ");
  for (const char* tag : {"<ImageHere>", "<Img>", "</Img>"})
    for (size_t p; (p = o.find(tag)) != std::string::npos;) o.erase(p, std::char_traits<char>::length(tag));
  const size_t a = o.find_first_not_of(' '), b = o.find_last_not_of(' ');
  o = a == std::string::npos ? "" : o.substr(a, b - a + 1);
  if (o.size() > max) {
    size_t cut = max;
    while (cut > 0 && (static_cast<unsigned char>(o[cut]) & 0xC0) == 0x80) --cut;  // UTF-8 boundary
    o = o.substr(0, cut) + "…";
  }
  return o;
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

std::string base_name(const std::string& p) {
  if (p.empty()) return "";
  return fs::path(p).filename().string();
}

}  // namespace

std::string patient_context(const PatientInfo& p, Language lang) {
  if (p.empty()) return "";
  const bool ja = lang == Language::Ja;
  std::string s = ja ? "（患者情報：" : "(Patient information: ";
  std::string parts;
  auto add = [&](const std::string& x) {
    if (x.empty()) return;
    if (!parts.empty()) parts += ja ? "、" : "; ";
    parts += x;
  };
  const std::string sex = clean(p.sex, 40);
  if (p.age) add(ja ? std::to_string(*p.age) + "歳" : std::to_string(*p.age) + " years old");
  if (!sex.empty()) add(ja ? "性別：" + sex : "sex: " + sex);
  if (!p.site.empty()) add((ja ? "部位：" : "site: ") + clean(p.site, 100));
  if (!p.history.empty()) add((ja ? "経過：" : "history: ") + clean(p.history, 300));
  return s + parts + (ja ? "）" : ".)");
}

PatientInfo patient_of(const LabelRow& row, Language lang) {
  PatientInfo p;
  if (std::isfinite(row.age) && row.age >= 0 && row.age <= 150) p.age = static_cast<int>(row.age);
  if (!row.sex.empty()) p.sex = lang == Language::Ja ? (row.sex == "male" ? "男性" : "女性") : row.sex;
  p.site = row.site;  // HAM10000's English site names, as a user would type them
  return p;
}

std::string first_question(const PatientInfo& p, Language lang) {
  const std::string context = patient_context(p, lang), &q = consultation_script(lang).questions[0];
  return context.empty() ? q : context + " " + q;
}

Consultant::Consultant(const SkinGptModel& model, const Catalogue& catalogue, Calibration calibration,
                       ThreadPool& pool, int64_t n_ctx)
    : m_(model), cat_(catalogue), cal_(std::move(calibration)), pool_(pool) {
  if (cat_.size() < 2) throw Error("the condition catalogue needs at least 2 conditions");
  if (!cal_.class_bias.empty() && cal_.class_bias.size() != cat_.size())
    throw Error("calibration has " + std::to_string(cal_.class_bias.size()) + " class biases for " +
                std::to_string(cat_.size()) + " catalogue conditions");
  calibrated_probabilities(std::vector<double>(cat_.size(), 0.0), cal_);  // validates the temperature
  conv_ = std::make_unique<Conversation>(m_, pool_, n_ctx);
}

Consultant::~Consultant() = default;

void Consultant::set_calibration_source(std::string source, bool calibrated) {
  cal_source_ = std::move(source);
  calibrated_ = calibrated;
}

Consultant::FirstTurn Consultant::first_turn(const std::string& question, Language lang, const ChatOptions& co,
                                             const std::function<void(const std::string&)>& on_stage) {
  const ConsultationScript& s = consultation_script(lang);
  const auto phrases = scoring_phrases(cat_, lang);
  FirstTurn f;
  f.answer = co.max_new_tokens >= 16 ? conv_->ask(question, co) : "";
  if (on_stage) on_stage("score");
  const auto t0 = std::chrono::steady_clock::now();
  // Scored in the conversation as it was before the answer: the image alone.
  std::vector<float> image = conv_->image_embeddings();
  conv_->reset();
  conv_->set_image_embeddings(std::move(image));
  if (const size_t at = f.answer.find(s.answer_prefix); at != std::string::npos) {
    f.loglik = conv_->score_answers(question, f.answer.substr(0, at + s.answer_prefix.size()), phrases);
    f.scored_at = ScoreContext::FirstAnswer;
  } else {
    f.loglik = conv_->score_answers(s.score_question, s.answer_prefix, phrases);
  }
  f.score_ms = ms_since(t0);
  conv_->add_turn(question, f.answer);
  return f;
}

std::vector<double> Consultant::score_preprocessed(const float* chw, Language lang, const PatientInfo& patient,
                                                   ScoreContext* where) {
  conv_->reset();
  conv_->set_image(chw);
  ++encodes_;
  const ConsultOptions defaults;
  ChatOptions co;
  co.max_new_tokens = defaults.max_new_tokens;
  co.sampling = defaults.sampling;
  FirstTurn f = first_turn(first_question(patient, lang), lang, co);
  if (where) *where = f.scored_at;
  return std::move(f.loglik);
}

std::vector<double> Consultant::score_image(const Image& img, Language lang, const PatientInfo& patient,
                                            ScoreContext* where) {
  const auto chw = m_.preprocess(img);
  return score_preprocessed(chw.data(), lang, patient, where);
}

Report assess_only(const Image& img, const PatientInfo& patient, Language lang, const Catalogue& cat,
                   const QualityThresholds& t, const std::string& image_name) {
  Report r;
  r.language = lang;
  r.image_name = base_name(image_name);
  r.image_width = img.width;
  r.image_height = img.height;
  r.patient = patient;
  const LesionMask mask = segment_lesion(img);
  r.quality = assess_quality(img, t, &mask);
  r.lesion = measure_lesion(img, mask);
  r.catalogue_source = cat.source();
  r.catalogue = &cat;
  r.calibration_source = "none";
  return r;
}

Report Consultant::consult(const Image& img, const PatientInfo& patient, Language lang, const ConsultOptions& opt,
                           const std::string& image_name) {
  const auto t0 = std::chrono::steady_clock::now();
  auto stage = [&](const std::string& s) {
    if (opt.on_stage) opt.on_stage(s);
  };
  stage("quality");
  Report r = assess_only(img, patient, lang, cat_, opt.quality, image_name);
  r.timings.quality_ms = ms_since(t0);
  r.calibration = cal_;
  r.calibrated = calibrated_;
  r.calibration_source = cal_source_;
  if (r.quality.refused()) {  // the model is not run on a photo too poor to judge
    r.timings.total_ms = ms_since(t0);
    return r;
  }

  stage("encode");
  auto t = std::chrono::steady_clock::now();
  const auto chw = m_.preprocess(img);
  const ConsultationScript& s = consultation_script(lang);
  conv_->reset();
  conv_->set_image(chw.data());
  ++encodes_;
  r.timings.encode_ms = ms_since(t);

  // The first answer, then the differential read where it names a
  // diagnosis, then the other questions.
  t = std::chrono::steady_clock::now();
  const size_t n_questions = opt.ask_questions ? std::min(s.questions.size(), std::max<size_t>(1, opt.question_limit)) : 1;
  double score_ms = 0;
  for (size_t i = 0; i < n_questions; ++i) {
    stage("question " + std::to_string(i + 1) + "/" + std::to_string(n_questions));
    const std::string q = i == 0 ? first_question(patient, lang) : s.questions[i];
    ChatOptions co;
    // Leave room for the later questions: each answer gets at most its share
    // of what is left of the context.
    const int64_t left = conv_->context().n_ctx() - conv_->context().n_past();
    const int64_t share = (left - 64 * static_cast<int64_t>(n_questions - i)) / static_cast<int64_t>(n_questions - i);
    co.max_new_tokens = std::min<int64_t>(opt.max_new_tokens, share);
    co.sampling = opt.sampling;
    co.sampling.seed = opt.sampling.seed + i;
    if (opt.on_text) co.on_text = [&, i](const std::string& piece) {
      opt.on_text(static_cast<int>(i), piece);
      return true;
    };
    ModelAnswer a;
    a.question = q;
    if (i == 0) {
      FirstTurn f = first_turn(q, lang, co, opt.on_stage);
      r.differential = build_differential(f.loglik, cat_, cal_);
      r.differential.scored_at = f.scored_at;
      a.answer = std::move(f.answer);
      score_ms = f.score_ms;
    } else if (co.max_new_tokens >= 16) {
      a.answer = conv_->ask(q, co);
    }  // else: no room left in the context; the report says it was not asked
    r.answers.push_back(std::move(a));
  }
  r.assessed = true;
  r.timings.questions_ms = ms_since(t) - score_ms;
  r.timings.score_ms = score_ms;
  r.timings.total_ms = ms_since(t0);
  return r;
}

const std::vector<float>& Consultant::image_embeddings() const {
  static const std::vector<float> none;
  return conv_ ? conv_->image_embeddings() : none;
}

std::string find_model_dir(const std::string& explicit_dir, const std::string& exe_path) {
  auto complete = [](const fs::path& d) {
    std::error_code ec;
    return fs::is_regular_file(d / "vision.gguf", ec) && fs::is_regular_file(d / "llm.gguf", ec);
  };
  if (!explicit_dir.empty()) {
    std::error_code ec;
    if (!fs::is_directory(explicit_dir, ec))
      throw Error(explicit_dir + ": no such model folder (expected a folder with vision.gguf and llm.gguf)");
    if (!complete(explicit_dir))
      throw Error(explicit_dir + ": not a model folder: it needs vision.gguf and llm.gguf");
    return explicit_dir;
  }
  std::vector<fs::path> tried;
  if (const char* e = std::getenv("SKINGPT_MODEL"); e && *e) {
    if (!complete(e)) throw Error(std::string("$SKINGPT_MODEL=") + e + ": not a model folder (needs vision.gguf and llm.gguf)");
    return e;
  }
  tried.push_back(fs::path("models") / "skingpt-mini");
  if (!exe_path.empty()) tried.push_back(fs::path(exe_path).parent_path() / ".." / "models" / "skingpt-mini");
  for (const auto& d : tried)
    if (complete(d)) return d.lexically_normal().string();
  std::string where;
  for (const auto& d : tried) where += "\n  " + d.lexically_normal().string();
  throw Error(
      "the default model (skingpt-mini) is not installed yet. Looked in $SKINGPT_MODEL and:" + where +
      "\nPoint --model at a folder with vision.gguf and llm.gguf (e.g. made by 'skingpt convert'), or set "
      "SKINGPT_MODEL=DIR.");
}

}  // namespace sg::clinic
