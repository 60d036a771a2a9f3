// Training data without libtorch: CSV tables, samples, deterministic
// randomness, image augmentation on 8-bit RGB, an in-memory image cache, and
// the SkinGPT-4 training prompt (the same text and splicing the engine's
// Conversation uses at inference, with the answer appended).
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "clinic/labels.h"
#include "formats/image.h"
#include "model/skingpt.h"
#include "text/tokenizer.h"

namespace sg::train {

// ------------------------------------------------------------------ CSV

// Training CSVs are read with the project's one strict RFC 4180 parser
// (clinic/labels.h): errors name the file and line.
using clinic::CsvTable;
using clinic::read_csv;

// ------------------------------------------------------------------ samples

struct Sample {
  std::string image;     // absolute or relative to the working directory
  std::string text;      // the answer (step1/step2)
  std::string question;  // empty: the run's default question
  std::string given;     // the answer's start, in the prompt without loss (CSV column `given`)
  Turns history;         // earlier turns of the conversation (CSV column `history`, JSON)
  int32_t label = -1;    // class index (pretrain-vit)
};

struct DataSpec {
  std::string csv;
  std::string image_column = "image", text_column = "text", label_column = "label",
              question_column = "question";
  // Keep only rows where every column equals the value ("split=ham10000_train").
  std::vector<std::pair<std::string, std::string>> where;
  // Keep only rows of this split (empty: all): rows whose `split` column equals
  // it, or a split derived by lesion from "<P>_train" ("ham10000_fit",
  // "ham10000_val"; clinic/splits.h, the rule evaluation and calibration use).
  std::string split;
  bool need_text = false, need_label = false;
  // Class names in index order; empty: the sorted distinct labels of the file.
  std::vector<std::string> classes;
};

struct Dataset {
  std::vector<Sample> samples;
  std::vector<std::string> classes;  // when labels were read
};

// Image paths are taken relative to the CSV's folder (absolute paths stay).
// Throws sg::Error naming the file, line and column for a missing column, an
// empty image path or text, or a label outside `classes`.
Dataset load_dataset(const DataSpec& spec);

// "col=value,col2=value2" → pairs (sg::Error for a part without '=').
std::vector<std::pair<std::string, std::string>> parse_where(const std::string& s);

// ------------------------------------------------------------------ randomness

// A 64-bit hash of a few integers (splitmix64 rounds): seeds that depend only
// on (seed, step, sample, ...) make every batch and augmentation reproducible
// and a resumed run identical to an uninterrupted one.
uint64_t mix_seed(uint64_t a, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0);

// xoshiro256** with explicit, library-independent distributions (std::
// distributions differ between standard libraries).
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  double uniform();                          // [0, 1)
  double uniform(double lo, double hi);      // [lo, hi)
  uint64_t below(uint64_t n);                // [0, n), n >= 1
  bool coin(double p = 0.5) { return uniform() < p; }

 private:
  uint64_t s_[4];
};

// A permutation of 0..n-1 (Fisher–Yates) from a seed.
std::vector<uint32_t> permutation(uint32_t n, uint64_t seed);

// Length bucketing: a batch is padded to its longest sequence, so mixing a
// 900-token conversation with 150-token ones wastes most of a step. Takes an
// order (a permutation) and, window by window (`window` batches of `batch`
// consecutive entries), sorts the window by `length`, cuts it into batches
// and shuffles the batches (seeded). The result is a permutation of the same
// entries; the samples of each window stay in that window.
std::vector<uint32_t> bucket_by_length(std::vector<uint32_t> order, const std::vector<size_t>& length,
                                       int64_t batch, int64_t window, uint64_t seed);

// ------------------------------------------------------------------ augmentation

struct AugmentOptions {
  bool crop = false;              // random resized crop (torchvision's sampling)
  double crop_min_scale = 0.35;   // area fraction range [min, 1]
  double crop_max_ratio = 4.0 / 3.0;  // aspect ratio range [1/r, r]
  bool hflip = false, vflip = false;
  bool rot90 = false;             // rotation by a random multiple of 90°
  double jitter = 0;              // brightness/contrast/saturation factors in [1-j, 1+j]
  bool any() const { return crop || hflip || vflip || rot90 || jitter > 0; }
};

// The augmented image at size×size: crop (or the whole image) resized with
// the Pillow-exact bicubic filter, then flips, rotation, colour jitter. With
// nothing enabled it is exactly resize_bicubic(src, size, size).
Image augment(const Image& src, int size, const AugmentOptions& o, Rng& rng);

Image flip_horizontal(const Image& img);
Image flip_vertical(const Image& img);
Image rotate90(const Image& img, int quarter_turns);  // counter-clockwise
// Brightness, contrast (around the mean grey), saturation (around each
// pixel's grey), applied in that order with the given factors, rounded.
Image color_jitter(const Image& img, double brightness, double contrast, double saturation);

// ------------------------------------------------------------------ image cache

// Decodes each image once, resized (Pillow bicubic) to cache_size×cache_size,
// and keeps it while the total stays under max_bytes (beyond that it decodes
// again each time). Thread-safe.
class ImageStore {
 public:
  ImageStore(std::vector<std::string> paths, int cache_size, size_t max_bytes);
  Image get(size_t i);
  size_t size() const { return paths_.size(); }
  int cache_size() const { return size_; }
  size_t cached_bytes() const { return bytes_; }

 private:
  std::vector<std::string> paths_;
  int size_;
  size_t max_bytes_, bytes_ = 0;
  std::vector<std::shared_ptr<const Image>> cache_;
  std::mutex mu_;
};

// ------------------------------------------------------------------ prompt

// The training sequence of one (question, answer) pair after `history`,
// exactly as the engine's Conversation builds the prompt and scores answers:
//   seg0 = BOS + tokens("<system>###Human: <Img>")
//   [image queries]
//   seg1 = tokens("</Img> <q1>###Assistant: <a1>###Human: ... <question>###Assistant: <answer>###")
// The first n_prompt1 tokens of seg1 are prompt (no loss); the rest are the
// answer and the closing "###", which the loss is computed on. `given` starts
// the answer but is prompt (the full answer is given + answer): teacher
// forcing on text the model wrote itself, as score_answers' answer_prefix.
struct PromptTokens {
  std::vector<int32_t> seg0, seg1;
  size_t n_prompt1 = 0;
};
PromptTokens build_prompt_tokens(const Tokenizer& tok, const ConversationTemplate& t, const Turns& history,
                                 const std::string& question, const std::string& answer, int64_t max_answer_tokens,
                                 const std::string& given = "");
// The CSV `history` field: a JSON array of [question, answer] string pairs
// ("" = none). Throws sg::Error naming `where`.
Turns parse_history(const std::string& json, const std::string& where);

}  // namespace sg::train
