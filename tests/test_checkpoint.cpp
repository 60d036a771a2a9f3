// Checkpoint readers: PyTorch zip + restricted unpickler, safetensors (single
// and sharded), against every entry the reference manifest describes; and
// hostile or broken inputs, which must give one sg::Error, never a crash and
// never execute anything.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "checkpoint_fixtures.h"
#include "core/error.h"
#include "core/quant.h"
#include "formats/pickle.h"
#include "formats/safetensors.h"
#include "formats/torch_checkpoint.h"
#include "formats/zip.h"
#include "test_util.h"

namespace sg {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;
using test::ref_dir;
namespace pk = test::pk;

nlohmann::json manifest() {
  static const nlohmann::json m = nlohmann::json::parse(test::read_bytes(ref_dir() / "manifest.json"));
  return m;
}

const nlohmann::json& checkpoint_entry(const std::string& file) {
  static const nlohmann::json m = manifest();
  for (const auto& c : m["checkpoints"])
    if (c["file"] == file) return c;
  throw std::runtime_error("no manifest entry for " + file);
}

std::string ck(const std::string& rel) { return (ref_dir() / rel).string(); }

std::vector<float> all_f32(const SrcTensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  read_f32(t, 0, t.numel(), v.data());
  return v;
}

// Every tensor the manifest lists for a checkpoint: same dtype and shape; values
// equal to the reference parameter (or to its fp16 rounding) exactly.
void check_against_manifest(const std::string& file, const std::map<std::string, const SrcTensor*>& got) {
  const auto& c = checkpoint_entry(file);
  size_t compared = 0;
  for (const auto& e : c["entries"]) {
    if (e.contains("type") && e["type"] != "tensor") continue;
    const std::string key = e["key"];
    SCOPED_TRACE(file + ": " + key);
    auto it = got.find(key);
    ASSERT_NE(it, got.end());
    const SrcTensor& t = *it->second;
    const std::string dt = e["dtype"];
    const std::map<std::string, SrcType> types = {{"float32", SrcType::F32}, {"float16", SrcType::F16},
                                                  {"int64", SrcType::I64},   {"F16", SrcType::F16},
                                                  {"F32", SrcType::F32}};
    ASSERT_TRUE(types.count(dt));
    EXPECT_EQ(t.type, types.at(dt));
    EXPECT_EQ(t.shape, e["shape"].get<std::vector<int64_t>>());
    if (e["ref"].is_null()) continue;
    const fs::path p = ref_dir() / "params" / (e["ref"].get<std::string>() + ".bin");
    if (t.type == SrcType::I64) {
      const auto want = test::read_i64(p);
      ASSERT_EQ(want.size(), static_cast<size_t>(t.numel()));
      std::vector<int64_t> v(want.size());
      std::memcpy(v.data(), t.data, t.nbytes);
      EXPECT_EQ(v, want);
    } else {
      auto want = test::read_f32(p);
      if (e["relation"] == "fp16_of")
        for (auto& x : want) x = f16_to_f32(f32_to_f16(x));
      const auto v = all_f32(t);
      ASSERT_EQ(v.size(), want.size());
      EXPECT_EQ(std::memcmp(v.data(), want.data(), v.size() * 4), 0) << "values differ";
    }
    ++compared;
  }
  EXPECT_GT(compared, 0u);
}

TEST(TorchCheckpoint, ReadsEveryReferenceCheckpointExactly) {
  for (const char* f : {"checkpoints/eva_vit_g.pth", "checkpoints/eva_vit_g_fp16.pth", "checkpoints/blip2_pretrained.pth",
                        "checkpoints/skingpt4_proj.pth", "checkpoints/llm/pytorch_model.bin"}) {
    auto c = TorchCheckpoint::open(ck(f));
    std::map<std::string, const SrcTensor*> by;
    for (const auto& t : c->tensors()) by[t.name] = &t;
    EXPECT_EQ(c->root(), fs::path(f).stem().string());
    check_against_manifest(f, by);
    size_t n_tensors = 0;
    for (const auto& e : checkpoint_entry(f)["entries"]) n_tensors += e["type"] == "tensor";
    EXPECT_EQ(c->tensors().size(), n_tensors);
  }
}

TEST(TorchCheckpoint, SharedStoragesZeroDimAndNonTensorValues) {
  auto b = TorchCheckpoint::open(ck("checkpoints/blip2_pretrained.pth"));
  std::map<std::string, const SrcTensor*> by;
  for (const auto& t : b->tensors()) by[t.name] = &t;
  // Tied weights: two keys, one storage, the same bytes.
  EXPECT_EQ(by.at("model/Qformer.cls.predictions.decoder.weight")->data,
            by.at("model/Qformer.bert.embeddings.word_embeddings.weight")->data);
  EXPECT_EQ(by.at("model/Qformer.cls.predictions.decoder.bias")->data, by.at("model/Qformer.cls.predictions.bias")->data);
  EXPECT_TRUE(by.at("model/temp")->shape.empty());
  EXPECT_EQ(by.at("model/temp")->numel(), 1);

  auto p = TorchCheckpoint::open(ck("checkpoints/skingpt4_proj.pth"));
  const auto& c = checkpoint_entry("checkpoints/skingpt4_proj.pth");
  size_t checked = 0;
  for (const auto& e : c["entries"]) {
    if (e["type"] == "tensor") continue;
    std::string path;
    for (const auto& s : e["path"]) path += (path.empty() ? "" : "/") + (s.is_string() ? s.get<std::string>() : s.dump());
    SCOPED_TRACE(path);
    const pickle::Node* n = p->value(path);
    ASSERT_NE(n, nullptr);
    const std::string ty = e["type"];
    if (ty == "int") {
      ASSERT_EQ(n->kind, pickle::Kind::Int);
      EXPECT_EQ(n->i, e["value"].get<int64_t>());
    } else if (ty == "float") {
      ASSERT_EQ(n->kind, pickle::Kind::Float);
      EXPECT_EQ(n->f, e["value"].get<double>());
    } else if (ty == "bool") {
      ASSERT_EQ(n->kind, pickle::Kind::Bool);
      EXPECT_EQ(n->b, e["value"].get<bool>());
    } else if (ty == "str") {
      ASSERT_EQ(n->kind, pickle::Kind::Str);
      EXPECT_EQ(n->s, e["value"].get<std::string>());
    } else if (ty == "NoneType") {
      EXPECT_EQ(n->kind, pickle::Kind::None);
    } else {  // list / tuple
      EXPECT_EQ(n->kind, ty == "list" ? pickle::Kind::List : pickle::Kind::Tuple);
      EXPECT_EQ(n->items.size(), e["value"].size());
    }
    ++checked;
  }
  EXPECT_EQ(checked, 68u);
  EXPECT_EQ(p->value("epoch")->i, 3);
  // The state dict of {'model': ...} loses its prefix.
  const TensorSet sd = open_tensor_file(ck("checkpoints/skingpt4_proj.pth"));
  EXPECT_EQ(sd.size(), 2u);
  EXPECT_NE(sd.find("llama_proj.weight"), nullptr);
}

TEST(Safetensors, SingleAndShardedMatchReference) {
  for (const char* f : {"checkpoints/llm/model.safetensors", "checkpoints/llm/model-00001-of-00002.safetensors",
                        "checkpoints/llm/model-00002-of-00002.safetensors"}) {
    const auto st = read_safetensors(ck(f));
    std::map<std::string, const SrcTensor*> by;
    for (const auto& t : st.tensors) by[t.name] = &t;
    check_against_manifest(f, by);
    EXPECT_EQ(st.metadata.at("format"), "pt");
  }
  const TensorSet sharded = open_sharded(ck("checkpoints/llm/model.safetensors.index.json"));
  const TensorSet single = open_tensor_file(ck("checkpoints/llm/model.safetensors"));
  ASSERT_EQ(sharded.size(), 23u);
  for (const auto& [n, t] : single.all()) {
    const SrcTensor* s = sharded.find(n);
    ASSERT_NE(s, nullptr) << n;
    EXPECT_EQ(all_f32(*s), all_f32(t)) << n;
  }
}

// ---------------------------------------------------------------- hostile input

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string open_bytes(const std::string& bytes) {
  return error_of([&] { TorchCheckpoint::open_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.pth"); });
}

TEST(TorchCheckpoint, RefusesOsSystemAndRunsNothing) {
  test::TempDir dir;
  const fs::path marker = dir / "pwned";
  // pickle: os.system("touch <marker>") — what a malicious .pth does.
  const std::string pkl = pk::proto(2) + pk::global("os", "system") + pk::str("touch " + marker.string()) + "\x85" +
                          pk::kReduce + pk::kStop;
  const std::string zip = test::torch_zip(pkl, {});
  const fs::path file = dir / "evil.pth";
  test::write_file(file, zip);
  const std::string msg = error_of([&] { TorchCheckpoint::open(file.string()); });
  EXPECT_NE(msg.find(file.string() + ": refusing to load: pickle references os.system, which is not a tensor checkpoint global"),
            std::string::npos)
      << msg;
  EXPECT_NE(error_of([&] { open_tensor_file(file.string()); }).find("os.system"), std::string::npos);
  EXPECT_FALSE(fs::exists(marker)) << "the pickle's command ran";

  // Through the CLI as well: exit code 1, the global named, nothing run.
  const std::string cmd = std::string(SKINGPT_BINARY) + " convert --vit " + file.string() + " --qformer " +
                          file.string() + " --proj " + file.string() + " --vision-only -o " + (dir / "out").string() +
                          " 2>" + (dir / "err.txt").string();
  EXPECT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 1);
  EXPECT_NE(test::read_bytes(dir / "err.txt").find("os.system"), std::string::npos);
  EXPECT_FALSE(fs::exists(marker));
  EXPECT_FALSE(fs::exists(dir / "out" / "vision.gguf"));

  // Other ways of naming a global: protocol 4 STACK_GLOBAL, INST, and a global hidden inside a tensor's arguments.
  const std::string sg4 = pk::proto(4) + "\x8c\x08" "builtins" "\x8c\x04" "eval" "\x93" + pk::str("1") + "\x85" + pk::kReduce + ".";
  EXPECT_NE(open_bytes(test::torch_zip(sg4, {})).find("refusing to load: pickle references builtins.eval"), std::string::npos);
  const std::string inst = pk::proto(2) + pk::kMark + pk::str("x") + "isubprocess\nPopen\n.";
  EXPECT_NE(open_bytes(test::torch_zip(inst, {})).find("subprocess.Popen"), std::string::npos);
  const std::string nested = pk::proto(2) + pk::kEmptyDict + pk::str("w") + pk::global("torch._utils", "_rebuild_tensor_v2") +
                             "(" + pk::global("posix", "system") + pk::str("id") + "\x85" + pk::kReduce + "t" + pk::kReduce +
                             pk::kSetItem + ".";
  EXPECT_NE(open_bytes(test::torch_zip(nested, {})).find("posix.system"), std::string::npos);
  // An allowed global called the wrong way is refused too.
  const std::string call_storage = pk::proto(2) + pk::global("torch", "FloatStorage") + pk::kEmptyTuple + pk::kReduce + ".";
  EXPECT_NE(open_bytes(test::torch_zip(call_storage, {})).find("never calls"), std::string::npos);
}

std::string one_tensor_pickle(const std::string& storage_type, int64_t numel, int64_t offset, std::vector<int64_t> shape,
                              std::vector<int64_t> stride) {
  return pk::proto(2) + pk::global("collections", "OrderedDict") + pk::kEmptyTuple + pk::kReduce + pk::kMark +
         pk::str("w") + pk::tensor(storage_type, "0", numel, offset, shape, stride) + pk::kSetItems + pk::kStop;
}

TEST(TorchCheckpoint, CraftedStateDictIncludingZip64) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6, 7};
  for (bool zip64 : {false, true}) {
    // A [2, 3] view at offset 1 of a 7-element storage.
    const std::string zip = test::torch_zip(one_tensor_pickle("FloatStorage", 7, 1, {2, 3}, {3, 1}),
                                            {{"0", test::f32_bytes(v)}}, zip64);
    auto c = TorchCheckpoint::open_memory(reinterpret_cast<const uint8_t*>(zip.data()), zip.size(), "t.pth");
    ASSERT_EQ(c->tensors().size(), 1u);
    const SrcTensor& t = c->tensors()[0];
    EXPECT_EQ(t.name, "w");
    EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(all_f32(t), (std::vector<float>{2, 3, 4, 5, 6, 7}));
    const ZipReader z(reinterpret_cast<const uint8_t*>(zip.data()), zip.size(), "t.pth");
    EXPECT_EQ(z.members().size(), 3u);
    EXPECT_TRUE(z.crc_ok(*z.find("archive/data/0")));
  }
  // Non-contiguous (a transpose): listed, but reading it is refused clearly.
  const std::string zt = test::torch_zip(one_tensor_pickle("FloatStorage", 6, 0, {3, 2}, {1, 3}), {{"0", test::f32_bytes({1, 2, 3, 4, 5, 6})}});
  auto c = TorchCheckpoint::open_memory(reinterpret_cast<const uint8_t*>(zt.data()), zt.size(), "t.pth");
  ASSERT_EQ(c->tensors().size(), 1u);
  float x[6];
  EXPECT_NE(error_of([&] { read_f32(c->tensors()[0], 0, 6, x); }).find("not contiguous"), std::string::npos);
}

