// The whole SkinGPT-4 pipeline: image → vision → splice → LLaMA against the
// reference; `skingpt inspect` end to end; conversations that keep the KV
// cache and never re-encode the image.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/threads.h"
#include "formats/image.h"
#include "llama_fixtures.h"
#include "model/skingpt.h"
#include "model/synth.h"
#include "text/sampler.h"
#include "vision_fixtures.h"

namespace sg {
namespace {

using test::read_f32;
using test::read_i64;
using test::ref_dir;

struct RefFiles {
  test::TempDir dir;
  std::string vision = (dir / "vision.gguf").string(), llm = (dir / "llm.gguf").string();
  RefFiles() {
    test::write_ref_vision(vision, DType::F32);
    const auto c = test::ref_llama_config();
    test::write_llama(llm, c, QuantScheme{}, [&](const std::string& n) { return test::ref_llama_tensor(n, c); });
  }
};

std::vector<int32_t> ids_of(const char* file) {
  const auto v = read_i64(ref_dir() / "tensors" / file);
  return {v.begin(), v.end()};
}

TEST(Pipeline, SplicedPromptLogitsAndGreedyMatchReference) {
  RefFiles f;
  auto vision = VisionModel::load(f.vision);
  auto llm = LlamaModel::load(f.llm);
  ThreadPool pool(2);
  const auto image = read_f32(ref_dir() / "tensors/image.bin");
  const auto img = vision->encode(image.data(), pool);
  const auto s0 = ids_of("prompt_seg0_ids.bin"), s1 = ids_of("prompt_seg1_ids.bin");
  const int64_t dim = llm->config().dim;
  std::vector<float> seq(s0.size() * dim), tail(s1.size() * dim);
  llm->embed(s0, seq.data());
  llm->embed(s1, tail.data());
  seq.insert(seq.end(), img.begin(), img.end());
  seq.insert(seq.end(), tail.begin(), tail.end());
  EXPECT_LE(test::max_abs_diff(seq, read_f32(ref_dir() / "tensors/inputs_embeds.bin")), 1e-4);
  LlamaContext ctx(*llm, 128, pool);
  ctx.eval_embeddings(seq.data(), static_cast<int64_t>(seq.size()) / dim, true);
  EXPECT_LE(test::max_abs_diff(ctx.logits(), read_f32(ref_dir() / "tensors/logits.bin")), 1e-4);
  const auto want = read_i64(ref_dir() / "tensors/greedy_tokens.bin");
  for (size_t i = 0; i < want.size(); ++i) {
    const int32_t id = argmax({ctx.logits().data() + ctx.logits().size() - llm->config().n_vocab,
                               static_cast<size_t>(llm->config().n_vocab)});
    ASSERT_EQ(id, want[i]) << "step " << i;
    ctx.eval_tokens({&id, 1});
  }
}

std::string join_ids(const std::vector<int32_t>& v) {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << v[i];
  return s.str();
}

TEST(Pipeline, InspectCommandWritesReferenceTensors) {
  RefFiles f;
  // The reference's raw 45×37 image, stored losslessly as PNG.
  const auto raw = read_i64(ref_dir() / "tensors/raw_image_hwc_uint8.bin");
  Image img;
  img.height = 37;
  img.width = 45;
  for (auto v : raw) img.rgb.push_back(static_cast<uint8_t>(v));
  const auto png = encode_png(img);
  const std::string png_path = (f.dir / "raw.png").string(), out = (f.dir / "out").string();
  std::ofstream(png_path, std::ios::binary).write(reinterpret_cast<const char*>(png.data()), png.size());
  const std::string cmd = std::string(SKINGPT_BINARY) + " inspect --vision " + f.vision + " --llm " + f.llm +
                          " --image " + png_path + " --prompt-ids '" + join_ids(ids_of("prompt_seg0_ids.bin")) +
                          "|" + join_ids(ids_of("prompt_seg1_ids.bin")) + "' --greedy 4 --out " + out;
  const auto run = test::run_command(cmd);
  ASSERT_EQ(run.status, 0) << cmd << "\n" << run.output;
  EXPECT_LE(test::max_abs_diff(read_f32(out + "/image_embeds.f32"), read_f32(ref_dir() / "tensors/llama_proj_out.bin")), 1e-4);
  EXPECT_LE(test::max_abs_diff(read_f32(out + "/logits.f32"), read_f32(ref_dir() / "tensors/logits.bin")), 1e-4);
  std::ifstream g(out + "/greedy.txt");
  std::vector<int64_t> got;
  for (int64_t x; g >> x;) got.push_back(x);
  EXPECT_EQ(got, read_i64(ref_dir() / "tensors/greedy_tokens.bin"));
  // Bad ids are refused with an error, not a crash.
  const std::string bad = std::string(SKINGPT_BINARY) + " inspect --vision " + f.vision + " --llm " + f.llm +
                          " --image " + png_path + " --prompt-ids '1,2,999' --out " + out;
  const auto bad_run = test::run_command(bad);
  EXPECT_EQ(bad_run.status, 1) << bad_run.output;
  EXPECT_NE(bad_run.output.find("999"), std::string::npos) << bad_run.output;
}

// A tiny random model with the real Llama-2 tokenizer, for conversations.
struct ChatModel {
  test::TempDir dir;
  std::unique_ptr<SkinGptModel> model;
  ChatModel() {
    Vocab v = load_vocab((test::shared_dir() / "tokenizer/tokenizer.model").string());
    LlamaConfig c;
    c.n_vocab = static_cast<int64_t>(v.size()); c.dim = 64; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 4;
    c.ffn = 128; c.n_ctx_train = 2048; c.rope_dim = 16; c.rms_eps = 1e-6f;
    const std::string llm = (dir / "llm.gguf").string(), vis = (dir / "vision.gguf").string();
    test::write_llama(llm, c, QuantScheme{}, test::random_llama_source(c, 11), &v);
    VisionConfig vc = test::ref_vision_config();
    synth_vision(vis, vc, DType::F32, 5);
    model = SkinGptModel::load(vis, llm);
  }
};

TEST(Conversation, PromptFollowsSkinGpt4Template) {
  ChatModel m;
  ThreadPool pool(2);
  Conversation conv(*m.model, pool, 512);
  conv.set_image_embeddings(std::vector<float>(4 * 64, 0.1f));
  conv.add_turn("What skin disease is shown in this image?", "A nevus.");
  EXPECT_EQ(conv.prompt(),
            "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide "
            "it to you. Please answer my questions.###Human: <Img><ImageHere></Img> What skin disease is shown in "
            "this image?###Assistant: A nevus.###Human: ###Assistant:");
}

TEST(Conversation, FollowUpReusesCacheAndMatchesFreshReplay) {
  ChatModel m;
  ThreadPool pool(2);
  const int size = 32;
  std::vector<float> chw(3 * size * size);
  for (size_t i = 0; i < chw.size(); ++i) chw[i] = std::sin(0.37f * i);
  ChatOptions greedy;
  greedy.max_new_tokens = 12;
  greedy.sampling.temperature = 0;

  Conversation a(*m.model, pool, 512);
  a.set_image(chw.data());
  const std::string a1 = a.ask("Could you describe the skin disease in this image for me?", greedy);
  const int64_t after_first = a.tokens_evaluated();
  const std::string a2 = a.ask("What treatment and medication should be recommended for this case?", greedy);
  EXPECT_EQ(a.image_encodes(), 1) << "a follow-up question must not re-encode the image";
  const int64_t second_turn = a.tokens_evaluated() - after_first;

  Conversation b(*m.model, pool, 512);
  b.set_image_embeddings(a.image_embeddings());
  b.add_turn("Could you describe the skin disease in this image for me?", a1);
  const std::string b2 = b.ask("What treatment and medication should be recommended for this case?", greedy);
  EXPECT_EQ(a2, b2) << "incremental KV reuse must give what a fresh replay gives";
  EXPECT_LT(second_turn, b.tokens_evaluated()) << "the follow-up should evaluate only new tokens";
  EXPECT_EQ(b.image_encodes(), 0);
}

// score_answers (shared prefix evaluated once, candidates from the cache)
// against a brute-force likelihood over the whole spliced sequence.
TEST(Conversation, AnswerScoresEqualBruteForceLikelihood) {
  ChatModel m;
  ThreadPool pool(2);
  const std::string q = "What skin disease is shown in this image?", prefix = "This could be a skin disease image of ";
  const std::vector<std::string> cands = {"melanoma", "melanocytic nevus", "basal cell carcinoma", "dermatofibroma"};
  std::vector<float> img(4 * 64);
  for (size_t i = 0; i < img.size(); ++i) img[i] = std::cos(0.11f * i);
  Conversation conv(*m.model, pool, 512);
  conv.set_image_embeddings(img);
  const auto scores = conv.score_answers(q, prefix, cands);
  ASSERT_EQ(scores.size(), cands.size());

  const auto& tok = *m.model->tokenizer;
  const auto& llm = *m.model->llm;
  const int64_t dim = llm.config().dim, nv = llm.config().n_vocab;
  Conversation shape(*m.model, pool, 64);
  shape.set_image_embeddings(img);
  shape.add_turn(q, "x");
  std::string p = shape.prompt();
  p = p.substr(0, p.find("###Assistant:") + 13);
  const size_t at = p.find("<ImageHere>");
  const auto seg0 = tok.encode(p.substr(0, at), true);
  const auto prompt1 = tok.encode(p.substr(at + 11), false);
  for (size_t c = 0; c < cands.size(); ++c) {
    const auto seg1 = tok.encode(p.substr(at + 11) + " " + prefix + cands[c], false);
    std::vector<float> seq(seg0.size() * dim), tail(seg1.size() * dim);
    llm.embed(seg0, seq.data());
    llm.embed(seg1, tail.data());
    seq.insert(seq.end(), img.begin(), img.end());
    seq.insert(seq.end(), tail.begin(), tail.end());
    LlamaContext ctx(llm, 256, pool);
    ctx.eval_embeddings(seq.data(), static_cast<int64_t>(seq.size() / dim), true);
    const size_t off = seg0.size() + 4;  // position of seg1[0]
    double lp = 0;
    for (size_t i = prompt1.size(); i < seg1.size(); ++i) {
      const float* row = ctx.logits().data() + (off + i - 1) * nv;
      double mx = row[0], sum = 0;
      for (int64_t v = 1; v < nv; ++v) mx = std::max<double>(mx, row[v]);
      for (int64_t v = 0; v < nv; ++v) sum += std::exp(row[v] - mx);
      lp += row[seg1[i]] - mx - std::log(sum);
    }
    EXPECT_NEAR(scores[c], lp, 1e-3 * std::max(1.0, std::abs(lp))) << cands[c];
  }
  // Scoring is not a turn: the next question starts from a clean prompt.
  EXPECT_EQ(conv.prompt().find(prefix), std::string::npos);
  // And asking afterwards gives what a fresh conversation gives.
  ChatOptions greedy;
  greedy.max_new_tokens = 8;
  greedy.sampling.temperature = 0;
  const std::string after = conv.ask(q, greedy);
  Conversation fresh(*m.model, pool, 512);
  fresh.set_image_embeddings(img);
  EXPECT_EQ(after, fresh.ask(q, greedy));
}

TEST(Conversation, PostprocessLikeMiniGpt4) {
  EXPECT_EQ(postprocess_answer(" It is a nevus.###Human: more"), "It is a nevus.");
  EXPECT_EQ(postprocess_answer("Assistant: Benign."), "Benign.");
  EXPECT_EQ(postprocess_answer("\n  x  \n"), "x");
}

}  // namespace
}  // namespace sg
