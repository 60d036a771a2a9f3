// `skingpt ask` (one answer) and `skingpt chat` (interactive): SkinGPT-4's
// conversation about one photo, answers streamed as they are generated.
#include <cstdio>
#include <iostream>
#include <thread>

#include "app/args.h"
#include "app/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "formats/image.h"
#include "model/skingpt.h"

namespace sg::app {

namespace {

struct ChatSettings {
  std::string model_dir, vision, llm;
  int64_t threads = std::thread::hardware_concurrency(), n_ctx = 2048, max_new = 300, seed = 0;
  float temp = 1.0f, top_p = 0.9f, repeat_penalty = 1.0f;
  bool greedy = false, mmap = false;

  void add_to(Args& a) {
    a.option("--model", &model_dir, "model folder with vision.gguf and llm.gguf");
    a.option("--vision", &vision, "vision GGUF (instead of --model)");
    a.option("--llm", &llm, "llama GGUF (instead of --model)");
    a.option("-n,--max-new-tokens", &max_new, "longest answer in tokens");
    a.option("--temp", &temp, "sampling temperature (SkinGPT-4: 1.0)");
    a.option("--top-p", &top_p, "nucleus sampling mass (SkinGPT-4: 0.9)");
    a.option("--repeat-penalty", &repeat_penalty, "repetition penalty (1 = off; MiniGPT-4 uses 1.05)");
    a.flag("--greedy", &greedy, "always take the most likely token (reproducible)");
    a.option("--seed", &seed, "random seed");
    a.option("-c,--ctx-size", &n_ctx, "context size in tokens");
    a.option("-t,--threads", &threads, "threads");
    a.flag("--mmap", &mmap, kMmapHelp);
  }
  std::unique_ptr<SkinGptModel> load() const {
    if (threads < 1 || threads > 256) throw Error("--threads must be in 1..256");
    if (!vision.empty() || !llm.empty()) {
      if (vision.empty() || llm.empty()) throw Error("--vision and --llm go together");
      return SkinGptModel::load(vision, llm, residency(mmap));
    }
    if (model_dir.empty()) throw Error("give --model DIR (or --vision and --llm)");
    return SkinGptModel::load(model_dir, residency(mmap));
  }
  ChatOptions chat_options() const {
    ChatOptions o;
    o.max_new_tokens = max_new;
    o.sampling = SamplerParams{greedy ? 0.0f : temp, 0, top_p, repeat_penalty, static_cast<uint64_t>(seed)};
    o.on_text = [](const std::string& s) {
      std::fputs(s.c_str(), stdout);
      std::fflush(stdout);
      return true;
    };
    return o;
  }
};

void load_image(Conversation& conv, const SkinGptModel& m, const std::string& path) {
  const Image img = decode_image(path);
  conv.set_image(m.preprocess(img).data());
  const auto t = conv.last_encode_timings();
  std::fprintf(stderr, "[image %s: %dx%d, encoded in %.0f ms (ViT %.0f, Q-Former %.0f)]\n", path.c_str(),
               img.width, img.height, t.vit_ms + t.qformer_ms, t.vit_ms, t.qformer_ms);
}

}  // namespace

int cmd_ask(int argc, char** argv) {
  ChatSettings s;
  std::string image, question;
  Args a("ask", "Ask one question about a skin photo; the answer is streamed to stdout.");
  s.add_to(a);
  a.option("--image", &image, "photo (JPEG, PNG, WebP, HEIC)");
  a.positional("QUESTION", &question, "the question, e.g. \"What skin disease is shown in this image?\"");
  if (!a.parse(argc, argv)) return 0;
  if (image.empty()) throw Error("ask: --image FILE is required");
  auto model = s.load();
  ThreadPool pool(static_cast<int>(s.threads));
  Conversation conv(*model, pool, s.n_ctx);
  load_image(conv, *model, image);
  conv.ask(question, s.chat_options());
  std::fputs("\n", stdout);
  return 0;
}

int cmd_chat(int argc, char** argv) {
  ChatSettings s;
  std::string image;
  Args a("chat",
         "Talk about a skin photo. Type a question and press Enter. Commands:\n"
         "  /image FILE   start a new conversation about another photo\n"
         "  /reset        forget the conversation (and the photo)\n"
         "  /quit         leave");
  s.add_to(a);
  a.option("--image", &image, "photo to start with");
  if (!a.parse(argc, argv)) return 0;
  auto model = s.load();
  ThreadPool pool(static_cast<int>(s.threads));
  Conversation conv(*model, pool, s.n_ctx);
  if (!image.empty()) load_image(conv, *model, image);
  std::fprintf(stderr, "Ready. Answers are drafts for a clinician, not a diagnosis. /quit to leave.\n");
  std::string line;
  while (true) {
    std::fputs("> ", stdout);
    std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    try {
      if (line == "/quit" || line == "/exit") break;
      if (line == "/reset") {
        conv.reset();
        std::fprintf(stderr, "[conversation cleared]\n");
        continue;
      }
      if (line.rfind("/image ", 0) == 0) {
        load_image(conv, *model, line.substr(7));
        continue;
      }
      if (line[0] == '/') {
        std::fprintf(stderr, "unknown command %s (/image FILE, /reset, /quit)\n", line.c_str());
        continue;
      }
      conv.ask(line, s.chat_options());
      std::fputs("\n", stdout);
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());  // the session goes on
    }
  }
  return 0;
}

}  // namespace sg::app
