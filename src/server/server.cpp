#include "server/server.h"

#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <charconv>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>
#include <nlohmann/json.hpp>

#include "clinic/language.h"
#include "clinic/report.h"
#include "core/error.h"
#include "formats/image.h"
#include "server/assets.h"
#include "server/print_page.h"
#include "server/util.h"

namespace sg::server {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

// ------------------------------------------------------------------ policy

void check_bind_policy(const std::string& host, bool has_key) {
  if (host.empty()) throw Error("--host must not be empty");
  if (!is_loopback_host(host) && !has_key)
    throw Error("refusing to listen on " + host +
                " without an API key: only loopback (127.0.0.1, ::1, localhost) is allowed without one. "
                "Pass --api-key-file FILE (a secret of at least 16 characters) to serve other machines.");
}

std::string read_api_key_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot read the API key file");
  std::string line;
  std::getline(f, line);
  const auto b = line.find_first_not_of(" \t\r\n");
  const auto e = line.find_last_not_of(" \t\r\n");
  line = b == std::string::npos ? "" : line.substr(b, e - b + 1);
  if (line.size() < 16) throw Error(path + ": the API key must be at least 16 characters on the first line");
  if (line.size() > 512) throw Error(path + ": the API key is longer than 512 characters");
  for (unsigned char c : line)
    if (c < 0x21 || c > 0x7e) throw Error(path + ": the API key must be printable ASCII without spaces");
  return line;
}

namespace {

// ------------------------------------------------------------------ helpers

// An HTTP error with the status it maps to; thrown inside handlers.
struct HttpError {
  int status;
  std::string message;
  std::string type = "invalid_request_error";
};
[[noreturn]] void fail(int status, const std::string& msg) { throw HttpError{status, msg}; }

void send_json(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, "application/json; charset=utf-8");
}
void send_json(httplib::Response& res, int status, const ordered_json& j) {
  send_json(res, status, j.dump(-1, ' ', false, ordered_json::error_handler_t::replace));
}
std::string error_body(const std::string& message, const std::string& type, int status) {
  ordered_json e;
  e["error"] = {{"message", message}, {"type", type}, {"code", status}};
  return e.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}
void send_error(httplib::Response& res, int status, const std::string& message,
                const std::string& type = "invalid_request_error") {
  res.status = status;
  res.set_content(error_body(message, type, status), "application/json; charset=utf-8");
}

json parse_body(const httplib::Request& req) {
  const std::string ct = req.get_header_value("Content-Type");
  if (ct.find("application/json") == std::string::npos)
    fail(415, "send the request as JSON (Content-Type: application/json)");
  json j = json::parse(req.body, nullptr, false);
  if (j.is_discarded()) fail(400, "the request body is not valid JSON");
  if (!j.is_object()) fail(400, "the request body must be a JSON object");
  return j;
}

// A string field: absent/null → "", else a string of at most `max` bytes.
std::string str_field(const json& j, const char* name, size_t max, bool required = false) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) {
    if (required) fail(400, std::string("'") + name + "' is required");
    return "";
  }
  if (!it->is_string()) fail(400, std::string("'") + name + "' must be a string");
  std::string s = it->get<std::string>();
  if (s.size() > max) fail(400, std::string("'") + name + "' is longer than " + std::to_string(max) + " bytes");
  if (required && s.find_first_not_of(" \t\r\n") == std::string::npos)
    fail(400, std::string("'") + name + "' must not be empty");
  return s;
}

std::optional<int64_t> parse_int(const std::string& s) {
  int64_t v = 0;
  const auto* e = s.data() + s.size();
  const auto r = std::from_chars(s.data(), e, v);
  if (r.ec != std::errc() || r.ptr != e) return std::nullopt;
  return v;
}

int int_param(const httplib::Request& req, const char* name, int def, int lo, int hi) {
  if (!req.has_param(name)) return def;
  const auto v = parse_int(req.get_param_value(name));
  if (!v || *v < lo || *v > hi)
    fail(400, std::string("query parameter '") + name + "' must be an integer in " + std::to_string(lo) + ".." +
                  std::to_string(hi));
  return static_cast<int>(*v);
}

// Decodes an uploaded photo; 413 for too many pixels, 400 for anything else.
Image decode_upload(const std::vector<uint8_t>& bytes) {
  if (bytes.empty()) fail(400, "the image is empty");
  if (detect_image_format(bytes.data(), bytes.size()) == ImageFormat::Unknown)
    fail(400, "the image is not a JPEG, PNG, WebP or HEIF/HEIC file");
  try {
    return decode_image_memory(bytes.data(), bytes.size(), "image");
  } catch (const Error& e) {
    const std::string m = e.what();
    if (m.find("megapixels") != std::string::npos) fail(413, m);
    fail(400, m);
  }
}

// A streamed answer: the worker pushes text, the HTTP thread writes it out as
// server-sent events. Cancelled when the client goes away (the worker's
// generation then stops at the next token).
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> events;  // complete SSE payloads (the JSON after "data: ")
  bool done = false;
  std::atomic<bool> cancelled{false};
  void push(std::string ev) {
    {
      std::lock_guard lk(mu);
      events.push_back(std::move(ev));
    }
    cv.notify_all();
  }
  void finish() {
    {
      std::lock_guard lk(mu);
      done = true;
    }
    cv.notify_all();
  }
};

// Finishes a channel with an error when the job holding it is dropped
// without running (server stopping), so a stream never hangs.
struct ChannelGuard {
  std::shared_ptr<Channel> ch;
  bool finished = false;
  ~ChannelGuard() {
    if (!finished) {
      ch->push(error_body("the server stopped before answering", "server_error", 503));
      ch->finish();
    }
  }
};

