#include "train/io.h"

#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/quant.h"
#include "formats/gguf.h"
#include "model/hf_llama.h"
#include "model/vision_file.h"

namespace sg::train {

namespace {
const std::string kLlm = "llm_model.";
}  // namespace

// ------------------------------------------------------------------ export

namespace {

void write_tensor(gguf::Writer& w, const TensorSpec& spec, const at::Tensor& src, const std::string& src_name,
                  bool permute_heads = false, int64_t heads = 0) {
  int64_t n = 1;
  for (auto d : spec.dims) n *= d;
  at::Tensor t = src.detach().to(at::kCPU, at::kFloat).contiguous();
  if (t.numel() != n)
    throw Error("export: '" + src_name + "' has " + std::to_string(t.numel()) + " values, GGUF tensor '" + spec.name +
                "' needs " + std::to_string(n));
  const int64_t row = spec.dims[0], rows = n / row;
  std::vector<float> f(t.data_ptr<float>(), t.data_ptr<float>() + n);
  if (permute_heads) {
    std::vector<float> out(f.size());
    permute_qk_rows(f.data(), out.data(), rows, row, heads);
    f.swap(out);
  }
  const size_t rb = row_bytes(spec.type, row);
  std::vector<uint8_t> q(rb * rows);
  for (int64_t r = 0; r < rows; ++r) quantize_row(spec.type, f.data() + r * row, q.data() + r * rb, row);
  w.write_tensor_data(q.data(), q.size());
}

std::string llm_param_name(const std::string& gguf_name) {
  const std::string hf = hf_llama_source_name(gguf_name);
  if (hf.empty()) throw Error("export: no Hugging Face name for '" + gguf_name + "'");
  return kLlm + hf;
}

}  // namespace

std::vector<std::string> export_model(const Net& net, const Vocab* vocab, const std::string& dir, DType vision_type,
                                      const QuantScheme& llm_scheme, const std::string& name) {
  const ModelConfig& c = net.config();
  if (!c.parts.full_vision() && !c.parts.llm)
    throw Error("export: the model has neither a complete vision side (ViT + Q-Former + projection) nor an LLM; "
                "a pretrain-vit checkpoint is an input to step1 (--init), not a model");
  std::filesystem::create_directories(dir);
  std::vector<std::string> written;
  if (c.parts.full_vision()) {
    const std::string path = (std::filesystem::path(dir) / "vision.gguf").string();
    gguf::Writer w(path);
    write_vision_metadata(w, c.vision, name);
    const auto specs = vision_tensor_specs(c.vision, vision_type);
    for (const auto& s : specs) w.add_tensor(s.name, s.type, s.dims);
    w.begin();
    for (const auto& s : specs) {
      const std::string src = vision_source_name(s.name);
      write_tensor(w, s, net[src], src);
    }
    w.finish();
    written.push_back(path);
  }
  if (c.parts.llm) {
    const std::string path = (std::filesystem::path(dir) / "llm.gguf").string();
    gguf::Writer w(path);
    write_llama_metadata(w, c.llm, llm_scheme, name, vocab);
    const auto specs = llama_tensor_specs(c.llm, llm_scheme);
    for (const auto& s : specs) w.add_tensor(s.name, s.type, s.dims);
    w.begin();
    for (const auto& s : specs) {
      const std::string src = llm_param_name(s.name);
      const bool q = s.name.find("attn_q.weight") != std::string::npos;
      const bool k = s.name.find("attn_k.weight") != std::string::npos;
      write_tensor(w, s, net[src], src, q || k, q ? c.llm.n_heads : c.llm.n_kv_heads);
    }
    w.finish();
    written.push_back(path);
  }
  return written;
}

// ------------------------------------------------------------------ import

GgufSource open_gguf_source(const std::string& path) {
  GgufSource s;
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  if (fs::is_directory(path)) {
    for (const char* f : {"vision.gguf", "llm.gguf"})
      if (fs::exists(fs::path(path) / f)) files.push_back((fs::path(path) / f).string());
    if (files.empty()) throw Error(path + ": a model folder needs vision.gguf and/or llm.gguf");
  } else {
    files.push_back(path);
  }
  for (const auto& f : files) {
    auto file = gguf::File::open(f);
    const std::string arch = file->require_string("general.architecture");
    if (arch == kVisionArch) {
      s.vision_path = f;
      s.config.vision = read_vision_config(*file);
      s.config.parts.vit = s.config.parts.qformer = s.config.parts.proj = true;
    } else if (arch == "llama") {
      s.llm_path = f;
      file.reset();
      auto m = LlamaModel::load(f, gguf::Residency::Map);
      s.config.llm = m->config();
      s.config.parts.llm = true;
      if (m->file().find("tokenizer.ggml.model")) {
        s.vocab = vocab_from_gguf(m->file());
        s.has_vocab = true;
      }
    } else {
      throw Error(f + ": general.architecture '" + arch + "' is neither llama nor " + kVisionArch);
    }
  }
  return s;
}

namespace {

std::vector<float> read_all(const gguf::File& f, const gguf::TensorInfo& t) {
  const int64_t n = t.n_elements(), row = t.dims.empty() ? 1 : t.dims[0], rows = n / row;
  std::vector<float> v(n);
  const uint8_t* d = f.tensor_data(t);
  const size_t rb = row_bytes(t.type, row);
  for (int64_t r = 0; r < rows; ++r) dequantize_row(t.type, d + r * rb, v.data() + r * row, row);
  return v;
}

void copy_into(const at::Tensor& dst, const std::vector<float>& v, const std::string& what) {
  if (dst.numel() != static_cast<int64_t>(v.size()))
    throw Error(what + " has " + std::to_string(v.size()) + " values, the model's parameter has " +
                std::to_string(dst.numel()));
  at::NoGradGuard ng;
  const at::Tensor src = at::from_blob(const_cast<float*>(v.data()), dst.sizes(), at::kFloat);
  dst.copy_(src);
}

}  // namespace

int64_t load_gguf_weights(Net& net, const GgufSource& src) {
  int64_t copied = 0;
  if (!src.vision_path.empty() && net.config().parts.vit) {
    auto f = gguf::File::open(src.vision_path);
    for (const auto& t : f->tensors()) {
      const std::string name = vision_source_name(t.name);
      if (!net.has(name)) continue;  // e.g. Q-Former tensors when only the ViT is built
      copy_into(net[name], read_all(*f, t), src.vision_path + ": " + t.name);
      ++copied;
    }
  }
  if (!src.llm_path.empty() && net.config().parts.llm) {
    auto f = gguf::File::open(src.llm_path);
    const auto& c = net.config().llm;
    for (const auto& spec : llama_tensor_specs(c, QuantScheme{})) {
      const gguf::TensorInfo* t = f->find_tensor(spec.name);
      if (!t && spec.name == "output.weight") t = f->find_tensor("token_embd.weight");  // tied embeddings
      if (!t) throw Error(src.llm_path + ": missing tensor '" + spec.name + "'");
      std::vector<float> v = read_all(*f, *t);
      const bool q = spec.name.find("attn_q.weight") != std::string::npos;
      const bool k = spec.name.find("attn_k.weight") != std::string::npos;
      if (q || k) {
        // GGUF row h·hd + 2i + j ← Hugging Face row h·hd + j·hd/2 + i: invert permute_qk_rows.
        const int64_t heads = q ? c.n_heads : c.n_kv_heads, cols = c.dim,
                      rows = static_cast<int64_t>(v.size()) / cols, hd = rows / heads, half = hd / 2;
        std::vector<float> hf(v.size());
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t j = 0; j < 2; ++j)
            for (int64_t i = 0; i < half; ++i)
              std::memcpy(&hf[(h * hd + j * half + i) * cols], &v[(h * hd + 2 * i + j) * cols], sizeof(float) * cols);
        v.swap(hf);
      }
      copy_into(net[llm_param_name(spec.name)], v, src.llm_path + ": " + spec.name);
      ++copied;
    }
  }
  return copied;
}

