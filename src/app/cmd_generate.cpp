#include <chrono>
#include <cstdio>
#include <thread>

#include "app/args.h"
#include "app/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "formats/gguf.h"
#include "model/generate.h"
#include "model/llama.h"
#include "text/tokenizer.h"

namespace sg::app {

int cmd_generate(int argc, char** argv) {
  std::string model_path, prompt;
  int64_t n_predict = 128, threads = std::thread::hardware_concurrency(), n_ctx = 2048, top_k = 0;
  int64_t seed = 0;
  float temp = 0.8f, top_p = 0.9f, repeat_penalty = 1.0f;
  std::vector<std::string> stops;
  std::string stop;
  bool mmap = false;
  Args a("generate", "Generate a continuation of a prompt with a llama GGUF model, streamed to stdout.");
  a.option("-m,--model", &model_path, "llama GGUF file (with tokenizer metadata)");
  a.option("-p,--prompt", &prompt, "prompt text (BOS is added)");
  a.option("-n,--n-predict", &n_predict, "maximum number of new tokens");
  a.option("--temp", &temp, "temperature; 0 = greedy");
  a.option("--top-k", &top_k, "keep only the k most likely tokens (0 = off)");
  a.option("--top-p", &top_p, "nucleus sampling mass (1 = off)");
  a.option("--repeat-penalty", &repeat_penalty, "repetition penalty (1 = off)");
  a.option("--seed", &seed, "random seed");
  a.option("--stop", &stop, "stop when this text is generated");
  a.option("-c,--ctx-size", &n_ctx, "context size in tokens");
  a.option("-t,--threads", &threads, "threads");
  a.flag("--mmap", &mmap, kMmapHelp);
  if (!a.parse(argc, argv)) return 0;
  if (model_path.empty()) throw Error("generate: -m MODEL is required");
  if (threads < 1 || threads > 256) throw Error("generate: --threads must be in 1..256");
  if (n_predict < 0) throw Error("generate: --n-predict must be >= 0");

  auto model = LlamaModel::load(model_path, residency(mmap));
  const Tokenizer tok(vocab_from_gguf(model->file()));
  if (tok.n_vocab() != model->config().n_vocab)
    throw Error(model_path + ": tokenizer has " + std::to_string(tok.n_vocab()) +
                " tokens but token_embd has " + std::to_string(model->config().n_vocab));
  ThreadPool pool(static_cast<int>(threads));
  LlamaContext ctx(*model, n_ctx, pool);
  const auto ids = tok.encode(prompt, true);
  if (static_cast<int64_t>(ids.size()) >= n_ctx)
    throw Error("generate: the prompt has " + std::to_string(ids.size()) + " tokens, the context only " +
                std::to_string(n_ctx));
  const auto t0 = std::chrono::steady_clock::now();
  ctx.eval_tokens(ids);
  const double prompt_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  Sampler sampler({temp, static_cast<int32_t>(top_k), top_p, repeat_penalty, static_cast<uint64_t>(seed)});
  GenerateOptions opt;
  opt.max_new_tokens = std::min<int64_t>(n_predict, n_ctx - static_cast<int64_t>(ids.size()));
  if (!stop.empty()) opt.stop.push_back(stop);
  opt.keep_leading_space = true;
  std::fputs(prompt.c_str(), stdout);
  opt.on_text = [](const std::string& s) {
    std::fputs(s.c_str(), stdout);
    std::fflush(stdout);
    return true;
  };
  const auto r = generate(ctx, tok, sampler, opt);
  std::fputs("\n", stdout);
  std::fprintf(stderr, "prompt: %zu tokens in %.1f ms (%.1f tok/s); generated %zu tokens in %.1f ms (%.2f tok/s)\n",
               ids.size(), prompt_ms, ids.size() * 1000.0 / prompt_ms, r.tokens.size(), r.gen_ms,
               r.tokens.empty() ? 0.0 : r.tokens.size() * 1000.0 / r.gen_ms);
  return 0;
}

}  // namespace sg::app
