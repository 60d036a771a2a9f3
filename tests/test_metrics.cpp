// Evaluation and calibration (issue 6, items 3 and 4): metrics against
// hand-computed examples, the temperature/bias fit and threshold choice on
// synthetic data with a known answer, the strict labels CSV reader, the
// lesion-level validation split, and `skingpt eval` / `skingpt calibrate`
// end to end on a few HAM10000 images with a tiny random-weight model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "clinic/calibrate.h"
#include "clinic/consultation.h"
#include "clinic/eval_report.h"
#include "clinic/labels.h"
#include "clinic/metrics.h"
#include "clinic/splits.h"
#include "core/error.h"
#include "formats/image.h"
#include "llama_fixtures.h"
#include "model/synth.h"
#include "model/vision_file.h"
#include "text/vocab.h"
#include "vision_fixtures.h"

namespace sg {
namespace {

using namespace clinic;

EvalRecord rec(int truth, std::vector<double> p, bool flagged = false) {
  EvalRecord r;
  r.truth = truth;
  r.prob = std::move(p);
  r.flagged = flagged;
  return r;
}

MetricsSpec spec4() {
  MetricsSpec s;
  s.classes = {"nv", "bkl", "mel", "df"};  // df never occurs below
  s.malignant = {false, false, true, false};
  s.melanoma = "mel";
  return s;
}

// Six images, three classes present, one class (df) absent.
std::vector<EvalRecord> six() {
  return {rec(0, {0.7, 0.2, 0.1, 0.0}),  // nv  → nv
          rec(0, {0.3, 0.6, 0.1, 0.0}),  // nv  → bkl
          rec(0, {0.5, 0.1, 0.4, 0.0}),  // nv  → nv
          rec(1, {0.2, 0.7, 0.1, 0.0}),  // bkl → bkl
          rec(2, {0.6, 0.1, 0.3, 0.0}),  // mel → nv (missed; not flagged)
          rec(2, {0.1, 0.1, 0.8, 0.0})};  // mel → mel
}

TEST(Metrics, HandComputedBalancedAccuracyPrecisionConfusion) {
  const Metrics m = compute_metrics(six(), spec4());
  EXPECT_EQ(m.n, 6);
  EXPECT_EQ(m.classes_present, 3);
  // Recalls 2/3, 1/1, 1/2; df absent and left out (with it as 0 the mean would be 0.5417).
  EXPECT_NEAR(m.balanced_accuracy, (2.0 / 3 + 1.0 + 0.5) / 3, 1e-12);
  EXPECT_NEAR(m.accuracy, 4.0 / 6, 1e-12);
  EXPECT_NEAR(m.per_class[0].recall, 2.0 / 3, 1e-12);
  EXPECT_NEAR(m.per_class[0].precision, 2.0 / 3, 1e-12);  // predicted nv: images 1, 3, 5
  EXPECT_NEAR(m.per_class[1].precision, 0.5, 1e-12);
  EXPECT_NEAR(m.per_class[2].precision, 1.0, 1e-12);
  EXPECT_TRUE(std::isnan(m.per_class[3].recall));
  EXPECT_TRUE(std::isnan(m.per_class[3].precision));
  EXPECT_EQ(m.per_class[3].support, 0);
  const std::vector<std::vector<int64_t>> want = {{2, 1, 0, 0}, {0, 1, 0, 0}, {1, 0, 1, 0}, {0, 0, 0, 0}};
  EXPECT_EQ(m.confusion, want);
  // Malignant: two melanomas, one top-1, the other neither top-1 nor flagged.
  EXPECT_EQ(m.malignant_n, 2);
  EXPECT_EQ(m.malignant_missed_unflagged_n, 1);
  EXPECT_NEAR(m.malignant_missed_unflagged, 0.5, 1e-12);
  // Melanoma AUROC by hand: positives p(mel) = 0.3, 0.8; negatives 0.1, 0.1, 0.4, 0.1.
  // Pairs won: 0.3 beats three of four, 0.8 beats all four → 7/8.
  EXPECT_NEAR(m.auroc_melanoma, 7.0 / 8, 1e-12);
}

TEST(Metrics, FlagsAndUncertaintyCountAsReferral) {
  auto r = six();
  r[4].flagged = true;  // the missed melanoma is now flagged
  Metrics m = compute_metrics(r, spec4());
  EXPECT_EQ(m.malignant_missed_unflagged_n, 0);
  EXPECT_EQ(m.malignant_flagged, 1);
  r[4].flagged = false;
  r[4].uncertain = true;
  m = compute_metrics(r, spec4());
  EXPECT_EQ(m.malignant_missed_unflagged_n, 1);   // "not sure" is not an urgent referral
  EXPECT_EQ(m.malignant_missed_unreferred_n, 0);  // but it does send the patient to a dermatologist
  r[0].flagged = true;  // a benign lesion flagged
  m = compute_metrics(r, spec4());
  EXPECT_EQ(m.benign_flagged, 1);
  EXPECT_NEAR(m.benign_flag_rate, 1.0 / 4, 1e-12);
}

TEST(Metrics, TopThreeAccuracyWithTies) {
  MetricsSpec s;
  s.classes = {"a", "b", "c", "d", "e"};
  s.malignant = {false, false, false, false, false};
  s.melanoma = "";
  const std::vector<EvalRecord> r = {
      rec(0, {0.1, 0.2, 0.3, 0.4, 0.0}),     // rank 4 (0-based 3): not top-3
      rec(1, {0.1, 0.2, 0.3, 0.4, 0.0}),     // rank 2: top-3
      rec(4, {0.25, 0.25, 0.25, 0.0, 0.25}),  // tie with three lower indices: rank 3, not top-3
      rec(0, {0.25, 0.25, 0.25, 0.0, 0.25}),  // tie, lowest index: rank 0
  };
  const Metrics m = compute_metrics(r, s);
  EXPECT_NEAR(m.top3_accuracy, 0.5, 1e-12);
  EXPECT_TRUE(std::isnan(m.auroc_melanoma));
}

TEST(Metrics, AurocRankStatisticWithTies) {
  EXPECT_NEAR(auroc({0.1, 0.4, 0.35, 0.8}, {false, false, true, true}), 0.75, 1e-12);
  EXPECT_NEAR(auroc({0.5, 0.5, 0.5, 0.5}, {true, false, true, false}), 0.5, 1e-12);  // all tied
  // One positive–negative tie counts 1/2: (0.5 vs 0.5) + three wins = 3.5 / 4.
  EXPECT_NEAR(auroc({0.5, 0.9, 0.5, 0.1}, {true, true, false, false}), 0.875, 1e-12);
  EXPECT_NEAR(auroc({0.9, 0.8, 0.1}, {false, false, true}), 0.0, 1e-12);
  EXPECT_TRUE(std::isnan(auroc({0.1, 0.2}, {true, true})));
  EXPECT_TRUE(std::isnan(auroc({0.1, 0.2}, {false, false})));
}

TEST(Metrics, ExpectedCalibrationErrorConstructed) {
  // Bin 14 (0.933, 1]: confidences .95, .95, one right → |0.5 − 0.95| = 0.45 with weight 1/2.
  // Bin 8 (0.533, 0.6]: confidences .55, .55, both right → |1 − 0.55| = 0.45 with weight 1/2.
  std::vector<ReliabilityBin> bins;
  const double ece = expected_calibration_error({0.95, 0.95, 0.55, 0.55}, {true, false, true, true}, 15, &bins);
  EXPECT_NEAR(ece, 0.45, 1e-12);
  ASSERT_EQ(bins.size(), 15u);
  EXPECT_EQ(bins[14].count, 2);
  EXPECT_EQ(bins[8].count, 2);
  EXPECT_NEAR(bins[8].accuracy, 1.0, 1e-12);
  EXPECT_NEAR(bins[14].mean_confidence, 0.95, 1e-12);
  EXPECT_EQ(bins[0].count, 0);
  // Bins are (b/15, (b+1)/15]: a confidence of exactly 0.6 = 9/15 belongs to bin 8, 1.0 to bin 14.
  expected_calibration_error({0.6, 1.0}, {true, true}, 15, &bins);
  EXPECT_EQ(bins[8].count, 1);
  EXPECT_EQ(bins[9].count, 0);
  EXPECT_EQ(bins[14].count, 1);
  // Perfectly calibrated bins give 0: confidence 0.75, 3 of 4 right.
  EXPECT_NEAR(expected_calibration_error({0.75, 0.75, 0.75, 0.75}, {true, true, true, false}, 15), 0.0, 1e-12);
  // Through compute_metrics: top-1 confidence of each record.
  MetricsSpec s;
  s.classes = {"a", "b"};
  s.malignant = {false, true};
  const Metrics m = compute_metrics({rec(0, {0.9, 0.1}), rec(1, {0.9, 0.1})}, s);
  EXPECT_NEAR(m.ece, 0.4, 1e-12);  // one bin: accuracy 0.5, confidence 0.9
}

TEST(Metrics, AgeBandsAndBreakdowns) {
  EXPECT_EQ(age_band(29.9), "<30");
  EXPECT_EQ(age_band(30), "30-44");
  EXPECT_EQ(age_band(44), "30-44");
  EXPECT_EQ(age_band(45), "45-59");
  EXPECT_EQ(age_band(74), "60-74");
  EXPECT_EQ(age_band(75), ">=75");
  EXPECT_EQ(age_band(NAN), "unknown");
  auto r = six();
  r[0].sex = "female"; r[0].age = 20; r[0].site = "back";
  r[1].sex = "male";   r[1].age = 50; r[1].site = "face";
  r[2].sex = "female"; r[2].age = 80; r[2].site = "back";
  r[4].sex = "male";   r[4].age = 62;
  const auto b = compute_breakdowns(r, spec4());
  ASSERT_EQ(b.size(), 3u);
  std::map<std::string, int64_t> sex, age, site;
  for (const auto& g : b[0].groups) sex[g.name] = g.metrics.n;
  for (const auto& g : b[1].groups) age[g.name] = g.metrics.n;
  for (const auto& g : b[2].groups) site[g.name] = g.metrics.n;
  EXPECT_EQ(sex, (std::map<std::string, int64_t>{{"female", 2}, {"male", 2}, {"unknown", 2}}));
  EXPECT_EQ(age, (std::map<std::string, int64_t>{{"<30", 1}, {"45-59", 1}, {"60-74", 1}, {">=75", 1}, {"unknown", 2}}));
  EXPECT_EQ(site, (std::map<std::string, int64_t>{{"back", 2}, {"face", 1}, {"unknown", 3}}));
  EXPECT_EQ(b[2].groups.back().name, "unknown");
  // The male group: image 1 (nv → bkl) and image 4 (mel → nv): both wrong, one malignant missed.
  for (const auto& g : b[0].groups)
    if (g.name == "male") {
      EXPECT_NEAR(g.metrics.balanced_accuracy, 0.0, 1e-12);
      EXPECT_EQ(g.metrics.classes_present, 2);
      EXPECT_NEAR(g.metrics.malignant_missed_unflagged, 1.0, 1e-12);
    }
}

// ---- calibration on synthetic data with a known answer ----

// Scores z ~ N(0, 3²) per condition; the true class drawn from softmax((z + bias) / T).
CalibrationData synthetic(int n, int K, double T, const std::vector<double>& bias, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N(0.0, 3.0);
  std::uniform_real_distribution<double> U(0.0, 1.0);
  CalibrationData d;
  for (int i = 0; i < n; ++i) {
    std::vector<double> z(K), p(K);
    double mx = -1e300, s = 0;
    for (int k = 0; k < K; ++k) z[k] = N(rng) - 20.0;  // log-likelihood-like offsets
    for (int k = 0; k < K; ++k) mx = std::max(mx, p[k] = (z[k] + (bias.empty() ? 0 : bias[k])) / T);
    for (auto& v : p) s += (v = std::exp(v - mx));
    double u = U(rng) * s;
    int y = K - 1;
    for (int k = 0; k < K; ++k)
      if ((u -= p[k]) <= 0) {
        y = k;
        break;
      }
    d.loglik.push_back(z);
    d.truth.push_back(y);
  }
  return d;
}

TEST(Calibrate, TemperatureFitRecoversKnownT) {
  for (double T : {0.5, 2.5}) {
    const auto d = synthetic(6000, 5, T, {}, 7);
    const auto f = fit_temperature(d);
    EXPECT_NEAR(f.temperature, T, 0.08 * T) << "true T " << T;
    EXPECT_LT(f.nll_after, f.nll_before);
    EXPECT_LE(f.nll_after, mean_nll(d, T) + 1e-9);  // the fit is at least as good as the truth
    // And it is a minimum: nudging T either way is worse.
    EXPECT_LT(f.nll_after, mean_nll(d, f.temperature * 1.05));
    EXPECT_LT(f.nll_after, mean_nll(d, f.temperature / 1.05));
  }
}

TEST(Calibrate, TemperatureAndBiasFitRecoversKnownValues) {
  const std::vector<double> bias = {2.0, -1.0, 0.0, -3.0, 2.0};
  const double T = 2.0;
  const auto d = synthetic(20000, 5, T, bias, 11);
  const auto f = fit_temperature_and_bias(d, 1e-4);
  EXPECT_NEAR(f.temperature, T, 0.1 * T);
  ASSERT_EQ(f.bias.size(), 5u);
  // Biases are defined up to a common constant: compare differences to the first.
  for (int k = 1; k < 5; ++k) EXPECT_NEAR(f.bias[k] - f.bias[0], bias[k] - bias[0], 0.5) << "condition " << k;
  EXPECT_LT(f.nll_after, fit_temperature(d).nll_after);  // biases help when the data has them
}

TEST(Calibrate, RedFlagThresholdReachesTargetSensitivity) {
  // 4 conditions: 0, 1 benign; 2, 3 malignant red flags. Calibrated-looking probabilities.
  const auto d = synthetic(3000, 4, 1.5, {1.0, 0.5, -0.5, -1.0}, 3);
  Calibration c;
  c.temperature = 1.5;
  std::vector<std::vector<double>> probs;
  for (const auto& z : d.loglik) probs.push_back(calibrated_probabilities(z, c));
  const std::vector<bool> mal = {false, false, true, true};
  for (double target : {0.8, 0.95, 0.99}) {
    const auto r = choose_red_flag_threshold(probs, d.truth, mal, mal, target);
    EXPECT_TRUE(r.target_met);
    EXPECT_GE(r.sensitivity, target);
    EXPECT_GT(r.threshold, 0.0);
    EXPECT_LE(r.threshold, 0.5);
    // Largest such threshold: a slightly higher one misses the target.
    const double up = std::nextafter(r.threshold, 1.0);
    int64_t caught = 0, n = 0;
    for (size_t i = 0; i < probs.size(); ++i) {
      if (!mal[d.truth[i]]) continue;
      ++n;
      const auto& p = probs[i];
      const int top = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
      if (top == d.truth[i] || std::max(p[2], p[3]) >= up) ++caught;
    }
    EXPECT_EQ(n, r.malignant_n);
    if (r.threshold < 0.5) {
      EXPECT_LT(static_cast<double>(caught) / n, target) << "target " << target;
    }
  }
  // An easy target is met by top-1 answers alone: the cap.
  EXPECT_DOUBLE_EQ(choose_red_flag_threshold(probs, d.truth, mal, mal, 0.05).threshold, 0.5);
}

TEST(Calibrate, UncertaintyThresholdsReachTargetAccuracy) {
  const auto d = synthetic(3000, 4, 1.0, {}, 5);
  std::vector<std::vector<double>> probs;
  for (const auto& z : d.loglik) probs.push_back(calibrated_probabilities(z, Calibration{}));
  const auto u = choose_uncertainty_thresholds(probs, d.truth, 0.9);
  ASSERT_TRUE(u.target_met);
  EXPECT_GE(u.confident_accuracy, 0.9);
  EXPECT_GT(u.coverage, 0.1);
  EXPECT_LT(u.coverage, 1.0);
  // Check the reported figures independently.
  int64_t cov = 0, hit = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    auto p = probs[i];
    const int top = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
    const double t = p[top];
    p[top] = -1;
    const double second = *std::max_element(p.begin(), p.end());
    if (t >= u.max_prob && t - second >= u.min_margin) ++cov, hit += top == d.truth[i];
  }
  EXPECT_NEAR(static_cast<double>(cov) / probs.size(), u.coverage, 1e-12);
  EXPECT_GE(static_cast<double>(hit) / cov, 0.9);
  // An impossible target: always "not sure".
  const auto never = choose_uncertainty_thresholds(probs, d.truth, 1.0 + 1e-9);
  EXPECT_FALSE(never.target_met);
  EXPECT_EQ(never.max_prob, 1.0);
}

TEST(Calibrate, FitCalibrationFillsTheContract) {
  const auto d = synthetic(2000, 4, 3.0, {0.5, 0.0, -0.5, 0.0}, 9);
  CalibrateOptions o;
  const auto r = fit_calibration(d, {false, false, true, true}, {false, false, true, true}, o);
  EXPECT_NEAR(r.calibration.temperature, 3.0, 0.5);
  EXPECT_EQ(r.calibration.class_bias.size(), 4u);
  EXPECT_EQ(r.calibration.red_flag_threshold, r.red_flag.threshold);
  EXPECT_GE(r.red_flag.sensitivity, 0.95);
  EXPECT_EQ(r.calibration.uncertain_max_prob, r.uncertainty.max_prob);
  o.fit_bias = false;
  EXPECT_TRUE(fit_calibration(d, {false, false, true, true}, {false, false, true, true}, o).calibration.class_bias.empty());
  CalibrationData bad = d;
  bad.loglik[3][1] = NAN;
  EXPECT_THROW(fit_calibration(bad, {false, false, true, true}, {false, false, true, true}, o), Error);
}

// ---- labels CSV ----

const char* kHeader = "image,image_id,dx,split,lesion_id,dx_type,age,sex,localization\n";

std::string error_of(const std::string& text) {
  try {
    parse_labels_csv(text, "x.csv", "/data");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(LabelsCsv, ParsesHam10000Rows) {
  const std::string t = std::string("\xEF\xBB\xBF") + kHeader +
                        "images/a.jpg,a,nv,ham10000_train,HAM_1,histo,45.0,male,lower extremity\r\n"
                        "images/b.jpg,b,mel,isic2018_task3_test,,,,,\n"
                        "\"images/c,d.jpg\",c,bkl,t,L,x,80,Female,\"trunk, \"\"upper\"\"\"\n\n";
  const auto rows = parse_labels_csv(t, "x.csv", "/data");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].image_path, "/data/images/a.jpg");
  EXPECT_EQ(rows[0].dx, "nv");
  EXPECT_EQ(rows[0].age, 45);
  EXPECT_EQ(rows[0].sex, "male");
  EXPECT_EQ(rows[0].site, "lower extremity");
  EXPECT_EQ(rows[0].line, 2);
  EXPECT_TRUE(std::isnan(rows[1].age));
  EXPECT_EQ(rows[1].sex, "");
  EXPECT_EQ(rows[1].lesion_id, "");
  EXPECT_EQ(rows[2].image, "images/c,d.jpg");
  EXPECT_EQ(rows[2].sex, "female");
  EXPECT_EQ(rows[2].site, "trunk, \"upper\"");
  // Optional columns may be missing altogether.
  const auto min = parse_labels_csv("dx,image,split\nnv,/abs/x.png,s\n", "m.csv", "/data");
  ASSERT_EQ(min.size(), 1u);
  EXPECT_EQ(min[0].image_path, "/abs/x.png");
  EXPECT_EQ(min[0].lesion_id, "");
}

TEST(LabelsCsv, ErrorsNameFileLineAndProblem) {
  EXPECT_NE(error_of("image,split,age\na.jpg,t,3\n").find("x.csv:1: missing required column 'dx'"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kHeader) + "a.jpg,a,nv,t,L,x,40,male,back\nb.jpg,b,nv,t,L\n")
                .find("x.csv:3: expected 9 fields (as the header), found 5"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kHeader) + "a.jpg,a,nv,t,L,x,forty,male,back\n").find("x.csv:2: 'age' is 'forty'"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kHeader) + "a.jpg,a,nv,t,L,x,40,m,back\n").find("x.csv:2: 'sex' is 'm'"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kHeader) + "a.jpg,a,,t,L,x,40,male,back\n").find("x.csv:2: empty 'dx'"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kHeader) + "a.jpg,a,nv,t,L,x,40,male,back\n\nb.jpg,b,nv,t,L,x,4,male,back\n")
                .find("x.csv:3: empty line"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kHeader) + "\"a.jpg,a,nv,t,L,x,40,male,back\n").find("x.csv:2: unterminated"),
            std::string::npos);
  EXPECT_NE(error_of("image,dx,split,dx\na,b,c,d\n").find("duplicate column 'dx'"), std::string::npos);
  EXPECT_NE(error_of("").find("x.csv: empty file"), std::string::npos);
  EXPECT_THROW(read_labels_csv("/nonexistent/labels.csv"), Error);
}