TEST(TorchCheckpoint, BrokenFilesGiveErrorsNotCrashes) {
  const std::string real = test::read_bytes(ref_dir() / "checkpoints/skingpt4_proj.pth");
  // Every truncation: an error (or, for cuts inside padding that leave everything intact, success), never a crash.
  int errors = 0;
  for (size_t n = 0; n < real.size(); n += (n < 4096 ? 7 : 997)) {
    const std::string cut = real.substr(0, n);
    if (!open_bytes(cut).empty()) ++errors;
  }
  EXPECT_GT(errors, 40);
  EXPECT_NE(open_bytes(real.substr(0, real.size() - 1)).find("x.pth: "), std::string::npos);

  // Corrupt central-directory offsets and sizes.
  const std::string ok = test::torch_zip(one_tensor_pickle("FloatStorage", 4, 0, {4}, {1}), {{"0", test::f32_bytes({1, 2, 3, 4})}});
  EXPECT_EQ(open_bytes(ok), "");
  const size_t eocd = ok.size() - 22;
  for (size_t field : {12u, 16u}) {  // central directory size, offset
    std::string bad = ok;
    bad[eocd + field + 3] = '\x7f';
    EXPECT_NE(open_bytes(bad), "") << field;
  }
  {  // a member's local header offset pointing past the end
    std::string bad = ok;
    const size_t cd = static_cast<uint8_t>(ok[eocd + 16]) | static_cast<uint8_t>(ok[eocd + 17]) << 8;
    bad[cd + 42 + 3] = '\x40';
    EXPECT_NE(open_bytes(bad).find("outside the archive"), std::string::npos) << open_bytes(bad);
  }
  {  // a member claiming more bytes than the archive has
    std::string bad = ok;
    const size_t cd = static_cast<uint8_t>(ok[eocd + 16]) | static_cast<uint8_t>(ok[eocd + 17]) << 8;
    bad[cd + 20 + 3] = '\x10';
    EXPECT_NE(open_bytes(bad).find("past the end"), std::string::npos) << open_bytes(bad);
  }
  // A storage smaller than the tensor needs; a tensor beyond its storage.
  EXPECT_NE(open_bytes(test::torch_zip(one_tensor_pickle("FloatStorage", 4, 0, {4}, {1}), {{"0", test::f32_bytes({1, 2})}}))
                .find("truncated"),
            std::string::npos);
  EXPECT_NE(open_bytes(test::torch_zip(one_tensor_pickle("FloatStorage", 4, 2, {4}, {1}), {{"0", test::f32_bytes({1, 2, 3, 4})}}))
                .find("past the end of storage"),
            std::string::npos);
  EXPECT_NE(open_bytes(test::torch_zip(one_tensor_pickle("FloatStorage", 4, 0, {4}, {1}), {})).find("missing"), std::string::npos);
  // Huge dimensions: refused, no allocation.
  EXPECT_NE(open_bytes(test::torch_zip(one_tensor_pickle("FloatStorage", 4, 0, {1ll << 40, 1ll << 40}, {1ll << 40, 1}),
                                       {{"0", test::f32_bytes({1, 2, 3, 4})}})),
            "");
  // Compressed members: refused with advice.
  test::ZipBuilder z;
  z.add("archive/data.pkl", pk::proto(2) + pk::kEmptyDict + ".", 8);
  EXPECT_NE(open_bytes(z.build()).find("compressed (method 8, deflate)"), std::string::npos);
  // Not a zip; a legacy (pre-1.6) pickle file; an empty file.
  EXPECT_NE(open_bytes("hello world, not a checkpoint").find("not a PyTorch checkpoint"), std::string::npos);
  EXPECT_NE(open_bytes(pk::proto(2) + "}.").find("legacy"), std::string::npos);
  EXPECT_NE(open_bytes(""), "");
}

