#include "clinic/eval_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "clinic/language.h"
#include "core/error.h"

namespace sg::clinic {

using nlohmann::json;

namespace {

json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

json bins_json(const std::vector<ReliabilityBin>& bins) {
  json a = json::array();
  for (const auto& b : bins)
    a.push_back({{"lo", b.lo}, {"hi", b.hi}, {"count", b.count}, {"mean_confidence", num(b.mean_confidence)},
                 {"accuracy", num(b.accuracy)}});
  return a;
}

json per_class_json(const Metrics& m, const std::vector<std::string>& ids) {
  json o = json::object();
  for (size_t k = 0; k < ids.size(); ++k) {
    const auto& c = m.per_class[k];
    if (c.support == 0) continue;  // absent from the data: not part of the averages
    o[ids[k]] = {{"recall", num(c.recall)}, {"precision", num(c.precision)}, {"n", c.support},
                 {"predicted", c.predicted}};
  }
  return o;
}

json summary_json(const Metrics& m, const std::vector<std::string>& ids) {
  return {{"n", m.n},
          {"classes_present", m.classes_present},
          {"accuracy", num(m.accuracy)},
          {"balanced_accuracy", num(m.balanced_accuracy)},
          {"top3_accuracy", num(m.top3_accuracy)},
          {"auroc_melanoma", num(m.auroc_melanoma)},
          {"auroc_malignant", num(m.auroc_malignant)},
          {"ece", num(m.ece)},
          {"malignant_n", m.malignant_n},
          {"malignant_missed_unflagged", num(m.malignant_missed_unflagged)},
          {"per_class", per_class_json(m, ids)}};
}

json metrics_json(const Metrics& m, const std::vector<std::string>& ids) {
  json o = summary_json(m, ids);
  o["macro_precision"] = num(m.macro_precision);
  o["nll"] = num(m.nll);
  o["brier"] = num(m.brier);
  o["malignant_top1"] = m.malignant_top1;
  o["malignant_flagged"] = m.malignant_flagged;
  o["malignant_missed_unflagged_count"] = m.malignant_missed_unflagged_n;
  o["malignant_missed_unreferred"] = num(m.malignant_missed_unreferred);
  o["malignant_missed_unreferred_count"] = m.malignant_missed_unreferred_n;
  o["benign_n"] = m.benign_n;
  o["benign_flagged"] = m.benign_flagged;
  o["benign_flag_rate"] = num(m.benign_flag_rate);
  o["uncertain_rate"] = num(m.uncertain_rate);
  o["confusion"] = m.confusion;
  o["reliability"] = bins_json(m.reliability);
  return o;
}

json calibration_json(const Calibration& c, const std::vector<std::string>& ids) {
  json o = {{"temperature", c.temperature},
            {"uncertain_max_prob", c.uncertain_max_prob},
            {"uncertain_min_margin", c.uncertain_min_margin},
            {"red_flag_threshold", c.red_flag_threshold},
            {"fitted_on", c.fitted_on}};
  if (!c.class_bias.empty()) {
    json b = json::object();
    for (size_t k = 0; k < ids.size() && k < c.class_bias.size(); ++k) b[ids[k]] = c.class_bias[k];
    o["class_bias"] = b;
  }
  return o;
}

std::string f3(double v) {
  if (!std::isfinite(v)) return "—";
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", v);
  return b;
}
std::string pct(double v) {
  if (!std::isfinite(v)) return "—";
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100 * v);
  return b;
}

// The same with an ASCII "-" for undefined values (fixed-width text columns).
std::string f3a(double v) { return std::isfinite(v) ? f3(v) : "-"; }
std::string pcta(double v) { return std::isfinite(v) ? pct(v) : "-"; }

std::vector<std::string> absent_classes(const Metrics& m, const std::vector<std::string>& ids) {
  std::vector<std::string> a;
  for (size_t k = 0; k < ids.size(); ++k)
    if (m.per_class[k].support == 0) a.push_back(ids[k]);
  return a;
}

}  // namespace

