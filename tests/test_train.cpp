// The libtorch trainer (train/): the libtorch forward against the reference
// SkinGPT-4 tensors; export → engine parity on a random model of another
// shape (GQA, several Q-Former layers); the training prompt against the
// engine's Conversation (prompt text, answer scoring); checkpoint/resume
// exactness; the data layer; and the CI smoke test: a few steps of step2 on
// real HAM10000 images (projection only through the CLI, everything
// in-process), the loss falls, export, engine == libtorch on the result.
#ifdef SKINGPT_HAVE_TORCH
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "clinic/splits.h"
#include "core/error.h"
#include "clinic/catalogue.h"
#include "clinic/consultation.h"
#include "core/threads.h"
#include "formats/image.h"
#include "formats/preprocess.h"
#include "model/skingpt.h"
#include "test_util.h"
#include "train/data.h"
#include "train/io.h"
#include "train/model.h"
#include "train/sequences.h"
#include "train/train.h"

namespace sg {
namespace {

using test::read_f32;
using test::read_i64;
using test::ref_dir;

std::vector<float> to_vec(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU, at::kFloat).contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

at::Tensor ids_tensor(const std::vector<int32_t>& v) {
  std::vector<int64_t> w(v.begin(), v.end());
  return at::tensor(w).unsqueeze(0);
}

// The engine's splice: seg0 tokens, image queries, seg1 tokens, as embeddings.
at::Tensor spliced(const train::Net& net, const at::Tensor& img, const std::vector<int32_t>& s0,
                   const std::vector<int32_t>& s1) {
  return at::cat({net.embed(ids_tensor(s0)), img, net.embed(ids_tensor(s1))}, 1);
}

train::ModelConfig ref_config() {
  train::ModelConfig c;
  auto& v = c.vision;
  v.image_size = 32; v.patch_size = 8;
  v.vit_width = 64; v.vit_depth = 2; v.vit_heads = 4; v.vit_ffn = 279; v.vit_eps = 1e-6f; v.ln_vision_eps = 1e-5f;
  v.qf_width = 32; v.qf_depth = 2; v.qf_heads = 2; v.qf_ffn = 128; v.qf_cross_freq = 2; v.n_query = 4;
  v.qf_eps = 1e-12f; v.llm_dim = 64;
  auto& l = c.llm;
  l.n_vocab = 100; l.dim = 64; l.n_layers = 2; l.n_heads = 4; l.n_kv_heads = 4; l.ffn = 128; l.n_ctx_train = 2048;
  l.rope_dim = 16; l.rms_eps = 1e-6f; l.rope_theta = 10000.0f;
  c.parts.vit = c.parts.qformer = c.parts.proj = c.parts.llm = true;
  return c;
}

std::vector<int32_t> ref_ids(const char* f) {
  const auto v = read_i64(ref_dir() / "tensors" / f);
  return {v.begin(), v.end()};
}

// (a) The libtorch model with the reference's parameters (loaded by their
// original names) reproduces the real SkinGPT-4 code's tensors.
TEST(TrainModel, ForwardMatchesReferenceTensors) {
  train::set_threads(1);
  train::Net net(ref_config());
  {
    at::NoGradGuard ng;
    for (size_t i = 0; i < net.names().size(); ++i) {
      const auto v = read_f32(ref_dir() / "params" / (net.names()[i] + ".bin"));
      const at::Tensor& t = net.tensors()[i];
      ASSERT_EQ(static_cast<int64_t>(v.size()), t.numel()) << net.names()[i];
      t.copy_(at::from_blob(const_cast<float*>(v.data()), t.sizes(), at::kFloat));
    }
  }
  at::NoGradGuard ng;
  const auto image = read_f32(ref_dir() / "tensors/image.bin");
  const at::Tensor x = at::from_blob(const_cast<float*>(image.data()), {1, 3, 32, 32}, at::kFloat);
  const at::Tensor tokens = net.vit(x);
  EXPECT_LE(test::max_abs_diff(to_vec(tokens), read_f32(ref_dir() / "tensors/ln_vision_out.bin")), 1e-4);
  const at::Tensor q = net.qformer(tokens);
  EXPECT_LE(test::max_abs_diff(to_vec(q), read_f32(ref_dir() / "tensors/qformer_out.bin")), 1e-4);
  const at::Tensor img = net.encode_image(x);
  EXPECT_LE(test::max_abs_diff(to_vec(img), read_f32(ref_dir() / "tensors/llama_proj_out.bin")), 1e-4);
  const at::Tensor seq = spliced(net, img, ref_ids("prompt_seg0_ids.bin"), ref_ids("prompt_seg1_ids.bin"));
  EXPECT_LE(test::max_abs_diff(to_vec(seq), read_f32(ref_dir() / "tensors/inputs_embeds.bin")), 1e-4);
  const at::Tensor h = net.llm_hidden(seq);
  EXPECT_LE(test::max_abs_diff(to_vec(h), read_f32(ref_dir() / "tensors/llama.final_norm_out.bin")), 1e-4);
  EXPECT_LE(test::max_abs_diff(to_vec(net.lm_head(h)), read_f32(ref_dir() / "tensors/logits.bin")), 1e-4);
}

const Vocab& llama_vocab() {
  static const Vocab v = load_vocab((test::shared_dir() / "tokenizer/tokenizer.model").string());
  return v;
}

// A model of another shape than the reference: GQA, three Q-Former layers
// with cross-attention every second, 5 queries, 3 ViT heads.
train::ModelConfig odd_config() {
  train::ModelConfig c;
  auto& v = c.vision;
  v.image_size = 32; v.patch_size = 8;
  v.vit_width = 48; v.vit_depth = 2; v.vit_heads = 3; v.vit_ffn = 100;
  v.qf_width = 40; v.qf_depth = 3; v.qf_heads = 2; v.qf_ffn = 72; v.qf_cross_freq = 2; v.n_query = 5;
  auto& l = c.llm;
  l.n_vocab = static_cast<int64_t>(llama_vocab().size()); l.dim = 64; l.n_layers = 2; l.n_heads = 4;
  l.n_kv_heads = 2; l.ffn = 96; l.n_ctx_train = 512; l.rope_dim = 16; l.rms_eps = 1e-5f; l.rope_theta = 10000.0f;
  v.llm_dim = l.dim;
  c.parts.vit = c.parts.qformer = c.parts.proj = c.parts.llm = true;
  return c;
}

// Engine (GGUF files) vs libtorch on the same weights: image embeddings,
// every logit of a spliced training sequence, and the engine's answer score
// vs the libtorch negative loss of the same answer.
void expect_engine_matches(const train::Net& net, const std::string& dir, const std::vector<float>& chw,
                           const std::string& question, const std::string& answer) {
  at::NoGradGuard ng;
  auto m = SkinGptModel::load(dir);
  ASSERT_TRUE(m->tokenizer);
  ThreadPool pool(2);
  const auto& vc = m->vision->config();
  const std::vector<float> eng_img = m->vision->encode(chw.data(), pool);
  const at::Tensor x = at::from_blob(const_cast<float*>(chw.data()), {1, 3, vc.image_size, vc.image_size}, at::kFloat);
  const at::Tensor img = net.encode_image(x);
  EXPECT_LE(test::max_abs_diff(eng_img, to_vec(img)), 1e-4) << "image embeddings";

  const train::PromptTokens p =
      train::build_prompt_tokens(*m->tokenizer, ConversationTemplate{}, {}, question, answer, 0);
  const at::Tensor seq = spliced(net, img, p.seg0, p.seg1);
  const at::Tensor logits = net.lm_head(net.llm_hidden(seq)).squeeze(0);
  const int64_t L = seq.size(1), nv = m->llm->config().n_vocab;
  LlamaContext ctx(*m->llm, 256, pool);
  const std::vector<float> flat = to_vec(seq);
  ctx.eval_embeddings(flat.data(), L, true);
  EXPECT_LE(test::max_abs_diff(ctx.logits(), to_vec(logits)), 1e-4) << "logits of " << L << " positions";

  // The training loss's answer tokens are exactly what the engine scores.
  const at::Tensor lp = logits.log_softmax(-1);
  const int64_t off = static_cast<int64_t>(p.seg0.size()) + vc.n_query;
  double nll = 0;
  for (size_t j = p.n_prompt1; j < p.seg1.size(); ++j)
    nll -= lp[off + static_cast<int64_t>(j) - 1][p.seg1[j]].item<double>();
  Conversation conv(*m, pool, 512);
  conv.set_image_embeddings(eng_img);
  const double score = conv.score_answers(question, "", {answer + "###"})[0];
  EXPECT_NEAR(-score, nll, 1e-3 * std::max(1.0, nll));
  (void)nv;
}

// (b) A random model in libtorch → GGUF → engine, equal outputs; and the
// files import back into identical parameters (Q/K un-permuted).
TEST(TrainModel, ExportedRandomModelMatchesEngineAndReimports) {
  train::set_threads(1);
  train::Net net(odd_config());
  net.init(7, /*perturbed=*/true);
  test::TempDir dir;
  const auto written = train::export_model(net, &llama_vocab(), dir.path().string(), DType::F32, QuantScheme{}, "t");
  ASSERT_EQ(written.size(), 2u);
  std::vector<float> chw(3 * 32 * 32);
  for (size_t i = 0; i < chw.size(); ++i) chw[i] = std::sin(0.05f * static_cast<float>(i)) * 1.5f;
  expect_engine_matches(net, dir.path().string(), chw, "What skin disease is shown in this image?",
                        "This could be a skin disease image of melanoma.");

  const train::Source src = train::read_source(dir.path().string());
  ASSERT_TRUE(src.has_vocab);
  EXPECT_EQ(src.vocab.pieces, llama_vocab().pieces);
  train::ModelConfig c = src.config;
  EXPECT_EQ(c.llm.n_kv_heads, 2);
  EXPECT_EQ(c.vision.n_query, 5);
  train::Net back(c);
  EXPECT_EQ(train::load_source_weights(back, src), static_cast<int64_t>(net.names().size()));
  for (size_t i = 0; i < net.names().size(); ++i)
    EXPECT_TRUE(at::equal(net.tensors()[i], back[net.names()[i]])) << net.names()[i];
}

// The agreement loss's diagnosis distributions (--agree): one probe sequence
// carries every English diagnosis's path, and each phrase's log-likelihood is
// exactly the answer loss of its scored tokens run on their own.
TEST(TrainSequences, PhraseLogliksAreEachPhrasesAnswerLoss) {
  train::set_threads(1);
  train::Net net(odd_config());
  net.init(7, /*perturbed=*/true);
  const Tokenizer tok(llama_vocab());
  const ConversationTemplate t;
  const auto& en = clinic::consultation_script(clinic::Language::En);
  const auto phrases = clinic::scoring_phrases(clinic::Catalogue::builtin(), clinic::Language::En);
  const std::string questions[2] = {en.questions[0], en.score_question};
  const std::string starts[2] = {
      "This is a skin disease image with the following medical features: symmetric. " + en.answer_prefix,
      en.answer_prefix};
  std::vector<train::PhraseSet> sets;
  for (int c = 0; c < 2; ++c) sets.push_back(train::phrase_set(tok, t, {}, questions[c], starts[c], phrases));
  const auto& s0 = sets[0];
  EXPECT_EQ(s0.probes.size(), 1u) << "melanocytic nevus and melanoma share their first tokens";
  EXPECT_GT(s0.depth[0], 1u);
  EXPECT_EQ(s0.depth[0], s0.depth[1]);
  for (size_t k = 2; k < phrases.size(); ++k) EXPECT_EQ(s0.depth[k], 1u) << phrases[k];
  // Japanese phrases can be told apart too.
  const auto& ja = clinic::consultation_script(clinic::Language::Ja);
  const auto jset = train::phrase_set(tok, t, {}, ja.questions[0], ja.answer_prefix,
                                      clinic::scoring_phrases(clinic::Catalogue::builtin(), clinic::Language::Ja));
  EXPECT_GE(jset.probes.size(), 1u);
  EXPECT_THROW(train::phrase_set(tok, t, {}, questions[0], starts[0], {"melanoma", "melanoma"}), Error);

  const int64_t S = net.config().vision.image_size, nq = net.config().vision.n_query;
  at::Tensor images = at::sin(at::arange(2 * 3 * S * S, at::kFloat) * 0.05f).reshape({2, 3, S, S}) * 1.5f;
  at::NoGradGuard ng;
  const at::Tensor lp = train::phrase_logliks(net, images, sets, nq);
  ASSERT_EQ(lp.sizes(), (at::IntArrayRef{2, static_cast<int64_t>(phrases.size())}));
  for (int c = 0; c < 2; ++c)
    for (size_t k = 0; k < phrases.size(); ++k) {
      const auto p = train::build_prompt_tokens(tok, t, {}, questions[c], phrases[k],
                                                static_cast<int64_t>(sets[c].depth[k]), starts[c]);
      ASSERT_EQ(p.n_prompt1, sets[c].prompt.n_prompt1) << phrases[k];
      const double loss = train::sequence_loss(net, images.slice(0, c, c + 1), train::make_seq_batch({p}, nq), true)
                              .item<double>();
      EXPECT_NEAR(-loss, lp[c][static_cast<int64_t>(k)].item<double>(), 1e-4 * std::max(1.0, loss)) << phrases[k];
    }
}

// The training sequence is the engine's prompt: same text, same tokens.
TEST(TrainData, TrainingPromptIsTheConversationPrompt) {
  const ConversationTemplate t;
  const std::string q = "Could you describe the skin disease in this image for me?", a = "A brown, symmetric nevus.";
  EXPECT_EQ(conversation_prompt(t, {}, q, true),
            "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide "
            "it to you. Please answer my questions.###Human: <Img><ImageHere></Img> Could you describe the skin "
            "disease in this image for me?###Assistant:");
  const Tokenizer tok(llama_vocab());
  const auto p = train::build_prompt_tokens(tok, t, {}, q, a, 0);
  EXPECT_EQ(p.seg0.front(), tok.bos());
  EXPECT_EQ(p.seg0, tok.encode(t.system + t.sep + t.human + ": <Img>", true));
  const auto prompt1 = tok.encode("</Img> " + q + t.sep + t.assistant + ":", false);
  ASSERT_GE(p.seg1.size(), prompt1.size());
  EXPECT_TRUE(std::equal(prompt1.begin(), prompt1.begin() + p.n_prompt1, p.seg1.begin()));
  // The answer part decodes back to the answer and the closing ###.
  const std::vector<int32_t> ans(p.seg1.begin() + p.n_prompt1, p.seg1.end());
  EXPECT_EQ(tok.decode(ans), "A brown, symmetric nevus.###");
  const auto cut = train::build_prompt_tokens(tok, t, {}, q, a, 3);
  EXPECT_EQ(cut.seg1.size(), cut.n_prompt1 + 3);

  // A given start of the answer is prompt: the same tokens (so the same
  // logits as above), the loss starting where the given text ends.
  const std::string given = "A brown, ";
  const auto g = train::build_prompt_tokens(tok, t, {}, q, "symmetric nevus.", 0, given);
  EXPECT_EQ(g.seg1, p.seg1);
  EXPECT_GT(g.n_prompt1, p.n_prompt1);
  EXPECT_EQ(tok.decode({g.seg1.begin() + g.n_prompt1, g.seg1.end()}), "symmetric nevus.###");

  // A later turn: the earlier turns are prompt, only the last answer is target.
  const Turns history = train::parse_history(R"([["What is this?","A nevus."]])", "test");
  const auto p2 = train::build_prompt_tokens(tok, t, history, q, a, 0);
  EXPECT_EQ(p2.seg0, p.seg0);
  EXPECT_EQ(tok.decode(p2.seg1), "</Img> What is this?###Assistant: A nevus.###Human: " + q + "###Assistant: " + a + "###");
  EXPECT_EQ(tok.decode({p2.seg1.begin() + p2.n_prompt1, p2.seg1.end()}), "A brown, symmetric nevus.###");
  EXPECT_THROW(train::parse_history(R"([["only a question"]])", "test"), Error);
  EXPECT_THROW(train::parse_history("not json", "test"), Error);
}

TEST(TrainData, CsvAugmentAndRandomness) {
  // Training CSVs use the clinic layer's parser: quoted commas, quotes and
  // newlines; errors for ragged rows and open quotes.
  const auto t = clinic::parse_csv("image,text\r\na.jpg,\"x, \"\"y\"\"\nz\"\nb.jpg,w\n\n", "t.csv");
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0][1], "x, \"y\"\nz");
  EXPECT_EQ(t.rows[1][0], "b.jpg");
  EXPECT_EQ(t.lines[1], 4);
  EXPECT_THROW(clinic::parse_csv("a,b\n1\n", "bad.csv"), Error);
  EXPECT_THROW(clinic::parse_csv("a\n\"open\n", "bad.csv"), Error);

