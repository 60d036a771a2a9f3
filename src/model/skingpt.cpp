#include "model/skingpt.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/threads.h"
#include "formats/gguf.h"
#include "formats/preprocess.h"

namespace sg {

std::unique_ptr<SkinGptModel> SkinGptModel::load(const std::string& dir, gguf::Residency residency) {
  const std::filesystem::path d(dir);
  if (!std::filesystem::is_directory(d))
    throw Error(dir + ": not a model folder (expected a folder with vision.gguf and llm.gguf)");
  return load((d / "vision.gguf").string(), (d / "llm.gguf").string(), residency);
}

std::unique_ptr<SkinGptModel> SkinGptModel::load(const std::string& vision_path, const std::string& llm_path,
                                                  gguf::Residency residency) {
  auto m = std::make_unique<SkinGptModel>();
  m->vision = VisionModel::load(vision_path, residency);
  m->llm = LlamaModel::load(llm_path, residency);
  // A file without a tokenizer still serves `inspect` (ids given); chat refuses it.
  if (m->llm->file().find("tokenizer.ggml.model"))
    m->tokenizer = std::make_unique<Tokenizer>(vocab_from_gguf(m->llm->file()));
  if (m->tokenizer && m->tokenizer->n_vocab() != m->llm->config().n_vocab)
    throw Error(llm_path + ": the tokenizer has " + std::to_string(m->tokenizer->n_vocab()) +
                " tokens but token_embd has " + std::to_string(m->llm->config().n_vocab));
  if (m->vision->config().llm_dim != m->llm->config().dim)
    throw Error(vision_path + ": the projection outputs " + std::to_string(m->vision->config().llm_dim) +
                "-wide embeddings but " + llm_path + " is " + std::to_string(m->llm->config().dim) +
                " wide (a projection for another LLM size?)");
  return m;
}

std::vector<float> SkinGptModel::preprocess(const Image& img) const {
  const auto& c = vision->config();
  const int size = static_cast<int>(c.image_size);
  return to_normalized_chw(resize_bicubic(img, size, size), {c.mean[0], c.mean[1], c.mean[2]},
                           {c.std[0], c.std[1], c.std[2]});
}

std::string postprocess_answer(const std::string& text) {
  std::string s = text.substr(0, text.find("###"));
  if (const size_t a = s.rfind("Assistant:"); a != std::string::npos) s = s.substr(a + 10);
  const auto ws = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && ws(s.back())) s.pop_back();
  size_t b = 0;
  while (b < s.size() && ws(s[b])) ++b;
  return s.substr(b);
}

Conversation::Conversation(const SkinGptModel& model, ThreadPool& pool, int64_t n_ctx)
    : m_(model), pool_(pool), ctx_(*model.llm, n_ctx, pool) {
  if (!m_.tokenizer)
    throw Error(m_.llm->file().path() + ": has no tokenizer (tokenizer.ggml.*), which a conversation needs");
}

void Conversation::set_image(const float* chw) {
  set_image_embeddings(m_.vision->encode(chw, pool_, {}, &enc_t_));
  ++encodes_;
}

void Conversation::set_image_embeddings(std::vector<float> embeds) {
  const auto& vc = m_.vision->config();
  if (static_cast<int64_t>(embeds.size()) != vc.n_query * m_.llm->config().dim)
    throw Error("image embeddings have " + std::to_string(embeds.size()) + " values, expected " +
                std::to_string(vc.n_query * m_.llm->config().dim));
  reset();
  image_ = std::move(embeds);
}

void Conversation::reset() {
  image_.clear();
  turns_.clear();
  pending_question_.clear();
  seg0_.clear();
  seg1_.clear();
  image_in_cache_ = false;
  ctx_.truncate(0);
}

std::string conversation_prompt(const ConversationTemplate& t, const Turns& turns, const std::string& question,
                                bool with_image) {
  std::string r = t.system + t.sep;
  auto human = [&](size_t i, const std::string& q) {
    const std::string msg = i == 0 && with_image ? "<Img>" + t.image_placeholder + "</Img> " + q : q;
    return t.human + ": " + msg + t.sep;
  };
  for (size_t i = 0; i < turns.size(); ++i) r += human(i, turns[i].first) + t.assistant + ": " + turns[i].second + t.sep;
  return r + human(turns.size(), question) + t.assistant + ":";
}