void stream_channel(httplib::Response& res, std::shared_ptr<Channel> ch) {
  res.status = 200;
  res.set_header("Cache-Control", "no-store");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [ch](size_t, httplib::DataSink& sink) {
        std::unique_lock lk(ch->mu);
        while (ch->events.empty() && !ch->done) {
          ch->cv.wait_for(lk, std::chrono::milliseconds(500));
          if (!sink.is_writable()) {
            ch->cancelled = true;
            return false;
          }
        }
        std::string out;
        while (!ch->events.empty()) {
          out += "data: " + ch->events.front() + "\n\n";
          ch->events.pop_front();
        }
        const bool done = ch->done;
        lk.unlock();
        if (!out.empty() && !sink.write(out.data(), out.size())) {
          ch->cancelled = true;
          return false;
        }
        if (done) {
          static const std::string fin = "data: [DONE]\n\n";
          sink.write(fin.data(), fin.size());
          sink.done();
        }
        return true;
      },
      [ch](bool) { ch->cancelled = true; });
}

// Waits for a job's result; the job is dropped (broken promise) when the
// server stops before running it.
template <typename T>
T wait_result(std::future<T>& f) {
  try {
    return f.get();
  } catch (const std::future_error&) {
    fail(503, "the server stopped before answering");
  }
}

// The clinic report JSON with the case's record on top.
ordered_json case_view(const CaseRecord& r, const clinic::Catalogue& cat) {
  ordered_json j = ordered_json::parse(r.report_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) j = ordered_json::object();
  ordered_json out;
  out["case_id"] = r.summary.id;
  out["case_created"] = r.summary.created;
  for (auto it = j.begin(); it != j.end(); ++it) out[it.key()] = it.value();
  const bool ja = r.summary.language == "ja";
  if (r.review) {
    const auto& v = *r.review;
    std::string name = v.diagnosis_id;
    if (auto k = cat.index_of(v.diagnosis_id)) name = cat[*k].name.get(ja ? clinic::Language::Ja : clinic::Language::En);
    out["status"] = "reviewed";
    if (ja)
      out["status_text"] = "臨床医レビュー済み（" + v.reviewer + "）: " + (v.decision == "confirm" ? "確認 " : "訂正 ") + name;
    else
      out["status_text"] = "Reviewed by " + v.reviewer + ": " + (v.decision == "confirm" ? "confirmed " : "corrected to ") + name;
    out["review"] = {{"decision", v.decision}, {"diagnosis_id", v.diagnosis_id}, {"diagnosis_name", name},
                     {"notes", v.notes},       {"reviewer", v.reviewer},         {"created", v.created}};
  } else {
    out["review"] = nullptr;
  }
  out["messages"] = ordered_json::array();
  for (const auto& m : r.messages)
    out["messages"].push_back({{"role", m.role}, {"content", m.content}, {"created", m.created}});
  return out;
}

// The case as a FHIR R4 DiagnosticReport: "preliminary" until a clinician
// reviews it, then "final" with the clinician's diagnosis as the coded
// conclusion. No patient identity is included (the record has none); the
// full report travels as the presentedForm (JSON).
ordered_json fhir_report(const CaseRecord& r, const clinic::Catalogue& cat) {
  const ordered_json v = case_view(r, cat);
  const clinic::Language lang = r.summary.language == "ja" ? clinic::Language::Ja : clinic::Language::En;
  auto coded = [&](const std::string& id) {
    ordered_json cc;
    cc["coding"] = ordered_json::array();
    std::string name = id;
    if (auto k = cat.index_of(id)) {
      name = cat[*k].name.get(lang);
      for (const auto& code : cat[*k].icd10)
        cc["coding"].push_back({{"system", "http://hl7.org/fhir/sid/icd-10"}, {"code", code}, {"display", name}});
    }
    cc["text"] = name;
    return cc;
  };
  ordered_json f;
  f["resourceType"] = "DiagnosticReport";
  f["id"] = r.summary.id;
  f["status"] = r.review ? "final" : "preliminary";
  f["category"] = ordered_json::array(
      {{{"coding", ordered_json::array({{{"system", "http://terminology.hl7.org/CodeSystem/v2-0074"},
                                          {"code", "OTH"},
                                          {"display", "Other"}}})},
        {"text", "Dermatology"}}});
  f["code"] = {{"text", "Skin lesion photo assessment (decision support draft)"}};
  f["effectiveDateTime"] = r.summary.created;
  f["issued"] = r.review ? r.review->created : r.summary.created;
  if (r.review) f["resultsInterpreter"] = ordered_json::array({{{"display", r.review->reviewer}}});
  std::string conclusion = v.value("status_text", "");
  if (v.contains("differential") && v["differential"].is_object()) {
    conclusion += lang == clinic::Language::Ja ? "。鑑別: " : ". Differential: ";
    int n = 0;
    for (const auto& c : v["differential"]["candidates"]) {
      if (n++ == 3) break;
      char p[32];
      std::snprintf(p, sizeof p, " %.0f%%", 100 * c.value("probability", 0.0));
      conclusion += (n > 1 ? ", " : "") + c.value("name", std::string()) + p;
    }
  }
  if (r.review && !r.review->notes.empty()) conclusion += ". " + r.review->notes;
  f["conclusion"] = conclusion;
  if (r.review) f["conclusionCode"] = ordered_json::array({coded(r.review->diagnosis_id)});
  else if (r.summary.assessed) f["conclusionCode"] = ordered_json::array({coded(r.summary.top_id)});
  const std::string json_text = v.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  f["presentedForm"] = ordered_json::array(
      {{{"contentType", "application/json"},
        {"language", r.summary.language},
        {"title", "skingpt report"},
        {"data", base64_encode(reinterpret_cast<const uint8_t*>(json_text.data()), json_text.size())}}});
  return f;
}