  Image img;
  img.width = 40;
  img.height = 30;
  for (int i = 0; i < 40 * 30 * 3; ++i) img.rgb.push_back(static_cast<uint8_t>((i * 37) % 251));
  Image r = img;
  for (int k = 0; k < 4; ++k) r = train::rotate90(r, 1);
  EXPECT_EQ(r.rgb, img.rgb);
  EXPECT_EQ(train::rotate90(img, 1).width, 30);
  EXPECT_EQ(train::rotate90(train::rotate90(img, 1), 3).rgb, img.rgb);
  EXPECT_EQ(train::flip_horizontal(train::flip_horizontal(img)).rgb, img.rgb);
  EXPECT_NE(train::flip_horizontal(img).rgb, img.rgb);
  train::Rng r0(1);
  EXPECT_EQ(train::augment(img, 16, {}, r0).rgb, resize_bicubic(img, 16, 16).rgb) << "no augmentation = eval resize";
  train::AugmentOptions all;
  all.crop = all.hflip = all.vflip = all.rot90 = true;
  all.jitter = 0.3;
  train::Rng a(42), b(42), c(43);
  const Image x = train::augment(img, 16, all, a), y = train::augment(img, 16, all, b), z = train::augment(img, 16, all, c);
  EXPECT_EQ(x.rgb, y.rgb) << "same seed, same augmentation";
  EXPECT_NE(x.rgb, z.rgb);
  EXPECT_EQ(x.width, 16);
  const auto p1 = train::permutation(100, 5), p2 = train::permutation(100, 5);
  EXPECT_EQ(p1, p2);
  std::vector<uint32_t> sorted = p1;
  std::sort(sorted.begin(), sorted.end());
  for (uint32_t i = 0; i < 100; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_NE(train::permutation(100, 6), p1);
}

// Length bucketing keeps every sample once, keeps windows apart, and makes
// batches of similar lengths (the padding a batch pays is max − min).
TEST(TrainData, LengthBucketsArePermutationsOfSimilarLengths) {
  const uint32_t n = 1003;  // not a multiple of the batch: a short last batch
  std::vector<size_t> len(n);
  train::Rng rng(9);
  for (auto& l : len) l = 100 + rng.below(900);
  const auto order = train::permutation(n, 3);
  const auto b = train::bucket_by_length(order, len, 8, 16, 11);
  EXPECT_EQ(b, train::bucket_by_length(order, len, 8, 16, 11)) << "deterministic";
  std::vector<uint32_t> sorted = b;
  std::sort(sorted.begin(), sorted.end());
  for (uint32_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i);
  for (size_t w0 = 0; w0 < n; w0 += 128) {  // each window holds the same samples as before
    const size_t w1 = std::min<size_t>(n, w0 + 128);
    std::vector<uint32_t> x(order.begin() + w0, order.begin() + w1), y(b.begin() + w0, b.begin() + w1);
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    ASSERT_EQ(x, y) << "window at " << w0;
  }
  auto waste = [&](const std::vector<uint32_t>& o) {
    size_t pad = 0;
    for (size_t i = 0; i + 8 <= o.size(); i += 8) {
      size_t mx = 0, mn = SIZE_MAX;
      for (size_t j = i; j < i + 8; ++j) mx = std::max(mx, len[o[j]]), mn = std::min(mn, len[o[j]]);
      pad += mx - mn;
    }
    return pad;
  };
  EXPECT_LT(waste(b) * 5, waste(order)) << "batches of similar length";
  EXPECT_NE(b, train::bucket_by_length(order, len, 8, 16, 12)) << "the batch order is shuffled by the seed";
  EXPECT_THROW(train::bucket_by_length(order, len, 0, 16, 1), Error);
}

// ------------------------------------------------------------------ training runs

const char* kAnswers[][2] = {
    {"nv", "This is a skin disease image with the following medical features: a regular brown network. This could "
           "be a skin disease image of melanocytic nevus."},
    {"mel", "This is a skin disease image with the following medical features: irregular dark blotches and blue-white "
            "veil. This could be a skin disease image of melanoma."},
    {"bkl", "This is a skin disease image with the following medical features: milia-like cysts and a waxy surface. "
            "This could be a skin disease image of benign keratosis."},
    {"bcc", "This is a skin disease image with the following medical features: arborizing vessels and ulceration. "
            "This could be a skin disease image of basal cell carcinoma."},
};

// A handful of HAM10000 training images, two per class, with answers (and labels).
struct SmokeData {
  test::TempDir dir;
  std::string csv = (dir / "data.csv").string();
  std::vector<std::string> images;
  SmokeData() {
    const auto ham = test::shared_dir() / "data/ham10000";
    const auto t = train::read_csv((ham / "labels.csv").string());
    const int ci = t.column("image"), cd = t.column("dx"), cs = t.column("split");
    std::ofstream f(csv);
    f << "image,label,text\n";
    for (const auto& a : kAnswers) {
      int n = 0;
      for (const auto& row : t.rows) {
        if (row[cs] != "ham10000_train" || row[cd] != a[0]) continue;
        const std::string path = (ham / row[ci]).string();
        f << path << "," << a[0] << ",\"" << a[1] << "\"\n";
        images.push_back(path);
        if (++n == 2) break;
      }
    }
  }
};

train::TrainOptions tiny_options(const std::string& stage) {
  train::TrainOptions o;
  o.stage = stage;
  o.threads = 1;  // tiny matrices: a second thread only adds contention on a shared machine
  o.seed = 3;
  o.vision.image_size = 32; o.vision.patch_size = 8;
  o.vision.vit_width = 48; o.vision.vit_depth = 2; o.vision.vit_heads = 3; o.vision.vit_ffn = 96;
  o.vision.qf_width = 32; o.vision.qf_depth = 2; o.vision.qf_heads = 2; o.vision.qf_ffn = 64; o.vision.n_query = 4;
  o.llm.dim = 32; o.llm.n_layers = 2; o.llm.n_heads = 2; o.llm.n_kv_heads = 2; o.llm.ffn = 64; o.llm.rope_dim = 16;
  o.tokenizer = (test::shared_dir() / "tokenizer/tokenizer.model").string();
  o.batch = 4;
  return o;
}

std::unique_ptr<train::Net> load_net(const std::string& path) {
  const train::Source s = train::read_source(path);
  auto net = std::make_unique<train::Net>(s.config);
  train::load_source_weights(*net, s);
  return net;
}

std::vector<float> preprocess_like_engine(const std::string& image, const train::Net& net) {
  const auto& v = net.config().vision;
  return to_normalized_chw(resize_bicubic(decode_image(image), static_cast<int>(v.image_size),
                                          static_cast<int>(v.image_size)),
                           {v.mean[0], v.mean[1], v.mean[2]}, {v.std[0], v.std[1], v.std[2]});
}

// (c) The CI smoke test, projection only, as in the paper, through the CLI:
// the frozen parts come from a model folder (a random model with non-trivial
// weights standing in for pretrained ViT / Q-Former / LLaMA); the validation
// loss (the same images, no augmentation) falls; only llama_proj moves; the
// exported model equals the libtorch model in the engine.
TEST(TrainSmoke, Step2ProjectionOnlyCliLossFallsAndExportMatchesEngine) {
  SmokeData d;
  auto o = tiny_options("step2");
  train::ModelConfig c;
  c.vision = o.vision;
  c.llm = o.llm;
  c.llm.n_vocab = static_cast<int64_t>(llama_vocab().size());
  c.vision.llm_dim = c.llm.dim;
  c.parts.vit = c.parts.qformer = c.parts.proj = c.parts.llm = true;
  train::Net frozen(c);
  frozen.init(11, /*perturbed=*/true);
  const std::string base = (d.dir / "base").string(), out = (d.dir / "run").string(), model = (d.dir / "model").string();
  train::export_model(frozen, &llama_vocab(), base, DType::F32, QuantScheme{}, "base");
  const std::string cmd = std::string(SKINGPT_BINARY) + " train --stage step2 --init " + base + " --data " + d.csv +
                          " --val " + d.csv + " --steps 40 --batch 4 --lr 1e-1 --warmup 3 --seed 3 -t 1 --out " + out +
                          " --export " + model + " --augment hflip,rot90 --log-every 10";
  const auto r = test::run_command(cmd);
  ASSERT_EQ(r.status, 0) << cmd << "\n" << r.output;
  std::smatch m0, m1;
  const std::regex first("eval at step 0: loss ([0-9.]+)"), last("eval at step 40: loss ([0-9.]+)");
  ASSERT_TRUE(std::regex_search(r.output, m0, first)) << r.output;
  ASSERT_TRUE(std::regex_search(r.output, m1, last)) << r.output;
  const double before = std::stod(m0[1]), after = std::stod(m1[1]);
  std::printf("step2, projection only: validation loss %.4f -> %.4f\n", before, after);
  EXPECT_LT(after, before - 0.05) << r.output;
  EXPECT_NE(r.output.find("trainable (proj)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step 40/40"), std::string::npos) << "progress lines: " << r.output;
  // Only llama_proj moved.
  auto net = load_net(out + "/checkpoint.pt");
  for (const auto& n : net->names())
    EXPECT_EQ(at::equal((*net)[n], frozen[n]), n.rfind("llama_proj.", 0) != 0) << n;
  expect_engine_matches(*net, model, preprocess_like_engine(d.images[2], *net), "Could you describe the skin "
                        "disease in this image for me?", kAnswers[1][1]);
}

// (c) Everything trains (in-process, bf16 autocast): the loss falls much
// further; export → engine parity on the result.
TEST(TrainSmoke, Step2AllPartsLossFallsAndExportMatchesEngine) {
  SmokeData d;
  auto o = tiny_options("step2");
  o.data = o.val_data = d.csv;
  o.train_list = "all";
  o.steps = 30;
  o.lr = 1e-2;
  o.warmup = 3;
  o.bf16 = true;
  o.out = (d.dir / "run").string();
  o.export_dir = (d.dir / "model").string();
  const auto r = train::run_training(o);
  ASSERT_EQ(r.evals.size(), 2u);
  std::printf("step2, everything (bf16): validation loss %.4f -> %.4f\n", r.evals.front().loss, r.evals.back().loss);
  EXPECT_LT(r.evals.back().loss, r.evals.front().loss * 0.5)
      << r.evals.front().loss << " -> " << r.evals.back().loss;
  for (double l : r.losses) ASSERT_TRUE(std::isfinite(l));
  auto net = load_net(r.checkpoint);
  expect_engine_matches(*net, o.export_dir, preprocess_like_engine(d.images[5], *net),
                        "Could you describe the skin disease in this image for me?", kAnswers[2][1]);
}

// Stopping and resuming gives exactly the uninterrupted run: same losses,
// bit-identical weights (data order and augmentation come from seed + step;
// the checkpoint holds the AdamW moments).
TEST(TrainSmoke, ResumeRepeatsTheUninterruptedRun) {
  SmokeData d;
  auto o = tiny_options("step2");
  o.data = d.csv;
  o.train_list = "proj,qformer";
  o.steps = 6;
  o.lr = 1e-2;
  o.warmup = 2;
  o.augment.crop = o.augment.hflip = true;
  o.augment.jitter = 0.2;
  o.out = (d.dir / "full").string();
  const auto full = train::run_training(o);
  ASSERT_EQ(full.losses.size(), 6u);
  auto a = o;
  a.out = (d.dir / "a").string();
  a.stop_after = 3;
  const auto first = train::run_training(a);
  ASSERT_EQ(first.losses.size(), 3u);
  auto b = o;
  b.out = a.out;
  b.resume = first.checkpoint;
  const auto second = train::run_training(b);
  ASSERT_EQ(second.losses.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(first.losses[i], full.losses[i]) << "step " << i;
    EXPECT_EQ(second.losses[i], full.losses[3 + i]) << "step " << 3 + i;
  }
  auto x = load_net(full.checkpoint), y = load_net(second.checkpoint);
  for (const auto& n : x->names()) EXPECT_TRUE(at::equal((*x)[n], (*y)[n])) << n;
  // A checkpoint of another stage is refused for --resume.
  auto wrong = o;
  wrong.stage = "step1";
  wrong.resume = second.checkpoint;
  EXPECT_THROW(train::run_training(wrong), Error);
}

// pretrain-vit (labels, temporary head) then step1 initialised from it: the
// ViT arrives unchanged in the exported vision.gguf; the head does not.
TEST(TrainSmoke, PretrainVitFeedsStep1) {
  SmokeData d;
  auto o = tiny_options("pretrain-vit");
  o.data = o.val_data = d.csv;
  o.steps = 25;
  o.lr = 2e-3;
  o.warmup = 2;
  o.out = (d.dir / "vit").string();
  const auto r = train::run_training(o);
  ASSERT_EQ(r.evals.size(), 2u);
  std::printf("pretrain-vit: loss %.4f -> %.4f, balanced accuracy %.3f\n", r.evals.front().loss, r.evals.back().loss,
              r.evals.back().balanced_accuracy);
  EXPECT_LT(r.evals.back().loss, r.evals.front().loss * 0.8);
  EXPECT_GE(r.evals.back().balanced_accuracy, 0.5);
  auto s1 = tiny_options("step1");
  s1.data = d.csv;
  s1.init = {r.checkpoint};
  s1.steps = 0;
  s1.export_dir = (d.dir / "model").string();
  train::run_training(s1);
  const auto vit = train::read_source(r.checkpoint);
  const auto model = load_net(s1.export_dir);
  int64_t compared = 0;
  for (size_t i = 0; i < vit.names.size(); ++i) {
    if (vit.names[i].rfind("cls_head.", 0) == 0) {
      EXPECT_FALSE(model->has(vit.names[i]));
      continue;
    }
    EXPECT_TRUE(at::equal(vit.tensors[i], (*model)[vit.names[i]])) << vit.names[i];
    ++compared;
  }
  EXPECT_GT(compared, 20);
}

// pretrain-llm on text: the loss falls; the exported llm.gguf alone runs in the engine.
TEST(TrainSmoke, PretrainLlmOnText) {
  test::TempDir dir;
  const std::string text = (dir / "text.txt").string();
  {
    std::ofstream f(text);
    for (int i = 0; i < 40; ++i)
      f << "A melanocytic nevus is a benign proliferation of melanocytes. Melanoma is a malignant tumour of "
           "melanocytes and must be excised early.\n";
  }
  auto o = tiny_options("pretrain-llm");
  o.text_file = text;
  o.seq_len = 32;
  o.steps = 25;
  o.lr = 1e-2;
  o.warmup = 2;
  o.export_dir = (dir / "model").string();
  const auto r = train::run_training(o);
  ASSERT_EQ(r.losses.size(), 25u);
  std::printf("pretrain-llm: loss %.4f -> %.4f\n", r.losses.front(), r.losses.back());
  EXPECT_LT(r.losses.back(), r.losses.front() * 0.5) << r.losses.front() << " -> " << r.losses.back();
  ASSERT_EQ(r.exported.size(), 1u);
  auto llm = LlamaModel::load(r.exported[0]);
  EXPECT_EQ(llm->config().dim, 32);
}

// --split: the lesion-level hold-out evaluation and calibration use.
TEST(TrainData, DerivedSplitsHoldOutWholeLesions) {
  test::TempDir d;
  std::ofstream f(d.path() / "t.csv");
  f << "image,label,split,lesion_id\n";
  int n_val = 0;
  for (int i = 0; i < 200; ++i) {
    const std::string lesion = "L" + std::to_string(i / 2);  // two images per lesion
    n_val += clinic::is_validation_lesion(lesion);
    f << "img" << i << ".jpg,a,p_train," << lesion << "\n";
  }
  f << "t.jpg,a,p_test,\n";
  f.close();
  train::DataSpec spec;
  spec.csv = (d.path() / "t.csv").string();
  spec.need_label = true;
  spec.split = "p_fit";
  const auto fit = train::load_dataset(spec);
  spec.split = "p_val";
  const auto val = train::load_dataset(spec);
  EXPECT_GT(n_val, 0);
  EXPECT_EQ(static_cast<int>(val.samples.size()), n_val);
  EXPECT_EQ(fit.samples.size() + val.samples.size(), 200u);
  std::set<std::string> fit_images;
  for (const auto& s : fit.samples) fit_images.insert(s.image);
  for (const auto& s : val.samples) EXPECT_EQ(fit_images.count(s.image), 0u) << s.image;
  spec.split = "p_test";
  EXPECT_EQ(train::load_dataset(spec).samples.size(), 1u);
  spec.split = "q_val";
  EXPECT_THROW(train::load_dataset(spec), Error);
}

}  // namespace
}  // namespace sg
#endif  // SKINGPT_HAVE_TORCH