// ------------------------------------------------------------------ checkpoints

namespace {

using json = nlohmann::json;
constexpr const char* kFormat = "skingpt-train-checkpoint";

json config_to_json(const ModelConfig& c) {
  const auto& v = c.vision;
  const auto& l = c.llm;
  json j;
  j["parts"] = {{"vit", c.parts.vit}, {"qformer", c.parts.qformer}, {"proj", c.parts.proj},
                {"llm", c.parts.llm}, {"head_classes", c.parts.head_classes}};
  j["vision"] = {{"image_size", v.image_size}, {"patch_size", v.patch_size}, {"vit_width", v.vit_width},
                 {"vit_depth", v.vit_depth}, {"vit_heads", v.vit_heads}, {"vit_ffn", v.vit_ffn},
                 {"vit_eps", v.vit_eps}, {"ln_vision_eps", v.ln_vision_eps}, {"qf_width", v.qf_width},
                 {"qf_depth", v.qf_depth}, {"qf_heads", v.qf_heads}, {"qf_ffn", v.qf_ffn},
                 {"qf_cross_freq", v.qf_cross_freq}, {"n_query", v.n_query}, {"qf_eps", v.qf_eps},
                 {"llm_dim", v.llm_dim}, {"mean", {v.mean[0], v.mean[1], v.mean[2]}},
                 {"std", {v.std[0], v.std[1], v.std[2]}}};
  j["llm"] = {{"n_vocab", l.n_vocab}, {"dim", l.dim}, {"n_layers", l.n_layers}, {"n_heads", l.n_heads},
              {"n_kv_heads", l.n_kv_heads}, {"ffn", l.ffn}, {"n_ctx_train", l.n_ctx_train},
              {"rope_dim", l.rope_dim}, {"rms_eps", l.rms_eps}, {"rope_theta", l.rope_theta}};
  return j;
}

ModelConfig config_from_json(const json& j) {
  ModelConfig c;
  const auto& p = j.at("parts");
  c.parts.vit = p.at("vit");
  c.parts.qformer = p.at("qformer");
  c.parts.proj = p.at("proj");
  c.parts.llm = p.at("llm");
  c.parts.head_classes = p.at("head_classes");
  const auto& v = j.at("vision");
  auto& cv = c.vision;
  cv.image_size = v.at("image_size"); cv.patch_size = v.at("patch_size"); cv.vit_width = v.at("vit_width");
  cv.vit_depth = v.at("vit_depth"); cv.vit_heads = v.at("vit_heads"); cv.vit_ffn = v.at("vit_ffn");
  cv.vit_eps = v.at("vit_eps"); cv.ln_vision_eps = v.at("ln_vision_eps"); cv.qf_width = v.at("qf_width");
  cv.qf_depth = v.at("qf_depth"); cv.qf_heads = v.at("qf_heads"); cv.qf_ffn = v.at("qf_ffn");
  cv.qf_cross_freq = v.at("qf_cross_freq"); cv.n_query = v.at("n_query"); cv.qf_eps = v.at("qf_eps");
  cv.llm_dim = v.at("llm_dim");
  for (int i = 0; i < 3; ++i) {
    cv.mean[i] = v.at("mean").at(i);
    cv.std[i] = v.at("std").at(i);
  }
  const auto& l = j.at("llm");
  auto& cl = c.llm;
  cl.n_vocab = l.at("n_vocab"); cl.dim = l.at("dim"); cl.n_layers = l.at("n_layers"); cl.n_heads = l.at("n_heads");
  cl.n_kv_heads = l.at("n_kv_heads"); cl.ffn = l.at("ffn"); cl.n_ctx_train = l.at("n_ctx_train");
  cl.rope_dim = l.at("rope_dim"); cl.rms_eps = l.at("rms_eps"); cl.rope_theta = l.at("rope_theta");
  return c;
}

// The vocabulary as bytes: flags, then per piece (u32 length, bytes, f32 score, i32 type).
std::vector<uint8_t> vocab_bytes(const Vocab& v) {
  std::vector<uint8_t> b;
  auto put = [&](const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
  };
  const uint32_t n = static_cast<uint32_t>(v.size());
  const int32_t hdr[3] = {v.bos, v.eos, v.unk};
  const uint8_t flags[3] = {v.add_bos, v.add_space_prefix, v.byte_fallback};
  put(&n, 4);
  put(hdr, sizeof hdr);
  put(flags, sizeof flags);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint32_t len = static_cast<uint32_t>(v.pieces[i].size());
    const int32_t type = static_cast<int32_t>(v.types[i]);
    put(&len, 4);
    put(v.pieces[i].data(), len);
    put(&v.scores[i], 4);
    put(&type, 4);
  }
  return b;
}

