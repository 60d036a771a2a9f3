#include "model/generate.h"

#include <chrono>

namespace sg {

namespace {

// Length of the longest prefix of s made of complete UTF-8 sequences.
size_t complete_utf8_prefix(const std::string& s) {
  size_t i = s.size(), back = 0;
  while (i > 0 && back < 4) {
    const unsigned char c = s[i - 1];
    if ((c & 0xC0) != 0x80) {  // a lead or ASCII byte
      const size_t need = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
      return back + 1 >= need ? s.size() : i - 1;
    }
    --i;
    ++back;
  }
  return s.size();
}

}  // namespace

GenerateResult generate(LlamaContext& ctx, const Tokenizer& tok, Sampler& sampler,
                        const GenerateOptions& opt) {
  using clock = std::chrono::steady_clock;
  GenerateResult r;
  const int64_t n_vocab = tok.n_vocab();
  std::vector<float> logits(ctx.logits().end() - n_vocab, ctx.logits().end());
  size_t emitted = 0;  // bytes of r.text already streamed
  const auto t0 = clock::now();

  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    const int32_t id = sampler.sample(logits, r.tokens);
    if (id == tok.eos()) {
      r.reason = GenerateResult::Reason::Eos;
      break;
    }
    r.tokens.push_back(id);
    std::string text = tok.decode(r.tokens);
    if (opt.keep_leading_space && tok.piece(r.tokens[0]).rfind("\xE2\x96\x81", 0) == 0) text.insert(0, " ");
    // Cut at the first stop string; hold back a tail that could start one.
    size_t cut = std::string::npos, hold = 0;
    for (const auto& s : opt.stop) {
      if (s.empty()) continue;
      const size_t at = text.find(s);
      if (at != std::string::npos) cut = std::min(cut, at);
      for (size_t k = std::min(s.size() - 1, text.size()); k > 0; --k)
        if (text.compare(text.size() - k, k, s, 0, k) == 0) {
          hold = std::max(hold, k);
          break;
        }
    }
    const bool stopped = cut != std::string::npos;
    if (stopped) text.resize(cut);
    size_t ready = stopped ? text.size() : complete_utf8_prefix(text.substr(0, text.size() - hold));
    if (ready > emitted && ready <= text.size()) {
      if (opt.on_text && !opt.on_text(text.substr(emitted, ready - emitted))) {
        r.text = text;
        r.reason = GenerateResult::Reason::Callback;
        break;
      }
      emitted = ready;
    }
    r.text = text;
    if (stopped) {
      r.reason = GenerateResult::Reason::Stop;
      break;
    }
    if (ctx.n_past() >= ctx.n_ctx()) {
      r.reason = GenerateResult::Reason::ContextFull;
      break;
    }
    ctx.eval_tokens({&id, 1});
    logits.assign(ctx.logits().end() - n_vocab, ctx.logits().end());
  }
  if (r.reason != GenerateResult::Reason::Callback && emitted < r.text.size() && opt.on_text)
    opt.on_text(r.text.substr(emitted));
  r.gen_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  return r;
}

}  // namespace sg
