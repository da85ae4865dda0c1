#pragma once

#include <stdexcept>
#include <string>

namespace livemicro::hw {

enum class ErrorKind {
  kNotFound,    // file or device does not exist
  kCorrupt,     // exists but cannot be read as what it claims to be
  kUnsupported, // URI scheme, query key, format or size not supported
  kOutOfRange,  // a position, speed or objective outside its limits
  kDevice,      // the device failed or went away
};

// Errors thrown inside livemicro::hw.  what() is a sentence a user can act on:
// it names the path, the value and its allowed range.
class Error : public std::runtime_error {
public:
  Error (ErrorKind kind, const std::string &message) : std::runtime_error (message), kind_ (kind) {}
  ErrorKind kind () const { return kind_; }

private:
  ErrorKind kind_;
};

} // namespace livemicro::hw