Vocab vocab_from_bytes(const uint8_t* d, size_t size, const std::string& name) {
  size_t at = 0;
  auto get = [&](void* p, size_t n) {
    if (at + n > size) throw Error(name + ": truncated tokenizer in the checkpoint");
    std::memcpy(p, d + at, n);
    at += n;
  };
  Vocab v;
  uint32_t n = 0;
  int32_t hdr[3];
  uint8_t flags[3];
  get(&n, 4);
  get(hdr, sizeof hdr);
  get(flags, sizeof flags);
  v.bos = hdr[0];
  v.eos = hdr[1];
  v.unk = hdr[2];
  v.add_bos = flags[0];
  v.add_space_prefix = flags[1];
  v.byte_fallback = flags[2];
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t len = 0;
    get(&len, 4);
    if (at + len > size) throw Error(name + ": truncated tokenizer in the checkpoint");
    v.pieces.emplace_back(reinterpret_cast<const char*>(d + at), len);
    at += len;
    float score;
    int32_t type;
    get(&score, 4);
    get(&type, 4);
    v.scores.push_back(score);
    v.types.push_back(static_cast<TokenType>(type));
  }
  check_vocab(v, name);
  return v;
}

}  // namespace

void write_checkpoint(const std::string& path, const CheckpointMeta& m, const Net& net, const Vocab* vocab,
                      const torch::optim::Optimizer* optimizer) {
  torch::serialize::OutputArchive ar;
  json j;
  j["format"] = kFormat;
  j["version"] = 1;
  j["stage"] = m.stage;
  j["step"] = m.step;
  j["seed"] = m.seed;
  j["config"] = config_to_json(m.config);
  j["classes"] = m.classes;
  j["init"] = m.init;
  j["slim"] = m.slim;
  j["trainable"] = m.trainable;
  std::vector<std::string> names;
  for (size_t i = 0; i < net.names().size(); ++i) {
    const std::string& n = net.names()[i];
    if (m.slim && std::find(m.trainable.begin(), m.trainable.end(), n) == m.trainable.end()) continue;
    ar.write("t" + std::to_string(names.size()), net.tensors()[i].detach().to(at::kCPU), true);
    names.push_back(n);
  }
  j["names"] = names;
  j["has_vocab"] = vocab != nullptr;
  j["has_optimizer"] = optimizer != nullptr;
  ar.write("meta", c10::IValue(j.dump()));
  if (vocab) {
    const std::vector<uint8_t> b = vocab_bytes(*vocab);
    ar.write("vocab", at::from_blob(const_cast<uint8_t*>(b.data()), {static_cast<int64_t>(b.size())}, at::kByte).clone(),
             true);
  }
  if (optimizer) {
    torch::serialize::OutputArchive o;
    optimizer->save(o);
    ar.write("optimizer", o);
  }
  // Write beside, then rename: an interrupted save never leaves a broken checkpoint.
  const std::string tmp = path + ".tmp";
  ar.save_to(tmp);
  std::filesystem::rename(tmp, path);
}

