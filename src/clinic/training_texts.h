// The texts skingpt-mini is trained on (issue 5), written from what each image
// actually shows — the project's own lesion measurements (lesion.h) — and from
// dermatology facts about each condition, in English and Japanese.
//
//   step 1 (image ↔ clinical concepts): concept_text() of the measured lesion,
//          answering one of concept_questions();
//   step 2 (image ↔ diagnosis conversation): the scoring answer the
//          consultation uses ("This could be a skin disease image of …") and
//          the answers to the paper's four consultation questions, in the
//          order and wording consultation_script() asks them.
//
// The wording is deterministic given (features, condition, language).
// docs/training-data.md describes the files `skingpt dataset` writes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clinic/catalogue.h"
#include "clinic/consultation.h"
#include "clinic/language.h"
#include "clinic/lesion.h"

namespace sg::clinic {

// The measured features in words, coarsened to what a photo can show
// reliably: symmetry, border, the dermoscopic colours present, size in the
// frame ("asymmetric in two axes, irregular border, two colours (light brown,
// dark brown), medium-sized (about 15% of the frame)").
std::string concept_text(const LesionFeatures& f, Language lang);

// The size class of a lesion by area fraction: 0 small (<5%), 1 medium
// (<20%), 2 large (<50%), 3 very large.
int size_class(const LesionFeatures& f);

// Step-1 questions (the answer is concept_text()).
const std::vector<std::string>& concept_questions(Language lang);

// What the knowledge texts say about one condition (empty when the project
// has none for this id; such a condition gets only the scoring answer).
struct ConditionKnowledge {
  LocalText features;   // typical dermoscopic features
  LocalText cause;      // cause and risk factors
  LocalText treatment;  // management and next steps
};
const ConditionKnowledge* condition_knowledge(const std::string& condition_id);

// The step-2 answers for one image of condition `c`.
struct ConsultationAnswers {
  std::string diagnosis;  // script.answer_prefix + phrase (what the consultation scores)
  std::vector<std::string> answers;  // one per script.questions (describe, features, cause, treatment)
};
ConsultationAnswers consultation_answers(const Condition& c, const LesionFeatures& f, Language lang);

}  // namespace sg::clinic
