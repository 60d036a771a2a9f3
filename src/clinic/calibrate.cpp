#include "clinic/calibrate.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "core/error.h"

namespace sg::clinic {

namespace {

constexpr double kMinT = 1e-3, kMaxT = 1e3;  // the range calibration.json accepts

// Rows shifted so their maximum is 0 (softmax and the NLL do not change);
// checks shapes and finiteness.
std::vector<std::vector<double>> centred(const CalibrationData& d) {
  if (d.loglik.size() != d.truth.size()) throw Error("calibrate: scores and labels differ in length");
  if (d.loglik.empty()) throw Error("calibrate: no validation images");
  const size_t K = d.loglik[0].size();
  if (K < 2) throw Error("calibrate: need at least two conditions");
  std::vector<std::vector<double>> z = d.loglik;
  for (size_t i = 0; i < z.size(); ++i) {
    if (z[i].size() != K) throw Error("calibrate: image " + std::to_string(i) + " has a different number of scores");
    if (d.truth[i] < 0 || d.truth[i] >= static_cast<int>(K)) throw Error("calibrate: true class out of range");
    double mx = -std::numeric_limits<double>::infinity();
    for (double v : z[i]) {
      if (!std::isfinite(v)) throw Error("calibrate: image " + std::to_string(i) + " has a non-finite score");
      mx = std::max(mx, v);
    }
    for (double& v : z[i]) v -= mx;
  }
  return z;
}

// Mean NLL of softmax(beta*z + c) and, when wanted, its gradient and Hessian
// in θ = (beta, c[free...]).
double objective(const std::vector<std::vector<double>>& z, const std::vector<int>& y, double beta,
                 const std::vector<double>& c, const std::vector<int>& free, double l2, std::vector<double>* grad,
                 std::vector<std::vector<double>>* hess) {
  const size_t K = z[0].size(), P = free.size(), D = 1 + P;
  std::vector<int> slot(K, -1);
  for (size_t f = 0; f < P; ++f) slot[free[f]] = static_cast<int>(f) + 1;
  double f_sum = 0;
  if (grad) grad->assign(D, 0.0);
  if (hess) hess->assign(D, std::vector<double>(D, 0.0));
  std::vector<double> a(K), p(K), mean_x(D);
  for (size_t i = 0; i < z.size(); ++i) {
    double mx = -std::numeric_limits<double>::infinity();
    for (size_t k = 0; k < K; ++k) mx = std::max(mx, a[k] = beta * z[i][k] + c[k]);
    double s = 0;
    for (size_t k = 0; k < K; ++k) s += (p[k] = std::exp(a[k] - mx));
    for (size_t k = 0; k < K; ++k) p[k] /= s;
    f_sum += mx + std::log(s) - a[y[i]];
    if (!grad) continue;
    // E_p[x] with x_k = (z_k, e_slot(k)).
    std::fill(mean_x.begin(), mean_x.end(), 0.0);
    for (size_t k = 0; k < K; ++k) {
      mean_x[0] += p[k] * z[i][k];
      if (slot[k] > 0) mean_x[slot[k]] += p[k];
    }
    (*grad)[0] += mean_x[0] - z[i][y[i]];
    for (size_t d = 1; d < D; ++d) (*grad)[d] += mean_x[d];
    if (slot[y[i]] > 0) (*grad)[slot[y[i]]] -= 1.0;
    if (!hess) continue;
    // Cov_p[x] = E[x xᵀ] − E[x]E[x]ᵀ.
    auto& H = *hess;
    for (size_t k = 0; k < K; ++k) {
      const double zk = z[i][k];
      H[0][0] += p[k] * zk * zk;
      if (slot[k] > 0) {
        H[0][slot[k]] += p[k] * zk;
        H[slot[k]][0] += p[k] * zk;
        H[slot[k]][slot[k]] += p[k];
      }
    }
    for (size_t u = 0; u < D; ++u)
      for (size_t v = 0; v < D; ++v) H[u][v] -= mean_x[u] * mean_x[v];
  }
  const double n = static_cast<double>(z.size());
  double reg = 0;
  for (size_t f = 0; f < P; ++f) reg += c[free[f]] * c[free[f]];
  if (grad) {
    for (auto& g : *grad) g /= n;
    for (size_t f = 0; f < P; ++f) (*grad)[f + 1] += 2 * l2 * c[free[f]];
  }
  if (hess) {
    for (auto& row : *hess)
      for (auto& h : row) h /= n;
    for (size_t f = 0; f < P; ++f) (*hess)[f + 1][f + 1] += 2 * l2;
    (*hess)[0][0] += 1e-12;
  }
  return f_sum / n + l2 * reg;
}

// Solves H d = -g (Gaussian elimination with partial pivoting); false when singular.
bool newton_direction(std::vector<std::vector<double>> H, std::vector<double> g, std::vector<double>* d) {
  const size_t n = g.size();
  for (size_t i = 0; i < n; ++i) g[i] = -g[i];
  for (size_t col = 0; col < n; ++col) {
    size_t piv = col;
    for (size_t r = col + 1; r < n; ++r)
      if (std::abs(H[r][col]) > std::abs(H[piv][col])) piv = r;
    if (!(std::abs(H[piv][col]) > 1e-300)) return false;
    std::swap(H[piv], H[col]);
    std::swap(g[piv], g[col]);
    for (size_t r = col + 1; r < n; ++r) {
      const double f = H[r][col] / H[col][col];
      for (size_t k = col; k < n; ++k) H[r][k] -= f * H[col][k];
      g[r] -= f * g[col];
    }
  }
  d->assign(n, 0.0);
  for (size_t i = n; i-- > 0;) {
    double s = g[i];
    for (size_t k = i + 1; k < n; ++k) s -= H[i][k] * (*d)[k];
    (*d)[i] = s / H[i][i];
  }
  for (double v : *d)
    if (!std::isfinite(v)) return false;
  return true;
}

std::pair<int, double> top_and_margin(const std::vector<double>& p, double* top) {
  int best = 0;
  for (size_t k = 1; k < p.size(); ++k)
    if (p[k] > p[best]) best = static_cast<int>(k);
  double second = 0;
  for (size_t k = 0; k < p.size(); ++k)
    if (static_cast<int>(k) != best) second = std::max(second, p[k]);
  *top = p[best];
  return {best, p[best] - second};
}

}  // namespace

double mean_nll(const CalibrationData& d, double temperature, const std::vector<double>& bias) {
  const auto z = centred(d);
  const size_t K = z[0].size();
  if (!bias.empty() && bias.size() != K) throw Error("calibrate: bias has the wrong length");
  std::vector<double> c(K, 0.0);
  for (size_t k = 0; k < bias.size(); ++k) c[k] = bias[k] / temperature;
  return objective(z, d.truth, 1.0 / temperature, c, {}, 0.0, nullptr, nullptr);
}

TemperatureFit fit_temperature(const CalibrationData& d) {
  const auto z = centred(d);
  const std::vector<double> zero(z[0].size(), 0.0);
  auto f = [&](double u) { return objective(z, d.truth, std::exp(-u), zero, {}, 0.0, nullptr, nullptr); };
  const double lo = std::log(kMinT), hi = std::log(kMaxT);
  const int steps = 120;
  int best = 0;
  double best_f = std::numeric_limits<double>::infinity();
  for (int i = 0; i <= steps; ++i) {
    const double v = f(lo + (hi - lo) * i / steps);
    if (v < best_f) best_f = v, best = i;
  }
  double a = lo + (hi - lo) * std::max(best - 1, 0) / steps, b = lo + (hi - lo) * std::min(best + 1, steps) / steps;
  const double r = (std::sqrt(5.0) - 1) / 2;
  double x1 = b - r * (b - a), x2 = a + r * (b - a), f1 = f(x1), f2 = f(x2);
  int it = 0;
  for (; it < 100 && b - a > 1e-10; ++it) {
    if (f1 <= f2) {
      b = x2, x2 = x1, f2 = f1, x1 = b - r * (b - a), f1 = f(x1);
    } else {
      a = x1, x1 = x2, f1 = f2, x2 = a + r * (b - a), f2 = f(x2);
    }
  }
  TemperatureFit out;
  double u = (a + b) / 2;
  if (f(u) > best_f) u = lo + (hi - lo) * best / steps;
  out.temperature = std::clamp(std::exp(u), kMinT, kMaxT);
  out.iterations = it;
  out.nll_before = f(0.0);
  out.nll_after = f(std::log(out.temperature));
  return out;
}

TemperatureFit fit_temperature_and_bias(const CalibrationData& d, double l2) {
  const auto z = centred(d);
  const size_t K = z[0].size();
  // Only conditions with validation examples get a bias.
  std::vector<int> free;
  {
    std::vector<bool> present(K, false);
    for (int y : d.truth) present[y] = true;
    for (size_t k = 0; k < K; ++k)
      if (present[k]) free.push_back(static_cast<int>(k));
  }
  const TemperatureFit t0 = fit_temperature(d);
  double beta = 1.0 / t0.temperature;
  std::vector<double> c(K, 0.0), g, dir;
  std::vector<std::vector<double>> H;
  double fval = objective(z, d.truth, beta, c, free, l2, &g, &H);
  int it = 0;
  const double beta_lo = 1.0 / kMaxT, beta_hi = 1.0 / kMinT;
  for (; it < 100; ++it) {
    // Active set: β at a bound with the gradient pushing outwards stays put,
    // and the Newton step is taken in c alone.
    const bool beta_fixed = (beta <= beta_lo * (1 + 1e-12) && g[0] > 0) || (beta >= beta_hi * (1 - 1e-12) && g[0] < 0);
    std::vector<double> gp = g;
    if (beta_fixed) gp[0] = 0;
    double gnorm = 0;
    for (double v : gp) gnorm += v * v;
    if (std::sqrt(gnorm) < 1e-9) break;
    bool ok;
    if (beta_fixed) {
      std::vector<std::vector<double>> Hc(H.size() - 1, std::vector<double>(H.size() - 1));
      for (size_t u = 1; u < H.size(); ++u)
        for (size_t v = 1; v < H.size(); ++v) Hc[u - 1][v - 1] = H[u][v];
      std::vector<double> dc;
      ok = !Hc.empty() && newton_direction(Hc, std::vector<double>(gp.begin() + 1, gp.end()), &dc);
      dir.assign(gp.size(), 0.0);
      if (ok) std::copy(dc.begin(), dc.end(), dir.begin() + 1);
    } else {
      ok = newton_direction(H, gp, &dir);
    }
    if (!ok) dir.assign(gp.size(), 0.0);
    double slope = 0;
    for (size_t i = 0; i < gp.size(); ++i) slope += gp[i] * dir[i];
    if (!(slope < 0)) {  // not a descent direction: steepest descent
      for (size_t i = 0; i < gp.size(); ++i) dir[i] = -gp[i];
    }
    // Backtracking on the projected step (β kept in its range), Armijo on the actual move.
    double step = 1.0;
    bool moved = false;
    for (int bt = 0; bt < 60; ++bt, step /= 2) {
      const double nb = std::clamp(beta + step * dir[0], beta_lo, beta_hi);
      std::vector<double> nc = c;
      for (size_t f = 0; f < free.size(); ++f) nc[free[f]] += step * dir[f + 1];
      double actual = g[0] * (nb - beta);
      for (size_t f = 0; f < free.size(); ++f) actual += g[f + 1] * (nc[free[f]] - c[free[f]]);
      if (!(actual < 0)) continue;
      const double nf = objective(z, d.truth, nb, nc, free, l2, nullptr, nullptr);
      if (nf <= fval + 1e-4 * actual) {
        beta = nb;
        c = std::move(nc);
        moved = true;
        break;
      }
    }
    if (!moved) break;
    fval = objective(z, d.truth, beta, c, free, l2, &g, &H);
  }
  TemperatureFit out;
  out.temperature = 1.0 / beta;
  out.bias.assign(K, 0.0);
  for (size_t k = 0; k < K; ++k) out.bias[k] = c[k] * out.temperature;
  out.iterations = it;
  out.nll_before = t0.nll_before;
  out.nll_after = objective(z, d.truth, beta, c, {}, 0.0, nullptr, nullptr);
  // Never worse than temperature alone (the penalty could in principle make it so).
  if (out.nll_after > t0.nll_after) {
    out.temperature = t0.temperature;
    out.bias.assign(K, 0.0);
    out.nll_after = t0.nll_after;
  }
  return out;
}

RedFlagChoice choose_red_flag_threshold(const std::vector<std::vector<double>>& probs, const std::vector<int>& truth,
                                        const std::vector<bool>& malignant, const std::vector<bool>& red_flag,
                                        double target, double cap) {
  if (probs.size() != truth.size()) throw Error("calibrate: probabilities and labels differ in length");
  RedFlagChoice r;
  std::vector<double> flag_score(probs.size(), 0.0);
  std::vector<bool> top1(probs.size());
  for (size_t i = 0; i < probs.size(); ++i) {
    const auto& p = probs[i];
    if (p.size() != malignant.size() || p.size() != red_flag.size()) throw Error("calibrate: class count mismatch");
    double top;
    top1[i] = top_and_margin(p, &top).first == truth[i];
    for (size_t k = 0; k < p.size(); ++k)
      if (red_flag[k]) flag_score[i] = std::max(flag_score[i], p[k]);
  }
  std::vector<double> missed_scores;  // malignant lesions not caught by top-1
  int64_t by_top1 = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (!malignant[truth[i]]) continue;
    ++r.malignant_n;
    if (top1[i]) ++by_top1;
    else missed_scores.push_back(flag_score[i]);
  }
  const int64_t required = static_cast<int64_t>(std::ceil(target * static_cast<double>(r.malignant_n) - 1e-9));
  const int64_t need = required - by_top1;
  if (need <= 0) {
    r.threshold = cap;
  } else {
    std::sort(missed_scores.begin(), missed_scores.end(), std::greater<double>());
    r.threshold = std::min(cap, missed_scores[static_cast<size_t>(need - 1)]);  // need <= missed_scores.size()
  }
  for (size_t i = 0; i < probs.size(); ++i) {
    const bool flagged = flag_score[i] >= r.threshold;
    if (malignant[truth[i]]) {
      if (top1[i] || flagged) ++r.caught;
    } else {
      ++r.benign_n;
      if (flagged) ++r.benign_flagged;
    }
  }
  r.sensitivity = r.malignant_n ? static_cast<double>(r.caught) / static_cast<double>(r.malignant_n) : 1.0;
  r.target_met = r.malignant_n > 0 && r.caught >= required;
  return r;
}