std::string eval_json(const EvalResult& r) {
  const Metrics& h = r.headline();
  const auto& ids = r.class_ids;
  json o;
  o["format"] = "skingpt-eval";
  o["version"] = 1;
  o["data"] = r.data;
  o["split"] = r.split;
  o["model"] = r.model;
  o["language"] = r.language;
  o["patient_details"] = r.patient_details;
  o["catalogue"] = r.catalogue_source;
  o["probabilities"] = r.headline_calibrated() ? "calibrated" : "raw";
  const json summary = summary_json(h, ids);
  for (auto it = summary.begin(); it != summary.end(); ++it) o[it.key()] = it.value();
  o.erase("ece");
  o["ece_raw"] = num(r.raw.ece);
  o["ece_calibrated"] = r.calibrated ? num(r.calibrated->ece) : json(nullptr);
  o["malignant_missed_unflagged_count"] = h.malignant_missed_unflagged_n;
  o["malignant_missed_unreferred"] = num(h.malignant_missed_unreferred);
  o["benign_flag_rate"] = num(h.benign_flag_rate);
  o["uncertain_rate"] = num(h.uncertain_rate);
  o["absent_classes"] = absent_classes(h, ids);
  o["classes"] = ids;
  o["confusion"] = h.confusion;
  json bd = json::object();
  for (const auto& b : r.breakdowns) {
    json g = json::object();
    for (const auto& grp : b.groups) g[grp.name] = summary_json(grp.metrics, ids);
    bd[b.by] = g;
  }
  o["breakdowns"] = bd;
  o["raw"] = metrics_json(r.raw, ids);
  o["calibrated"] = r.calibrated ? metrics_json(*r.calibrated, ids) : json(nullptr);
  o["raw_thresholds"] = calibration_json(r.raw_thresholds, ids);
  o["calibration"] = r.calibration ? calibration_json(*r.calibration, ids) : json(nullptr);
  o["calibration_source"] = r.calibration_source;
  if (r.answers) {
    const AnswerCheck& a = *r.answers;
    auto frac = [](int64_t k, int64_t n) { return n ? num(static_cast<double>(k) / static_cast<double>(n)) : json(nullptr); };
    o["answers"] = {{"n", a.n},
                    {"temperature", a.temperature},
                    {"names_top_scored", frac(a.names_top_scored, a.n)},
                    {"names_report_top", frac(a.names_report_top, a.n)},
                    {"names_none", frac(a.names_none, a.n)},
                    {"features_stated", a.features_stated},
                    {"features_agreed", frac(a.features_agreed, a.features_stated)},
                    {"names_second_scored", frac(a.names_second_scored, a.n)}};
    json bins = json::array();
    for (int b = 0; b < 3; ++b)
      bins.push_back({{"margin_from", b == 0 ? 0.0 : AnswerCheck::kMarginEdges[b - 1]},
                      {"margin_to", b == 2 ? json(nullptr) : json(AnswerCheck::kMarginEdges[b])},
                      {"n", a.by_margin_n[b]},
                      {"names_top_scored", frac(a.by_margin_names_top[b], a.by_margin_n[b])}});
    o["answers"]["by_margin"] = bins;
  }
  o["seconds"] = r.seconds;
  o["scores_file"] = r.scores_file;
  return o.dump(2) + "\n";
}

