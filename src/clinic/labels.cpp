#include "clinic/labels.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace sg::clinic {

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  std::ostringstream s;
  s << f.rdbuf();
  if (f.bad()) throw Error(path + ": read error");
  return s.str();
}

[[noreturn]] void fail(const std::string& name, int line, const std::string& what) {
  throw Error(name + ":" + std::to_string(line) + ": " + what);
}

std::string lower(std::string s) {
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

bool parse_double(const std::string& s, double* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

}  // namespace

int CsvTable::column(const std::string& col) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == col) return static_cast<int>(i);
  return -1;
}

CsvTable parse_csv(const std::string& text_in, const std::string& name) {
  CsvTable t;
  t.name = name;
  std::string_view text(text_in);
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  if (text.empty()) throw Error(name + ": empty file (expected a header line)");
  size_t i = 0;
  int line = 1;
  std::vector<std::vector<std::string>> records;
  std::vector<int> starts;
  std::vector<bool> blank;
  while (i < text.size()) {
    const int start_line = line;
    std::vector<std::string> fields;
    std::string field;
    bool quoted_field = false;
    for (;;) {
      if (i >= text.size()) {
        fields.push_back(std::move(field));
        break;
      }
      const char c = text[i];
      if (c == '"' && field.empty() && !quoted_field) {
        // Quoted field: up to the closing quote; "" is a literal quote.
        quoted_field = true;
        ++i;
        for (;;) {
          if (i >= text.size()) fail(name, start_line, "unterminated quoted field");
          const char q = text[i];
          if (q == '"') {
            if (i + 1 < text.size() && text[i + 1] == '"') {
              field.push_back('"');
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (q == '\n') ++line;
          field.push_back(q);
          ++i;
        }
        if (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
          fail(name, line, "unexpected character after a closing quote");
        continue;
      }
      if (c == '"') fail(name, line, "a double quote inside an unquoted field (quote the whole field)");
      if (c == ',') {
        fields.push_back(std::move(field));
        field.clear();
        quoted_field = false;
        ++i;
        continue;
      }
      if (c == '\r') {
        if (i + 1 < text.size() && text[i + 1] == '\n') {
          ++i;
          continue;
        }
        fail(name, line, "bare carriage return (line ends must be LF or CRLF)");
      }
      if (c == '\n') {
        fields.push_back(std::move(field));
        ++i;
        ++line;
        break;
      }
      field.push_back(c);
      ++i;
    }
    const bool is_blank = fields.size() == 1 && fields[0].empty() && !quoted_field;
    records.push_back(std::move(fields));
    starts.push_back(start_line);
    blank.push_back(is_blank);
  }
  // Blank lines are allowed only at the very end.
  while (!records.empty() && blank.back()) {
    records.pop_back();
    starts.pop_back();
    blank.pop_back();
  }
  if (records.empty()) throw Error(name + ": empty file (expected a header line)");
  for (size_t r = 0; r < records.size(); ++r)
    if (blank[r]) fail(name, starts[r], "empty line");
  t.header = records[0];
  std::set<std::string> seen;
  for (const auto& h : t.header) {
    if (h.empty()) fail(name, starts[0], "empty column name in the header");
    if (!seen.insert(h).second) fail(name, starts[0], "duplicate column '" + h + "' in the header");
  }
  for (size_t r = 1; r < records.size(); ++r) {
    if (records[r].size() != t.header.size())
      fail(name, starts[r],
           "expected " + std::to_string(t.header.size()) + " fields (as the header), found " +
               std::to_string(records[r].size()));
    t.rows.push_back(std::move(records[r]));
    t.lines.push_back(starts[r]);
  }
  return t;
}

CsvTable read_csv(const std::string& path) { return parse_csv(read_text(path), path); }

std::vector<LabelRow> parse_labels_csv(const std::string& text, const std::string& name,
                                       const std::string& base_dir) {
  const CsvTable t = parse_csv(text, name);
  const int c_image = t.column("image"), c_dx = t.column("dx"), c_split = t.column("split");
  const char* missing = c_image < 0 ? "image" : c_dx < 0 ? "dx" : c_split < 0 ? "split" : nullptr;
  if (missing)
    throw Error(name + ":1: missing required column '" + missing +
                "' (the header needs image, dx and split; optional: image_id, lesion_id, dx_type, age, sex, "
                "localization)");
  const int c_id = t.column("image_id"), c_lesion = t.column("lesion_id"), c_type = t.column("dx_type"),
            c_age = t.column("age"), c_sex = t.column("sex"), c_site = t.column("localization");
  const std::set<int> known = {c_image, c_dx, c_split, c_id, c_lesion, c_type, c_age, c_sex, c_site};
  std::vector<LabelRow> out;
  out.reserve(t.rows.size());
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const auto& f = t.rows[r];
    const int line = t.lines[r];
    auto get = [&](int c) { return c >= 0 ? f[c] : std::string(); };
    LabelRow row;
    row.line = line;
    row.image = get(c_image);
    row.dx = get(c_dx);
    row.split = get(c_split);
    if (row.image.empty()) fail(name, line, "empty 'image'");
    if (row.dx.empty()) fail(name, line, "empty 'dx' (every row needs its diagnosis)");
    if (row.split.empty()) fail(name, line, "empty 'split'");
    const std::filesystem::path p(row.image);
    row.image_path = p.is_absolute() || base_dir.empty() ? p.string() : (std::filesystem::path(base_dir) / p).string();
    row.image_id = get(c_id);
    row.lesion_id = get(c_lesion);
    row.dx_type = get(c_type);
    if (const std::string a = get(c_age); !a.empty()) {
      double v;
      if (!parse_double(a, &v) || v < 0 || v > 130)
        fail(name, line, "'age' is '" + a + "' (expected a number of years 0..130, or empty)");
      row.age = v;
    }
    if (const std::string s = lower(get(c_sex)); !s.empty() && s != "unknown") {
      if (s != "male" && s != "female")
        fail(name, line, "'sex' is '" + get(c_sex) + "' (expected male, female, unknown or empty)");
      row.sex = s;
    }
    if (const std::string s = get(c_site); !s.empty() && lower(s) != "unknown") row.site = s;
    for (size_t c = 0; c < t.header.size(); ++c)
      if (!known.count(static_cast<int>(c))) row.extra.emplace_back(t.header[c], f[c]);
    out.push_back(std::move(row));
  }
  return out;
}

std::vector<LabelRow> read_labels_csv(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return parse_labels_csv(read_text(path), path, dir);
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) {
    if (c == '"') o += '"';
    o += c;
  }
  return o + "\"";
}

namespace {
const char* const kLabelColumns[] = {"image", "image_id", "dx", "split", "lesion_id",
                                     "dx_type", "age", "sex", "localization"};
constexpr const char* kLoglikPrefix = "loglik_";

std::string fmt_age(double a) {
  if (std::isnan(a)) return "";
  char b[32];
  std::snprintf(b, sizeof b, "%g", a);
  return b;
}
}  // namespace

std::string scores_csv(const ScoresFile& f) {
  std::string o;
  for (const char* c : kLabelColumns) o += std::string(c) + ",";
  for (size_t k = 0; k < f.condition_ids.size(); ++k) {
    if (k) o += ',';
    o += csv_field(kLoglikPrefix + f.condition_ids[k]);
  }
  o += "\n";
  for (const auto& r : f.rows) {
    if (r.loglik.size() != f.condition_ids.size()) throw Error("scores_csv: a row has the wrong number of scores");
    const auto& l = r.label;
    const std::string cells[] = {l.image, l.image_id, l.dx, l.split, l.lesion_id, l.dx_type,
                                 fmt_age(l.age), l.sex, l.site};
    for (const auto& c : cells) o += csv_field(c) + ",";
    for (size_t k = 0; k < r.loglik.size(); ++k) {
      char b[40];
      std::snprintf(b, sizeof b, "%.17g", r.loglik[k]);
      if (k) o += ',';
      o += b;
    }
    o += "\n";
  }
  return o;
}

ScoresFile parse_scores_csv(const std::string& text, const std::string& name) {
  const CsvTable t = parse_csv(text, name);
  ScoresFile f;
  std::vector<int> cols;
  for (size_t c = 0; c < t.header.size(); ++c)
    if (t.header[c].rfind(kLoglikPrefix, 0) == 0) {
      const std::string id = t.header[c].substr(std::string(kLoglikPrefix).size());
      if (id.empty()) fail(name, 1, "column '" + t.header[c] + "' names no condition");
      f.condition_ids.push_back(id);
      cols.push_back(static_cast<int>(c));
    }
  if (f.condition_ids.empty())
    throw Error(name + ":1: no 'loglik_<condition>' columns: not a scores file written by 'skingpt eval'");
  auto labels = parse_labels_csv(text, name, "");
  for (size_t r = 0; r < labels.size(); ++r) {
    ScoredRow row;
    row.label = std::move(labels[r]);
    row.label.extra.clear();
    for (size_t k = 0; k < cols.size(); ++k) {
      const std::string& s = t.rows[r][cols[k]];
      double v;
      if (!parse_double(s, &v))
        fail(name, t.lines[r], "'" + t.header[cols[k]] + "' is '" + s + "' (expected a finite number)");
      row.loglik.push_back(v);
    }
    f.rows.push_back(std::move(row));
  }
  return f;
}

ScoresFile read_scores_csv(const std::string& path) { return parse_scores_csv(read_text(path), path); }

}  // namespace sg::clinic
