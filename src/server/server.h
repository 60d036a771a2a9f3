// `skingpt serve` (issue 7): the HTTP layer. OpenAI-compatible chat
// completions, consultations with case records, the embedded web app,
// health and metrics. Knows HTTP, JSON and the store; the clinic layer below
// knows nothing of HTTP.
//
// Security model (docs/server.md): loopback by default; any other bind
// address needs an API key, and with a key every /v1, /api and /metrics
// request must carry "Authorization: Bearer KEY" (compared in constant
// time). Bodies are bounded (413), images are bounded in pixels, the model
// is reached only through a bounded queue (429 + Retry-After when full),
// connections are served by a bounded pool, the server never connects out,
// static files come only from assets compiled into the binary, and every
// response carries security headers.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "server/engine.h"
#include "server/store.h"

namespace sg::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                        // 0: any free port (see bind())
  std::string data_dir = "skingpt-data";  // holds cases.db
  std::string api_key;                    // empty: no key (loopback only)
  size_t max_upload_bytes = 20u << 20;    // largest request body
  int http_threads = 8;                   // connections served at once
  size_t max_follow_ups = 50;             // follow-up questions per case
  bool access_log = false;                // method, path, status, ms on stderr (no bodies)
  EngineOptions engine;
};

// Throws sg::Error when binding `host` is not allowed without a key.
void check_bind_policy(const std::string& host, bool has_key);
// Reads a key file: the first line, trimmed; at least 16 characters.
std::string read_api_key_file(const std::string& path);

class HttpServer {
 public:
  // Checks the bind policy, opens the store, loads the model. Throws sg::Error.
  explicit HttpServer(ServerOptions o);
  ~HttpServer();
  int bind();     // binds the socket; returns the port
  void serve();   // serves until stop(); call after bind()
  void stop();    // from any thread
  Engine& engine();
  Store& store();
  const ServerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sg::server
