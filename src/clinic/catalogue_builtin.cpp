// The built-in default catalogue: a copy of data/conditions.json compiled in,
// so the program works wherever it is installed. Test
// Catalogue.BuiltinMatchesDataFile checks the two are the same; after editing
// data/conditions.json, paste it here.
#include "clinic/catalogue.h"

namespace sg::clinic {

const char* Catalogue::builtin_json() {
  return R"SKINGPT_JSON({
  "format": "skingpt-conditions",
  "version": 1,
  "comment": "The default condition catalogue: the seven HAM10000 diagnostic classes. Copy this file to MODEL_DIR/conditions.json (or pass --conditions FILE) to change or extend it; docs/consultation.md describes every field.",
  "conditions": [
    {
      "id": "nv",
      "name": {"en": "Melanocytic nevus (mole)", "ja": "色素細胞母斑（ほくろ）"},
      "icd10": ["D22"],
      "malignancy": "benign",
      "description": {
        "en": "A common benign mole made of pigment cells. Usually evenly coloured with a regular outline; changes in size, shape or colour should be checked.",
        "ja": "色素細胞からなるよくある良性のほくろです。通常は色が均一で輪郭が整っています。大きさ・形・色が変わる場合は受診して確認してください。"
      },
      "phrase": {"en": "melanocytic nevus", "ja": "色素細胞母斑"}
    },
    {
      "id": "mel",
      "name": {"en": "Melanoma", "ja": "悪性黒色腫（メラノーマ）"},
      "icd10": ["C43"],
      "malignancy": "malignant",
      "description": {
        "en": "A skin cancer of pigment cells. Often asymmetric, with an irregular border and several colours. Early removal is curative; delay is dangerous.",
        "ja": "色素細胞から生じる皮膚がんです。左右非対称で輪郭が不整、複数の色が混じることが多いです。早期の切除で治癒が期待でき、発見の遅れは危険です。"
      },
      "phrase": {"en": "melanoma", "ja": "悪性黒色腫"}
    },
    {
      "id": "bkl",
      "name": {"en": "Benign keratosis (seborrheic keratosis, solar lentigo, lichen planus-like keratosis)", "ja": "良性角化症（脂漏性角化症・日光黒子・扁平苔癬様角化症）"},
      "icd10": ["L82", "L81.4"],
      "malignancy": "benign",
      "description": {
        "en": "Harmless growths or spots of the outer skin that become common with age and sun exposure. They can look like melanoma, so unclear cases are checked.",
        "ja": "加齢や日光により増える、表皮の無害なできものやしみです。悪性黒色腫に似て見えることがあるため、判断が難しい場合は確認が必要です。"
      },
      "phrase": {"en": "benign keratosis", "ja": "良性角化症"}
    },
    {
      "id": "bcc",
      "name": {"en": "Basal cell carcinoma", "ja": "基底細胞癌"},
      "icd10": ["C44"],
      "malignancy": "malignant",
      "description": {
        "en": "The most common skin cancer. It grows slowly and rarely spreads, but it destroys surrounding tissue if left untreated; it is treated by removal.",
        "ja": "最も多い皮膚がんです。進行は遅く転移はまれですが、放置すると周囲の組織を壊していきます。切除などで治療します。"
      },
      "phrase": {"en": "basal cell carcinoma", "ja": "基底細胞癌"}
    },
    {
      "id": "akiec",
      "name": {"en": "Actinic keratosis / intraepithelial carcinoma (Bowen's disease)", "ja": "日光角化症／表皮内癌（ボーエン病）"},
      "icd10": ["L57.0", "D04"],
      "malignancy": "premalignant",
      "red_flag": true,
      "description": {
        "en": "Sun-damage lesions that can turn into squamous cell carcinoma, or an early squamous cell carcinoma confined to the outer skin. They need treatment and follow-up.",
        "ja": "日光による損傷から生じ有棘細胞癌に進行しうる病変、または表皮内にとどまる早期の有棘細胞癌です。治療と経過観察が必要です。"
      },
      "phrase": {"en": "actinic keratosis", "ja": "日光角化症"}
    },
    {
      "id": "vasc",
      "name": {"en": "Vascular lesion (angioma, angiokeratoma, pyogenic granuloma)", "ja": "血管病変（血管腫・被角血管腫・化膿性肉芽腫）"},
      "icd10": ["D18.0"],
      "malignancy": "benign",
      "description": {
        "en": "Growths made of small blood vessels, usually red, purple or blue. Most are harmless; one that bleeds or grows quickly should be examined.",
        "ja": "細い血管からなるできもので、赤・紫・青色をしています。多くは無害ですが、出血したり急に大きくなる場合は診察を受けてください。"
      },
      "phrase": {"en": "vascular lesion", "ja": "血管病変"}
    },
    {
      "id": "df",
      "name": {"en": "Dermatofibroma", "ja": "皮膚線維腫"},
      "icd10": ["D23"],
      "malignancy": "benign",
      "description": {
        "en": "A firm, harmless nodule in the skin, often on the legs, sometimes after an insect bite or small injury. It dimples when pinched.",
        "ja": "皮膚の中にできる硬く無害なしこりで、脚に多く、虫刺されや小さなけがの後にできることがあります。つまむと中央がへこみます。"
      },
      "phrase": {"en": "dermatofibroma", "ja": "皮膚線維腫"}
    }
  ]
}
)SKINGPT_JSON";
}

}  // namespace sg::clinic