ordered_json summary_json(const CaseSummary& c) {
  ordered_json j;
  j["case_id"] = c.id;
  j["created"] = c.created;
  j["status"] = c.status;
  j["language"] = c.language;
  j["age"] = c.age ? ordered_json(*c.age) : ordered_json(nullptr);
  j["sex"] = c.sex;
  j["site"] = c.site;
  j["assessed"] = c.assessed;
  if (c.assessed)
    j["top"] = {{"id", c.top_id}, {"name", c.top_name}, {"probability", c.top_probability}};
  else
    j["top"] = nullptr;
  return j;
}

// The finished turns of a case's conversation: the consultation's questions
// and answers, then the follow-ups.
Turns case_turns(const CaseRecord& r) {
  Turns t;
  const json j = json::parse(r.report_json, nullptr, false);
  if (j.is_object() && j.contains("model_answers") && j["model_answers"].is_array())
    for (const auto& a : j["model_answers"])
      if (a.value("answer", "") != "") t.emplace_back(a.value("question", ""), a.value("answer", ""));
  std::string q;
  for (const auto& m : r.messages) {
    if (m.role == "user") q = m.content;
    else t.emplace_back(std::exchange(q, ""), m.content);
  }
  return t;
}

// A bounded pool for connections: `threads` workers, and the accept loop
// waits (the kernel's backlog then holds further clients) when `max_waiting`
// connections are already queued. Memory stays bounded under any load.
class BoundedTaskQueue : public httplib::TaskQueue {
 public:
  BoundedTaskQueue(size_t threads, size_t max_waiting) : max_waiting_(max_waiting) {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { loop(); });
  }
  void enqueue(std::function<void()> fn) override {
    std::unique_lock lk(mu_);
    space_.wait(lk, [&] { return shutdown_ || jobs_.size() < max_waiting_; });
    if (shutdown_) return;
    jobs_.push_back(std::move(fn));
    lk.unlock();
    ready_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard lk(mu_);
      shutdown_ = true;
    }
    ready_.notify_all();
    space_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lk(mu_);
        ready_.wait(lk, [&] { return shutdown_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // shutting down and drained
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      space_.notify_one();
      fn();
    }
  }
  const size_t max_waiting_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

// httplib 0.11 listens with a backlog of 5: under a burst of new
// connections the kernel then drops handshakes and some clients see a reset.
// This exposes the listening socket so bind() can raise the backlog.
class Http : public httplib::Server {
 public:
  int listening_socket() const { return svr_sock_; }
};

constexpr size_t kMaxMessages = 64, kMaxParts = 16, kMaxText = 32 * 1024, kMaxQuestion = 4000;


// The host name of a Host header ("127.0.0.1:8080" → "127.0.0.1",
// "[::1]:8080" → "::1").
std::string host_name(const std::string& host_header) {
  if (!host_header.empty() && host_header[0] == '[') {
    const auto e = host_header.find(']');
    return e == std::string::npos ? host_header : host_header.substr(1, e - 1);
  }
  return host_header.substr(0, host_header.find(':'));
}

bool host_allowed(const std::string& host_header) {
  return !host_header.empty() && is_loopback_host(host_name(host_header));
}

// "http://127.0.0.1:8080" against Host "127.0.0.1:8080".
bool same_origin(const std::string& origin, const std::string& host_header) {
  const auto p = origin.find("://");
  return p != std::string::npos && !host_header.empty() && origin.substr(p + 3) == host_header;
}

}  // namespace

// ------------------------------------------------------------------ server

// A photo with its patient details, from a multipart form or JSON.
struct Upload {
  Image image;
  clinic::Language lang = clinic::Language::En;
  std::string lang_s = "en";
  clinic::PatientInfo patient;
};

struct HttpServer::Impl {
  ServerOptions opt;
  std::unique_ptr<Store> store;
  std::unique_ptr<Engine> engine;
  Http http;
  std::atomic<int64_t> requests{0}, s2xx{0}, s4xx{0}, s5xx{0}, rejected_busy{0}, unauthorized{0};
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::atomic<bool> serving{false}, stopping{false};

  std::string actor(const httplib::Request& req) const {
    return req.remote_addr + (opt.api_key.empty() ? "" : " (api key)");
  }
  // Submits a job or answers 429.
  void submit(std::function<void(ModelWorker&)> job) {
    if (!engine->try_submit(std::move(job))) {
      ++rejected_busy;
      throw HttpError{429, "the model is busy: " + std::to_string(engine->queue_capacity()) +
                               " requests are already waiting; retry shortly", "rate_limit_error"};
    }
  }

  void routes();
  void chat_completions(const httplib::Request& req, httplib::Response& res);
  void create_consultation(const httplib::Request& req, httplib::Response& res);
  void quality(const httplib::Request& req, httplib::Response& res);
  Upload parse_upload(const httplib::Request& req);
  void follow_up(const httplib::Request& req, httplib::Response& res);
  void review(const httplib::Request& req, httplib::Response& res);
};

HttpServer::HttpServer(ServerOptions o) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.opt = std::move(o);
  check_bind_policy(s.opt.host, !s.opt.api_key.empty());
  if (s.opt.max_upload_bytes < 1024) throw Error("the upload limit must be at least 1 KiB");
  if (s.opt.http_threads < 1 || s.opt.http_threads > 256) throw Error("HTTP threads must be in 1..256");
  std::error_code ec;
  const bool created = fs::create_directories(s.opt.data_dir, ec);
  if (ec) throw Error(s.opt.data_dir + ": cannot create the data folder: " + ec.message());
  if (created) ::chmod(s.opt.data_dir.c_str(), 0700);  // patient records: owner only
  const mode_t old = ::umask(077);
  try {
    s.store = std::make_unique<Store>((fs::path(s.opt.data_dir) / "cases.db").string());
  } catch (...) {
    ::umask(old);
    throw;
  }
  ::umask(old);
  s.engine = std::make_unique<Engine>(s.opt.engine);
  s.routes();
}

