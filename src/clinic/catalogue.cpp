#include "clinic/catalogue.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "core/error.h"

namespace sg::clinic {

namespace fs = std::filesystem;
using nlohmann::json;

const char* malignancy_name(Malignancy m) {
  switch (m) {
    case Malignancy::Benign: return "benign";
    case Malignancy::Premalignant: return "premalignant";
    case Malignancy::Malignant: return "malignant";
  }
  return "?";
}

namespace {

constexpr size_t kMaxConditions = 500;
constexpr size_t kMaxText = 2000;

class Checker {
 public:
  explicit Checker(std::string name) : name_(std::move(name)) {}
  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error(name_ + ": " + (field.empty() ? "" : field + ": ") + what);
  }
  const json& member(const json& obj, const std::string& field, const std::string& key) const {
    auto it = obj.find(key);
    if (it == obj.end()) fail(field, "missing required field '" + key + "'");
    return *it;
  }
  void only_keys(const json& obj, const std::string& field, std::initializer_list<const char*> allowed) const {
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      bool ok = false;
      for (const char* a : allowed) ok = ok || it.key() == a;
      if (!ok) {
        std::string list;
        for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
        fail(field, "unknown field '" + it.key() + "' (allowed: " + list + ")");
      }
    }
  }
  std::string text(const json& v, const std::string& field, size_t max = kMaxText) const {
    if (!v.is_string()) fail(field, std::string("must be a string, not ") + v.type_name());
    std::string s = v.get<std::string>();
    size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
    if (a == std::string::npos) fail(field, "must not be empty");
    s = s.substr(a, b - a + 1);
    if (s.size() > max) fail(field, "longer than " + std::to_string(max) + " bytes");
    for (unsigned char c : s)
      if (c < 0x20 && c != '\n') fail(field, "contains a control character");
    return s;
  }
  LocalText local(const json& obj, const std::string& field, const std::string& key, size_t max = kMaxText) const {
    const std::string f = field + "." + key;
    const json& v = member(obj, field, key);
    if (!v.is_object()) fail(f, "must be an object {\"en\": ..., \"ja\": ...}");
    only_keys(v, f, {"en", "ja"});
    LocalText t;
    t.en = text(member(v, f, "en"), f + ".en", max);
    t.ja = text(member(v, f, "ja"), f + ".ja", max);
    return t;
  }

 private:
  std::string name_;
};

}  // namespace

