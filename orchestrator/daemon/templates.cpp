#include "templates.h"

#include <glib.h>

#include <algorithm>
#include <sstream>

namespace livemicro::orchestrator {

bool
Templates::exists (const std::string &name) const
{
  std::string path = dir_ + "/" + name + ".pipeline";
  return g_file_test (path.c_str (), G_FILE_TEST_IS_REGULAR);
}

std::string
Templates::load (const std::string &name) const
{
  if (name.find ("..") != std::string::npos)
    throw TemplateError ("template name '" + name + "' is not allowed");
  std::string path = dir_ + "/" + name + ".pipeline";
  g_autofree char *text = nullptr;
  g_autoptr (GError) error = nullptr;
  if (!g_file_get_contents (path.c_str (), &text, nullptr, &error))
    throw TemplateError ("pipeline template '" + path + "': " + error->message);
  std::istringstream in (text);
  std::string line, out;
  while (std::getline (in, line)) {
    auto hash = line.find ('#');
    if (hash != std::string::npos)
      line.erase (hash);
    size_t b = line.find_first_not_of (" \t\r"), e = line.find_last_not_of (" \t\r");
    if (b == std::string::npos)
      continue;
    std::string trimmed = line.substr (b, e - b + 1);
    if (trimmed.empty ())
      continue;
    if (!out.empty ())
      out += ' ';
    out += trimmed;
  }
  return out;
}

std::string
Templates::render (const std::string &text, const std::map<std::string, std::string> &values)
{
  std::string out;
  size_t i = 0;
  while (i < text.size ()) {
    size_t open = text.find ('{', i);
    if (open == std::string::npos) {
      out += text.substr (i);
      break;
    }
    size_t close = text.find ('}', open);
    if (close == std::string::npos)
      throw TemplateError ("unclosed '{' in pipeline template");
    out += text.substr (i, open - i);
    std::string key = text.substr (open + 1, close - open - 1);
    auto it = values.find (key);
    if (it == values.end ())
      throw TemplateError ("pipeline template uses {" + key + "}, which has no value");
    out += it->second;
    i = close + 1;
  }
  return out;
}

std::string
Templates::quote (const std::string &value)
{
  std::string q = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\')
      q += '\\';
    q += c;
  }
  return q + "\"";
}

} // namespace livemicro::orchestrator
