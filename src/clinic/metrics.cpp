#include "clinic/metrics.h"

#include <algorithm>
#include <functional>
#include <map>
#include <numeric>

#include "core/error.h"

namespace sg::clinic {

namespace {

int argmax_first(const std::vector<double>& p) {
  int best = 0;
  for (size_t k = 1; k < p.size(); ++k)
    if (p[k] > p[best]) best = static_cast<int>(k);
  return best;
}

// Rank (0 = top) of class t: classes with a higher probability, plus equal
// ones with a lower index, come first.
int rank_of(const std::vector<double>& p, int t) {
  int r = 0;
  for (size_t k = 0; k < p.size(); ++k)
    if (p[k] > p[t] || (p[k] == p[t] && static_cast<int>(k) < t)) ++r;
  return r;
}

double frac(int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : NAN; }

}  // namespace

double auroc(const std::vector<double>& score, const std::vector<bool>& positive) {
  const size_t n = score.size();
  if (positive.size() != n) throw Error("auroc: scores and labels differ in length");
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return score[a] < score[b]; });
  // Mid-ranks (1-based) over runs of equal scores.
  std::vector<double> rank(n);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && score[idx[j + 1]] == score[idx[i]]) ++j;
    const double mid = (static_cast<double>(i + 1) + static_cast<double>(j + 1)) / 2;
    for (size_t k = i; k <= j; ++k) rank[idx[k]] = mid;
    i = j + 1;
  }
  double sum_pos = 0;
  int64_t n_pos = 0;
  for (size_t i = 0; i < n; ++i)
    if (positive[i]) sum_pos += rank[i], ++n_pos;
  const int64_t n_neg = static_cast<int64_t>(n) - n_pos;
  if (n_pos == 0 || n_neg == 0) return NAN;
  const double u = sum_pos - static_cast<double>(n_pos) * (n_pos + 1) / 2.0;
  return u / (static_cast<double>(n_pos) * static_cast<double>(n_neg));
}

double expected_calibration_error(const std::vector<double>& confidence, const std::vector<bool>& correct, int bins,
                                  std::vector<ReliabilityBin>* reliability) {
  if (bins < 1) throw Error("expected_calibration_error: bins must be >= 1");
  if (confidence.size() != correct.size()) throw Error("expected_calibration_error: lengths differ");
  std::vector<double> sum_conf(bins, 0.0);
  std::vector<int64_t> count(bins, 0), hits(bins, 0);
  for (size_t i = 0; i < confidence.size(); ++i) {
    const double c = std::clamp(confidence[i], 0.0, 1.0);
    // Bin b covers (b/B, (b+1)/B]; 0 goes to bin 0.
    int b = static_cast<int>(std::ceil(c * bins)) - 1;
    b = std::clamp(b, 0, bins - 1);
    sum_conf[b] += c;
    ++count[b];
    hits[b] += correct[i] ? 1 : 0;
  }
  const double n = static_cast<double>(confidence.size());
  double ece = 0;
  if (reliability) reliability->assign(bins, {});
  for (int b = 0; b < bins; ++b) {
    ReliabilityBin rb;
    rb.lo = static_cast<double>(b) / bins;
    rb.hi = static_cast<double>(b + 1) / bins;
    rb.count = count[b];
    if (count[b] > 0) {
      rb.mean_confidence = sum_conf[b] / count[b];
      rb.accuracy = static_cast<double>(hits[b]) / count[b];
      ece += count[b] / n * std::abs(rb.accuracy - rb.mean_confidence);
    }
    if (reliability) (*reliability)[b] = rb;
  }
  return confidence.empty() ? NAN : ece;
}

