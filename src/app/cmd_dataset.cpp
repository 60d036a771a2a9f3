// `skingpt dataset`: writes skingpt-mini's training data from a labelled image
// folder (docs/training-data.md): step-1 concept texts measured from each
// image, step-2 consultations (diagnosis + the paper's four questions, English
// and Japanese, class-balanced), and the text corpus the small LLM is
// pretrained on. Only the training split is read for training files; the
// validation split gets its own files; test splits are refused. With
// --own-descriptions it adds rows that start with a trained model's own words.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <nlohmann/json.hpp>

#include "app/args.h"
#include "app/commands.h"
#include "app/eval_common.h"
#include "app/progress.h"
#include "clinic/consultation.h"
#include "clinic/catalogue.h"
#include "clinic/labels.h"
#include "clinic/lesion.h"
#include "clinic/splits.h"
#include "clinic/training_texts.h"
#include "core/error.h"
#include "core/threads.h"
#include "formats/image.h"
#include "model/skingpt.h"

namespace sg::app {

namespace fs = std::filesystem;
using clinic::Language;

namespace {

struct Case {
  clinic::LabelRow row;
  const clinic::Condition* condition = nullptr;
  clinic::LesionFeatures lesion;
};

// Deterministic choices from (seed, image id, repetition, purpose).
uint64_t pick(uint64_t seed, const std::string& id, uint64_t rep, uint64_t purpose) {
  return clinic::splitmix64_finalize(clinic::fnv1a64(id) ^ clinic::splitmix64_finalize(seed * 0x9E37 + rep * 131 + purpose));
}

std::vector<Case> measure(const std::vector<clinic::LabelRow>& rows, const clinic::Catalogue& cat,
                          const std::string& what, bool quiet) {
  std::vector<Case> cases;
  Progress bar("measure " + what, rows.size(), "images");
  for (const auto& r : rows) {
    Case c;
    c.row = r;
    const auto idx = cat.index_of(r.dx);
    if (!idx) throw Error(r.image + ": dx '" + r.dx + "' is not in the condition catalogue");
    c.condition = &cat[*idx];
    c.lesion = clinic::analyse_lesion(decode_image(r.image_path));
    cases.push_back(std::move(c));
    if (!quiet) bar.update(cases.size());
  }
  if (!quiet) bar.finish();
  return cases;
}

std::string relative_image(const Case& c, const fs::path& out_dir) {
  return fs::relative(fs::absolute(c.row.image_path), fs::absolute(out_dir)).string();
}

// One training row of a consultation: (question, answer) after `history`.
struct Row {
  std::string image, dx, question, answer, lang;
  std::string history;  // JSON, as written (history_json)
  std::string given;  // the answer's start, prompt without loss (own descriptions)
};

std::string history_json(const Turns& h) {
  if (h.empty()) return "";
  nlohmann::json j = nlohmann::json::array();
  for (const auto& [q, a] : h) j.push_back({q, a});
  return j.dump();
}

void write_rows(const fs::path& path, const std::vector<Row>& rows) {
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error(path.string() + ": cannot write");
  f << "image,dx,lang,history,question,given,text\n";
  for (const auto& r : rows)
    f << clinic::csv_field(r.image) << ',' << r.dx << ',' << r.lang << ',' << clinic::csv_field(r.history)
      << ',' << clinic::csv_field(r.question) << ',' << clinic::csv_field(r.given) << ',' << clinic::csv_field(r.answer)
      << '\n';
  if (!f) throw Error(path.string() + ": write failed");
}

// The consultation of one case: the scoring turn and the four questions.
struct Consultation {
  std::string score_question, diagnosis;
  Turns turns;  // the four (question, answer) turns, the first with patient context when asked for
};
Consultation consultation(const Case& c, Language lang, bool with_context) {
  const auto& script = clinic::consultation_script(lang);
  const auto ans = clinic::consultation_answers(*c.condition, c.lesion, lang);
  Consultation r;
  r.score_question = script.score_question;
  r.diagnosis = ans.diagnosis;
  for (size_t i = 0; i < script.questions.size(); ++i) {
    std::string q = script.questions[i];
    if (i == 0 && with_context) {
      const std::string ctx = clinic::patient_context(clinic::patient_of(c.row, lang), lang);
      if (!ctx.empty()) q = ctx + " " + q;
    }
    r.turns.emplace_back(q, ans.answers[i]);
  }
  return r;
}

// --own-descriptions: step2_own.csv holds step2.csv's rows and, for each
// question-1 row, the same row with its answer starting (as `given`: prompt,
// no loss) with what the model itself answers about that image, up to the
// diagnosis. At inference the diagnosis follows the model's own description,
// not the measured one the other rows show; these rows train it there.
void write_own_descriptions(const fs::path& dir, const std::string& model_dir, int threads, bool quiet) {
  const fs::path in = dir / "step2.csv";
  const clinic::CsvTable t = clinic::read_csv(in.string());
  auto col = [&](const char* name) {
    const int c = t.column(name);
    if (c < 0) throw Error(in.string() + ": no column '" + name + "' (write the folder with skingpt dataset --data first)");
    return c;
  };
  const int ci = col("image"), cd = col("dx"), cl = col("lang"), ch = col("history"), cq = col("question"),
            ct = col("text"), cg = t.column("given");
  std::vector<Row> rows;
  for (const auto& v : t.rows)
    rows.push_back(Row{v[ci], v[cd], v[cq], v[ct], v[cl], v[ch], cg >= 0 ? v[cg] : ""});

  const auto model = SkinGptModel::load(model_dir);
  ThreadPool pool(threads);
  Conversation conv(*model, pool);
  ChatOptions greedy;
  greedy.max_new_tokens = 200;
  greedy.sampling = SamplerParams{0.0f, 0, 1.0f, 1.0f, 0};
  struct Own {
    const Row* row;
    std::string rest;  // the training answer after the diagnosis prefix
  };
  std::vector<Own> first_turns;
  for (const auto& r : rows) {
    if (r.lang != "en" && r.lang != "ja") throw Error(in.string() + ": lang '" + r.lang + "' is not en or ja");
    const auto& script = clinic::consultation_script(r.lang == "ja" ? Language::Ja : Language::En);
    if (!r.history.empty() || !r.given.empty() || r.question == script.score_question) continue;
    const size_t at = r.answer.find(script.answer_prefix);
    if (at != std::string::npos) first_turns.push_back({&r, r.answer.substr(at + script.answer_prefix.size())});
  }
  std::map<std::string, std::string> described;  // image + question → own words up to the prefix ("" = none)
  Progress bar("describe with " + model_dir, first_turns.size(), "rows");
  size_t done = 0, without_diagnosis = 0;
  for (const auto& o : first_turns) {
    const std::string key = o.row->image + '\n' + o.row->question;
    if (!described.count(key)) {
      const auto& script = clinic::consultation_script(o.row->lang == "ja" ? Language::Ja : Language::En);
      conv.reset();
      const auto chw = model->preprocess(decode_image((dir / o.row->image).string()));
      conv.set_image(chw.data());
      const std::string a = conv.ask(o.row->question, greedy);
      const size_t at = a.find(script.answer_prefix);
      described[key] = at == std::string::npos ? "" : a.substr(0, at + script.answer_prefix.size());
      if (at == std::string::npos) ++without_diagnosis;
    }
    if (!quiet) bar.update(++done);
  }
  if (!quiet) bar.finish();
  std::vector<Row> added;  // `first_turns` points into `rows`: append after the loop
  for (const auto& o : first_turns) {
    const std::string& own = described[o.row->image + '\n' + o.row->question];
    if (own.empty()) continue;
    Row r = *o.row;
    r.answer = o.rest;
    r.given = own;
    added.push_back(std::move(r));
  }
  rows.insert(rows.end(), added.begin(), added.end());
  write_rows(dir / "step2_own.csv", rows);
  std::printf("wrote %s: %zu rows of step2.csv and %zu with the model's own words (%zu first-turn rows; %zu "
              "descriptions reached no diagnosis and were left out)\n",
              (dir / "step2_own.csv").string().c_str(), t.rows.size(), added.size(), first_turns.size(), without_diagnosis);
}

}  // namespace

int cmd_dataset(int argc, char** argv) {
  std::string data, out, train_split = "ham10000_fit", val_split = "ham10000_val", conditions, own_model;
  int64_t per_class = 1500, ja_percent = 30, seed = 1,
          threads = std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), 256);
  bool quiet = false;
  Args a("dataset",
         "Write skingpt-mini's training data from a labelled image CSV: step1.csv (image ↔ measured clinical "
         "concepts), step2.csv (image ↔ diagnosis conversation: the scored diagnosis and the paper's four "
         "questions, English and Japanese, class-balanced), their *_val.csv counterparts from the validation "
         "split, and corpus.txt (text for pretraining the LLM). See docs/training-data.md.");
  a.option("--data", &data, "labels CSV (image,dx,split,lesion_id,age,sex,localization; paths relative to it)");
  a.option("--out", &out, "output folder");
  a.option("--train-split", &train_split, "split the training files are written from");
  a.option("--val-split", &val_split, "split the validation files are written from ('' = none)");
  a.option("--per-class", &per_class, "step-2 rows per condition (rare conditions repeat, common ones are sampled)");
  a.option("--ja-percent", &ja_percent, "share of step-2 rows in Japanese, in percent");
  a.option("--conditions", &conditions, "condition catalogue (default: built-in)");
  a.option("--seed", &seed, "seed of the row choices");
  a.option("--own-descriptions", &own_model,
           "instead: read OUT/step2.csv and write OUT/step2_own.csv, adding its question-1 rows again with the "
           "answer starting (as prompt) with this model's own description of the image");
  a.option("-t,--threads", &threads, "threads (--own-descriptions)");
  a.flag("-q,--quiet", &quiet, "no progress bar");
  if (!a.parse(argc, argv)) return 0;
  if (!own_model.empty()) {
    if (out.empty()) throw Error("dataset: --own-descriptions needs --out DIR, the folder with step2.csv");
    if (!data.empty()) throw Error("dataset: give --data (write the folder) or --own-descriptions (add to it), not both");
    if (threads < 1 || threads > 256) throw Error("dataset: --threads must be in 1..256");
    write_own_descriptions(out, own_model, static_cast<int>(threads), quiet);
    return 0;
  }
  if (data.empty() || out.empty()) throw Error("dataset: give --data CSV and --out DIR (see --help)");
  for (const auto* s : {&train_split, &val_split})
    if (s->find("test") != std::string::npos)
      throw Error("dataset: split '" + *s + "' looks like a test split; test images must never be trained on");
  if (per_class < 1 || per_class > 1000000) throw Error("dataset: --per-class must be in 1..1000000");
  if (ja_percent < 0 || ja_percent > 100) throw Error("dataset: --ja-percent must be in 0..100");
  const clinic::Catalogue cat = clinic::Catalogue::resolve(conditions, "");
  fs::create_directories(out);
  const fs::path dir(out);
  const ConversationTemplate tpl;
  const uint64_t s = static_cast<uint64_t>(seed);

  const std::vector<Case> train = measure(load_split(data, train_split, 0), cat, train_split, quiet);
  std::vector<Case> val;
  if (!val_split.empty()) val = measure(load_split(data, val_split, 0), cat, val_split, quiet);

  // Step 1: every image once in each language.
  auto step1 = [&](const std::vector<Case>& cases) {
    std::vector<Row> rows;
    for (const auto& c : cases)
      for (Language lang : {Language::En, Language::Ja}) {
        const auto& qs = clinic::concept_questions(lang);
        Row r;
        r.image = relative_image(c, dir);
        r.dx = c.row.dx;
        r.lang = lang == Language::Ja ? "ja" : "en";
        r.question = qs[pick(s, c.row.image_id, 0, 1 + static_cast<uint64_t>(lang)) % qs.size()];
        r.answer = clinic::concept_text(c.lesion, lang);
        rows.push_back(std::move(r));
      }
    return rows;
  };

  // Step 2: one row per (case, repetition): the scoring turn (35%) or one of
  // the four questions with the earlier ones as history.
  auto step2_row = [&](const Case& c, uint64_t rep) {
    const Language lang = pick(s, c.row.image_id, rep, 10) % 100 < static_cast<uint64_t>(ja_percent) ? Language::Ja
                                                                                                      : Language::En;
    const Consultation k = consultation(c, lang, pick(s, c.row.image_id, rep, 11) % 2 == 0);
    const uint64_t kind = pick(s, c.row.image_id, rep, 12) % 100;
    Row r;
    r.image = relative_image(c, dir);
    r.dx = c.row.dx;
    r.lang = lang == Language::Ja ? "ja" : "en";
    if (kind < 35) {
      r.question = k.score_question;
      r.answer = k.diagnosis;
    } else {
      const size_t turn = kind < 60 ? 0 : kind < 73 ? 1 : kind < 87 ? 2 : 3;
      r.history = history_json(Turns(k.turns.begin(), k.turns.begin() + static_cast<std::ptrdiff_t>(turn)));
      r.question = k.turns[turn].first;
      r.answer = k.turns[turn].second;
    }
    return r;
  };
  std::map<std::string, std::vector<const Case*>> by_class;
  for (const auto& c : train) by_class[c.row.dx].push_back(&c);
  std::vector<Row> step2;
  for (auto& [dx, cases] : by_class) {
    std::sort(cases.begin(), cases.end(), [&](const Case* x, const Case* y) {
      return pick(s, x->row.image_id, 0, 20) < pick(s, y->row.image_id, 0, 20);
    });
    for (int64_t i = 0; i < per_class; ++i) {
      const Case& c = *cases[static_cast<size_t>(i) % cases.size()];
      step2.push_back(step2_row(c, static_cast<uint64_t>(i / static_cast<int64_t>(cases.size()))));
    }
  }
  std::sort(step2.begin(), step2.end(), [](const Row& x, const Row& y) { return x.image < y.image; });
  std::vector<Row> step2_val;
  for (const auto& c : val) step2_val.push_back(step2_row(c, 0));

  // Corpus: the same conversations as plain text (no image), class-balanced
  // like step 2 so the LLM starts without a preference for the common class.
  std::ofstream corpus(dir / "corpus.txt", std::ios::binary);
  int64_t corpus_lines = 0;
  auto finished = [&](const Turns& turns) {
    const Turns head(turns.begin(), turns.end() - 1);
    std::string t = conversation_prompt(tpl, head, turns.back().first, true) + " " + turns.back().second + tpl.sep;
    const size_t at = t.find(tpl.image_placeholder);
    if (at != std::string::npos) t.erase(at, tpl.image_placeholder.size());
    for (char& ch : t)
      if (ch == '\n') ch = ' ';
    return t;
  };
  for (auto& [dx, cases] : by_class)
    for (int64_t i = 0; i < per_class / 2; ++i) {
      const Case& c = *cases[static_cast<size_t>(i) % cases.size()];
      for (Language lang : {Language::En, Language::Ja}) {
        const Consultation k = consultation(c, lang, i % 2 == 0);
        corpus << finished(k.turns) << '\n' << finished({{k.score_question, k.diagnosis}}) << '\n';
        const auto& qs = clinic::concept_questions(lang);
        corpus << finished({{qs[static_cast<size_t>(i) % qs.size()], clinic::concept_text(c.lesion, lang)}}) << '\n';
        corpus_lines += 3;
      }
    }
  if (!corpus) throw Error((dir / "corpus.txt").string() + ": write failed");

  write_rows(dir / "step1.csv", step1(train));
  write_rows(dir / "step2.csv", step2);
  if (!val.empty()) {
    write_rows(dir / "step1_val.csv", step1(val));
    write_rows(dir / "step2_val.csv", step2_val);
  }
  std::printf("wrote %s: step1.csv %zu rows, step2.csv %zu rows, %zu validation images, corpus.txt %lld lines\n",
              out.c_str(), 2 * train.size(), step2.size(), val.size(), static_cast<long long>(corpus_lines));
  return 0;
}

}  // namespace sg::app
