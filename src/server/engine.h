// The one model of the server and the single worker thread that owns it.
// HTTP threads never touch the model: they submit jobs to a bounded queue
// (try_submit() says no when it is full, which the HTTP layer turns into a
// 429) and wait for the job's result. Memory is bounded by the queue length,
// the per-request limits of the HTTP layer and the case cache's capacity.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "clinic/calibration_file.h"
#include "clinic/catalogue.h"
#include "clinic/consultation.h"
#include "core/threads.h"
#include "model/skingpt.h"

namespace sg::server {

// A bounded FIFO of jobs run one at a time by one thread.
class JobQueue {
 public:
  explicit JobQueue(size_t capacity);  // jobs that may wait (the running one not counted)
  ~JobQueue();                          // stops; jobs still waiting are dropped (never run)
  bool try_submit(std::function<void()> job);
  size_t waiting() const;
  bool busy() const { return busy_.load(); }
  size_t capacity() const { return capacity_; }
  void stop();

 private:
  void loop();
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::atomic<bool> busy_{false};
  std::thread thread_;
};

struct EngineOptions {
  std::string model_dir;
  int threads = 0;               // 0: all cores
  size_t queue = 4;              // jobs waiting for the model
  int64_t n_ctx = 2048;
  int64_t max_new_tokens = 300;  // per answer
  size_t cached_cases = 8;       // image embeddings kept for follow-ups
  uint64_t seed = 0;
  bool mmap = false;             // map the model files instead of reading them in (gguf::Residency)
};

// Timings and counters for /metrics (all model work).
struct EngineStats {
  int64_t consultations = 0, chats = 0, follow_ups = 0, image_encodes = 0, cache_hits = 0;
  double encode_ms = 0, consult_ms = 0;
  int64_t generated_tokens = 0;
  double generate_ms = 0;
};

// Model state, touched only on the worker thread (inside jobs).
class Engine;
class ModelWorker {
 public:
  struct Answer {
    std::string text;
    int64_t prompt_tokens = 0, completion_tokens = 0;
    std::string finish_reason = "stop";  // or "length"
    int64_t turns_dropped = 0;           // follow-ups: earlier turns left out to fit the context
  };
  // The consultation; the report rendered as the clinic layer's JSON.
  struct Consultation {
    std::string report_json;
    bool assessed = false;
    std::string top_id, top_name;
    double top_probability = 0;
    clinic::Report report;  // catalogue pointer valid while the engine lives
    std::vector<float> image_embeddings;  // for the case's follow-ups (Engine::remember_case)
  };
  Consultation consult(const Image& img, const clinic::PatientInfo& p, clinic::Language lang);

  // One answer in a fresh conversation: optional image (decoded), finished
  // turns, then `question`. `on_text` gets the answer as it is written;
  // returning false stops generation.
  Answer chat(const Image* img, const Turns& turns, const std::string& question, int64_t max_tokens,
              float temperature, float top_p, uint64_t seed, const std::function<bool(const std::string&)>& on_text);

  // A follow-up in a case's conversation. `turns` are the case's finished
  // turns (the consultation's answers, then earlier follow-ups). The image's
  // embeddings come from the case cache, else `stored_jpeg` is decoded and
  // encoded once (and cached).
  Answer follow_up(const std::string& case_id, const std::vector<uint8_t>& stored_jpeg, const Turns& turns,
                   const std::string& question, const std::function<bool(const std::string&)>& on_text);

 private:
  friend class Engine;
  explicit ModelWorker(Engine& e) : e_(e) {}
  Answer run_ask(Conversation& conv, const std::string& question, ChatOptions co);
  Engine& e_;
  std::unique_ptr<Conversation> conv_;  // chat and follow-ups share one KV cache
  std::string conv_case_;               // the case conv_ holds ("" when none)
  size_t conv_turns_ = 0;               // finished turns conv_ holds for conv_case_
  std::map<clinic::Language, std::unique_ptr<clinic::Consultant>> consultants_;
};

class Engine {
 public:
  explicit Engine(const EngineOptions& o);  // loads the model (throws sg::Error)
  ~Engine();

  // Runs `job` on the worker thread; false when the queue is full.
  bool try_submit(std::function<void(ModelWorker&)> job);
  size_t waiting() const { return queue_->waiting(); }
  bool busy() const { return queue_->busy(); }
  size_t queue_capacity() const { return queue_->capacity(); }

  const clinic::Catalogue& catalogue() const { return catalogue_; }
  const EngineOptions& options() const { return opt_; }
  std::string model_name() const { return model_name_; }
  EngineStats stats() const;
  void forget_case(const std::string& id);  // drops cached state of a deleted case
  // Keeps a new case's image embeddings, so its first follow-up does not run
  // the vision encoder again (bounded by EngineOptions::cached_cases).
  void remember_case(const std::string& id, std::vector<float> image_embeddings);

 private:
  friend class ModelWorker;
  std::optional<std::vector<float>> cached(const std::string& id);
  void cache(const std::string& id, std::vector<float> emb);
  void add_stats(const std::function<void(EngineStats&)>& f);

  EngineOptions opt_;
  std::unique_ptr<SkinGptModel> model_;
  clinic::Catalogue catalogue_;
  std::map<clinic::Language, std::optional<clinic::Calibration>> calibrations_;
  std::map<clinic::Language, std::string> calibration_paths_;
  std::string model_name_;
  std::unique_ptr<ThreadPool> pool_;
  ModelWorker worker_{*this};

  mutable std::mutex mu_;  // stats and the case cache
  EngineStats stats_;
  std::list<std::pair<std::string, std::vector<float>>> lru_;  // most recent first
  std::unordered_map<std::string, decltype(lru_)::iterator> lru_index_;
  std::string forgotten_;  // a case deleted while conv_ may hold it

  std::unique_ptr<JobQueue> queue_;  // last: stopped first
};

}  // namespace sg::server
