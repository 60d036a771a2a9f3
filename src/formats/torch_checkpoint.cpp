#include "formats/torch_checkpoint.h"

#include <cstring>

#include "core/error.h"
#include "formats/zip.h"

namespace sg {

namespace {

// Walks the value tree and records every tensor under its path.
struct Walker {
  const pickle::Pickle& p;
  const std::string& name;
  std::vector<std::pair<std::string, pickle::Id>> found;
  uint64_t budget;

  void walk(pickle::Id id, const std::string& path, int depth) {
    using pickle::Kind;
    if (budget-- == 0)
      throw Error(name + ": pickle structure is too large to walk (shared or cyclic references)");
    const pickle::Node& n = p.at(id);
    if (n.kind == Kind::Tensor) {
      found.emplace_back(path, id);
      return;
    }
    if (n.kind != Kind::Dict && n.kind != Kind::List && n.kind != Kind::Tuple) return;
    if (depth >= TorchCheckpoint::kMaxDepth)
      throw Error(name + ": pickle nests containers deeper than " + std::to_string(TorchCheckpoint::kMaxDepth) +
                  " levels (or contains a cycle)");
    const std::string prefix = path.empty() ? "" : path + "/";
    if (n.kind == Kind::Dict) {
      for (const auto& [k, v] : n.entries) {
        const pickle::Node& key = p.at(k);
        if (key.kind == Kind::Str) walk(v, prefix + key.s, depth + 1);
        else if (key.kind == Kind::Int) walk(v, prefix + std::to_string(key.i), depth + 1);
      }
    } else {
      for (size_t i = 0; i < n.items.size(); ++i) walk(n.items[i], prefix + std::to_string(i), depth + 1);
    }
  }
};

}  // namespace

std::unique_ptr<TorchCheckpoint> TorchCheckpoint::open(const std::string& path) {
  std::unique_ptr<TorchCheckpoint> c(new TorchCheckpoint());
  c->path_ = path;
  c->file_ = MappedFile::open(path);
  c->parse(c->file_->data(), c->file_->size());
  return c;
}

std::unique_ptr<TorchCheckpoint> TorchCheckpoint::open_memory(const uint8_t* data, size_t size, std::string name) {
  std::unique_ptr<TorchCheckpoint> c(new TorchCheckpoint());
  c->path_ = std::move(name);
  c->parse(data, size);
  return c;
}

void TorchCheckpoint::parse(const uint8_t* data, uint64_t size) {
  if (size >= 2 && data[0] == 0x80 && data[1] <= 5)
    throw Error(path_ + ": legacy torch.save format (PyTorch < 1.6, not a zip archive) is not supported; "
                "re-save it with torch.save(torch.load(f), f) in PyTorch >= 1.6");
  if (size < 4 || std::memcmp(data, "PK", 2) != 0)
    throw Error(path_ + ": not a PyTorch checkpoint (a torch.save file is a zip archive)");
  const ZipReader zip(data, size, path_);
  if (zip.members().empty()) throw Error(path_ + ": empty zip archive");
  // torch's reader takes the archive's top folder from its first member.
  const std::string& first = zip.members().front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0)
    throw Error(path_ + ": not a PyTorch checkpoint (member '" + first + "' is not inside a top folder)");
  root_ = first.substr(0, slash);
  const ZipMember* pkl = zip.find(root_ + "/data.pkl");
  if (!pkl) throw Error(path_ + ": not a PyTorch checkpoint (no " + root_ + "/data.pkl)");
  if (const ZipMember* bo = zip.find(root_ + "/byteorder")) {
    const uint8_t* b = zip.stored_data(*bo);
    if (!(bo->size == 6 && std::memcmp(b, "little", 6) == 0))
      throw Error(path_ + ": big-endian checkpoints are not supported");
  }
  const uint8_t* pd = zip.stored_data(*pkl);
  if (pkl->size > kMaxPickleBytes)
    throw Error(path_ + ": data.pkl is " + std::to_string(pkl->size) + " bytes, more than a checkpoint needs");
  if (!zip.crc_ok(*pkl)) throw Error(path_ + ": data.pkl fails its CRC-32 check (corrupt file)");
  pickle_ = pickle::unpickle(pd, static_cast<size_t>(pkl->size), path_);

  Walker w{pickle_, path_, {}, 8 * static_cast<uint64_t>(pickle_.nodes.size()) + 1024};
  w.walk(pickle_.root, "", 0);
  for (const auto& [name, id] : w.found) {
    const pickle::Node& t = pickle_.at(id);
    const pickle::Node& st = pickle_.at(t.storage);
    SrcTensor s;
    s.name = name;
    s.type = st.dtype;
    s.shape = t.shape;
    s.file = file_;
    s.origin = path_;
    const std::string member = root_ + "/data/" + st.s;
    const ZipMember* m = zip.find(member);
    if (!m) throw Error(path_ + ": tensor '" + name + "' refers to storage '" + st.s + "', but " + member + " is missing");
    const uint8_t* bytes = zip.stored_data(*m);
    const uint64_t esz = src_type_size(st.dtype);
    if (static_cast<uint64_t>(st.i) > m->size / esz)
      throw Error(path_ + ": storage " + member + " holds " + std::to_string(m->size) + " bytes, less than its " +
                  std::to_string(st.i) + " " + std::string(src_type_name(st.dtype)) + " elements (truncated?)");
    // Contiguous (row-major) layout only; size-1 dimensions may have any stride.
    bool empty = false;
    for (int64_t d : t.shape) empty |= d == 0;
    int64_t expect = 1;
    bool contiguous = true;
    for (size_t k = t.shape.size(); k-- > 0 && !empty;) {
      if (t.shape[k] != 1 && t.stride[k] != expect) {
        contiguous = false;
        break;
      }
      expect *= t.shape[k];  // bounded by the storage size while contiguous (checked by the unpickler)
    }
    if (!contiguous) {
      std::string st_s;
      for (size_t k = 0; k < t.stride.size(); ++k) st_s += (k ? ", " : "") + std::to_string(t.stride[k]);
      s.problem = "is not contiguous (stride [" + st_s + "]); save it with .contiguous()";
    } else {
      const int64_t numel = s.numel();
      s.data = bytes + static_cast<uint64_t>(t.i) * esz;
      s.nbytes = static_cast<uint64_t>(numel) * esz;
    }
    tensors_.push_back(std::move(s));
  }
}

const pickle::Node* TorchCheckpoint::value(const std::string& path) const {
  const pickle::Node* n = &pickle_.at(pickle_.root);
  size_t start = 0;
  while (n && start <= path.size()) {
    const size_t end = std::min(path.find('/', start), path.size());
    const std::string seg = path.substr(start, end - start);
    start = end + 1;
    const bool numeric = !seg.empty() && seg.size() < 10 && seg.find_first_not_of("0123456789") == std::string::npos;
    if (n->kind == pickle::Kind::Dict) {
      const pickle::Node* found = pickle_.get(*n, seg);
      if (!found && numeric)
        for (const auto& [k, v] : n->entries)
          if (pickle_.at(k).kind == pickle::Kind::Int && pickle_.at(k).i == std::stoll(seg)) found = &pickle_.at(v);
      n = found;
    } else if ((n->kind == pickle::Kind::List || n->kind == pickle::Kind::Tuple) && numeric &&
               std::stoull(seg) < n->items.size()) {
      n = &pickle_.at(n->items[std::stoull(seg)]);
    } else {
      n = nullptr;
    }
  }
  return n;
}

}  // namespace sg
