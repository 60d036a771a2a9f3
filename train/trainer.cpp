// The training loop of `skingpt train` (train/train.h) on libtorch.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "clinic/catalogue.h"
#include "clinic/consultation.h"
#include "core/error.h"
#include "formats/preprocess.h"
#include "text/tokenizer.h"
#include "train/io.h"
#include "train/model.h"
#include "train/sequences.h"
#include "train/train.h"

extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace sg::train {

using json = nlohmann::json;

VisionConfig TrainOptions::default_vision() {
  VisionConfig v;
  v.image_size = 64; v.patch_size = 8;
  v.vit_width = 192; v.vit_depth = 6; v.vit_heads = 3; v.vit_ffn = 768;
  v.qf_width = 192; v.qf_depth = 2; v.qf_heads = 3; v.qf_ffn = 768; v.qf_cross_freq = 1; v.n_query = 16;
  v.llm_dim = 256;
  return v;
}

LlamaConfig TrainOptions::default_llm() {
  LlamaConfig l;
  l.n_vocab = 0; l.dim = 256; l.n_layers = 4; l.n_heads = 4; l.n_kv_heads = 4; l.ffn = 704;
  l.n_ctx_train = 2048; l.rope_dim = 64; l.rms_eps = 1e-5f; l.rope_theta = 10000.0f;
  return l;
}

void set_threads(int64_t n, int64_t blas) {
  if (n <= 0) n = std::max<int64_t>(1, std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(n));
  static std::once_flag once;
  std::call_once(once, [n] {
    try {
      at::set_num_interop_threads(static_cast<int>(n));
    } catch (const std::exception&) {
      // Already fixed by earlier parallel work in this process: harmless.
    }
  });
  if (openblas_set_num_threads) openblas_set_num_threads(static_cast<int>(blas > 0 ? blas : n));
}

namespace {

using clock_type = std::chrono::steady_clock;

// ------------------------------------------------------------------ stages

enum class Stage { PretrainVit, PretrainLlm, Step1, Step2 };

Stage parse_stage(const std::string& s) {
  if (s == "pretrain-vit") return Stage::PretrainVit;
  if (s == "pretrain-llm") return Stage::PretrainLlm;
  if (s == "step1") return Stage::Step1;
  if (s == "step2") return Stage::Step2;
  throw Error("train: --stage must be pretrain-vit, pretrain-llm, step1 or step2 (got '" + s + "')");
}

bool is_alignment(Stage s) { return s == Stage::Step1 || s == Stage::Step2; }

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ','))
    if (!x.empty()) out.push_back(x);
  return out;
}

std::vector<std::string> default_trainable(Stage s) {
  switch (s) {
    case Stage::PretrainVit: return {"vit", "ln_vision", "head"};
    case Stage::PretrainLlm: return {"llm"};
    default: return {"proj"};  // SkinGPT-4: only llama_proj trains in both steps
  }
}

// ------------------------------------------------------------------ autocast