HttpServer::~HttpServer() {
  stop();
  impl_->engine.reset();  // stops the worker before the store goes
}

Engine& HttpServer::engine() { return *impl_->engine; }
Store& HttpServer::store() { return *impl_->store; }
const ServerOptions& HttpServer::options() const { return impl_->opt; }

int HttpServer::bind() {
  const int port = impl_->opt.port == 0 ? impl_->http.bind_to_any_port(impl_->opt.host)
                                        : (impl_->http.bind_to_port(impl_->opt.host, impl_->opt.port)
                                               ? impl_->opt.port
                                               : -1);
  if (port <= 0)
    throw Error("cannot listen on " + impl_->opt.host + ":" + std::to_string(impl_->opt.port) +
                " (address in use, or not an address of this machine)");
  ::listen(impl_->http.listening_socket(), 256);  // a larger backlog (listen again only resizes it)
  return port;
}

// stop() may come before serve() has started listening (httplib's stop()
// then does nothing): the flags make either order end serve().
void HttpServer::serve() {
  impl_->serving = true;
  if (!impl_->stopping) impl_->http.listen_after_bind();
  impl_->serving = false;
}
void HttpServer::stop() {
  impl_->stopping = true;
  while (impl_->serving && !impl_->http.is_running()) std::this_thread::yield();
  impl_->http.stop();
}

