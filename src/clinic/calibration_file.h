// Reading and writing calibration.json (docs/calibration.md): the Calibration
// of scoring.h stored with a model, tied to the catalogue's condition ids
// (per-condition biases are stored by id, so a reordered catalogue still
// matches; a catalogue with other conditions is refused).
//
// One file per consultation language, because the scores depend on the
// prompt language: MODEL_DIR/calibration.json for English prompts,
// MODEL_DIR/calibration.ja.json for Japanese prompts.
#pragma once
#include <optional>
#include <string>

#include "clinic/catalogue.h"
#include "clinic/language.h"
#include "clinic/scoring.h"

namespace sg::clinic {

constexpr int kCalibrationFormatVersion = 1;

// "calibration.json" / "calibration.ja.json".
std::string calibration_file_name(Language lang);

// Parses calibration JSON for `cat`; errors (sg::Error) name `name` and the field.
Calibration parse_calibration(const std::string& json_text, const std::string& name, const Catalogue& cat);
Calibration load_calibration(const std::string& path, const Catalogue& cat);
// MODEL_DIR/<calibration_file_name(lang)> when it exists, else nullopt.
std::optional<Calibration> find_calibration(const std::string& model_dir, Language lang, const Catalogue& cat,
                                            std::string* path_out = nullptr);

std::string calibration_to_json(const Calibration& c, const Catalogue& cat, Language lang);
void save_calibration(const std::string& path, const Calibration& c, const Catalogue& cat, Language lang);

}  // namespace sg::clinic
