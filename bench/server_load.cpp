// Load test of `skingpt serve` (issue 7): C concurrent clients for D seconds
// against a running server on loopback, a mix of consultations, follow-ups,
// case lists and chat completions. Every request must be answered with
// 200/201 or 429 (the queue is full) — any other status, a refused
// connection or a timeout is a failure. Afterwards every acknowledged case
// is read back (it must be whole: report + image). Prints throughput and
// p50/p95 latency per kind of request.
//
//   server_load --port P [--clients 32] [--seconds 60] [--key KEY] [--image FILE]
//
// Bounded: loopback only (the host is fixed to 127.0.0.1), a fixed duration,
// one request at a time per client.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "server/util.h"

using nlohmann::json;

namespace {

struct Kind {
  std::vector<double> ms;
  std::map<int, int64_t> status;
};

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0, clients = 32, seconds = 60;
  std::string key, image = "examples/nevus_ISIC_0024306.jpg";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--port") port = std::atoi(v.c_str());
    else if (a == "--clients") clients = std::atoi(v.c_str());
    else if (a == "--seconds") seconds = std::atoi(v.c_str());
    else if (a == "--key") key = v;
    else if (a == "--image") image = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (port <= 0 || port > 65535 || clients < 1 || clients > 256 || seconds < 1 || seconds > 3600) {
    std::fprintf(stderr, "usage: server_load --port P [--clients 1..256] [--seconds 1..3600] [--key KEY] [--image FILE]\n");
    return 2;
  }
  std::ifstream f(image, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "%s: cannot read\n", image.c_str());
    return 2;
  }
  const std::string bytes((std::istreambuf_iterator<char>(f)), {});
  const std::string uri = "data:image/jpeg;base64," + sg::server::base64_encode(
                                                          reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  const std::string consult_body = json{{"image", uri}, {"site", "load test"}}.dump();
  const std::string chat_body =
      json{{"model", "skingpt"},
           {"max_tokens", 16},
           {"messages", json::array({{{"role", "user"},
                                      {"content", json::array({{{"type", "text"}, {"text", "What is this?"}},
                                                               {{"type", "image_url"}, {"image_url", {{"url", uri}}}}})}}})}}
          .dump();

  std::mutex mu;
  std::map<std::string, Kind> kinds;
  std::vector<std::string> acked;
  std::atomic<int64_t> failures{0};
  const auto t0 = std::chrono::steady_clock::now();
  const auto deadline = t0 + std::chrono::seconds(seconds);
  std::vector<std::thread> th;
  for (int c = 0; c < clients; ++c)
    th.emplace_back([&, c] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_connection_timeout(10, 0);
      cli.set_read_timeout(600, 0);
      if (!key.empty()) cli.set_bearer_token_auth(key.c_str());
      std::string mine;  // this client's last case
      for (int i = 0; std::chrono::steady_clock::now() < deadline; ++i) {
        const int k = (c + i) % 4;
        std::string name;
        const auto s = std::chrono::steady_clock::now();
        auto send = [&]() -> httplib::Result {
          if (k == 0) {
            name = "consultation";
            return cli.Post("/api/consultations", consult_body, "application/json");
          }
          if (k == 1 && !mine.empty()) {
            name = "follow-up";
            return cli.Post("/api/consultations/" + mine + "/messages", json{{"content", "Is it serious?"}}.dump(),
                            "application/json");
          }
          if (k == 2) {
            name = "chat";
            return cli.Post("/v1/chat/completions", chat_body, "application/json");
          }
          name = "list";
          return cli.Get("/api/consultations?limit=20");
        };
        httplib::Result r = send();
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count();
        std::lock_guard lk(mu);
        Kind& kd = kinds[name];
        if (!r) {
          ++failures;
          kd.status[-1]++;
          std::fprintf(stderr, "client %d: %s: no answer (%s) at request %d, %.1f s\n", c, name.c_str(),
                       httplib::to_string(r.error()).c_str(), i,
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
          continue;
        }
        kd.status[r->status]++;
        kd.ms.push_back(ms);
        if (r->status != 200 && r->status != 201 && r->status != 429) {
          ++failures;
          std::fprintf(stderr, "client %d: %s: HTTP %d %s\n", c, name.c_str(), r->status, r->body.substr(0, 200).c_str());
        }
        if (name == "consultation" && r->status == 201) {
          mine = json::parse(r->body)["case_id"];
          acked.push_back(mine);
        }
        if (r->status == 429) {
          // As a polite client would: wait as told (bounded), then go on.
          const int wait = std::clamp(std::atoi(r->get_header_value("Retry-After").c_str()), 0, 5);
          mu.unlock();
          std::this_thread::sleep_for(std::chrono::milliseconds(200 * wait));
          mu.lock();
        }
      }
    });
  for (auto& t : th) t.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Every acknowledged case is there, whole.
  httplib::Client cli("127.0.0.1", port);
  if (!key.empty()) cli.set_bearer_token_auth(key.c_str());
  int64_t missing = 0;
  for (const auto& id : acked) {
    auto r = cli.Get("/api/consultations/" + id);
    auto im = cli.Get("/api/consultations/" + id + "/image");
    if (!r || r->status != 200 || !im || im->status != 200 || im->body.size() < 100) ++missing;
  }

  int64_t total = 0, ok = 0;
  std::printf("%d clients, %.1f s\n", clients, wall);
  std::printf("%-13s %8s %8s %8s %10s %10s\n", "request", "count", "2xx", "429", "p50 ms", "p95 ms");
  for (auto& [name, k] : kinds) {
    int64_t n = 0, good = 0, busy = 0;
    for (auto [st, cnt] : k.status) {
      n += cnt;
      if (st == 200 || st == 201) good += cnt;
      if (st == 429) busy += cnt;
    }
    total += n;
    ok += good;
    std::printf("%-13s %8lld %8lld %8lld %10.1f %10.1f\n", name.c_str(), (long long)n, (long long)good,
                (long long)busy, pct(k.ms, 0.5), pct(k.ms, 0.95));
  }
  std::printf("throughput: %.2f requests/s answered, %.2f/s served (2xx)\n", total / wall, ok / wall);
  std::printf("acknowledged cases: %zu, missing or incomplete afterwards: %lld\n", acked.size(), (long long)missing);
  std::printf("failures (no answer, or a status other than 200/201/429): %lld\n", (long long)failures.load());
  return failures == 0 && missing == 0 ? 0 : 1;
}