struct Autocast {
  bool on, cuda;
  Autocast(bool enable, bool is_cuda) : on(enable), cuda(is_cuda) {
    if (!on) return;
    if (cuda) {
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(true);
    } else {
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
  }
  ~Autocast() {
    if (!on) return;
    if (cuda) at::autocast::set_enabled(false);
    else at::autocast::set_cpu_enabled(false);
    at::autocast::clear_cache();
  }
};

// ------------------------------------------------------------------ sources

ModelConfig merge_sources(ModelConfig cfg, const std::vector<Source>& sources, Vocab* vocab, bool* have_vocab,
                          std::vector<std::string>* classes) {
  for (const auto& s : sources) {
    const ModelConfig& c = s.config;
    if (c.parts.vit) {
      auto& v = cfg.vision;
      const auto& w = c.vision;
      v.image_size = w.image_size; v.patch_size = w.patch_size; v.vit_width = w.vit_width;
      v.vit_depth = w.vit_depth; v.vit_heads = w.vit_heads; v.vit_ffn = w.vit_ffn; v.vit_eps = w.vit_eps;
      v.ln_vision_eps = w.ln_vision_eps;
      std::copy(w.mean, w.mean + 3, v.mean);
      std::copy(w.std, w.std + 3, v.std);
    }
    if (c.parts.qformer) {
      auto& v = cfg.vision;
      const auto& w = c.vision;
      v.qf_width = w.qf_width; v.qf_depth = w.qf_depth; v.qf_heads = w.qf_heads; v.qf_ffn = w.qf_ffn;
      v.qf_cross_freq = w.qf_cross_freq; v.n_query = w.n_query; v.qf_eps = w.qf_eps;
    }
    if (c.parts.llm) cfg.llm = c.llm;
    if (s.has_vocab) {
      *vocab = s.vocab;
      *have_vocab = true;
    }
    if (!s.classes.empty()) *classes = s.classes;
  }
  return cfg;
}

// ------------------------------------------------------------------ batches

at::Tensor images_to_tensor(const std::vector<std::vector<float>>& chw, int64_t size) {
  at::Tensor t = at::empty({static_cast<int64_t>(chw.size()), 3, size, size}, at::kFloat);
  float* d = t.data_ptr<float>();
  for (size_t i = 0; i < chw.size(); ++i) std::memcpy(d + i * 3 * size * size, chw[i].data(), chw[i].size() * 4);
  return t;
}

double lr_at(const TrainOptions& o, int64_t step, int64_t total) {
  if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const double span = static_cast<double>(std::max<int64_t>(1, total - o.warmup));
  const double t = std::min(1.0, static_cast<double>(step - o.warmup) / span);
  return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + std::cos(M_PI * t));
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open");
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

}  // namespace

// ------------------------------------------------------------------ the run

