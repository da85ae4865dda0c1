// Fuzz target: the bodies of every REST route (requests.cpp), and WHEP's SDP offer.  The first byte
// picks the route; the rest is the body.  Contract: a body either parses into
// a typed request whose values keep their documented bounds, or is refused
// with a Refusal that says why — never a crash, never another exception.
#include "fuzz_util.h"
#include "requests.h"

#include <cmath>

using namespace livemicro::orchestrator;

namespace {

constexpr size_t kMaxBody = 64 * 1024;

void
check_command (const CommandRequest &c)
{
  FUZZ_CHECK (std::isfinite (c.a) && std::isfinite (c.b), "a command's numbers are finite");
  if (c.op == CommandOp::kObjective)
    FUZZ_CHECK (c.objective >= 1 && c.objective <= 1000,
                "objective in [1, 1000]: " + std::to_string (c.objective));
}

void
check_annotation (const AnnotationRequest &a)
{
  FUZZ_CHECK (a.kind == "point" || a.kind == "arrow" || a.kind == "region", "kind: " + a.kind);
  size_t n = a.points_um.size ();
  FUZZ_CHECK (n >= 1 && n <= 10000, "point count " + std::to_string (n));
  for (const auto &[x, y] : a.points_um)
    FUZZ_CHECK (std::isfinite (x) && std::isfinite (y) && std::fabs (x) <= kMaxSlideCoordinateUm
                    && std::fabs (y) <= kMaxSlideCoordinateUm,
                "a point on a slide");
  FUZZ_CHECK (g_utf8_validate (a.label.c_str (), (gssize)a.label.size (), nullptr), "label is UTF-8");
}

} // namespace

extern "C" int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  const uint8_t route = data[0] % 6;
  const char *body = reinterpret_cast<const char *> (data + 1);
  const size_t len = size - 1;
  try {
    if (route == 4) {
      std::string name (body, len);
      std::string why;
      bool ok = valid_display_name (name, &why);
      FUZZ_CHECK (ok || !why.empty (), "a refused name says why");
      if (ok)
        FUZZ_CHECK (g_utf8_strlen (name.c_str (), (gssize)name.size ()) <= 128, "at most 128 characters");
      return 0;
    }
    if (route == 5) { // POST /whep/{session}: an SDP offer
      WhepOffer o = parse_whep_offer ("application/sdp", body, len, kMaxBody);
      FUZZ_CHECK (o.h264_payload >= 96 && o.h264_payload <= 127, "a dynamic payload type");
      FUZZ_CHECK (o.sdp.size () == len && g_utf8_validate (o.sdp.c_str (), (gssize)o.sdp.size (), nullptr),
                  "the offer is kept as it came, UTF-8");
      return 0;
    }
    JsonInput in = JsonInput::parse (body, len, kMaxBody);
    switch (route) {
    case 0: {
      SessionRequest r = parse_session_request (in);
      (void)r;
      break;
    }
    case 1: {
      ControlRequest r = parse_control_request (in);
      if (r.action == ControlAction::kGrant)
        FUZZ_CHECK (in.has ("session"), "grant names a session");
      break;
    }
    case 2: {
      std::string op;
      check_command (parse_command_request (in, &op));
      break;
    }
    case 3:
      check_annotation (parse_annotation_request (in));
      break;
    }
  } catch (const Refusal &e) {
    FUZZ_CHECK (!e.message.empty (), "a refusal says why");
  }
  return 0;
}
