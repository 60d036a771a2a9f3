// A one-line progress bar with rate and ETA on stderr, redrawn at most 10
// times a second; silent when stderr is not a terminal except for the end.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace sg::app {

// "42s", "3m07s", "1h05m".
std::string fmt_time(double seconds);

class Progress {
 public:
  Progress(std::string label, uint64_t total, std::string unit = "");
  void set_total(uint64_t total) { total_ = total ? total : 1; }
  void update(uint64_t done);
  void finish();

 private:
  std::string label_, unit_;
  uint64_t total_;
  bool tty_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace sg::app
