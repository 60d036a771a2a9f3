#include "clinic/splits.h"

#include "clinic/labels.h"
#include "core/error.h"

namespace sg::clinic {

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t splitmix64_finalize(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

bool is_validation_lesion(const std::string& lesion_id) {
  if (lesion_id.empty()) return false;
  return splitmix64_finalize(fnv1a64(lesion_id)) % 100 < static_cast<uint64_t>(kValidationPercent);
}

std::vector<std::string> split_names(const std::vector<LabelRow>& rows) {
  std::vector<std::string> names;
  for (const auto& r : rows) {
    bool have = false;
    for (const auto& n : names) have = have || n == r.split;
    if (!have) names.push_back(r.split);
  }
  return names;
}

std::optional<DerivedSplit> derived_split(const std::string& name) {
  for (const auto& [suffix, val] : {std::pair<std::string, bool>{"_val", true}, {"_fit", false}})
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return DerivedSplit{name.substr(0, name.size() - suffix.size()) + "_train", val};
  return std::nullopt;
}

std::vector<LabelRow> select_split(const std::vector<LabelRow>& rows, const std::string& name,
                                   const std::string& file_name) {
  std::vector<LabelRow> out;
  for (const auto& r : rows)
    if (r.split == name) out.push_back(r);
  if (!out.empty()) return out;
  if (const auto d = derived_split(name)) {
    const std::string& train = d->source;
    bool any = false;
    for (const auto& r : rows) {
      if (r.split != train) continue;
      any = true;
      if (r.lesion_id.empty())
        throw Error(file_name + ":" + std::to_string(r.line) + ": split '" + name + "' is derived from '" + train +
                    "' by lesion_id, but this row has no lesion_id");
      if (is_validation_lesion(r.lesion_id) == d->validation) out.push_back(r);
    }
    if (any) return out;
  }
  std::string have;
  for (const auto& n : split_names(rows)) have += (have.empty() ? "" : ", ") + n;
  throw Error(file_name + ": no rows of split '" + name + "' (the file has: " + (have.empty() ? "none" : have) +
              "; '<name>_val' and '<name>_fit' are derived from '<name>_train' by lesion)");
}

}  // namespace sg::clinic