void HttpServer::Impl::routes() {
  const size_t threads = static_cast<size_t>(opt.http_threads);
  http.new_task_queue = [threads] { return new BoundedTaskQueue(threads, threads * 4); };
  http.set_payload_max_length(opt.max_upload_bytes);
  http.set_read_timeout(30, 0);
  http.set_write_timeout(30, 0);
  http.set_keep_alive_timeout(5);
  http.set_keep_alive_max_count(100);
  http.set_default_headers({
      {"Content-Security-Policy",
       "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'"},
      {"X-Content-Type-Options", "nosniff"},
      {"Referrer-Policy", "no-referrer"},
      {"X-Frame-Options", "DENY"},
      {"Cross-Origin-Opener-Policy", "same-origin"},
      {"Cross-Origin-Resource-Policy", "same-origin"},
      {"Permissions-Policy", "camera=(self), microphone=(), geolocation=()"},
      {"Cache-Control", "no-store"},
  });

  // Every error without a body of its own (404, 413 from the body limit, …)
  // gets the JSON error shape.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string m = res.status == 404   ? "no such endpoint or record: " + req.method + " " + req.path
                    : res.status == 413 ? "the request body is larger than the upload limit"
                    : res.status == 405 ? "method not allowed"
                                        : "the request could not be processed";
    send_error(res, res.status, m);
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string m = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::bad_alloc&) {
      m = "out of memory";
    } catch (...) {
    }
    send_error(res, 500, m, "server_error");
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    ++requests;
    if (res.status >= 500) ++s5xx;
    else if (res.status >= 400) ++s4xx;
    else ++s2xx;
    if (opt.access_log) std::fprintf(stderr, "%s %s %d\n", req.method.c_str(), req.path.c_str(), res.status);
  });
  // Other websites: a loopback server without a key accepts only loopback
  // Host names (a page elsewhere that rebinds its DNS name to 127.0.0.1
  // would otherwise read the records), and no cross-origin request changes
  // anything. Then the API key, for everything but the health check and the
  // web app's files.
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (opt.api_key.empty() && !host_allowed(req.get_header_value("Host"))) {
      send_error(res, 403, "this server answers only to loopback names (127.0.0.1, localhost, [::1])",
                 "permission_error");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method != "GET" && req.method != "HEAD" && req.has_header("Origin") &&
        !same_origin(req.get_header_value("Origin"), req.get_header_value("Host"))) {
      send_error(res, 403, "cross-origin requests are refused", "permission_error");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (opt.api_key.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const std::string& p = req.path;
    const bool protected_path = p.rfind("/v1/", 0) == 0 || p.rfind("/api/", 0) == 0 || p == "/metrics";
    if (!protected_path) return httplib::Server::HandlerResponse::Unhandled;
    const std::string h = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (h.size() > prefix.size() && h.compare(0, prefix.size(), prefix) == 0 &&
        constant_time_equal(std::string_view(h).substr(prefix.size()), opt.api_key))
      return httplib::Server::HandlerResponse::Unhandled;
    ++unauthorized;
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, 401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "authentication_error");
    return httplib::Server::HandlerResponse::Handled;
  });

  // Wraps a handler: HttpError and sg::Error become JSON errors.
  auto wrap = [](auto fn) {
    return [fn](const httplib::Request& req, httplib::Response& res) {
      try {
        fn(req, res);
      } catch (const HttpError& e) {
        if (e.status == 429) res.set_header("Retry-After", "2");
        send_error(res, e.status, e.message, e.type);
      } catch (const json::exception& e) {
        send_error(res, 400, std::string("malformed request: ") + e.what());
      } catch (const Error& e) {
        send_error(res, 500, e.what(), "server_error");
      }
    };
  };

  // The web app: only the embedded files.
  auto asset = [](const std::string& path) {
    return [path](const httplib::Request&, httplib::Response& res) {
      const Asset* a = find_asset(path);
      if (!a) {
        send_error(res, 404, "no such file");
        return;
      }
      res.set_header("Cache-Control", "no-cache");
      res.set_content(reinterpret_cast<const char*>(a->data), a->size, a->content_type);
    };
  };
  http.Get("/", asset("/index.html"));
  for (const Asset& a : all_assets()) http.Get(a.path, asset(a.path));

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, ordered_json{{"status", "ok"}, {"model", engine->model_name()}});
  });

  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const EngineStats st = engine->stats();
    ordered_json j;
    j["uptime_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    j["requests"] = {{"total", requests.load()},
                     {"2xx", s2xx.load()},
                     {"4xx", s4xx.load()},
                     {"5xx", s5xx.load()},
                     {"rejected_busy_429", rejected_busy.load()},
                     {"unauthorized_401", unauthorized.load()}};
    j["queue"] = {{"waiting", engine->waiting()}, {"capacity", engine->queue_capacity()}, {"busy", engine->busy()}};
    j["model"] = {{"name", engine->model_name()},
                  {"consultations", st.consultations},
                  {"chat_completions", st.chats},
                  {"follow_ups", st.follow_ups},
                  {"follow_up_cache_hits", st.cache_hits},
                  {"image_encodes", st.image_encodes},
                  {"encode_ms_total", st.encode_ms},
                  {"encode_ms_mean", st.image_encodes ? st.encode_ms / st.image_encodes : 0.0},
                  {"consult_ms_total", st.consult_ms},
                  {"generated_tokens", st.generated_tokens},
                  {"generate_ms_total", st.generate_ms},
                  {"tokens_per_second", st.generate_ms > 0 ? st.generated_tokens * 1000.0 / st.generate_ms : 0.0}};
    j["cases"] = store->count_cases();
    send_json(res, 200, j);
  });

  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    ordered_json m = {{"id", engine->model_name()}, {"object", "model"}, {"created", 0}, {"owned_by", "local"}};
    send_json(res, 200, ordered_json{{"object", "list"}, {"data", ordered_json::array({m})}});
  });
  http.Post("/v1/chat/completions", wrap([this](const auto& q, auto& r) { chat_completions(q, r); }));

  http.Get("/api/conditions", [this](const httplib::Request&, httplib::Response& res) {
    ordered_json a = ordered_json::array();
    const auto& cat = engine->catalogue();
    for (size_t i = 0; i < cat.size(); ++i)
      a.push_back({{"id", cat[i].id},
                   {"name", {{"en", cat[i].name.en}, {"ja", cat[i].name.ja}}},
                   {"malignancy", clinic::malignancy_name(cat[i].malignancy)}});
    send_json(res, 200, ordered_json{{"conditions", a}});
  });
  http.Post("/api/quality", wrap([this](const auto& q, auto& r) { quality(q, r); }));
  http.Post("/api/consultations", wrap([this](const auto& q, auto& r) { create_consultation(q, r); }));
  http.Get("/api/consultations", wrap([this](const httplib::Request& req, httplib::Response& res) {
    const std::string q = req.has_param("q") ? req.get_param_value("q") : "";
    if (q.size() > 200 || !valid_utf8(q)) fail(400, "'q' must be valid UTF-8 of at most 200 bytes");
    const int limit = int_param(req, "limit", 50, 1, 200);
    const int offset = int_param(req, "offset", 0, 0, 1000000);
    ordered_json a = ordered_json::array();
    for (const auto& c : store->list_cases(q, limit, offset)) a.push_back(summary_json(c));
    send_json(res, 200, ordered_json{{"cases", a}, {"limit", limit}, {"offset", offset}});
  }));
  const std::string id_re = "/api/consultations/([0-9a-f]{32})";
  // Reading a record is audited too (who looked at which case, when).
  http.Get(id_re, wrap([this](const httplib::Request& req, httplib::Response& res) {
    const auto r = store->get_case(req.matches[1]);
    if (!r) fail(404, "no such case");
    store->audit(actor(req), "view", r->summary.id, "");
    send_json(res, 200, case_view(*r, engine->catalogue()));
  }));
  http.Get(id_re + "/image", wrap([this](const httplib::Request& req, httplib::Response& res) {
    const auto img = store->image(req.matches[1]);
    if (!img) fail(404, "no such case");
    res.set_content(reinterpret_cast<const char*>(img->data()), img->size(), "image/jpeg");
  }));
  http.Get(id_re + "/fhir", wrap([this](const httplib::Request& req, httplib::Response& res) {
    const auto r = store->get_case(req.matches[1]);
    if (!r) fail(404, "no such case");
    store->audit(actor(req), "export_fhir", r->summary.id, "");
    res.status = 200;
    res.set_content(fhir_report(*r, engine->catalogue()).dump(-1, ' ', false, ordered_json::error_handler_t::replace),
                    "application/fhir+json; charset=utf-8");
  }));
  // The printable report (server-rendered, photo inlined; the web app prints it from an iframe).
  http.Get(id_re + "/print", wrap([this](const httplib::Request& req, httplib::Response& res) {
    const auto r = store->get_case(req.matches[1]);
    if (!r) fail(404, "no such case");
    const auto img = store->image(r->summary.id);
    store->audit(actor(req), "print", r->summary.id, "");
    res.status = 200;
    res.set_content(print_page(case_view(*r, engine->catalogue()), img ? *img : std::vector<uint8_t>{}),
                    "text/html; charset=utf-8");
  }));
  http.Post(id_re + "/messages", wrap([this](const auto& q, auto& r) { follow_up(q, r); }));
  http.Post(id_re + "/review", wrap([this](const auto& q, auto& r) { review(q, r); }));
  http.Delete(id_re, wrap([this](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (!store->delete_case(id, actor(req))) fail(404, "no such case");
    engine->forget_case(id);
    send_json(res, 200, ordered_json{{"deleted", id}});
  }));
}

// ------------------------------------------------------------------ /v1/chat/completions

