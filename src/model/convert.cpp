#include "model/convert.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/quant.h"
#include "core/threads.h"
#include "formats/gguf.h"
#include "formats/mapped_file.h"
#include "model/vision_file.h"
#include "text/vocab.h"

namespace sg {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kChunkElems = 4 << 20;  // f32 elements converted per step (16 MB)

std::string shape_of_dims(const std::vector<int64_t>& gguf_dims) {  // PyTorch order
  std::string s = "[";
  for (size_t i = gguf_dims.size(); i-- > 0;) s += std::to_string(gguf_dims[i]) + (i ? ", " : "");
  return s + "]";
}

// A checkpoint shape matches GGUF dims after dropping leading 1s (cls_token
// [1, 1, W]) and flattening trailing dimensions (conv weight [W, 3, p, p]).
bool shape_matches(std::vector<int64_t> s, const std::vector<int64_t>& dims) {
  while (s.size() > dims.size() && s.front() == 1) s.erase(s.begin());
  while (s.size() > dims.size() && s.size() >= 2) {
    s[s.size() - 2] *= s.back();
    s.pop_back();
  }
  if (s.size() != dims.size()) return false;
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] != dims[dims.size() - 1 - i]) return false;
  return true;
}

// Produces one tensor's rows as float32 (thread-safe), after which `done`
// (optional) is told which rows have been written.
struct RowJob {
  DType type = DType::F32;
  int64_t row_len = 0, n_rows = 0;
  std::function<void(int64_t r0, int64_t n, float* dst)> fill;
  std::function<void(int64_t r0, int64_t n)> done;
};

struct Streamer {
  Streamer(gguf::Writer& w_, ThreadPool& pool_, const ByteProgress& progress_, uint64_t total_)
      : w(w_), pool(pool_), progress(progress_), total(total_) {}
  gguf::Writer& w;
  ThreadPool& pool;
  const ByteProgress& progress;
  uint64_t total = 0, written = 0;
  std::vector<float> f;
  std::vector<uint8_t> q;

  void run(const RowJob& job) {
    const int64_t chunk = std::max<int64_t>(1, kChunkElems / job.row_len);
    const size_t rb = row_bytes(job.type, job.row_len);
    const int64_t cap = std::min(chunk, job.n_rows);
    if (f.size() < static_cast<size_t>(cap * job.row_len)) f.resize(static_cast<size_t>(cap * job.row_len));
    if (q.size() < static_cast<size_t>(cap) * rb) q.resize(static_cast<size_t>(cap) * rb);
    for (int64_t r0 = 0; r0 < job.n_rows; r0 += chunk) {
      const int64_t n = std::min(chunk, job.n_rows - r0);
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        float* dst = f.data() + b * job.row_len;
        job.fill(r0 + b, e - b, dst);
        for (int64_t r = b; r < e; ++r) quantize_row(job.type, f.data() + r * job.row_len, q.data() + r * rb, job.row_len);
      });
      w.write_tensor_chunk(q.data(), static_cast<size_t>(n) * rb);
      if (job.done) job.done(r0, n);
      written += static_cast<uint64_t>(n) * rb;
      if (progress) progress(written, total);
    }
  }
};

uint64_t spec_bytes(const TensorSpec& t) {
  int64_t rows = 1;
  for (size_t i = 1; i < t.dims.size(); ++i) rows *= t.dims[i];
  return row_bytes(t.type, t.dims[0]) * static_cast<uint64_t>(rows);
}

int64_t rows_of(const std::vector<int64_t>& dims) {
  int64_t r = 1;
  for (size_t i = 1; i < dims.size(); ++i) r *= dims[i];
  return r;
}

void check_source(const SrcTensor& t, const std::string& needed_for) {
  if (!t.problem.empty()) throw Error(t.origin + ": tensor '" + t.name + "' " + t.problem);
  if (!src_type_is_float(t.type))
    throw Error(t.origin + ": tensor '" + t.name + "' has type " + std::string(src_type_name(t.type)) +
                ", expected a float type (for " + needed_for + ")");
}

