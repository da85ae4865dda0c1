// Helpers for fuzz targets: a contract check that crashes with a message
// (the driver then writes the input to a crash file).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace livemicro::fuzz {

[[noreturn]] inline void
broken_contract (const char *file, int line, const char *condition, const std::string &detail)
{
  std::fprintf (stderr, "\n%s:%d: broken contract: %s\n  %s\n", file, line, condition, detail.c_str ());
  std::fflush (stderr);
  std::abort ();
}

// The input as text, for parsers that take a std::string.
inline std::string
text (const uint8_t *data, size_t size)
{
  return std::string (reinterpret_cast<const char *> (data), size);
}

} // namespace livemicro::fuzz

// FUZZ_CHECK (condition, detail): `detail` (a std::string expression) is
// evaluated only when the condition is false.
#define FUZZ_CHECK(condition, detail)                                                                        \
  do {                                                                                                       \
    if (!(condition))                                                                                        \
      ::livemicro::fuzz::broken_contract (__FILE__, __LINE__, #condition, (detail));                         \
  } while (0)