std::string eval_text(const EvalResult& r) {
  std::string o;
  char b[512];
  const Metrics& h = r.headline();
  std::snprintf(b, sizeof b, "Evaluation of %s on %s (split %s): %lld images, %d of %zu conditions present\n",
                r.model.c_str(), r.data.c_str(), r.split.c_str(), static_cast<long long>(h.n), h.classes_present,
                r.class_ids.size());
  o += b;
  if (r.patient_details) o += "Patient details (age, sex, site) put before the first question\n";
  o += r.calibrated ? "Calibration: " + r.calibration_source + "\n"
                    : "Calibration: none (no calibration.json; run 'skingpt calibrate'). Figures are raw.\n";
  o += "\n                                   raw    calibrated\n";
  auto row = [&](const char* name, double a, double c, bool percent) {
    const std::string ca = r.calibrated ? (percent ? pcta(c) : f3a(c)) : "-";
    std::snprintf(b, sizeof b, "  %-30s %8s %10s\n", name, (percent ? pcta(a) : f3a(a)).c_str(), ca.c_str());
    o += b;
  };
  const Metrics* c = r.calibrated ? &*r.calibrated : nullptr;
  auto cv = [&](double Metrics::*f) { return c ? c->*f : NAN; };
  row("balanced accuracy", r.raw.balanced_accuracy, cv(&Metrics::balanced_accuracy), false);
  row("accuracy", r.raw.accuracy, cv(&Metrics::accuracy), false);
  row("top-3 accuracy", r.raw.top3_accuracy, cv(&Metrics::top3_accuracy), false);
  row("AUROC melanoma vs rest", r.raw.auroc_melanoma, cv(&Metrics::auroc_melanoma), false);
  row("AUROC malignant vs benign", r.raw.auroc_malignant, cv(&Metrics::auroc_malignant), false);
  row("ECE (15 bins)", r.raw.ece, cv(&Metrics::ece), false);
  row("NLL", r.raw.nll, cv(&Metrics::nll), false);
  row("malignant missed & unflagged", r.raw.malignant_missed_unflagged, cv(&Metrics::malignant_missed_unflagged), true);
  row("benign sent for urgent referral", r.raw.benign_flag_rate, cv(&Metrics::benign_flag_rate), true);
  row("marked \"not sure\"", r.raw.uncertain_rate, cv(&Metrics::uncertain_rate), true);
  std::snprintf(b, sizeof b,
                "\nSafety (%s): %lld of %lld malignant lesions (mel, bcc, akiec) were neither the top-1 answer "
                "nor flagged for urgent referral (%s).\n",
                r.headline_calibrated() ? "calibrated" : "raw", static_cast<long long>(h.malignant_missed_unflagged_n),
                static_cast<long long>(h.malignant_n), pcta(h.malignant_missed_unflagged).c_str());
  o += b;
  std::snprintf(b, sizeof b, "\nPer condition (%s):\n  %-8s %-36s %6s %8s %9s\n",
                r.headline_calibrated() ? "calibrated" : "raw", "id", "condition", "n", "recall", "precision");
  o += b;
  for (size_t k = 0; k < r.class_ids.size(); ++k) {
    const auto& s = h.per_class[k];
    if (s.support == 0) continue;
    std::snprintf(b, sizeof b, "  %-8s %-36s %6lld %8s %9s\n", r.class_ids[k].c_str(),
                  (k < r.class_names.size() ? r.class_names[k].substr(0, 36) : "").c_str(), static_cast<long long>(s.support),
                  f3a(s.recall).c_str(), f3a(s.precision).c_str());
    o += b;
  }
  const auto absent = absent_classes(h, r.class_ids);
  if (!absent.empty()) {
    o += "  not in this data (left out of the averages):";
    for (const auto& a : absent) o += " " + a;
    o += "\n";
  }
  for (const auto& bd : r.breakdowns) {
    std::snprintf(b, sizeof b, "\nBy %s:\n  %-18s %6s %9s %7s %8s %8s %7s %10s\n", bd.by.c_str(), "group", "n",
                  "bal.acc", "top-3", "AUC mel", "AUC mal", "ECE", "mal.missed");
    o += b;
    for (const auto& g : bd.groups) {
      const auto& m = g.metrics;
      std::snprintf(b, sizeof b, "  %-18s %6lld %9s %7s %8s %8s %7s %10s\n", g.name.substr(0, 18).c_str(),
                    static_cast<long long>(m.n), f3a(m.balanced_accuracy).c_str(), f3a(m.top3_accuracy).c_str(),
                    f3a(m.auroc_melanoma).c_str(), f3a(m.auroc_malignant).c_str(), f3a(m.ece).c_str(),
                    m.malignant_n ? pcta(m.malignant_missed_unflagged).c_str() : "-");
      o += b;
    }
  }
  if (r.answers && r.answers->n > 0) {
    const AnswerCheck& a = *r.answers;
    const double n = static_cast<double>(a.n);
    std::snprintf(b, sizeof b,
                  "\nAnswers to the first question (%lld images, temperature %.2g): name the top-scored condition %s, the "
                  "report's top %s, no condition %s; stated features agreeing with the measurement %s of %lld\n",
                  static_cast<long long>(a.n), a.temperature,
                  pcta(static_cast<double>(a.names_top_scored) / n).c_str(),
                  pcta(static_cast<double>(a.names_report_top) / n).c_str(),
                  pcta(static_cast<double>(a.names_none) / n).c_str(),
                  a.features_stated ? pcta(static_cast<double>(a.features_agreed) / static_cast<double>(a.features_stated)).c_str() : "-",
                  static_cast<long long>(a.features_stated));
    o += b;
    o += "  naming the top-scored condition, by the margin between the two highest scores:";
    for (int k = 0; k < 3; ++k) {
      char range[48];
      const double* e = AnswerCheck::kMarginEdges;
      if (k == 0) std::snprintf(range, sizeof range, "< %g nats", e[0]);
      else if (k == 1) std::snprintf(range, sizeof range, "%g-%g nats", e[0], e[1]);
      else std::snprintf(range, sizeof range, ">= %g nats", e[1]);
      std::snprintf(b, sizeof b, "%s %s %s of %lld", k ? "," : "", range,
                    a.by_margin_n[k] ? pcta(static_cast<double>(a.by_margin_names_top[k]) /
                                            static_cast<double>(a.by_margin_n[k])).c_str()
                                     : "-",
                    static_cast<long long>(a.by_margin_n[k]));
      o += b;
    }
    std::snprintf(b, sizeof b, "; the other answers name the second-scored condition in %lld of %lld\n",
                  static_cast<long long>(a.names_second_scored),
                  static_cast<long long>(a.n - a.names_top_scored - a.names_none));
    o += b;
  }
  return o;
}

