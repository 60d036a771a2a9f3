#include "server/store.h"

#include <sqlite3.h>

#include "clinic/report.h"
#include "core/error.h"
#include "server/util.h"

namespace sg::server {

namespace {

// A prepared statement that finalizes itself.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK)
      throw Error(std::string("database: ") + sqlite3_errmsg(db));
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt& bind(int i, const std::string& v) {
    check(sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& bind(int i, int64_t v) {
    check(sqlite3_bind_int64(s_, i, v));
    return *this;
  }
  Stmt& bind(int i, double v) {
    check(sqlite3_bind_double(s_, i, v));
    return *this;
  }
  Stmt& bind(int i, const std::optional<int>& v) {
    check(v ? sqlite3_bind_int64(s_, i, *v) : sqlite3_bind_null(s_, i));
    return *this;
  }
  Stmt& bind_blob(int i, const std::vector<uint8_t>& v) {
    check(sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  bool step() {  // true: a row
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw Error(std::string("database: ") + sqlite3_errmsg(db_));
  }
  std::string text(int c) const {
    const auto* p = sqlite3_column_text(s_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s_, c)) : std::string();
  }
  int64_t integer(int c) const { return sqlite3_column_int64(s_, c); }
  double real(int c) const { return sqlite3_column_double(s_, c); }
  bool null(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
  std::vector<uint8_t> blob(int c) const {
    const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(s_, c));
    return p ? std::vector<uint8_t>(p, p + sqlite3_column_bytes(s_, c)) : std::vector<uint8_t>();
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) throw Error(std::string("database: ") + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

// BEGIN IMMEDIATE … COMMIT, rolled back when the scope is left by an exception.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) { run("BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    run("COMMIT");
    done_ = true;
  }

 private:
  void run(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      const std::string m = err ? err : "unknown error";
      sqlite3_free(err);
      throw Error("database: " + m);
    }
  }
  sqlite3* db_;
  bool done_ = false;
};

// Migration N takes the schema from version N-1 to N. Append, never edit.
const char* const kMigrations[] = {
    // 1: the first schema.
    R"sql(
CREATE TABLE cases (
  id TEXT PRIMARY KEY,
  created TEXT NOT NULL,
  language TEXT NOT NULL CHECK (language IN ('en','ja')),
  age INTEGER CHECK (age IS NULL OR (age >= 0 AND age <= 150)),
  sex TEXT NOT NULL DEFAULT '',
  site TEXT NOT NULL DEFAULT '',
  history TEXT NOT NULL DEFAULT '',
  assessed INTEGER NOT NULL,
  top_id TEXT NOT NULL DEFAULT '',
  top_name TEXT NOT NULL DEFAULT '',
  top_probability REAL NOT NULL DEFAULT 0
);
CREATE INDEX cases_created ON cases(created);
CREATE TABLE images (
  case_id TEXT PRIMARY KEY REFERENCES cases(id) ON DELETE CASCADE,
  media_type TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  data BLOB NOT NULL
);
CREATE TABLE reports (
  case_id TEXT PRIMARY KEY REFERENCES cases(id) ON DELETE CASCADE,
  json TEXT NOT NULL
);
CREATE TABLE messages (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  case_id TEXT NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
  role TEXT NOT NULL CHECK (role IN ('user','assistant')),
  content TEXT NOT NULL,
  created TEXT NOT NULL
);
CREATE INDEX messages_case ON messages(case_id, id);
CREATE TABLE reviews (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  case_id TEXT NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
  decision TEXT NOT NULL CHECK (decision IN ('confirm','correct')),
  diagnosis_id TEXT NOT NULL,
  notes TEXT NOT NULL DEFAULT '',
  reviewer TEXT NOT NULL,
  created TEXT NOT NULL
);
CREATE INDEX reviews_case ON reviews(case_id, id);
CREATE TABLE audit_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  case_id TEXT NOT NULL DEFAULT '',
  detail TEXT NOT NULL DEFAULT ''
);
)sql",
};

std::string like_pattern(const std::string& q) {
  std::string p = "%";
  for (char c : q) {
    if (c == '%' || c == '_' || c == '\\') p += '\\';
    p += c;
  }
  return p + "%";
}

}  // namespace

Store::Store(const std::string& path) : path_(path) {
  const int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    const std::string m = db_ ? sqlite3_errmsg(db_) : "cannot open";
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error(path + ": " + m);
  }
  try {
    sqlite3_busy_timeout(db_, 5000);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec("PRAGMA foreign_keys=ON");
    exec("PRAGMA secure_delete=ON");
    migrate();
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

Store::~Store() {
  if (db_) sqlite3_close(db_);
}

void Store::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string m = err ? err : "unknown error";
    sqlite3_free(err);
    throw Error(path_ + ": " + m);
  }
}

