// The generation loop: sample, feed back, stream text as it becomes complete
// UTF-8, stop at end-of-sequence, a token limit or a stop string (the stop
// string itself is never streamed).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/llama.h"
#include "text/sampler.h"
#include "text/tokenizer.h"

namespace sg {

struct GenerateOptions {
  int64_t max_new_tokens = 300;
  std::vector<std::string> stop;  // e.g. "###" for SkinGPT-4's template
  // Keep the space a first "▁word" piece stands for (continuing a raw prompt);
  // SentencePiece's decode, which chat answers use, drops it.
  bool keep_leading_space = false;
  // Called with each newly complete piece of text; return false to stop.
  std::function<bool(const std::string&)> on_text;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (a stop sequence's ids included)
  std::string text;             // decoded text, cut before any stop string
  enum class Reason { Eos, Length, Stop, Callback, ContextFull } reason = Reason::Length;
  double prompt_ms = 0, gen_ms = 0;
};

// The context must already hold the prompt with its logits computed (the
// logits of the last prompt position are where sampling starts).
GenerateResult generate(LlamaContext& ctx, const Tokenizer& tok, Sampler& sampler,
                        const GenerateOptions& opt);

}  // namespace sg
