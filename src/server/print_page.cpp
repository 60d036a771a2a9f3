#include "server/print_page.h"

#include <cmath>
#include <cstdio>

#include "clinic/language.h"
#include "clinic/report.h"
#include "server/util.h"

namespace sg::server {

using nlohmann::ordered_json;

namespace {

std::string esc(const std::string& s) { return clinic::html_escape(s); }

// A string field of `j`, "" when absent or not a string (the stored report is
// data from an older build at worst; a missing field prints as empty).
std::string str(const ordered_json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

std::string percent(double p) {
  char b[16];
  std::snprintf(b, sizeof b, p < 0.01 ? "%.1f%%" : "%.0f%%", 100.0 * p);
  return b;
}

struct Words {
  const char *title, *draft, *reviewed, *case_id, *created, *model, *patient, *age, *sex, *site, *history, *unknown,
      *photo, *quality, *measured, *red_flags, *differential, *rank, *condition, *probability, *kind, *uncertainty,
      *answers, *follow_ups, *question, *answer, *next_steps, *decision, *confirm, *correct, *diagnosis, *notes,
      *reviewer, *date, *sign, *not_assessed;
};

const Words kEn{"Skin consultation report",
                "DRAFT: awaiting clinician review. Not a diagnosis.",
                "Reviewed by a clinician",
                "Case",
                "Created",
                "Model",
                "Patient",
                "Age",
                "Sex",
                "Site",
                "History",
                "not given",
                "Photo",
                "Photo quality",
                "Measured from the photo",
                "Red flags",
                "Differential (the model's probabilities)",
                "#",
                "Condition",
                "Probability",
                "Kind",
                "Uncertainty",
                "The model's answers",
                "Follow-up questions",
                "Q",
                "A",
                "Next steps",
                "Clinician's decision",
                "confirmed",
                "corrected to",
                "Diagnosis",
                "Notes",
                "Clinician",
                "Date",
                "Signature",
                "The photo was not assessed by the model (see photo quality)."};

const Words kJa{"皮膚相談レポート",
                "下書き：臨床医のレビュー待ち。診断ではありません。",
                "臨床医レビュー済み",
                "症例",
                "作成日時",
                "モデル",
                "患者",
                "年齢",
                "性別",
                "部位",
                "経過",
                "記載なし",
                "写真",
                "写真の品質",
                "写真からの計測",
                "要注意所見",
                "鑑別診断（モデルの確率）",
                "#",
                "疾患",
                "確率",
                "種別",
                "不確かさ",
                "モデルの回答",
                "追加の質問",
                "問",
                "答",
                "次のステップ",
                "臨床医の判断",
                "確認",
                "訂正",
                "診断",
                "メモ",
                "臨床医",
                "日付",
                "署名",
                "写真はモデルで評価されていません（写真の品質を参照）。"};

void row(std::string& h, const char* k, const std::string& v) {
  h += "<tr><th>" + esc(k) + "</th><td>" + esc(v) + "</td></tr>\n";
}

}  // namespace

std::string print_page(const ordered_json& v, const std::vector<uint8_t>& photo_jpeg) {
  const bool ja = str(v, "language") == "ja";
  const Words& w = ja ? kJa : kEn;
  const bool reviewed = str(v, "status") == "reviewed";
  const ordered_json none = ordered_json::object();
  auto obj = [&](const ordered_json& j, const char* key) -> const ordered_json& {
    auto it = j.find(key);
    return it != j.end() && (it->is_object() || it->is_array()) ? *it : none;
  };
  auto or_unknown = [&](const std::string& s) { return s.empty() ? std::string(w.unknown) : s; };

  std::string h;
  h += "<!doctype html>\n<html lang=\"" + std::string(ja ? "ja" : "en") + "\"><head><meta charset=\"utf-8\">\n";
  h += "<title>" + esc(w.title) + " " + esc(str(v, "case_id")) + "</title>\n";
  h += "<link rel=\"stylesheet\" href=\"/print.css\"></head>\n<body>\n";
  h += "<h1>" + esc(w.title) + "</h1>\n";
  h += reviewed ? "<p class=\"status reviewed\">" + esc(str(v, "status_text")) + "</p>\n"
                : "<p class=\"status draft\">" + esc(w.draft) + "</p>\n";

  h += "<table class=\"meta\">\n";
  row(h, w.case_id, str(v, "case_id"));
  row(h, w.created, str(v, "case_created"));
  row(h, w.model, str(obj(v, "model"), "name"));
  h += "</table>\n";

  // Patient and photo side by side.
  const ordered_json& p = obj(v, "patient");
  h += "<div class=\"top\"><section><h2>" + esc(w.patient) + "</h2><table>\n";
  const auto age = p.find("age");
  row(h, w.age, age != p.end() && age->is_number_integer() ? std::to_string(age->get<int64_t>()) : w.unknown);
  row(h, w.sex, or_unknown(str(p, "sex")));
  row(h, w.site, or_unknown(str(p, "site")));
  row(h, w.history, or_unknown(str(p, "history")));
  h += "</table>\n";
  const ordered_json& q = obj(v, "quality");
  h += "<h2>" + esc(w.quality) + "</h2><p>" + esc(str(q, "verdict")) + "</p>\n";
  for (const auto& a : obj(q, "advice"))
    if (a.is_string()) h += "<p class=\"advice\">" + esc(a.get<std::string>()) + "</p>\n";
  const ordered_json& measured = obj(obj(v, "findings"), "measured");
  if (!str(measured, "summary").empty())
    h += "<h2>" + esc(w.measured) + "</h2><p>" + esc(str(measured, "summary")) + "</p>\n";
  h += "</section>\n";
  if (!photo_jpeg.empty())
    h += "<figure><img alt=\"" + esc(w.photo) + "\" src=\"data:image/jpeg;base64," +
         base64_encode(photo_jpeg.data(), photo_jpeg.size()) + "\"></figure>\n";
  h += "</div>\n";

  // Red flags first: they must not be missed on paper either.
  const ordered_json& flags = obj(v, "red_flags");
  if (!str(flags, "text").empty()) {
    const auto urgent = flags.find("refer_urgently");
    const bool refer = urgent != flags.end() && urgent->is_boolean() && urgent->get<bool>();
    h += "<section class=\"flags" + std::string(refer ? " urgent" : "") + "\"><h2>" + esc(w.red_flags) + "</h2><p>" +
         esc(str(flags, "text")) + "</p></section>\n";
  }

  const ordered_json& dd = obj(v, "differential");
  const ordered_json& cands = obj(dd, "candidates");
  if (cands.is_array() && !cands.empty()) {
    h += "<section><h2>" + esc(w.differential) + "</h2>\n<table class=\"dd\"><tr><th>" + esc(w.rank) + "</th><th>" +
         esc(w.condition) + "</th><th>" + esc(w.probability) + "</th><th>" + esc(w.kind) + "</th></tr>\n";
    for (const auto& c : cands) {
      if (!c.is_object()) continue;
      const auto pr = c.find("probability");
      const double prob = pr != c.end() && pr->is_number() ? pr->get<double>() : NAN;
      const auto rk = c.find("rank");
      const auto flag = c.find("red_flag");
      const bool red = flag != c.end() && flag->is_boolean() && flag->get<bool>();
      h += std::string("<tr") + (red ? " class=\"flag\"" : "") + "><td>" +
           (rk != c.end() && rk->is_number_integer() ? std::to_string(rk->get<int64_t>()) : "") + "</td><td>" +
           esc(str(c, "name")) + (red ? " &#9873;" : "") + "</td><td>" +
           (std::isfinite(prob) ? percent(prob) : "") + "</td><td>" + esc(str(c, "malignancy")) + "</td></tr>\n";
    }
    h += "</table>\n";
    if (!str(dd, "uncertainty_text").empty())
      h += "<p><b>" + esc(w.uncertainty) + ":</b> " + esc(str(dd, "uncertainty_text")) + "</p>\n";
    if (const std::string at = str(dd, "scored_at"); !at.empty())  // absent in reports made before it existed
      h += "<p>" +
           esc(clinic::score_context_text(
               at == "first_answer" ? clinic::ScoreContext::FirstAnswer : clinic::ScoreContext::ScoreQuestion,
               ja ? clinic::Language::Ja : clinic::Language::En)) +
           "</p>\n";
    h += "</section>\n";
  } else {
    h += "<p>" + esc(w.not_assessed) + "</p>\n";
  }

  // `first_note`: shown under the first answer (the report's note when the
  // description names another condition than the differential's top).
  auto qa = [&](const char* title, const std::vector<std::pair<std::string, std::string>>& pairs,
                const std::string& first_note = "") {
    if (pairs.empty()) return;
    h += "<section><h2>" + esc(title) + "</h2>\n<dl>\n";
    for (size_t i = 0; i < pairs.size(); ++i) {
      h += "<dt>" + esc(w.question) + ": " + esc(pairs[i].first) + "</dt><dd>" + esc(pairs[i].second) + "</dd>\n";
      if (i == 0 && !first_note.empty()) h += "<dd class=\"note\">" + esc(first_note) + "</dd>\n";
    }
    h += "</dl></section>\n";
  };
  std::vector<std::pair<std::string, std::string>> answers, follow_ups;
  for (const auto& a : obj(v, "model_answers")) answers.emplace_back(str(a, "question"), str(a, "answer"));
  std::string open_question;
  for (const auto& m : obj(v, "messages")) {
    if (str(m, "role") == "user") open_question = str(m, "content");
    else follow_ups.emplace_back(open_question, str(m, "content"));
  }
  qa(w.answers, answers, str(obj(obj(v, "findings"), "description_names"), "note"));
  qa(w.follow_ups, follow_ups);

  const ordered_json& steps = obj(v, "next_steps");
  if (steps.is_array() && !steps.empty()) {
    h += "<section><h2>" + esc(w.next_steps) + "</h2><ul>\n";
    for (const auto& s : steps)
      h += "<li>" + esc(s.is_string() ? s.get<std::string>() : str(s, "text")) + "</li>\n";
    h += "</ul></section>\n";
  }

  // The clinician's decision: filled in when reviewed, else lines to sign.
  h += "<section class=\"review\"><h2>" + esc(w.decision) + "</h2><table>\n";
  const ordered_json& rv = obj(v, "review");
  if (reviewed && rv.is_object()) {
    row(h, w.diagnosis,
        std::string(str(rv, "decision") == "confirm" ? w.confirm : w.correct) + ": " + str(rv, "diagnosis_name"));
    row(h, w.notes, str(rv, "notes"));
    row(h, w.reviewer, str(rv, "reviewer"));
    row(h, w.date, str(rv, "created"));
  } else {
    for (const char* k : {w.diagnosis, w.notes, w.reviewer, w.date, w.sign})
      h += "<tr><th>" + esc(k) + "</th><td class=\"blank\"></td></tr>\n";
  }
  h += "</table></section>\n";
  h += "<p class=\"disclaimer\">" + esc(str(v, "disclaimer")) + "</p>\n</body></html>\n";
  return h;
}

}  // namespace sg::server
