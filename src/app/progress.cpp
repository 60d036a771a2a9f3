#include "app/progress.h"

#include <unistd.h>

#include <cstdio>

namespace sg::app {

std::string fmt_time(double s) {
  char b[32];
  if (s < 60) std::snprintf(b, sizeof b, "%.0fs", s);
  else if (s < 3600) std::snprintf(b, sizeof b, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(b, sizeof b, "%dh%02dm", int(s) / 3600, int(s) % 3600 / 60);
  return b;
}

namespace {
std::string fmt_amount(double x, const std::string& unit) {
  char b[32];
  if (unit == "B") {
    const char* u[] = {"B", "KB", "MB", "GB", "TB"};
    int i = 0;
    while (x >= 1000 && i < 4) x /= 1000, ++i;
    std::snprintf(b, sizeof b, "%.1f %s", x, u[i]);
  } else {
    std::snprintf(b, sizeof b, "%.0f%s%s", x, unit.empty() ? "" : " ", unit.c_str());
  }
  return b;
}
}  // namespace

Progress::Progress(std::string label, uint64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total ? total : 1),
      tty_(isatty(STDERR_FILENO)), start_(std::chrono::steady_clock::now()), last_() {}

void Progress::update(uint64_t done) {
  const auto now = std::chrono::steady_clock::now();
  const bool end = done >= total_;
  if (!end && (!tty_ || now - last_ < std::chrono::milliseconds(100))) return;
  last_ = now;
  const double el = std::chrono::duration<double>(now - start_).count();
  const double frac = static_cast<double>(done) / total_;
  const int width = 30, fill = static_cast<int>(frac * width);
  std::string bar(fill, '#');
  bar.resize(width, '.');
  const double eta = frac > 0 ? el / frac - el : 0;
  std::fprintf(stderr, "%s%s [%s] %3.0f%%  %s / %s  %s %s   %s", tty_ ? "\r" : "", label_.c_str(), bar.c_str(),
               frac * 100, fmt_amount(done, unit_).c_str(), fmt_amount(total_, unit_).c_str(),
               end ? "took" : "ETA", fmt_time(end ? el : eta).c_str(), end ? "\n" : "");
  std::fflush(stderr);
  if (end) finished_ = true;
}

void Progress::finish() {
  if (!finished_) update(total_);
}

}  // namespace sg::app