void Store::migrate() {
  exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
  int have = 0;
  {
    Stmt s(db_, "SELECT MAX(version) FROM schema_version");
    if (s.step() && !s.null(0)) have = static_cast<int>(s.integer(0));
  }
  const int want = static_cast<int>(std::size(kMigrations));
  if (have > want)
    throw Error(path_ + ": database schema version " + std::to_string(have) + " is newer than this program (" +
                std::to_string(want) + "); use a newer skingpt");
  for (int v = have + 1; v <= want; ++v) {
    Transaction t(db_);
    exec(kMigrations[v - 1]);
    Stmt(db_, "INSERT INTO schema_version(version) VALUES (?)").bind(1, int64_t{v}).step();
    audit_locked("server", "migrate", "", "schema version " + std::to_string(v));
    t.commit();
  }
}

int Store::schema_version() {
  std::lock_guard lk(mu_);
  Stmt s(db_, "SELECT MAX(version) FROM schema_version");
  return s.step() ? static_cast<int>(s.integer(0)) : 0;
}

void Store::audit_locked(const std::string& actor, const std::string& action, const std::string& case_id,
                         const std::string& detail) {
  Stmt(db_, "INSERT INTO audit_log(at, actor, action, case_id, detail) VALUES (?,?,?,?,?)")
      .bind(1, clinic::now_iso8601())
      .bind(2, actor)
      .bind(3, action)
      .bind(4, case_id)
      .bind(5, detail)
      .step();
}

void Store::audit(const std::string& actor, const std::string& action, const std::string& case_id,
                  const std::string& detail) {
  std::lock_guard lk(mu_);
  Transaction t(db_);
  audit_locked(actor, action, case_id, detail);
  t.commit();
}

std::string Store::create_case(const NewCase& c, const std::string& actor) {
  std::lock_guard lk(mu_);
  const std::string id = random_id();
  Transaction t(db_);
  Stmt(db_,
       "INSERT INTO cases(id, created, language, age, sex, site, history, assessed, top_id, top_name, "
       "top_probability) VALUES (?,?,?,?,?,?,?,?,?,?,?)")
      .bind(1, id)
      .bind(2, clinic::now_iso8601())
      .bind(3, c.language)
      .bind(4, c.age)
      .bind(5, c.sex)
      .bind(6, c.site)
      .bind(7, c.history)
      .bind(8, int64_t{c.assessed ? 1 : 0})
      .bind(9, c.top_id)
      .bind(10, c.top_name)
      .bind(11, c.top_probability)
      .step();
  Stmt(db_, "INSERT INTO images(case_id, media_type, width, height, data) VALUES (?,?,?,?,?)")
      .bind(1, id)
      .bind(2, std::string("image/jpeg"))
      .bind(3, int64_t{c.image_width})
      .bind(4, int64_t{c.image_height})
      .bind_blob(5, c.image_jpeg)
      .step();
  Stmt(db_, "INSERT INTO reports(case_id, json) VALUES (?,?)").bind(1, id).bind(2, c.report_json).step();
  audit_locked(actor, "create", id, "");
  t.commit();
  return id;
}

namespace {
const char* kSummaryColumns =
    "c.id, c.created, c.language, c.age, c.sex, c.site, c.assessed, c.top_id, c.top_name, c.top_probability, "
    "EXISTS(SELECT 1 FROM reviews r WHERE r.case_id = c.id)";
CaseSummary read_summary(const Stmt& s) {
  CaseSummary c;
  c.id = s.text(0);
  c.created = s.text(1);
  c.language = s.text(2);
  if (!s.null(3)) c.age = static_cast<int>(s.integer(3));
  c.sex = s.text(4);
  c.site = s.text(5);
  c.assessed = s.integer(6) != 0;
  c.top_id = s.text(7);
  c.top_name = s.text(8);
  c.top_probability = s.real(9);
  c.status = s.integer(10) ? "reviewed" : "draft";
  return c;
}
}  // namespace

std::optional<CaseRecord> Store::get_case(const std::string& id) {
  std::lock_guard lk(mu_);
  CaseRecord r;
  {
    Stmt s(db_, (std::string("SELECT ") + kSummaryColumns + ", c.history, p.json FROM cases c JOIN reports p ON "
                 "p.case_id = c.id WHERE c.id = ?").c_str());
    s.bind(1, id);
    if (!s.step()) return std::nullopt;
    r.summary = read_summary(s);
    r.history = s.text(11);
    r.report_json = s.text(12);
  }
  {
    Stmt s(db_, "SELECT id, role, content, created FROM messages WHERE case_id = ? ORDER BY id");
    s.bind(1, id);
    while (s.step()) r.messages.push_back({s.integer(0), s.text(1), s.text(2), s.text(3)});
  }
  {
    Stmt s(db_,
           "SELECT id, decision, diagnosis_id, notes, reviewer, created FROM reviews WHERE case_id = ? "
           "ORDER BY id DESC LIMIT 1");
    s.bind(1, id);
    if (s.step()) r.review = Review{s.integer(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5)};
  }
  return r;
}

