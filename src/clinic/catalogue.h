// The condition catalogue: which conditions the consultation scores and how it
// shows them. A JSON data file (docs/consultation.md, data/conditions.json),
// validated strictly: every error names the file and the field.
//
// Where the catalogue comes from (first match wins):
//   1. an explicit file (`skingpt describe --conditions FILE`),
//   2. MODEL_DIR/conditions.json (a model trained on other classes carries its own),
//   3. the built-in default, compiled into the program; it is identical to
//      data/conditions.json (a test checks this), the seven HAM10000 classes.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "clinic/language.h"

namespace sg::clinic {

enum class Malignancy { Benign, Premalignant, Malignant };
const char* malignancy_name(Malignancy m);  // "benign", "premalignant", "malignant"

struct Condition {
  std::string id;            // short code, e.g. "mel" (HAM10000 dx codes for the default)
  LocalText name;            // "Melanoma" / "悪性黒色腫"
  std::vector<std::string> icd10;  // one or more ICD-10 codes, e.g. {"C43"}
  Malignancy malignancy = Malignancy::Benign;
  // Red flag: a probability at or above the calibrated red-flag threshold
  // means "refer urgently". Defaults to malignancy != benign; a file may set
  // "red_flag" explicitly.
  bool red_flag = false;
  LocalText description;     // one or two plain sentences
  // The answer text scored after the answer prefix ("This could be a skin
  // disease image of " + "melanoma"), in each consultation language.
  LocalText phrase;
};

class Catalogue {
 public:
  // Parses a catalogue; `name` (usually the path) prefixes every error message.
  static Catalogue parse(const std::string& json_text, const std::string& name);
  static Catalogue load(const std::string& path);
  static Catalogue builtin();
  static const char* builtin_json();  // the text of the built-in default
  // The search order above. `explicit_path` may be empty; `model_dir` may be
  // empty. The chosen source is in source().
  static Catalogue resolve(const std::string& explicit_path, const std::string& model_dir);

  const std::vector<Condition>& conditions() const { return conditions_; }
  size_t size() const { return conditions_.size(); }
  const Condition& operator[](size_t i) const { return conditions_[i]; }
  std::optional<size_t> index_of(const std::string& id) const;
  std::vector<std::string> ids() const;
  const std::string& source() const { return source_; }  // file path or "built-in"
  int version() const { return version_; }               // catalogue file format version

 private:
  std::vector<Condition> conditions_;
  std::string source_;
  int version_ = 1;
};

}  // namespace sg::clinic
