// Fuzz target: the messages of the daemon↔worker link (worker_protocol.cpp),
// both directions: JSON events and commands, and the packed field of
// nuclei.  Contract: what decodes encodes back to a message that decodes to
// the same encoding (a fixed point), and nothing else happens to the rest;
// a field that unpacks packs back to the very same bytes.
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
  if (auto f = unpack_field (data, size)) {
    const std::vector<uint8_t> packed = pack_field (*f);
    FUZZ_CHECK (packed == std::vector<uint8_t> (data, data + size), "a field packs back to its bytes");
    auto again = unpack_field (packed.data (), packed.size ());
    FUZZ_CHECK (again && field_json (*again) == field_json (*f), "field round trip");
  }
  return 0;
}
