// Fuzz target: a message on the viewer or events WebSocket
// (parse_viewer_message).  Contract: a typed message whose fields keep their
// bounds, or a Refusal that says why.
#include "fuzz_util.h"
#include "requests.h"

#include <cmath>

using namespace livemicro::orchestrator;

extern "C" int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  try {
    ViewerMessage m = parse_viewer_message (reinterpret_cast<const char *> (data), size, 64 * 1024);
    switch (m.kind) {
    case ViewerMessage::Kind::kIce:
      FUZZ_CHECK (m.mline <= 255, "sdpMLineIndex in [0, 255]");
      break;
    case ViewerMessage::Kind::kPointer:
      FUZZ_CHECK (std::isfinite (m.x_um) && std::isfinite (m.y_um)
                      && std::fabs (m.x_um) <= kMaxSlideCoordinateUm
                      && std::fabs (m.y_um) <= kMaxSlideCoordinateUm,
                  "a pointer on a slide");
      break;
    case ViewerMessage::Kind::kStats:
      FUZZ_CHECK (!m.stats_json.empty () && m.stats_json[0] == '{', "stats data is an object");
      break;
    default:
      break;
    }
  } catch (const Refusal &e) {
    FUZZ_CHECK (!e.message.empty (), "a refusal says why");
  }
  return 0;
}
