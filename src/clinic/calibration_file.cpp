#include "clinic/calibration_file.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"

namespace sg::clinic {

namespace fs = std::filesystem;
using nlohmann::json;

std::string calibration_file_name(Language lang) {
  return lang == Language::Ja ? "calibration.ja.json" : "calibration.json";
}

namespace {
[[noreturn]] void fail(const std::string& name, const std::string& field, const std::string& what) {
  throw Error(name + ": " + (field.empty() ? "" : field + ": ") + what);
}
double number(const json& o, const std::string& name, const std::string& key, double lo, double hi, bool required,
              double def) {
  auto it = o.find(key);
  if (it == o.end()) {
    if (required) fail(name, "", "missing required field '" + key + "'");
    return def;
  }
  if (!it->is_number()) fail(name, key, std::string("must be a number, not ") + it->type_name());
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi)
    fail(name, key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + it->dump());
  return v;
}
}  // namespace

Calibration parse_calibration(const std::string& text, const std::string& name, const Catalogue& cat) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    fail(name, "", std::string("not valid JSON: ") + e.what());
  }
  if (!root.is_object()) fail(name, "", "must be a JSON object");
  static const std::set<std::string> allowed = {"format", "version", "language", "conditions", "temperature",
                                                "class_bias", "uncertain_max_prob", "uncertain_min_margin",
                                                "red_flag_threshold", "fitted_on", "metrics", "comment"};
  for (auto it = root.begin(); it != root.end(); ++it)
    if (!allowed.count(it.key())) fail(name, "", "unknown field '" + it.key() + "'");
  if (root.value("format", std::string()) != "skingpt-calibration")
    fail(name, "format", "must be \"skingpt-calibration\"");
  if (!root.contains("version") || !root["version"].is_number_integer() ||
      root["version"].get<int64_t>() != kCalibrationFormatVersion)
    fail(name, "version", "must be " + std::to_string(kCalibrationFormatVersion));
  // The conditions it was fitted for must be the catalogue's (any order).
  const json& conds = root.contains("conditions") ? root["conditions"] : json();
  if (!conds.is_array()) fail(name, "conditions", "must be the array of condition ids it was fitted for");
  std::set<std::string> fitted, have;
  for (const auto& c : conds) {
    if (!c.is_string()) fail(name, "conditions", "must hold strings");
    if (!fitted.insert(c.get<std::string>()).second) fail(name, "conditions", "duplicate id " + c.dump());
  }
  for (const auto& c : cat.conditions()) have.insert(c.id);
  if (fitted != have) {
    std::string missing, extra;
    for (const auto& id : have)
      if (!fitted.count(id)) missing += " " + id;
    for (const auto& id : fitted)
      if (!have.count(id)) extra += " " + id;
    fail(name, "conditions",
         "fitted for other conditions than the catalogue (" + cat.source() + ")" +
             (missing.empty() ? "" : "; not calibrated:" + missing) + (extra.empty() ? "" : "; unknown:" + extra) +
             ". Run 'skingpt calibrate' again with this catalogue.");
  }
  Calibration c;
  c.temperature = number(root, name, "temperature", 1e-3, 1e3, true, 1.0);
  if (auto it = root.find("class_bias"); it != root.end() && !it->is_null()) {
    if (!it->is_object()) fail(name, "class_bias", "must be an object {condition id: bias}");
    c.class_bias.assign(cat.size(), 0.0);
    for (auto b = it->begin(); b != it->end(); ++b) {
      const auto idx = cat.index_of(b.key());
      if (!idx) fail(name, "class_bias." + b.key(), "not a condition of the catalogue");
      if (!b->is_number() || !std::isfinite(b->get<double>()))
        fail(name, "class_bias." + b.key(), "must be a finite number");
      c.class_bias[*idx] = b->get<double>();
    }
  }
  c.uncertain_max_prob = number(root, name, "uncertain_max_prob", 0, 1, false, c.uncertain_max_prob);
  c.uncertain_min_margin = number(root, name, "uncertain_min_margin", 0, 1, false, c.uncertain_min_margin);
  c.red_flag_threshold = number(root, name, "red_flag_threshold", 0, 1, false, c.red_flag_threshold);
  if (auto it = root.find("fitted_on"); it != root.end()) {
    if (!it->is_string()) fail(name, "fitted_on", "must be a string");
    c.fitted_on = it->get<std::string>();
  }
  if (auto it = root.find("language"); it != root.end() && !it->is_string())
    fail(name, "language", "must be \"en\" or \"ja\"");
  return c;
}

Calibration load_calibration(const std::string& path, const Catalogue& cat) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_calibration(ss.str(), path, cat);
}

std::optional<Calibration> find_calibration(const std::string& model_dir, Language lang, const Catalogue& cat,
                                            std::string* path_out) {
  if (model_dir.empty()) return std::nullopt;
  const fs::path p = fs::path(model_dir) / calibration_file_name(lang);
  std::error_code ec;
  if (!fs::exists(p, ec)) return std::nullopt;
  if (path_out) *path_out = p.string();
  return load_calibration(p.string(), cat);
}

std::string calibration_to_json(const Calibration& c, const Catalogue& cat, Language lang) {
  if (!c.class_bias.empty() && c.class_bias.size() != cat.size())
    throw Error("calibration: " + std::to_string(c.class_bias.size()) + " class biases for a catalogue of " +
                std::to_string(cat.size()));
  json j;
  j["format"] = "skingpt-calibration";
  j["version"] = kCalibrationFormatVersion;
  j["language"] = language_code(lang);
  j["conditions"] = cat.ids();
  j["temperature"] = c.temperature;
  if (!c.class_bias.empty()) {
    json b = json::object();
    for (size_t i = 0; i < cat.size(); ++i) b[cat[i].id] = c.class_bias[i];
    j["class_bias"] = b;
  }
  j["uncertain_max_prob"] = c.uncertain_max_prob;
  j["uncertain_min_margin"] = c.uncertain_min_margin;
  j["red_flag_threshold"] = c.red_flag_threshold;
  j["fitted_on"] = c.fitted_on;
  return j.dump(2) + "\n";
}

void save_calibration(const std::string& path, const Calibration& c, const Catalogue& cat, Language lang) {
  const std::string text = calibration_to_json(c, cat, lang);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(path + ": cannot write");
    f << text;
    if (!f.flush()) throw Error(path + ": write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(path + ": cannot write: " + ec.message());
}

}  // namespace sg::clinic