TEST(LabelsCsv, ScoresFileRoundTrips) {
  ScoresFile f;
  f.condition_ids = {"nv", "mel"};
  ScoredRow r;
  r.label = parse_labels_csv(std::string(kHeader) + "i/a.jpg,a,mel,ham10000_val,HAM_9,histo,55,female,\"back, left\"\n",
                             "x.csv", "")[0];
  r.loglik = {-12.345678901234567, -0.1};
  f.rows.push_back(r);
  r.label.age = NAN;
  r.label.sex = "";
  r.loglik = {-1e-300, -3};
  f.rows.push_back(r);
  const ScoresFile g = parse_scores_csv(scores_csv(f), "s.csv");
  EXPECT_EQ(g.condition_ids, f.condition_ids);
  ASSERT_EQ(g.rows.size(), 2u);
  EXPECT_EQ(g.rows[0].loglik, f.rows[0].loglik);  // bit-exact (%.17g)
  EXPECT_EQ(g.rows[1].loglik, f.rows[1].loglik);
  EXPECT_EQ(g.rows[0].label.site, "back, left");
  EXPECT_EQ(g.rows[0].label.split, "ham10000_val");
  EXPECT_EQ(g.rows[0].label.age, 55);
  EXPECT_TRUE(std::isnan(g.rows[1].label.age));
  EXPECT_THROW(parse_scores_csv("image,dx,split\na,nv,t\n", "s.csv"), Error);  // no loglik columns
  EXPECT_THROW(parse_scores_csv("image,dx,split,loglik_nv\na,nv,t,abc\n", "s.csv"), Error);
}