Metrics compute_metrics(const std::vector<EvalRecord>& records, const MetricsSpec& spec) {
  const size_t K = spec.classes.size();
  if (K == 0) throw Error("compute_metrics: no classes");
  if (spec.malignant.size() != K) throw Error("compute_metrics: malignant flags do not match the classes");
  int mel = -1;
  for (size_t k = 0; k < K; ++k)
    if (!spec.melanoma.empty() && spec.classes[k] == spec.melanoma) mel = static_cast<int>(k);

  Metrics m;
  m.n = static_cast<int64_t>(records.size());
  m.per_class.assign(K, {});
  m.confusion.assign(K, std::vector<int64_t>(K, 0));
  std::vector<double> conf, mel_score, mal_score;
  std::vector<bool> correct, is_mel, is_mal;
  int64_t hit1 = 0, hit3 = 0, uncertain = 0;
  double nll = 0, brier = 0;
  for (const auto& r : records) {
    if (r.prob.size() != K) throw Error("compute_metrics: a record has " + std::to_string(r.prob.size()) +
                                        " probabilities for " + std::to_string(K) + " classes");
    if (r.truth < 0 || r.truth >= static_cast<int>(K)) throw Error("compute_metrics: true class out of range");
    const int top = argmax_first(r.prob);
    const bool ok = top == r.truth;
    m.confusion[r.truth][top]++;
    m.per_class[r.truth].support++;
    m.per_class[top].predicted++;
    if (ok) m.per_class[top].correct++, ++hit1;
    if (rank_of(r.prob, r.truth) < 3) ++hit3;
    if (r.uncertain) ++uncertain;
    conf.push_back(r.prob[top]);
    correct.push_back(ok);
    nll += -std::log(std::max(r.prob[r.truth], 1e-300));
    for (size_t k = 0; k < K; ++k) {
      const double d = r.prob[k] - (static_cast<int>(k) == r.truth ? 1.0 : 0.0);
      brier += d * d;
    }
    if (mel >= 0) {
      mel_score.push_back(r.prob[mel]);
      is_mel.push_back(r.truth == mel);
    }
    double s = 0;
    for (size_t k = 0; k < K; ++k)
      if (spec.malignant[k]) s += r.prob[k];
    mal_score.push_back(s);
    const bool malignant = spec.malignant[r.truth];
    is_mal.push_back(malignant);
    if (malignant) {
      m.malignant_n++;
      if (ok) m.malignant_top1++;
      if (r.flagged) m.malignant_flagged++;
      if (!ok && !r.flagged) m.malignant_missed_unflagged_n++;
      if (!ok && !r.flagged && !r.uncertain) m.malignant_missed_unreferred_n++;
    } else {
      m.benign_n++;
      if (r.flagged) m.benign_flagged++;
    }
  }
  double sum_recall = 0, sum_prec = 0;
  int n_prec = 0;
  for (auto& c : m.per_class) {
    c.recall = frac(c.correct, c.support);
    c.precision = frac(c.correct, c.predicted);
    if (c.support > 0) {
      ++m.classes_present;
      sum_recall += c.recall;
      if (c.predicted > 0) sum_prec += c.precision, ++n_prec;
    }
  }
  if (m.n > 0) {
    m.accuracy = frac(hit1, m.n);
    m.top3_accuracy = frac(hit3, m.n);
    m.balanced_accuracy = sum_recall / m.classes_present;
    m.macro_precision = n_prec ? sum_prec / n_prec : NAN;
    m.nll = nll / m.n;
    m.brier = brier / m.n;
    m.uncertain_rate = frac(uncertain, m.n);
  }
  m.ece = expected_calibration_error(conf, correct, spec.ece_bins, &m.reliability);
  if (mel >= 0) m.auroc_melanoma = auroc(mel_score, is_mel);
  m.auroc_malignant = auroc(mal_score, is_mal);
  m.malignant_missed_unflagged = frac(m.malignant_missed_unflagged_n, m.malignant_n);
  m.malignant_missed_unreferred = frac(m.malignant_missed_unreferred_n, m.malignant_n);
  m.benign_flag_rate = frac(m.benign_flagged, m.benign_n);
  return m;
}

std::string age_band(double age) {
  if (std::isnan(age) || age < 0) return "unknown";
  if (age < 30) return "<30";
  if (age < 45) return "30-44";
  if (age < 60) return "45-59";
  if (age < 75) return "60-74";
  return ">=75";
}

std::vector<Breakdown> compute_breakdowns(const std::vector<EvalRecord>& records, const MetricsSpec& spec) {
  auto by = [&](const std::string& name, const std::vector<std::string>& order,
                const std::function<std::string(const EvalRecord&)>& key) {
    std::map<std::string, std::vector<EvalRecord>> groups;
    for (const auto& r : records) groups[key(r)].push_back(r);
    Breakdown b;
    b.by = name;
    std::vector<std::string> names = order;
    for (const auto& [k, v] : groups)
      if (std::find(names.begin(), names.end(), k) == names.end() && k != "unknown") names.push_back(k);
    if (std::find(names.begin(), names.end(), "unknown") == names.end()) names.push_back("unknown");
    for (const auto& g : names) {
      auto it = groups.find(g);
      if (it == groups.end() || it->second.empty()) continue;
      b.groups.push_back({g, compute_metrics(it->second, spec)});
    }
    return b;
  };
  std::vector<Breakdown> out;
  out.push_back(by("sex", {"female", "male", "unknown"},
                   [](const EvalRecord& r) { return r.sex.empty() ? std::string("unknown") : r.sex; }));
  out.push_back(by("age", {"<30", "30-44", "45-59", "60-74", ">=75", "unknown"},
                   [](const EvalRecord& r) { return age_band(r.age); }));
  out.push_back(by("site", {}, [](const EvalRecord& r) { return r.site.empty() ? std::string("unknown") : r.site; }));
  return out;
}

}  // namespace sg::clinic