TrainResult run_training(const TrainOptions& o, const TrainCallbacks& cb) {
  auto log = [&](const std::string& s) {
    if (cb.log) cb.log(s);
  };
  const Stage stage = parse_stage(o.stage);
  const auto t_start = clock_type::now();
  set_threads(o.threads, o.blas_threads);

  // Device.
  at::Device device(at::kCPU);
  if (o.device != "cpu") {
    if (o.device.rfind("cuda", 0) != 0) throw Error("train: --device must be cpu, cuda or cuda:N");
    if (!torch::cuda::is_available())
      throw Error("train: --device " + o.device + " but this libtorch has no usable CUDA (Debian's libtorch-dev is "
                  "CPU-only; see docs/training.md)");
    device = at::Device(o.device);
  }
  const bool cuda = device.is_cuda();

  // Sources: --resume is the whole truth about the model; else --init in order.
  std::vector<Source> sources;
  Source resume_src;
  bool resuming = !o.resume.empty();
  if (resuming) {
    resume_src = read_source(o.resume, device);
    if (!resume_src.is_checkpoint) throw Error(o.resume + ": --resume needs a training checkpoint (checkpoint.pt)");
    if (resume_src.stage != o.stage)
      throw Error(o.resume + ": the checkpoint is from stage " + resume_src.stage + ", not " + o.stage);
    if (resume_src.slim)
      for (const auto& p : resume_src.init) sources.push_back(read_source(p, device));
    if (!o.init.empty() && !resume_src.slim) log("--init ignored: --resume " + o.resume + " holds every weight");
  } else {
    for (const auto& p : o.init) sources.push_back(read_source(p, device));
  }

  // Configuration.
  ModelConfig cfg;
  cfg.vision = o.vision;
  cfg.llm = o.llm;
  Vocab vocab;
  bool have_vocab = false;
  std::vector<std::string> classes;
  if (resuming) {
    cfg = resume_src.config;
    have_vocab = resume_src.has_vocab;
    vocab = resume_src.vocab;
    classes = resume_src.classes;
  } else {
    cfg = merge_sources(cfg, sources, &vocab, &have_vocab, &classes);
    cfg.parts = Parts{};
    cfg.parts.vit = true;
    cfg.parts.qformer = cfg.parts.proj = is_alignment(stage);
    cfg.parts.llm = stage != Stage::PretrainVit;
    if (stage == Stage::PretrainLlm) cfg.parts.vit = false;
  }
  if (!o.tokenizer.empty() && !resuming) {
    Vocab v = load_vocab(o.tokenizer);
    if (have_vocab && v.size() != vocab.size())
      throw Error(o.tokenizer + ": has " + std::to_string(v.size()) + " pieces but the initial LLM's vocabulary has " +
                  std::to_string(vocab.size()));
    vocab = std::move(v);
    have_vocab = true;
  }
  const bool llm_from_source = std::any_of(sources.begin(), sources.end(), [](const Source& s) { return s.config.parts.llm; });
  if (cfg.parts.llm) {
    if (!have_vocab) throw Error("train: an LLM needs a tokenizer: give --tokenizer tokenizer.model (or --init a model with one)");
    if (!resuming && !llm_from_source) cfg.llm.n_vocab = static_cast<int64_t>(vocab.size());
    if (cfg.llm.n_vocab != static_cast<int64_t>(vocab.size()))
      throw Error("train: the tokenizer has " + std::to_string(vocab.size()) + " pieces but the LLM's vocabulary is " +
                  std::to_string(cfg.llm.n_vocab));
    cfg.vision.llm_dim = cfg.llm.dim;
  }
  std::unique_ptr<Tokenizer> tok;
  if (have_vocab) tok = std::make_unique<Tokenizer>(vocab);

  // Data.
  Dataset train_set, val_set;
  std::vector<std::vector<int32_t>> text_chunks;  // pretrain-llm
  DataSpec spec;
  spec.image_column = o.image_column;
  spec.text_column = o.text_column;
  spec.label_column = o.label_column;
  spec.question_column = o.question_column;
  spec.where = parse_where(o.where);
  if (stage == Stage::PretrainLlm) {
    if (o.text_file.empty()) throw Error("train: pretrain-llm needs --text FILE");
    std::vector<int32_t> stream;
    for (const auto& line : read_lines(o.text_file)) {
      auto ids = tok->encode(line, true);
      stream.insert(stream.end(), ids.begin(), ids.end());
      if (tok->eos() >= 0) stream.push_back(tok->eos());
    }
    const int64_t L = o.seq_len;
    if (L < 2) throw Error("train: --seq-len must be >= 2");
    for (size_t at = 0; at + static_cast<size_t>(L) + 1 <= stream.size(); at += static_cast<size_t>(L))
      text_chunks.emplace_back(stream.begin() + at, stream.begin() + at + L + 1);
    if (text_chunks.empty())
      throw Error(o.text_file + ": fewer than --seq-len + 1 = " + std::to_string(L + 1) + " tokens of text");
  } else {
    if (o.data.empty()) throw Error("train: " + o.stage + " needs --data CSV");
    spec.csv = o.data;
    spec.need_label = stage == Stage::PretrainVit;
    spec.need_text = is_alignment(stage);
    spec.classes = classes;
    spec.split = o.split;
    train_set = load_dataset(spec);
    if (stage == Stage::PretrainVit) {
      classes = train_set.classes;
      if (classes.size() < 2) throw Error(o.data + ": pretrain-vit needs at least two classes");
      if (!resuming) cfg.parts.head_classes = static_cast<int64_t>(classes.size());
    }
    if (!o.val_data.empty()) {
      DataSpec vs = spec;
      vs.csv = o.val_data;
      vs.classes = classes;
      vs.split = o.val_split;
      val_set = load_dataset(vs);
    }
  }
  std::vector<std::string> questions = {o.question};
  if (!o.questions_file.empty()) questions = read_lines(o.questions_file);
  if (questions.empty()) throw Error(o.questions_file + ": no questions");

  // Model.
  Net net(cfg, device);
  net.init(o.seed);
  for (const auto& s : sources) {
    const int64_t n = load_source_weights(net, s);
    log("init: " + std::to_string(n) + " tensors from " + s.path);
  }
  auto matches = [](const std::string& name, const std::string& item) {
    return item == "all" || param_group(name) == item || name.rfind(item, 0) == 0;
  };
  const std::vector<std::string> reinit = split_list(o.reinit_list);
  if (!reinit.empty() && !resuming) {
    net.init(o.seed, false, [&](const std::string& n) {
      return std::any_of(reinit.begin(), reinit.end(), [&](const auto& it) { return matches(n, it); });
    });
    log("re-initialised: " + o.reinit_list);
  }
  if (resuming) load_source_weights(net, resume_src);

  // What trains.
  std::vector<std::string> items = split_list(o.train_list);
  if (items.empty()) items = default_trainable(stage);
  const std::vector<std::string> frozen = split_list(o.freeze_list);
  for (const auto& list : {items, frozen, reinit})
    for (const auto& it : list)
      if (std::none_of(net.names().begin(), net.names().end(), [&](const std::string& n) { return matches(n, it); }))
        throw Error("train: '" + it + "' names no parameter of this " + o.stage +
                    " model (groups: vit ln_vision qformer proj llm head all, or a name prefix)");
  std::vector<at::Tensor> decay, no_decay;
  std::vector<std::string> trainable;
  int64_t n_trainable = 0;
  for (size_t i = 0; i < net.names().size(); ++i) {
    const std::string& n = net.names()[i];
    const bool on = std::any_of(items.begin(), items.end(), [&](const auto& it) { return matches(n, it); }) &&
                    std::none_of(frozen.begin(), frozen.end(), [&](const auto& it) { return matches(n, it); });
    at::Tensor t = net.tensors()[i];
    t.set_requires_grad(on);
    if (!on) continue;
    trainable.push_back(n);
    n_trainable += t.numel();
    const bool nd = t.dim() < 2 || n.find("pos_embed") != std::string::npos ||
                    n.find("cls_token") != std::string::npos || n == "query_tokens";
    (nd ? no_decay : decay).push_back(t);
  }
  if (trainable.empty()) throw Error("train: nothing to train (everything is frozen)");

  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto opts = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.adam_eps).weight_decay(wd));
  };
  groups.emplace_back(decay, opts(o.weight_decay));
  groups.emplace_back(no_decay, opts(0.0));
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(o.lr));
  int64_t start_step = 0;
  if (resuming) {
    if (resume_src.has_optimizer) opt.load(*resume_src.optimizer);
    start_step = resume_src.step;
  }

  // Steps.
  const int64_t n_items = stage == Stage::PretrainLlm ? static_cast<int64_t>(text_chunks.size())
                                                      : static_cast<int64_t>(train_set.samples.size());
  if (o.batch < 1) throw Error("train: --batch must be >= 1");
  int64_t total = o.steps;
  if (total == 0 && o.epochs > 0) total = (o.epochs * n_items + o.batch - 1) / o.batch;
  if (start_step > total)
    throw Error(o.resume + ": the checkpoint is at step " + std::to_string(start_step) + ", past the run's " +
                std::to_string(total) + " steps");

  // Images.
  const int size = static_cast<int>(cfg.vision.image_size);
  const int cache_size = o.augment.crop ? 2 * size : size;
  std::unique_ptr<ImageStore> store, val_store;
  auto paths = [](const Dataset& d) {
    std::vector<std::string> p;
    for (const auto& s : d.samples) p.push_back(s.image);
    return p;
  };
  const size_t cache_bytes = static_cast<size_t>(std::max<int64_t>(0, o.cache_mb)) << 20;
  if (stage != Stage::PretrainLlm) {
    store = std::make_unique<ImageStore>(paths(train_set), cache_size, cache_bytes);
    if (!val_set.samples.empty()) val_store = std::make_unique<ImageStore>(paths(val_set), size, cache_bytes / 4);
  }
  const std::array<float, 3> mean = {cfg.vision.mean[0], cfg.vision.mean[1], cfg.vision.mean[2]};
  const std::array<float, 3> stdv = {cfg.vision.std[0], cfg.vision.std[1], cfg.vision.std[2]};
  std::vector<double> log_prior;
  if (stage == Stage::PretrainVit && o.logit_adjust) {
    std::vector<double> count(classes.size(), 1.0);  // +1: no log(0)
    for (const auto& s : train_set.samples) count[s.label] += 1;
    for (double c : count) log_prior.push_back(std::log(c / static_cast<double>(train_set.samples.size() + classes.size())));
  }
  const ConversationTemplate tpl;

  log("stage " + o.stage + ": " + std::to_string(net.numel()) + " parameters, " + std::to_string(n_trainable) +
      " trainable (" + [&] {
        std::set<std::string> g;
        for (const auto& n : trainable) g.insert(param_group(n));
        std::string s;
        for (const auto& x : g) s += (s.empty() ? "" : " ") + x;
        return s;
      }() + "); " + std::to_string(n_items) + (stage == Stage::PretrainLlm ? " sequences" : " samples") + ", " +
      std::to_string(total) + " steps of " + std::to_string(o.batch) + " on " + device.str() + ", " +
      std::to_string(at::get_num_threads()) + " threads" + (o.bf16 ? ", bf16 autocast" : ", fp32"));
  if (resuming) log("resuming at step " + std::to_string(start_step) + " from " + o.resume);

  // Sequence lengths for --bucket, estimated from the text: LLaMA's tokenizer
  // gives ~1 token per 4 ASCII bytes and ~1 per 2 bytes of CJK, so non-ASCII
  // bytes count double. Close enough to sort by.
  std::vector<size_t> lengths;
  if (o.bucket < 0) throw Error("train: --bucket must be >= 0");
  if (o.bucket > 0 && is_alignment(stage)) {
    auto weight = [](const std::string& t) {
      size_t n = t.size();
      for (unsigned char c : t) n += c >= 0x80;
      return n;
    };
    for (const auto& s : train_set.samples) {
      size_t n = weight(s.question) + weight(s.given) + weight(s.text);
      for (const auto& [q, a] : s.history) n += weight(q) + weight(a);
      lengths.push_back(n);
    }
  }
  // One sample position (step·B + j) → dataset index, by per-epoch permutations.
  std::map<int64_t, std::vector<uint32_t>> perms;
  auto index_of = [&](int64_t pos) {
    const int64_t epoch = pos / n_items;
    auto it = perms.find(epoch);
    if (it == perms.end()) {
      if (perms.size() > 2) perms.erase(perms.begin());
      auto order = permutation(static_cast<uint32_t>(n_items), mix_seed(o.seed, 0x5eed, epoch));
      if (!lengths.empty()) order = bucket_by_length(std::move(order), lengths, o.batch, o.bucket, mix_seed(o.seed, 0xb0c4e7, epoch));
      it = perms.emplace(epoch, std::move(order)).first;
    }
    return static_cast<int64_t>(it->second[static_cast<size_t>(pos % n_items)]);
  };
  auto image_chw = [&](ImageStore& st, int64_t idx, bool aug, uint64_t rng_seed) {
    Rng rng(rng_seed);
    const Image img = aug ? augment(st.get(static_cast<size_t>(idx)), size, o.augment, rng)
                          : augment(st.get(static_cast<size_t>(idx)), size, AugmentOptions{}, rng);
    return to_normalized_chw(img, mean, stdv);
  };

  // Loss of one batch (training or evaluation).
  auto vit_loss = [&](const at::Tensor& images, const at::Tensor& labels, at::Tensor* logits_out) {
    at::Tensor logits = net.class_logits(images.to(device)).to(at::kFloat);
    if (logits_out) *logits_out = logits;
    if (!log_prior.empty())
      logits = logits + at::tensor(std::vector<float>(log_prior.begin(), log_prior.end())).to(device);
    return at::cross_entropy_loss(logits, labels.to(device), {}, at::Reduction::Mean, -100, o.label_smoothing);
  };
  auto prompts_for = [&](const Sample& s, Rng& rng) {
    const std::string& q = !s.question.empty() ? s.question : questions[rng.below(questions.size())];
    return build_prompt_tokens(*tok, tpl, s.history, q, s.text, o.max_text_tokens, s.given);
  };

  // --agree: a row whose answer reaches the consultation's diagnosis prefix
  // ("This could be a skin disease image of ") after its own question gives
  // two phrase distributions over the catalogue: after that answer start
  // (the student) and after the scoring question (the teacher, no gradient:
  // what describe's differential shows). Their KL divergence is the loss.
  std::vector<std::string> agree_phrases[2];
  if (!(o.agree >= 0) || o.agree > 100) throw Error("train: --agree must be a weight in 0..100");
  if (o.agree > 0) {
    if (stage != Stage::Step2) throw Error("train: --agree is for --stage step2");
    const clinic::Catalogue cat = clinic::Catalogue::builtin();
    for (auto lang : {clinic::Language::En, clinic::Language::Ja})
      agree_phrases[lang == clinic::Language::Ja] = clinic::scoring_phrases(cat, lang);
  }
  auto agreement_sets = [&](const Sample& s, const std::string& question) -> std::optional<std::pair<PhraseSet, PhraseSet>> {
    const std::string answer = s.given + s.text;
    for (auto lang : {clinic::Language::En, clinic::Language::Ja}) {
      const auto& script = clinic::consultation_script(lang);
      const size_t at = answer.find(script.answer_prefix);
      if (at == std::string::npos || question == script.score_question) continue;
      const auto& ph = agree_phrases[lang == clinic::Language::Ja];
      return std::make_pair(
          phrase_set(*tok, tpl, s.history, question, answer.substr(0, at + script.answer_prefix.size()), ph),
          phrase_set(*tok, tpl, {}, script.score_question, script.answer_prefix, ph));
    }
    return std::nullopt;
  };
  // KL(teacher || student) per row [n] for rows `js` of a batch of images.
  auto agreement_kl = [&](const at::Tensor& images, const std::vector<int64_t>& js,
                          const std::vector<PhraseSet>& student, const std::vector<PhraseSet>& teacher,
                          at::Tensor* agree_out) {
    const at::Tensor imgs = images.index_select(0, at::tensor(js));
    at::Tensor t;
    {
      at::NoGradGuard ng;
      t = phrase_logliks(net, imgs, teacher, cfg.vision.n_query).log_softmax(1);
    }
    const at::Tensor st = phrase_logliks(net, imgs, student, cfg.vision.n_query).log_softmax(1);
    if (agree_out) *agree_out = t.argmax(1).eq(st.argmax(1));
    return (t.exp() * (t - st)).sum(1);
  };

  TrainResult result;
  auto evaluate = [&](int64_t step) {
    if (val_set.samples.empty()) return;
    at::NoGradGuard ng;
    Autocast ac(o.bf16, cuda);
    const int64_t n = static_cast<int64_t>(val_set.samples.size());
    double loss_sum = 0, agree_kl_sum = 0;
    int64_t weight = 0, agree_same = 0, agree_n = 0;
    std::vector<int64_t> correct(classes.size(), 0), seen(classes.size(), 0);
    for (int64_t b0 = 0; b0 < n; b0 += o.batch) {
      const int64_t b1 = std::min(n, b0 + o.batch);
      std::vector<std::vector<float>> chw;
      for (int64_t i = b0; i < b1; ++i) chw.push_back(image_chw(*val_store, i, false, 0));
      const at::Tensor images = images_to_tensor(chw, size);
      if (stage == Stage::PretrainVit) {
        std::vector<int64_t> lab;
        for (int64_t i = b0; i < b1; ++i) lab.push_back(val_set.samples[i].label);
        at::Tensor logits;
        const at::Tensor l = vit_loss(images, at::tensor(lab), &logits);
        loss_sum += l.item<double>() * static_cast<double>(b1 - b0);
        weight += b1 - b0;
        const at::Tensor pred = logits.argmax(1).to(at::kCPU);
        for (int64_t i = b0; i < b1; ++i) {
          ++seen[lab[i - b0]];
          if (pred[i - b0].item<int64_t>() == lab[i - b0]) ++correct[lab[i - b0]];
        }
      } else {
        std::vector<PromptTokens> p;
        Rng rng(mix_seed(o.seed, 0xe7a1, b0));
        for (int64_t i = b0; i < b1; ++i) {
          Sample s = val_set.samples[i];
          if (s.question.empty()) s.question = questions[0];
          p.push_back(prompts_for(s, rng));
        }
        const SeqBatch sb = make_seq_batch(p, cfg.vision.n_query);
        loss_sum += sequence_loss(net, images, sb, true).item<double>();
        weight += sb.n_targets;
        if (o.agree > 0) {
          std::vector<int64_t> js;
          std::vector<PhraseSet> st, te;
          for (int64_t i = b0; i < b1; ++i) {
            const Sample& s = val_set.samples[static_cast<size_t>(i)];
            if (auto sets = agreement_sets(s, s.question.empty() ? questions[0] : s.question)) {
              js.push_back(i - b0);
              st.push_back(std::move(sets->first));
              te.push_back(std::move(sets->second));
            }
          }
          if (!js.empty()) {
            at::Tensor same;
            agree_kl_sum += agreement_kl(images, js, st, te, &same).sum().item<double>();
            agree_same += same.sum().item<int64_t>();
            agree_n += static_cast<int64_t>(js.size());
          }
        }
      }
    }
    EvalReport r;
    r.step = step;
    r.loss = loss_sum / static_cast<double>(std::max<int64_t>(1, weight));
    std::string extra;
    if (stage == Stage::PretrainVit) {
      int64_t c = 0, k = 0;
      double recall = 0;
      for (size_t i = 0; i < classes.size(); ++i) {
        c += correct[i];
        if (seen[i]) {
          recall += static_cast<double>(correct[i]) / static_cast<double>(seen[i]);
          ++k;
        }
      }
      r.accuracy = static_cast<double>(c) / static_cast<double>(n);
      r.balanced_accuracy = k ? recall / static_cast<double>(k) : 0;
      char b[96];
      std::snprintf(b, sizeof b, ", accuracy %.4f, balanced accuracy %.4f", r.accuracy, r.balanced_accuracy);
      extra = b;
    }
    if (agree_n > 0) {
      char b[160];
      std::snprintf(b, sizeof b, ", answers and scores name the same diagnosis in %.1f%% of %lld (KL %.4f)",
                    100.0 * static_cast<double>(agree_same) / static_cast<double>(agree_n),
                    static_cast<long long>(agree_n), agree_kl_sum / static_cast<double>(agree_n));
      extra += b;
    }
    char b[64];
    std::snprintf(b, sizeof b, "%.4f", r.loss);
    log("eval at step " + std::to_string(step) + ": loss " + b + extra + " (" + std::to_string(n) + " samples)");
    result.evals.push_back(r);
  };

  auto save = [&](int64_t step) {
    if (o.out.empty()) return;
    std::filesystem::create_directories(o.out);
    CheckpointMeta m;
    m.stage = o.stage;
    m.step = step;
    m.seed = o.seed;
    m.config = cfg;
    m.classes = classes;
    m.init = resuming ? resume_src.init : o.init;
    m.slim = o.slim_checkpoints;
    m.trainable = trainable;
    const std::string path = (std::filesystem::path(o.out) / "checkpoint.pt").string();
    write_checkpoint(path, m, net, have_vocab ? &vocab : nullptr, &opt);
    result.checkpoint = path;
  };

  // The loop.
  if (start_step == 0) evaluate(0);
  const int64_t end_step = o.stop_after > 0 ? std::min(total, start_step + o.stop_after) : total;
  const auto t_loop = clock_type::now();
  int64_t items_done = 0;
  for (int64_t step = start_step; step < end_step; ++step) {
    const auto t0 = clock_type::now();
    const double lr = lr_at(o, step, total);
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    at::Tensor loss;
    {
      Autocast ac(o.bf16, cuda);
      if (stage == Stage::PretrainLlm) {
        at::Tensor ids = at::empty({o.batch, o.seq_len + 1}, at::kLong);
        auto a = ids.accessor<int64_t, 2>();
        for (int64_t j = 0; j < o.batch; ++j) {
          const auto& ch = text_chunks[static_cast<size_t>(index_of(step * o.batch + j))];
          for (int64_t t = 0; t <= o.seq_len; ++t) a[j][t] = ch[static_cast<size_t>(t)];
        }
        ids = ids.to(device);
        const at::Tensor h = net.llm_hidden(net.embed(ids.slice(1, 0, o.seq_len)));
        const at::Tensor logits = net.lm_head(h).to(at::kFloat);
        loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), ids.slice(1, 1).reshape({-1}));
      } else {
        std::vector<std::vector<float>> chw;
        std::vector<int64_t> labels;
        std::vector<PromptTokens> prompts;
        std::vector<int64_t> agree_rows;
        std::vector<PhraseSet> agree_student, agree_teacher;
        for (int64_t j = 0; j < o.batch; ++j) {
          const int64_t pos = step * o.batch + j, idx = index_of(pos);
          const Sample& s = train_set.samples[static_cast<size_t>(idx)];
          chw.push_back(image_chw(*store, idx, o.augment.any(), mix_seed(o.seed, 0xa06, pos)));
          if (stage == Stage::PretrainVit) {
            labels.push_back(s.label);
          } else {
            Rng rng(mix_seed(o.seed, 0x9e57, pos));
            prompts.push_back(prompts_for(s, rng));
            if (o.agree > 0)
              if (auto sets = agreement_sets(s, s.question.empty() ? questions[0] : s.question)) {
                agree_rows.push_back(j);
                agree_student.push_back(std::move(sets->first));
                agree_teacher.push_back(std::move(sets->second));
              }
          }
        }
        const at::Tensor images = images_to_tensor(chw, size);
        if (stage == Stage::PretrainVit) loss = vit_loss(images, at::tensor(labels), nullptr);
        else loss = sequence_loss(net, images, make_seq_batch(prompts, cfg.vision.n_query));
        if (o.agree > 0 && !agree_rows.empty())
          loss = loss + o.agree * agreement_kl(images, agree_rows, agree_student, agree_teacher, nullptr).mean();
      }
    }
    opt.zero_grad();
    loss.backward();
    if (o.clip > 0) {
      at::NoGradGuard ng;
      std::vector<at::Tensor> norms;
      for (const auto& g : opt.param_groups())
        for (const auto& p : g.params())
          if (p.grad().defined()) norms.push_back(p.grad().norm().pow(2));
      if (!norms.empty()) {
        const double total_norm = std::sqrt(at::stack(norms).sum().item<double>());
        if (total_norm > o.clip)
          for (const auto& g : opt.param_groups())
            for (const auto& p : g.params())
              if (p.grad().defined()) p.grad().mul_(o.clip / (total_norm + 1e-6));
      }
    }
    opt.step();
    const double lv = loss.item<double>();
    if (!std::isfinite(lv))
      throw Error("train: the loss is " + std::to_string(lv) + " at step " + std::to_string(step + 1) +
                  " (try a lower --lr, --warmup or --clip 1)");
    result.losses.push_back(lv);
    items_done += o.batch;
    const double dt = std::chrono::duration<double>(clock_type::now() - t0).count();
    if (cb.step) {
      StepReport r;
      r.step = step + 1;
      r.total = total;
      r.loss = lv;
      r.lr = lr;
      r.items_per_s = static_cast<double>(o.batch) / dt;
      r.elapsed_s = std::chrono::duration<double>(clock_type::now() - t_loop).count();
      cb.step(r);
    }
    if (o.eval_every > 0 && (step + 1) % o.eval_every == 0 && step + 1 < end_step) evaluate(step + 1);
    if (o.save_every > 0 && (step + 1) % o.save_every == 0 && step + 1 < end_step) save(step + 1);
  }
  const double loop_s = std::chrono::duration<double>(clock_type::now() - t_loop).count();
  result.steps = end_step - start_step;
  result.items_per_s = loop_s > 0 ? static_cast<double>(items_done) / loop_s : 0;
  if (end_step > start_step) evaluate(end_step);
  save(end_step);
  if (end_step < total) {
    log("stopped at step " + std::to_string(end_step) + " of " + std::to_string(total) +
        (o.out.empty() ? " (no --out: nothing saved)" : "; continue with --resume " + result.checkpoint));
  } else if (!o.export_dir.empty()) {
    DType vt = DType::F32;
    if (const auto t = dtype_from_name(o.export_type);
        t && (*t == DType::F32 || *t == DType::F16 || *t == DType::BF16 || *t == DType::Q8_0))
      vt = *t;
    else if (cfg.parts.full_vision())
      log("export: vision matrices as q8_0 (" + o.export_type + " is not a vision type)"), vt = DType::Q8_0;
    const auto scheme = parse_quant_scheme(o.export_type);
    if (!scheme) throw Error("train: --export-type '" + o.export_type + "' is not a GGUF type");
    result.exported = export_model(net, have_vocab ? &vocab : nullptr, o.export_dir, vt, *scheme, o.name);
    for (const auto& p : result.exported) log("exported " + p);
  }
  result.seconds = std::chrono::duration<double>(clock_type::now() - t_start).count();
  return result;
}

}  // namespace sg::train