// --- vision helpers

const SrcTensor* vit_find(const TensorSet& s, const std::string& n) {
  if (const SrcTensor* t = s.find(n)) return t;
  return s.find("visual_encoder." + n);
}

const SrcTensor& need(const SrcTensor* t, const TensorSet& s, const std::string& name, const std::string& why) {
  if (!t) throw Error(s.description + ": missing tensor '" + name + "'" + (why.empty() ? "" : " (" + why + ")"));
  return *t;
}

// Indices N of "<prefix>N." names in a set.
std::set<int64_t> indices(const TensorSet& s, const std::string& prefix, const std::string& alt_prefix = "") {
  std::set<int64_t> out;
  for (const auto& [name, t] : s.all()) {
    for (const std::string* p : {&prefix, &alt_prefix}) {
      if (p->empty() || name.compare(0, p->size(), *p) != 0) continue;
      size_t i = p->size(), j = i;
      while (j < name.size() && j - i < 6 && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
      if (j > i && j < name.size() && name[j] == '.') out.insert(std::stoll(name.substr(i, j - i)));
    }
  }
  return out;
}

std::string vision_source(const VisionSources& s, const std::string& gguf_name, const TensorSet** set,
                          const SrcTensor** t) {
  const std::string src = vision_source_name(gguf_name);
  static const std::string kVit = "visual_encoder.";
  if (src.compare(0, kVit.size(), kVit) == 0) {
    *set = &s.vit;
    const std::string bare = src.substr(kVit.size());
    *t = s.vit.find(bare);
    if (!*t) *t = s.vit.find(src);
    return bare;
  }
  *set = src.rfind("llama_proj.", 0) == 0 ? &s.proj : &s.qformer;
  *t = (*set)->find(src);
  return src;
}

}  // namespace

// ---------------------------------------------------------------- vision

