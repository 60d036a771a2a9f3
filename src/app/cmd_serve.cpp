// `skingpt serve`: the local HTTP server for a clinic (issue 7, docs/server.md).
// An OpenAI-compatible API, consultations with case records in SQLite, and
// the web app, all from one binary; the photos and records never leave the
// machine and the server never connects out.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <thread>

#include "app/args.h"
#include "app/commands.h"
#include "clinic/consultation.h"
#include "core/error.h"
#include "server/server.h"

namespace sg::app {

namespace {
std::string exe_path() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}
}  // namespace

int cmd_serve(int argc, char** argv) {
  server::ServerOptions o;
  std::string model_dir, key_file;
  int64_t port = 8080, queue = 4, max_upload_mb = 20, threads = 0, n_ctx = 2048, max_new = 300, http_threads = 8,
          cached = 8, seed = 0;
  bool access_log = false;
  Args a("serve",
         "Serve the assistant over HTTP on this machine: the web app at /, an OpenAI-compatible API at\n"
         "/v1/chat/completions, consultations with case records at /api/consultations (docs/server.md).\n"
         "Listens on loopback unless --host says otherwise; any other address needs --api-key-file.\n"
         "The server never connects out; photos and records stay in --data-dir.");
  a.option("--host", &o.host, "address to listen on (127.0.0.1; 0.0.0.0 or a LAN address needs --api-key-file)");
  a.option("--port", &port, "TCP port (0: any free port, printed at start)");
  a.option("--model", &model_dir, "model folder (vision.gguf, llm.gguf); default as for describe");
  a.option("--data-dir", &o.data_dir, "folder for the case database cases.db (created, owner-only)");
  a.option("--api-key-file", &key_file, "file whose first line is the API key (>= 16 characters)");
  a.option("--queue", &queue, "model requests that may wait; more get 429 with Retry-After");
  a.option("--max-upload-mb", &max_upload_mb, "largest request body in MiB (larger get 413)");
  a.option("--http-threads", &http_threads, "connections served at once");
  a.option("-t,--threads", &threads, "model threads (0: all cores)");
  a.option("-c,--ctx-size", &n_ctx, "context size in tokens per conversation");
  a.option("-n,--max-new-tokens", &max_new, "longest answer in tokens");
  a.option("--cached-cases", &cached, "cases whose image embeddings are kept for follow-ups");
  a.option("--seed", &seed, "random seed for the model's answers");
  a.flag("--access-log", &access_log, "print method, path and status of each request on stderr");
  a.flag("--mmap", &o.engine.mmap, kMmapHelp);
  if (!a.parse(argc, argv)) return 0;
  if (port < 0 || port > 65535) throw Error("--port must be in 0..65535");
  if (queue < 1 || queue > 1024) throw Error("--queue must be in 1..1024");
  if (max_upload_mb < 1 || max_upload_mb > 1024) throw Error("--max-upload-mb must be in 1..1024");
  if (http_threads < 1 || http_threads > 256) throw Error("--http-threads must be in 1..256");
  if (threads < 0 || threads > 256) throw Error("--threads must be in 0..256");
  if (n_ctx < 256 || n_ctx > 1 << 20) throw Error("--ctx-size must be in 256..1048576");
  if (max_new < 1 || max_new >= n_ctx) throw Error("--max-new-tokens must be in 1..ctx-size");
  if (cached < 0 || cached > 10000) throw Error("--cached-cases must be in 0..10000");
  if (!key_file.empty()) o.api_key = server::read_api_key_file(key_file);
  server::check_bind_policy(o.host, !o.api_key.empty());  // before the (slow) model load
  o.port = static_cast<int>(port);
  o.max_upload_bytes = static_cast<size_t>(max_upload_mb) << 20;
  o.http_threads = static_cast<int>(http_threads);
  o.access_log = access_log;
  o.engine.model_dir = clinic::find_model_dir(model_dir, exe_path());
  o.engine.threads = static_cast<int>(threads);
  o.engine.queue = static_cast<size_t>(queue);
  o.engine.n_ctx = n_ctx;
  o.engine.max_new_tokens = max_new;
  o.engine.cached_cases = static_cast<size_t>(cached);
  o.engine.seed = static_cast<uint64_t>(seed);

  // SIGINT/SIGTERM stop the server cleanly (every acknowledged write is
  // already committed); blocked here so every thread inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::fprintf(stderr, "[loading model %s]\n", o.engine.model_dir.c_str());
  server::HttpServer srv(o);
  const int bound = srv.bind();
  std::printf("listening on http://%s:%d (model %s, data %s%s)\n",
              o.host.find(':') != std::string::npos ? ("[" + o.host + "]").c_str() : o.host.c_str(), bound,
              srv.engine().model_name().c_str(), o.data_dir.c_str(), o.api_key.empty() ? "" : ", API key required");
  std::fflush(stdout);
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&set, &sig);
    std::fprintf(stderr, "[signal %d: stopping]\n", sig);
    srv.stop();
  });
  srv.serve();
  // serve() returned: stopped by a signal, or the listening socket failed.
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  return 0;
}

}  // namespace sg::app