Catalogue Catalogue::parse(const std::string& json_text, const std::string& name) {
  Checker ck(name);
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::parse_error& e) {
    ck.fail("", std::string("not valid JSON: ") + e.what());
  }
  if (!root.is_object()) ck.fail("", "must be a JSON object with \"format\", \"version\" and \"conditions\"");
  ck.only_keys(root, "", {"format", "version", "comment", "conditions"});
  const json& fmt = ck.member(root, "", "format");
  if (!fmt.is_string() || fmt.get<std::string>() != "skingpt-conditions")
    ck.fail("format", "must be \"skingpt-conditions\"");
  const json& ver = ck.member(root, "", "version");
  if (!ver.is_number_integer()) ck.fail("version", "must be an integer");
  if (ver.get<int64_t>() != 1)
    ck.fail("version", "unsupported version " + ver.dump() + " (this program reads version 1)");
  const json& list = ck.member(root, "", "conditions");
  if (!list.is_array()) ck.fail("conditions", "must be an array");
  if (list.size() < 2) ck.fail("conditions", "needs at least 2 conditions to rank");
  if (list.size() > kMaxConditions) ck.fail("conditions", "more than " + std::to_string(kMaxConditions));

  static const std::regex id_re("[a-z0-9][a-z0-9_\\-]{0,31}");
  static const std::regex icd_re("[A-Z][0-9]{2}(\\.[0-9A-Z]{1,4})?");
  Catalogue cat;
  cat.source_ = name;
  cat.version_ = 1;
  std::set<std::string> ids, phrases_en, phrases_ja;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& c = list[i];
    std::string field = "conditions[" + std::to_string(i) + "]";
    if (!c.is_object()) ck.fail(field, "must be an object");
    // Name the entry by its id in later messages when it has a usable one.
    if (auto it = c.find("id"); it != c.end() && it->is_string()) field += " (" + it->get<std::string>() + ")";
    ck.only_keys(c, field, {"id", "name", "icd10", "malignancy", "red_flag", "description", "phrase", "comment"});
    Condition d;
    d.id = ck.text(ck.member(c, field, "id"), field + ".id", 32);
    if (!std::regex_match(d.id, id_re))
      ck.fail(field + ".id", "'" + d.id + "' must be 1-32 lowercase letters, digits, '_' or '-'");
    if (!ids.insert(d.id).second) ck.fail(field + ".id", "duplicate id '" + d.id + "'");
    d.name = ck.local(c, field, "name", 200);
    const json& icd = ck.member(c, field, "icd10");
    if (!icd.is_array() || icd.empty())
      ck.fail(field + ".icd10", "must be a non-empty array of ICD-10 codes, e.g. [\"C43\"]");
    for (size_t k = 0; k < icd.size(); ++k) {
      const std::string f = field + ".icd10[" + std::to_string(k) + "]";
      std::string code = ck.text(icd[k], f, 16);
      if (!std::regex_match(code, icd_re)) ck.fail(f, "'" + code + "' is not an ICD-10 code (like C43 or L57.0)");
      d.icd10.push_back(code);
    }
    const std::string mal = ck.text(ck.member(c, field, "malignancy"), field + ".malignancy", 32);
    if (mal == "benign") d.malignancy = Malignancy::Benign;
    else if (mal == "premalignant") d.malignancy = Malignancy::Premalignant;
    else if (mal == "malignant") d.malignancy = Malignancy::Malignant;
    else ck.fail(field + ".malignancy", "'" + mal + "' must be \"benign\", \"premalignant\" or \"malignant\"");
    d.red_flag = d.malignancy != Malignancy::Benign;
    if (auto it = c.find("red_flag"); it != c.end()) {
      if (!it->is_boolean()) ck.fail(field + ".red_flag", "must be true or false");
      d.red_flag = it->get<bool>();
      // Malignant conditions are never silently ranked away (DESIGN.md §8).
      if (d.malignancy == Malignancy::Malignant && !d.red_flag)
        ck.fail(field + ".red_flag", "a malignant condition must be a red flag");
    }
    d.description = ck.local(c, field, "description");
    d.phrase = ck.local(c, field, "phrase", 200);
    if (!phrases_en.insert(d.phrase.en).second)
      ck.fail(field + ".phrase.en", "duplicate phrase '" + d.phrase.en + "' (each condition needs its own)");
    if (!phrases_ja.insert(d.phrase.ja).second)
      ck.fail(field + ".phrase.ja", "duplicate phrase '" + d.phrase.ja + "' (each condition needs its own)");
    if (auto it = c.find("comment"); it != c.end() && !it->is_string())
      ck.fail(field + ".comment", "must be a string");
    cat.conditions_.push_back(std::move(d));
  }
  if (auto it = root.find("comment"); it != root.end() && !it->is_string()) ck.fail("comment", "must be a string");
  return cat;
}

Catalogue Catalogue::load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open the condition catalogue");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse(ss.str(), path);
}

Catalogue Catalogue::builtin() {
  Catalogue c = parse(builtin_json(), "built-in catalogue");
  c.source_ = "built-in";
  return c;
}

Catalogue Catalogue::resolve(const std::string& explicit_path, const std::string& model_dir) {
  if (!explicit_path.empty()) return load(explicit_path);
  if (!model_dir.empty()) {
    const fs::path p = fs::path(model_dir) / "conditions.json";
    std::error_code ec;
    if (fs::exists(p, ec)) return load(p.string());
  }
  return builtin();
}

std::optional<size_t> Catalogue::index_of(const std::string& id) const {
  for (size_t i = 0; i < conditions_.size(); ++i)
    if (conditions_[i].id == id) return i;
  return std::nullopt;
}

std::vector<std::string> Catalogue::ids() const {
  std::vector<std::string> v;
  for (const auto& c : conditions_) v.push_back(c.id);
  return v;
}

}  // namespace sg::clinic