// ---- drawing ----

namespace {

// 5×7 glyphs, one byte per row, bit 4 = leftmost pixel.
struct Glyph {
  char c;
  uint8_t rows[7];
};
constexpr Glyph kFont[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1E, 0x01, 0x01, 0x0E, 0x01, 0x01, 0x1E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}}, {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}}, {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}}, {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}}, {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}}, {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}}, {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}}, {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}}, {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04}}, {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}}, {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}}, {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}}, {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}}, {'<', {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}},
    {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}}, {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}}, {' ', {0, 0, 0, 0, 0, 0, 0}},
    {'?', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}},
};

const Glyph& glyph(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  for (const auto& g : kFont)
    if (g.c == c) return g;
  return kFont[sizeof kFont / sizeof kFont[0] - 1];  // '?'
}

struct Rgb {
  uint8_t r, g, b;
};
constexpr Rgb kWhite{255, 255, 255}, kBlack{0, 0, 0}, kGrid{225, 225, 225}, kDiag{150, 150, 150},
    kBarRaw{230, 145, 56}, kBarCal{52, 110, 190}, kGap{220, 60, 60};

Image canvas(int w, int h) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.assign(static_cast<size_t>(w) * h * 3, 255);
  return img;
}

void put(Image& img, int x, int y, Rgb c, double alpha = 1.0) {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
  uint8_t* p = img.pixel(x, y);
  const uint8_t v[3] = {c.r, c.g, c.b};
  for (int i = 0; i < 3; ++i) p[i] = static_cast<uint8_t>(std::lround(p[i] * (1 - alpha) + v[i] * alpha));
}

void fill_rect(Image& img, int x0, int y0, int x1, int y1, Rgb c, double alpha = 1.0) {
  if (x0 > x1) std::swap(x0, x1);
  if (y0 > y1) std::swap(y0, y1);
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) put(img, x, y, c, alpha);
}

void line(Image& img, int x0, int y0, int x1, int y1, Rgb c, int dash = 0) {
  const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int err = dx + dy, i = 0;
  for (;;) {
    if (!dash || (i / dash) % 2 == 0) put(img, x0, y0, c);
    ++i;
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * err;
    if (e2 >= dy) err += dy, x0 += sx;
    if (e2 <= dx) err += dx, y0 += sy;
  }
}

void rect_outline(Image& img, int x0, int y0, int x1, int y1, Rgb c) {
  line(img, x0, y0, x1, y0, c);
  line(img, x1, y0, x1, y1, c);
  line(img, x1, y1, x0, y1, c);
  line(img, x0, y1, x0, y0, c);
}

