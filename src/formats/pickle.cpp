#include "formats/pickle.h"

#include <cstdio>
#include <cstring>
#include <map>
#include <unordered_map>

#include "core/error.h"

namespace sg::pickle {

namespace {

// What an allowed global means; kept in Node::i of a Global node.
enum Code : int64_t {
  kOrderedDict = 1, kRebuildTensorV2, kRebuildParameter, kRebuildParameterWithState, kTorchSize,
  kStorageType, kDType,
};

struct GlobalInfo {
  Code code;
  SrcType dtype;
};

bool lookup_global(std::string_view module, std::string_view name, GlobalInfo* out) {
  struct Entry { std::string_view module, name; Code code; SrcType dtype; };
  static constexpr Entry kTable[] = {
      {"collections", "OrderedDict", kOrderedDict, SrcType::F32},
      {"torch._utils", "_rebuild_tensor_v2", kRebuildTensorV2, SrcType::F32},
      {"torch._utils", "_rebuild_parameter", kRebuildParameter, SrcType::F32},
      {"torch._utils", "_rebuild_parameter_with_state", kRebuildParameterWithState, SrcType::F32},
      {"torch", "Size", kTorchSize, SrcType::F32},
      {"torch", "FloatStorage", kStorageType, SrcType::F32},
      {"torch", "HalfStorage", kStorageType, SrcType::F16},
      {"torch", "BFloat16Storage", kStorageType, SrcType::BF16},
      {"torch", "DoubleStorage", kStorageType, SrcType::F64},
      {"torch", "LongStorage", kStorageType, SrcType::I64},
      {"torch", "IntStorage", kStorageType, SrcType::I32},
      {"torch", "ShortStorage", kStorageType, SrcType::I16},
      {"torch", "CharStorage", kStorageType, SrcType::I8},
      {"torch", "ByteStorage", kStorageType, SrcType::U8},
      {"torch", "BoolStorage", kStorageType, SrcType::Bool},
      {"torch", "float32", kDType, SrcType::F32}, {"torch", "float", kDType, SrcType::F32},
      {"torch", "float16", kDType, SrcType::F16}, {"torch", "half", kDType, SrcType::F16},
      {"torch", "bfloat16", kDType, SrcType::BF16},
      {"torch", "float64", kDType, SrcType::F64}, {"torch", "double", kDType, SrcType::F64},
      {"torch", "int64", kDType, SrcType::I64}, {"torch", "long", kDType, SrcType::I64},
      {"torch", "int32", kDType, SrcType::I32}, {"torch", "int", kDType, SrcType::I32},
      {"torch", "int16", kDType, SrcType::I16}, {"torch", "int8", kDType, SrcType::I8},
      {"torch", "uint8", kDType, SrcType::U8}, {"torch", "bool", kDType, SrcType::Bool},
  };
  for (const auto& e : kTable) {
    if (e.module == module && e.name == name) {
      if (out) *out = {e.code, e.dtype};
      return true;
    }
  }
  return false;
}

// Bytes shown in messages: printable ASCII kept, the rest escaped, length capped.
std::string printable(std::string_view s) {
  std::string o;
  for (size_t i = 0; i < s.size() && i < 80; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 32 && c < 127) {
      o += static_cast<char>(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      o += b;
    }
  }
  if (s.size() > 80) o += "...";
  return o;
}

class Machine {
 public:
  Machine(const uint8_t* d, size_t n, const std::string& name, const Limits& lim)
      : d_(d), n_(n), name_(name), lim_(lim) {}

  Pickle run();

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(name_ + ": pickle: " + what + " (at byte " + std::to_string(op_pos_) + ")");
  }
  const uint8_t* take(uint64_t k) {
    if (k > n_ - pos_) fail("truncated: needs " + std::to_string(k) + " more bytes, " + std::to_string(n_ - pos_) + " left");
    const uint8_t* p = d_ + pos_;
    pos_ += static_cast<size_t>(k);
    return p;
  }
  uint64_t le(int bytes) {
    const uint8_t* p = take(static_cast<uint64_t>(bytes));
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
  }
  std::string line() {  // GLOBAL / INST arguments: up to '\n'
    const size_t limit = std::min<size_t>(n_ - pos_, 4096);
    const void* nl = std::memchr(d_ + pos_, '\n', limit);
    if (!nl) fail("unterminated global name");
    const size_t len = static_cast<size_t>(static_cast<const uint8_t*>(nl) - (d_ + pos_));
    std::string s(reinterpret_cast<const char*>(d_ + pos_), len);
    pos_ += len + 1;
    return s;
  }

