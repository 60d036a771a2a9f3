// One exception type for every user-facing failure: the message is the single
// line the CLI prints ("<file>: <what is wrong>"), so it must name the input.
#pragma once
#include <stdexcept>
#include <string>

namespace sg {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

}  // namespace sg
