// skingpt train: the libtorch trainer (train/train.h, docs/training.md).
// Compiled twice: into skingpt without libtorch, where it starts skingpt-train
// (or explains how to get it), and into skingpt-train with the trainer.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "app/args.h"
#include "app/commands.h"
#include "app/progress.h"
#include "core/error.h"

#ifdef SKINGPT_HAVE_TORCH
#include "train/train.h"
#endif

namespace sg::app {

#ifndef SKINGPT_HAVE_TORCH

// The engine binary stays free of libtorch (hundreds of shared libraries and
// ~170 MB of resident memory at start-up); training runs in the companion
// executable skingpt-train built next to it.
int cmd_train(int argc, char** argv) {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string path(self);
    path = path.substr(0, path.rfind('/') + 1) + "skingpt-train";
    if (access(path.c_str(), X_OK) == 0) {
      std::vector<char*> args;
      args.push_back(path.data());
      for (int i = 0; i < argc; ++i) args.push_back(argv[i]);
      args.push_back(nullptr);
      execv(path.c_str(), args.data());
      throw Error("train: cannot start " + path);
    }
  }
  throw Error("train: this skingpt was built without libtorch (no skingpt-train beside it); install "
              "libtorch-dev and libopenblas0 (bash scripts/setup.sh does) and rebuild (docs/training.md)");
}

#else

namespace {

// app/progress.h's bar with the loss, learning rate and throughput in it: a
// redrawn line on a terminal; otherwise a line every `every` steps, after the
// first step, and after any step that ends a minute or more after the last line.
class TrainBar {
 public:
  TrainBar(std::string label, int64_t every) : label_(std::move(label)), every_(every), tty_(isatty(STDERR_FILENO)) {}
  void update(const train::StepReport& r) {
    smooth_ = n_ == 0 ? r.loss : 0.9 * smooth_ + 0.1 * r.loss;
    ++n_;
    const auto now = std::chrono::steady_clock::now();
    const bool end = r.step >= r.total;
    if (tty_) {
      if (!end && now - last_ < std::chrono::milliseconds(100)) return;
    } else if (!end) {
      // A log file: every N steps, and also after the first step and after any
      // step a minute or more after the last line, so a slow run shows it is alive.
      if (every_ <= 0) return;
      const bool due = r.step % every_ == 0 || n_ == 1 || now - last_ >= std::chrono::minutes(1);
      if (!due) return;
    }
    last_ = now;
    const double frac = static_cast<double>(r.step) / static_cast<double>(std::max<int64_t>(1, r.total));
    const int width = 24, fill = static_cast<int>(frac * width);
    std::string bar(fill, '#');
    bar.resize(width, '.');
    const int64_t done_here = n_;
    const double per_step = r.elapsed_s / static_cast<double>(std::max<int64_t>(1, done_here));
    const double eta = per_step * static_cast<double>(r.total - r.step);
    std::fprintf(stderr, "%s%s [%s] %3.0f%%  step %lld/%lld  loss %.4f (avg %.4f)  lr %.2e  %.1f/s  %s %s%s",
                 tty_ ? "\r" : "", label_.c_str(), bar.c_str(), frac * 100, static_cast<long long>(r.step),
                 static_cast<long long>(r.total), r.loss, smooth_, r.lr, r.items_per_s, end ? "took" : "ETA",
                 fmt_time(end ? r.elapsed_s : eta).c_str(), tty_ && !end ? "   " : "\n");
    std::fflush(stderr);
  }

