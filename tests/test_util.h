// Shared helpers for tests: where ../shared is, reading the reference's raw
// little-endian tensors, and per-test temporary folders (tests never write
// into ../shared).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <vector>

namespace sg::test {

inline std::filesystem::path shared_dir() {
  if (const char* e = std::getenv("SKINGPT_SHARED")) return e;
  return SKINGPT_SHARED_DIR;
}
inline std::filesystem::path ref_dir() { return shared_dir() / "reference" / "minigpt4-tiny"; }

inline std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + p.string());
  return std::string(std::istreambuf_iterator<char>(f), {});
}

template <typename T>
std::vector<T> read_raw(const std::filesystem::path& p) {
  std::string b = read_bytes(p);
  if (b.size() % sizeof(T)) throw std::runtime_error("size not a multiple: " + p.string());
  std::vector<T> v(b.size() / sizeof(T));
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}
inline std::vector<float> read_f32(const std::filesystem::path& p) { return read_raw<float>(p); }
inline std::vector<int64_t> read_i64(const std::filesystem::path& p) { return read_raw<int64_t>(p); }

// A fresh folder under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "skingpt-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() { std::error_code ec; std::filesystem::remove_all(path_, ec); }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& s) const { return path_ / s; }

 private:
  std::filesystem::path path_;
};

// Runs a shell command; returns its exit status and what it printed (stdout
// and stderr together).
struct CommandResult {
  int status = -1;
  std::string output;
};
inline CommandResult run_command(const std::string& cmd) {
  CommandResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace sg::test