std::string unpickle_error(const std::string& pkl, const pickle::Limits& lim = {}) {
  return error_of([&] { pickle::unpickle(reinterpret_cast<const uint8_t*>(pkl.data()), pkl.size(), "p.pkl", lim); });
}

TEST(Unpickler, MalformedAndOversizedPickles) {
  EXPECT_NE(unpickle_error(pk::proto(2) + "\xff").find("opcode 0xff"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + "F1.0\n.").find("opcode 0x46 ('F')"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + "}").find("without a STOP"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + ".").find("underflow"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + "h\x05.").find("memo entry 5"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + "X\xff\xff\xff\xff" "abc.").find("truncated"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + "\x8d\xff\xff\xff\xff\xff\xff\xff\xff.").find("truncated"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + "\x8b\x00\x00\x00\x10."s).find("64 bits"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(9) + "}.").find("protocol 9"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + "}]a.").find("not a list"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + "]}K\x01s.").find("not a dict"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + "ct\n.").find("unterminated"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + "K\x01K\x02Q.").find("persistent id"), std::string::npos);
  // Huge counts are bounded by the limits, not by memory.
  pickle::Limits small;
  small.max_nodes = 1000;
  small.max_marks = 100;
  EXPECT_NE(unpickle_error(pk::proto(2) + std::string(5000, ']') + ".", small).find("too many objects"), std::string::npos);
  EXPECT_NE(unpickle_error(pk::proto(2) + std::string(5000, '(') + ".", small).find("MARK"), std::string::npos);
  // Accepted: protocol 4 framing, short strings, memoize, LONG1 negatives, floats, bools, None.
  const std::string good = pk::proto(4) + "\x95\x00\x00\x00\x00\x00\x00\x00\x00" "}\x94(\x8c\x01" "a\x8a\x02\x00\xff\x8c\x01" "fG\x3f\xf8\x00\x00\x00\x00\x00\x00"s
                           "\x8c\x01" "b\x88\x8c\x01" "cNu.";
  pickle::Pickle p = pickle::unpickle(reinterpret_cast<const uint8_t*>(good.data()), good.size(), "g");
  const pickle::Node& root = p.at(p.root);
  EXPECT_EQ(p.get(root, "a")->i, -256);  // LONG1 two's complement
  EXPECT_EQ(p.get(root, "f")->f, 1.5);   // BINFLOAT is big-endian
  EXPECT_EQ(p.get(root, "b")->b, true);
  EXPECT_EQ(p.get(root, "c")->kind, pickle::Kind::None);
}