  Id make(Node&& node) {
    if (out_.nodes.size() >= lim_.max_nodes) fail("too many objects (more than " + std::to_string(lim_.max_nodes) + ")");
    out_.nodes.push_back(std::move(node));
    return static_cast<Id>(out_.nodes.size() - 1);
  }
  Id make_kind(Kind k) {
    Node n;
    n.kind = k;
    return make(std::move(n));
  }
  size_t fence() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Id id) {
    if (stack_.size() >= lim_.max_stack) fail("stack too deep");
    stack_.push_back(id);
  }
  Id pop() {
    if (stack_.size() <= fence()) fail("stack underflow");
    const Id id = stack_.back();
    stack_.pop_back();
    return id;
  }
  Id top() {
    if (stack_.size() <= fence()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<Id> pop_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Id> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Node& node(Id id) { return out_.nodes[id]; }

  void push_int(int64_t v) {
    Node n;
    n.kind = Kind::Int;
    n.i = v;
    push(make(std::move(n)));
  }
  void push_str(Kind k, uint64_t len) {
    const uint8_t* p = take(len);
    Node n;
    n.kind = k;
    n.s.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(len));
    push(make(std::move(n)));
  }
  void push_long(uint64_t len) {
    if (len > 8) fail("integer of " + std::to_string(len) + " bytes does not fit 64 bits");
    const uint8_t* p = take(len);
    uint64_t v = 0;
    for (uint64_t i = 0; i < len; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    if (len > 0 && len < 8 && (p[len - 1] & 0x80)) v |= ~uint64_t{0} << (8 * len);  // sign-extend
    push_int(static_cast<int64_t>(v));
  }
  void memo_put(uint64_t idx) {
    if (memo_.size() >= lim_.max_memo && !memo_.count(static_cast<uint32_t>(idx))) fail("memo too large");
    memo_[static_cast<uint32_t>(idx)] = top();
  }
  void memo_get(uint64_t idx) {
    const auto it = memo_.find(static_cast<uint32_t>(idx));
    if (it == memo_.end()) fail("memo entry " + std::to_string(idx) + " is undefined");
    push(it->second);
  }
  Id global(const std::string& module, const std::string& name) {
    GlobalInfo g{};
    if (!lookup_global(module, name, &g))
      throw Error(name_ + ": refusing to load: pickle references " + printable(module) + "." + printable(name) +
                  ", which is not a tensor checkpoint global");
    Node n;
    n.kind = Kind::Global;
    n.s = module + "." + name;
    n.i = g.code;
    n.dtype = g.dtype;
    return make(std::move(n));
  }
  Id make_tuple(std::vector<Id> items) {
    Node n;
    n.kind = Kind::Tuple;
    n.items = std::move(items);
    return make(std::move(n));
  }
  const Node& expect(Id id, Kind k, const char* what) {
    if (node(id).kind != k) fail(std::string(what));
    return node(id);
  }
  Id call(Id fn, Id args);
  Id persistent_load(Id pid);
  Id rebuild_tensor(const std::vector<Id>& a);

  const uint8_t* d_;
  size_t n_, pos_ = 0, op_pos_ = 0;
  const std::string& name_;
  Limits lim_;
  Pickle out_;
  std::vector<Id> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Id> memo_;
  std::map<std::string, Id> storages_;
};

Id Machine::persistent_load(Id pid) {
  const Node& t = node(pid);
  if (t.kind != Kind::Tuple || t.items.size() != 5)
    fail("persistent id is not a ('storage', type, key, location, numel) tuple");
  const Node& tag = node(t.items[0]);
  const Node& type = node(t.items[1]);
  const Node& key = node(t.items[2]);
  const Node& loc = node(t.items[3]);
  const Node& numel = node(t.items[4]);
  if (tag.kind != Kind::Str || tag.s != "storage") fail("persistent id is not a storage reference");
  if (type.kind != Kind::Global || type.i != kStorageType)
    fail("persistent id names " + (type.kind == Kind::Global ? type.s : std::string("a non-class")) +
         ", not a torch storage type");
  if (key.kind != Kind::Str || key.s.empty() || key.s.size() > 64) fail("storage key is not a short string");
  if (loc.kind != Kind::Str) fail("storage location is not a string");
  if (numel.kind != Kind::Int || numel.i < 0) fail("storage size is not a non-negative integer");
  if (const auto it = storages_.find(key.s); it != storages_.end()) {
    const Node& s = node(it->second);
    if (s.dtype != type.dtype || s.i != numel.i)
      fail("storage '" + printable(key.s) + "' is referenced with two different types or sizes");
    return it->second;
  }
  Node s;
  s.kind = Kind::Storage;
  s.s = key.s;
  s.dtype = type.dtype;
  s.location = loc.s;
  s.i = numel.i;
  const Id id = make(std::move(s));
  storages_.emplace(node(id).s, id);
  return id;
}

Id Machine::rebuild_tensor(const std::vector<Id>& a) {
  // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  if (a.size() != 6 && a.size() != 7) fail("_rebuild_tensor_v2 called with " + std::to_string(a.size()) + " arguments");
  const Node& st = node(a[0]);
  if (st.kind != Kind::Storage) fail("_rebuild_tensor_v2: first argument is not a storage");
  const Node& off = node(a[1]);
  if (off.kind != Kind::Int || off.i < 0) fail("_rebuild_tensor_v2: storage offset is not a non-negative integer");
  auto ints = [&](Id id, const char* what) {
    const Node& t = node(id);
    if (t.kind != Kind::Tuple) fail(std::string("_rebuild_tensor_v2: ") + what + " is not a tuple");
    if (t.items.size() > static_cast<size_t>(lim_.max_dims))
      fail(std::string("_rebuild_tensor_v2: ") + what + " has more than " + std::to_string(lim_.max_dims) + " dimensions");
    std::vector<int64_t> v;
    for (Id x : t.items) {
      const Node& e = node(x);
      if (e.kind != Kind::Int || e.i < 0) fail(std::string("_rebuild_tensor_v2: ") + what + " holds a non-integer or negative value");
      v.push_back(e.i);
    }
    return v;
  };
  Node t;
  t.kind = Kind::Tensor;
  t.storage = a[0];
  t.i = off.i;
  t.shape = ints(a[2], "size");
  t.stride = ints(a[3], "stride");
  if (t.shape.size() != t.stride.size()) fail("_rebuild_tensor_v2: size and stride have different lengths");
  if (node(a[4]).kind != Kind::Bool) fail("_rebuild_tensor_v2: requires_grad is not a bool");
  // Every element must lie inside the storage: offset + Σ (size−1)·stride < numel.
  bool empty = false;
  for (int64_t s : t.shape) empty |= s == 0;
  if (!empty) {
    unsigned __int128 last = static_cast<unsigned __int128>(off.i);
    for (size_t k = 0; k < t.shape.size(); ++k)
      last += static_cast<unsigned __int128>(t.shape[k] - 1) * static_cast<unsigned __int128>(t.stride[k]);
    if (last >= static_cast<unsigned __int128>(st.i))
      fail("tensor reaches past the end of storage '" + printable(st.s) + "' (" + std::to_string(st.i) + " elements)");
  }
  return make(std::move(t));
}

Id Machine::call(Id fn, Id args) {
  const Node& f = node(fn);
  if (f.kind != Kind::Global) fail("REDUCE on something that is not a global");
  if (node(args).kind != Kind::Tuple) fail("REDUCE arguments are not a tuple");
  const std::vector<Id> a = node(args).items;
  switch (f.i) {
    case kOrderedDict:
      if (!a.empty()) fail("collections.OrderedDict called with arguments");
      return make_kind(Kind::Dict);
    case kRebuildTensorV2:
      return rebuild_tensor(a);
    case kRebuildParameter:
    case kRebuildParameterWithState:
      if (a.size() != (f.i == kRebuildParameter ? 3u : 4u) || node(a[0]).kind != Kind::Tensor)
        fail(f.s + " called with unexpected arguments");
      return a[0];
    case kTorchSize: {
      if (a.size() != 1 || node(a[0]).kind != Kind::Tuple) fail("torch.Size called with unexpected arguments");
      std::vector<Id> items = node(a[0]).items;
      for (Id x : items)
        if (node(x).kind != Kind::Int) fail("torch.Size of a non-integer");
      return make_tuple(std::move(items));
    }
    default:
      fail("pickle calls " + f.s + ", which a tensor checkpoint never calls");
  }
}

Pickle Machine::run() {
  enum : uint8_t {
    MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', BININT = 'J', BININT1 = 'K', BININT2 = 'M',
    NONE = 'N', BINPERSID = 'Q', REDUCE = 'R', BINSTRING = 'T', SHORT_BINSTRING = 'U', BINUNICODE = 'X',
    APPEND = 'a', BUILD = 'b', GLOBAL = 'c', DICT = 'd', EMPTY_DICT = '}', APPENDS = 'e', BINGET = 'h',
    INST = 'i', LONG_BINGET = 'j', LIST = 'l', EMPTY_LIST = ']', OBJ = 'o', BINPUT = 'q', LONG_BINPUT = 'r',
    SETITEM = 's', TUPLE = 't', EMPTY_TUPLE = ')', SETITEMS = 'u', BINFLOAT = 'G', BINBYTES = 'B',
    SHORT_BINBYTES = 'C', PROTO = 0x80, NEWOBJ = 0x81, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87,
    NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a, LONG4 = 0x8b, SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d,
    BINBYTES8 = 0x8e, EMPTY_SET = 0x8f, ADDITEMS = 0x90, FROZENSET = 0x91, STACK_GLOBAL = 0x93,
    MEMOIZE = 0x94, FRAME = 0x95,
  };
  while (true) {
    op_pos_ = pos_;
    if (pos_ >= n_) fail("truncated: ended without a STOP opcode");
    const uint8_t op = d_[pos_++];
    switch (op) {
      case PROTO: {
        const uint64_t v = le(1);
        if (v > 5) fail("unsupported pickle protocol " + std::to_string(v));
        break;
      }
      case FRAME: {
        const uint64_t len = le(8);
        if (len > n_ - pos_) fail("frame of " + std::to_string(len) + " bytes is longer than the data");
        break;
      }
      case EMPTY_DICT: push(make_kind(Kind::Dict)); break;
      case EMPTY_LIST: case EMPTY_SET: push(make_kind(Kind::List)); break;
      case EMPTY_TUPLE: push(make_kind(Kind::Tuple)); break;
      case MARK:
        if (marks_.size() >= lim_.max_marks) fail("too many nested MARKs");
        marks_.push_back(stack_.size());
        break;
      case BINUNICODE: push_str(Kind::Str, le(4)); break;
      case SHORT_BINUNICODE: push_str(Kind::Str, le(1)); break;
      case BINUNICODE8: push_str(Kind::Str, le(8)); break;
      case SHORT_BINSTRING: push_str(Kind::Str, le(1)); break;
      case BINSTRING: {
        const int64_t len = static_cast<int32_t>(le(4));
        if (len < 0) fail("negative string length");
        push_str(Kind::Str, static_cast<uint64_t>(len));
        break;
      }
      case SHORT_BINBYTES: push_str(Kind::Bytes, le(1)); break;
      case BINBYTES: push_str(Kind::Bytes, le(4)); break;
      case BINBYTES8: push_str(Kind::Bytes, le(8)); break;
      case BININT: push_int(static_cast<int32_t>(le(4))); break;
      case BININT1: push_int(static_cast<int64_t>(le(1))); break;
      case BININT2: push_int(static_cast<int64_t>(le(2))); break;
      case LONG1: push_long(le(1)); break;
      case LONG4: {
        const int64_t len = static_cast<int32_t>(le(4));
        if (len < 0) fail("negative integer length");
        push_long(static_cast<uint64_t>(len));
        break;
      }
      case BINFLOAT: {
        const uint8_t* p = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = bits << 8 | p[i];  // big-endian
        Node n;
        n.kind = Kind::Float;
        std::memcpy(&n.f, &bits, 8);
        push(make(std::move(n)));
        break;
      }
      case NEWTRUE: case NEWFALSE: {
        Node n;
        n.kind = Kind::Bool;
        n.b = op == NEWTRUE;
        push(make(std::move(n)));
        break;
      }
      case NONE: push(make_kind(Kind::None)); break;
      case TUPLE1: case TUPLE2: case TUPLE3: {
        const int k = op - TUPLE1 + 1;
        std::vector<Id> items(static_cast<size_t>(k));
        for (int i = k - 1; i >= 0; --i) items[static_cast<size_t>(i)] = pop();
        push(make_tuple(std::move(items)));
        break;
      }
      case TUPLE: push(make_tuple(pop_mark())); break;
      case LIST: case FROZENSET: {
        Node n;
        n.kind = Kind::List;
        n.items = pop_mark();
        push(make(std::move(n)));
        break;
      }
      case DICT: {
        const auto items = pop_mark();
        if (items.size() % 2) fail("DICT with an odd number of items");
        Node n;
        n.kind = Kind::Dict;
        for (size_t i = 0; i < items.size(); i += 2) n.entries.emplace_back(items[i], items[i + 1]);
        push(make(std::move(n)));
        break;
      }
      case APPEND: {
        const Id v = pop();
        const Id l = top();
        if (node(l).kind != Kind::List) fail("APPEND to something that is not a list");
        node(l).items.push_back(v);
        break;
      }
      case APPENDS: case ADDITEMS: {
        const auto items = pop_mark();
        const Id l = top();
        if (node(l).kind != Kind::List) fail("APPENDS to something that is not a list");
        auto& dst = node(l).items;
        dst.insert(dst.end(), items.begin(), items.end());
        break;
      }
      case SETITEM: {
        const Id v = pop(), k = pop();
        const Id dict = top();
        if (node(dict).kind != Kind::Dict) fail("SETITEM on something that is not a dict");
        node(dict).entries.emplace_back(k, v);
        break;
      }
      case SETITEMS: {
        const auto items = pop_mark();
        if (items.size() % 2) fail("SETITEMS with an odd number of items");
        const Id dict = top();
        if (node(dict).kind != Kind::Dict) fail("SETITEMS on something that is not a dict");
        for (size_t i = 0; i < items.size(); i += 2) node(dict).entries.emplace_back(items[i], items[i + 1]);
        break;
      }
      case BINPUT: memo_put(le(1)); break;
      case LONG_BINPUT: memo_put(le(4)); break;
      case MEMOIZE: memo_put(memo_.size()); break;
      case BINGET: memo_get(le(1)); break;
      case LONG_BINGET: memo_get(le(4)); break;
      case GLOBAL: {
        const std::string module = line();
        const std::string name = line();
        push(global(module, name));
        break;
      }
      case STACK_GLOBAL: {
        const Id name = pop(), module = pop();
        if (node(name).kind != Kind::Str || node(module).kind != Kind::Str) fail("STACK_GLOBAL of non-strings");
        push(global(node(module).s, node(name).s));
        break;
      }
      case INST: {
        const std::string module = line();
        const std::string name = line();
        global(module, name);  // refuses unknown globals by name
        fail("INST opcode (old-style instance creation) is not used by tensor checkpoints");
      }
      case REDUCE: {
        const Id args = pop();
        const Id fn = pop();
        push(call(fn, args));
        break;
      }
      case NEWOBJ: {
        const Id args = pop();
        const Id cls = pop();
        const Node& c = node(cls);
        if (c.kind != Kind::Global || c.i != kOrderedDict || node(args).kind != Kind::Tuple || !node(args).items.empty())
          fail("NEWOBJ of " + (c.kind == Kind::Global ? c.s : std::string("a non-class")) + " is not supported");
        push(make_kind(Kind::Dict));
        break;
      }
      case BUILD: {
        pop();  // the state: OrderedDict._metadata, tensor attributes — not needed
        const Kind k = node(top()).kind;
        if (k != Kind::Dict && k != Kind::Tensor) fail("BUILD on something that is neither a dict nor a tensor");
        break;
      }
      case BINPERSID: push(persistent_load(pop())); break;
      case POP:
        if (stack_.size() == fence() && !marks_.empty()) marks_.pop_back();
        else pop();
        break;
      case POP_MARK: pop_mark(); break;
      case DUP: push(top()); break;
      case STOP:
        out_.root = pop();
        return std::move(out_);
      default: {
        char b[64];
        if (op >= 32 && op < 127) std::snprintf(b, sizeof b, "0x%02x ('%c')", op, op);
        else std::snprintf(b, sizeof b, "0x%02x", op);
        fail(std::string("opcode ") + b + " is unknown or not used by tensor checkpoints");
      }
    }
  }
}

}  // namespace

const Node* Pickle::get(const Node& dict, std::string_view key) const {
  if (dict.kind != Kind::Dict) return nullptr;
  const Node* found = nullptr;
  for (const auto& [k, v] : dict.entries)  // last assignment wins, like a dict
    if (nodes[k].kind == Kind::Str && nodes[k].s == key) found = &nodes[v];
  return found;
}

bool is_allowed_global(std::string_view module, std::string_view name) {
  return lookup_global(module, name, nullptr);
}

Pickle unpickle(const uint8_t* data, size_t size, const std::string& name, const Limits& limits) {
  return Machine(data, size, name, limits).run();
}

}  // namespace sg::pickle
