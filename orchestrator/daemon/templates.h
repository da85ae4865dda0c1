// Pipeline templates (pipelines/*.pipeline): gst-launch descriptions with
// {placeholders}, '#' comments and line breaks, rendered per microscope and
// per view.
#pragma once

#include <map>
#include <stdexcept>
#include <string>

namespace livemicro::orchestrator {

class TemplateError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

class Templates {
public:
  explicit Templates (std::string dir) : dir_ (std::move (dir)) {}
  const std::string &dir () const { return dir_; }
  bool exists (const std::string &name) const;
  // The text of <dir>/<name>.pipeline without comments, on one line.
  std::string load (const std::string &name) const;
  // Replaces every {key}; a placeholder without a value is an error.
  static std::string render (const std::string &text, const std::map<std::string, std::string> &values);
  // A value as one gst-launch token: "..." with quotes and backslashes escaped.
  static std::string quote (const std::string &value);

private:
  std::string dir_;
};

} // namespace livemicro::orchestrator
