// `skingpt serve` (issue 7): the HTTP server in-process on an ephemeral
// loopback port with a tiny random-weight model, driven by httplib's client:
// health, metrics, security headers, OpenAI chat completions (plain and
// streamed), consultations with case records (create, list, search, get,
// follow-up, review, delete), the API key, upload limits, refused remote
// URLs, the bounded queue's 429, the bind policy, the SQLite store, and a
// kill -9 of a server process in the middle of writes.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <thread>

#include "clinic/report.h"
#include "core/error.h"
#include "formats/image.h"
#include "model/synth.h"
#include "model_fixtures.h"
#include "server/print_page.h"
#include "server/server.h"
#include "server/store.h"
#include "server/util.h"
#include "test_util.h"
#include "text/vocab.h"

namespace sg::server {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path repo_dir() { return fs::path(__FILE__).parent_path().parent_path(); }
std::string example_bytes(const std::string& name) { return test::read_bytes(repo_dir() / "examples" / name); }
const char* kMel = "melanoma_ISIC_0024400.jpg";
const char* kNevus = "nevus_ISIC_0024306.jpg";

// One tiny random model folder for the whole suite (model_fixtures.h).
const std::string& tiny_model_dir() {
  static test::TempDir dir;
  static const std::string path = [] {
    test::write_tiny_model(dir.path());
    return dir.path().string();
  }();
  return path;
}

std::string data_uri(const std::string& bytes, const std::string& type = "image/jpeg") {
  return "data:" + type + ";base64," +
         base64_encode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// A server on 127.0.0.1:<ephemeral> serving from a thread, stopped on destruction.
struct RunningServer {
  test::TempDir data;
  std::unique_ptr<HttpServer> srv;
  std::thread th;
  int port = 0;
  explicit RunningServer(ServerOptions o = {}) {
    o.host = "127.0.0.1";
    o.port = 0;
    o.data_dir = (data / "data").string();
    o.engine.model_dir = tiny_model_dir();
    o.engine.threads = 1;
    o.engine.max_new_tokens = 8;
    o.http_threads = 4;
    srv = std::make_unique<HttpServer>(o);
    port = srv->bind();
    th = std::thread([this] { srv->serve(); });
  }
  ~RunningServer() {
    srv->stop();
    th.join();
  }
  httplib::Client client(const std::string& key = "") const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    if (!key.empty()) c.set_bearer_token_auth(key.c_str());
    return c;
  }
};

ServerOptions with_queue(size_t n) {
  ServerOptions o;
  o.engine.queue = n;
  return o;
}

json body_json(const httplib::Result& r) {
  EXPECT_TRUE(r) << "no response";
  if (!r) return json();
  json j = json::parse(r->body, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r->body;
  return j;
}
std::string error_message(const httplib::Result& r) {
  const json j = body_json(r);
  return j.is_object() && j.contains("error") ? j["error"].value("message", "") : "";
}

json chat_body(const std::string& text, const std::string& image_uri = "", bool stream = false) {
  json content = json::array({{{"type", "text"}, {"text", text}}});
  if (!image_uri.empty()) content.push_back({{"type", "image_url"}, {"image_url", {{"url", image_uri}}}});
  return {{"model", "skingpt"}, {"messages", json::array({{{"role", "user"}, {"content", content}}})},
          {"max_tokens", 6}, {"stream", stream}, {"temperature", 0}};
}

// The data: events of a server-sent-event body.
std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end == std::string::npos ? body.size() : end + 2;
  }
  return out;
}

// ------------------------------------------------------------ helpers

TEST(ServerUtil, Base64DataUrisIdsAndCompare) {
  const std::string s = "hello, world!";
  const auto enc = base64_encode(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  EXPECT_EQ(enc, "aGVsbG8sIHdvcmxkIQ==");
  const auto dec = base64_decode(enc, 100);
  ASSERT_TRUE(dec);
  EXPECT_EQ(std::string(dec->begin(), dec->end()), s);
  EXPECT_FALSE(base64_decode("aGVsbG8*", 100));
  EXPECT_FALSE(base64_decode("aGVsbG8sIHdvcmxkIQ==", 5)) << "size bound";
  EXPECT_FALSE(base64_decode("a", 100)) << "a lone 6-bit group";
  std::string err;
  bool big = false;
  EXPECT_FALSE(parse_data_uri("https://x/y.jpg", 100, &err, &big));
  EXPECT_FALSE(parse_data_uri("data:text/html;base64,AAAA", 100, &err, &big));
  EXPECT_NE(err.find("unsupported image type"), std::string::npos) << err;
  EXPECT_FALSE(parse_data_uri("data:image/png;base64," + std::string(400, 'A'), 100, &err, &big));
  EXPECT_TRUE(big);
  const auto d = parse_data_uri("data:image/png;base64,iVBORw==", 100, &err, &big);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->media_type, "image/png");
  const std::string a = random_id(), b = random_id();
  EXPECT_TRUE(is_case_id(a));
  EXPECT_NE(a, b);
  EXPECT_FALSE(is_case_id("../../etc/passwd"));
  EXPECT_TRUE(constant_time_equal("secret-key-123456", "secret-key-123456"));
  EXPECT_FALSE(constant_time_equal("secret-key-123457", "secret-key-123456"));
  EXPECT_FALSE(constant_time_equal("secret", "secret-key-123456"));
  EXPECT_FALSE(constant_time_equal("", "secret-key-123456"));
  EXPECT_TRUE(valid_utf8("日本語 ok"));
  EXPECT_FALSE(valid_utf8("\xff\xfe"));
  EXPECT_FALSE(valid_utf8("\xe6\x97"));
  EXPECT_FALSE(valid_utf8("\xc0\xaf")) << "overlong";
}