// ---- the lesion-level validation split ----

TEST(Splits, ValidationRuleIsPinnedDeterministicAndAboutTenPercent) {
  // Pinned: the trainer (issue 5) and these tools must agree forever.
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cull);  // the published FNV-1a 64 test vector
  int n = 0;
  std::string first;
  for (int i = 0; i < 10000; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "HAM_%07d", i);
    const bool v = is_validation_lesion(id);
    EXPECT_EQ(v, is_validation_lesion(std::string(id)));  // deterministic
    EXPECT_EQ(v, splitmix64_finalize(fnv1a64(id)) % 100 < 10);
    if (v && first.empty()) first = id;
    n += v;
  }
  EXPECT_GT(n, 900);
  EXPECT_LT(n, 1100);
  EXPECT_FALSE(is_validation_lesion(""));
}

TEST(Splits, DerivedSplitsKeepLesionsTogether) {
  std::string t = kHeader;
  for (int i = 0; i < 3000; ++i) {
    const int lesion = i / 3;  // three images per lesion
    // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on the chained '+'.
    t.append("i").append(std::to_string(i)).append(".jpg,x,nv,ham10000_train,HAM_");
    t.append(std::to_string(lesion)).append(",h,40,male,back\n");
  }
  t += "t.jpg,x,nv,isic2018_task3_test,,,,,\n";
  const auto rows = parse_labels_csv(t, "x.csv", "");
  const auto val = select_split(rows, "ham10000_val", "x.csv");
  const auto fit = select_split(rows, "ham10000_fit", "x.csv");
  EXPECT_EQ(val.size() + fit.size(), 3000u);
  EXPECT_EQ(val.size() % 3, 0u);  // whole lesions
  EXPECT_GT(val.size(), 3000u * 7 / 100);
  EXPECT_LT(val.size(), 3000u * 13 / 100);
  std::set<std::string> a, b;
  for (const auto& r : val) a.insert(r.lesion_id);
  for (const auto& r : fit) b.insert(r.lesion_id);
  for (const auto& l : a) EXPECT_FALSE(b.count(l)) << "lesion " << l << " in both splits";
  EXPECT_EQ(select_split(rows, "isic2018_task3_test", "x.csv").size(), 1u);
  // A literal split of that name wins over the derived one.
  const auto lit = parse_labels_csv(std::string(kHeader) + "a.jpg,a,nv,ham10000_val,L,x,,,\n", "y.csv", "");
  EXPECT_EQ(select_split(lit, "ham10000_val", "y.csv").size(), 1u);
  try {
    select_split(rows, "nonsense", "x.csv");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ham10000_train"), std::string::npos) << e.what();
  }
  // Deriving needs lesion ids.
  const auto nolesion = parse_labels_csv(std::string(kHeader) + "a.jpg,a,nv,ham10000_train,,x,,,\n", "z.csv", "");
  EXPECT_THROW(select_split(nolesion, "ham10000_val", "z.csv"), Error);
}

