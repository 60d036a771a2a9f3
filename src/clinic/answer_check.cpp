#include "clinic/answer_check.h"

#include "clinic/consultation.h"
#include "clinic/training_texts.h"

namespace sg::clinic {

namespace {

// Index of the first of `options` found in `text` at or after `from`, and
// which one (the longest when several start at the same place); -1 if none.
int first_of(const std::string& text, const std::vector<std::string>& options, size_t from = 0) {
  size_t best_pos = std::string::npos, best_len = 0;
  int best = -1;
  for (size_t i = 0; i < options.size(); ++i) {
    if (options[i].empty()) continue;
    const size_t p = text.find(options[i], from);
    if (p == std::string::npos) continue;
    if (p < best_pos || (p == best_pos && options[i].size() > best_len)) {
      best_pos = p;
      best_len = options[i].size();
      best = static_cast<int>(i);
    }
  }
  return best;
}

}  // namespace

int ConceptAgreement::stated() const {
  return (symmetry >= 0) + (border >= 0) + (colour_count >= 0) + (size >= 0);
}
int ConceptAgreement::agreed() const {
  return (symmetry == 1) + (border == 1) + (colour_count == 1) + (size == 1);
}

std::optional<size_t> named_condition(const std::string& answer, const Catalogue& cat, Language lang) {
  std::vector<std::string> phrases;
  for (const auto& c : cat.conditions()) phrases.push_back(c.phrase.get(lang));
  const std::string& prefix = consultation_script(lang).answer_prefix;
  const size_t at = answer.rfind(prefix);
  int i = -1;
  if (at != std::string::npos) {
    const std::string rest = answer.substr(at + prefix.size());
    // The phrase must start the rest (the prefix is followed by the name).
    const int k = first_of(rest, phrases);
    if (k >= 0 && rest.compare(0, phrases[k].size(), phrases[k]) == 0) i = k;
  }
  if (i < 0) i = first_of(answer, phrases);
  if (i < 0) return std::nullopt;
  return static_cast<size_t>(i);
}

ConceptAgreement concept_agreement(const std::string& answer, const LesionFeatures& f, Language lang) {
  const bool ja = lang == Language::Ja;
  ConceptAgreement a;
  // The words concept_text() uses, in the order of the feature's values.
  const std::vector<std::string> symmetry =
      ja ? std::vector<std::string>{"左右対称", "1軸で非対称", "2軸で非対称"}
         : std::vector<std::string>{"symmetric", "asymmetric in one axis", "asymmetric in two axes"};
  // "symmetric" is inside "asymmetric…": first_of prefers the earliest match,
  // so look for the asymmetric forms first.
  if (int k = first_of(answer, {symmetry[1], symmetry[2]}); k >= 0) a.symmetry = (k + 1 == f.asymmetric_axes);
  else if (answer.find(symmetry[0]) != std::string::npos) a.symmetry = f.asymmetric_axes == 0;
  const std::vector<std::string> border = ja ? std::vector<std::string>{"境界は整", "境界不整"}
                                             : std::vector<std::string>{"regular border", "irregular border"};
  if (answer.find(border[1]) != std::string::npos) a.border = f.irregular_border;
  else if (answer.find(border[0]) != std::string::npos) a.border = !f.irregular_border;
  const int nc = static_cast<int>(f.colours.size());
  std::vector<std::string> counts;
  if (ja) {
    counts.push_back("典型的なダーモスコピー色なし");
    for (int n = 1; n <= kSkinColourCount; ++n) counts.push_back(std::to_string(n) + "色（");
  } else {
    counts = {"no typical dermoscopic colour", "one colour", "two colours", "three colours",
              "four colours", "five colours", "six colours"};
  }
  if (int k = first_of(answer, counts); k >= 0) a.colour_count = k == nc;
  const std::vector<std::string> sizes = ja ? std::vector<std::string>{"小さい", "中くらいの大きさ", "非常に大きい", "大きい"}
                                            : std::vector<std::string>{"small", "medium-sized", "very large", "large"};
  if (int k = first_of(answer, sizes); k >= 0) {
    const int cls = k == 2 ? 3 : k == 3 ? 2 : k;
    a.size = cls == size_class(f);
  }
  return a;
}

}  // namespace sg::clinic
