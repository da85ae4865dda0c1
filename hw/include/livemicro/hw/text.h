// Small text helpers for the messages of livemicro::hw.
#pragma once

#include <sstream>
#include <string>

namespace livemicro::hw {

// A number as a user reads it: 75000, 0.25, 1e+07.
inline std::string
num (double v)
{
  std::ostringstream s;
  s << v;
  return s.str ();
}

} // namespace livemicro::hw
