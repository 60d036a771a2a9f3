#include "clinic/report.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "clinic/answer_check.h"
#include "formats/image.h"

namespace sg::clinic {

using nlohmann::ordered_json;

namespace {

// Every label the renderings use, per language.
struct Labels {
  const char* title;
  const char* photo;
  const char* patient;
  const char* years;
  const char* sex;
  const char* site;
  const char* history;
  const char* not_given;
  const char* quality;
  const char* quality_ok;
  const char* quality_warn;
  const char* quality_refuse;
  const char* refused_banner;
  const char* findings;
  const char* model_description;
  const char* model_features;
  const char* measured;
  const char* measured_note;
  const char* differential;
  const char* differential_note;
  const char* rank_col;
  const char* condition_col;
  const char* icd_col;
  const char* prob_col;
  const char* words_col;
  const char* how_sure;
  const char* red_flags;
  const char* red_flag_tag;
  const char* refer_urgently;
  const char* no_red_flags;
  const char* explanation;
  const char* treatment;
  const char* next_steps;
  const char* calibration;
  const char* calibrated_on;
  const char* not_calibrated;
  const char* disclaimer_head;
  const char* status;
  const char* not_asked;
  const char* model;
  const char* catalogue;
  const char* malignant;
  const char* premalignant;
  const char* benign;
  const char* created;
};

const Labels kEn{
    "Skin photo assessment",
    "Photo",
    "Patient",
    " years",
    "sex",
    "site",
    "history",
    "not given",
    "Photo quality",
    "good enough to assess",
    "usable, with warnings",
    "REFUSED: too poor to assess",
    "This photo was not assessed: it is too poor to judge, and a guess from it could be wrong. No diagnosis is "
    "given. Please retake it:",
    "Findings",
    "What the model describes",
    "Additional features the model noted",
    "What the program measured in the photo",
    "(simple image measurements, not a diagnosis: asymmetry, border, colours, size)",
    "Possible conditions (differential)",
    "Probabilities from the model's own scoring of each condition; they add up to 100%.",
    "#",
    "Condition",
    "ICD-10",
    "Probability",
    "In words",
    "How sure is the system?",
    "Red flags",
    "RED FLAG",
    "REFER URGENTLY",
    "No red flag: no malignant or premalignant condition reached the referral threshold.",
    "Explanation (the model's answer about the cause)",
    "Treatment (the model's suggestion, not a prescription)",
    "Next steps",
    "Calibration",
    "Probabilities calibrated on",
    "Probabilities are NOT calibrated (no calibration file for this model and language): treat the percentages as "
    "rough relative scores, not as real frequencies.",
    "Important",
    "Status",
    "(not asked: no room left in the model's context)",
    "Model",
    "Condition list",
    "malignant",
    "premalignant",
    "benign",
    "Created",
};

const Labels kJa{
    "皮膚写真の評価",
    "写真",
    "患者",
    "歳",
    "性別",
    "部位",
    "経過",
    "未入力",
    "写真の品質",
    "評価に十分",
    "評価可能（注意あり）",
    "評価不可：品質が不十分",
    "この写真は評価しませんでした。品質が不十分で、推測すると誤る可能性があるため、診断は示しません。次の点に注意して撮り直してください：",
    "所見",
    "モデルによる説明",
    "モデルが挙げたその他の特徴",
    "プログラムが写真から測定した特徴",
    "（簡単な画像計測であり、診断ではありません：非対称性・境界・色・大きさ）",
    "考えられる疾患（鑑別診断）",
    "各疾患に対するモデル自身の評価から求めた確率です。合計は100%です。",
    "順位",
    "疾患",
    "ICD-10",
    "確率",
    "目安",
    "システムの確信度",
    "警告（レッドフラグ）",
    "要注意",
    "至急、専門医へ紹介してください",
    "警告なし：悪性・前がん病変の確率は紹介の基準に達していません。",
    "説明（原因についてのモデルの回答）",
    "治療（モデルの提案であり、処方ではありません）",
    "今後の対応",
    "較正",
    "確率の較正に使用したデータ",
    "確率は較正されていません（このモデルと言語の較正ファイルがありません）。割合は実際の頻度ではなく、おおまかな相対的な目安として扱ってください。",
    "重要",
    "状態",
    "（未質問：モデルの文脈長が不足）",
    "モデル",
    "疾患リスト",
    "悪性",
    "前がん病変",
    "良性",
    "作成日時",
};

const Labels& L(Language l) { return l == Language::Ja ? kJa : kEn; }

// The report's catalogue (the built-in one when a report was made without).
const Catalogue& catalogue_of(const Report& r) {
  static const Catalogue builtin = Catalogue::builtin();
  return r.catalogue ? *r.catalogue : builtin;
}

std::string pct(double p) {
  char b[16];
  if (p > 0 && p < 0.005) std::snprintf(b, sizeof b, "<1%%");
  else std::snprintf(b, sizeof b, "%.0f%%", 100 * p);
  return b;
}

const char* malignancy_label(Malignancy m, Language lang) {
  const Labels& l = L(lang);
  return m == Malignancy::Malignant ? l.malignant : m == Malignancy::Premalignant ? l.premalignant : l.benign;
}

// Display names of the quality checks and their units.
std::string check_name(const QualityCheck& c, Language lang) {
  static const std::pair<const char*, LocalText> names[] = {
      {"resolution", {"Resolution", "解像度"}},
      {"exposure", {"Exposure", "露出"}},
      {"contrast", {"Contrast", "コントラスト"}},
      {"sharpness", {"Sharpness", "鮮明度"}},
      {"lesion_in_frame", {"Lesion in frame", "病変の写り"}},
  };
  for (const auto& [id, t] : names)
    if (c.id == id) return t.get(lang);
  return c.id;
}
std::string unit_name(const QualityCheck& c, Language lang) {
  if (lang == Language::En) return c.unit;
  static const std::pair<const char*, const char*> units[] = {
      {"px", "ピクセル"},
      {"mean luma 0-255", "平均輝度 0〜255"},
      {"luma std 0-255", "輝度の標準偏差 0〜255"},
      {"fine/coarse detail ratio x100", "細部と粗い構造のエネルギー比 ×100"},
      {"fraction of the frame", "画面に占める割合"},
  };
  for (const auto& [en, ja] : units)
    if (c.unit == en) return ja;
  return c.unit;
}
std::string verdict_word(const QualityCheck& c, Language lang) {
  const bool ja = lang == Language::Ja;
  if (!c.judged) return ja ? "判定せず" : "not judged";
  switch (c.verdict) {
    case Verdict::Ok: return ja ? "良好" : "ok";
    case Verdict::Warn: return ja ? "注意" : "warning";
    case Verdict::Refuse: return ja ? "不可" : "REFUSED";
  }
  return "";
}

std::string catalogue_label(const Report& r) {
  if (r.catalogue_source == "built-in") return r.language == Language::Ja ? "内蔵（既定）" : "built-in (default)";
  return valid_utf8(r.catalogue_source);
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

std::string patient_line(const Report& r) {
  const Labels& l = L(r.language);
  const bool ja = r.language == Language::Ja;
  std::vector<std::string> parts;
  if (r.patient.age) parts.push_back(std::to_string(*r.patient.age) + l.years);
  if (!r.patient.sex.empty()) parts.push_back(std::string(l.sex) + (ja ? "：" : ": ") + r.patient.sex);
  if (!r.patient.site.empty()) parts.push_back(std::string(l.site) + (ja ? "：" : ": ") + r.patient.site);
  if (!r.patient.history.empty()) parts.push_back(std::string(l.history) + (ja ? "：" : ": ") + r.patient.history);
  return parts.empty() ? l.not_given : valid_utf8(join(parts, ja ? "、" : ", "));
}

std::string answer_at(const Report& r, size_t i) {
  return i < r.answers.size() ? valid_utf8(r.answers[i].answer) : "";
}

std::string quality_word(const Report& r) {
  const Labels& l = L(r.language);
  return r.quality.verdict == Verdict::Refuse ? l.quality_refuse
         : r.quality.verdict == Verdict::Warn ? l.quality_warn
                                              : l.quality_ok;
}

std::string red_flag_text(const Report& r) {
  const Catalogue& cat = catalogue_of(r);
  const bool ja = r.language == Language::Ja;
  std::vector<std::string> names;
  for (size_t k : r.differential.red_flags) {
    const auto& c = r.differential.ranked[k];
    names.push_back(cat[c.index].name.get(r.language) + (ja ? "（" : " (") + pct(c.probability) +
                    (ja ? "、" : ", ") + (ja ? "第" + std::to_string(c.rank) + "位" : "rank " + std::to_string(c.rank)) +
                    (ja ? "）" : ")"));
  }
  char thr[16];
  std::snprintf(thr, sizeof thr, "%.0f%%", 100 * r.calibration.red_flag_threshold);
  if (ja)
    return join(names, "、") + "の可能性を否定できません（紹介基準" + thr +
           "以上）。見逃すと害の大きい疾患のため、順位にかかわらず、至急（2週間以内）皮膚科専門医に紹介してください。";
  return join(names, "; ") + " cannot be ruled out" +
         " (at or above the " + thr +
         " referral threshold). Missing it would cause harm, so whatever its rank: refer urgently to a dermatologist "
         "(within two weeks).";
}

}  // namespace

std::optional<DescriptionNames> description_names(const Report& r) {
  if (!r.assessed || r.answers.empty() || r.differential.ranked.empty()) return std::nullopt;
  const Catalogue& cat = catalogue_of(r);
  const auto named = named_condition(r.answers[0].answer, cat, r.language);
  if (!named) return std::nullopt;
  const Candidate* c = nullptr;
  for (const auto& x : r.differential.ranked)
    if (x.index == *named) c = &x;
  if (!c) return std::nullopt;
  DescriptionNames d{c, ""};
  if (c->rank == 1) return d;
  const std::string name = cat[c->index].name.get(r.language), rank = std::to_string(c->rank),
                    n = std::to_string(r.differential.ranked.size());
  d.note = r.language == Language::Ja
               ? "注意：この説明は" + name + "を挙げていますが、鑑別診断では" + n + "疾患中第" + rank + "位（" +
                     pct(c->probability) +
                     "）です。説明はモデルの自由記述、鑑別診断は較正済みの評価です。両方を考慮してください。どちらも疾患を除外するものではありません。"
               : "Note: this description names " + name + "; the differential ranks it " + rank + " of " + n + " (" +
                     pct(c->probability) +
                     "). The description is the model's free text and the differential its calibrated scores: weigh "
                     "both. Neither rules a condition out.";
  return d;
}

std::string status_text(Language lang) {
  return lang == Language::Ja ? "下書き — 医師の確認待ち" : "Draft — awaiting clinician review";
}

const char* score_context_text(ScoreContext c, Language lang) {
  const bool ja = lang == Language::Ja;
  if (c == ScoreContext::FirstAnswer)
    return ja ? "モデルのスコアは、最初の回答が診断名を述べる箇所で読み取ったものです（較正前。較正で順位が変わることがあります）。"
              : "The model's scores were read where its first answer names the diagnosis (before calibration, which "
                "can change their order).";
  return ja ? "確率は「この画像に写っている皮膚疾患は何ですか？」への回答としての各疾患の尤度です（最初の回答が所定の形で"
              "診断名を述べていません）。"
            : "The scores are the model's likelihood of each condition as its answer to \"What skin disease is shown "
              "in this image?\" (its first answer names no diagnosis in the expected form).";
}

std::string disclaimer_text(Language lang) {
  if (lang == Language::Ja)
    return "これは意思決定を支援するための下書きであり、診断ではありません。AIモデルの回答は誤っている可能性があり、"
           "確率は推定値です。最終的な判断は、患者を診察した医師が行います。この評価はすべてこのコンピューター上で行われ、"
           "写真や情報は外部に送信されていません。";
  return "This is a draft to support a clinician's decision, not a diagnosis. The AI model's answers can be wrong and "
         "the probabilities are estimates. A clinician who examines the patient makes the final decision. Everything "
         "was computed on this computer; the photo and details were not sent anywhere.";
}

std::vector<std::string> next_steps(const Report& r) {
  const bool ja = r.language == Language::Ja;
  std::vector<std::string> s;
  if (!r.assessed) {
    s.push_back(ja ? "上の助言に従って写真を撮り直し、もう一度評価してください。"
                   : "Retake the photo following the advice above and run the assessment again.");
    s.push_back(ja ? "病変が気になる場合は、写真の評価を待たずに医師の診察を受けてください。"
                   : "If you are worried about the lesion, see a doctor without waiting for a better photo.");
    return s;
  }
  const Differential& d = r.differential;
  const Catalogue& cat = catalogue_of(r);
  if (d.refer_urgently)
    s.push_back(ja ? "至急（2週間以内）皮膚科専門医に紹介してください：悪性または前がん病変の可能性があります。"
                   : "Refer urgently to a dermatologist (within two weeks): a malignant or premalignant condition "
                     "is possible.");
  if (d.uncertain)
    s.push_back(ja ? "確信がないため、皮膚科専門医の診察を受けてください（ダーモスコピー、必要に応じて生検）。"
                   : "Not sure — see a dermatologist for an examination (dermoscopy, and a biopsy if needed).");
  if (!d.refer_urgently && !d.uncertain && !d.ranked.empty()) {
    const std::string top = cat[d.ranked[0].index].name.get(r.language);
    s.push_back(ja ? "医師による通常の診察で" + top +
                         "かどうかを確認してください。3か月後に同じ条件で写真を撮り、大きさ・形・色の変化を比べてください。"
                   : "Have a clinician confirm whether this is " + top +
                         " at a routine visit. Photograph the lesion again in 3 months under the same conditions to "
                         "compare size, shape and colour.");
  }
  if (r.quality.verdict == Verdict::Warn)
    s.push_back(ja ? "写真の品質に注意点があります（上記）。撮り直すと評価の精度が上がる可能性があります。"
                   : "The photo has quality warnings (above); a better photo may give a more reliable assessment.");
  s.push_back(ja ? "病変が変化する、出血する、かゆみが続く、治らない場合は、早めに受診してください。"
                 : "Seek care sooner if the lesion changes, bleeds, itches or does not heal.");
  return s;
}

// ------------------------------------------------------------------- text

std::string render_text(const Report& r) {
  const Labels& l = L(r.language);
  const bool ja = r.language == Language::Ja;
  const Catalogue* cat = &catalogue_of(r);
  std::string o;
  auto line = [&](const std::string& s = "") { o += s + "\n"; };
  auto section = [&](int n, const std::string& title) {
    line();
    line(std::to_string(n) + ". " + title);
    line(std::string(ja ? 30 : 60, '-'));
  };
  auto indent = [&](const std::string& text, const std::string& pre = "   ") {
    std::string t = text.empty() ? "-" : text;
    size_t a = 0;
    while (a <= t.size()) {
      const size_t b = t.find('\n', a);
      line(pre + t.substr(a, b == std::string::npos ? std::string::npos : b - a));
      if (b == std::string::npos) break;
      a = b + 1;
    }
  };
  const std::string title = std::string(l.title) + " — " + status_text(r.language);
  line(ja ? title : title);
  line(std::string(ja ? 40 : 72, '='));
  line(std::string(l.photo) + (ja ? "：" : ": ") + (r.image_name.empty() ? "-" : valid_utf8(r.image_name)) + " (" +
       std::to_string(r.image_width) + "×" + std::to_string(r.image_height) + ")");
  line(std::string(l.patient) + (ja ? "：" : ": ") + patient_line(r));

  if (r.assessed && r.differential.refer_urgently) {
    line();
    line(std::string(72, '!'));
    line(std::string("!! ") + l.red_flag_tag + " — " + l.refer_urgently);
    indent(red_flag_text(r), "!! ");
    line(std::string(72, '!'));
  }

  int n = 1;
  section(n++, std::string(l.quality) + (ja ? "：" : ": ") + quality_word(r));
  for (const auto& c : r.quality.checks) {
    char v[64];
    std::snprintf(v, sizeof v, "%.4g", c.value);
    std::string s = "[" + verdict_word(c, r.language) + "] " + check_name(c, r.language) + " = " + v + " (" +
                    unit_name(c, r.language) + ")";
    if (!c.problem.get(r.language).empty()) s += (ja ? "：" : ": ") + c.problem.get(r.language);
    indent(s, "   - ");
  }
  if (r.quality.refused()) {
    line();
    indent(l.refused_banner);
    for (const auto& a : r.quality.advice(r.language)) indent(a, "   * ");
  } else if (!r.quality.advice(r.language).empty()) {
    for (const auto& a : r.quality.advice(r.language)) indent(a, "   * ");
  }

  if (r.assessed) {
    section(n++, l.findings);
    line(std::string("   ") + l.model_description + (ja ? "：" : ":"));
    indent(answer_at(r, 0).empty() && r.answers.size() > 0 ? l.not_asked : answer_at(r, 0), "     ");
    if (const auto dn = description_names(r); dn && !dn->note.empty()) indent(dn->note, "     ");
    if (r.answers.size() > 1) {
      line(std::string("   ") + l.model_features + (ja ? "：" : ":"));
      indent(answer_at(r, 1).empty() ? l.not_asked : answer_at(r, 1), "     ");
    }
    line(std::string("   ") + l.measured + (ja ? "：" : ":"));
    indent(describe_features(r.lesion, r.language), "     ");
    indent(l.measured_note, "     ");

    section(n++, l.differential);
    indent(l.differential_note);
    line();
    const auto& d = r.differential;
    for (const auto& c : d.ranked) {
      const Condition& k = (*cat)[c.index];
      const int bar = static_cast<int>(std::lround(c.probability * 20));
      std::string b;
      for (int i = 0; i < 20; ++i) b += i < bar ? "#" : ".";
      char head[64];
      std::snprintf(head, sizeof head, "%2d. %5s [%s] ", c.rank, pct(c.probability).c_str(), b.c_str());
      std::string s = head + k.name.get(r.language) + " — ICD-10 " + join(k.icd10, ", ") + ", " +
                      malignancy_label(k.malignancy, r.language) + ", " + likelihood_words(c.probability, r.language);
      if (c.red_flag) s += std::string("  <-- ") + l.red_flag_tag;
      indent(s, "   ");
    }
    line();
    line(std::string("   ") + l.how_sure);
    indent(describe_uncertainty(d, *cat, r.language), "     ");
    if (r.calibrated)
      indent(std::string(l.calibrated_on) + (ja ? "：" : ": ") +
                 (r.calibration.fitted_on.empty() ? r.calibration_source : r.calibration.fitted_on),
             "     ");
    else
      indent(l.not_calibrated, "     ");
    indent(score_context_text(d.scored_at, r.language), "     ");

    section(n++, l.red_flags);
    if (d.refer_urgently) indent(std::string(l.refer_urgently) + (ja ? "：" : ": ") + red_flag_text(r));
    else indent(l.no_red_flags);

    if (r.answers.size() > 2) {
      section(n++, l.explanation);
      indent(answer_at(r, 2).empty() ? l.not_asked : answer_at(r, 2));
    }
    if (r.answers.size() > 3) {
      section(n++, l.treatment);
      indent(answer_at(r, 3).empty() ? l.not_asked : answer_at(r, 3));
    }
  }
  section(n++, l.next_steps);
  for (const auto& s : next_steps(r)) indent(s, "   * ");
  line();
  line(std::string(l.disclaimer_head) + (ja ? "：" : ": ") + disclaimer_text(r.language));
  line(std::string(l.status) + (ja ? "：" : ": ") + status_text(r.language));
  std::string meta = std::string(l.model) + (ja ? "：" : ": ") + (r.model_name.empty() ? "-" : r.model_name) + " | " +
                     l.catalogue + (ja ? "：" : ": ") + catalogue_label(r);
  line(meta);
  return o;
}

// ------------------------------------------------------------------- JSON

namespace {

ordered_json lesion_json(const Report& r) {
  const LesionFeatures& f = r.lesion;
  ordered_json j;
  j["found"] = f.found;
  j["summary"] = describe_features(f, r.language);
  j["area_fraction"] = f.area_fraction;
  j["diameter_fraction"] = f.diameter_fraction;
  j["asymmetry"] = {f.asymmetry[0], f.asymmetry[1]};
  j["asymmetric_axes"] = f.asymmetric_axes;
  j["compactness"] = f.compactness;
  j["irregular_border"] = f.irregular_border;
  ordered_json cols = ordered_json::array();
  for (auto c : f.colours) cols.push_back(colour_id(c));
  j["colours"] = cols;
  ordered_json frac = ordered_json::object();
  for (int k = 0; k < kSkinColourCount; ++k) frac[colour_id(static_cast<SkinColour>(k))] = f.colour_fraction[k];
  j["colour_fractions"] = frac;
  j["touches_border"] = f.touches_border;
  return j;
}

}  // namespace

std::string render_json(const Report& r) {
  const Catalogue& cat = catalogue_of(r);
  const Language lang = r.language;
  ordered_json j;
  j["schema"] = "skingpt-report";
  j["schema_version"] = r.schema_version;
  j["status"] = "draft_awaiting_clinician_review";
  j["status_text"] = status_text(lang);
  j["language"] = language_code(lang);
  j["created"] = now_iso8601();
  j["image"] = {{"name", valid_utf8(r.image_name)}, {"width", r.image_width}, {"height", r.image_height}};
  ordered_json p;
  p["age"] = r.patient.age ? ordered_json(*r.patient.age) : ordered_json(nullptr);
  p["sex"] = valid_utf8(r.patient.sex);
  p["site"] = valid_utf8(r.patient.site);
  p["history"] = valid_utf8(r.patient.history);
  j["patient"] = p;

  ordered_json q;
  q["verdict"] = verdict_name(r.quality.verdict);
  q["checks"] = ordered_json::array();
  for (const auto& c : r.quality.checks)
    q["checks"].push_back({{"id", c.id},
                           {"name", check_name(c, lang)},
                           {"value", std::isfinite(c.value) ? c.value : 0.0},
                           {"unit", c.unit},
                           {"verdict", verdict_name(c.verdict)},
                           {"judged", c.judged},
                           {"problem", c.problem.get(lang)},
                           {"advice", c.advice.get(lang)}});
  q["advice"] = r.quality.advice(lang);
  j["quality"] = q;
  j["assessed"] = r.assessed;

  ordered_json f;
  f["model_description"] = r.answers.size() > 0 ? ordered_json(answer_at(r, 0)) : ordered_json(nullptr);
  if (const auto dn = description_names(r))
    f["description_names"] = {{"id", dn->candidate->id}, {"rank", dn->candidate->rank}, {"note", dn->note}};
  f["model_additional_features"] = r.answers.size() > 1 ? ordered_json(answer_at(r, 1)) : ordered_json(nullptr);
  f["measured"] = lesion_json(r);
  j["findings"] = f;

  if (r.assessed) {
    const Differential& d = r.differential;
    ordered_json dj;
    dj["candidates"] = ordered_json::array();
    for (const auto& c : d.ranked) {
      const Condition& k = cat[c.index];
      dj["candidates"].push_back({{"rank", c.rank},
                                  {"id", c.id},
                                  {"name", k.name.get(lang)},
                                  {"icd10", k.icd10},
                                  {"malignancy", malignancy_name(k.malignancy)},
                                  {"probability", c.probability},
                                  {"log_likelihood", std::isfinite(c.log_likelihood) ? c.log_likelihood : -1e300},
                                  {"likelihood_words", likelihood_words(c.probability, lang)},
                                  {"red_flag", c.red_flag}});
    }
    dj["entropy"] = d.entropy;
    dj["normalized_entropy"] = d.normalized_entropy;
    dj["top_two_margin"] = d.margin;
    dj["certainty"] = certainty_name(d.certainty);
    dj["uncertain"] = d.uncertain;
    dj["uncertainty_text"] = describe_uncertainty(d, cat, lang);
    dj["scored_at"] = score_context_name(d.scored_at);
    j["differential"] = dj;
    ordered_json rf;
    rf["refer_urgently"] = d.refer_urgently;
    rf["conditions"] = ordered_json::array();
    for (size_t k : d.red_flags) rf["conditions"].push_back(d.ranked[k].id);
    rf["text"] = d.refer_urgently ? red_flag_text(r) : std::string(L(lang).no_red_flags);
    j["red_flags"] = rf;
  } else {
    j["differential"] = nullptr;
    j["red_flags"] = {{"refer_urgently", false}, {"conditions", ordered_json::array()}, {"text", ""}};
  }

  j["calibration"] = {{"calibrated", r.calibrated},
                      {"source", r.calibration_source},
                      {"temperature", r.calibration.temperature},
                      {"uncertain_max_prob", r.calibration.uncertain_max_prob},
                      {"uncertain_min_margin", r.calibration.uncertain_min_margin},
                      {"red_flag_threshold", r.calibration.red_flag_threshold},
                      {"fitted_on", r.calibration.fitted_on}};
  static const char* roles[] = {"description", "additional_features", "cause", "treatment"};
  j["model_answers"] = ordered_json::array();
  for (size_t i = 0; i < r.answers.size(); ++i)
    j["model_answers"].push_back({{"role", i < 4 ? roles[i] : "other"},
                                  {"question", valid_utf8(r.answers[i].question)},
                                  {"answer", answer_at(r, i)}});
  j["next_steps"] = next_steps(r);
  j["disclaimer"] = disclaimer_text(lang);
  j["model"] = {{"name", r.model_name}, {"catalogue", r.catalogue_source}};
  j["timings_ms"] = {{"quality", r.timings.quality_ms},
                     {"encode", r.timings.encode_ms},
                     {"score", r.timings.score_ms},
                     {"questions", r.timings.questions_ms},
                     {"total", r.timings.total_ms}};
  return j.dump(2, ' ', false, ordered_json::error_handler_t::replace) + "\n";
}

// ------------------------------------------------------------------- HTML

namespace {

std::string esc(const std::string& s) { return html_escape(s); }

std::string paras(const std::string& s) {
  if (s.empty()) return "<p>-</p>";
  std::string o = "<p>";
  for (char c : esc(s)) {
    if (c == '\n') o += "<br>";
    else o += c;
  }
  return o + "</p>";
}

std::string base64(const std::vector<uint8_t>& d) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o;
  size_t i = 0;
  for (; i + 2 < d.size(); i += 3) {
    const uint32_t v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
    o += t[v >> 18], o += t[(v >> 12) & 63], o += t[(v >> 6) & 63], o += t[v & 63];
  }
  if (i + 1 == d.size()) {
    const uint32_t v = d[i] << 16;
    o += t[v >> 18], o += t[(v >> 12) & 63], o += "==";
  } else if (i + 2 == d.size()) {
    const uint32_t v = (d[i] << 16) | (d[i + 1] << 8);
    o += t[v >> 18], o += t[(v >> 12) & 63], o += t[(v >> 6) & 63], o += '=';
  }
  return o;
}

const char* kCss = R"(
body{font-family:system-ui,-apple-system,"Segoe UI","Hiragino Sans","Noto Sans CJK JP",sans-serif;max-width:860px;margin:2em auto;padding:0 1em;color:#1b1b1b;line-height:1.5}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.status{display:inline-block;background:#fff4ce;border:1px solid #e0b000;padding:.2em .6em;border-radius:4px;font-weight:600}
.meta{color:#555;font-size:.92em}.redflag{background:#fde7e9;border:3px solid #c50f1f;padding:.8em 1em;border-radius:6px;margin:1em 0}
.redflag strong{color:#a80000;font-size:1.15em}.refused{background:#fde7e9;border:2px solid #c50f1f;padding:.8em 1em;border-radius:6px}
.ok{color:#0e700e}.warn{color:#8a5a00}.refuse{color:#a80000;font-weight:700}
table{border-collapse:collapse;width:100%}td,th{padding:.35em .5em;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top}
.bar{background:#e8e8e8;width:160px;height:12px;border-radius:6px;overflow:hidden}.bar>span{display:block;height:100%;background:#2b6cb0}
tr.flag .bar>span{background:#c50f1f}tr.flag td{background:#fff5f5}.tag{background:#c50f1f;color:#fff;border-radius:3px;padding:0 .4em;font-size:.8em;font-weight:700}
.model{background:#f5f7fa;border-left:4px solid #8aa4c8;padding:.4em .9em;margin:.5em 0}.measured{background:#f3f9f3;border-left:4px solid #7fb77f;padding:.4em .9em;margin:.5em 0}
.uncal{color:#8a5a00}.disclaimer{background:#f4f4f4;padding:.8em 1em;border-radius:6px;margin-top:2em;font-size:.95em}
img.photo{max-width:224px;border-radius:4px;float:right;margin:0 0 1em 1em}
)";

}  // namespace

std::string render_html(const Report& r) { return render_html(r, nullptr); }

std::string render_html(const Report& r, const Image* photo) {
  const Labels& l = L(r.language);
  const bool ja = r.language == Language::Ja;
  const Catalogue& cat = catalogue_of(r);
  std::string h;
  auto add = [&](const std::string& s) { h += s; };
  add("<!DOCTYPE html>\n<html lang=\"" + std::string(language_code(r.language)) +
      "\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<title>" + esc(std::string(l.title) + " — " + r.image_name) + "</title>\n<style>" + kCss +
      "</style>\n</head>\n<body>\n");
  if (photo && photo->width > 0) {
    // A metadata-free JPEG copy of the photo, shrunk, inside the page.
    Image small = *photo;
    const int side = std::max(photo->width, photo->height);
    if (side > 448) {
      small = Image{};
      const double s = 448.0 / side;
      small.width = std::max(1, static_cast<int>(photo->width * s));
      small.height = std::max(1, static_cast<int>(photo->height * s));
      small.rgb.resize(static_cast<size_t>(small.width) * small.height * 3);
      for (int y = 0; y < small.height; ++y)
        for (int x = 0; x < small.width; ++x) {
          const uint8_t* p = photo->pixel(std::min(photo->width - 1, static_cast<int>(x / s)),
                                          std::min(photo->height - 1, static_cast<int>(y / s)));
          std::copy(p, p + 3, small.pixel(x, y));
        }
    }
    add("<img class=\"photo\" alt=\"photo\" src=\"data:image/jpeg;base64," + base64(encode_jpeg(small, 85)) + "\">\n");
  }
  add("<h1>" + esc(l.title) + "</h1>\n<p><span class=\"status\">" + esc(status_text(r.language)) + "</span></p>\n");
  add("<p class=\"meta\">" + esc(l.photo) + ": " + esc(r.image_name.empty() ? "-" : r.image_name) + " (" +
      std::to_string(r.image_width) + "×" + std::to_string(r.image_height) + ")<br>" + esc(l.patient) + ": " +
      esc(patient_line(r)) + "</p>\n");
  if (r.assessed && r.differential.refer_urgently)
    add("<div class=\"redflag\"><strong>⚠ " + esc(l.red_flag_tag) + " — " + esc(l.refer_urgently) +
        "</strong><p>" + esc(red_flag_text(r)) + "</p></div>\n");

  const char* vclass = r.quality.verdict == Verdict::Refuse ? "refuse" : r.quality.verdict == Verdict::Warn ? "warn" : "ok";
  add("<h2>" + esc(l.quality) + ": <span class=\"" + vclass + "\">" + esc(quality_word(r)) + "</span></h2>\n<ul>\n");
  for (const auto& c : r.quality.checks) {
    char v[64];
    std::snprintf(v, sizeof v, "%.4g", c.value);
    add("<li><span class=\"" + std::string(verdict_name(c.verdict)) + "\">[" + esc(verdict_word(c, r.language)) +
        "]</span> " + esc(check_name(c, r.language)) + " = " + v + " (" + esc(unit_name(c, r.language)) + ")" +
        (c.problem.get(r.language).empty() ? "" : " — " + esc(c.problem.get(r.language))) + "</li>\n");
  }
  add("</ul>\n");
  const auto advice = r.quality.advice(r.language);
  if (r.quality.refused()) {
    add("<div class=\"refused\"><p>" + esc(l.refused_banner) + "</p><ul>");
    for (const auto& a : advice) add("<li>" + esc(a) + "</li>");
    add("</ul></div>\n");
  } else if (!advice.empty()) {
    add("<ul class=\"warn\">");
    for (const auto& a : advice) add("<li>" + esc(a) + "</li>");
    add("</ul>\n");
  }

  if (r.assessed) {
    add("<h2>" + esc(l.findings) + "</h2>\n");
    add("<div class=\"model\"><h3>" + esc(l.model_description) + "</h3>" +
        paras(r.answers.empty() ? "" : (answer_at(r, 0).empty() ? l.not_asked : answer_at(r, 0))));
    if (const auto dn = description_names(r); dn && !dn->note.empty())
      add("<p class=\"warn\">" + esc(dn->note) + "</p>");
    if (r.answers.size() > 1)
      add("<h3>" + esc(l.model_features) + "</h3>" + paras(answer_at(r, 1).empty() ? l.not_asked : answer_at(r, 1)));
    add("</div>\n<div class=\"measured\"><h3>" + esc(l.measured) + "</h3><p>" +
        esc(describe_features(r.lesion, r.language)) + "</p><p class=\"meta\">" + esc(l.measured_note) +
        "</p></div>\n");

    const auto& d = r.differential;
    add("<h2>" + esc(l.differential) + "</h2>\n<p class=\"meta\">" + esc(l.differential_note) + "</p>\n<table>\n");
    add("<tr><th>" + esc(l.rank_col) + "</th><th>" + esc(l.condition_col) + "</th><th>" + esc(l.icd_col) + "</th><th>" +
        esc(l.prob_col) + "</th><th></th><th>" + esc(l.words_col) + "</th></tr>\n");
    for (const auto& c : d.ranked) {
      const Condition& k = cat[c.index];
      char w[32];
      std::snprintf(w, sizeof w, "%.1f%%", 100 * c.probability);
      add(std::string("<tr") + (c.red_flag ? " class=\"flag\"" : "") + "><td>" + std::to_string(c.rank) + "</td><td>" +
          esc(k.name.get(r.language)) + (c.red_flag ? " <span class=\"tag\">" + esc(l.red_flag_tag) + "</span>" : "") +
          "<br><small>" + esc(malignancy_label(k.malignancy, r.language)) + " — " +
          esc(k.description.get(r.language)) + "</small></td><td>" + esc(join(k.icd10, ", ")) + "</td><td>" +
          pct(c.probability) + "</td><td><div class=\"bar\"><span style=\"width:" + w + "\"></span></div></td><td>" +
          esc(likelihood_words(c.probability, r.language)) + "</td></tr>\n");
    }
    add("</table>\n<h3>" + esc(l.how_sure) + "</h3><p>" + esc(describe_uncertainty(d, cat, r.language)) + "</p>\n");
    if (r.calibrated)
      add("<p class=\"meta\">" + esc(l.calibrated_on) + ": " +
          esc(r.calibration.fitted_on.empty() ? r.calibration_source : r.calibration.fitted_on) + "</p>\n");
    else
      add("<p class=\"uncal\">" + esc(l.not_calibrated) + "</p>\n");
    add("<p class=\"meta\">" +
        esc(score_context_text(d.scored_at, r.language)) + "</p>\n");
    add("<h2>" + esc(l.red_flags) + "</h2>\n<p>" +
        (d.refer_urgently ? "<strong class=\"refuse\">" + esc(l.refer_urgently) + "</strong> " + esc(red_flag_text(r))
                          : esc(l.no_red_flags)) +
        "</p>\n");
    if (r.answers.size() > 2)
      add("<h2>" + esc(l.explanation) + "</h2>\n<div class=\"model\">" +
          paras(answer_at(r, 2).empty() ? l.not_asked : answer_at(r, 2)) + "</div>\n");
    if (r.answers.size() > 3)
      add("<h2>" + esc(l.treatment) + "</h2>\n<div class=\"model\">" +
          paras(answer_at(r, 3).empty() ? l.not_asked : answer_at(r, 3)) + "</div>\n");
  }
  add("<h2>" + esc(l.next_steps) + "</h2>\n<ul>\n");
  for (const auto& s : next_steps(r)) add("<li>" + esc(s) + "</li>\n");
  add("</ul>\n<div class=\"disclaimer\"><strong>" + esc(l.disclaimer_head) + (ja ? "：" : ": ") + "</strong>" +
      esc(disclaimer_text(r.language)) + "<br><strong>" + esc(l.status) + (ja ? "：" : ": ") + "</strong>" +
      esc(status_text(r.language)) + "</div>\n");
  add("<p class=\"meta\">" + esc(l.model) + ": " + esc(r.model_name.empty() ? "-" : r.model_name) + " · " +
      esc(l.catalogue) + ": " + esc(catalogue_label(r)) + " · " + esc(l.created) + ": " + now_iso8601() + "</p>\n");
  add("</body>\n</html>\n");
  return h;
}

std::string now_iso8601() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

}  // namespace sg::clinic
