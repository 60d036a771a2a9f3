// A small command-line parser: named options with typed targets, positional
// arguments, generated --help. Bad values throw sg::Error naming the option.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sg::app {

class Args {
 public:
  Args(std::string command, std::string summary);

  void option(const std::string& names, std::string* out, const std::string& help);
  void option(const std::string& names, int64_t* out, const std::string& help);
  void option(const std::string& names, double* out, const std::string& help);
  void option(const std::string& names, float* out, const std::string& help);
  void flag(const std::string& names, bool* out, const std::string& help);
  void positional(const std::string& name, std::string* out, const std::string& help, bool required = true);
  void rest(const std::string& name, std::vector<std::string>* out, const std::string& help);

  // false when --help was given (help already printed): the caller exits 0.
  bool parse(int argc, char** argv);
  std::string help() const;
  bool was_set(const std::string& name) const;  // any of an option's names

 private:
  struct Opt {
    std::vector<std::string> names;
    std::string meta, help, def;
    bool is_flag = false;
    bool seen = false;
    std::function<void(const std::string&)> set;
  };
  struct Pos {
    std::string name, help;
    std::string* out;
    bool required;
  };
  void add(const std::string& names, std::string meta, std::string help, std::string def,
           bool is_flag, std::function<void(const std::string&)> set);
  std::string command_, summary_;
  std::vector<Opt> opts_;
  std::vector<Pos> pos_;
  std::vector<std::string>* rest_ = nullptr;
  std::string rest_name_, rest_help_;
};

}  // namespace sg::app