UncertaintyChoice choose_uncertainty_thresholds(const std::vector<std::vector<double>>& probs,
                                                const std::vector<int>& truth, double target_accuracy) {
  if (probs.size() != truth.size()) throw Error("calibrate: probabilities and labels differ in length");
  const size_t n = probs.size();
  std::vector<double> top(n), margin(n);
  std::vector<bool> ok(n);
  int64_t wrong = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto [best, m] = top_and_margin(probs[i], &top[i]);
    margin[i] = m;
    ok[i] = best == truth[i];
    if (!ok[i]) ++wrong;
  }
  const int64_t min_count = std::max<int64_t>(10, static_cast<int64_t>(std::ceil(0.02 * static_cast<double>(n))));
  UncertaintyChoice best;
  int64_t best_cov = -1;
  for (int pi = 0; pi <= 100; ++pi) {
    const double p = pi / 100.0;
    for (int mi = 0; mi <= 100; ++mi) {
      const double m = mi / 100.0;
      int64_t cov = 0, hit = 0;
      for (size_t i = 0; i < n; ++i)
        if (top[i] >= p && margin[i] >= m) ++cov, hit += ok[i] ? 1 : 0;
      if (cov < min_count || static_cast<double>(hit) < target_accuracy * static_cast<double>(cov) - 1e-9) continue;
      if (cov >= best_cov) {
        best_cov = cov;
        best.max_prob = p;
        best.min_margin = m;
        best.target_met = true;
      }
    }
  }
  // The statistics at the chosen pair (or at p = m = 1 when none qualified).
  int64_t cov = 0, hit = 0, captured = 0;
  for (size_t i = 0; i < n; ++i) {
    const bool confident = top[i] >= best.max_prob && margin[i] >= best.min_margin;
    if (confident) ++cov, hit += ok[i] ? 1 : 0;
    else if (!ok[i]) ++captured;
  }
  best.coverage = n ? static_cast<double>(cov) / static_cast<double>(n) : 0;
  best.confident_accuracy = cov ? static_cast<double>(hit) / static_cast<double>(cov) : 0;
  best.error_capture = wrong ? static_cast<double>(captured) / static_cast<double>(wrong) : 1.0;
  return best;
}