Source read_source(const std::string& path, at::Device device) {
  Source s;
  s.path = path;
  namespace fs = std::filesystem;
  if (!fs::exists(path)) throw Error(path + ": no such file or folder");
  bool gguf_file = false;
  if (!fs::is_directory(path)) {
    std::ifstream f(path, std::ios::binary);
    char magic[4] = {};
    f.read(magic, 4);
    gguf_file = std::memcmp(magic, "GGUF", 4) == 0;
  }
  if (fs::is_directory(path) || gguf_file) {
    s.gguf = open_gguf_source(path);
    s.config = s.gguf.config;
    s.has_vocab = s.gguf.has_vocab;
    s.vocab = s.gguf.vocab;
    return s;
  }
  s.is_checkpoint = true;
  auto ar = std::make_shared<torch::serialize::InputArchive>();
  try {
    ar->load_from(path, device);
  } catch (const c10::Error& e) {
    throw Error(path + ": not a model folder, GGUF file or training checkpoint (" +
                std::string(e.what_without_backtrace()).substr(0, 200) + ")");
  }
  c10::IValue meta;
  json j;
  try {
    ar->read("meta", meta);
    j = json::parse(meta.toStringRef());
    if (j.at("format") != kFormat) throw Error("format");
  } catch (const std::exception&) {
    throw Error(path + ": not a skingpt training checkpoint (no readable 'meta')");
  }
  try {
    s.stage = j.at("stage");
    s.step = j.at("step");
    s.config = config_from_json(j.at("config"));
    s.classes = j.at("classes").get<std::vector<std::string>>();
    s.init = j.at("init").get<std::vector<std::string>>();
    s.slim = j.at("slim");
    s.names = j.at("names").get<std::vector<std::string>>();
    s.has_vocab = j.at("has_vocab");
    s.has_optimizer = j.at("has_optimizer");
  } catch (const json::exception& e) {
    throw Error(path + ": damaged checkpoint metadata (" + e.what() + ")");
  }
  for (size_t i = 0; i < s.names.size(); ++i) {
    at::Tensor t;
    ar->read("t" + std::to_string(i), t, true);
    s.tensors.push_back(t);
  }
  if (s.has_vocab) {
    at::Tensor b;
    ar->read("vocab", b, true);
    b = b.to(at::kCPU).contiguous();
    s.vocab = vocab_from_bytes(b.data_ptr<uint8_t>(), static_cast<size_t>(b.numel()), path);
  }
  if (s.has_optimizer) {
    s.optimizer = std::make_shared<torch::serialize::InputArchive>();
    ar->read("optimizer", *s.optimizer);
  }
  return s;
}

int64_t load_source_weights(Net& net, const Source& s) {
  if (!s.is_checkpoint) return load_gguf_weights(net, s.gguf);
  at::NoGradGuard ng;
  int64_t n = 0;
  for (size_t i = 0; i < s.names.size(); ++i) {
    if (!net.has(s.names[i])) continue;
    const at::Tensor& dst = net[s.names[i]];
    if (dst.sizes() != s.tensors[i].sizes())
      throw Error(s.path + ": '" + s.names[i] + "' has shape " + c10::str(s.tensors[i].sizes()) +
                  ", the model needs " + c10::str(dst.sizes()));
    dst.copy_(s.tensors[i]);
    ++n;
  }
  return n;
}

}  // namespace sg::train
