#include "clinic/training_texts.h"

#include <cstdio>
#include <map>

namespace sg::clinic {

namespace {

// Dermatology facts for the seven HAM10000 classes, written for this project
// (plain clinical wording; every treatment text ends by deferring to a
// clinician, DESIGN.md's safety principles).
const std::map<std::string, ConditionKnowledge>& knowledge() {
  static const std::map<std::string, ConditionKnowledge> k = {
      {"nv",
       {{"Typical features of a melanocytic nevus are a symmetric shape, a regular pigment network, one or two "
         "shades of brown and a sharp, even border.",
         "色素細胞母斑の典型的な特徴は、左右対称の形、規則的な色素ネットワーク、1〜2色の褐色、そして明瞭で整った境界です。"},
        {"A melanocytic nevus is a benign growth of pigment cells (melanocytes). Most appear in childhood and "
         "early adulthood; their number depends on inherited factors and on sun exposure.",
         "色素細胞母斑は色素細胞（メラノサイト）の良性の増殖です。多くは小児期から若年成人期に現れ、その数は遺伝的要因と日光曝露によって決まります。"},
        {"No treatment is needed for a typical nevus. It can be removed for cosmetic reasons or when it changes "
         "in size, shape or colour. Regular self-examination and sun protection are advised; a dermatologist "
         "should confirm the diagnosis.",
         "典型的な母斑に治療は不要です。整容目的や、大きさ・形・色が変化する場合には切除できます。定期的な自己観察と紫外線対策が勧められます。診断は皮膚科医が確定してください。"}}},
      {"mel",
       {{"Warning features of melanoma are asymmetry, an irregular or notched border, several colours "
         "including dark brown, black or blue-gray, an atypical network, streaks and a blue-white veil.",
         "悪性黒色腫を示唆する特徴は、非対称性、不整で切れ込みのある境界、黒褐色・黒・青灰色を含む多彩な色調、非定型色素ネットワーク、線条、青白色ベールです。"},
        {"Melanoma is a cancer of pigment cells. Ultraviolet exposure and sunburn, many or atypical moles, fair "
         "skin, a family history and a weakened immune system raise the risk.",
         "悪性黒色腫は色素細胞のがんです。紫外線曝露と日焼け、多数または非定型のほくろ、色白の肌、家族歴、免疫力の低下がリスクを高めます。"},
        {"This needs urgent referral to a dermatologist. Melanoma is treated by complete surgical excision "
         "with a safety margin, guided by a biopsy; advanced disease may need sentinel lymph node biopsy, "
         "immunotherapy or targeted therapy. Early removal is usually curative.",
         "至急皮膚科への受診が必要です。悪性黒色腫は生検に基づき、安全域をとった完全な外科的切除で治療します。進行例ではセンチネルリンパ節生検、免疫療法、分子標的療法が必要になることがあります。早期の切除で多くは治癒します。"}}},
      {"bkl",
       {{"Typical features of a benign keratosis are a stuck-on look, milia-like cysts, comedo-like openings, "
         "a sharp border and light to dark brown colour.",
         "良性角化症の典型的な特徴は、貼り付いたような外観、稗粒腫様嚢腫、面皰様開大、明瞭な境界、淡褐色から黒褐色の色調です。"},
        {"Benign keratoses (seborrheic keratosis, solar lentigo, lichen planus-like keratosis) are harmless "
         "growths of the outer skin that become more common with age and long-term sun exposure.",
         "良性角化症（脂漏性角化症、日光黒子、扁平苔癬様角化症）は表皮の無害な増殖で、加齢と長年の日光曝露により増えます。"},
        {"No treatment is required. Irritated or unwanted lesions can be removed by cryotherapy, curettage or "
         "laser. Because some look like melanoma, an unclear lesion should be examined by a dermatologist, "
         "who may take a biopsy.",
         "治療は必要ありません。刺激を受ける、または気になる病変は凍結療法、掻爬、レーザーで除去できます。悪性黒色腫に似るものがあるため、判断が難しい病変は皮膚科医が診察し、必要に応じて生検を行います。"}}},
      {"bcc",
       {{"Typical features of basal cell carcinoma are arborizing (tree-like) vessels, a pearly or translucent "
         "surface, blue-gray ovoid nests, leaf-like areas and ulceration.",
         "基底細胞癌の典型的な特徴は、樹枝状血管、真珠様・半透明の表面、青灰色の卵円形胞巣、葉状領域、潰瘍です。"},
        {"Basal cell carcinoma is the most common skin cancer. It arises from basal cells of the epidermis, "
         "mainly on sun-exposed skin after years of ultraviolet exposure, and is more common in fair-skinned "
         "older adults.",
         "基底細胞癌は最も多い皮膚がんです。表皮の基底細胞から生じ、主に長年紫外線を浴びた日光露光部にでき、色白の高齢者に多くみられます。"},
        {"Referral to a dermatologist is recommended. Basal cell carcinoma is usually treated by surgical "
         "excision or Mohs surgery; small superficial lesions may be treated with curettage, cryotherapy, "
         "imiquimod cream or photodynamic therapy. It rarely spreads but grows into surrounding tissue if left "
         "untreated.",
         "皮膚科への受診が勧められます。基底細胞癌は通常、外科的切除またはモーズ手術で治療します。小さな表在型では掻爬、凍結療法、イミキモド外用、光線力学療法も用いられます。転移はまれですが、放置すると周囲の組織に浸潤します。"}}},
      {"akiec",
       {{"Typical features of actinic keratosis and Bowen's disease are a rough, scaly surface, a red "
         "pseudo-network, white to yellow scale and dotted or glomerular vessels.",
         "日光角化症・ボーエン病の典型的な特徴は、ざらざらした鱗屑を伴う表面、赤い偽ネットワーク、白色から黄色の鱗屑、点状・糸球体状血管です。"},
        {"Actinic keratosis and Bowen's disease (intraepithelial carcinoma) are caused by cumulative "
         "ultraviolet damage to keratinocytes. They occur on sun-exposed skin of older adults and can progress "
         "to invasive squamous cell carcinoma.",
         "日光角化症とボーエン病（表皮内癌）は、角化細胞への紫外線の蓄積的な障害によって生じます。高齢者の日光露光部に生じ、浸潤性の有棘細胞癌に進行することがあります。"},
        {"Referral to a dermatologist is recommended. Treatment options are cryotherapy, topical "
         "5-fluorouracil or imiquimod, photodynamic therapy, curettage or excision; a biopsy is taken when "
         "invasive carcinoma is suspected. Strict sun protection lowers the risk of new lesions.",
         "皮膚科への受診が勧められます。治療には凍結療法、5-フルオロウラシルやイミキモドの外用、光線力学療法、掻爬、切除があります。浸潤癌が疑われる場合は生検を行います。厳重な紫外線対策で新たな病変のリスクが下がります。"}}},
      {"vasc",
       {{"Typical features of a vascular lesion are red, purple or blue lacunae (round, sharply outlined "
         "areas) separated by pale septa, without a pigment network.",
         "血管病変の典型的な特徴は、淡い隔壁で区切られた赤・紫・青色の小湖状構造（円形で境界明瞭な領域）で、色素ネットワークはみられません。"},
        {"Vascular lesions such as cherry angiomas, angiokeratomas and pyogenic granulomas are benign "
         "proliferations or dilations of blood vessels; cherry angiomas become more common with age.",
         "老人性血管腫、被角血管腫、化膿性肉芽腫などの血管病変は、血管の良性の増殖や拡張です。老人性血管腫は加齢とともに増えます。"},
        {"Most vascular lesions need no treatment. Bleeding or bothersome lesions can be treated with laser, "
         "electrocautery or excision. A dermatologist should confirm the diagnosis, because a rare amelanotic "
         "melanoma can look similar.",
         "多くの血管病変は治療不要です。出血する、または気になる病変はレーザー、電気焼灼、切除で治療できます。まれに無色素性黒色腫が似て見えることがあるため、診断は皮膚科医が確認してください。"}}},
      {"df",
       {{"Typical features of a dermatofibroma are a central white scar-like patch with a fine peripheral "
         "pigment network, and the dimple sign when the skin is pinched.",
         "皮膚線維腫の典型的な特徴は、中央の白色瘢痕様領域と辺縁の繊細な色素ネットワーク、皮膚をつまむと陥凹するディンプルサインです。"},
        {"A dermatofibroma is a benign firm nodule of fibrous tissue in the dermis. It is thought to be a "
         "reaction to minor injury such as an insect bite and is most common on the legs of adults.",
         "皮膚線維腫は真皮の線維組織からなる良性の硬い結節です。虫刺されなどの小さな外傷への反応と考えられ、成人の下肢に多くみられます。"},
        {"No treatment is needed. It can be excised if it is painful, changes or the diagnosis is uncertain, "
         "and a dermatologist should confirm the diagnosis.",
         "治療は不要です。痛みがある、変化する、診断が不確かな場合は切除できます。診断は皮膚科医が確認してください。"}}},
  };
  return k;
}

const char* size_words(int cls, bool ja) {
  static const char* en[] = {"small", "medium-sized", "large", "very large"};
  static const char* jp[] = {"小さい", "中くらいの大きさ", "大きい", "非常に大きい"};
  return (ja ? jp : en)[cls];
}

std::string percent(double fraction) {
  char b[32];
  const double p = 100 * fraction;
  if (p < 1) return "<1%";
  std::snprintf(b, sizeof b, "%.0f%%", p);
  return b;
}

}  // namespace

int size_class(const LesionFeatures& f) {
  const double a = f.area_fraction;
  return a < 0.05 ? 0 : a < 0.20 ? 1 : a < 0.50 ? 2 : 3;
}

std::string concept_text(const LesionFeatures& f, Language lang) {
  const bool ja = lang == Language::Ja;
  if (!f.found) return ja ? "はっきりした病変の輪郭は見えません" : "no distinct lesion outline is visible";
  const char* sep = ja ? "、" : ", ";
  std::string s;
  if (ja) {
    s = f.asymmetric_axes == 0 ? "左右対称" : f.asymmetric_axes == 1 ? "1軸で非対称" : "2軸で非対称";
    s += sep + std::string(f.irregular_border ? "境界不整" : "境界は整");
  } else {
    s = f.asymmetric_axes == 0 ? "symmetric" : f.asymmetric_axes == 1 ? "asymmetric in one axis"
                                                                      : "asymmetric in two axes";
    s += sep + std::string(f.irregular_border ? "irregular border" : "regular border");
  }
  static const char* count_en[] = {"no", "one", "two", "three", "four", "five", "six"};
  std::string list;
  for (size_t i = 0; i < f.colours.size(); ++i) list += (i ? sep : "") + colour_name(f.colours[i]).get(lang);
  const size_t nc = f.colours.size();
  if (ja) s += sep + (nc == 0 ? std::string("典型的なダーモスコピー色なし") : std::to_string(nc) + "色（" + list + "）");
  else
    s += sep + (nc == 0 ? std::string("no typical dermoscopic colour")
                        : std::string(count_en[nc]) + (nc == 1 ? " colour (" : " colours (") + list + ")");
  const int sc = size_class(f);
  if (ja) s += sep + std::string(size_words(sc, true)) + "（画像の約" + percent(f.area_fraction) + "）";
  else s += sep + std::string(size_words(sc, false)) + " (about " + percent(f.area_fraction) + " of the frame)";
  if (f.touches_border) s += sep + std::string(ja ? "画像の端にかかる" : "reaching the edge of the photo");
  return s;
}

const std::vector<std::string>& concept_questions(Language lang) {
  static const std::vector<std::string> en = {
      "Describe the clinical features of the lesion in this image.",
      "What dermoscopic features does this lesion show?",
      "List the medical features you can see in this image."};
  static const std::vector<std::string> ja = {"この画像の病変の臨床的特徴を説明してください。",
                                              "この病変にはどのようなダーモスコピー所見がありますか？",
                                              "この画像で見える医学的特徴を挙げてください。"};
  return lang == Language::Ja ? ja : en;
}

const ConditionKnowledge* condition_knowledge(const std::string& id) {
  const auto it = knowledge().find(id);
  return it == knowledge().end() ? nullptr : &it->second;
}

ConsultationAnswers consultation_answers(const Condition& c, const LesionFeatures& f, Language lang) {
  const bool ja = lang == Language::Ja;
  const ConsultationScript& script = consultation_script(lang);
  ConsultationAnswers a;
  const std::string& phrase = c.phrase.get(lang);
  a.diagnosis = script.answer_prefix + phrase;
  const std::string concepts = concept_text(f, lang);
  // 1. describe: SkinGPT-4's answer form, the diagnosis in the scored wording.
  a.answers.push_back(ja ? "これは次の医学的特徴を持つ皮膚疾患の画像です：" + concepts + "。" + a.diagnosis + "。" +
                               c.description.ja
                         : "This is a skin disease image with the following medical features: " + concepts + ". " +
                               a.diagnosis + ". " + c.description.en);
  const ConditionKnowledge* k = condition_knowledge(c.id);
  // 2. further features: the measured colours in proportion, then what to look for.
  std::string detail;
  if (f.found) {
    std::string parts;
    for (SkinColour col : f.colours) {
      const double frac = f.colour_fraction[static_cast<int>(col)];
      if (!parts.empty()) parts += ja ? "、" : ", ";
      parts += colour_name(col).get(lang) + (ja ? "（約" + percent(frac) + "）" : " (about " + percent(frac) + ")");
    }
    detail = ja ? "病変は画像の約" + percent(f.area_fraction) + "を占め" +
                      (parts.empty() ? std::string("、典型的な色調はみられません。") : "、色調は" + parts + "です。")
                : "The lesion covers about " + percent(f.area_fraction) + " of the frame" +
                      (parts.empty() ? std::string(" and shows no typical dermoscopic colour.")
                                     : "; its colours are " + parts + ".");
  } else {
    detail = ja ? "病変の輪郭ははっきりしません。" : "The outline of the lesion is not distinct.";
  }
  a.answers.push_back(k ? detail + (ja ? "" : " ") + k->features.get(lang) : detail);
  // 3. cause, 4. treatment.
  a.answers.push_back(k ? k->cause.get(lang) : c.description.get(lang));
  a.answers.push_back(k ? k->treatment.get(lang)
                        : (ja ? "診断と治療は皮膚科医が判断してください。"
                              : "A dermatologist should confirm the diagnosis and decide on treatment."));
  return a;
}

}  // namespace sg::clinic
