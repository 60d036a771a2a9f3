#include "train/data.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "clinic/splits.h"
#include "core/error.h"
#include "formats/preprocess.h"

namespace sg::train {

std::vector<std::pair<std::string, std::string>> parse_where(const std::string& s) {
  std::vector<std::pair<std::string, std::string>> out;
  if (s.empty()) return out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    const size_t eq = part.find('=');
    if (eq == std::string::npos || eq == 0) throw Error("--where: '" + part + "' is not COLUMN=VALUE");
    out.emplace_back(part.substr(0, eq), part.substr(eq + 1));
  }
  return out;
}

namespace {
std::vector<size_t> filter_split(const CsvTable& t, const std::vector<size_t>& rows, const std::string& name,
                                 const std::string& csv) {
  const int cs = t.column("split");
  if (cs < 0) throw Error(csv + ": --split needs a 'split' column");
  std::vector<size_t> out;
  for (size_t r : rows)
    if (t.rows[r][cs] == name) out.push_back(r);
  const auto derived = clinic::derived_split(name);
  if (!out.empty() || !derived) return out;
  const int cl = t.column("lesion_id");
  if (cl < 0) throw Error(csv + ": split '" + name + "' is derived by lesion and needs a 'lesion_id' column");
  for (size_t r : rows) {
    if (t.rows[r][cs] != derived->source) continue;
    if (t.rows[r][cl].empty())
      throw Error(csv + ":" + std::to_string(t.lines[r]) + ": split '" + name + "' is derived from '" +
                  derived->source + "' by lesion_id, but this row has none");
    if (clinic::is_validation_lesion(t.rows[r][cl]) == derived->validation) out.push_back(r);
  }
  return out;
}
}  // namespace

Turns parse_history(const std::string& text, const std::string& where) {
  Turns turns;
  if (text.empty()) return turns;
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_array()) throw Error(where + ": not a JSON array of [question, answer] pairs");
  if (j.size() > 64) throw Error(where + ": more than 64 turns");
  for (const auto& turn : j) {
    if (!turn.is_array() || turn.size() != 2 || !turn[0].is_string() || !turn[1].is_string())
      throw Error(where + ": every turn must be a [question, answer] pair of strings");
    turns.emplace_back(turn[0].get<std::string>(), turn[1].get<std::string>());
  }
  return turns;
}

Dataset load_dataset(const DataSpec& spec) {
  const CsvTable t = read_csv(spec.csv);
  auto need = [&](const std::string& col) {
    const int c = t.column(col);
    if (c < 0) throw Error(spec.csv + ": no column '" + col + "' (columns: " + [&] {
                             std::string s;
                             for (size_t i = 0; i < t.header.size(); ++i) s += (i ? "," : "") + t.header[i];
                             return s;
                           }() + ")");
    return c;
  };
  const int ci = need(spec.image_column);
  const int ct = spec.need_text ? need(spec.text_column) : -1;
  const int cl = spec.need_label ? need(spec.label_column) : -1;
  const int cq = t.column(spec.question_column);
  const int ch = t.column("history");
  const int cg = t.column("given");
  std::vector<std::pair<int, std::string>> where;
  for (const auto& [k, v] : spec.where) where.emplace_back(need(k), v);
  const std::filesystem::path base = std::filesystem::path(spec.csv).parent_path();

  Dataset d;
  std::vector<size_t> kept;
  for (size_t r = 0; r < t.rows.size(); ++r) {
    bool ok = true;
    for (const auto& [c, v] : where) ok = ok && t.rows[r][c] == v;
    if (ok) kept.push_back(r);
  }
  if (!spec.split.empty()) kept = filter_split(t, kept, spec.split, spec.csv);
  if (cl >= 0) {
    d.classes = spec.classes;
    if (d.classes.empty()) {
      std::set<std::string> s;
      for (size_t r : kept) s.insert(t.rows[r][cl]);
      d.classes.assign(s.begin(), s.end());
    }
  }
  std::map<std::string, int32_t> class_index;
  for (size_t i = 0; i < d.classes.size(); ++i) class_index[d.classes[i]] = static_cast<int32_t>(i);
  for (size_t r : kept) {
    const auto& row = t.rows[r];
    const std::string where_s = spec.csv + ":" + std::to_string(t.lines[r]);
    Sample s;
    if (row[ci].empty()) throw Error(where_s + ": empty '" + spec.image_column + "'");
    s.image = (base / row[ci]).string();
    if (ct >= 0) {
      s.text = row[ct];
      if (s.text.empty()) throw Error(where_s + ": empty '" + spec.text_column + "'");
    }
    if (cq >= 0) s.question = row[cq];
    if (ch >= 0) s.history = parse_history(row[ch], where_s + ": 'history'");
    if (cg >= 0) s.given = row[cg];
    if (cl >= 0) {
      const auto it = class_index.find(row[cl]);
      if (it == class_index.end())
        throw Error(where_s + ": label '" + row[cl] + "' is not one of the model's classes");
      s.label = it->second;
    }
    d.samples.push_back(std::move(s));
  }
  if (d.samples.empty()) throw Error(spec.csv + ": no samples (after --where)");
  return d;
}

