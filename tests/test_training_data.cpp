// skingpt-mini's training texts (clinic/training_texts.h), reading answers
// back (clinic/answer_check.h) and `skingpt dataset`.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "clinic/answer_check.h"
#include "clinic/catalogue.h"
#include "clinic/consultation.h"
#include "clinic/labels.h"
#include "clinic/splits.h"
#include "clinic/training_texts.h"
#include "test_util.h"

using namespace sg;
using namespace sg::clinic;

namespace {

LesionFeatures features(int axes, bool irregular, std::vector<SkinColour> colours, double area) {
  LesionFeatures f;
  f.found = true;
  f.asymmetric_axes = axes;
  f.irregular_border = irregular;
  f.colours = std::move(colours);
  for (SkinColour c : f.colours) f.colour_fraction[static_cast<int>(c)] = 1.0 / static_cast<double>(f.colours.size());
  f.area_fraction = area;
  return f;
}

std::vector<LesionFeatures> varied_features() {
  using C = SkinColour;
  return {features(0, false, {C::LightBrown}, 0.03), features(1, true, {C::LightBrown, C::DarkBrown}, 0.12),
          features(2, true, {C::DarkBrown, C::BlueGray, C::Black}, 0.35), features(2, false, {}, 0.7),
          features(0, true, {C::Red, C::White, C::LightBrown, C::DarkBrown}, 0.49)};
}

}  // namespace

TEST(TrainingTexts, ConceptTextReadsBackAsTheMeasurement) {
  for (Language lang : {Language::En, Language::Ja}) {
    const auto all = varied_features();
    for (size_t i = 0; i < all.size(); ++i) {
      const std::string text = concept_text(all[i], lang);
      const ConceptAgreement same = concept_agreement(text, all[i], lang);
      EXPECT_EQ(same.stated(), 4) << text;
      EXPECT_EQ(same.agreed(), 4) << text;
      // Read against another lesion, the differing features disagree.
      const auto& other = all[(i + 1) % all.size()];
      const ConceptAgreement diff = concept_agreement(text, other, lang);
      EXPECT_EQ(diff.stated(), 4) << text;
      EXPECT_EQ(diff.symmetry, all[i].asymmetric_axes == other.asymmetric_axes) << text;
      EXPECT_EQ(diff.border, all[i].irregular_border == other.irregular_border) << text;
      EXPECT_EQ(diff.colour_count, all[i].colours.size() == other.colours.size()) << text;
      EXPECT_EQ(diff.size, size_class(all[i]) == size_class(other)) << text;
    }
  }
  EXPECT_EQ(concept_agreement("A brown mole.", varied_features()[0], Language::En).stated(), 0);
}

TEST(TrainingTexts, ConsultationAnswersNameTheirConditionInBothLanguages) {
  const Catalogue cat = Catalogue::builtin();
  const LesionFeatures f = varied_features()[2];
  for (Language lang : {Language::En, Language::Ja}) {
    const auto& script = consultation_script(lang);
    for (size_t k = 0; k < cat.size(); ++k) {
      const Condition& c = cat[k];
      ASSERT_NE(condition_knowledge(c.id), nullptr) << c.id;
      const ConsultationAnswers a = consultation_answers(c, f, lang);
      EXPECT_EQ(a.diagnosis, script.answer_prefix + c.phrase.get(lang));
      ASSERT_EQ(a.answers.size(), script.questions.size());
      for (const auto& s : a.answers) EXPECT_FALSE(s.empty()) << c.id;
      EXPECT_EQ(named_condition(a.diagnosis, cat, lang), k) << a.diagnosis;
      EXPECT_EQ(named_condition(a.answers[0], cat, lang), k) << a.answers[0];
      EXPECT_EQ(concept_agreement(a.answers[0], f, lang).agreed(), 4) << a.answers[0];
      // Every treatment answer leaves the decision to a clinician.
      EXPECT_NE(a.answers[3].find(lang == Language::Ja ? "皮膚科" : "dermatologist"), std::string::npos) << c.id;
    }
  }
  // The SkinGPT-4 answer form.
  const auto en = consultation_answers(cat[*cat.index_of("mel")], f, Language::En);
  EXPECT_EQ(en.answers[0].rfind("This is a skin disease image with the following medical features: ", 0), 0u);
  EXPECT_EQ(named_condition("It is hard to say.", cat, Language::En), std::nullopt);
  // "benign keratosis" must not be read as "actinic keratosis" or the reverse.
  EXPECT_EQ(named_condition("This could be a skin disease image of benign keratosis.", cat, Language::En),
            cat.index_of("bkl"));
}

