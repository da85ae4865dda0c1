// livemicro::json — what to check in JSON text before json-glib 1.6 (Debian
// 12) reads it.  Header-only: the profiles file (privacy), livemicrod's
// configuration, and any other JSON from outside.
#pragma once

#include <optional>
#include <string>

namespace livemicro::json {

struct TextProblem {
  int line = 1;     // 1-based
  std::string what; // "nested deeper than 64 levels", …
};

namespace detail {

// The four hex digits at `at` as a number; false when there are not four.
inline bool
hex4 (const std::string &text, size_t at, unsigned &v)
{
  if (at + 4 > text.size ())
    return false;
  v = 0;
  for (size_t k = at; k < at + 4; k++) {
    char c = text[k];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0)
      return false;
    v = v * 16 + (unsigned)d;
  }
  return true;
}

// Reads the "…" string that opens at `i`, up to its closing quote (`i` ends
// there, `line` counts its newlines); what json-glib would get wrong in its
// escapes, or nullopt.
inline std::optional<std::string>
string_problem (const std::string &text, size_t &i, int &line)
{
  const size_t n = text.size ();
  for (i++; i < n && text[i] != '"'; i++) {
    line += text[i] == '\n';
    if (text[i] != '\\' || ++i >= n)
      continue;
    // json-glib also reads escapes JSON does not have: octal "\641"
    // is the byte 0xa1, not UTF-8.
    if (std::string ("\"\\/bfnrt").find (text[i]) != std::string::npos)
      continue;
    if (text[i] != 'u')
      return std::string ("an escape JSON does not have: \\") + text[i];
    unsigned u = 0, low = 0;
    // json-glib reads "\ud8op" as something, not UTF-8: no guessing.
    if (!hex4 (text, i + 1, u))
      return std::string ("a \\u escape without four hex digits");
    i += 4;
    bool high = u >= 0xD800 && u <= 0xDBFF;
    if (high && i + 2 < n && text[i + 1] == '\\' && text[i + 2] == 'u' && hex4 (text, i + 3, low)
        && low >= 0xDC00 && low <= 0xDFFF) {
      i += 6;
      continue;
    }
    if (u >= 0xD800 && u <= 0xDFFF)
      return std::string ("a \\u escape of half a surrogate pair (\\uD800-\\uDFFF) "
                          "without its other half");
  }
  return std::nullopt;
}

} // namespace detail

// What json-glib would get wrong in `text`, or nullopt:
// - nesting deeper than `max_depth` levels of [ and {: json-glib recurses,
//   and about 75,000 levels overflow an 8 MB stack (SIGSEGV);
// - a \uD800–\uDFFF escape that is not a high surrogate followed by a low
//   one, a \u without four hex digits, an escape JSON does not have (json-glib
//   reads octal \641 as the byte 0xa1): json-glib turns them into invalid
//   UTF-8, swallows the character after them and, for two low surrogates in
//   a row, leaks about 150 bytes;
// - anything after the first array or object ({"a":1}{"b":2}, [][]), or an
//   array or object after a number (1[]): json-glib returns the first value
//   as if the text ended there, and leaks each array or object after it
//   (88 bytes for every "[]").
// Reads the text as json-glib's scanner does: "…" strings with escapes,
// '…' strings without, /* … */ comments.  Anything else wrong is left to
// json-glib's own error.
inline std::optional<TextProblem>
text_problem (const std::string &text, int max_depth)
{
  const size_t n = text.size ();
  int depth = 0, line = 1;
  bool started = false; // the (first) value has begun
  bool ended = false;   // the first array or object is complete
  auto skip_to = [&] (size_t &i, size_t end) {
    for (; i < end && i < n; i++)
      line += text[i] == '\n';
  };
  for (size_t i = 0; i < n; i++) {
    char c = text[i];
    if (c == '\n') {
      line++;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r')
      continue;
    if (c == '/' && i + 1 < n && text[i + 1] == '*') {
      size_t end = text.find ("*/", i + 2);
      skip_to (i, end == std::string::npos ? n : end + 1);
      continue;
    }
    if (ended || (depth == 0 && started && (c == '[' || c == '{')))
      return TextProblem{line, "text after the end of the JSON value"};
    started = true;
    if (c == '[' || c == '{') {
      if (++depth > max_depth)
        return TextProblem{line, "nested deeper than " + std::to_string (max_depth) + " levels"};
    } else if (c == ']' || c == '}') {
      if (depth > 0 && --depth == 0)
        ended = true;
    } else if (c == '\'') {
      size_t end = text.find ('\'', i + 1);
      i++;
      skip_to (i, end == std::string::npos ? n : end);
    } else if (c == '"') {
      if (auto what = detail::string_problem (text, i, line))
        return TextProblem{line, *what};
    }
  }
  return std::nullopt;
}

} // namespace livemicro::json