// ------------------------------------------------------------------ randomness

namespace {
uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  uint64_t x = a;
  uint64_t h = splitmix(x);
  for (uint64_t v : {b, c, d}) {
    x = h ^ v;
    h = splitmix(x);
  }
  return h;
}

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix(x);
}

uint64_t Rng::next() {
  const uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return r;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
double Rng::uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
uint64_t Rng::below(uint64_t n) {
  // Rejection sampling: unbiased.
  const uint64_t lim = UINT64_MAX - UINT64_MAX % n;
  for (;;) {
    const uint64_t x = next();
    if (x < lim) return x % n;
  }
}

std::vector<uint32_t> permutation(uint32_t n, uint64_t seed) {
  std::vector<uint32_t> p(n);
  for (uint32_t i = 0; i < n; ++i) p[i] = i;
  Rng rng(seed);
  for (uint32_t i = n; i > 1; --i) std::swap(p[i - 1], p[rng.below(i)]);
  return p;
}

std::vector<uint32_t> bucket_by_length(std::vector<uint32_t> order, const std::vector<size_t>& length,
                                       int64_t batch, int64_t window, uint64_t seed) {
  if (batch < 1 || window < 1) throw Error("bucket_by_length: batch and window must be >= 1");
  Rng rng(seed);
  const size_t span = static_cast<size_t>(batch * window);
  for (size_t w0 = 0; w0 < order.size(); w0 += span) {
    const auto first = order.begin() + static_cast<std::ptrdiff_t>(w0);
    const auto last = order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), w0 + span));
    std::stable_sort(first, last, [&](uint32_t a, uint32_t b) { return length.at(a) < length.at(b); });
    // Shuffle whole batches of the window (a short last batch stays last).
    const size_t n_full = static_cast<size_t>(last - first) / static_cast<size_t>(batch);
    for (size_t i = n_full; i > 1; --i) {
      const size_t j = rng.below(i);
      if (j + 1 == i) continue;
      std::swap_ranges(first + static_cast<std::ptrdiff_t>((i - 1) * batch),
                       first + static_cast<std::ptrdiff_t>(i * batch), first + static_cast<std::ptrdiff_t>(j * batch));
    }
  }
  return order;
}

// ------------------------------------------------------------------ augmentation

Image flip_horizontal(const Image& img) {
  Image o = img;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) std::copy_n(img.pixel(img.width - 1 - x, y), 3, o.pixel(x, y));
  return o;
}

Image flip_vertical(const Image& img) {
  Image o = img;
  for (int y = 0; y < img.height; ++y)
    std::copy_n(img.pixel(0, img.height - 1 - y), 3 * img.width, o.pixel(0, y));
  return o;
}

Image rotate90(const Image& img, int k) {
  k = ((k % 4) + 4) % 4;
  if (k == 0) return img;
  if (k == 2) return flip_vertical(flip_horizontal(img));
  Image o;
  o.width = img.height;
  o.height = img.width;
  o.rgb.resize(img.rgb.size());
  // Counter-clockwise by 90°: out(x, y) = in(W-1-y, x); clockwise (k = 3): out(x, y) = in(y, H-1-x).
  for (int y = 0; y < o.height; ++y)
    for (int x = 0; x < o.width; ++x) {
      const uint8_t* s = k == 1 ? img.pixel(img.width - 1 - y, x) : img.pixel(y, img.height - 1 - x);
      std::copy_n(s, 3, o.pixel(x, y));
    }
  return o;
}

Image color_jitter(const Image& img, double brightness, double contrast, double saturation) {
  const size_t n = static_cast<size_t>(img.width) * img.height;
  std::vector<float> f(img.rgb.begin(), img.rgb.end());
  auto clamp = [](float v) { return std::min(255.0f, std::max(0.0f, v)); };
  for (auto& v : f) v = clamp(v * static_cast<float>(brightness));
  double mean = 0;
  for (size_t i = 0; i < n; ++i) mean += 0.299 * f[3 * i] + 0.587 * f[3 * i + 1] + 0.114 * f[3 * i + 2];
  mean /= static_cast<double>(std::max<size_t>(n, 1));
  for (auto& v : f) v = clamp(static_cast<float>(mean + contrast * (v - mean)));
  for (size_t i = 0; i < n; ++i) {
    float* p = &f[3 * i];
    const float g = 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2];
    for (int c = 0; c < 3; ++c) p[c] = clamp(static_cast<float>(g + saturation * (p[c] - g)));
  }
  Image o = img;
  for (size_t i = 0; i < f.size(); ++i) o.rgb[i] = static_cast<uint8_t>(std::lround(f[i]));
  return o;
}

