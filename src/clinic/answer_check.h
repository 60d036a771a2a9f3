// Reading a model's answer back against what is known about the image: which
// catalogue condition the answer names, and whether the features it states
// agree with the project's own measurement of the photo. Used by `skingpt
// eval --answers` to check that the words agree with the scores (issue 5).
#pragma once
#include <optional>
#include <string>

#include "clinic/catalogue.h"
#include "clinic/language.h"
#include "clinic/lesion.h"

namespace sg::clinic {

// The catalogue condition an answer names: the phrase (Condition::phrase)
// right after the last "This could be a skin disease image of " (the
// language's answer prefix), else the phrase that occurs first in the text;
// nullopt when none occurs. Longer phrases win over phrases they contain.
std::optional<size_t> named_condition(const std::string& answer, const Catalogue& cat, Language lang);

// Each feature concept_text() states, read back from an answer and compared
// with the measurement: -1 not stated, 0 disagrees, 1 agrees.
struct ConceptAgreement {
  int symmetry = -1, border = -1, colour_count = -1, size = -1;
  int stated() const;  // features stated
  int agreed() const;  // features stated and agreeing
};
ConceptAgreement concept_agreement(const std::string& answer, const LesionFeatures& f, Language lang);

}  // namespace sg::clinic
