// `skingpt train` without libtorch in the interface: options, progress
// reports and the entry points. The implementation (train/trainer.cpp) is
// built only when libtorch is found (SKINGPT_HAVE_TORCH).
//
// Stages (docs/training.md):
//   pretrain-vit  ViT + ln_vision + a temporary linear head on mean-pooled
//                 patch tokens, trained on image labels; the head is dropped at export.
//   pretrain-llm  the LLaMA alone, next-token loss on plain text.
//   step1, step2  SkinGPT-4's two alignment steps: image → ViT → Q-Former →
//                 llama_proj → spliced into the conversation prompt, loss on the
//                 answer tokens only. By default only llama_proj trains.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/llama.h"
#include "model/vision.h"
#include "train/data.h"

namespace sg::train {

struct TrainOptions {
  std::string stage;  // pretrain-vit | pretrain-llm | step1 | step2

  // Data.
  std::string data;       // CSV (image + text/label columns), paths relative to it
  std::string text_file;  // pretrain-llm: UTF-8 text, one document per non-empty line
  std::string val_data;   // optional CSV scored every eval_every steps and at the end
  std::string image_column = "image", text_column = "text", label_column = "label",
              question_column = "question";
  std::string where;      // "col=value,..." row filter for --data and --val
  std::string split, val_split;  // rows of a split (derived ones too: "ham10000_fit") of --data / --val
  std::string question = "Could you describe the skin disease in this image for me?";
  std::string questions_file;  // one question per line; each sample draws one per step
  int64_t max_text_tokens = 160;  // answer tokens kept (the paper's max text length)
  int64_t seq_len = 256;          // pretrain-llm: tokens per training sequence
  AugmentOptions augment;
  int64_t cache_mb = 4096;        // in-memory image cache limit

  // Model: sources and shapes.
  std::vector<std::string> init;  // model folders, .gguf files or training checkpoints, in order
  std::string resume;             // a checkpoint of the same stage: weights, optimizer, step
  std::string tokenizer;          // tokenizer.model or GGUF, for an LLM built from scratch
  VisionConfig vision = default_vision();
  LlamaConfig llm = default_llm();

  // What trains: group names (vit ln_vision qformer proj llm head all) or
  // parameter-name prefixes; empty = the stage's default.
  std::string train_list, freeze_list;
  std::string reinit_list;  // groups/prefixes re-initialised after --init (e.g. proj: a fresh projection)

  // Optimisation.
  double lr = 1e-4, min_lr = 0, weight_decay = 0.05, beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  int64_t warmup = 0;  // linear warmup steps, then cosine to min_lr
  int64_t batch = 8, epochs = 0, steps = 0;  // steps wins when both are set
  int64_t bucket = 0;  // step1/step2: batches drawn from windows of this many batches sorted by length (0 = off)
  double clip = 0;                            // max gradient norm (0 = off)
  double label_smoothing = 0;                 // pretrain-vit
  double agree = 0;  // step2: weight of the answer/score agreement loss (KL between diagnosis distributions)
  bool logit_adjust = false;                  // pretrain-vit: add log class priors to the logits in the loss
  uint64_t seed = 1;

  // Runtime.
  int64_t threads = 0;        // 0 = all cores
  int64_t blas_threads = 0;   // OpenBLAS threads for fp32 matrix products (0 = threads)
  bool bf16 = false;          // autocast matmuls to bfloat16 (CPU or CUDA)
  std::string device = "cpu"; // cpu | cuda | cuda:N
  std::string out;            // folder for checkpoint.pt (empty: no checkpoints)
  int64_t save_every = 0;     // steps between checkpoints (0: only at the end)
  int64_t stop_after = 0;     // end this invocation after N steps (checkpoint; --resume continues)
  bool slim_checkpoints = false;  // store trainable tensors only (resume re-reads --init)
  int64_t eval_every = 0;

  // Export at the end.
  std::string export_dir;
  std::string export_type = "f32";  // vision f32|f16|bf16|q8_0; the LLM any GGUF scheme
  std::string name = "skingpt-trained";

  static VisionConfig default_vision();  // the small from-scratch shape (64 px, ViT 192×6)
  static LlamaConfig default_llm();      // a small LLaMA (n_vocab from the tokenizer)
};

struct StepReport {
  int64_t step = 0, total = 0;  // step is 1-based: steps finished
  double loss = 0, lr = 0;
  double items_per_s = 0;       // images (or sequences) per second, this step
  double elapsed_s = 0;
};

struct EvalReport {
  int64_t step = 0;
  double loss = 0;
  double accuracy = -1, balanced_accuracy = -1;  // pretrain-vit only
};

struct TrainResult {
  int64_t steps = 0;
  std::vector<double> losses;     // one per step of this run
  std::vector<EvalReport> evals;
  double seconds = 0, items_per_s = 0;
  std::string checkpoint;         // last checkpoint written
  std::vector<std::string> exported;
};

struct TrainCallbacks {
  std::function<void(const StepReport&)> step;
  std::function<void(const std::string&)> log;  // one line of information
};

TrainResult run_training(const TrainOptions& o, const TrainCallbacks& cb = {});

// Sets the intra-op thread count (and, once per process, the inter-op
// count) and OpenBLAS's (blas = 0: the same).
void set_threads(int64_t n, int64_t blas = 0);

}  // namespace sg::train