Image augment(const Image& src, int size, const AugmentOptions& o, Rng& rng) {
  Image img;
  if (o.crop) {
    // torchvision RandomResizedCrop.get_params: 10 tries, then a centre crop.
    const double area = static_cast<double>(src.width) * src.height;
    int cw = src.width, ch = src.height, cx = 0, cy = 0;
    bool found = false;
    for (int t = 0; t < 10 && !found; ++t) {
      const double a = area * rng.uniform(o.crop_min_scale, 1.0);
      const double ratio = std::exp(rng.uniform(-std::log(o.crop_max_ratio), std::log(o.crop_max_ratio)));
      const int w = static_cast<int>(std::lround(std::sqrt(a * ratio)));
      const int h = static_cast<int>(std::lround(std::sqrt(a / ratio)));
      if (w > 0 && h > 0 && w <= src.width && h <= src.height) {
        cw = w;
        ch = h;
        cx = static_cast<int>(rng.below(static_cast<uint64_t>(src.width - w + 1)));
        cy = static_cast<int>(rng.below(static_cast<uint64_t>(src.height - h + 1)));
        found = true;
      }
    }
    if (!found) {
      cw = ch = std::min(src.width, src.height);
      cx = (src.width - cw) / 2;
      cy = (src.height - ch) / 2;
    }
    Image crop;
    crop.width = cw;
    crop.height = ch;
    crop.rgb.resize(static_cast<size_t>(cw) * ch * 3);
    for (int y = 0; y < ch; ++y) std::copy_n(src.pixel(cx, cy + y), 3 * cw, crop.pixel(0, y));
    img = resize_bicubic(crop, size, size);
  } else {
    img = (src.width == size && src.height == size) ? src : resize_bicubic(src, size, size);
  }
  if (o.hflip && rng.coin()) img = flip_horizontal(img);
  if (o.vflip && rng.coin()) img = flip_vertical(img);
  if (o.rot90) img = rotate90(img, static_cast<int>(rng.below(4)));
  if (o.jitter > 0) {
    const double b = rng.uniform(1 - o.jitter, 1 + o.jitter);
    const double c = rng.uniform(1 - o.jitter, 1 + o.jitter);
    const double s = rng.uniform(1 - o.jitter, 1 + o.jitter);
    img = color_jitter(img, b, c, s);
  }
  return img;
}

// ------------------------------------------------------------------ image cache

ImageStore::ImageStore(std::vector<std::string> paths, int cache_size, size_t max_bytes)
    : paths_(std::move(paths)), size_(cache_size), max_bytes_(max_bytes), cache_(paths_.size()) {
  if (cache_size < 1) throw Error("image cache size must be >= 1");
}

Image ImageStore::get(size_t i) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (cache_.at(i)) return *cache_[i];
  }
  Image img = decode_image(paths_[i]);
  if (img.width != size_ || img.height != size_) img = resize_bicubic(img, size_, size_);
  std::lock_guard<std::mutex> l(mu_);
  if (!cache_[i] && bytes_ + img.rgb.size() <= max_bytes_) {
    bytes_ += img.rgb.size();
    cache_[i] = std::make_shared<const Image>(img);
  }
  return img;
}

// ------------------------------------------------------------------ prompt

PromptTokens build_prompt_tokens(const Tokenizer& tok, const ConversationTemplate& t, const Turns& history,
                                 const std::string& question, const std::string& answer, int64_t max_answer_tokens,
                                 const std::string& given) {
  const std::string p = conversation_prompt(t, history, question, true);
  const size_t at = p.find(t.image_placeholder);
  const std::string tail = p.substr(at + t.image_placeholder.size());
  PromptTokens r;
  r.seg0 = tok.encode(p.substr(0, at), true);
  // Conversation::score_answers tokenizes tail + " " + answer as one text and
  // scores what follows the prompt's common prefix; training does the same.
  const std::string start = given.empty() ? tail : tail + " " + given;
  const std::vector<int32_t> prompt1 = tok.encode(start, false);
  r.seg1 = tok.encode(start + (given.empty() ? " " : "") + answer + t.sep, false);
  const size_t m = common_prefix(prompt1, r.seg1);
  r.n_prompt1 = m;
  if (r.seg1.size() <= m) throw Error("training answer '" + answer + "' gives no tokens");
  if (max_answer_tokens > 0 && static_cast<int64_t>(r.seg1.size() - m) > max_answer_tokens)
    r.seg1.resize(m + static_cast<size_t>(max_answer_tokens));
  return r;
}

}  // namespace sg::train