void text(Image& img, int x, int y, const std::string& s, Rgb c, int scale) {
  const uint8_t v[3] = {c.r, c.g, c.b};
  draw_text(img, x, y, s, v, scale);
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

void reliability_panel(Image& img, int ox, int oy, const Metrics* m, const std::string& title, Rgb bar) {
  const int W = 360, H = 360, left = ox + 60, top = oy + 50;
  text(img, ox + 10, oy + 12, title, kBlack, 2);
  if (!m) {
    text(img, left + 40, top + H / 2 - 7, "NO CALIBRATION", kDiag, 2);
    rect_outline(img, left, top, left + W, top + H, kDiag);
    return;
  }
  // Grid and ticks every 0.2.
  for (int t = 0; t <= 5; ++t) {
    const int x = left + W * t / 5, y = top + H - H * t / 5;
    line(img, x, top, x, top + H, kGrid);
    line(img, left, y, left + W, y, kGrid);
    const std::string lab = t == 0 ? "0" : t == 5 ? "1" : fmt("%.1f", t / 5.0);
    text(img, x - text_width(lab) / 2, top + H + 6, lab, kBlack, 1);
    text(img, left - 8 - text_width(lab), y - 3, lab, kBlack, 1);
  }
  for (const auto& b : m->reliability) {
    if (b.count == 0) continue;
    const int x0 = left + static_cast<int>(std::lround(b.lo * W)) + 1;
    const int x1 = left + static_cast<int>(std::lround(b.hi * W)) - 1;
    const int ya = top + H - static_cast<int>(std::lround(b.accuracy * H));
    const int yc = top + H - static_cast<int>(std::lround(b.mean_confidence * H));
    fill_rect(img, x0, ya, x1, top + H, bar);
    fill_rect(img, x0, std::min(ya, yc), x1, std::max(ya, yc), kGap, 0.45);
  }
  line(img, left, top + H, left + W, top, kDiag, 4);
  rect_outline(img, left, top, left + W, top + H, kBlack);
  text(img, left + W / 2 - text_width("CONFIDENCE (TOP-1)", 2) / 2, top + H + 22, "CONFIDENCE (TOP-1)", kBlack, 2);
  text(img, ox + 10, oy + 32, "ACCURACY", kBlack, 1);
  text(img, left + 8, top + 8, "ECE " + fmt("%.3f", m->ece), kBlack, 2);
  text(img, left + 8, top + 28, "N " + std::to_string(m->n), kBlack, 2);
}

}  // namespace

int text_width(const std::string& s, int scale) { return static_cast<int>(s.size()) * 6 * scale - (s.empty() ? 0 : scale); }

void draw_text(Image& img, int x, int y, const std::string& s, const uint8_t rgb[3], int scale) {
  const Rgb c{rgb[0], rgb[1], rgb[2]};
  for (size_t i = 0; i < s.size(); ++i) {
    const Glyph& g = glyph(s[i]);
    for (int row = 0; row < 7; ++row)
      for (int col = 0; col < 5; ++col)
        if (g.rows[row] & (0x10 >> col))
          fill_rect(img, x + (static_cast<int>(i) * 6 + col) * scale, y + row * scale,
                    x + (static_cast<int>(i) * 6 + col + 1) * scale, y + (row + 1) * scale, c);
  }
}

Image draw_reliability(const Metrics& raw, const Metrics* calibrated) {
  Image img = canvas(2 * 450, 470);
  reliability_panel(img, 0, 0, &raw, "RAW (T=1)", kBarRaw);
  reliability_panel(img, 450, 0, calibrated, "CALIBRATED", kBarCal);
  return img;
}