TEST(TorchCheckpoint, DeepNestingAndCyclesAreRefused) {
  // 100000 nested lists: the unpickler is iterative; the walk stops at a depth limit.
  const int depth = 100000;
  std::string deep = pk::proto(2);
  for (int i = 0; i < depth; ++i) deep += "]";
  for (int i = 0; i < depth - 1; ++i) deep += "a";
  deep += ".";
  EXPECT_NE(open_bytes(test::torch_zip(deep, {})).find("deeper than"), std::string::npos);
  // A list that contains itself.
  const std::string cyc = pk::proto(2) + "]q\x00h\x00" "a."s;
  EXPECT_NE(open_bytes(test::torch_zip(cyc, {})), "");
  // Shared sub-lists doubling at every level (2^60 paths): refused quickly by the walk budget.
  std::string dag = pk::proto(2) + "]";
  for (int i = 0; i < 60; ++i) dag += "q\x00(h\x00h\x00l"s;
  dag += ".";
  EXPECT_NE(open_bytes(test::torch_zip(dag, {})).find("too large to walk"), std::string::npos);
}

std::string st_error(const std::string& bytes) {
  return error_of([&] { read_safetensors_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "m.safetensors"); });
}

TEST(Safetensors, BrokenHeadersAndOffsets) {
  const std::string ok = test::safetensors_bytes({{"a", "F32", {2}, test::f32_bytes({1, 2})}, {"b", "F16", {1}, std::string(2, '\0')}});
  EXPECT_EQ(st_error(ok), "");
  EXPECT_NE(st_error(ok.substr(0, ok.size() - 1)), "");  // data truncated
  EXPECT_NE(st_error("short"), "");
  std::string huge = ok;
  huge[7] = '\x7f';  // header length ~ 2^63
  EXPECT_NE(st_error(huge).find("implausible"), std::string::npos);
  auto with_header = [](const std::string& js, size_t data) {
    std::string o;
    test::put_le(o, js.size(), 8);
    return o + js + std::string(data, '\0');
  };
  EXPECT_NE(st_error(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]", 8)).find("not valid JSON"),
            std::string::npos);
  EXPECT_NE(st_error(with_header("[1, 2]", 0)).find("not a JSON object"), std::string::npos);
  EXPECT_NE(st_error(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 16]}}", 8)).find("outside"),
            std::string::npos);
  EXPECT_NE(st_error(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8)).find("needs 12 bytes"),
            std::string::npos);
  EXPECT_NE(st_error(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                                 " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8)).find("overlap"),
            std::string::npos);
  EXPECT_NE(st_error(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8)), "");
  EXPECT_NE(st_error(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], "
                                 "\"data_offsets\": [0, 8]}}", 8)),
            "");
  // An unknown dtype is listed but cannot be read.
  const std::string f8 = with_header("{\"a\": {\"dtype\": \"F8_E4M3\", \"shape\": [2], \"data_offsets\": [0, 2]}}", 2);
  const auto st = read_safetensors_memory(reinterpret_cast<const uint8_t*>(f8.data()), f8.size(), "m");
  ASSERT_EQ(st.tensors.size(), 1u);
  EXPECT_NE(st.tensors[0].problem.find("F8_E4M3"), std::string::npos);
}

