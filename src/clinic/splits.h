// Which rows of a labelled data set belong to a split, including the derived
// lesion-level validation hold-out of the training split.
//
// The rule (docs/evaluation.md, "Validation split"): a lesion is a validation
// lesion when
//     h = splitmix64_finalize(fnv1a64(lesion_id bytes))
//     h % 100 < 10
// with FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over
// the lesion id exactly as written in the CSV (no trimming, no case change),
// and the SplitMix64 finalizer
//     x ^= x >> 30; x *= 0xbf58476d1ce4e5b9; x ^= x >> 27;
//     x *= 0x94d049bb133111eb; x ^= x >> 31.
// Every image of a lesion goes to the same side, so no lesion is in both.
// The trainer (issue 5) must use is_validation_lesion() to hold these
// lesions out; evaluation and calibration use the same function.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sg::clinic {

constexpr int kValidationPercent = 10;

uint64_t fnv1a64(std::string_view s);
uint64_t splitmix64_finalize(uint64_t x);

// True for the ~10% of lesion ids held out for validation. An empty id is
// never a validation lesion (select_split refuses rows without one when it
// derives a split).
bool is_validation_lesion(const std::string& lesion_id);

// A derived split name: "<P>_val" → {"<P>_train", validation lesions};
// "<P>_fit" → {"<P>_train", the other lesions}; anything else → nullopt.
struct DerivedSplit {
  std::string source;
  bool validation = false;
};
std::optional<DerivedSplit> derived_split(const std::string& name);

struct LabelRow;

// Rows of split `name`:
//   - rows whose `split` column equals `name`, when there are any;
//   - otherwise, for a name "<P>_val": the rows of "<P>_train" whose
//     lesion_id is a validation lesion (e.g. ham10000_val);
//   - for a name "<P>_fit": the rows of "<P>_train" that are NOT validation
//     lesions (what a trainer fits on);
//   - otherwise an sg::Error listing the splits the file has.
// Deriving needs a lesion_id on every row of <P>_train (error file:line).
std::vector<LabelRow> select_split(const std::vector<LabelRow>& rows, const std::string& name,
                                   const std::string& file_name);

// The split names present in `rows`, in order of first appearance.
std::vector<std::string> split_names(const std::vector<LabelRow>& rows);

}  // namespace sg::clinic
