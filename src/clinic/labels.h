// Labelled image lists for evaluation and calibration, and the cache of raw
// model scores `skingpt eval` writes (scores.csv) so `skingpt calibrate
// --scores` can reuse them without running the model again.
//
// Labels CSV (as ../shared/data/ham10000/labels.csv):
//   image,image_id,dx,split,lesion_id,dx_type,age,sex,localization
// `image`, `dx` and `split` are required columns; the others are optional
// (the column may be missing, or the value empty). Other columns are kept in
// `extra`. `image` is a path relative to the CSV's folder (or absolute).
//
// The parser is strict: RFC 4180 fields (commas, double quotes with ""
// escapes, CRLF or LF line ends, an optional UTF-8 BOM), every row exactly as
// many fields as the header, no blank lines except at the end, known values
// checked (age a number 0..130, sex male/female/unknown). Every error is an
// sg::Error "<file>:<line>: <problem>".
#pragma once
#include <cmath>
#include <string>
#include <vector>

namespace sg::clinic {

// A parsed CSV: header names and rows of fields, with each row's line number.
struct CsvTable {
  std::string name;  // file name used in messages
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<int> lines;  // 1-based line where each row starts
  int column(const std::string& col) const;  // index or -1
};
CsvTable parse_csv(const std::string& text, const std::string& name);
CsvTable read_csv(const std::string& path);

struct LabelRow {
  std::string image;        // as written in the CSV
  std::string image_path;   // resolved against the CSV's folder
  std::string image_id, dx, split, lesion_id, dx_type;
  double age = NAN;         // NaN when unknown
  std::string sex;          // "male", "female" or "" (unknown)
  std::string site;         // localization; "" when unknown ("unknown" is normalised to "")
  int line = 0;             // line in the CSV (for messages)
  std::vector<std::pair<std::string, std::string>> extra;  // other columns, in file order
};

std::vector<LabelRow> parse_labels_csv(const std::string& text, const std::string& name,
                                       const std::string& base_dir);
std::vector<LabelRow> read_labels_csv(const std::string& path);

// Quotes a CSV field when needed.
std::string csv_field(const std::string& s);

// scores.csv: the label columns (image,image_id,dx,split,lesion_id,dx_type,
// age,sex,localization; split is the split that was evaluated, e.g.
// ham10000_val) followed by one column "loglik_<condition id>" per catalogue
// condition, in catalogue order, holding the raw log-likelihood (%.17g).
struct ScoredRow {
  LabelRow label;
  std::vector<double> loglik;  // catalogue order (`condition_ids` of the file)
};
struct ScoresFile {
  std::vector<std::string> condition_ids;
  std::vector<ScoredRow> rows;
};
std::string scores_csv(const ScoresFile& f);
ScoresFile parse_scores_csv(const std::string& text, const std::string& name);
ScoresFile read_scores_csv(const std::string& path);

}  // namespace sg::clinic