Image draw_confusion(const Metrics& m, const std::vector<std::string>& ids, const std::string& title) {
  const int K = static_cast<int>(ids.size());
  const int cell = 64, left = 110, top = 100;
  Image img = canvas(left + K * cell + 30, top + K * cell + 60);
  text(img, 10, 12, title, kBlack, 2);
  text(img, left + K * cell / 2 - text_width("PREDICTED (TOP-1)", 2) / 2, 40, "PREDICTED (TOP-1)", kBlack, 2);
  text(img, 10, top - 20, "TRUE", kBlack, 2);
  for (int k = 0; k < K; ++k) {
    const std::string id = ids[k].substr(0, 8);
    const int sc = text_width(id, 2) <= cell - 4 ? 2 : 1;
    text(img, left + k * cell + cell / 2 - text_width(id, sc) / 2, top - 22, id, kBlack, sc);
    text(img, left - 10 - text_width(id, 2), top + k * cell + cell / 2 - 7, id, kBlack, 2);
  }
  for (int t = 0; t < K; ++t) {
    int64_t row = 0;
    for (int p = 0; p < K; ++p) row += m.confusion[t][p];
    for (int p = 0; p < K; ++p) {
      const int64_t c = m.confusion[t][p];
      const double f = row ? static_cast<double>(c) / static_cast<double>(row) : 0.0;
      const Rgb shade{static_cast<uint8_t>(255 - std::lround(f * (255 - 30))),
                      static_cast<uint8_t>(255 - std::lround(f * (255 - 90))),
                      static_cast<uint8_t>(255 - std::lround(f * (255 - 170)))};
      const int x0 = left + p * cell, y0 = top + t * cell;
      fill_rect(img, x0, y0, x0 + cell, y0 + cell, shade);
      rect_outline(img, x0, y0, x0 + cell, y0 + cell, kGrid);
      if (row == 0) continue;
      const std::string s = std::to_string(c);
      const int sc = text_width(s, 2) <= cell - 6 ? 2 : 1;
      text(img, x0 + cell / 2 - text_width(s, sc) / 2, y0 + cell / 2 - 7 * sc / 2, s, f > 0.5 ? kWhite : kBlack, sc);
    }
  }
  rect_outline(img, left, top, left + K * cell, top + K * cell, kBlack);
  text(img, left, top + K * cell + 12, "SHADE = FRACTION OF THE ROW (RECALL ON THE DIAGONAL)", kDiag, 1);
  return img;
}

std::string base64(const std::vector<uint8_t>& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o;
  o.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    const uint32_t v = (uint32_t{in[i]} << 16) | (i + 1 < in.size() ? uint32_t{in[i + 1]} << 8 : 0) |
                       (i + 2 < in.size() ? uint32_t{in[i + 2]} : 0);
    o += t[(v >> 18) & 63];
    o += t[(v >> 12) & 63];
    o += i + 1 < in.size() ? t[(v >> 6) & 63] : '=';
    o += i + 2 < in.size() ? t[v & 63] : '=';
  }
  return o;
}

namespace {
std::string esc(const std::string& s) { return html_escape(s); }
}  // namespace

