// What a livemicro::hw call throws, as text, for tests of error messages.
#pragma once

#include <livemicro/hw/error.h>

#include <functional>
#include <string>

namespace livemicro::test {

// The Error's message ("(no error)" when nothing was thrown) and its kind.
inline std::string
error_of (const std::function<void ()> &fn, livemicro::hw::ErrorKind *kind = nullptr)
{
  try {
    fn ();
  } catch (const livemicro::hw::Error &e) {
    if (kind)
      *kind = e.kind ();
    return e.what ();
  }
  return "(no error)";
}

inline bool
contains (const std::string &s, const std::string &part)
{
  return s.find (part) != std::string::npos;
}

} // namespace livemicro::test
