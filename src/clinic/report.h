// Rendering a consultation Report: plain text for a person, JSON following
// docs/report.schema.json (docs/report-schema.md, versioned by
// kReportSchemaVersion), and one self-contained HTML page (no external
// assets). Every label is in the report's language.
#pragma once
#include <optional>
#include <string>

#include "clinic/consultation.h"
#include "formats/image.h"

namespace sg::clinic {

std::string render_text(const Report& r);
std::string render_json(const Report& r);  // pretty-printed, one object
std::string render_html(const Report& r);
// With the photo: a shrunk, metadata-free JPEG copy is embedded in the page
// (data: URI), so the page stays one self-contained file.
std::string render_html(const Report& r, const Image* photo);

// The model's description (answer 1) ends by naming a condition, in free text
// generated after the features it states; the differential comes from the
// model's calibrated scores. Where the differential ranks the named condition,
// and `note`, the sentence every rendering shows under the description when it
// is not rank 1 ("" when it is). nullopt when the description names no
// catalogue condition or was not asked. `candidate` points into r.differential.
struct DescriptionNames {
  const Candidate* candidate;
  std::string note;
};
std::optional<DescriptionNames> description_names(const Report& r);

// The next steps the report recommends (from the differential, red flags and
// photo quality), in the report's language.
std::vector<std::string> next_steps(const Report& r);
// "Draft — awaiting clinician review" and the disclaimer, in `lang`.
std::string status_text(Language lang);
std::string disclaimer_text(Language lang);
// One sentence on where the differential's scores were read (Differential::scored_at).
const char* score_context_text(ScoreContext c, Language lang);
// The current time as reports and case records write it: "2026-11-28T01:02:03Z" (UTC).
std::string now_iso8601();

}  // namespace sg::clinic
