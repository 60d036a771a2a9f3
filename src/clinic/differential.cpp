#include "clinic/differential.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "core/error.h"

namespace sg::clinic {

const char* certainty_name(Certainty c) {
  switch (c) {
    case Certainty::High: return "high";
    case Certainty::Moderate: return "moderate";
    case Certainty::Low: return "low";
  }
  return "?";
}

double entropy_nats(const std::vector<double>& p) {
  double h = 0;
  for (double v : p)
    if (v > 0) h -= v * std::log(v);
  return h;
}

// Certainty is "high" only well beyond the uncertainty thresholds.
constexpr double kHighCertaintyProb = 0.80;
constexpr double kHighCertaintyMargin = 0.50;

Differential differential_from_probabilities(const std::vector<double>& probs, const std::vector<double>& loglik,
                                             const Catalogue& cat, const Calibration& cal) {
  if (probs.size() != cat.size())
    throw Error("differential: " + std::to_string(probs.size()) + " probabilities for a catalogue of " +
                std::to_string(cat.size()) + " conditions");
  if (!loglik.empty() && loglik.size() != cat.size()) throw Error("differential: scores do not match the catalogue");
  Differential d;
  std::vector<size_t> order(probs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return probs[a] > probs[b]; });
  for (size_t r = 0; r < order.size(); ++r) {
    const size_t i = order[r];
    Candidate c;
    c.index = i;
    c.id = cat[i].id;
    c.probability = probs[i];
    c.log_likelihood = loglik.empty() ? 0.0 : loglik[i];
    c.rank = static_cast<int>(r) + 1;
    c.red_flag = cat[i].red_flag && probs[i] >= cal.red_flag_threshold;
    if (c.red_flag) d.red_flags.push_back(r);
    d.ranked.push_back(c);
  }
  d.refer_urgently = !d.red_flags.empty();
  d.entropy = entropy_nats(probs);
  d.normalized_entropy =
      probs.size() > 1 ? std::clamp(d.entropy / std::log(static_cast<double>(probs.size())), 0.0, 1.0) : 0;
  d.top_probability = d.ranked.empty() ? 0 : d.ranked[0].probability;
  d.margin = d.ranked.size() > 1 ? d.ranked[0].probability - d.ranked[1].probability : d.top_probability;
  d.uncertain = d.top_probability < cal.uncertain_max_prob || d.margin < cal.uncertain_min_margin;
  if (d.uncertain) d.certainty = Certainty::Low;
  else if (d.top_probability >= std::max(kHighCertaintyProb, cal.uncertain_max_prob) &&
           d.margin >= std::max(kHighCertaintyMargin, cal.uncertain_min_margin))
    d.certainty = Certainty::High;
  else d.certainty = Certainty::Moderate;
  return d;
}

const char* score_context_name(ScoreContext c) {
  return c == ScoreContext::FirstAnswer ? "first_answer" : "score_question";
}

Differential build_differential(const std::vector<double>& loglik, const Catalogue& cat, const Calibration& cal) {
  if (loglik.size() != cat.size())
    throw Error("differential: " + std::to_string(loglik.size()) + " scores for a catalogue of " +
                std::to_string(cat.size()) + " conditions");
  return differential_from_probabilities(calibrated_probabilities(loglik, cal), loglik, cat, cal);
}

std::vector<const Candidate*> by_raw_score(const Differential& d) {
  std::vector<const Candidate*> v;
  for (const auto& c : d.ranked) v.push_back(&c);
  std::stable_sort(v.begin(), v.end(), [](const Candidate* a, const Candidate* b) {
    return a->log_likelihood > b->log_likelihood;
  });
  return v;
}

std::string likelihood_words(double p, Language lang) {
  const bool ja = lang == Language::Ja;
  if (p >= 0.8) return ja ? "可能性が非常に高い" : "very likely";
  if (p >= 0.5) return ja ? "可能性が高い" : "likely";
  if (p >= 0.2) return ja ? "可能性あり" : "possible";
  if (p >= 0.05) return ja ? "可能性は低め" : "less likely";
  return ja ? "可能性は低い" : "unlikely";
}

namespace {
std::string pct(double p) {
  char b[16];
  if (p > 0 && p < 0.005) std::snprintf(b, sizeof b, "<1%%");
  else std::snprintf(b, sizeof b, "%.0f%%", 100 * p);
  return b;
}
}  // namespace

std::string describe_uncertainty(const Differential& d, const Catalogue& cat, Language lang) {
  const bool ja = lang == Language::Ja;
  if (d.ranked.empty()) return "";
  const auto& a = d.ranked[0];
  const std::string na = cat[a.index].name.get(lang);
  std::string nb, pb;
  if (d.ranked.size() > 1) {
    nb = cat[d.ranked[1].index].name.get(lang);
    pb = pct(d.ranked[1].probability);
  }
  const bool spread = d.normalized_entropy >= 0.6;
  std::string s;
  switch (d.certainty) {
    case Certainty::High:
      s = ja ? "システムの確信度は比較的高いです：" + na + "（" + pct(a.probability) + "）が、次点の" + nb + "（" + pb +
                   "）を大きく上回っています。"
             : "The system is fairly confident: " + na + " (" + pct(a.probability) + ") is well ahead of " + nb + " (" +
                   pb + ").";
      break;
    case Certainty::Moderate:
      s = ja ? "システムは" + na + "（" + pct(a.probability) + "）を最も疑っていますが、他の疾患の可能性も残ります（次点：" +
                   nb + "、" + pb + "）。"
             : "The system leans towards " + na + " (" + pct(a.probability) +
                   "), but other conditions remain possible (next: " + nb + ", " + pb + ").";
      break;
    case Certainty::Low:
      if (ja) {
        s = "システムには判断がつきません：最も可能性が高い" + na + "でも" + pct(a.probability) + "で、";
        s += d.margin < 0.15 ? nb + "（" + pb + "）との差もわずかです。" : "確率が低すぎます。";
        if (spread) s += "確率が複数の疾患に分散しています。";
        s += "確信がないため、皮膚科専門医の診察を受けてください。";
      } else {
        s = "The system is not sure: the most likely condition, " + na + ", has only " + pct(a.probability);
        s += d.margin < 0.15 ? ", and " + nb + " is close behind (" + pb + ")." : ".";
        if (spread) s += " The probability is spread over several conditions.";
        s += " Not sure — see a dermatologist.";
      }
      break;
  }
  return s;
}

}  // namespace sg::clinic
