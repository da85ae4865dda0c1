// Fuzz target: the JSON messages of the daemon↔worker link
// (worker_protocol.cpp), both directions.  Contract: what decodes encodes
// back to a message that decodes to the same encoding (a fixed point), and
// nothing else happens to the rest.
#include "common/worker_protocol.h"
#include "fuzz_util.h"

using namespace livemicro::orchestrator;

extern "C" int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const std::string text = livemicro::fuzz::text (data, size);
  if (auto e = decode_event (text)) {
    std::string once = encode (*e);
    auto again = decode_event (once);
    FUZZ_CHECK (again.has_value (), "an encoded event decodes: " + once);
    FUZZ_CHECK (encode (*again) == once, "event round trip: " + once);
  }
  if (auto c = decode_command (text)) {
    std::string once = encode (*c);
    auto again = decode_command (once);
    FUZZ_CHECK (again.has_value (), "an encoded command decodes: " + once);
    FUZZ_CHECK (encode (*again) == once, "command round trip: " + once);
  }
  return 0;
}