std::string eval_html(const EvalResult& r, const std::vector<uint8_t>& reliability_png,
                      const std::vector<uint8_t>& confusion_png) {
  const Metrics& h = r.headline();
  const Metrics* c = r.calibrated ? &*r.calibrated : nullptr;
  const std::string which = r.headline_calibrated() ? "calibrated" : "raw";
  std::string o;
  o += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>skingpt eval: " + esc(r.model) +
       " on " + esc(r.split) + "</title>\n<style>\n"
       "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\n"
       "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
       "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\n"
       ".note{color:#555;font-size:0.9em}.warn{color:#a00;font-weight:bold}img{max-width:100%}\n"
       "</style></head><body>\n";
  o += "<h1>Evaluation: " + esc(r.model) + "</h1>\n";
  o += "<p>Data <code>" + esc(r.data) + "</code>, split <code>" + esc(r.split) + "</code>, " + std::to_string(h.n) +
       " images, " + std::to_string(h.classes_present) + " of " + std::to_string(r.class_ids.size()) +
       " conditions present. Prompt language: " + esc(r.language) + ". Catalogue: " + esc(r.catalogue_source) +
       ". Calibration: " +
       (r.calibrated ? "<code>" + esc(r.calibration_source) + "</code>"
                     : std::string("<span class=\"warn\">none</span> (run <code>skingpt calibrate</code>)")) +
       ".</p>\n";
  o += "<p class=\"note\">Research evaluation of a decision-support model; not a clinical validation. "
       "Models trained on HAM10000 are for research and evaluation only (CC BY-NC 4.0).</p>\n";
  o += "<h2>Summary</h2>\n<table><tr><th>metric</th><th>raw (T = 1)</th><th>calibrated</th></tr>\n";
  auto row = [&](const std::string& name, double a, double b, bool percent) {
    auto f = [&](double v) { return percent ? pct(v) : f3(v); };
    o += "<tr><td>" + name + "</td><td>" + f(a) + "</td><td>" + (c ? f(b) : "—") + "</td></tr>\n";
  };
  auto cv = [&](double Metrics::*f) { return c ? c->*f : NAN; };
  row("balanced accuracy (mean recall over conditions present)", r.raw.balanced_accuracy,
      cv(&Metrics::balanced_accuracy), false);
  row("accuracy", r.raw.accuracy, cv(&Metrics::accuracy), false);
  row("top-3 accuracy", r.raw.top3_accuracy, cv(&Metrics::top3_accuracy), false);
  row("AUROC melanoma vs rest", r.raw.auroc_melanoma, cv(&Metrics::auroc_melanoma), false);
  row("AUROC malignant vs benign", r.raw.auroc_malignant, cv(&Metrics::auroc_malignant), false);
  row("expected calibration error (15 bins)", r.raw.ece, cv(&Metrics::ece), false);
  row("negative log-likelihood", r.raw.nll, cv(&Metrics::nll), false);
  row("malignant lesions neither top-1 nor flagged", r.raw.malignant_missed_unflagged,
      cv(&Metrics::malignant_missed_unflagged), true);
  row("malignant lesions neither top-1, flagged nor marked &ldquo;not sure&rdquo;", r.raw.malignant_missed_unreferred,
      cv(&Metrics::malignant_missed_unreferred), true);
  row("benign lesions flagged for urgent referral", r.raw.benign_flag_rate, cv(&Metrics::benign_flag_rate), true);
  row("images marked &ldquo;not sure&rdquo;", r.raw.uncertain_rate, cv(&Metrics::uncertain_rate), true);
  o += "</table>\n";
  o += "<p class=\"note\">Malignant: mel, bcc, akiec (catalogue conditions that are not benign). Flagged: a red-flag "
       "condition at or above the red-flag threshold (" +
       f3(c ? r.calibration->red_flag_threshold : r.raw_thresholds.red_flag_threshold) +
       " calibrated; the raw column applies " + f3(r.raw_thresholds.red_flag_threshold) +
       " to the raw probabilities).</p>\n";

  o += "<h2>Per condition (" + which + ")</h2>\n<table><tr><th>id</th><th>condition</th><th>n</th><th>predicted</th>"
       "<th>recall</th><th>precision</th><th>raw recall</th><th>raw precision</th></tr>\n";
  for (size_t k = 0; k < r.class_ids.size(); ++k) {
    const auto& s = h.per_class[k];
    if (s.support == 0) continue;
    o += "<tr><td>" + esc(r.class_ids[k]) + "</td><td>" + esc(k < r.class_names.size() ? r.class_names[k] : "") +
         "</td><td>" + std::to_string(s.support) + "</td><td>" + std::to_string(s.predicted) + "</td><td>" +
         f3(s.recall) + "</td><td>" + f3(s.precision) + "</td><td>" + f3(r.raw.per_class[k].recall) + "</td><td>" +
         f3(r.raw.per_class[k].precision) + "</td></tr>\n";
  }
  o += "</table>\n";
  if (const auto a = absent_classes(h, r.class_ids); !a.empty()) {
    o += "<p class=\"note\">Not in this data (left out of the averages):";
    for (const auto& x : a) o += " " + esc(x);
    o += "</p>\n";
  }

  o += "<h2>Confusion matrix (" + which + ")</h2>\n";
  o += "<img alt=\"confusion matrix\" src=\"data:image/png;base64," + base64(confusion_png) + "\">\n";
  o += "<table><tr><th>true \\ top-1</th>";
  for (const auto& id : r.class_ids) o += "<th>" + esc(id) + "</th>";
  o += "</tr>\n";
  for (size_t t = 0; t < r.class_ids.size(); ++t) {
    o += "<tr><td>" + esc(r.class_ids[t]) + "</td>";
    for (size_t p = 0; p < r.class_ids.size(); ++p) o += "<td>" + std::to_string(h.confusion[t][p]) + "</td>";
    o += "</tr>\n";
  }
  o += "</table>\n";

  o += "<h2>Reliability</h2>\n<img alt=\"reliability diagram\" src=\"data:image/png;base64," +
       base64(reliability_png) + "\">\n";
  o += "<p class=\"note\">Bars: accuracy of the top-1 answer per confidence bin (15 equal-width bins); dashed: "
       "perfect calibration; red: the gap to the bin's mean confidence.</p>\n";
  o += "<table><tr><th>bin</th><th>n raw</th><th>confidence</th><th>accuracy</th><th>n calibrated</th>"
       "<th>confidence</th><th>accuracy</th></tr>\n";
  for (size_t b = 0; b < r.raw.reliability.size(); ++b) {
    const auto& x = r.raw.reliability[b];
    o += "<tr><td>" + fmt("%.3f", x.lo) + "–" + fmt("%.3f", x.hi) + "</td><td>" + std::to_string(x.count) +
         "</td><td>" + f3(x.mean_confidence) + "</td><td>" + f3(x.accuracy) + "</td>";
    if (c) {
      const auto& y = c->reliability[b];
      o += "<td>" + std::to_string(y.count) + "</td><td>" + f3(y.mean_confidence) + "</td><td>" + f3(y.accuracy) +
           "</td>";
    } else {
      o += "<td>—</td><td>—</td><td>—</td>";
    }
    o += "</tr>\n";
  }
  o += "</table>\n";

  for (const auto& bd : r.breakdowns) {
    o += "<h2>By " + esc(bd.by) + " (" + which + ")</h2>\n<table><tr><th>group</th><th>n</th><th>balanced acc.</th>"
         "<th>top-3</th><th>AUROC mel</th><th>AUROC malignant</th><th>ECE</th><th>malignant</th>"
         "<th>malignant missed &amp; unflagged</th></tr>\n";
    for (const auto& g : bd.groups) {
      const auto& m = g.metrics;
      o += "<tr><td>" + esc(g.name) + "</td><td>" + std::to_string(m.n) + "</td><td>" + f3(m.balanced_accuracy) +
           "</td><td>" + f3(m.top3_accuracy) + "</td><td>" + f3(m.auroc_melanoma) + "</td><td>" +
           f3(m.auroc_malignant) + "</td><td>" + f3(m.ece) + "</td><td>" + std::to_string(m.malignant_n) +
           "</td><td>" + pct(m.malignant_missed_unflagged) + "</td></tr>\n";
    }
    o += "</table>\n";
  }

  o += "<h2>Calibration used</h2>\n";
  if (r.calibration) {
    const auto& k = *r.calibration;
    o += "<table><tr><th>parameter</th><th>value</th></tr><tr><td>temperature</td><td>" + fmt("%.4g", k.temperature) +
         "</td></tr><tr><td>red-flag threshold</td><td>" + f3(k.red_flag_threshold) +
         "</td></tr><tr><td>uncertain below top probability</td><td>" + f3(k.uncertain_max_prob) +
         "</td></tr><tr><td>uncertain below top-two margin</td><td>" + f3(k.uncertain_min_margin) + "</td></tr>";
    for (size_t i = 0; i < k.class_bias.size() && i < r.class_ids.size(); ++i)
      o += "<tr><td>bias " + esc(r.class_ids[i]) + "</td><td>" + fmt("%.4g", k.class_bias[i]) + "</td></tr>";
    o += "<tr><td>fitted on</td><td>" + esc(k.fitted_on) + "</td></tr></table>\n";
  } else {
    o += "<p>None: the calibrated column is empty. Fit one on a validation split (never the test split) with "
         "<code>skingpt calibrate</code>.</p>\n";
  }
  o += "<p class=\"note\">Definitions: docs/evaluation.md. Scoring time " + fmt("%.1f", r.seconds) + " s.</p>\n";
  o += "</body></html>\n";
  return o;
}

}  // namespace sg::clinic