std::vector<CaseSummary> Store::list_cases(const std::string& query, int limit, int offset) {
  std::lock_guard lk(mu_);
  std::string sql = std::string("SELECT ") + kSummaryColumns + " FROM cases c";
  if (!query.empty())
    sql +=
        " WHERE c.id LIKE ?1 ESCAPE '\\' OR c.site LIKE ?1 ESCAPE '\\' OR c.sex LIKE ?1 ESCAPE '\\' OR "
        "c.history LIKE ?1 ESCAPE '\\' OR c.top_id LIKE ?1 ESCAPE '\\' OR c.top_name LIKE ?1 ESCAPE '\\' OR "
        "EXISTS(SELECT 1 FROM reviews r WHERE r.case_id = c.id AND (r.notes LIKE ?1 ESCAPE '\\' OR "
        "r.diagnosis_id LIKE ?1 ESCAPE '\\' OR r.reviewer LIKE ?1 ESCAPE '\\'))";
  sql += " ORDER BY c.created DESC, c.rowid DESC LIMIT ?2 OFFSET ?3";
  Stmt s(db_, sql.c_str());
  if (!query.empty()) s.bind(1, like_pattern(query));
  s.bind(2, int64_t{limit}).bind(3, int64_t{offset});
  std::vector<CaseSummary> out;
  while (s.step()) out.push_back(read_summary(s));
  return out;
}

int64_t Store::count_cases() {
  std::lock_guard lk(mu_);
  Stmt s(db_, "SELECT COUNT(*) FROM cases");
  return s.step() ? s.integer(0) : 0;
}

std::optional<std::vector<uint8_t>> Store::image(const std::string& id) {
  std::lock_guard lk(mu_);
  Stmt s(db_, "SELECT data FROM images WHERE case_id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return s.blob(0);
}

std::vector<Message> Store::messages(const std::string& id) {
  std::lock_guard lk(mu_);
  Stmt s(db_, "SELECT id, role, content, created FROM messages WHERE case_id = ? ORDER BY id");
  s.bind(1, id);
  std::vector<Message> out;
  while (s.step()) out.push_back({s.integer(0), s.text(1), s.text(2), s.text(3)});
  return out;
}

bool Store::add_exchange(const std::string& id, const std::string& question, const std::string& answer,
                         const std::string& actor) {
  std::lock_guard lk(mu_);
  Transaction t(db_);
  {
    Stmt s(db_, "SELECT 1 FROM cases WHERE id = ?");
    s.bind(1, id);
    if (!s.step()) return false;
  }
  const std::string now = clinic::now_iso8601();
  for (const auto& [role, text] : {std::pair{"user", &question}, std::pair{"assistant", &answer}})
    Stmt(db_, "INSERT INTO messages(case_id, role, content, created) VALUES (?,?,?,?)")
        .bind(1, id)
        .bind(2, std::string(role))
        .bind(3, *text)
        .bind(4, now)
        .step();
  audit_locked(actor, "message", id, "");
  t.commit();
  return true;
}

bool Store::add_review(const std::string& id, const Review& r, const std::string& actor) {
  std::lock_guard lk(mu_);
  Transaction t(db_);
  {
    Stmt s(db_, "SELECT 1 FROM cases WHERE id = ?");
    s.bind(1, id);
    if (!s.step()) return false;
  }
  Stmt(db_, "INSERT INTO reviews(case_id, decision, diagnosis_id, notes, reviewer, created) VALUES (?,?,?,?,?,?)")
      .bind(1, id)
      .bind(2, r.decision)
      .bind(3, r.diagnosis_id)
      .bind(4, r.notes)
      .bind(5, r.reviewer)
      .bind(6, clinic::now_iso8601())
      .step();
  audit_locked(actor, "review", id, r.decision + " " + r.diagnosis_id);
  t.commit();
  return true;
}

bool Store::delete_case(const std::string& id, const std::string& actor) {
  std::lock_guard lk(mu_);
  {
    Transaction t(db_);
    Stmt s(db_, "DELETE FROM cases WHERE id = ?");
    s.bind(1, id);
    s.step();
    if (sqlite3_changes(db_) == 0) return false;
    audit_locked(actor, "delete", id, "case and all its records deleted on request");
    t.commit();
  }
  // secure_delete zeroed the freed pages in the WAL; copy them into the main
  // file and truncate the WAL so no old page of the case stays behind.
  sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  return true;
}

std::vector<AuditEntry> Store::audit_log(int limit) {
  std::lock_guard lk(mu_);
  Stmt s(db_, "SELECT id, at, actor, action, case_id, detail FROM audit_log ORDER BY id DESC LIMIT ?");
  s.bind(1, int64_t{limit});
  std::vector<AuditEntry> out;
  while (s.step()) out.push_back({s.integer(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5)});
  return out;
}

std::string Store::integrity_check() {
  std::lock_guard lk(mu_);
  Stmt s(db_, "PRAGMA integrity_check");
  return s.step() ? s.text(0) : "no answer";
}

}  // namespace sg::server
