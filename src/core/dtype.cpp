#include "core/dtype.h"

#include <cctype>
#include <string>

#include "core/error.h"

namespace sg {

namespace {

struct Entry {
  uint32_t id;
  DTypeTraits tr;
};

constexpr Entry kTable[] = {
    {0, {"f32", 1, 4}},       {1, {"f16", 1, 2}},         {2, {"q4_0", 32, 18}},
    {8, {"q8_0", 32, 34}},    {12, {"q4_k", 256, 144}},   {14, {"q6_k", 256, 210}},
    {15, {"q8_k", 256, 292}}, {30, {"bf16", 1, 2}},
};

}  // namespace

std::optional<DTypeTraits> dtype_traits(uint32_t type) {
  for (const auto& e : kTable)
    if (e.id == type) return e.tr;
  return std::nullopt;
}

const DTypeTraits& traits(DType t) {
  for (const auto& e : kTable)
    if (e.id == static_cast<uint32_t>(t)) return e.tr;
  throw Error("unsupported tensor type " + std::to_string(static_cast<uint32_t>(t)));
}

std::optional<DType> dtype_from_name(std::string_view name) {
  std::string lower(name);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& e : kTable)
    if (e.tr.name == lower) return static_cast<DType>(e.id);
  return std::nullopt;
}

}  // namespace sg