// Random byte corruption of real files: each attempt either loads (and every
// tensor can be read) or throws sg::Error.
TEST(CheckpointReaders, RandomCorruptionNeverCrashes) {
  const std::string pth = test::read_bytes(ref_dir() / "checkpoints/skingpt4_proj.pth");
  const std::string st = test::read_bytes(ref_dir() / "checkpoints/llm/model-00001-of-00002.safetensors");
  uint64_t seed = 12345;
  auto rnd = [&] {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return seed >> 33;
  };
  int loaded = 0, refused = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    const bool is_pth = iter % 2 == 0;
    std::string b = is_pth ? pth : st;
    // Mostly hit the structures (pickle, directory, header), sometimes anywhere.
    const size_t hot = is_pth ? (rnd() % 2 ? 64 + rnd() % 1700 : b.size() - 1 - rnd() % 1200) : rnd() % 1200;
    const int flips = 1 + static_cast<int>(rnd() % 4);
    for (int k = 0; k < flips; ++k) b[(k == 0 ? hot : rnd() % b.size())] = static_cast<char>(rnd());
    try {
      std::vector<SrcTensor> ts;
      std::unique_ptr<TorchCheckpoint> c;
      if (is_pth) {
        c = TorchCheckpoint::open_memory(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "c.pth");
        ts = c->tensors();
      } else {
        ts = read_safetensors_memory(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "c.safetensors").tensors;
      }
      for (const auto& t : ts) {
        if (!t.problem.empty() || t.numel() > (1 << 20)) continue;
        std::vector<float> v(static_cast<size_t>(t.numel()));
        read_f32(t, 0, t.numel(), v.data());
      }
      ++loaded;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 500);
  EXPECT_GT(loaded, 100);
}

TEST(Safetensors, ShardIndexIsChecked) {
  test::TempDir dir;
  test::write_file(dir / "a.safetensors", test::safetensors_bytes({{"x", "F32", {1}, test::f32_bytes({1})}}));
  test::write_file(dir / "idx.json", R"({"weight_map": {"x": "a.safetensors", "y": "a.safetensors"}})");
  EXPECT_NE(error_of([&] { open_sharded((dir / "idx.json").string()); }).find("has no tensor 'y'"), std::string::npos);
  test::write_file(dir / "idx.json", R"({"weight_map": {"x": "../a.safetensors"}})");
  EXPECT_NE(error_of([&] { open_sharded((dir / "idx.json").string()); }).find("not a plain file name"), std::string::npos);
  test::write_file(dir / "idx.json", R"({"weight_map": {"x": "b.safetensors"}})");
  EXPECT_NE(error_of([&] { open_sharded((dir / "idx.json").string()); }).find("missing"), std::string::npos);
  test::write_file(dir / "idx.json", R"({"weight_map": {"x": "a.safetensors"}})");
  EXPECT_EQ(open_sharded((dir / "idx.json").string()).size(), 1u);
}

}  // namespace
}  // namespace sg