VisionConfig infer_vision_config(const VisionSources& s, const VisionOptions& o, std::vector<std::string>* notes) {
  auto note = [&](const std::string& m) {
    if (notes) notes->push_back(m);
  };
  VisionConfig c;
  const std::string& vd = s.vit.description;
  const SrcTensor& cls = need(vit_find(s.vit, "cls_token"), s.vit, "cls_token", "the EVA ViT's class token");
  if (cls.shape.empty()) throw Error(vd + ": cls_token is 0-d");
  c.vit_width = cls.shape.back();
  const SrcTensor& pw = need(vit_find(s.vit, "patch_embed.proj.weight"), s.vit, "patch_embed.proj.weight", "");
  if (pw.shape.size() != 4 || pw.shape[0] != c.vit_width || pw.shape[1] != 3 || pw.shape[2] != pw.shape[3])
    throw Error(vd + ": patch_embed.proj.weight has shape " + pw.shape_str() + ", expected [" +
                std::to_string(c.vit_width) + ", 3, p, p]");
  c.patch_size = pw.shape[2];
  const SrcTensor& pos = need(vit_find(s.vit, "pos_embed"), s.vit, "pos_embed", "");
  if (pos.shape.empty() || pos.shape.back() != c.vit_width || pos.numel() % c.vit_width)
    throw Error(vd + ": pos_embed has shape " + pos.shape_str() + ", not [1, tokens, " + std::to_string(c.vit_width) + "]");
  const int64_t tokens = pos.numel() / c.vit_width;
  const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(tokens - 1))));
  if (tokens < 2 || side * side != tokens - 1)
    throw Error(vd + ": pos_embed has " + std::to_string(tokens) + " positions, not a square grid + 1 class token");
  c.image_size = side * c.patch_size;

  const auto blocks = indices(s.vit, "blocks.", "visual_encoder.blocks.");
  if (blocks.empty()) throw Error(vd + ": no ViT blocks (blocks.N.*) found");
  const int64_t n_blocks = *blocks.rbegin() + 1;
  if (static_cast<int64_t>(blocks.size()) != n_blocks)
    throw Error(vd + ": ViT blocks are not numbered 0.." + std::to_string(n_blocks - 1));
  if (o.vit_blocks < 0 || o.vit_blocks > n_blocks)
    throw Error(vd + ": --vit-blocks " + std::to_string(o.vit_blocks) + " but the checkpoint has " +
                std::to_string(n_blocks) + " blocks");
  c.vit_depth = o.vit_blocks > 0 ? o.vit_blocks : std::max<int64_t>(1, n_blocks - 1);
  note("ViT: using " + std::to_string(c.vit_depth) + " of the checkpoint's " + std::to_string(n_blocks) + " blocks" +
       (o.vit_blocks > 0 ? " (--vit-blocks)" : " (penultimate-layer features, as MiniGPT-4; --vit-blocks N to change)"));
  const SrcTensor& fc1 = need(vit_find(s.vit, "blocks.0.mlp.fc1.weight"), s.vit, "blocks.0.mlp.fc1.weight", "");
  if (fc1.shape.size() != 2) throw Error(vd + ": blocks.0.mlp.fc1.weight is not a matrix");
  c.vit_ffn = fc1.shape[0];
  if (o.vit_heads > 0) {
    c.vit_heads = o.vit_heads;
  } else if (c.vit_width == 1408 || c.vit_width == 1024) {
    c.vit_heads = 16;
  } else if (c.vit_width == 768) {
    c.vit_heads = 12;
  } else {
    throw Error(vd + ": the ViT is " + std::to_string(c.vit_width) +
                " wide, and checkpoints do not record head counts: pass --vit-heads N");
  }
  if (c.vit_width % c.vit_heads)
    throw Error(vd + ": ViT width " + std::to_string(c.vit_width) + " is not a multiple of " + std::to_string(c.vit_heads) + " heads");

  const std::string& qd = s.qformer.description;
  const SrcTensor& qt = need(s.qformer.find("query_tokens"), s.qformer, "query_tokens", "the BLIP-2 query tokens");
  if (qt.shape.size() < 2) throw Error(qd + ": query_tokens has shape " + qt.shape_str() + ", not [1, queries, width]");
  c.qf_width = qt.shape.back();
  c.n_query = qt.shape[qt.shape.size() - 2];
  const SrcTensor& lnv = need(s.qformer.find("ln_vision.weight"), s.qformer, "ln_vision.weight", "");
  if (lnv.numel() != c.vit_width)
    throw Error(qd + ": ln_vision.weight has " + std::to_string(lnv.numel()) + " elements but the ViT in " + vd +
                " is " + std::to_string(c.vit_width) + " wide (do these checkpoints belong together?)");
  const std::string L = "Qformer.bert.encoder.layer.";
  const auto layers = indices(s.qformer, L);
  if (layers.empty()) throw Error(qd + ": no Q-Former layers (" + L + "N.*) found");
  c.qf_depth = *layers.rbegin() + 1;
  if (static_cast<int64_t>(layers.size()) != c.qf_depth)
    throw Error(qd + ": Q-Former layers are not numbered 0.." + std::to_string(c.qf_depth - 1));
  std::vector<bool> cross(static_cast<size_t>(c.qf_depth));
  for (int64_t i = 0; i < c.qf_depth; ++i)
    cross[i] = s.qformer.find(L + std::to_string(i) + ".crossattention.self.query.weight") != nullptr;
  c.qf_cross_freq = 0;
  for (int64_t f = 1; f <= c.qf_depth && !c.qf_cross_freq; ++f) {
    bool ok = true;
    for (int64_t i = 0; i < c.qf_depth; ++i) ok &= cross[i] == (i % f == 0);
    if (ok) c.qf_cross_freq = f;
  }
  if (!c.qf_cross_freq) {
    // Only layer 0 has cross-attention: any frequency ≥ depth describes it.
    bool only0 = cross[0];
    for (int64_t i = 1; i < c.qf_depth; ++i) only0 &= !cross[i];
    if (only0) c.qf_cross_freq = c.qf_depth;
  }
  if (!c.qf_cross_freq)
    throw Error(qd + ": the Q-Former layers with cross-attention do not follow 'every k-th layer from 0'");
  const SrcTensor& ck = need(s.qformer.find(L + "0.crossattention.self.key.weight"), s.qformer,
                             L + "0.crossattention.self.key.weight", "");
  if (ck.shape.size() != 2 || ck.shape[1] != c.vit_width)
    throw Error(qd + ": Q-Former cross-attention reads " + (ck.shape.size() == 2 ? std::to_string(ck.shape[1]) : "?") +
                "-wide image features, but the ViT in " + vd + " is " + std::to_string(c.vit_width) + " wide");
  const SrcTensor& iq = need(s.qformer.find(L + "0.intermediate_query.dense.weight"), s.qformer,
                             L + "0.intermediate_query.dense.weight", "");
  if (iq.shape.size() != 2) throw Error(qd + ": intermediate_query.dense.weight is not a matrix");
  c.qf_ffn = iq.shape[0];
  if (o.qf_heads > 0) c.qf_heads = o.qf_heads;
  else if (c.qf_width == 768) c.qf_heads = 12;
  else
    throw Error(qd + ": the Q-Former is " + std::to_string(c.qf_width) +
                " wide, and checkpoints do not record head counts: pass --qf-heads N");
  if (c.qf_width % c.qf_heads)
    throw Error(qd + ": Q-Former width " + std::to_string(c.qf_width) + " is not a multiple of " +
                std::to_string(c.qf_heads) + " heads");

  const std::string& pd = s.proj.description;
  const SrcTensor& pj = need(s.proj.find("llama_proj.weight"), s.proj, "llama_proj.weight", "the projection into the LLM");
  if (pj.shape.size() != 2) throw Error(pd + ": llama_proj.weight has shape " + pj.shape_str() + ", not a matrix");
  if (pj.shape[1] != c.qf_width)
    throw Error(pd + ": llama_proj takes " + std::to_string(pj.shape[1]) + "-wide input, but the Q-Former in " + qd +
                " is " + std::to_string(c.qf_width) + " wide");
  c.llm_dim = pj.shape[0];

  c.vit_eps = o.vit_eps.value_or(1e-6f);
  c.ln_vision_eps = o.ln_vision_eps.value_or(1e-5f);
  c.qf_eps = o.qf_eps.value_or(1e-12f);
  return c;
}