void HttpServer::Impl::chat_completions(const httplib::Request& req, httplib::Response& res) {
  const json body = parse_body(req);
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty()) fail(400, "'messages' must be a non-empty array");
  if (it->size() > kMaxMessages) fail(400, "at most " + std::to_string(kMaxMessages) + " messages");
  if (body.contains("n") && !(body["n"].is_number_integer() && body["n"].get<int64_t>() == 1))
    fail(400, "only n = 1 is supported");

  // The conversation: finished (question, answer) turns and the open question.
  Turns turns;
  std::string pending;
  bool have_pending = false;
  std::optional<Image> image;
  size_t text_bytes = 0;
  for (const auto& m : *it) {
    if (!m.is_object()) fail(400, "each message must be an object");
    const std::string role = str_field(m, "role", 32, true);
    std::string text;
    const auto c = m.find("content");
    if (c == m.end() || c->is_null()) {
      if (role != "assistant") fail(400, "a " + role + " message needs 'content'");
    } else if (c->is_string()) {
      text = c->get<std::string>();
    } else if (c->is_array()) {
      if (c->size() > kMaxParts) fail(400, "at most " + std::to_string(kMaxParts) + " content parts per message");
      for (const auto& part : *c) {
        if (!part.is_object()) fail(400, "each content part must be an object");
        const std::string type = str_field(part, "type", 32, true);
        if (type == "text") {
          const std::string t = str_field(part, "text", kMaxText);
          text += text.empty() ? t : "\n" + t;
        } else if (type == "image_url") {
          if (role != "user") fail(400, "images are accepted only in user messages");
          std::string url;
          const auto iu = part.find("image_url");
          if (iu != part.end() && iu->is_object()) url = str_field(*iu, "url", opt.max_upload_bytes * 2, true);
          else if (iu != part.end() && iu->is_string()) url = iu->get<std::string>();
          else fail(400, "an image_url part needs 'image_url': {'url': 'data:...'}");
          if (url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0)
            fail(400, "remote image URLs are refused: the server never connects out. Send the image as a data: URI");
          if (image) fail(400, "one image per conversation: the model sees a single photo");
          std::string err;
          bool too_large = false;
          auto d = parse_data_uri(url, opt.max_upload_bytes, &err, &too_large);
          if (!d) fail(too_large ? 413 : 400, err);
          image = decode_upload(d->bytes);
        } else {
          fail(400, "unsupported content part type '" + type + "' (use text or image_url)");
        }
      }
    } else {
      fail(400, "'content' must be a string or an array of parts");
    }
    if (!valid_utf8(text)) fail(400, "message text must be valid UTF-8");
    text_bytes += text.size();
    if (text_bytes > kMaxText) fail(400, "the messages hold more than " + std::to_string(kMaxText) + " bytes of text");
    if (role == "system" || role == "developer") continue;  // SkinGPT-4's own system prompt is fixed
    if (role == "user") {
      pending = have_pending ? pending + "\n" + text : text;
      have_pending = true;
    } else if (role == "assistant") {
      if (!have_pending) fail(400, "an assistant message must follow a user message");
      turns.emplace_back(pending, text);
      pending.clear();
      have_pending = false;
    } else {
      fail(400, "unsupported role '" + role + "' (use system, user or assistant)");
    }
  }
  if (!have_pending) fail(400, "the last message must be from the user");

  int64_t max_tokens = engine->options().max_new_tokens;
  for (const char* k : {"max_tokens", "max_completion_tokens"})
    if (body.contains(k) && !body[k].is_null()) {
      if (!body[k].is_number_integer() || body[k].get<int64_t>() < 1)
        fail(400, std::string("'") + k + "' must be a positive integer");
      max_tokens = std::min(max_tokens, body[k].get<int64_t>());
    }
  float temperature = 1.0f, top_p = 0.9f;
  if (body.contains("temperature") && !body["temperature"].is_null()) {
    if (!body["temperature"].is_number() || body["temperature"].get<double>() < 0 || body["temperature"].get<double>() > 2)
      fail(400, "'temperature' must be a number in 0..2");
    temperature = body["temperature"].get<float>();
  }
  if (body.contains("top_p") && !body["top_p"].is_null()) {
    if (!body["top_p"].is_number() || body["top_p"].get<double>() <= 0 || body["top_p"].get<double>() > 1)
      fail(400, "'top_p' must be a number in (0, 1]");
    top_p = body["top_p"].get<float>();
  }
  uint64_t seed = engine->options().seed;
  if (body.contains("seed") && !body["seed"].is_null()) {
    if (!body["seed"].is_number_integer()) fail(400, "'seed' must be an integer");
    seed = static_cast<uint64_t>(body["seed"].get<int64_t>());
  }
  bool stream = false;
  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean()) fail(400, "'stream' must be true or false");
    stream = body["stream"].get<bool>();
  }
  bool include_usage = false;
  if (body.contains("stream_options") && body["stream_options"].is_object())
    include_usage = body["stream_options"].value("include_usage", false);

  const std::string id = "chatcmpl-" + random_id();
  const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  const std::string model = engine->model_name();
  auto usage_json = [](const ModelWorker::Answer& a) {
    return ordered_json{{"prompt_tokens", a.prompt_tokens},
                        {"completion_tokens", a.completion_tokens},
                        {"total_tokens", a.prompt_tokens + a.completion_tokens}};
  };
  auto shared_image = image ? std::make_shared<Image>(std::move(*image)) : nullptr;

  if (!stream) {
    auto promise = std::make_shared<std::promise<ModelWorker::Answer>>();
    auto fut = promise->get_future();
    submit([=](ModelWorker& w) {
      try {
        promise->set_value(w.chat(shared_image.get(), turns, pending, max_tokens, temperature, top_p, seed, nullptr));
      } catch (...) {
        promise->set_exception(std::current_exception());
      }
    });
    ModelWorker::Answer a;
    try {
      a = wait_result(fut);
    } catch (const Error& e) {
      fail(400, e.what());  // e.g. the conversation does not fit the context
    }
    ordered_json j;
    j["id"] = id;
    j["object"] = "chat.completion";
    j["created"] = created;
    j["model"] = model;
    j["choices"] = ordered_json::array({ordered_json{
        {"index", 0},
        {"message", {{"role", "assistant"}, {"content", a.text}}},
        {"finish_reason", a.finish_reason}}});
    j["usage"] = usage_json(a);
    send_json(res, 200, j);
    return;
  }

  auto ch = std::make_shared<Channel>();
  auto chunk = [=](const ordered_json& delta, const ordered_json& finish) {
    ordered_json j;
    j["id"] = id;
    j["object"] = "chat.completion.chunk";
    j["created"] = created;
    j["model"] = model;
    j["choices"] = ordered_json::array({ordered_json{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}});
    return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  };
  auto guard = std::make_shared<ChannelGuard>();
  guard->ch = ch;
  submit([=](ModelWorker& w) {
    guard->finished = true;
    ch->push(chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
    try {
      const auto a = w.chat(shared_image.get(), turns, pending, max_tokens, temperature, top_p, seed,
                            [&](const std::string& piece) {
                              if (!piece.empty()) ch->push(chunk({{"content", piece}}, nullptr));
                              return !ch->cancelled.load();
                            });
      ch->push(chunk(ordered_json::object(), a.finish_reason));
      if (include_usage) {
        ordered_json u;
        u["id"] = id;
        u["object"] = "chat.completion.chunk";
        u["created"] = created;
        u["model"] = model;
        u["choices"] = ordered_json::array();
        u["usage"] = usage_json(a);
        ch->push(u.dump());
      }
    } catch (const std::exception& e) {
      ch->push(error_body(e.what(), "invalid_request_error", 400));
    }
    ch->finish();
  });
  stream_channel(res, ch);
}