TEST(Splits, Ham10000ValidationSplitOfTheSharedData) {
  const auto csv = test::shared_dir() / "data/ham10000/labels.csv";
  if (!std::filesystem::exists(csv)) GTEST_SKIP() << "no " << csv;
  const auto rows = read_labels_csv(csv.string());
  const auto val = select_split(rows, "ham10000_val", csv.string());
  const auto fit = select_split(rows, "ham10000_fit", csv.string());
  EXPECT_EQ(val.size(), 598u);  // pinned: changing the rule changes this
  EXPECT_EQ(fit.size(), 5984u - 598u);
  for (const auto& r : val) EXPECT_EQ(r.split, "ham10000_train");
}

// ---- plots ----

TEST(EvalReport, PlotsDrawBarsCellsAndText) {
  Metrics m = compute_metrics(six(), spec4());
  const Image rel = draw_reliability(m, &m);
  const Image conf = draw_confusion(m, spec4().classes, "TEST");
  ASSERT_GT(rel.width, 0);
  // Something other than white was drawn in both.
  auto inked = [](const Image& im) {
    int64_t k = 0;
    for (auto v : im.rgb) k += v != 255;
    return k;
  };
  EXPECT_GT(inked(rel), 1000);
  EXPECT_GT(inked(conf), 1000);
  // The diagonal cell of a perfectly recalled row (bkl, 1 of 1) is the darkest shade.
  const int cell = 64, left = 110, top = 100;
  const uint8_t* full = conf.pixel(left + 1 * cell + 3, top + 1 * cell + 3);
  const uint8_t* empty = conf.pixel(left + 3 * cell + 3, top + 1 * cell + 3);
  EXPECT_LT(full[0], 60);
  EXPECT_EQ(empty[0], 255);
  // The font draws digits: "8" has more pixels than "1".
  Image a, b;
  a.width = b.width = 20;
  a.height = b.height = 10;
  a.rgb.assign(600, 255);
  b.rgb.assign(600, 255);
  const uint8_t black[3] = {0, 0, 0};
  draw_text(a, 1, 1, "8", black);
  draw_text(b, 1, 1, "1", black);
  EXPECT_GT(inked(a), inked(b));
  EXPECT_EQ(base64({'M', 'a', 'n'}), "TWFu");
  EXPECT_EQ(base64({'M', 'a'}), "TWE=");
  EXPECT_EQ(base64({'M'}), "TQ==");
}