void convert_vision(const VisionSources& s, const VisionConfig& c, DType type, const VisionOptions& o,
                    const std::string& out, const std::string& name, ThreadPool& pool, const ByteProgress& progress) {
  if (!vision_type_allowed(type))
    throw Error("vision weights must be f32, f16, bf16 or q8_0, not " + std::string(traits(type).name));
  const auto specs = vision_tensor_specs(c, type);
  std::vector<const SrcTensor*> srcs;
  std::vector<bool> round_bias;
  uint64_t total = 0;
  for (const auto& spec : specs) {
    const TensorSet* set = nullptr;
    const SrcTensor* t = nullptr;
    const std::string want = vision_source(s, spec.name, &set, &t);
    if (!t) throw Error(set->description + ": missing tensor '" + want + "' (needed for " + spec.name + ")");
    check_source(*t, spec.name);
    if (!shape_matches(t->shape, spec.dims))
      throw Error(t->origin + ": tensor '" + t->name + "' has shape " + t->shape_str() + ", but " + spec.name +
                  " needs " + shape_of_dims(spec.dims) + " (ViT " + std::to_string(c.vit_width) + " wide, Q-Former " +
                  std::to_string(c.qf_width) + ", projection " + std::to_string(c.llm_dim) + ")");
    srcs.push_back(t);
    const bool bias = spec.name.size() > 5 && spec.name.compare(spec.name.size() - 5, 5, ".bias") == 0 &&
                      spec.name.find("norm") == std::string::npos;
    round_bias.push_back(o.fp16_biases && bias);
    total += spec_bytes(spec);
  }
  gguf::Writer w(out);
  write_vision_metadata(w, c, name);
  w.set("general.file_type", gguf::Value::u32(llama_ftype(QuantScheme{type, false})));
  for (const auto& spec : specs) w.add_tensor(spec.name, spec.type, spec.dims);
  w.begin();
  Streamer st(w, pool, progress, total);
  for (size_t i = 0; i < specs.size(); ++i) {
    const SrcTensor& t = *srcs[i];
    RowJob job;
    job.type = specs[i].type;
    job.row_len = specs[i].dims[0];
    job.n_rows = rows_of(specs[i].dims);
    const bool rb = round_bias[i];
    job.fill = [&t, &job, rb](int64_t r0, int64_t n, float* dst) {
      read_f32(t, r0 * job.row_len, n * job.row_len, dst);
      if (rb)
        for (int64_t k = 0; k < n * job.row_len; ++k) dst[k] = f16_to_f32(f32_to_f16(dst[k]));
    };
    job.done = [&t, &job](int64_t r0, int64_t n) { release(t, r0 * job.row_len, n * job.row_len); };
    st.run(job);
  }
  w.finish();
}

