// Microscope URIs: scheme://host/path?key=value&...
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>

namespace livemicro::hw {

class MicroscopeUri {
public:
  // Throws Error(kUnsupported) when `text` is not a URI.
  explicit MicroscopeUri (const std::string &text);

  const std::string &text () const { return text_; }
  const std::string &scheme () const { return scheme_; }
  const std::string &host () const { return host_; }
  const std::string &path () const { return path_; } // percent-decoded
  bool has (const std::string &key) const { return query_.count (key) > 0; }

  // Typed query values.  A value that does not parse or lies outside
  // [min, max] throws Error(kOutOfRange) naming the key, value and range.
  double get_double (const std::string &key, double fallback, double min, double max) const;
  int64_t get_int (const std::string &key, int64_t fallback, int64_t min, int64_t max) const;
  std::string get_string (const std::string &key, const std::string &fallback) const;
  // Throws Error(kUnsupported) naming the first key not in `known`, so a typo
  // in a URI is reported instead of silently ignored.
  void check_keys (std::initializer_list<const char *> known) const;

private:
  std::string text_, scheme_, host_, path_;
  std::map<std::string, std::string> query_;
};

} // namespace livemicro::hw
