#include "server/engine.h"

#include <chrono>
#include <filesystem>

#include "clinic/report.h"
#include "core/error.h"

namespace sg::server {

namespace fs = std::filesystem;

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

// ------------------------------------------------------------------ JobQueue

JobQueue::JobQueue(size_t capacity) : capacity_(capacity) { thread_ = std::thread([this] { loop(); }); }

JobQueue::~JobQueue() { stop(); }

void JobQueue::stop() {
  {
    std::lock_guard lk(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
    jobs_.clear();  // their promises break: waiting requests get an error, not a hang
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool JobQueue::try_submit(std::function<void()> job) {
  {
    std::lock_guard lk(mu_);
    if (stop_ || jobs_.size() >= capacity_) return false;
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
  return true;
}

size_t JobQueue::waiting() const {
  std::lock_guard lk(mu_);
  return jobs_.size();
}

void JobQueue::loop() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
      busy_ = true;
    }
    job();  // jobs catch their own exceptions (they hand them to the waiting request)
    job = nullptr;
    busy_ = false;
  }
}

// ------------------------------------------------------------------ Engine

Engine::Engine(const EngineOptions& o) : opt_(o), catalogue_(clinic::Catalogue::builtin()) {
  if (opt_.queue < 1 || opt_.queue > 1024) throw Error("--queue must be in 1..1024");
  if (opt_.max_new_tokens < 1) throw Error("max new tokens must be at least 1");
  model_ = SkinGptModel::load(opt_.model_dir, opt_.mmap ? gguf::Residency::Map : gguf::Residency::Load);
  if (!model_->tokenizer) throw Error(opt_.model_dir + "/llm.gguf: no tokenizer in the file; the server needs one");
  catalogue_ = clinic::Catalogue::resolve("", opt_.model_dir);
  for (auto lang : {clinic::Language::En, clinic::Language::Ja}) {
    std::string path;
    calibrations_[lang] = clinic::find_calibration(opt_.model_dir, lang, catalogue_, &path);
    calibration_paths_[lang] = path;
  }
  model_name_ = fs::path(opt_.model_dir).lexically_normal().filename().string();
  if (model_name_.empty() || model_name_ == ".")
    model_name_ = fs::absolute(opt_.model_dir).lexically_normal().parent_path().filename().string();
  int threads = opt_.threads > 0 ? opt_.threads : static_cast<int>(std::thread::hardware_concurrency());
  pool_ = std::make_unique<ThreadPool>(std::max(1, threads));
  queue_ = std::make_unique<JobQueue>(opt_.queue);
}

Engine::~Engine() { queue_->stop(); }

bool Engine::try_submit(std::function<void(ModelWorker&)> job) {
  return queue_->try_submit([this, job = std::move(job)] { job(worker_); });
}

EngineStats Engine::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

void Engine::add_stats(const std::function<void(EngineStats&)>& f) {
  std::lock_guard lk(mu_);
  f(stats_);
}

std::optional<std::vector<float>> Engine::cached(const std::string& id) {
  std::lock_guard lk(mu_);
  auto it = lru_index_.find(id);
  if (it == lru_index_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

void Engine::cache(const std::string& id, std::vector<float> emb) {
  std::lock_guard lk(mu_);
  if (opt_.cached_cases == 0) return;
  if (auto it = lru_index_.find(id); it != lru_index_.end()) {
    lru_.erase(it->second);
    lru_index_.erase(it);
  }
  lru_.emplace_front(id, std::move(emb));
  lru_index_[id] = lru_.begin();
  while (lru_.size() > opt_.cached_cases) {
    lru_index_.erase(lru_.back().first);
    lru_.pop_back();
  }
}

void Engine::remember_case(const std::string& id, std::vector<float> image_embeddings) {
  if (!image_embeddings.empty()) cache(id, std::move(image_embeddings));
}

void Engine::forget_case(const std::string& id) {
  std::lock_guard lk(mu_);
  if (auto it = lru_index_.find(id); it != lru_index_.end()) {
    lru_.erase(it->second);
    lru_index_.erase(it);
  }
}

// ------------------------------------------------------------------ ModelWorker

ModelWorker::Consultation ModelWorker::consult(const Image& img, const clinic::PatientInfo& p,
                                               clinic::Language lang) {
  auto& c = consultants_[lang];
  if (!c) {
    const auto& cal = e_.calibrations_.at(lang);
    c = std::make_unique<clinic::Consultant>(*e_.model_, e_.catalogue_, cal.value_or(clinic::Calibration{}),
                                             *e_.pool_, e_.opt_.n_ctx);
    c->set_calibration_source(cal ? e_.calibration_paths_.at(lang) : "none", cal.has_value());
  }
  clinic::ConsultOptions opt;
  opt.max_new_tokens = e_.opt_.max_new_tokens;
  opt.sampling.seed = e_.opt_.seed;
  Consultation out;
  out.report = c->consult(img, p, lang, opt, "upload");
  out.report.model_name = e_.model_name_;
  out.report.image_name = "";
  out.report_json = clinic::render_json(out.report);
  out.assessed = out.report.assessed;
  if (out.assessed) out.image_embeddings = c->image_embeddings();
  if (out.assessed && !out.report.differential.ranked.empty()) {
    const auto& top = out.report.differential.ranked.front();
    out.top_id = top.id;
    out.top_name = e_.catalogue_[top.index].name.get(lang);
    out.top_probability = top.probability;
  }
  const auto& t = out.report.timings;
  e_.add_stats([&](EngineStats& s) {
    ++s.consultations;
    s.consult_ms += t.total_ms;
    if (out.assessed) {
      ++s.image_encodes;
      s.encode_ms += t.encode_ms;
    }
  });
  return out;
}

ModelWorker::Answer ModelWorker::run_ask(Conversation& conv, const std::string& question, ChatOptions co) {
  const auto t0 = std::chrono::steady_clock::now();
  Answer a;
  a.text = conv.ask(question, co);
  const double ms = ms_since(t0);
  a.completion_tokens = static_cast<int64_t>(e_.model_->tokenizer->encode(a.text, false).size());
  a.prompt_tokens = std::max<int64_t>(0, conv.context().n_past() - a.completion_tokens);
  if (a.completion_tokens >= co.max_new_tokens) a.finish_reason = "length";
  e_.add_stats([&](EngineStats& s) {
    s.generated_tokens += a.completion_tokens;
    s.generate_ms += ms;
  });
  return a;
}

ModelWorker::Answer ModelWorker::chat(const Image* img, const Turns& turns, const std::string& question,
                                      int64_t max_tokens, float temperature, float top_p, uint64_t seed,
                                      const std::function<bool(const std::string&)>& on_text) {
  if (!conv_) conv_ = std::make_unique<Conversation>(*e_.model_, *e_.pool_, e_.opt_.n_ctx);
  conv_case_.clear();
  conv_->reset();
  if (img) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto chw = e_.model_->preprocess(*img);
    conv_->set_image(chw.data());
    const double ms = ms_since(t0);
    e_.add_stats([&](EngineStats& s) {
      ++s.image_encodes;
      s.encode_ms += ms;
    });
  }
  for (const auto& [q, a] : turns) conv_->add_turn(q, a);
  ChatOptions co;
  co.max_new_tokens = std::min(max_tokens, e_.opt_.max_new_tokens);
  co.sampling = SamplerParams{temperature, 0, top_p, 1.0f, seed};
  co.on_text = on_text;
  Answer a = run_ask(*conv_, question, co);
  e_.add_stats([](EngineStats& s) { ++s.chats; });
  return a;
}

ModelWorker::Answer ModelWorker::follow_up(const std::string& case_id, const std::vector<uint8_t>& stored_jpeg,
                                           const Turns& turns, const std::string& question,
                                           const std::function<bool(const std::string&)>& on_text) {
  if (!conv_) conv_ = std::make_unique<Conversation>(*e_.model_, *e_.pool_, e_.opt_.n_ctx);
  ChatOptions co;
  co.max_new_tokens = e_.opt_.max_new_tokens;
  co.sampling.seed = e_.opt_.seed + turns.size();
  co.on_text = on_text;
  bool image_cached = false;
  // Starts the conversation over: the image's embeddings (cached, else the
  // stored photo encoded once) and the given turns.
  auto rebuild = [&](const Turns& keep) {
    conv_case_.clear();
    if (auto emb = e_.cached(case_id)) {
      conv_->set_image_embeddings(std::move(*emb));
      image_cached = true;
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      const Image img = decode_image_memory(stored_jpeg.data(), stored_jpeg.size(), "stored image");
      const auto chw = e_.model_->preprocess(img);
      conv_->reset();
      conv_->set_image(chw.data());
      e_.cache(case_id, conv_->image_embeddings());
      const double ms = ms_since(t0);
      e_.add_stats([&](EngineStats& s) {
        ++s.image_encodes;
        s.encode_ms += ms;
      });
    }
    for (const auto& [q, a] : keep) conv_->add_turn(q, a);
  };
  // The whole conversation first; when it does not fit the context, the
  // consultation's first answer (the description) and the last exchanges,
  // then the last exchange, then the question alone.
  std::vector<Turns> attempts = {turns};
  if (turns.size() > 3) attempts.push_back({turns.front(), turns[turns.size() - 2], turns.back()});
  if (turns.size() > 1) attempts.push_back({turns.back()});
  if (!turns.empty()) attempts.push_back({});
  const bool hit = conv_case_ == case_id && conv_turns_ == turns.size();
  Answer a;
  for (size_t i = 0; i < attempts.size(); ++i) {
    try {
      if (i > 0 || !hit) rebuild(attempts[i]);
      a = run_ask(*conv_, question, co);
      a.turns_dropped = static_cast<int64_t>(turns.size() - attempts[i].size());
      break;
    } catch (const Error&) {
      conv_case_.clear();
      if (i + 1 == attempts.size()) throw;
    }
  }
  conv_case_ = case_id;
  conv_turns_ = turns.size() + 1;
  e_.add_stats([&](EngineStats& s) {
    ++s.follow_ups;
    if (hit || image_cached) ++s.cache_hits;
  });
  return a;
}

}  // namespace sg::server