// ---------------------------------------------------------------- LLM

namespace {

struct LlamaPlan {
  std::vector<TensorSpec> specs;
  std::vector<const SrcTensor*> srcs;
  std::vector<int64_t> permute;  // heads to permute rows for (0: none)
  uint64_t total = 0;
};

LlamaPlan plan_hf_llama(const HfLlama& src, const QuantScheme& scheme, std::vector<std::string>* notes) {
  const LlamaConfig& c = src.config;
  const std::string cfg_desc = (fs::path(src.dir) / "config.json").string() + " (hidden_size " +
                               std::to_string(c.dim) + ", " + std::to_string(c.n_heads) + " heads, " +
                               std::to_string(c.n_kv_heads) + " kv heads, intermediate_size " + std::to_string(c.ffn) +
                               ", vocab_size " + std::to_string(c.n_vocab) + ")";
  LlamaPlan plan;
  plan.specs = llama_tensor_specs(c, scheme);
  std::set<std::string> used;
  for (const auto& spec : plan.specs) {
    std::string hf = hf_llama_source_name(spec.name);
    const SrcTensor* t = src.tensors.find(hf);
    if (!t && spec.name == "output.weight") {
      t = src.tensors.find("model.embed_tokens.weight");
      if (t && notes)
        notes->push_back(std::string("no lm_head.weight") + (src.tie_word_embeddings ? " (tie_word_embeddings)" : "") +
                         ": output.weight is a copy of the token embeddings");
      hf = "model.embed_tokens.weight";
    }
    if (!t) throw Error(src.tensors.description + ": missing tensor '" + hf + "' (needed for " + spec.name + ")");
    check_source(*t, spec.name);
    std::vector<int64_t> want(spec.dims.rbegin(), spec.dims.rend());
    if (t->shape != want)
      throw Error(t->origin + ": tensor '" + t->name + "' has shape " + t->shape_str() + ", but " + cfg_desc +
                  " needs " + shape_of_dims(spec.dims));
    used.insert(hf);
    plan.srcs.push_back(t);
    plan.permute.push_back(spec.name.ends_with("attn_q.weight") ? c.n_heads
                           : spec.name.ends_with("attn_k.weight") ? c.n_kv_heads : 0);
    plan.total += spec_bytes(spec);
  }
  // Tensors left over: rotary inv_freq buffers are recomputed from θ; others are reported.
  std::vector<std::string> unused;
  static const std::regex layer_re(R"(model\.layers\.(\d+)\..*)");
  for (const auto& [n, t] : src.tensors.all()) {
    if (used.count(n) || n.ends_with("rotary_emb.inv_freq")) continue;
    std::smatch m;
    if (std::regex_match(n, m, layer_re) && m[1].length() < 7 && std::stoll(m[1]) >= c.n_layers)
      throw Error(t.origin + ": tensor '" + n + "' belongs to a layer beyond the " + std::to_string(c.n_layers) +
                  " that " + cfg_desc + " declares");
    // Extra per-layer parameters (attention biases, ...) would change the model: refuse those.
    if (n.rfind("model.layers.", 0) == 0)
      throw Error(t.origin + ": tensor '" + n + "' has no place in a llama GGUF (not a LLaMA model?)");
    unused.push_back(n);
  }
  if (!unused.empty() && notes) {
    std::string list;
    for (size_t i = 0; i < unused.size() && i < 5; ++i) list += (i ? ", " : "") + unused[i];
    if (unused.size() > 5) list += ", ...";
    notes->push_back(std::to_string(unused.size()) + " tensor(s) not used by the llama GGUF were ignored: " + list);
  }
  return plan;
}

}  // namespace

