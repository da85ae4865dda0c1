// Why the daemon will not do what it was asked: the domain's refusals,
// shared by the request parsing, the control arbiter and the hubs.
#pragma once

#include <string>

namespace livemicro::orchestrator {

// Why the daemon will not do what it was asked, in the domain's words; the
// HTTP layer maps each reason to a status (http_api.cpp), the WebSocket
// layer to an error message.
enum class Reason {
  kMalformed,       // not JSON, nested too deep, not an object
  kUnauthenticated, // no or an unknown token
  kForbidden,       // the role may not
  kNotFound,
  kConflict, // not the current lease, no view
  kTooLarge,
  kInvalid, // a field of the wrong type or value
  kRateLimited,
  kUnavailable, // offline, the database cannot be written, a view cannot be built
  kTimedOut,
  kUnsupportedMediaType, // a body of another content type than the route reads
};
struct Refusal {
  Reason reason;
  std::string message;
};

} // namespace livemicro::orchestrator