TEST(ServerPrintPage, EscapesTextAndToleratesMissingOrWrongFields) {
  nlohmann::ordered_json v = {
      {"case_id", "abc"},
      {"language", "en"},
      {"status", "draft_awaiting_clinician_review"},
      {"patient", {{"age", 41}, {"history", "<script>alert(1)</script>"}}},
      {"red_flags", {{"refer_urgently", true}, {"text", "Melanoma (35%) cannot be ruled out"}}},
      {"differential",
       {{"candidates", {{{"rank", 1}, {"name", "Melanoma"}, {"probability", 0.35}, {"red_flag", true}}}},
        {"scored_at", "first_answer"}}},
      {"messages", {{{"role", "user"}, {"content", "a & b?"}}, {{"role", "assistant"}, {"content", "c > d"}}}},
      {"model_answers", {{{"question", "Could you describe it?"}, {"answer", "This could be dermatofibroma."}}}},
      {"findings", {{"description_names", {{"id", "df"}, {"rank", 6}, {"note", "Note: names <df>, ranked 6"}}}}}};
  const std::string page = print_page(v, {});
  EXPECT_NE(page.find("Note: names &lt;df&gt;, ranked 6"), std::string::npos) << "the description's note is printed";
  EXPECT_NE(page.find("read where its first answer names the diagnosis"), std::string::npos)
      << "where the differential was read is printed";
  EXPECT_EQ(page.find("<script>"), std::string::npos);
  EXPECT_NE(page.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(page.find("flags urgent"), std::string::npos);
  EXPECT_NE(page.find("35%"), std::string::npos);
  EXPECT_NE(page.find("a &amp; b?"), std::string::npos);
  EXPECT_NE(page.find("c &gt; d"), std::string::npos);
  EXPECT_EQ(page.find("data:image"), std::string::npos) << "no photo, no image";
  for (const char* inline_code : {" style=", "<style", "<script", " onload=", " onerror=", " onclick="})
    EXPECT_EQ(page.find(inline_code), std::string::npos) << inline_code << ": the CSP allows no inline style or script";
  // Fields of the wrong type print as empty; nothing throws.
  for (const char* k :
       {"patient", "red_flags", "differential", "messages", "model_answers", "findings", "review", "next_steps"}) {
    nlohmann::ordered_json bad = v;
    bad[k] = 7;
    EXPECT_NO_THROW(print_page(bad, {})) << k;
    bad[k] = nlohmann::ordered_json::array({1, "x", nullptr});
    EXPECT_NO_THROW(print_page(bad, {})) << k;
  }
  EXPECT_NO_THROW(print_page(nlohmann::ordered_json::object(), {}));
}

TEST(ServerPolicy, NonLoopbackBindNeedsAKey) {
  EXPECT_NO_THROW(check_bind_policy("127.0.0.1", false));
  EXPECT_NO_THROW(check_bind_policy("127.8.9.10", false));
  EXPECT_NO_THROW(check_bind_policy("::1", false));
  EXPECT_NO_THROW(check_bind_policy("localhost", false));
  for (const char* h : {"0.0.0.0", "192.168.1.10", "::", "example.org"}) {
    try {
      check_bind_policy(h, false);
      ADD_FAILURE() << h << " accepted without a key";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--api-key-file"), std::string::npos) << e.what();
    }
    EXPECT_NO_THROW(check_bind_policy(h, true));
  }
  // The command refuses before loading any model, with one clear line.
  test::TempDir d;
  const auto run = test::run_command(std::string(SKINGPT_BINARY) + " serve --host 0.0.0.0 --port 0 --model '" +
                                     tiny_model_dir() + "' --data-dir '" + (d / "data").string() + "'");
  EXPECT_EQ(run.status, 1) << run.output;
  EXPECT_NE(run.output.find("refusing to listen on 0.0.0.0 without an API key"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(d / "data")) << "refused before touching the data folder";
  // A short key is refused too.
  std::ofstream(d / "short.key") << "abc\n";
  EXPECT_THROW(read_api_key_file((d / "short.key").string()), Error);
  std::ofstream(d / "good.key") << "  0123456789abcdef-key  \n";
  EXPECT_EQ(read_api_key_file((d / "good.key").string()), "0123456789abcdef-key");
}

TEST(ServerPolicy, StopBeforeServeEndsServe) {
  test::TempDir d;
  ServerOptions o;
  o.port = 0;
  o.data_dir = (d / "data").string();
  o.engine.model_dir = tiny_model_dir();
  o.engine.threads = 1;
  HttpServer srv(o);
  srv.bind();
  srv.stop();  // before serve(): serve() must return at once, not hang
  std::thread t([&] { srv.serve(); });
  t.join();
  // Data folder created owner-only.
  EXPECT_EQ(fs::status(d / "data").permissions() & (fs::perms::group_all | fs::perms::others_all), fs::perms::none);
  EXPECT_EQ(fs::status(d / "data" / "cases.db").permissions() & (fs::perms::group_all | fs::perms::others_all),
            fs::perms::none);
}

// ------------------------------------------------------------ the store

TEST(ServerStore, SchemaTransactionsSearchAndDeletion) {
  test::TempDir d;
  const std::string db = (d / "cases.db").string();
  std::string id;
  {
    Store s(db);
    EXPECT_EQ(s.schema_version(), kStoreSchemaVersion);
    NewCase c;
    c.language = "en";
    c.age = 61;
    c.sex = "female";
    c.site = "left forearm";
    c.history = "PATIENT-SECRET grew over 3 months";
    c.assessed = true;
    c.top_id = "mel";
    c.top_name = "Melanoma";
    c.top_probability = 0.4;
    c.report_json = R"({"schema":"skingpt-report"})";
    c.image_jpeg = {0xff, 0xd8, 0xff, 0xd9};
    id = s.create_case(c, "tester");
    c.site = "back";
    c.history = "other history";
    c.top_id = "nv";
    c.top_name = "Melanocytic nevus";
    const std::string id2 = s.create_case(c, "tester");
    EXPECT_EQ(s.list_cases("", 10, 0).size(), 2u);
    EXPECT_EQ(s.list_cases("", 10, 0)[0].id, id2) << "newest first";
    ASSERT_EQ(s.list_cases("forearm", 10, 0).size(), 1u);
    EXPECT_EQ(s.list_cases("melanoma", 10, 0).size(), 1u) << "case-insensitive on the top condition";
    EXPECT_EQ(s.list_cases("%", 10, 0).size(), 0u) << "LIKE wildcards are escaped";
    EXPECT_EQ(s.list_cases("", 1, 1).size(), 1u);
    EXPECT_TRUE(s.add_exchange(id, "does it itch?", "maybe", "tester"));
    EXPECT_FALSE(s.add_exchange("0123456789abcdef0123456789abcdef", "q", "a", "tester"));
    EXPECT_TRUE(s.add_review(id, Review{0, "correct", "bcc", "looks pearly", "Dr. A", ""}, "tester"));
  }
  {
    Store s(db);  // reopened: everything committed, migrations not rerun
    EXPECT_EQ(s.schema_version(), kStoreSchemaVersion);
    const auto r = s.get_case(id);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->summary.status, "reviewed");
    EXPECT_EQ(r->messages.size(), 2u);
    ASSERT_TRUE(r->review);
    EXPECT_EQ(r->review->diagnosis_id, "bcc");
    EXPECT_EQ(s.list_cases("pearly", 10, 0).size(), 1u) << "review notes are searchable";
    EXPECT_TRUE(s.delete_case(id, "tester"));
    EXPECT_FALSE(s.delete_case(id, "tester"));
    EXPECT_FALSE(s.get_case(id));
    EXPECT_FALSE(s.image(id));
    EXPECT_TRUE(s.messages(id).empty());
    const auto log = s.audit_log(100);
    bool deleted = false;
    for (const auto& e : log) {
      if (e.action == "delete" && e.case_id == id) deleted = true;
      EXPECT_EQ(e.detail.find("PATIENT-SECRET"), std::string::npos);
    }
    EXPECT_TRUE(deleted);
    EXPECT_EQ(s.integrity_check(), "ok");
  }
  // No trace of the deleted case's text anywhere in the files.
  std::string all;
  for (const auto& f : fs::directory_iterator(d.path())) all += test::read_bytes(f.path());
  EXPECT_EQ(all.find("PATIENT-SECRET"), std::string::npos) << "secure_delete and the WAL checkpoint leave no trace";
}

TEST(ServerStore, RefusesANewerSchema) {
  test::TempDir d;
  const std::string db = (d / "cases.db").string();
  { Store s(db); }
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(h, "INSERT INTO schema_version VALUES (99)", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(h);
  try {
    Store s(db);
    ADD_FAILURE() << "opened a database from a newer program";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("newer than this program"), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------ HTTP basics

TEST(Server, HealthModelsMetricsAndSecurityHeaders) {
  RunningServer s;
  auto c = s.client();
  auto r = c.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(body_json(r)["status"], "ok");
  for (const char* path : {"/health", "/", "/app.js", "/nothing-here", "/v1/models"}) {
    r = c.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_NE(r->get_header_value("Content-Security-Policy").find("default-src 'self'"), std::string::npos) << path;
    EXPECT_EQ(r->get_header_value("X-Content-Type-Options"), "nosniff") << path;
    EXPECT_EQ(r->get_header_value("Referrer-Policy"), "no-referrer") << path;
    EXPECT_EQ(r->get_header_value("X-Frame-Options"), "DENY") << path;
  }
  r = c.Get("/");
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(r->body.find("app.js"), std::string::npos);
  // No filesystem behind the URLs.
  for (const char* p : {"/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/web/index.html", "/CMakeLists.txt",
                        "/api/consultations/..%2f..%2fetc%2fpasswd"}) {
    r = c.Get(p);
    ASSERT_TRUE(r) << p;
    EXPECT_EQ(r->status, 404) << p;
    EXPECT_EQ(r->body.find("root:"), std::string::npos);
  }
  r = c.Get("/v1/models");
  EXPECT_EQ(r->status, 200);
  const json m = body_json(r);
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"].size(), 1u);
  r = c.Get("/metrics");
  EXPECT_EQ(r->status, 200);
  const json mt = body_json(r);
  EXPECT_GE(mt["requests"]["total"].get<int64_t>(), 5);
  EXPECT_EQ(mt["queue"]["waiting"], 0);
  EXPECT_TRUE(mt["model"].contains("tokens_per_second"));
}

TEST(Server, ChatCompletionsPlainAndStreamed) {
  RunningServer s;
  auto c = s.client();
  // Text only.
  auto r = c.Post("/v1/chat/completions", chat_body("Hello, who are you?").dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = body_json(r);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_TRUE(j["choices"][0]["message"]["content"].is_string());
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(j["usage"]["total_tokens"].get<int64_t>(),
            j["usage"]["prompt_tokens"].get<int64_t>() + j["usage"]["completion_tokens"].get<int64_t>());
  // With an image, then the same streamed: the same greedy answer.
  const std::string img = data_uri(example_bytes(kNevus));
  r = c.Post("/v1/chat/completions", chat_body("Describe this lesion.", img).dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  j = body_json(r);
  const std::string plain = j["choices"][0]["message"]["content"];
  const int64_t image_prompt = j["usage"]["prompt_tokens"];
  EXPECT_GT(image_prompt, 4) << "the image's query tokens are in the prompt";
  r = c.Post("/v1/chat/completions", chat_body("Describe this lesion.", img, true).dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  const auto ev = sse_events(r->body);
  ASSERT_GE(ev.size(), 3u) << r->body;
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string streamed;
  std::string finish;
  for (size_t i = 0; i + 1 < ev.size(); ++i) {
    const json e = json::parse(ev[i]);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    const auto& ch = e["choices"][0];
    if (i == 0) {
      EXPECT_EQ(ch["delta"]["role"], "assistant");
    }
    if (ch["delta"].contains("content")) streamed += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
  }
  EXPECT_FALSE(finish.empty());
  // The stream carries the raw text; the plain answer is post-processed (trimmed).
  EXPECT_NE(streamed.find(plain), std::string::npos) << "streamed '" << streamed << "' plain '" << plain << "'";

  // A conversation with an earlier turn, as OpenAI clients send it.
  json multi = chat_body("And now?");
  multi["messages"] = json::array({{{"role", "system"}, {"content", "You are helpful."}},
                                   {{"role", "user"}, {"content", "Hi"}},
                                   {{"role", "assistant"}, {"content", "Hello."}},
                                   {{"role", "user"}, {"content", "And now?"}}});
  r = c.Post("/v1/chat/completions", multi.dump(), "application/json");
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST(Server, BadRequestsGetOneClearError) {
  ServerOptions o;
  o.max_upload_bytes = 256 * 1024;
  RunningServer s(o);
  auto c = s.client();
  auto post = [&](const json& b) { return c.Post("/v1/chat/completions", b.dump(), "application/json"); };
  auto r = post(chat_body("what is this?", "https://example.org/lesion.jpg"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(error_message(r).find("remote image URLs are refused: the server never connects out"), std::string::npos)
      << r->body;
  r = post(chat_body("x", "http://10.0.0.1/a.png"));
  EXPECT_EQ(r->status, 400);
  struct Case {
    json body;
    const char* says;
  };
  const std::string img = data_uri(example_bytes(kNevus));
  json two = chat_body("x", img);
  two["messages"][0]["content"].push_back({{"type", "image_url"}, {"image_url", {{"url", img}}}});
  json last_assistant = chat_body("x");
  last_assistant["messages"].push_back({{"role", "assistant"}, {"content", "hi"}});
  json bad_role = chat_body("x");
  bad_role["messages"][0]["role"] = "tool";
  json bad_temp = chat_body("x");
  bad_temp["temperature"] = "hot";
  const std::vector<Case> cases = {
      {json::object(), "'messages'"},
      {{{"messages", json::array()}}, "'messages'"},
      {{{"messages", "hi"}}, "'messages'"},
      {{{"messages", json::array({1, 2})}}, "object"},
      {two, "one image per conversation"},
      {last_assistant, "last message must be from the user"},
      {bad_role, "unsupported role"},
      {bad_temp, "temperature"},
      {chat_body("x", "data:image/gif;base64,R0lGOD=="), "unsupported image type"},
      {chat_body("x", "data:image/png;base64,!!!!"), "not valid base64"},
      {chat_body("x", data_uri("this is not an image", "image/png")), "not a JPEG, PNG"},
      {chat_body("x", "ftp://x/y.jpg"), "data: URI"},
  };
  for (const auto& k : cases) {
    r = post(k.body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << k.body.dump().substr(0, 200) << " → " << r->body;
    EXPECT_NE(error_message(r).find(k.says), std::string::npos) << r->body;
  }
  r = c.Post("/v1/chat/completions", "{not json", "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(error_message(r).find("not valid JSON"), std::string::npos);
  r = c.Post("/v1/chat/completions", "hello", "text/plain");
  EXPECT_EQ(r->status, 415);
  // A truncated JPEG.
  const std::string jpg = example_bytes(kNevus);
  r = post(chat_body("x", data_uri(jpg.substr(0, jpg.size() / 3))));
  EXPECT_EQ(r->status, 400) << r->body;
  r = c.Get("/api/consultations?limit=0");
  EXPECT_EQ(r->status, 400);
  r = c.Get("/api/consultations?limit=abc");
  EXPECT_EQ(r->status, 400);
  r = c.Get("/api/consultations/0123456789abcdef0123456789abcdef");
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(error_message(r), "no such case");
  r = c.Delete("/api/consultations/0123456789abcdef0123456789abcdef");
  EXPECT_EQ(r->status, 404);
  // The server is still fine.
  EXPECT_EQ(c.Get("/health")->status, 200);
}

// A PNG whose header claims `w`×`h` (no pixel data follows).
std::string png_header_claiming(uint32_t w, uint32_t h) {
  auto crc32 = [](const std::string& s) {
    uint32_t c = 0xffffffffu;
    for (unsigned char b : s) {
      c ^= b;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
  };
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
  };
  std::string ihdr = "IHDR" + be32(w) + be32(h) + std::string("\x08\x02\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + ihdr + be32(crc32(ihdr));
}

TEST(Server, OversizedUploadsGet413) {
  ServerOptions o;
  o.max_upload_bytes = 64 * 1024;
  RunningServer s(o);
  auto c = s.client();
  // A body above the limit, JSON and multipart.
  const std::string big = data_uri(std::string(200 * 1024, 'x'));
  auto r = c.Post("/v1/chat/completions", chat_body("x", big).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413) << r->body;
  EXPECT_NE(error_message(r).find("upload limit"), std::string::npos) << r->body;
  httplib::MultipartFormDataItems items = {{"image", std::string(100 * 1024, 'y'), "a.jpg", "image/jpeg"}};
  r = c.Post("/api/consultations", items);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  // Small in bytes, but more pixels than the decoder takes.
  const std::string huge = png_header_claiming(20000, 20000);
  r = c.Post("/api/consultations", json{{"image", data_uri(huge, "image/png")}}.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413) << r->body;
  EXPECT_NE(error_message(r).find("megapixels"), std::string::npos) << r->body;
  EXPECT_EQ(c.Get("/health")->status, 200);
}

TEST(Server, ApiKeyIsRequiredWhenSet) {
  ServerOptions o;
  o.api_key = "test-key-0123456789abcdef";
  RunningServer s(o);
  auto anon = s.client();
  EXPECT_EQ(anon.Get("/health")->status, 200) << "health stays open";
  EXPECT_EQ(anon.Get("/")->status, 200) << "the web app's files hold no data";
  for (const char* p : {"/v1/models", "/api/consultations", "/metrics"}) {
    auto r = anon.Get(p);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << p;
    EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer");
  }
  auto r = anon.Post("/v1/chat/completions", chat_body("x").dump(), "application/json");
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(s.client("test-key-0123456789abcdeX").Get("/v1/models")->status, 401) << "wrong key";
  EXPECT_EQ(s.client("test-key-0123456789abcde").Get("/v1/models")->status, 401) << "a prefix of the key";
  EXPECT_EQ(s.client("test-key-0123456789abcdef").Get("/v1/models")->status, 200);
  httplib::Headers basic = {{"Authorization", "Basic dGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg=="}};
  EXPECT_EQ(anon.Get("/v1/models", basic)->status, 401);
}

TEST(Server, OtherWebsitesAreRefused) {
  RunningServer s;
  auto c = s.client();
  // DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
  for (const char* path : {"/api/consultations", "/v1/models", "/"}) {
    auto r = c.Get(path, httplib::Headers{{"Host", "evil.example:8080"}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << path;
    EXPECT_NE(error_message(r).find("loopback names"), std::string::npos);
  }
  EXPECT_EQ(c.Get("/health", httplib::Headers{{"Host", "localhost.evil.example"}})->status, 403);
  for (const char* h : {"localhost:1234", "[::1]:80", "127.0.0.1"})
    EXPECT_EQ(c.Get("/health", httplib::Headers{{"Host", h}})->status, 200) << h;
  // A cross-origin form post changes nothing; the app's own origin is fine.
  const std::string own = "http://127.0.0.1:" + std::to_string(s.port);
  auto r = c.Post("/v1/chat/completions", httplib::Headers{{"Origin", "http://evil.example"}}, chat_body("x").dump(),
                  "application/json");
  EXPECT_EQ(r->status, 403);
  r = c.Delete("/api/consultations/0123456789abcdef0123456789abcdef", httplib::Headers{{"Origin", "null"}});
  EXPECT_EQ(r->status, 403);
  r = c.Post("/v1/chat/completions", httplib::Headers{{"Origin", own}}, chat_body("x").dump(), "application/json");
  EXPECT_EQ(r->status, 200) << r->body;
  // With a key (a LAN server) any Host name is fine: the key decides.
  ServerOptions o;
  o.api_key = "test-key-0123456789abcdef";
  RunningServer keyed(o);
  EXPECT_EQ(keyed.client("test-key-0123456789abcdef")
                .Get("/v1/models", httplib::Headers{{"Host", "skingpt.clinic.lan:8080"}})
                ->status,
            200);
}

TEST(Server, FullQueueGets429WithRetryAfter) {
  RunningServer s(with_queue(1));
  // Hold the worker with a job that waits for us, and fill the one slot.
  std::promise<void> started, release;
  auto released = release.get_future().share();
  ASSERT_TRUE(s.srv->engine().try_submit([&](ModelWorker&) {
    started.set_value();
    released.wait();
  }));
  started.get_future().wait();
  std::promise<void> filler_ran;
  ASSERT_TRUE(s.srv->engine().try_submit([&](ModelWorker&) { filler_ran.set_value(); }));
  EXPECT_FALSE(s.srv->engine().try_submit([](ModelWorker&) {}));
  auto c = s.client();
  auto r = c.Post("/v1/chat/completions", chat_body("x").dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429) << r->body;
  EXPECT_EQ(r->get_header_value("Retry-After"), "2");
  r = c.Post("/v1/chat/completions", chat_body("x", "", true).dump(), "application/json");
  EXPECT_EQ(r->status, 429) << "a stream is refused before it starts";
  r = c.Post("/api/consultations", json{{"image", data_uri(example_bytes(kNevus))}}.dump(), "application/json");
  EXPECT_EQ(r->status, 429);
  const json m = body_json(c.Get("/metrics"));
  EXPECT_EQ(m["queue"]["waiting"], 1);
  EXPECT_EQ(m["queue"]["busy"], true);
  EXPECT_EQ(m["requests"]["rejected_busy_429"], 3);
  EXPECT_EQ(s.srv->store().count_cases(), 0) << "a refused consultation stores nothing";
  release.set_value();
  filler_ran.get_future().wait();  // the waiting slot is free again
  // Once the queue drains, requests are served again.
  r = c.Post("/v1/chat/completions", chat_body("x").dump(), "application/json");
  EXPECT_EQ(r->status, 200) << r->body;
}

// ------------------------------------------------------------ consultations

// A JPEG with an EXIF segment holding a GPS-like secret after SOI.
std::string jpeg_with_exif(const std::string& jpg) {
  const std::string payload = std::string("Exif\0\0", 6) + "GPS-SECRET-48.8584N-2.2945E serial=SN-TEST-0001";
  const uint16_t len = static_cast<uint16_t>(payload.size() + 2);
  std::string seg = std::string("\xff\xe1", 2) + static_cast<char>(len >> 8) + static_cast<char>(len & 0xff) + payload;
  return jpg.substr(0, 2) + seg + jpg.substr(2);
}

TEST(Server, ConsultationLifecycle) {
  RunningServer s;
  auto c = s.client();
  const std::string jpg = jpeg_with_exif(example_bytes(kMel));
  ASSERT_NO_THROW(decode_image_memory(reinterpret_cast<const uint8_t*>(jpg.data()), jpg.size(), "x"));
  json req = {{"image", data_uri(jpg)}, {"age", 67}, {"sex", "male"}, {"site", "upper back"},
              {"history", "new, grew over 2 months"}, {"language", "en"}};
  auto r = c.Post("/api/consultations", req.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  json rep = body_json(r);
  const std::string id = rep["case_id"];
  EXPECT_TRUE(is_case_id(id));
  EXPECT_EQ(r->get_header_value("Location"), "/api/consultations/" + id);
  EXPECT_EQ(rep["schema"], "skingpt-report");
  EXPECT_EQ(rep["status"], "draft_awaiting_clinician_review");
  EXPECT_EQ(rep["status_text"], "Draft — awaiting clinician review");
  EXPECT_TRUE(rep["review"].is_null());
  EXPECT_TRUE(rep["assessed"].get<bool>()) << rep.dump();
  EXPECT_GE(rep["differential"]["candidates"].size(), 2u);
  EXPECT_EQ(rep["model_answers"].size(), 4u);
  EXPECT_EQ(rep["patient"]["age"], 67);
  const std::string top = rep["differential"]["candidates"][0]["id"];

  // The stored photo: re-encoded, no EXIF, no secret.
  r = c.Get("/api/consultations/" + id + "/image");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "image/jpeg");
  EXPECT_EQ(r->body.find("Exif"), std::string::npos);
  EXPECT_EQ(r->body.find("GPS-SECRET"), std::string::npos);
  EXPECT_EQ(r->body.find("SN-TEST"), std::string::npos);
  const Image stored = decode_image_memory(reinterpret_cast<const uint8_t*>(r->body.data()), r->body.size(), "s");
  const Image original = decode_image_memory(reinterpret_cast<const uint8_t*>(jpg.data()), jpg.size(), "o");
  EXPECT_EQ(stored.width, original.width);
  EXPECT_EQ(stored.height, original.height);

  // A second case, in Japanese, by multipart form (as the web app sends it).
  httplib::MultipartFormDataItems form = {{"image", example_bytes(kNevus), "n.jpg", "image/jpeg"},
                                          {"language", "ja", "", ""},
                                          {"site", "左前腕", "", ""},
                                          {"age", "34", "", ""}};
  r = c.Post("/api/consultations", form);
  ASSERT_EQ(r->status, 201) << r->body;
  const json rep2 = body_json(r);
  const std::string id2 = rep2["case_id"];
  EXPECT_EQ(rep2["language"], "ja");
  EXPECT_EQ(rep2["status_text"], clinic::status_text(clinic::Language::Ja));
  form.push_back({"age", "old", "", ""});
  form.erase(form.begin() + 3);
  EXPECT_EQ(c.Post("/api/consultations", form)->status, 400) << "age must be a number";

  // List, newest first; search.
  r = c.Get("/api/consultations");
  ASSERT_EQ(r->status, 200);
  json list = body_json(r);
  ASSERT_EQ(list["cases"].size(), 2u);
  EXPECT_EQ(list["cases"][0]["case_id"], id2);
  EXPECT_EQ(list["cases"][1]["case_id"], id);
  EXPECT_EQ(list["cases"][1]["status"], "draft");
  EXPECT_EQ(list["cases"][1]["top"]["id"], top);
  r = c.Get("/api/consultations", httplib::Params{{"q", "upper back"}}, httplib::Headers{});
  list = body_json(r);
  ASSERT_EQ(list["cases"].size(), 1u);
  EXPECT_EQ(list["cases"][0]["case_id"], id);
  r = c.Get("/api/consultations", httplib::Params{{"q", "左前腕"}}, httplib::Headers{});
  EXPECT_EQ(body_json(r)["cases"].size(), 1u);
  r = c.Get("/api/consultations", httplib::Params{{"q", "no such thing"}}, httplib::Headers{});
  EXPECT_EQ(body_json(r)["cases"].size(), 0u);

  // Follow-ups in the case's conversation: the consultation's image
  // embeddings are kept, so no follow-up runs the vision encoder.
  const int64_t encodes0 = body_json(c.Get("/metrics"))["model"]["image_encodes"];
  r = c.Post("/api/consultations/" + id + "/messages", json{{"content", "Is it dangerous?"}}.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(body_json(r)["answer"].is_string());
  r = c.Post("/api/consultations/" + id + "/messages", json{{"content", "Should I see someone?"}, {"stream", true}}.dump(),
             "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  auto ev = sse_events(r->body);
  ASSERT_GE(ev.size(), 2u);
  EXPECT_EQ(ev.back(), "[DONE]");
  EXPECT_TRUE(json::parse(ev[ev.size() - 2])["done"].get<bool>()) << r->body;
  // Another case in between, then back: the cached embeddings, no new encode.
  r = c.Post("/api/consultations/" + id2 + "/messages", json{{"content", "かゆみは？"}}.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  r = c.Post("/api/consultations/" + id + "/messages", json{{"content", "And treatment?"}}.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  const json mt = body_json(c.Get("/metrics"));
  EXPECT_EQ(mt["model"]["image_encodes"].get<int64_t>() - encodes0, 0) << "the consultation's encode is reused";
  EXPECT_EQ(mt["model"]["follow_up_cache_hits"].get<int64_t>(), 4);
  EXPECT_EQ(c.Post("/api/consultations/" + id + "/messages", json{{"content", ""}}.dump(), "application/json")->status,
            400);
  rep = body_json(c.Get("/api/consultations/" + id));
  ASSERT_EQ(rep["messages"].size(), 6u);
  EXPECT_EQ(rep["messages"][0]["role"], "user");
  EXPECT_EQ(rep["messages"][0]["content"], "Is it dangerous?");
  EXPECT_EQ(rep["messages"][1]["role"], "assistant");
  EXPECT_EQ(rep["status"], "draft_awaiting_clinician_review");

  // The printable report: a draft with lines to sign, the photo inlined,
  // the follow-ups, the patient's words escaped.
  auto print = [&](const std::string& case_id) {
    auto p = c.Get("/api/consultations/" + case_id + "/print");
    EXPECT_EQ(p->status, 200);
    EXPECT_NE(p->get_header_value("Content-Type").find("text/html"), std::string::npos);
    return p->body;
  };
  std::string page = print(id);
  EXPECT_NE(page.find("DRAFT"), std::string::npos);
  EXPECT_NE(page.find("Signature"), std::string::npos);
  EXPECT_NE(page.find("src=\"data:image/jpeg;base64,"), std::string::npos);
  EXPECT_NE(page.find(rep["differential"]["candidates"][0]["name"].get<std::string>()), std::string::npos);
  EXPECT_NE(page.find("Is it dangerous?"), std::string::npos);
  EXPECT_NE(page.find("new, grew over 2 months"), std::string::npos);
  EXPECT_NE(page.find("href=\"/print.css\""), std::string::npos);
  EXPECT_NE(print(id2).find("下書き"), std::string::npos);
  EXPECT_EQ(c.Get("/api/consultations/" + std::string(32, '0') + "/print")->status, 404);

  // The clinician's review.
  auto review = [&](const json& b) {
    return c.Post("/api/consultations/" + id + "/review", b.dump(), "application/json");
  };
  EXPECT_EQ(review({{"decision", "maybe"}, {"reviewer", "Dr. B"}})->status, 400);
  EXPECT_EQ(review({{"decision", "confirm"}})->status, 400) << "a reviewer name is required";
  EXPECT_EQ(review({{"decision", "correct"}, {"reviewer", "Dr. B"}, {"diagnosis_id", "zzz"}})->status, 400);
  r = review({{"decision", "confirm"}, {"reviewer", "Dr. B"}, {"notes", "agree"}});
  ASSERT_EQ(r->status, 201) << r->body;
  rep = body_json(r);
  EXPECT_EQ(rep["status"], "reviewed");
  EXPECT_EQ(rep["review"]["diagnosis_id"], top);
  r = review({{"decision", "correct"}, {"reviewer", "Dr. C"}, {"diagnosis_id", "bcc"}, {"notes", "pearly rim"}});
  ASSERT_EQ(r->status, 201) << r->body;
  rep = body_json(r);
  EXPECT_EQ(rep["review"]["diagnosis_id"], "bcc");
  EXPECT_NE(rep["status_text"].get<std::string>().find("Dr. C"), std::string::npos);
  // FHIR export: final once reviewed, coded with the clinician's diagnosis.
  r = c.Get("/api/consultations/" + id + "/fhir");
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("application/fhir+json"), std::string::npos);
  const json fhir = body_json(r);
  EXPECT_EQ(fhir["resourceType"], "DiagnosticReport");
  EXPECT_EQ(fhir["status"], "final");
  EXPECT_EQ(fhir["conclusionCode"][0]["coding"][0]["code"], "C44") << fhir["conclusionCode"].dump();
  EXPECT_EQ(fhir["resultsInterpreter"][0]["display"], "Dr. C");
  const auto presented = base64_decode(fhir["presentedForm"][0]["data"].get<std::string>(), 1 << 24);
  ASSERT_TRUE(presented);
  EXPECT_EQ(json::parse(std::string(presented->begin(), presented->end()))["case_id"], id);
  EXPECT_EQ(body_json(c.Get("/api/consultations/" + id2 + "/fhir"))["status"], "preliminary");
  page = print(id);
  EXPECT_EQ(page.find("DRAFT"), std::string::npos);
  EXPECT_NE(page.find("Dr. C"), std::string::npos);
  EXPECT_NE(page.find("pearly rim"), std::string::npos);
  list = body_json(c.Get("/api/consultations", httplib::Params{{"q", "pearly"}}, httplib::Headers{}));
  ASSERT_EQ(list["cases"].size(), 1u);
  EXPECT_EQ(list["cases"][0]["status"], "reviewed");

  // Deletion: everything of the case goes; the audit log keeps the fact only.
  r = c.Delete("/api/consultations/" + id);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(c.Get("/api/consultations/" + id)->status, 404);
  EXPECT_EQ(c.Get("/api/consultations/" + id + "/image")->status, 404);
  EXPECT_EQ(c.Post("/api/consultations/" + id + "/messages", json{{"content", "hi"}}.dump(), "application/json")->status,
            404);
  EXPECT_EQ(body_json(c.Get("/api/consultations"))["cases"].size(), 1u);
  bool logged = false;
  for (const auto& e : s.srv->store().audit_log(1000)) {
    if (e.action == "delete" && e.case_id == id) logged = true;
    for (const auto* secret : {"upper back", "grew over", "pearly", "Is it dangerous"})
      EXPECT_EQ((e.detail + e.actor).find(secret), std::string::npos) << "patient data in the audit log";
  }
  EXPECT_TRUE(logged);
  const auto actions = s.srv->store().audit_log(1000);
  std::set<std::string> seen;
  for (const auto& e : actions) seen.insert(e.action);
  for (const char* a : {"create", "view", "message", "review", "export_fhir", "print", "delete"})
    EXPECT_TRUE(seen.count(a)) << a;
}

TEST(Server, QualityFeedbackAndRefusedPhotos) {
  RunningServer s;
  auto c = s.client();
  auto r = c.Post("/api/quality", json{{"image", data_uri(example_bytes(kNevus))}}.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json q = body_json(r);
  EXPECT_NE(q["quality"]["verdict"], "refuse") << q.dump();
  EXPECT_TRUE(q["measured"].is_object());
  // A 40×30 thumbnail: refused with advice, and as a consultation it is
  // stored without running the model.
  Image small;
  small.width = 40;
  small.height = 30;
  small.rgb.assign(40 * 30 * 3, 128);
  const auto png = encode_png(small);
  const std::string png_s(png.begin(), png.end());
  r = c.Post("/api/quality", json{{"image", data_uri(png_s, "image/png")}, {"language", "ja"}}.dump(),
             "application/json");
  q = body_json(r);
  EXPECT_EQ(q["quality"]["verdict"], "refuse");
  EXPECT_FALSE(q["quality"]["advice"].empty());
  const int64_t encodes = body_json(c.Get("/metrics"))["model"]["image_encodes"];
  r = c.Post("/api/consultations", json{{"image", data_uri(png_s, "image/png")}}.dump(), "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  const json rep = body_json(r);
  EXPECT_FALSE(rep["assessed"].get<bool>());
  EXPECT_TRUE(rep["differential"].is_null());
  EXPECT_EQ(body_json(c.Get("/metrics"))["model"]["image_encodes"].get<int64_t>(), encodes);
  const json list = body_json(c.Get("/api/consultations"));
  EXPECT_TRUE(list["cases"][0]["top"].is_null());
  // Confirming a refused photo makes no sense; correcting does.
  const std::string id = rep["case_id"];
  r = c.Post("/api/consultations/" + id + "/review", json{{"decision", "confirm"}, {"reviewer", "Dr. D"}}.dump(),
             "application/json");
  EXPECT_EQ(r->status, 400);
  r = c.Post("/api/consultations/" + id + "/review",
             json{{"decision", "correct"}, {"reviewer", "Dr. D"}, {"diagnosis_id", "nv"}}.dump(), "application/json");
  EXPECT_EQ(r->status, 201) << r->body;
}

TEST(Server, FollowUpsBeyondTheContextLeaveOutEarlierTurns) {
  ServerOptions o;
  o.engine.n_ctx = 400;  // the consultation fits; a few long follow-ups do not
  RunningServer s(o);
  auto c = s.client();
  auto r = c.Post("/api/consultations", json{{"image", data_uri(example_bytes(kNevus))}}.dump(), "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  const std::string id = body_json(r)["case_id"];
  std::string q = "Please tell me more:";
  for (int i = 0; i < 12; ++i) q += " is the border of this lesion regular and is the colour even";
  int64_t left_out = 0;
  for (int i = 0; i < 5; ++i) {
    r = c.Post("/api/consultations/" + id + "/messages", json{{"content", q}}.dump(), "application/json");
    ASSERT_EQ(r->status, 200) << i << ": " << r->body;
    left_out = std::max<int64_t>(left_out, body_json(r)["turns_left_out"]);
  }
  EXPECT_GT(left_out, 0) << "earlier turns were left out to fit";
  EXPECT_EQ(body_json(c.Get("/api/consultations/" + id))["messages"].size(), 10u) << "all are stored";
  // A question longer than the whole context cannot be answered: 409, and the server goes on.
  std::string huge;
  for (int i = 0; i < 60; ++i) huge += "what about the lesion's colour and border? ";
  r = c.Post("/api/consultations/" + id + "/messages", json{{"content", huge}}.dump(), "application/json");
  EXPECT_EQ(r->status, 409) << r->body;
  EXPECT_NE(error_message(r).find("context"), std::string::npos) << r->body;
  r = c.Post("/api/consultations/" + id + "/messages", json{{"content", "and now?"}}.dump(), "application/json");
  EXPECT_EQ(r->status, 200) << r->body;
}

// Mutated requests (flipped bytes, truncations, wrong types) to every POST
// endpoint: each gets an answer below 500, and the server stays up.
TEST(Server, MutatedRequestsNeverCrashOr500) {
  RunningServer s;
  auto c = s.client();
  Image small;
  small.width = 64;
  small.height = 48;
  small.rgb.resize(64 * 48 * 3);
  for (size_t i = 0; i < small.rgb.size(); ++i) small.rgb[i] = static_cast<uint8_t>((i * 37) % 251);
  const auto png = encode_png(small);
  const std::string img = data_uri(std::string(png.begin(), png.end()), "image/png");
  auto r = c.Post("/api/consultations", json{{"image", data_uri(example_bytes(kNevus))}}.dump(), "application/json");
  ASSERT_EQ(r->status, 201);
  const std::string id = body_json(r)["case_id"];
  struct Target {
    std::string path, body;
  };
  const std::vector<Target> targets = {
      {"/v1/chat/completions", chat_body("hello", img).dump()},
      {"/api/consultations", json{{"image", img}, {"age", 30}, {"site", "arm"}, {"language", "ja"}}.dump()},
      {"/api/quality", json{{"image", img}}.dump()},
      {"/api/consultations/" + id + "/messages", json{{"content", "and?"}}.dump()},
      {"/api/consultations/" + id + "/review",
       json{{"decision", "correct"}, {"diagnosis_id", "nv"}, {"reviewer", "R"}}.dump()},
  };
  uint64_t rng = 12345;
  auto next = [&] {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  };
  int answered = 0;
  for (const auto& t : targets) {
    for (int k = 0; k < 25; ++k) {
      std::string b = t.body;
      switch (k % 5) {
        case 0: b = b.substr(0, next() % b.size()); break;           // truncated
        case 1: for (int i = 0; i < 4; ++i) b[next() % b.size()] = static_cast<char>(next()); break;  // flipped bytes
        case 2: b.insert(next() % b.size(), "\xff\xfe\x00\"\\"); break;  // invalid UTF-8 and quotes
        case 3: {  // a field with the wrong type
          json j = json::parse(t.body);
          auto it = j.begin();
          std::advance(it, static_cast<long>(next() % j.size()));
          it.value() = k % 2 ? json(12345) : json::array({1, "x"});
          b = j.dump();
          break;
        }
        case 4: {  // the image's payload damaged inside otherwise valid JSON
          const size_t p = b.find("base64,");
          if (p != std::string::npos)
            for (int i = 0; i < 8; ++i) b[p + 7 + next() % (b.size() - p - 40)] = "A/+9"[next() % 4];
          break;
        }
      }
      r = c.Post(t.path, b, "application/json");
      ASSERT_TRUE(r) << t.path << " #" << k << ": no answer";
      EXPECT_LT(r->status, 500) << t.path << " #" << k << ": " << r->body;
      EXPECT_FALSE(body_json(r).is_discarded());
      ++answered;
    }
  }
  EXPECT_EQ(answered, 125);
  EXPECT_EQ(c.Get("/health")->status, 200);
  EXPECT_EQ(body_json(c.Get("/metrics"))["requests"]["5xx"], 0);
}

TEST(Server, WebAppIsSelfContainedAndFitsTheCsp) {
  RunningServer s;
  auto c = s.client();
  const auto html = c.Get("/");
  ASSERT_EQ(html->status, 200);
  const std::string& h = html->body;
  // Scripts only by src from this server, no inline handlers or styles (the CSP forbids them).
  size_t pos = 0;
  while ((pos = h.find("<script", pos)) != std::string::npos) {
    const size_t end = h.find('>', pos);
    EXPECT_NE(h.substr(pos, end - pos).find("src=\"/"), std::string::npos) << h.substr(pos, 80);
    EXPECT_EQ(h.compare(end + 1, 9, "</script>"), 0) << "inline script";
    pos = end;
  }
  for (const char* bad : {" style=", " onclick=", " onload=", " onsubmit=", "<style"})
    EXPECT_EQ(h.find(bad), std::string::npos) << bad;
  for (const char* path : {"/", "/app.js", "/style.css", "/print.css"}) {
    const auto r = c.Get(path);
    ASSERT_EQ(r->status, 200) << path;
    EXPECT_EQ(r->body.find("http://"), std::string::npos) << path << ": no remote assets";
    EXPECT_EQ(r->body.find("https://"), std::string::npos) << path << ": no remote assets";
    EXPECT_EQ(r->body.find("innerHTML"), std::string::npos) << path << ": data goes in as text only";
  }
  EXPECT_NE(c.Get("/app.js")->get_header_value("Content-Type").find("javascript"), std::string::npos);
  EXPECT_NE(c.Get("/style.css")->get_header_value("Content-Type").find("text/css"), std::string::npos);
  EXPECT_NE(h.find("capture=\"environment\""), std::string::npos) << "the phone's camera";
  EXPECT_NE(c.Get("/app.js")->body.find("考えられる疾患"), std::string::npos) << "Japanese UI texts";
}

// ------------------------------------------------------------ kill -9

// Starts `skingpt serve` as a child process; returns its pid and port.
pid_t spawn_server(const std::string& data_dir, int* port) {
  int out[2];
  if (pipe(out) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    close(out[1]);
    const std::string model = tiny_model_dir();
    execl(SKINGPT_BINARY, SKINGPT_BINARY, "serve", "--port", "0", "--model", model.c_str(), "--data-dir",
          data_dir.c_str(), "-t", "1", "-n", "4", "--queue", "8", (char*)nullptr);
    _exit(127);
  }
  close(out[1]);
  std::string line;
  char ch;
  while (read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
  close(out[0]);
  const auto colon = line.rfind(':', line.find(" (model"));
  *port = colon == std::string::npos ? 0 : std::atoi(line.c_str() + colon + 1);
  return pid;
}

TEST(ServerCrash, KillNineMidWritesLosesNoAcknowledgedCase) {
  test::TempDir d;
  const std::string data = (d / "data").string();
  int port = 0;
  const pid_t pid = spawn_server(data, &port);
  ASSERT_GT(pid, 0);
  if (port <= 0) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    FAIL() << "the server did not print its port";
  }
  const std::string body = json{{"image", data_uri(example_bytes(kNevus))}, {"site", "arm"}}.dump();
  std::mutex mu;
  std::vector<std::string> acked;
  std::atomic<bool> stop{false};
  std::promise<void> enough;
  std::atomic<bool> enough_set{false};
  std::vector<std::thread> clients;
  for (int t = 0; t < 3; ++t)
    clients.emplace_back([&] {
      httplib::Client c("127.0.0.1", port);
      c.set_read_timeout(60, 0);
      while (!stop) {
        auto r = c.Post("/api/consultations", body, "application/json");
        if (!r) break;  // the server is gone
        if (r->status != 201) continue;
        std::lock_guard lk(mu);
        acked.push_back(json::parse(r->body)["case_id"]);
        if (acked.size() >= 6 && !enough_set.exchange(true)) enough.set_value();
      }
    });
  const auto st = enough.get_future().wait_for(std::chrono::seconds(90));
  // Requests are in flight on every client thread right now.
  kill(pid, SIGKILL);
  stop = true;
  for (auto& t : clients) t.join();
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_EQ(st, std::future_status::ready) << "the server did not acknowledge 6 cases";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  Store s((fs::path(data) / "cases.db").string());  // reopens and recovers the WAL
  EXPECT_EQ(s.integrity_check(), "ok");
  std::lock_guard lk(mu);
  EXPECT_GE(acked.size(), 6u);
  for (const auto& id : acked) {
    const auto r = s.get_case(id);
    ASSERT_TRUE(r) << "acknowledged case " << id << " is lost";
    EXPECT_TRUE(json::parse(r->report_json)["assessed"].is_boolean());
    const auto img = s.image(id);
    ASSERT_TRUE(img);
    EXPECT_GT(img->size(), 1000u);
  }
  // Every stored case is whole (one transaction per case): a report and an image.
  for (const auto& c : s.list_cases("", 200, 0)) {
    EXPECT_TRUE(s.get_case(c.id)) << c.id;
    EXPECT_TRUE(s.image(c.id)) << c.id;
  }
  // And a server starts on it again.
  int port2 = 0;
  const pid_t pid2 = spawn_server(data, &port2);
  struct Reap {
    pid_t pid;
    ~Reap() {
      if (pid > 0 && waitpid(pid, nullptr, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  } reap{pid2};
  ASSERT_GT(port2, 0);
  httplib::Client c("127.0.0.1", port2);
  auto r = c.Get("/api/consultations?limit=200");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_GE(json::parse(r->body)["cases"].size(), acked.size());
  kill(pid2, SIGTERM);
  waitpid(pid2, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "SIGTERM stops the server cleanly";
}

}  // namespace
}  // namespace sg::server