void check_hf_llama(const HfLlama& src, const QuantScheme& scheme, std::vector<std::string>* notes) {
  plan_hf_llama(src, scheme, notes);
}

void convert_hf_llama(const HfLlama& src, const QuantScheme& scheme, const Vocab* vocab, const std::string& out,
                      const std::string& name, ThreadPool& pool, const ByteProgress& progress,
                      std::vector<std::string>* notes) {
  const LlamaConfig& c = src.config;
  const LlamaPlan plan = plan_hf_llama(src, scheme, notes);
  const auto& specs = plan.specs;
  const auto& srcs = plan.srcs;
  const auto& permute = plan.permute;
  const uint64_t total = plan.total;
  gguf::Writer w(out);
  write_llama_metadata(w, c, scheme, name, vocab);
  for (const auto& spec : specs) w.add_tensor(spec.name, spec.type, spec.dims);
  w.begin();
  Streamer st(w, pool, progress, total);
  for (size_t i = 0; i < specs.size(); ++i) {
    const SrcTensor& t = *srcs[i];
    RowJob job;
    job.type = specs[i].type;
    job.row_len = specs[i].dims[0];
    job.n_rows = rows_of(specs[i].dims);
    const int64_t heads = permute[i];
    if (heads == 0) {
      job.fill = [&t, &job](int64_t r0, int64_t n, float* dst) { read_f32(t, r0 * job.row_len, n * job.row_len, dst); };
      job.done = [&t, &job](int64_t r0, int64_t n) { release(t, r0 * job.row_len, n * job.row_len); };
    } else {
      if (job.n_rows % (2 * heads)) throw Error(t.origin + ": '" + t.name + "' rows do not split into heads");
      const int64_t hd = job.n_rows / heads, half = hd / 2;
      // GGUF row h·hd + 2i + j comes from Hugging Face row h·hd + j·hd/2 + i (permute_qk_rows).
      job.fill = [&t, &job, hd, half](int64_t r0, int64_t n, float* dst) {
        for (int64_t r = r0; r < r0 + n; ++r) {
          const int64_t h = r / hd, rem = r % hd, src_row = h * hd + (rem % 2) * half + rem / 2;
          read_f32(t, src_row * job.row_len, job.row_len, dst + (r - r0) * job.row_len);
        }
      };
      job.done = [&t, &job](int64_t r0, int64_t n) {
        if (r0 + n == job.n_rows) release(t, 0, job.n_rows * job.row_len);
      };
    }
    st.run(job);
  }
  w.finish();
}

// ---------------------------------------------------------------- quantize

bool vision_type_allowed(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::Q8_0;
}

uint32_t llama_ftype(const QuantScheme& s) {
  switch (s.base) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q8_0: return 7;
    case DType::Q4_K: return s.q4_k_m ? 15 : 14;
    case DType::Q6_K: return 18;
    case DType::BF16: return 32;
    default: return 0;
  }
}

uint64_t llama_tensor_data_bytes(const LlamaConfig& c, const QuantScheme& s, uint64_t alignment) {
  uint64_t total = 0;
  for (const auto& t : llama_tensor_specs(c, s)) total += (spec_bytes(t) + alignment - 1) / alignment * alignment;
  return total;
}

namespace {

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int64_t layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos || dot == 4 || dot - 4 > 6) return -1;
  for (size_t i = 4; i < dot; ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  return std::stoll(name.substr(4, dot - 4));
}

}  // namespace

