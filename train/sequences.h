// What the alignment stages (step1, step2) compute on token sequences: the
// padded batch of spliced prompts, the answer loss, and the catalogue's
// diagnoses as continuations of an answer start — the distributions the
// agreement loss (--agree) compares.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "text/tokenizer.h"
#include "train/data.h"
#include "train/model.h"

namespace sg::train {

struct SeqBatch {
  at::Tensor ids;      // [B, L] int64 (image positions hold 0)
  at::Tensor targets;  // [B, L] int64: the token position t predicts, -100 where no loss
  int64_t len0 = 0;    // image queries start here
  int64_t n_targets = 0;
};

SeqBatch make_seq_batch(const std::vector<PromptTokens>& p, int64_t nq);

// Causal-LM loss of the answer tokens (mean over them; sum when `sum`).
at::Tensor sequence_loss(const Net& net, const at::Tensor& images, const SeqBatch& b, bool sum = false);

// The catalogue's diagnoses as continuations of one answer start, read from a
// few probe sequences: a phrase's log-likelihood is summed over its tokens up
// to the one where it parts from every other phrase. The engine's
// score_answers also sums the later ones, which a trained model all but
// dictates, so the two rank the phrases alike.
struct PhraseSet {
  PromptTokens prompt;                        // n_prompt1 = tokens shared by the prompt and every phrase
  std::vector<std::vector<int32_t>> phrase;   // each phrase's tokens after the shared part
  std::vector<size_t> depth;                  // how many of them are scored
  std::vector<size_t> probe_of;               // the probe whose tokens start with the phrase's scored path
  std::vector<std::vector<int32_t>> probes;   // continuations run through the model
};

// The phrases after `answer_start` as the answer to `question` (after
// `history`), tokenized as build_prompt_tokens does (each phrase followed by
// the closing separator). sg::Error when two phrases are the same.
PhraseSet phrase_set(const Tokenizer& tok, const ConversationTemplate& tpl, const Turns& history,
                     const std::string& question, const std::string& answer_start,
                     const std::vector<std::string>& phrases);

// Log-likelihood of every phrase of every set [n_sets, n_phrases], from one
// forward of all their probes; `images` holds one image per set.
at::Tensor phrase_logliks(const Net& net, const at::Tensor& images, const std::vector<PhraseSet>& sets, int64_t nq);

}  // namespace sg::train
