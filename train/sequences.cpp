#include "train/sequences.h"

#include <algorithm>

#include "core/error.h"

namespace sg::train {

SeqBatch make_seq_batch(const std::vector<PromptTokens>& p, int64_t nq) {
  SeqBatch b;
  b.len0 = static_cast<int64_t>(p[0].seg0.size());
  size_t max1 = 0;
  for (const auto& x : p) {
    if (x.seg0 != p[0].seg0) throw Error("train: prompts differ before the image (template changed?)");
    max1 = std::max(max1, x.seg1.size());
  }
  const int64_t B = static_cast<int64_t>(p.size()), L = b.len0 + nq + static_cast<int64_t>(max1);
  b.ids = at::zeros({B, L}, at::kLong);
  b.targets = at::full({B, L}, -100, at::kLong);
  auto ids = b.ids.accessor<int64_t, 2>();
  auto tg = b.targets.accessor<int64_t, 2>();
  for (int64_t i = 0; i < B; ++i) {
    for (int64_t j = 0; j < b.len0; ++j) ids[i][j] = p[i].seg0[j];
    const int64_t off = b.len0 + nq;
    for (size_t j = 0; j < p[i].seg1.size(); ++j) {
      ids[i][off + static_cast<int64_t>(j)] = p[i].seg1[j];
      if (j >= p[i].n_prompt1) {
        tg[i][off + static_cast<int64_t>(j) - 1] = p[i].seg1[j];
        ++b.n_targets;
      }
    }
  }
  return b;
}

at::Tensor sequence_loss(const Net& net, const at::Tensor& images, const SeqBatch& b, bool sum) {
  const at::Device dev = net.device();
  const at::Tensor ids = b.ids.to(dev), targets = b.targets.to(dev);
  const at::Tensor img = net.encode_image(images.to(dev));  // [B, NQ, dim]
  const int64_t nq = img.size(1);
  const at::Tensor e = net.embed(ids);
  const at::Tensor x = at::cat({e.slice(1, 0, b.len0), img.to(e.scalar_type()), e.slice(1, b.len0 + nq)}, 1);
  const at::Tensor h = net.llm_hidden(x);
  const at::Tensor flat_t = targets.reshape({-1});
  const at::Tensor sel = flat_t.ne(-100).nonzero().squeeze(1);
  const at::Tensor hs = h.reshape({-1, h.size(-1)}).index_select(0, sel);
  const at::Tensor logits = net.lm_head(hs).to(at::kFloat);
  return at::cross_entropy_loss(logits, flat_t.index_select(0, sel), {},
                                sum ? at::Reduction::Sum : at::Reduction::Mean);
}

PhraseSet phrase_set(const Tokenizer& tok, const ConversationTemplate& tpl, const Turns& history,
                     const std::string& question, const std::string& answer_start,
                     const std::vector<std::string>& phrases) {
  std::vector<PromptTokens> full;
  for (const auto& ph : phrases) full.push_back(build_prompt_tokens(tok, tpl, history, question, ph, 0, answer_start));
  PhraseSet r;
  size_t m = full[0].n_prompt1;
  for (const auto& f : full) m = std::min({m, f.n_prompt1, common_prefix(f.seg1, full[0].seg1)});
  if (m == 0) throw Error("train: an answer start with no prompt tokens");
  r.prompt.seg0 = full[0].seg0;
  r.prompt.seg1.assign(full[0].seg1.begin(), full[0].seg1.begin() + static_cast<std::ptrdiff_t>(m));
  r.prompt.n_prompt1 = m;
  for (const auto& f : full) r.phrase.emplace_back(f.seg1.begin() + static_cast<std::ptrdiff_t>(m), f.seg1.end());
  for (size_t k = 0; k < phrases.size(); ++k) {
    size_t shared = 0;
    for (size_t j = 0; j < phrases.size(); ++j)
      if (j != k) shared = std::max(shared, common_prefix(r.phrase[k], r.phrase[j]));
    if (shared >= r.phrase[k].size()) throw Error("train: the diagnosis '" + phrases[k] + "' is listed twice");
    r.depth.push_back(shared + 1);
    size_t p = 0;
    while (p < r.probes.size() && common_prefix(r.probes[p], r.phrase[k]) + 1 < r.depth[k]) ++p;
    if (p == r.probes.size()) r.probes.emplace_back(r.phrase[k].begin(), r.phrase[k].begin() + static_cast<std::ptrdiff_t>(shared));
    r.probe_of.push_back(p);
  }
  return r;
}

at::Tensor phrase_logliks(const Net& net, const at::Tensor& images, const std::vector<PhraseSet>& sets, int64_t nq) {
  if (sets.empty()) return at::empty({0, 0}, at::kFloat);
  for (const auto& s : sets)
    if (s.phrase.size() != sets[0].phrase.size()) throw Error("train: phrase sets of different sizes in one batch");
  const at::Device dev = net.device();
  std::vector<PromptTokens> rows;
  std::vector<int64_t> row_image, row_of_set;
  for (size_t c = 0; c < sets.size(); ++c) {
    row_of_set.push_back(static_cast<int64_t>(rows.size()));
    for (const auto& probe : sets[c].probes) {
      PromptTokens t = sets[c].prompt;
      t.seg1.insert(t.seg1.end(), probe.begin(), probe.end());
      rows.push_back(std::move(t));
      row_image.push_back(static_cast<int64_t>(c));
    }
  }
  const SeqBatch b = make_seq_batch(rows, nq);
  const int64_t L = b.ids.size(1), K = static_cast<int64_t>(sets[0].phrase.size());
  std::vector<int64_t> at_pos, token, slot;  // (flat position, token it scores, set·K + phrase)
  for (size_t c = 0; c < sets.size(); ++c)
    for (int64_t k = 0; k < K; ++k) {
      const PhraseSet& s = sets[c];
      const int64_t row = row_of_set[c] + static_cast<int64_t>(s.probe_of[static_cast<size_t>(k)]);
      const int64_t first = b.len0 + nq + static_cast<int64_t>(s.prompt.n_prompt1) - 1;
      for (size_t i = 0; i < s.depth[static_cast<size_t>(k)]; ++i) {
        at_pos.push_back(row * L + first + static_cast<int64_t>(i));
        token.push_back(s.phrase[static_cast<size_t>(k)][i]);
        slot.push_back(static_cast<int64_t>(c) * K + k);
      }
    }
  const at::Tensor img = net.encode_image(images.index_select(0, at::tensor(row_image)).to(dev));
  const at::Tensor e = net.embed(b.ids.to(dev));
  const at::Tensor x = at::cat({e.slice(1, 0, b.len0), img.to(e.scalar_type()), e.slice(1, b.len0 + nq)}, 1);
  const at::Tensor h = net.llm_hidden(x);
  const at::Tensor hs = h.reshape({-1, h.size(-1)}).index_select(0, at::tensor(at_pos).to(dev));
  const at::Tensor lp = net.lm_head(hs).to(at::kFloat).log_softmax(-1).gather(1, at::tensor(token).to(dev).unsqueeze(1));
  return at::zeros({static_cast<int64_t>(sets.size()) * K}, lp.options())
      .index_add(0, at::tensor(slot).to(dev), lp.squeeze(1))
      .reshape({static_cast<int64_t>(sets.size()), K});
}

}  // namespace sg::train