QuantizeReport quantize_gguf(const std::string& in, const std::string& out, const std::string& type, ThreadPool& pool,
                             const ByteProgress& progress) {
  if (in == out || same_file(in, out))
    throw Error(out + ": is the input file; write the quantized model to a new file");
  const auto scheme = parse_quant_scheme(type);
  if (!scheme)
    throw Error("quantize: unknown type '" + type + "' (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, q4_k_m)");
  const auto f = gguf::File::open(in);
  QuantizeReport rep;
  rep.arch = f->require_string("general.architecture");
  std::vector<DType> types;
  if (rep.arch == "llama") {
    const int64_t n_layers = static_cast<int64_t>(f->require_uint("llama.block_count"));
    for (const auto& t : f->tensors()) {
      if (t.dims.size() == 1) {
        types.push_back(DType::F32);
      } else {
        const int64_t layer = layer_of(t.name);
        if (layer >= n_layers)
          throw Error(in + ": tensor '" + t.name + "' is beyond llama.block_count " + std::to_string(n_layers));
        types.push_back(llama_tensor_type(*scheme, t.name, layer, n_layers, t.dims[0]));
      }
    }
  } else if (rep.arch == kVisionArch) {
    if (scheme->q4_k_m || !vision_type_allowed(scheme->base))
      throw Error(in + ": vision files take f32, f16, bf16 or q8_0 weights, not " + scheme->name() +
                  " (4-bit and K-quant types are for the LLM)");
    const VisionConfig c = read_vision_config(*f);
    std::map<std::string, DType> want;
    for (const auto& s : vision_tensor_specs(c, scheme->base)) want[s.name] = s.type;
    for (const auto& t : f->tensors()) {
      const auto it = want.find(t.name);
      if (it == want.end()) throw Error(in + ": unexpected tensor '" + t.name + "' in a " + kVisionArch + " file");
      types.push_back(it->second);
    }
    if (want.size() != f->tensors().size()) {
      for (const auto& [n, ty] : want)
        if (!f->find_tensor(n)) throw Error(in + ": missing tensor '" + n + "'");
    }
  } else {
    throw Error(in + ": general.architecture is '" + rep.arch + "'; quantize handles llama and " + kVisionArch + " files");
  }
  bool requant = false;
  for (size_t i = 0; i < types.size(); ++i) {
    const DType from = f->tensors()[i].type;
    const bool float_in = from == DType::F32 || from == DType::F16 || from == DType::BF16;
    if (!float_in && from != types[i]) requant = true;
  }
  if (requant)
    rep.notes.push_back("the input holds already-quantized tensors; converting them again adds error — quantize from "
                        "the f16/f32 file when you have it");

  gguf::Writer w(out, f->alignment());
  for (const auto& [k, v] : f->metadata()) {
    if (k == "general.file_type") continue;
    w.set(k, v);
  }
  w.set("general.file_type", gguf::Value::u32(llama_ftype(*scheme)));
  uint64_t total = 0;
  for (size_t i = 0; i < types.size(); ++i) {
    const auto& t = f->tensors()[i];
    w.add_tensor(t.name, types[i], t.dims);
    total += row_bytes(types[i], t.dims[0]) * static_cast<uint64_t>(rows_of(t.dims));
  }
  w.begin();
  Streamer st(w, pool, progress, total);
  for (size_t i = 0; i < types.size(); ++i) {
    const auto& t = f->tensors()[i];
    const uint8_t* data = f->tensor_data(t);
    const size_t in_rb = row_bytes(t.type, t.dims[0]);
    RowJob job;
    job.type = types[i];
    job.row_len = t.dims[0];
    job.n_rows = rows_of(t.dims);
    if (t.type == types[i]) {  // same type: the bytes as they are
      const int64_t chunk = std::max<int64_t>(1, (64 << 20) / static_cast<int64_t>(std::max<size_t>(in_rb, 1)));
      for (int64_t r0 = 0; r0 < job.n_rows; r0 += chunk) {
        const int64_t n = std::min(chunk, job.n_rows - r0);
        w.write_tensor_chunk(data + r0 * in_rb, static_cast<size_t>(n) * in_rb);
        release_pages(data + r0 * in_rb, static_cast<uint64_t>(n) * in_rb);
        st.written += static_cast<uint64_t>(n) * in_rb;
        if (progress) progress(st.written, total);
      }
      ++rep.tensors_copied;
      continue;
    }
    const DType from = t.type;
    job.fill = [data, in_rb, from, &job](int64_t r0, int64_t n, float* dst) {
      for (int64_t r = r0; r < r0 + n; ++r) dequantize_row(from, data + r * in_rb, dst + (r - r0) * job.row_len, job.row_len);
    };
    job.done = [data, in_rb](int64_t r0, int64_t n) { release_pages(data + r0 * in_rb, static_cast<uint64_t>(n) * in_rb); };
    st.run(job);
    ++rep.tensors_converted;
  }
  w.finish();
  return rep;
}