// ------------------------------------------------------------------ consultations

Upload HttpServer::Impl::parse_upload(const httplib::Request& req) {
  std::vector<uint8_t> bytes;
  std::string lang_s = "en", sex, site, history, age_s;
  std::optional<int> age;
  if (req.is_multipart_form_data()) {
    if (!req.has_file("image")) fail(400, "the form needs an 'image' file field");
    const auto f = req.get_file_value("image");
    bytes.assign(f.content.begin(), f.content.end());
    auto field = [&](const char* name, size_t max) -> std::string {
      if (!req.has_file(name)) return "";
      std::string v = req.get_file_value(name).content;
      if (v.size() > max) fail(400, std::string("'") + name + "' is longer than " + std::to_string(max) + " bytes");
      if (!valid_utf8(v)) fail(400, std::string("'") + name + "' must be valid UTF-8");
      return v;
    };
    if (req.has_file("language")) lang_s = field("language", 8);
    sex = field("sex", 32);
    site = field("site", 200);
    history = field("history", 2000);
    age_s = field("age", 8);
    if (!age_s.empty()) {
      const auto v = parse_int(age_s);
      if (!v || *v < 0 || *v > 150) fail(400, "'age' must be an integer in 0..150");
      age = static_cast<int>(*v);
    }
  } else {
    const json j = parse_body(req);
    std::string image = str_field(j, "image", opt.max_upload_bytes * 2, true);
    if (image.rfind("http://", 0) == 0 || image.rfind("https://", 0) == 0)
      fail(400, "remote image URLs are refused: the server never connects out. Send the image as a data: URI");
    if (image.rfind("data:", 0) == 0) {
      std::string err;
      bool too_large = false;
      auto d = parse_data_uri(image, opt.max_upload_bytes, &err, &too_large);
      if (!d) fail(too_large ? 413 : 400, err);
      bytes = std::move(d->bytes);
    } else {
      auto d = base64_decode(image, opt.max_upload_bytes);
      if (!d) fail(400, "'image' must be a data: URI or base64 of a JPEG, PNG or WebP file");
      bytes = std::move(*d);
    }
    if (j.contains("language") && !j["language"].is_null()) lang_s = str_field(j, "language", 8);
    sex = str_field(j, "sex", 32);
    site = str_field(j, "site", 200);
    history = str_field(j, "history", 2000);
    if (j.contains("age") && !j["age"].is_null()) {
      if (!j["age"].is_number_integer() || j["age"].get<int64_t>() < 0 || j["age"].get<int64_t>() > 150)
        fail(400, "'age' must be an integer in 0..150");
      age = j["age"].get<int>();
    }
  }
  if (lang_s != "en" && lang_s != "ja") fail(400, "'language' must be en or ja");
  const clinic::Language lang = clinic::parse_language(lang_s);
  Upload u;
  u.image = decode_upload(bytes);
  u.lang = lang;
  u.lang_s = lang_s;
  u.patient.age = age;
  u.patient.sex = sex;
  u.patient.site = site;
  u.patient.history = history;
  return u;
}

// Photo quality and the lesion measurements only, without the model: the
// web app's immediate feedback while the consultation waits for the model.
void HttpServer::Impl::quality(const httplib::Request& req, httplib::Response& res) {
  Upload u = parse_upload(req);
  const clinic::Report r = clinic::assess_only(u.image, u.patient, u.lang, engine->catalogue());
  const ordered_json j = ordered_json::parse(clinic::render_json(r));
  send_json(res, 200, ordered_json{{"quality", j["quality"]}, {"measured", j["findings"]["measured"]},
                                   {"image", {{"width", u.image.width}, {"height", u.image.height}}}});
}

