// Peak memory of `skingpt convert` on a 7B-shaped Hugging Face folder.
//
//   convert_rss [--dir D] [--format safetensors|bin] [--shards N] [--type f16|q4_k_m|...]
//               [--layers N] [--skingpt PATH] [--keep] [--reuse]
//
// Writes a synthetic Llama-2-7B-shaped folder (config.json + F16 weights, sharded
// with an index: model-0000i-of-0000N.safetensors, or pytorch_model-*.bin
// torch.save-style zips, which at 2 shards are ~6.7 GB each and so need ZIP64),
// streaming, ~13.5 GB on disk; then runs `skingpt convert --llm-only` on it as a
// child process and reports the child's peak RSS (getrusage), time and output
// size; spot-checks converted values against the source (including the Q/K
// row permutation); deletes everything unless --keep. Needs ~2.2× the model
// size free (refuses otherwise). Not part of CI: it takes minutes and 27 GB.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/quant.h"
#include "formats/gguf.h"
#include "formats/tensor_source.h"
#include "formats/zip.h"
#include "model/hf_llama.h"
#include "model/llama_file.h"

namespace fs = std::filesystem;

namespace {

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  uint64_t numel() const {
    uint64_t n = 1;
    for (auto d : shape) n *= static_cast<uint64_t>(d);
    return n;
  }
};

// Deterministic f16 values with magnitudes 2^-7..2^-4, random sign: element i of tensor t.
inline uint16_t value_bits(uint64_t t, uint64_t i) {
  uint64_t x = (t + 1) * 0x9E3779B97F4A7C15ull ^ (i * 0xBF58476D1CE4E5B9ull);
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  const uint16_t r = static_cast<uint16_t>(x);
  return static_cast<uint16_t>((r & 0x8000) | ((8 + ((r >> 10) & 3)) << 10) | (r & 0x3FF));
}

void die(const std::string& m) {
  std::fprintf(stderr, "convert_rss: %s\n", m.c_str());
  std::exit(1);
}

class Out {
 public:
  explicit Out(const fs::path& p) : fd_(::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644)), path_(p) {
    if (fd_ < 0) die("cannot create " + p.string());
  }
  ~Out() { ::close(fd_); }
  void write(const void* d, size_t n) {
    const char* p = static_cast<const char*>(d);
    while (n) {
      const ssize_t k = ::write(fd_, p, n);
      if (k < 0) die("write to " + path_.string() + " failed: " + std::strerror(errno));
      p += k;
      n -= static_cast<size_t>(k);
      pos_ += static_cast<uint64_t>(k);
    }
  }
  void write(const std::string& s) { write(s.data(), s.size()); }
  void pwrite_at(uint64_t off, const void* d, size_t n) {
    if (::pwrite(fd_, d, n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) die("pwrite failed");
  }
  uint64_t pos() const { return pos_; }

 private:
  int fd_;
  fs::path path_;
  uint64_t pos_ = 0;
};

// Streams tensor t's f16 bytes into out (and its CRC-32 when asked).
uint32_t stream_tensor(Out& out, uint64_t tid, uint64_t numel, bool crc) {
  static std::vector<uint16_t> buf(32 << 20);
  uint32_t c = 0;
  for (uint64_t i = 0; i < numel;) {
    const uint64_t n = std::min<uint64_t>(buf.size(), numel - i);
    for (uint64_t k = 0; k < n; ++k) buf[k] = value_bits(tid, i + k);
    if (crc) c = sg::crc32(reinterpret_cast<const uint8_t*>(buf.data()), n * 2, c);
    out.write(buf.data(), n * 2);
    i += n;
  }
  return c;
}

void le(std::string& s, uint64_t v, int b) {
  for (int i = 0; i < b; ++i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
}

void write_safetensors(const fs::path& p, const std::vector<Tensor>& ts, const std::vector<uint64_t>& ids) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  h["__metadata__"] = {{"format", "pt"}};
  uint64_t off = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    h[ts[i].name] = {{"dtype", "F16"}, {"shape", ts[i].shape}, {"data_offsets", {off, off + ts[i].numel() * 2}}};
    off += ts[i].numel() * 2;
  }
  std::string js = h.dump();
  while ((js.size() + 8) % 8) js += ' ';
  Out out(p);
  std::string head;
  le(head, js.size(), 8);
  out.write(head + js);
  for (size_t i = 0; i < ts.size(); ++i) stream_tensor(out, ids[i], ts[i].numel(), false);
}