// ---------------------------------------------------------------- GGUF in place

std::string place_llm_gguf(const std::string& src, const std::string& dst, bool force_copy,
                           const ByteProgress& progress) {
  if (!fs::is_symlink(dst) && same_file(src, dst)) return "already in place";
  const std::string tmp = dst + ".tmp";
  std::error_code ec;
  fs::remove(tmp, ec);
  struct stat ss {}, sd {};
  if (::stat(src.c_str(), &ss) != 0) throw Error(src + ": cannot stat: " + std::strerror(errno));
  const std::string dir = fs::path(dst).parent_path().empty() ? "." : fs::path(dst).parent_path().string();
  if (::stat(dir.c_str(), &sd) != 0) throw Error(dir + ": cannot stat: " + std::strerror(errno));
  if (!force_copy && ss.st_dev == sd.st_dev) {
    const std::string target = fs::canonical(src).string();  // resolves links, so dst never points at itself
    fs::create_symlink(target, tmp, ec);
    if (ec) throw Error(tmp + ": cannot create symlink: " + ec.message());
    fs::rename(tmp, dst, ec);
    if (ec) {
      fs::remove(tmp);
      throw Error(dst + ": cannot replace: " + ec.message());
    }
    return "symlink";
  }
  const int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) throw Error(src + ": cannot open: " + std::strerror(errno));
  const int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    ::close(in);
    throw Error(tmp + ": cannot create: " + std::strerror(errno));
  }
  auto fail = [&](const std::string& m) {
    ::close(in);
    ::close(out);
    ::unlink(tmp.c_str());
    throw Error(m);
  };
  const uint64_t total = static_cast<uint64_t>(ss.st_size);
  uint64_t done = 0;
  std::vector<char> buf;
  while (done < total) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(total - done, 64 << 20));
    ssize_t k = ::copy_file_range(in, nullptr, out, nullptr, want, 0);
    if (k < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
      buf.resize(8 << 20);
      k = ::read(in, buf.data(), std::min(want, buf.size()));
      if (k > 0) {
        for (ssize_t off = 0; off < k;) {
          const ssize_t wr = ::write(out, buf.data() + off, static_cast<size_t>(k - off));
          if (wr < 0) {
            if (errno == EINTR) continue;
            fail(tmp + ": write failed: " + std::strerror(errno));
          }
          off += wr;
        }
      }
    }
    if (k < 0) {
      if (errno == EINTR) continue;
      fail(src + ": copy failed: " + std::strerror(errno));
    }
    if (k == 0) fail(src + ": file shrank while copying");
    done += static_cast<uint64_t>(k);
    if (progress) progress(done, total);
  }
  if (::fsync(out) != 0) fail(tmp + ": fsync failed: " + std::strerror(errno));
  ::close(in);
  if (::close(out) != 0) {
    ::unlink(tmp.c_str());
    throw Error(tmp + ": close failed");
  }
  if (::rename(tmp.c_str(), dst.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw Error(dst + ": cannot rename the copy into place: " + std::strerror(errno));
  }
  return "copy";
}

}  // namespace sg