void HttpServer::Impl::create_consultation(const httplib::Request& req, httplib::Response& res) {
  Upload u = parse_upload(req);
  const std::string lang_s = u.lang_s;
  const clinic::Language lang = u.lang;
  const clinic::PatientInfo patient = u.patient;
  const std::optional<int> age = patient.age;
  const std::string sex = patient.sex, site = patient.site, history = patient.history;
  // The stored copy: re-encoded, so no EXIF (GPS, device serials), ICC or comments survive.
  std::vector<uint8_t> jpeg = encode_jpeg(u.image, 92);
  auto shared_img = std::make_shared<Image>(std::move(u.image));
  auto promise = std::make_shared<std::promise<ModelWorker::Consultation>>();
  auto fut = promise->get_future();
  submit([=](ModelWorker& w) {
    try {
      promise->set_value(w.consult(*shared_img, patient, lang));
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  });
  ModelWorker::Consultation c;
  try {
    c = wait_result(fut);
  } catch (const Error& e) {
    fail(500, std::string("the consultation failed: ") + e.what());
  }
  NewCase n;
  n.language = lang_s;
  n.age = age;
  n.sex = sex;
  n.site = site;
  n.history = history;
  n.assessed = c.assessed;
  n.top_id = c.top_id;
  n.top_name = c.top_name;
  n.top_probability = c.top_probability;
  n.report_json = c.report_json;
  n.image_jpeg = std::move(jpeg);
  n.image_width = shared_img->width;
  n.image_height = shared_img->height;
  const std::string id = store->create_case(n, actor(req));  // committed before we answer
  engine->remember_case(id, std::move(c.image_embeddings));
  const auto r = store->get_case(id);
  if (!r) fail(500, "the case was not stored");
  res.set_header("Location", "/api/consultations/" + id);
  send_json(res, 201, case_view(*r, engine->catalogue()));
}

void HttpServer::Impl::follow_up(const httplib::Request& req, httplib::Response& res) {
  const std::string id = req.matches[1];
  const json j = parse_body(req);
  const std::string question = str_field(j, "content", kMaxQuestion, true);
  if (!valid_utf8(question)) fail(400, "'content' must be valid UTF-8");
  bool stream = false;
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) fail(400, "'stream' must be true or false");
    stream = j["stream"].get<bool>();
  }
  const auto rec = store->get_case(id);
  if (!rec) fail(404, "no such case");
  if (rec->messages.size() / 2 >= opt.max_follow_ups)
    fail(409, "this case already has " + std::to_string(opt.max_follow_ups) + " follow-up questions");
  const std::string who = actor(req);
  Store* st = store.get();
  // Runs on the worker: reads the conversation as it is now (an earlier
  // follow-up may have just finished), answers, stores both in one transaction.
  auto run = [=](ModelWorker& w, const std::function<bool(const std::string&)>& on_text) {
    const auto now = st->get_case(id);
    if (!now) throw HttpError{404, "the case was deleted"};
    const auto img = st->image(id);
    if (!img) throw HttpError{404, "the case was deleted"};
    ModelWorker::Answer a;
    try {
      a = w.follow_up(id, *img, case_turns(*now), question, on_text);
    } catch (const Error& e) {
      throw HttpError{409, std::string("cannot answer in this case's conversation: ") + e.what()};
    }
    if (!st->add_exchange(id, question, a.text, who)) throw HttpError{404, "the case was deleted"};
    return a;
  };
  if (!stream) {
    auto promise = std::make_shared<std::promise<ModelWorker::Answer>>();
    auto fut = promise->get_future();
    submit([=](ModelWorker& w) {
      try {
        promise->set_value(run(w, nullptr));
      } catch (...) {
        promise->set_exception(std::current_exception());
      }
    });
    const auto a = wait_result(fut);
    send_json(res, 200,
              ordered_json{{"case_id", id},
                           {"question", question},
                           {"answer", a.text},
                           {"turns_left_out", a.turns_dropped},
                           {"usage", {{"prompt_tokens", a.prompt_tokens}, {"completion_tokens", a.completion_tokens}}}});
    return;
  }
  auto ch = std::make_shared<Channel>();
  auto guard = std::make_shared<ChannelGuard>();
  guard->ch = ch;
  submit([=](ModelWorker& w) {
    guard->finished = true;
    try {
      const auto a = run(w, [&](const std::string& piece) {
        if (!piece.empty()) ch->push(ordered_json{{"delta", piece}}.dump(-1, ' ', false, ordered_json::error_handler_t::replace));
        return !ch->cancelled.load();
      });
      ch->push(ordered_json{{"done", true}, {"answer", a.text}}.dump(-1, ' ', false, ordered_json::error_handler_t::replace));
    } catch (const HttpError& e) {
      ch->push(error_body(e.message, e.type, e.status));
    } catch (const std::exception& e) {
      ch->push(error_body(e.what(), "server_error", 500));
    }
    ch->finish();
  });
  stream_channel(res, ch);
}

void HttpServer::Impl::review(const httplib::Request& req, httplib::Response& res) {
  const std::string id = req.matches[1];
  const json j = parse_body(req);
  Review r;
  r.decision = str_field(j, "decision", 16, true);
  r.reviewer = str_field(j, "reviewer", 100, true);
  r.notes = str_field(j, "notes", 4000);
  r.diagnosis_id = str_field(j, "diagnosis_id", 64);
  const auto rec = store->get_case(id);
  if (!rec) fail(404, "no such case");
  const auto& cat = engine->catalogue();
  if (r.decision == "confirm") {
    if (!rec->summary.assessed) fail(400, "nothing to confirm: the photo was not assessed; use decision 'correct'");
    if (!r.diagnosis_id.empty() && r.diagnosis_id != rec->summary.top_id)
      fail(400, "'confirm' confirms the first candidate (" + rec->summary.top_id +
                    "); use decision 'correct' for another diagnosis");
    r.diagnosis_id = rec->summary.top_id;
  } else if (r.decision == "correct") {
    if (r.diagnosis_id.empty()) fail(400, "'correct' needs 'diagnosis_id'");
    if (!cat.index_of(r.diagnosis_id)) fail(400, "unknown diagnosis_id '" + r.diagnosis_id + "' (see GET /api/conditions)");
  } else {
    fail(400, "'decision' must be confirm or correct");
  }
  if (!store->add_review(id, r, actor(req))) fail(404, "no such case");
  const auto now = store->get_case(id);
  if (!now) fail(404, "no such case");
  send_json(res, 201, case_view(*now, cat));
}

}  // namespace sg::server
