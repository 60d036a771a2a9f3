// `skingpt describe IMAGE`: the consultation (issue 6). Photo quality first
// (a refused photo gets advice and no diagnosis, and the model is not even
// loaded), then the paper's four questions in one conversation, the
// differential scored by the model's own likelihood and calibrated, red
// flags, and a report as text, JSON (docs/report-schema.md) or HTML.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "app/args.h"
#include "app/commands.h"
#include "clinic/calibration_file.h"
#include "clinic/catalogue.h"
#include "clinic/consultation.h"
#include "clinic/report.h"
#include "core/error.h"
#include "core/threads.h"
#include "formats/image.h"
#include "model/skingpt.h"

namespace sg::app {

namespace fs = std::filesystem;

namespace {
std::string exe_path() {
  std::error_code ec;
  const auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error(path + ": cannot write");
  f << text;
  if (!f.flush()) throw Error(path + ": write failed");
}
}  // namespace

int cmd_describe(int argc, char** argv) {
  std::string image, model_dir, lang_s = "en", html, conditions, sex, site, history;
  int64_t age = -1, threads = std::thread::hardware_concurrency(), seed = 0, max_new = 300, n_ctx = 2048;
  bool json = false, greedy = false, no_questions = false, quiet = false, mmap = false;
  float temp = 0.0f, top_p = 0.9f;
  Args a("describe",
         "Assess a skin photo: photo quality, findings, a differential with probabilities, uncertainty,\n"
         "red flags and next steps. A draft for a clinician, never a diagnosis. Everything runs on this\n"
         "machine. Model folder search: --model, $SKINGPT_MODEL, ./models/skingpt-mini,\n"
         "<program dir>/../models/skingpt-mini.");
  a.positional("IMAGE", &image, "photo (JPEG, PNG, WebP, HEIC)");
  a.option("--model", &model_dir, "model folder (vision.gguf, llm.gguf, optional calibration.json, conditions.json)");
  a.option("--lang", &lang_s, "report and consultation language: en or ja");
  a.flag("--json", &json, "print the report as JSON (docs/report-schema.md) instead of text");
  a.option("--html", &html, "also write the report as a self-contained HTML page to FILE");
  a.option("--age", &age, "patient's age in years");
  a.option("--sex", &sex, "patient's sex");
  a.option("--site", &site, "body site of the lesion, e.g. \"back\"");
  a.option("--history", &history, "short history, e.g. \"grew over 3 months, itches\"");
  a.option("--conditions", &conditions, "condition catalogue JSON (default: MODEL/conditions.json, else built in)");
  a.option("-t,--threads", &threads, "threads");
  a.option("--seed", &seed, "random seed for the model's answers");
  a.flag("--greedy", &greedy, "always take the most likely token (the default unless --temp is set)");
  a.option("--temp", &temp, "sampling temperature; 0 = greedy, the same words for the same photo (SkinGPT-4: 1.0)");
  a.option("--top-p", &top_p, "nucleus sampling mass (SkinGPT-4: 0.9)");
  a.option("-n,--max-new-tokens", &max_new, "longest answer per question in tokens");
  a.option("-c,--ctx-size", &n_ctx, "context size in tokens");
  a.flag("--no-questions", &no_questions, "only the first question (the differential is read from its answer), not questions 2-4");
  a.flag("-q,--quiet", &quiet, "no progress on stderr");
  a.flag("--mmap", &mmap, kMmapHelp);
  if (!a.parse(argc, argv)) return 0;
  if (threads < 1 || threads > 256) throw Error("--threads must be in 1..256");
  if (a.was_set("--age") && (age < 0 || age > 150)) throw Error("--age must be in 0..150");
  if (max_new < 1) throw Error("--max-new-tokens must be at least 1");
  const clinic::Language lang = clinic::parse_language(lang_s);

  // The model folder is found first (it may carry its own catalogue), but
  // loaded only for a photo good enough to assess.
  const std::string dir = clinic::find_model_dir(model_dir, exe_path());
  const clinic::Catalogue cat = clinic::Catalogue::resolve(conditions, dir);
  const Image img = decode_image(image);
  clinic::PatientInfo patient;
  if (age >= 0) patient.age = static_cast<int>(age);
  patient.sex = sex;
  patient.site = site;
  patient.history = history;
  const bool tty = isatty(fileno(stderr)) && !quiet;
  auto say = [&](const std::string& s) {
    if (!quiet) std::fprintf(stderr, "[%s]\n", s.c_str());
  };

  clinic::Report report;
  const clinic::Report pre = clinic::assess_only(img, patient, lang, cat, {}, image);
  if (pre.quality.refused()) {
    say("photo refused: " + std::to_string(pre.quality.advice(lang).size()) + " piece(s) of advice; the model was not run");
    report = pre;
  } else {
    say("loading model " + dir);
    auto model = SkinGptModel::load(dir, residency(mmap));
    std::string cal_path;
    const auto cal = clinic::find_calibration(dir, lang, cat, &cal_path);
    ThreadPool pool(static_cast<int>(threads));
    clinic::Consultant consultant(*model, cat, cal.value_or(clinic::Calibration{}), pool, n_ctx);
    consultant.set_calibration_source(cal ? cal_path : "none", cal.has_value());
    clinic::ConsultOptions opt;
    opt.max_new_tokens = max_new;
    opt.sampling = SamplerParams{greedy ? 0.0f : temp, 0, top_p, 1.0f, static_cast<uint64_t>(seed)};
    opt.ask_questions = !no_questions;
    opt.on_stage = [&](const std::string& s) { say(s); };
    if (tty) opt.on_text = [](int, const std::string& piece) {
      std::fputs(piece.c_str(), stderr);  // the answers as they are written, for the impatient
      std::fflush(stderr);
    };
    report = consultant.consult(img, patient, lang, opt, image);
    if (tty) std::fputs("\n", stderr);
  }
  report.model_name = fs::path(dir).lexically_normal().filename().string();
  if (report.model_name.empty() || report.model_name == ".")
    report.model_name = fs::absolute(dir).lexically_normal().parent_path().filename().string();

  if (!html.empty()) {
    write_file(html, clinic::render_html(report, &img));
    say("wrote " + html);
  }
  const std::string out = json ? clinic::render_json(report) : clinic::render_text(report);
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace sg::app