std::string Conversation::prompt() const { return conversation_prompt(tpl_, turns_, pending_question_, !image_.empty()); }

Conversation::Tail Conversation::sync_prompt() {
  const std::string p = prompt();
  const auto& tok = *m_.tokenizer;
  const int64_t dim = m_.llm->config().dim, nq = m_.vision->config().n_query;
  std::vector<int32_t> t0, t1;
  const bool has_image = !image_.empty();
  if (has_image) {
    const size_t at = p.find(tpl_.image_placeholder);
    t0 = tok.encode(p.substr(0, at), true);
    t1 = tok.encode(p.substr(at + tpl_.image_placeholder.size()), false);
  } else {
    t0 = tok.encode(p, true);
  }
  const int64_t total = static_cast<int64_t>(t0.size() + t1.size()) + (has_image ? nq : 0);
  if (total >= ctx_.n_ctx())
    throw Error("the conversation is " + std::to_string(total) + " tokens long, more than the context of " +
                std::to_string(ctx_.n_ctx()) + ": start a new conversation");

  // Keep the longest cached prefix; at least one position must be evaluated
  // so that the last prompt position's logits are fresh.
  size_t keep0 = common_prefix(t0, seg0_);
  const bool seg0_whole = keep0 == t0.size() && seg0_.size() == t0.size() && (!has_image || image_in_cache_);
  size_t keep1 = seg0_whole ? common_prefix(t1, seg1_) : 0;
  if (!has_image && keep0 == t0.size()) keep0 = t0.size() - 1;
  if (has_image && seg0_whole && keep1 == t1.size()) keep1 = t1.size() - 1;

  if (!seg0_whole || !has_image) {
    ctx_.truncate(static_cast<int64_t>(keep0));
    seg0_.assign(t0.begin(), t0.begin() + keep0);
    std::vector<int32_t> rest(t0.begin() + keep0, t0.end());
    std::vector<float> emb((rest.size() + (has_image ? nq : 0)) * dim);
    m_.llm->embed(rest, emb.data());
    if (has_image) std::copy(image_.begin(), image_.end(), emb.begin() + rest.size() * dim);
    if (!emb.empty()) {
      ctx_.eval_embeddings(emb.data(), static_cast<int64_t>(emb.size() / dim));
      evaluated_ += static_cast<int64_t>(emb.size() / dim);
    }
    seg0_ = t0;
    image_in_cache_ = has_image;
    seg1_.clear();
    keep1 = 0;
  } else {
    ctx_.truncate(static_cast<int64_t>(seg0_.size()) + nq + static_cast<int64_t>(keep1));
    seg1_.resize(keep1);
  }
  if (has_image) {
    std::vector<int32_t> rest(t1.begin() + keep1, t1.end());
    if (!rest.empty()) {
      ctx_.eval_tokens(rest);
      evaluated_ += static_cast<int64_t>(rest.size());
    }
    seg1_ = t1;
    const size_t at = p.find(tpl_.image_placeholder);
    return Tail{p.substr(at + tpl_.image_placeholder.size()), static_cast<int64_t>(seg0_.size()) + nq, false};
  }
  return Tail{p, 0, true};
}

void Conversation::add_turn(std::string question, std::string answer) {
  turns_.emplace_back(std::move(question), std::move(answer));
}

