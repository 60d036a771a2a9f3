// SkinGPT-4's conversation over the two model files: the CONV_VISION template,
// splicing the projected image queries between the prompt's two token
// segments (BOS on the first only), generation stopped at "###", MiniGPT-4's
// answer post-processing, and multi-turn chat that keeps the KV cache: the
// image is encoded once per conversation; each new turn re-tokenizes the
// prompt exactly as the reference does and evaluates only the tokens that
// differ from what the cache already holds.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "formats/image.h"
#include "model/generate.h"
#include "model/llama.h"
#include "model/vision.h"
#include "text/sampler.h"
#include "text/tokenizer.h"

namespace sg {

class ThreadPool;

// A model folder: vision.gguf (docs/vision-gguf.md) + llm.gguf (standard llama GGUF with tokenizer).
struct SkinGptModel {
  static std::unique_ptr<SkinGptModel> load(const std::string& dir,
                                            gguf::Residency residency = gguf::Residency::Load);
  static std::unique_ptr<SkinGptModel> load(const std::string& vision_path, const std::string& llm_path,
                                            gguf::Residency residency = gguf::Residency::Load);
  // Resize + normalise a decoded photo as the vision file's metadata says
  // (Blip2ImageEvalProcessor) → CHW float [3 × size × size].
  std::vector<float> preprocess(const Image& img) const;

  std::unique_ptr<VisionModel> vision;
  std::unique_ptr<LlamaModel> llm;
  std::unique_ptr<Tokenizer> tokenizer;  // null when llm.gguf has no tokenizer metadata
};

struct ConversationTemplate {
  std::string system =
      "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I "
      "provide it to you. Please answer my questions.";
  std::string human = "Human", assistant = "Assistant", sep = "###";
  std::string image_placeholder = "<ImageHere>";
};

using Turns = std::vector<std::pair<std::string, std::string>>;  // (question, answer)

// The prompt text of a conversation (DESIGN.md §3): the system text, the
// finished `turns`, then `question` as the open turn ending in "Assistant:".
// With `with_image` the first question is prefixed by
// "<Img><ImageHere></Img> ". The engine's Conversation and the trainer both
// build their prompts here, so training sequences are the inference prompts.
std::string conversation_prompt(const ConversationTemplate& t, const Turns& turns, const std::string& question,
                                bool with_image);

struct ChatOptions {
  int64_t max_new_tokens = 300;
  SamplerParams sampling{1.0f, 0, 0.9f, 1.0f, 0};  // SkinGPT-4's defaults
  std::function<bool(const std::string&)> on_text;  // streamed answer text
};

class Conversation {
 public:
  Conversation(const SkinGptModel& model, ThreadPool& pool, int64_t n_ctx = 2048);

  // Encodes the image (normalised CHW at the model's size) and starts a new
  // conversation about it. The only place the vision encoder runs.
  void set_image(const float* chw);
  // Or uses embeddings computed elsewhere [n_query × llm_dim].
  void set_image_embeddings(std::vector<float> embeds);
  void reset();  // forgets the image and every turn

  // Restores a finished turn (e.g. a stored case) without generating; the
  // cache catches up on the next ask().
  void add_turn(std::string question, std::string answer);
  // Asks a question and returns the post-processed answer.
  std::string ask(const std::string& question, const ChatOptions& opt = {});

  // Log-likelihood of each candidate answer "<answer_prefix><candidate>"
  // right after "Assistant:" for `question` (not recorded as a turn): the
  // model's own score of each diagnosis. Shares the prompt's cache.
  std::vector<double> score_answers(const std::string& question, const std::string& answer_prefix,
                                    const std::vector<std::string>& candidates);

  // The full prompt text the model sees next (with the placeholder).
  std::string prompt() const;
  const std::vector<float>& image_embeddings() const { return image_; }
  int64_t image_encodes() const { return encodes_; }
  int64_t tokens_evaluated() const { return evaluated_; }  // prompt + generated positions run
  EncodeTimings last_encode_timings() const { return enc_t_; }
  const LlamaContext& context() const { return ctx_; }

 private:
  // The prompt's last token segment: its text, where it starts in the cache,
  // whether it carries BOS (only when there is no image).
  struct Tail {
    std::string text;
    int64_t start;
    bool with_bos;
  };
  Tail sync_prompt();  // evaluates what the cache lacks of prompt()

  const SkinGptModel& m_;
  ThreadPool& pool_;
  LlamaContext ctx_;
  ConversationTemplate tpl_;
  std::vector<float> image_;
  Turns turns_;
  std::string pending_question_;
  // What the KV cache holds: tokens of segment 0, the image, tokens of segment 1.
  std::vector<int32_t> seg0_, seg1_;
  bool image_in_cache_ = false;
  int64_t encodes_ = 0, evaluated_ = 0;
  EncodeTimings enc_t_;
};

// MiniGPT-4's post-processing of generated text: cut at "###", keep what
// follows the last "Assistant:", trim.
std::string postprocess_answer(const std::string& text);

}  // namespace sg
