// The languages a consultation can be held and reported in. Every text the
// clinic layer shows a person exists in each of them.
#pragma once
#include <string>

namespace sg::clinic {

enum class Language { En, Ja };

// "en" / "ja".
const char* language_code(Language l);
// Parses "en"/"english" or "ja"/"jp"/"japanese" (any case); throws sg::Error otherwise.
Language parse_language(const std::string& s);

// The text with every invalid UTF-8 sequence replaced by U+FFFD (model
// output can end inside a multi-byte character).
std::string valid_utf8(const std::string& s);
// The text for HTML (content or a quoted attribute): valid_utf8, then & < > " '
// as entities.
std::string html_escape(const std::string& s);

// A text in every supported language.
struct LocalText {
  std::string en, ja;
  const std::string& get(Language l) const { return l == Language::Ja ? ja : en; }
};

}  // namespace sg::clinic
