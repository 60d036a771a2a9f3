#include "app/args.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/error.h"

namespace sg::app {

namespace {

std::vector<std::string> split_names(const std::string& names) {
  std::vector<std::string> out;
  std::stringstream ss(names);
  std::string n;
  while (std::getline(ss, n, ',')) out.push_back(n);
  return out;
}

template <typename T>
T parse_number(const std::string& opt, const std::string& v) {
  try {
    size_t used = 0;
    T x;
    if constexpr (std::is_same_v<T, int64_t>) x = std::stoll(v, &used);
    else x = static_cast<T>(std::stod(v, &used));
    if (used != v.size()) throw std::invalid_argument(v);
    if constexpr (!std::is_same_v<T, int64_t>)
      if (!std::isfinite(x)) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    throw Error("option " + opt + ": '" + v + "' is not a valid number");
  }
}

}  // namespace

Args::Args(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

void Args::add(const std::string& names, std::string meta, std::string help, std::string def,
               bool is_flag, std::function<void(const std::string&)> set) {
  Opt o;
  o.names = split_names(names);
  o.meta = std::move(meta);
  o.help = std::move(help);
  o.def = std::move(def);
  o.is_flag = is_flag;
  o.set = std::move(set);
  opts_.push_back(std::move(o));
}

void Args::option(const std::string& names, std::string* out, const std::string& help) {
  add(names, "TEXT", help, *out, false, [out](const std::string& v) { *out = v; });
}
void Args::option(const std::string& names, int64_t* out, const std::string& help) {
  const std::string first = split_names(names)[0];
  add(names, "N", help, std::to_string(*out), false,
      [out, first](const std::string& v) { *out = parse_number<int64_t>(first, v); });
}
void Args::option(const std::string& names, double* out, const std::string& help) {
  const std::string first = split_names(names)[0];
  std::ostringstream d;
  d << *out;
  add(names, "X", help, d.str(), false,
      [out, first](const std::string& v) { *out = parse_number<double>(first, v); });
}
void Args::option(const std::string& names, float* out, const std::string& help) {
  const std::string first = split_names(names)[0];
  std::ostringstream d;
  d << *out;
  add(names, "X", help, d.str(), false,
      [out, first](const std::string& v) { *out = parse_number<float>(first, v); });
}
void Args::flag(const std::string& names, bool* out, const std::string& help) {
  add(names, "", help, "", true, [out](const std::string&) { *out = true; });
}
void Args::positional(const std::string& name, std::string* out, const std::string& help, bool required) {
  pos_.push_back({name, help, out, required});
}
void Args::rest(const std::string& name, std::vector<std::string>* out, const std::string& help) {
  rest_ = out;
  rest_name_ = name;
  rest_help_ = help;
}

std::string Args::help() const {
  std::ostringstream o;
  o << "usage: skingpt " << command_ << " [options]";
  for (const auto& p : pos_) o << (p.required ? " " : " [") << p.name << (p.required ? "" : "]");
  if (rest_) o << " [" << rest_name_ << "...]";
  o << "\n\n" << summary_ << "\n";
  if (!pos_.empty() || rest_) o << "\narguments:\n";
  for (const auto& p : pos_) o << "  " << p.name << "\n      " << p.help << "\n";
  if (rest_) o << "  " << rest_name_ << "\n      " << rest_help_ << "\n";
  o << "\noptions:\n";
  for (const auto& op : opts_) {
    o << "  ";
    for (size_t i = 0; i < op.names.size(); ++i) o << (i ? ", " : "") << op.names[i];
    if (!op.is_flag) o << " " << op.meta;
    o << "\n      " << op.help;
    if (!op.is_flag && !op.def.empty()) o << " (default: " << op.def << ")";
    o << "\n";
  }
  o << "  -h, --help\n      show this help\n";
  return o.str();
}

bool Args::was_set(const std::string& name) const {
  for (const auto& op : opts_)
    for (const auto& n : op.names)
      if (n == name) return op.seen;
  return false;
}

bool Args::parse(int argc, char** argv) {
  size_t next_pos = 0;
  bool only_positional = false;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (!only_positional && (a == "-h" || a == "--help")) {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (!only_positional && a == "--") {
      only_positional = true;
      continue;
    }
    if (!only_positional && a.size() > 1 && a[0] == '-' && !(a.size() > 1 && (std::isdigit(a[1]) || a[1] == '.'))) {
      std::string value;
      bool has_value = false;
      if (const size_t eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_value = true;
      }
      Opt* found = nullptr;
      for (auto& op : opts_)
        for (const auto& n : op.names)
          if (n == a) found = &op;
      if (!found) throw Error("skingpt " + command_ + ": unknown option '" + a + "' (see --help)");
      found->seen = true;
      if (found->is_flag) {
        if (has_value) throw Error("option " + a + " takes no value");
        found->set("");
        continue;
      }
      if (!has_value) {
        if (i + 1 >= argc) throw Error("option " + a + " needs a value");
        value = argv[++i];
      }
      found->set(value);
      continue;
    }
    if (next_pos < pos_.size()) {
      *pos_[next_pos++].out = a;
    } else if (rest_) {
      rest_->push_back(a);
    } else {
      throw Error("skingpt " + command_ + ": unexpected argument '" + a + "' (see --help)");
    }
  }
  for (size_t i = next_pos; i < pos_.size(); ++i)
    if (pos_[i].required) throw Error("skingpt " + command_ + ": missing argument " + pos_[i].name + " (see --help)");
  return true;
}

}  // namespace sg::app