TEST(Dataset, WritesBalancedStepsFromTheTrainingSplitOnly) {
  const auto ham = test::shared_dir() / "data" / "ham10000";
  const auto all = read_labels_csv((ham / "labels.csv").string());
  // A small labels file: a few training images of three classes (lesion ids
  // kept, so the derived validation split works) and one test image.
  test::TempDir d;
  std::map<std::string, int> taken;
  std::ofstream f(d.path() / "labels.csv");
  f << "image,image_id,dx,split,lesion_id,dx_type,age,sex,localization\n";
  int n_train = 0;
  std::set<std::string> val_images;
  for (const auto& r : all) {
    if (r.split == "ham10000_train" && (r.dx == "nv" || r.dx == "mel" || r.dx == "df") && taken[r.dx] < 12) {
      ++taken[r.dx];
      ++n_train;
      if (is_validation_lesion(r.lesion_id)) val_images.insert(r.image_id);
      f << r.image_path << ',' << r.image_id << ',' << r.dx << ",ham10000_train," << r.lesion_id << ",histo,"
        << (std::isnan(r.age) ? std::string() : std::to_string(static_cast<int>(r.age))) << ',' << r.sex << ','
        << r.site << '\n';
    }
  }
  for (const auto& r : all)
    if (r.split == "isic2018_task3_test") {
      f << r.image_path << ',' << r.image_id << ',' << r.dx << ",isic2018_task3_test,,,,,\n";
      break;
    }
  f.close();
  ASSERT_EQ(n_train, 36);
  const std::string out = (d.path() / "data").string();
  auto run = test::run_command(std::string(SKINGPT_BINARY) + " dataset -q --per-class 20 --data '" +
                               (d.path() / "labels.csv").string() + "' --out '" + out + "' 2>&1");
  ASSERT_EQ(run.status, 0) << run.output;
  for (const char* name : {"step1.csv", "step2.csv", "corpus.txt"}) EXPECT_TRUE(std::filesystem::exists(d.path() / "data" / name)) << name;

  const CsvTable s2 = read_csv(out + "/step2.csv");
  ASSERT_EQ(s2.header, (std::vector<std::string>{"image", "dx", "lang", "history", "question", "given", "text"}));
  std::map<std::string, int> per_class;
  std::set<std::string> langs;
  for (const auto& row : s2.rows) {
    ++per_class[row[1]];
    langs.insert(row[2]);
    EXPECT_EQ(row[0].find("ISIC_0034"), std::string::npos) << "a test image was written: " << row[0];
    for (const auto& id : val_images) EXPECT_EQ(row[0].find(id), std::string::npos) << "a validation image: " << id;
    EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(out) / row[0])) << row[0];
    if (!row[3].empty()) {
      EXPECT_TRUE(nlohmann::json::parse(row[3]).is_array()) << row[3];
    }
  }
  EXPECT_EQ(per_class, (std::map<std::string, int>{{"df", 20}, {"mel", 20}, {"nv", 20}}));
  EXPECT_EQ(langs, (std::set<std::string>{"en", "ja"}));
  const CsvTable s1 = read_csv(out + "/step1.csv");
  EXPECT_EQ(s1.rows.size(), 2 * (36 - val_images.size()));

  // Own descriptions: step2.csv's rows, then each first-turn description row
  // again, its answer starting (as prompt) with the default model's own words.
  run = test::run_command(std::string(SKINGPT_BINARY) + " dataset -q -t 2 --own-descriptions '" +
                          (std::filesystem::path(SKINGPT_SOURCE_DIR) / "models" / "skingpt-mini").string() +
                          "' --out '" + out + "' 2>&1");
  ASSERT_EQ(run.status, 0) << run.output;
  const Catalogue cat = Catalogue::builtin();
  const CsvTable own = read_csv(out + "/step2_own.csv");
  ASSERT_EQ(own.header, s2.header);
  size_t first_turns = 0;
  for (const auto& row : s2.rows)
    first_turns += row[3].empty() && row[4] != consultation_script(row[2] == "ja" ? Language::Ja : Language::En).score_question;
  ASSERT_GT(first_turns, 0u);
  ASSERT_GT(own.rows.size(), s2.rows.size());
  EXPECT_LE(own.rows.size(), s2.rows.size() + first_turns);
  for (size_t i = 0; i < s2.rows.size(); ++i) EXPECT_EQ(own.rows[i], s2.rows[i]) << "row " << i;
  for (size_t i = s2.rows.size(); i < own.rows.size(); ++i) {
    const auto& row = own.rows[i];
    const Language lang = row[2] == "ja" ? Language::Ja : Language::En;
    const std::string& prefix = consultation_script(lang).answer_prefix;
    EXPECT_EQ(row[3], "") << "first turns only";
    EXPECT_NE(row[4].find(consultation_script(lang).questions[0]), std::string::npos) << row[4];
    ASSERT_GE(row[5].size(), prefix.size());
    EXPECT_EQ(row[5].substr(row[5].size() - prefix.size()), prefix) << "given ends where the diagnosis starts";
    EXPECT_EQ(row[6].rfind(cat[*cat.index_of(row[1])].phrase.get(lang), 0), 0u) << "the target starts with the diagnosis";
  }

  // Test splits are refused.
  run = test::run_command(std::string(SKINGPT_BINARY) + " dataset --train-split isic2018_task3_test --data '" +
                          (d.path() / "labels.csv").string() + "' --out '" + out + "' 2>&1");
  EXPECT_NE(run.status, 0);
  EXPECT_NE(run.output.find("test split"), std::string::npos) << run.output;
}