std::vector<double> Conversation::score_answers(const std::string& question, const std::string& answer_prefix,
                                                const std::vector<std::string>& candidates) {
  if (candidates.empty()) return {};
  pending_question_ = question;
  const Tail tail = sync_prompt();
  pending_question_.clear();
  const auto& tok = *m_.tokenizer;
  auto& cached = image_.empty() ? seg0_ : seg1_;  // tokens of the tail now in the cache
  const std::vector<int32_t> prompt_toks = cached;
  // Each candidate as the model would see it written after "Assistant:".
  std::vector<std::vector<int32_t>> full;
  for (const auto& c : candidates) full.push_back(tok.encode(tail.text + " " + answer_prefix + c, tail.with_bos));
  size_t m = prompt_toks.size(), shared = full[0].size();
  for (const auto& f : full) {
    m = std::min(m, common_prefix(prompt_toks, f));
    shared = std::min(shared, common_prefix(full[0], f));
  }
  if (m == 0) throw Error("cannot score answers: the prompt has no tokens");
  for (const auto& f : full)
    if (f.size() <= m) throw Error("cannot score an empty answer");
  const int64_t nv = m_.llm->config().n_vocab;
  if (tail.start + static_cast<int64_t>(std::max_element(full.begin(), full.end(), [](auto& a, auto& b) {
                                            return a.size() < b.size();
                                          })->size()) > ctx_.n_ctx())
    throw Error("not enough context left to score the answers: start a new conversation");
  auto log_softmax_at = [&](const float* logits, int32_t id) {
    float mx = logits[0];
    for (int64_t i = 1; i < nv; ++i) mx = std::max(mx, logits[i]);
    double sum = 0;
    for (int64_t i = 0; i < nv; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
    return static_cast<double>(logits[id] - mx) - std::log(sum);
  };
  // Shared part once: re-run from the last prompt token so its logits score
  // the first answer token; then each candidate's own tokens.
  size_t shortest = full[0].size();
  for (const auto& f : full) shortest = std::min(shortest, f.size());
  // Every candidate keeps at least one token of its own after the shared part.
  shared = std::min(std::max(shared, m), shortest - 1);
  ctx_.truncate(tail.start + static_cast<int64_t>(m) - 1);
  std::vector<int32_t> head(full[0].begin() + m - 1, full[0].begin() + shared);
  ctx_.eval_tokens(head, true);
  evaluated_ += static_cast<int64_t>(head.size());
  double shared_lp = 0;
  for (size_t i = m; i < shared; ++i) shared_lp += log_softmax_at(ctx_.logits().data() + (i - m) * nv, full[0][i]);
  const std::vector<float> next(ctx_.logits().end() - nv, ctx_.logits().end());
  std::vector<double> out;
  for (const auto& f : full) {
    double lp = shared_lp + log_softmax_at(next.data(), f[shared]);
    ctx_.truncate(tail.start + static_cast<int64_t>(shared));
    if (f.size() > shared + 1) {
      std::vector<int32_t> rest(f.begin() + shared, f.end() - 1);
      ctx_.eval_tokens(rest, true);
      evaluated_ += static_cast<int64_t>(rest.size());
      for (size_t i = shared + 1; i < f.size(); ++i)
        lp += log_softmax_at(ctx_.logits().data() + (i - shared - 1) * nv, f[i]);
    }
    out.push_back(lp);
  }
  // The cache now holds the shared answer prefix; the next sync keeps what matches.
  ctx_.truncate(tail.start + static_cast<int64_t>(shared));
  cached.assign(full[0].begin(), full[0].begin() + shared);
  return out;
}

std::string Conversation::ask(const std::string& question, const ChatOptions& opt) {
  pending_question_ = question;
  sync_prompt();
  if (ctx_.n_past() + opt.max_new_tokens > ctx_.n_ctx())
    throw Error("not enough context left for an answer (" + std::to_string(ctx_.n_ctx() - ctx_.n_past()) +
                " positions): start a new conversation");
  Sampler sampler(opt.sampling);
  GenerateOptions g;
  g.max_new_tokens = opt.max_new_tokens;
  g.stop = {tpl_.sep};
  g.on_text = opt.on_text;
  const int64_t before = ctx_.n_past();
  GenerateResult r = generate(ctx_, *m_.tokenizer, sampler, g);
  // Generated tokens that went into the cache belong to the last segment now.
  const int64_t cached = ctx_.n_past() - before;
  evaluated_ += cached;
  auto& tail = image_.empty() ? seg0_ : seg1_;
  tail.insert(tail.end(), r.tokens.begin(), r.tokens.begin() + cached);
  // MiniGPT-4 drops a leading unk or bos before decoding (decode() already
  // skips bos; unk would read " ⁇ ").
  std::string text = r.text;
  if (!r.tokens.empty() && r.tokens[0] == m_.tokenizer->unk())
    text = m_.tokenizer->decode({r.tokens.begin() + 1, r.tokens.end()});
  std::string answer = postprocess_answer(text);
  turns_.emplace_back(question, answer);
  pending_question_.clear();
  return answer;
}

}  // namespace sg
