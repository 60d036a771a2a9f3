// Case records in SQLite (issue 7): cases, their photo (re-encoded, no
// metadata), the consultation report (JSON), follow-up messages, clinician
// reviews, and an audit log of who did what when.
//
// One connection guarded by a mutex; WAL journal, synchronous=FULL,
// foreign_keys=ON, secure_delete=ON. Every write is one transaction: when a
// call returns, its rows are committed (a case acknowledged to a client
// survives a crash of the process). Deleting a case removes every row of it
// (ON DELETE CASCADE) and checkpoints the WAL so its pages are overwritten;
// the audit log keeps only the case id and the action, never patient data.
// The schema is versioned (schema_version table) and migrated on open.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace sg::server {

constexpr int kStoreSchemaVersion = 1;

struct NewCase {
  std::string language;             // "en" | "ja"
  std::optional<int> age;
  std::string sex, site, history;
  bool assessed = false;
  std::string top_id, top_name;     // the first candidate of the differential ("" when not assessed)
  double top_probability = 0;
  std::string report_json;          // the clinic layer's report
  std::vector<uint8_t> image_jpeg;  // metadata-free JPEG
  int image_width = 0, image_height = 0;
};

struct CaseSummary {
  std::string id, created, language, status;  // status: "draft" | "reviewed"
  std::optional<int> age;
  std::string sex, site;
  bool assessed = false;
  std::string top_id, top_name;
  double top_probability = 0;
};

struct Message {
  int64_t id = 0;
  std::string role, content, created;  // role: "user" | "assistant"
};

struct Review {
  int64_t id = 0;
  std::string decision, diagnosis_id, notes, reviewer, created;  // decision: "confirm" | "correct"
};

struct CaseRecord {
  CaseSummary summary;
  std::string history;
  std::string report_json;
  std::vector<Message> messages;
  std::optional<Review> review;  // the latest
};

struct AuditEntry {
  int64_t id = 0;
  std::string at, actor, action, case_id, detail;
};

class Store {
 public:
  // Opens (creating when missing) the database file and migrates it.
  explicit Store(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  int schema_version();
  std::string create_case(const NewCase& c, const std::string& actor);  // → the new id
  std::optional<CaseRecord> get_case(const std::string& id);
  // Newest first. `query` matches (case-insensitively) the id, site, sex,
  // history, the top condition's id and name, and review notes.
  std::vector<CaseSummary> list_cases(const std::string& query, int limit, int offset);
  int64_t count_cases();
  std::optional<std::vector<uint8_t>> image(const std::string& id);
  std::vector<Message> messages(const std::string& id);
  // Question and answer in one transaction; false when the case is gone.
  bool add_exchange(const std::string& id, const std::string& question, const std::string& answer,
                    const std::string& actor);
  bool add_review(const std::string& id, const Review& r, const std::string& actor);
  bool delete_case(const std::string& id, const std::string& actor);
  void audit(const std::string& actor, const std::string& action, const std::string& case_id,
             const std::string& detail);
  std::vector<AuditEntry> audit_log(int limit);
  std::string integrity_check();  // "ok" when the file is sound

 private:
  void exec(const char* sql);
  void migrate();
  void audit_locked(const std::string& actor, const std::string& action, const std::string& case_id,
                    const std::string& detail);
  std::mutex mu_;
  sqlite3* db_ = nullptr;
  std::string path_;
};

}  // namespace sg::server