CalibrationResult fit_calibration(const CalibrationData& d, const std::vector<bool>& malignant,
                                  const std::vector<bool>& red_flag, const CalibrateOptions& opt) {
  if (!(opt.target_sensitivity > 0 && opt.target_sensitivity <= 1))
    throw Error("calibrate: target sensitivity must be in (0, 1]");
  if (!(opt.target_confident_accuracy > 0 && opt.target_confident_accuracy <= 1))
    throw Error("calibrate: target confident accuracy must be in (0, 1]");
  CalibrationResult r;
  r.n = static_cast<int64_t>(d.truth.size());
  r.fit = opt.fit_bias ? fit_temperature_and_bias(d, opt.bias_l2) : fit_temperature(d);
  r.calibration.temperature = r.fit.temperature;
  r.calibration.class_bias = r.fit.bias;
  std::vector<std::vector<double>> probs;
  probs.reserve(d.loglik.size());
  for (const auto& z : d.loglik) probs.push_back(calibrated_probabilities(z, r.calibration));
  r.red_flag = choose_red_flag_threshold(probs, d.truth, malignant, red_flag, opt.target_sensitivity, opt.red_flag_cap);
  r.uncertainty = choose_uncertainty_thresholds(probs, d.truth, opt.target_confident_accuracy);
  r.calibration.red_flag_threshold = r.red_flag.threshold;
  r.calibration.uncertain_max_prob = r.uncertainty.max_prob;
  r.calibration.uncertain_min_margin = r.uncertainty.min_margin;
  return r;
}

}  // namespace sg::clinic