// ---- end to end ----

// A tiny random-weight model folder with the real Llama-2 tokenizer.
struct TinyModel {
  test::TempDir dir;
  TinyModel() {
    Vocab v = load_vocab((test::shared_dir() / "tokenizer/tokenizer.model").string());
    LlamaConfig c;
    c.n_vocab = static_cast<int64_t>(v.size()); c.dim = 64; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 4;
    c.ffn = 128; c.n_ctx_train = 2048; c.rope_dim = 16; c.rms_eps = 1e-6f;
    test::write_llama((dir / "llm.gguf").string(), c, QuantScheme{}, test::random_llama_source(c, 11), &v);
    synth_vision((dir / "vision.gguf").string(), test::ref_vision_config(), DType::F32, 5);
  }
};

nlohmann::json parse_json(const std::string& s) {
  try {
    return nlohmann::json::parse(s);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON: " << e.what() << "\n" << s.substr(0, 2000);
    return {};
  }
}

TEST(EvalCommand, EvalAndCalibrateEndToEnd) {
  const auto ham = test::shared_dir() / "data/ham10000";
  if (!std::filesystem::exists(ham / "labels.csv")) GTEST_SKIP() << "no HAM10000 data";
  TinyModel model;
  test::TempDir work;
  // Ten images of five conditions from the training split, with their
  // metadata, grouped so that --limit 8 takes two each of mel, nv, bcc, bkl
  // and leaves akiec out.
  const auto rows = read_labels_csv((ham / "labels.csv").string());
  const std::vector<std::string> order = {"mel", "nv", "bcc", "bkl", "akiec"};
  std::map<std::string, std::vector<LabelRow>> by_dx;
  for (const auto& r : rows)
    if (r.split == "ham10000_train" && by_dx[r.dx].size() < 2) by_dx[r.dx].push_back(r);
  std::string csv = kHeader;
  for (const auto& dx : order)
    for (const auto& r : by_dx[dx]) {
      char age[16];
      std::snprintf(age, sizeof age, "%g", r.age);
      csv += r.image_path + "," + r.image_id + "," + r.dx + ",mini," + r.lesion_id + "," + r.dx_type + "," +
             (std::isnan(r.age) ? "" : age) + "," + r.sex + "," + csv_field(r.site) + "\n";
    }
  std::ofstream(work / "labels.csv") << csv;
  const std::string bin = SKINGPT_BINARY, out = (work / "out").string(), mdir = model.dir.path().string();
  const std::string cmd = bin + " eval --data " + (work / "labels.csv").string() + " --split mini --model " + mdir +
                          " --out " + out + " --json --limit 8 -t 2 --answers 3";
  const std::string json_file = (work / "eval.json").string();
  const auto run = test::run_command("(" + cmd + " > " + json_file + ")");  // stderr still captured
  ASSERT_EQ(run.status, 0) << cmd << "\n" << run.output;
  EXPECT_NE(run.output.find("scoring"), std::string::npos) << "progress bar on stderr";
  const auto j = parse_json(test::read_bytes(json_file));
  ASSERT_TRUE(j.is_object());
  for (const char* k : {"n", "balanced_accuracy", "top3_accuracy", "auroc_melanoma", "auroc_malignant", "ece_raw",
                        "ece_calibrated", "malignant_missed_unflagged", "per_class", "breakdowns"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["n"], 8);
  // --answers 3: the first question was asked for three images and read back
  // (a random model names no condition, so only the counts are checked).
  ASSERT_TRUE(j.contains("answers")) << j.dump();
  EXPECT_EQ(j["answers"]["n"], 3);
  EXPECT_EQ(j["answers"]["temperature"].get<double>(), 0.0);  // describe's default: greedy
  EXPECT_TRUE(j["answers"]["names_none"].is_number());
  EXPECT_TRUE(j["balanced_accuracy"].is_number());
  EXPECT_TRUE(j["auroc_melanoma"].is_number());  // two melanomas and six others
  EXPECT_TRUE(j["ece_calibrated"].is_null());    // the model has no calibration.json yet
  EXPECT_TRUE(j["malignant_missed_unflagged"].is_number());
  EXPECT_GE(j["malignant_missed_unflagged"].get<double>(), 0.0);
  EXPECT_LE(j["malignant_missed_unflagged"].get<double>(), 1.0);
  // Only the conditions present are listed: mel, nv, bcc, bkl (akiec was cut by --limit).
  int64_t total = 0;
  for (auto& [dx, v] : j["per_class"].items()) {
    EXPECT_TRUE(dx == "mel" || dx == "nv" || dx == "bcc" || dx == "bkl") << dx;
    EXPECT_TRUE(v.contains("recall") && v.contains("precision") && v.contains("n"));
    EXPECT_EQ(v["n"], 2) << dx;
    total += v["n"].get<int64_t>();
  }
  EXPECT_EQ(total, 8);
  EXPECT_EQ(j["per_class"].size(), 4u);
  EXPECT_FALSE(j["per_class"].contains("akiec"));
  for (const char* b : {"sex", "age", "site"}) EXPECT_TRUE(j["breakdowns"].contains(b)) << b;
  // Files: decodable PNGs, a self-contained HTML page, the score cache.
  for (const char* f : {"reliability.png", "confusion.png"}) {
    const Image im = decode_image(out + "/" + f);
    EXPECT_GT(im.width, 200) << f;
  }
  const std::string html = test::read_bytes(out + "/report.html");
  EXPECT_NE(html.find("data:image/png;base64,"), std::string::npos);
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_NE(html.find("balanced accuracy"), std::string::npos);
  EXPECT_NE(html.find("By site"), std::string::npos);
  const auto scores = read_scores_csv(out + "/scores.csv");
  ASSERT_EQ(scores.rows.size(), 8u);
  EXPECT_EQ(scores.condition_ids.size(), 7u);  // the built-in catalogue
  EXPECT_EQ(parse_json(test::read_bytes(out + "/metrics.json"))["n"], 8);

  // Scores differ between images (the image reaches the scores).
  EXPECT_NE(scores.rows[0].loglik, scores.rows[1].loglik);

  // answers.csv: one row per answered image; its margin is the gap between the
  // image's two highest scores in scores.csv, and the margin bins of the
  // metrics count every answered image once.
  const CsvTable answers = read_csv(out + "/answers.csv");
  ASSERT_EQ(answers.rows.size(), 3u);
  const int id_col = answers.column("image_id"), margin_col = answers.column("margin"), top_col = answers.column("top_scored");
  ASSERT_GE(id_col, 0);
  ASSERT_GE(margin_col, 0);
  ASSERT_GE(top_col, 0);
  for (const auto& row : answers.rows) {
    const auto it = std::find_if(scores.rows.begin(), scores.rows.end(),
                                 [&](const ScoredRow& x) { return x.label.image_id == row[id_col]; });
    ASSERT_NE(it, scores.rows.end()) << row[id_col];
    std::vector<double> l = it->loglik;
    const size_t top = std::max_element(l.begin(), l.end()) - l.begin();
    EXPECT_EQ(row[top_col], scores.condition_ids[top]);
    std::sort(l.rbegin(), l.rend());
    EXPECT_NEAR(std::stod(row[margin_col]), l[0] - l[1], 1e-3) << row[id_col];
  }
  int64_t in_bins = 0;
  for (const auto& b : j["answers"]["by_margin"]) in_bins += b["n"].get<int64_t>();
  EXPECT_EQ(j["answers"]["by_margin"].size(), 3u);
  EXPECT_EQ(in_bins, 3);

  // Calibrate from the cached scores, into the model folder; then eval uses it.
  const auto cal = test::run_command(bin + " calibrate --scores " + out + "/scores.csv --model " + mdir);
  ASSERT_EQ(cal.status, 0) << cal.output;
  ASSERT_TRUE(std::filesystem::exists(model.dir / "calibration.json"));
  const auto calj = parse_json(test::read_bytes((model.dir / "calibration.json").string()));
  EXPECT_GT(calj["temperature"].get<double>(), 0.0);
  EXPECT_EQ(calj["metrics"]["n"], 8);
  const auto again = test::run_command("(" + bin + " eval --scores " + out + "/scores.csv --model " + mdir +
                                       " --out " + (work / "out2").string() + " --json > " + json_file + ")");
  ASSERT_EQ(again.status, 0) << again.output;
  const auto j2 = parse_json(test::read_bytes(json_file));
  EXPECT_TRUE(j2["ece_calibrated"].is_number());
  EXPECT_EQ(j2["ece_raw"], j["ece_raw"]);  // same scores, same raw figures
  EXPECT_EQ(j2["probabilities"], "calibrated");
  // Fitted on these very images, the calibrated NLL cannot be worse than the raw one.
  EXPECT_LE(j2["calibrated"]["nll"].get<double>(), j2["raw"]["nll"].get<double>() + 1e-9);
}

TEST(EvalCommand, RefusesBadInputWithClearErrors) {
  test::TempDir work;
  const std::string bin = SKINGPT_BINARY;
  // Calibrating on a test split is refused before anything is loaded.
  auto r = test::run_command(bin + " calibrate --data x.csv --split isic2018_task3_test");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("test split"), std::string::npos) << r.output;
  // A malformed labels file names its line.
  std::ofstream(work / "bad.csv") << kHeader << "a.jpg,a,nv,s,L,x,40,male\n";
  TinyModel model;
  r = test::run_command(bin + " eval --data " + (work / "bad.csv").string() + " --split s --model " +
                        model.dir.path().string() + " --out " + (work / "o").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("bad.csv:2: expected 9 fields"), std::string::npos) << r.output;
  // A diagnosis the catalogue does not know.
  const auto img = (test::shared_dir() / "data/ham10000/images/ISIC_0024306.jpg").string();
  std::ofstream(work / "unk.csv") << kHeader << img << ",a,psoriasis,s,L,x,40,male,back\n";
  r = test::run_command(bin + " eval --data " + (work / "unk.csv").string() + " --split s --model " +
                        model.dir.path().string() + " --out " + (work / "o").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("unk.csv:2: dx 'psoriasis' is not a condition"), std::string::npos) << r.output;
  // --patient runs the model, so it cannot come with cached scores.
  r = test::run_command(bin + " eval --scores x.csv --patient");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--patient runs the model"), std::string::npos) << r.output;
}

TEST(EvalCommand, PatientDetailsFromTheLabels) {
  clinic::LabelRow row;
  row.age = 60;
  row.sex = "female";
  row.site = "back";
  const clinic::PatientInfo p = clinic::patient_of(row, Language::En);
  ASSERT_TRUE(p.age.has_value());
  EXPECT_EQ(*p.age, 60);
  EXPECT_EQ(p.sex, "female");
  EXPECT_EQ(p.site, "back");
  EXPECT_TRUE(p.history.empty());
  EXPECT_EQ(clinic::patient_of(row, Language::Ja).sex, "女性");
  // The same context the training texts were written with.
  EXPECT_EQ(clinic::patient_context(p, Language::En), "(Patient information: 60 years old; sex: female; site: back.)");
  row.age = NAN;
  row.sex = row.site = "";
  EXPECT_TRUE(clinic::patient_of(row, Language::En).empty()) << "unknown age, sex and site: no patient context";
}

}  // namespace
}  // namespace sg