 private:
  std::string label_;
  int64_t every_;
  bool tty_;
  int64_t n_ = 0;
  double smooth_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace

int cmd_train(int argc, char** argv) {
  // libgomp (libtorch's OpenMP) spins idle worker threads, which on a small
  // shared machine starves OpenBLAS's and oneDNN's threads: measured 2-3x
  // slower steps with 2 threads. Its wait policy is read once at program
  // start, so set it and start again (unless the user chose one).
  // The same program with exactly its own command line (/proc/self/cmdline),
  // whichever binary this is (skingpt-train, or skingpt linked with libtorch).
  if (!std::getenv("OMP_WAIT_POLICY")) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    std::ifstream f("/proc/self/cmdline", std::ios::binary);
    const std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::vector<std::string> parts;
    for (size_t at = 0; at < cmdline.size();) {
      const size_t end = cmdline.find('\0', at);
      parts.push_back(cmdline.substr(at, end == std::string::npos ? std::string::npos : end - at));
      if (end == std::string::npos) break;
      at = end + 1;
    }
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (!parts.empty() && n > 0) {
      self[n] = '\0';  // the real path, so ps and top show the program's name
      std::vector<char*> args;
      for (auto& p : parts) args.push_back(p.data());
      args.push_back(nullptr);
      execv(self, args.data());  // returns only on failure: carry on as we are
    }
  }
  train::TrainOptions o;
  std::string init, aug;
  int64_t seed = 1, log_every = 10;
  bool quiet = false;
  Args a("train",
         "Train SkinGPT-4's parts with libtorch (docs/training.md).\n"
         "  --stage pretrain-vit  the ViT on image labels (a temporary head on mean-pooled tokens)\n"
         "  --stage pretrain-llm  the LLaMA on plain text (--text FILE)\n"
         "  --stage step1|step2   the paper's alignment steps: image + question -> answer text;\n"
         "                        by default only llama_proj trains, as in SkinGPT-4\n"
         "CSV data: a header row; 'image' (paths relative to the CSV) and 'label' (pretrain-vit)\n"
         "or 'text' (step1/step2, the answer), optionally 'question'. Everything is deterministic\n"
         "from --seed; --resume continues a run exactly. --export DIR writes vision.gguf + llm.gguf.");
  a.option("--stage", &o.stage, "pretrain-vit | pretrain-llm | step1 | step2");
  a.option("--data", &o.data, "training CSV");
  a.option("--text", &o.text_file, "pretrain-llm: text file, one document per non-empty line");
  a.option("--val", &o.val_data, "validation CSV (loss; accuracy and balanced accuracy for pretrain-vit)");
  a.option("--where", &o.where, "keep CSV rows with COL=VALUE[,COL=VALUE...] (e.g. dx_type=histo)");
  a.option("--split", &o.split,
           "keep --data rows of this split; <P>_fit / <P>_val are derived from <P>_train by lesion_id "
           "(e.g. ham10000_fit)");
  a.option("--val-split", &o.val_split, "the same for --val (e.g. ham10000_val)");
  a.option("--image-column", &o.image_column, "CSV column of image paths");
  a.option("--text-column", &o.text_column, "CSV column of answers (step1/step2)");
  a.option("--label-column", &o.label_column, "CSV column of class labels (pretrain-vit)");
  a.option("--question-column", &o.question_column, "CSV column of questions (optional per row)");
  a.option("--question", &o.question, "question for rows without one");
  a.option("--questions", &o.questions_file, "file of questions, one per line; each sample draws one at random");
  a.option("--max-text-tokens", &o.max_text_tokens, "answer tokens kept per sample (0 = all)");
  a.option("--bucket", &o.bucket,
           "step1/step2: draw batches from windows of N batches sorted by length, so long conversations "
           "are padded together (0 = off)");
  a.option("--seq-len", &o.seq_len, "pretrain-llm: tokens per training sequence");
  a.option("--init", &init, "start from MODEL_DIR, a .gguf or a checkpoint; several, comma-separated, apply in order");
  a.option("--resume", &o.resume, "continue a run from its checkpoint.pt (same options otherwise)");
  a.option("--tokenizer", &o.tokenizer, "tokenizer.model or GGUF, for an LLM trained from scratch");
  a.option("--train", &o.train_list,
           "what trains: groups vit ln_vision qformer proj llm head all, or name prefixes (comma-separated);\n"
           "default: pretrain-vit vit,ln_vision,head; pretrain-llm llm; step1/step2 proj");
  a.option("--freeze", &o.freeze_list, "groups or name prefixes kept frozen (applied after --train)");
  a.option("--reinit", &o.reinit_list, "groups or name prefixes re-initialised after --init (e.g. proj)");
  a.option("--lr", &o.lr, "peak learning rate (AdamW)");
  a.option("--min-lr", &o.min_lr, "learning rate at the end of the cosine");
  a.option("--wd", &o.weight_decay, "weight decay (matrices only; not biases, norms, cls/pos/query tokens)");
  a.option("--beta1", &o.beta1, "AdamW beta1");
  a.option("--beta2", &o.beta2, "AdamW beta2");
  a.option("--warmup", &o.warmup, "linear warmup steps, then cosine decay");
  a.option("--batch", &o.batch, "batch size");
  a.option("--epochs", &o.epochs, "passes over the data (used when --steps is 0)");
  a.option("--steps", &o.steps, "optimizer steps");
  a.option("--clip", &o.clip, "clip the gradient norm to this (0 = off)");
  a.option("--label-smoothing", &o.label_smoothing, "pretrain-vit: label smoothing");
  a.option("--agree", &o.agree,
           "step2: weight of the agreement loss: rows whose answer reaches \"This could be a skin disease image "
           "of\" learn to rank the catalogue's diagnoses there as the scoring question does (0 = off)");
  a.flag("--logit-adjust", &o.logit_adjust, "pretrain-vit: prior-adjusted (logit-adjusted) loss for imbalanced classes");
  a.option("--augment", &aug, "crop,hflip,vflip,rot90,jitter (any of; for image stages)");
  a.option("--crop-scale", &o.augment.crop_min_scale, "random resized crop: smallest area fraction");
  a.option("--jitter", &o.augment.jitter, "colour jitter strength (turns jitter on; --augment jitter alone uses 0.2)");
  a.option("--cache-mb", &o.cache_mb, "memory for decoded, resized images");
  a.option("--seed", &seed, "random seed (initialisation, data order, augmentation)");
  a.option("-t,--threads", &o.threads, "CPU threads (0 = all cores)");
  a.option("--blas-threads", &o.blas_threads, "OpenBLAS threads for fp32 matrix products (0 = --threads)");
  a.flag("--bf16", &o.bf16, "bfloat16 autocast for the matrix products (CPU or CUDA)");
  a.option("--device", &o.device, "cpu, cuda or cuda:N (needs a CUDA build of libtorch)");
  a.option("--out", &o.out, "folder for checkpoint.pt");
  a.option("--save-every", &o.save_every, "steps between checkpoints (0 = at the end only)");
  a.option("--stop-after", &o.stop_after, "end this invocation after N steps, with a checkpoint (continue with --resume)");
  a.flag("--slim-checkpoints", &o.slim_checkpoints, "store only the trainable tensors (resume re-reads --init)");
  a.option("--eval-every", &o.eval_every, "steps between validation runs (0 = at the end only)");
  a.option("--export", &o.export_dir, "write the trained model as MODEL_DIR/vision.gguf + llm.gguf");
  a.option("--export-type", &o.export_type, "weights in the exported files: f32 f16 bf16 q8_0 (LLM: also q4_k_m ...)");
  a.option("--name", &o.name, "general.name of the exported files");
  a.option("--log-every", &log_every, "without a terminal: print a progress line every N steps, after the first, and after any step a minute or more after the last line (0 = only at the end)");
  a.flag("-q,--quiet", &quiet, "no progress bar");
  // Shapes of parts built from scratch (parts taken from --init keep theirs).
  a.option("--image-size", &o.vision.image_size, "vision: input size");
  a.option("--patch", &o.vision.patch_size, "vision: patch size");
  a.option("--vit-width", &o.vision.vit_width, "vision: ViT width");
  a.option("--vit-depth", &o.vision.vit_depth, "vision: ViT blocks");
  a.option("--vit-heads", &o.vision.vit_heads, "vision: ViT heads");
  a.option("--vit-ffn", &o.vision.vit_ffn, "vision: ViT MLP width");
  a.option("--qf-width", &o.vision.qf_width, "vision: Q-Former width");
  a.option("--qf-depth", &o.vision.qf_depth, "vision: Q-Former layers");
  a.option("--qf-heads", &o.vision.qf_heads, "vision: Q-Former heads");
  a.option("--qf-ffn", &o.vision.qf_ffn, "vision: Q-Former FFN width");
  a.option("--qf-cross-freq", &o.vision.qf_cross_freq, "vision: cross-attention in layers where layer % N == 0");
  a.option("--queries", &o.vision.n_query, "vision: query tokens");
  a.option("--llm-dim", &o.llm.dim, "LLM: width");
  a.option("--llm-layers", &o.llm.n_layers, "LLM: layers");
  a.option("--llm-heads", &o.llm.n_heads, "LLM: attention heads");
  a.option("--llm-kv-heads", &o.llm.n_kv_heads, "LLM: key/value heads (0 = --llm-heads)");
  a.option("--llm-ffn", &o.llm.ffn, "LLM: feed-forward width");
  if (!a.parse(argc, argv)) return 0;
  if (o.stage.empty()) throw Error("train: --stage is required (pretrain-vit, pretrain-llm, step1, step2)");
  if (seed < 0) throw Error("train: --seed must be >= 0");
  o.seed = static_cast<uint64_t>(seed);
  if (!a.was_set("--llm-kv-heads") || o.llm.n_kv_heads <= 0) o.llm.n_kv_heads = o.llm.n_heads;
  if (o.llm.n_heads > 0) o.llm.rope_dim = o.llm.dim / o.llm.n_heads;
  if (o.steps < 0 || o.epochs < 0) throw Error("train: --steps and --epochs must be >= 0");
  std::stringstream ss(init);
  for (std::string s; std::getline(ss, s, ',');)
    if (!s.empty()) o.init.push_back(s);
  std::stringstream as(aug);
  for (std::string s; std::getline(as, s, ',');) {
    if (s == "crop") o.augment.crop = true;
    else if (s == "hflip") o.augment.hflip = true;
    else if (s == "vflip") o.augment.vflip = true;
    else if (s == "rot90") o.augment.rot90 = true;
    else if (s == "jitter") o.augment.jitter = o.augment.jitter > 0 ? o.augment.jitter : 0.2;
    else if (!s.empty()) throw Error("train: unknown --augment '" + s + "' (crop, hflip, vflip, rot90, jitter)");
  }
  if (!(o.augment.crop_min_scale > 0 && o.augment.crop_min_scale <= 1)) throw Error("train: --crop-scale must be in (0, 1]");

  TrainBar bar("train " + o.stage, log_every);
  train::TrainCallbacks cb;
  cb.log = [](const std::string& s) { std::fprintf(stderr, "train: %s\n", s.c_str()); };
  if (!quiet) cb.step = [&](const train::StepReport& r) { bar.update(r); };
  const train::TrainResult r = train::run_training(o, cb);
  std::printf("trained %lld steps in %.1f s (%.1f %s/s)", static_cast<long long>(r.steps), r.seconds, r.items_per_s,
              o.stage == "pretrain-llm" ? "sequences" : "images");
  if (!r.losses.empty()) std::printf(", loss %.4f -> %.4f", r.losses.front(), r.losses.back());
  std::printf("\n");
  if (!r.checkpoint.empty()) std::printf("checkpoint: %s\n", r.checkpoint.c_str());
  for (const auto& p : r.exported) std::printf("exported: %s\n", p.c_str());
  return 0;
}

#endif

}  // namespace sg::app