// A torch.save-style zip with ZIP64 records throughout, members written streaming
// (the CRC is patched into each local header afterwards).
void write_torch_bin(const fs::path& p, const std::vector<Tensor>& ts, const std::vector<uint64_t>& ids) {
  const std::string root = p.stem().string();
  auto s = [](const std::string& x) {
    std::string o = "X";
    le(o, x.size(), 4);
    return o + x;
  };
  auto K = [](uint64_t v) {
    std::string o("\x8a\x08", 2);
    le(o, v, 8);
    return o;
  };
  std::string pkl = std::string("\x80\x02", 2) + "ccollections\nOrderedDict\n)R(";
  for (size_t i = 0; i < ts.size(); ++i) {
    std::string shape = "(", stride = "(";
    uint64_t st = 1;
    std::vector<uint64_t> strides(ts[i].shape.size());
    for (size_t k = ts[i].shape.size(); k-- > 0;) {
      strides[k] = st;
      st *= static_cast<uint64_t>(ts[i].shape[k]);
    }
    for (size_t k = 0; k < ts[i].shape.size(); ++k) {
      shape += K(static_cast<uint64_t>(ts[i].shape[k]));
      stride += K(strides[k]);
    }
    pkl += s(ts[i].name) + "ctorch._utils\n_rebuild_tensor_v2\n((" + s("storage") + "ctorch\nHalfStorage\n" +
           s(std::to_string(i)) + s("cpu") + K(ts[i].numel()) + "tQ" + K(0) + shape + "t" + stride + "t" +
           "\x89" "ccollections\nOrderedDict\n)RtR";
  }
  pkl += "u.";
  Out out(p);
  std::string cd;
  uint64_t n_members = 0;
  auto member = [&](const std::string& name, uint64_t size, const std::function<uint32_t()>& body) {
    const uint64_t off = out.pos();
    std::string h;
    le(h, 0x04034b50, 4);
    le(h, 45, 2);
    le(h, 0, 2);
    le(h, 0, 2);
    le(h, 0, 4);
    le(h, 0, 4);  // CRC, patched below
    le(h, 0xFFFFFFFFu, 4);
    le(h, 0xFFFFFFFFu, 4);
    le(h, name.size(), 2);
    // ZIP64 extra (20 bytes) + padding so the data is 64-byte aligned, as torch.save does.
    const uint64_t base = off + 30 + name.size() + 20 + 4;
    const uint64_t pad = (64 - base % 64) % 64;
    le(h, 20 + 4 + pad, 2);
    h += name;
    le(h, 1, 2);
    le(h, 16, 2);
    le(h, size, 8);
    le(h, size, 8);
    le(h, 0x4246, 2);  // torch's "FB" padding record
    le(h, pad, 2);
    h += std::string(pad, 'Z');
    out.write(h);
    const uint32_t crc = body();
    uint8_t c4[4] = {static_cast<uint8_t>(crc), static_cast<uint8_t>(crc >> 8), static_cast<uint8_t>(crc >> 16),
                     static_cast<uint8_t>(crc >> 24)};
    out.pwrite_at(off + 14, c4, 4);
    le(cd, 0x02014b50, 4);
    le(cd, 45, 2);
    le(cd, 45, 2);
    le(cd, 0, 2);
    le(cd, 0, 2);
    le(cd, 0, 4);
    le(cd, crc, 4);
    le(cd, 0xFFFFFFFFu, 4);
    le(cd, 0xFFFFFFFFu, 4);
    le(cd, name.size(), 2);
    le(cd, 28, 2);
    le(cd, 0, 2);
    le(cd, 0, 2);
    le(cd, 0, 2);
    le(cd, 0, 4);
    le(cd, 0xFFFFFFFFu, 4);
    cd += name;
    le(cd, 1, 2);
    le(cd, 24, 2);
    le(cd, size, 8);
    le(cd, size, 8);
    le(cd, off, 8);
    ++n_members;
  };
  member(root + "/data.pkl", pkl.size(), [&] {
    out.write(pkl);
    return sg::crc32(reinterpret_cast<const uint8_t*>(pkl.data()), pkl.size());
  });
  for (size_t i = 0; i < ts.size(); ++i)
    member(root + "/data/" + std::to_string(i), ts[i].numel() * 2, [&] { return stream_tensor(out, ids[i], ts[i].numel(), true); });
  member(root + "/version", 2, [&] {
    out.write("3\n", 2);
    return sg::crc32(reinterpret_cast<const uint8_t*>("3\n"), 2);
  });
  const uint64_t cd_off = out.pos();
  out.write(cd);
  const uint64_t rec = out.pos();
  std::string t;
  le(t, 0x06064b50, 4);
  le(t, 44, 8);
  le(t, 45, 2);
  le(t, 45, 2);
  le(t, 0, 4);
  le(t, 0, 4);
  le(t, n_members, 8);
  le(t, n_members, 8);
  le(t, cd.size(), 8);
  le(t, cd_off, 8);
  le(t, 0x07064b50, 4);
  le(t, 0, 4);
  le(t, rec, 8);
  le(t, 1, 4);
  le(t, 0x06054b50, 4);
  le(t, 0, 4);
  le(t, 0xFFFF, 2);
  le(t, 0xFFFF, 2);
  le(t, 0xFFFFFFFFu, 4);
  le(t, 0xFFFFFFFFu, 4);
  le(t, 0, 2);
  out.write(t);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/work/tmp/convert-rss", format = "safetensors", type = "f16", exe;
  int shards = 2, layers = 32;
  bool keep = false, reuse = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--dir") dir = next();
    else if (a == "--format") format = next();
    else if (a == "--shards") shards = std::stoi(next());
    else if (a == "--layers") layers = std::stoi(next());
    else if (a == "--type") type = next();
    else if (a == "--skingpt") exe = next();
    else if (a == "--keep") keep = true;
    else if (a == "--reuse") reuse = true;
    else die("unknown option " + a + " (see the comment at the top of bench/convert_rss.cpp)");
  }
  if (format != "safetensors" && format != "bin") die("--format is safetensors or bin");
  if (exe.empty()) exe = (fs::read_symlink("/proc/self/exe").parent_path() / "skingpt").string();
  if (!fs::exists(exe)) die(exe + " not found (build the skingpt target or pass --skingpt)");

  // Llama-2-7B.
  sg::LlamaConfig c;
  c.n_vocab = 32000; c.dim = 4096; c.n_layers = 32; c.n_heads = 32; c.n_kv_heads = 32; c.ffn = 11008;
  c.n_ctx_train = 4096; c.rope_dim = 128; c.rms_eps = 1e-5f;
  if (layers < 8 || layers > 32) die("--layers must be 8..32 (the spot checks read layer 7)");
  c.n_layers = layers;
  std::vector<Tensor> ts = {{"model.embed_tokens.weight", {c.n_vocab, c.dim}}};
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"})
      ts.push_back({p + n + ".weight", {c.dim, c.dim}});
    ts.push_back({p + "mlp.gate_proj.weight", {c.ffn, c.dim}});
    ts.push_back({p + "mlp.up_proj.weight", {c.ffn, c.dim}});
    ts.push_back({p + "mlp.down_proj.weight", {c.dim, c.ffn}});
    ts.push_back({p + "input_layernorm.weight", {c.dim}});
    ts.push_back({p + "post_attention_layernorm.weight", {c.dim}});
  }
  ts.push_back({"model.norm.weight", {c.dim}});
  ts.push_back({"lm_head.weight", {c.n_vocab, c.dim}});
  uint64_t total = 0;
  for (const auto& t : ts) total += t.numel() * 2;

  const fs::path root(dir), src = root / "hf", out = root / "out";
  fs::create_directories(root);
  struct statvfs sv {};
  if (::statvfs(root.c_str(), &sv) != 0) die("cannot statvfs " + dir);
  const uint64_t free_bytes = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
  const bool have_src = reuse && fs::exists(src / "config.json");
  const uint64_t need = (have_src ? 0 : total) + total + (1ull << 30);
  std::printf("%s", layers == 32 ? "" : "(reduced depth) ");
  std::printf("7B-shaped F16 folder: %zu tensors, %.2f GB; %.1f GB free in %s (need %.1f)\n", ts.size(), total / 1e9,
              free_bytes / 1e9, dir.c_str(), need / 1e9);
  if (free_bytes < need) die("not enough free disk space");

  using clk = std::chrono::steady_clock;
  if (!have_src) {
    fs::remove_all(src);
    fs::create_directories(src);
    const auto t0 = clk::now();
    nlohmann::json cfg = {{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"hidden_size", c.dim},
                          {"num_hidden_layers", c.n_layers}, {"num_attention_heads", c.n_heads},
                          {"num_key_value_heads", c.n_kv_heads}, {"intermediate_size", c.ffn}, {"vocab_size", c.n_vocab},
                          {"rms_norm_eps", 1e-5}, {"max_position_embeddings", 4096}, {"torch_dtype", "float16"}};
    std::ofstream(src / "config.json") << cfg.dump(2);
    nlohmann::json idx;
    idx["metadata"]["total_size"] = total;
    // Balance shards by bytes, keeping tensor order.
    size_t next = 0;
    uint64_t done = 0;
    for (int s = 0; s < shards; ++s) {
      char name[64];
      std::snprintf(name, sizeof name, format == "bin" ? "pytorch_model-%05d-of-%05d.bin" : "model-%05d-of-%05d.safetensors",
                    s + 1, shards);
      std::vector<Tensor> part;
      std::vector<uint64_t> ids;
      const uint64_t target = total * static_cast<uint64_t>(s + 1) / static_cast<uint64_t>(shards);
      while (next < ts.size() && (done < target || s == shards - 1)) {
        part.push_back(ts[next]);
        ids.push_back(next);
        idx["weight_map"][ts[next].name] = name;
        done += ts[next].numel() * 2;
        ++next;
      }
      if (format == "bin") write_torch_bin(src / name, part, ids);
      else write_safetensors(src / name, part, ids);
      std::printf("  wrote %s (%.2f GB)\n", name, fs::file_size(src / name) / 1e9);
      std::fflush(stdout);
    }
    std::ofstream(src / (format == "bin" ? "pytorch_model.bin.index.json" : "model.safetensors.index.json")) << idx.dump(2);
    std::printf("  generated in %.0f s\n", std::chrono::duration<double>(clk::now() - t0).count());
  }

  fs::remove_all(out);
  std::printf("running: %s convert --llm-only --llm %s --llm-type %s -t 2 -o %s\n", exe.c_str(), src.c_str(), type.c_str(),
              out.c_str());
  std::fflush(stdout);
  const auto t0 = clk::now();
  const pid_t pid = fork();
  if (pid == 0) {
    execl(exe.c_str(), exe.c_str(), "convert", "--llm-only", "--llm", src.c_str(), "--llm-type", type.c_str(), "-t", "2",
          "-o", out.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  struct rusage ru {};
  if (wait4(pid, &status, 0, &ru) < 0) die("wait4 failed");
  const double secs = std::chrono::duration<double>(clk::now() - t0).count();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("skingpt convert failed");
  const fs::path gg = out / "llm.gguf";
  const double peak_mb = ru.ru_maxrss / 1024.0;
  std::printf("peak RSS of skingpt convert: %.0f MB  (limit 1536 MB: %s)\n", peak_mb, peak_mb < 1536 ? "ok" : "EXCEEDED");
  std::printf("time %.0f s (%.0f MB/s of input), llm.gguf %.2f GB (%s)\n", secs, total / 1e6 / secs, fs::file_size(gg) / 1e9,
              type.c_str());

  // Spot checks against the generator: embeddings, and attn_q/attn_k rows through the Q/K permutation.
  const auto f = sg::gguf::File::open(gg.string());
  auto tid = [&](const std::string& hf) {
    for (size_t i = 0; i < ts.size(); ++i)
      if (ts[i].name == hf) return static_cast<uint64_t>(i);
    die("no " + hf);
    return uint64_t{0};
  };
  // The expected value: the generated source row, put through the same conversion
  // (f16 → f32 → the tensor's type → f32), so the comparison is exact for every type.
  int bad = 0, checks = 0;
  for (int64_t g : std::initializer_list<int64_t>{0, 1, 2, 127, 128, 4000, 4095}) {
    for (const auto& [gname, hname] : std::vector<std::pair<std::string, std::string>>{
             {"blk." + std::to_string(c.n_layers - 1) + ".attn_q.weight",
              "model.layers." + std::to_string(c.n_layers - 1) + ".self_attn.q_proj.weight"},
             {"blk.7.attn_k.weight", "model.layers.7.self_attn.k_proj.weight"},
             {"blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"},
             {"blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"},
             {"token_embd.weight", "model.embed_tokens.weight"}}) {
      const bool qk = gname.find("attn_q") != std::string::npos || gname.find("attn_k") != std::string::npos;
      const int64_t hd = 128, h = g / hd, rem = g % hd;
      const int64_t hf_row = qk ? h * hd + (rem % 2) * (hd / 2) + rem / 2 : g;
      const auto& t = f->require_tensor(gname);
      const int64_t row_len = t.dims[0];
      std::vector<float> src(static_cast<size_t>(row_len)), back(src.size()), got(src.size());
      for (int64_t k = 0; k < row_len; ++k)
        src[static_cast<size_t>(k)] = sg::f16_to_f32(value_bits(tid(hname), static_cast<uint64_t>(hf_row * row_len + k)));
      std::vector<uint8_t> q(sg::row_bytes(t.type, row_len));
      sg::quantize_row(t.type, src.data(), q.data(), row_len);
      sg::dequantize_row(t.type, q.data(), back.data(), row_len);
      sg::dequantize_row(t.type, f->tensor_data(t) + g * sg::row_bytes(t.type, row_len), got.data(), row_len);
      ++checks;
      if (got != back) ++bad;
    }
  }
  std::printf("spot checks: %d/%d rows exactly as generated and converted%s\n", checks - bad, checks, bad ? "  <-- MISMATCH" : "");
  if (!keep) {
    fs::remove_all(out);
    if (!reuse) fs::remove_all(src);
  }
  return bad ? 1 : 0;
}
