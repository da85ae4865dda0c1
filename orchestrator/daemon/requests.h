// Outside input, parsed once into types: the bodies of the REST API and the
// messages of the two WebSocket protocols (viewer page, events clients).
// Everything a client sends passes through here before the daemon sees it:
// size and nesting are bounded before json-glib parses (its parser recurses),
// every member is read with its type checked, and a wrong shape is a
// Refusal (malformed, too large, invalid) naming the field.
// Plain C++ over json-glib, no GObject state: fuzzed by tests/fuzz.
#pragma once

#include "common/worker_protocol.h"
#include "refusal.h"

#include <json-glib/json-glib.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace livemicro::orchestrator {

// Deeper JSON is refused before it is parsed (json-glib recurses per level).
constexpr int kMaxJsonDepth = 32;

// A parsed JSON object that owns its parser; typed access to its members.
class JsonInput {
public:
  // Throws Refusal: too large over `max_bytes`; malformed when empty, not
  // JSON, nested too deep or not an object.
  static JsonInput parse (const char *data, size_t len, size_t max_bytes);
  static JsonInput parse (const std::string &text, size_t max_bytes)
  {
    return parse (text.data (), text.size (), max_bytes);
  }
  JsonObject *object () const { return object_; }
  bool has (const char *name) const;

  // A member of another type than asked for is an invalid Refusal naming it;
  // an absent one is nullopt (or, for required_*, a refusal too).
  std::optional<std::string> string (const char *name) const;
  std::string required_string (const char *name) const;
  std::optional<double> number (const char *name) const; // finite
  double required_number (const char *name) const;
  // A JSON integer within [min, max] (no truncation: 1e3, 10.0 and values
  // that do not fit are refused).
  std::optional<int64_t> integer (const char *name, int64_t min, int64_t max) const;
  std::optional<bool> boolean (const char *name) const;
  // A member that must be an object, as its own input.
  std::optional<JsonInput> member_object (const char *name) const;
  // Refuses members not in `allowed` (naming the first).
  void only (std::initializer_list<const char *> allowed) const;
  // The member's JSON text (e.g. to store it as it came).
  std::string member_json (const char *name) const;

  // Where the fields sit, for error messages ("move.dx_um").
  void set_context (std::string c) { context_ = std::move (c); }

private:
  JsonInput (std::shared_ptr<JsonParser> parser, JsonObject *object, std::string context);
  JsonNode *member (const char *name) const;
  std::string field (const char *name) const;
  std::shared_ptr<JsonParser> parser_;
  JsonObject *object_ = nullptr;
  std::string context_;
};

// A user name shown to others: 1..128 characters (not bytes), valid UTF-8,
// at least one visible character, no control or format characters (bidi
// overrides, zero-width characters, soft hyphens).
bool valid_display_name (const std::string &name, std::string *why = nullptr);

// ---- REST bodies -------------------------------------------------------

// POST /api/v1/sessions
struct SessionRequest {
  std::string user, role;
  std::optional<std::string> microscope;
  std::optional<std::string> site; // where its viewers are (an edge cloud places its view near them)
};
SessionRequest parse_session_request (const JsonInput &body);

// POST /api/v1/microscopes/{id}/keyframe (the admin; the edge cloud's
// serving nodes): a keyframe of one view now, for a viewer that joins a
// relayed view.
struct KeyframeRequest {
  std::string profile;
};
KeyframeRequest parse_keyframe_request (const JsonInput &body);

// POST /api/v1/microscopes/{id}/control
enum class ControlAction { kRequest, kRelease, kRenew, kGrant, kRevoke };
const char *control_action_name (ControlAction a);
struct ControlRequest {
  ControlAction action = ControlAction::kRequest;
  std::string lease;   // renew
  std::string session; // grant
};
ControlRequest parse_control_request (const JsonInput &body);

// POST /api/v1/microscopes/{id}/commands: one command and the lease.
struct CommandRequest {
  CommandOp op = CommandOp::kStop;
  std::string lease;
  // move: x_um, y_um; move_by: dx_um, dy_um; focus: z_um; focus_by: dz_um;
  // jog: vx_um_s, vy_um_s (µm and µm/s).
  double a = 0, b = 0;
  int objective = 0; // magnification
};
// Throws Refusal; `op_seen` (if given) gets the command's name as soon
// as it is known, so that a refusal can be audited under it.
CommandRequest parse_command_request (const JsonInput &body, std::string *op_seen = nullptr);

// POST /api/v1/microscopes/{id}/annotations
struct AnnotationRequest {
  std::string kind; // point, arrow, region
  std::string label;
  std::vector<std::pair<double, double>> points_um;
};
// Coordinates beyond this (1 km) are not on a slide.
constexpr double kMaxSlideCoordinateUm = 1e9;
AnnotationRequest parse_annotation_request (const JsonInput &body);

// POST /api/v1/sessions/{id}/recording: `{}` or `{"segment_s": N}`.
struct RecordingRequest {
  std::optional<int> segment_s; // 1..3600; absent: the configured one
};
RecordingRequest parse_recording_request (const JsonInput &body);

// POST /whep/{session} (draft-ietf-wish-whep): the viewer's SDP offer.
// What the daemon sends: one H.264 video stream, constrained baseline,
// packetization-mode 1.
struct WhepOffer {
  std::string sdp;           // the offer as it came (valid UTF-8, CRLF or LF lines)
  unsigned h264_payload = 0; // the offer's payload type for that stream
  unsigned video_mline = 0;  // the index of its m=video section
};
// Throws Refusal: unsupported media type unless `content_type` is
// application/sdp (parameters allowed); too large over `max_bytes`;
// malformed when the body is not an SDP offer a WebRTC peer sends (v=0
// first, m= sections, ICE credentials, a DTLS fingerprint); invalid when
// it is one but offers no video the daemon can send (H.264 with
// packetization-mode=1 and a baseline profile-level-id), or only send.
WhepOffer parse_whep_offer (const std::string &content_type, const char *data, size_t len, size_t max_bytes);

// ---- WebSocket messages (viewer page /ws/{session}, events sockets) ------

struct ViewerMessage {
  enum class Kind { kHello, kAnswer, kIce, kStats, kPointer, kPing };
  Kind kind = Kind::kPing;
  std::string token;         // hello
  bool webrtc = true;        // hello: whether the page wants video
  bool nuclei = false;       // hello: whether it wants the 'nuclei' events (large)
  bool relayed = false;      // hello: another node of the edge cloud relays this page
  std::string sdp;           // answer
  std::string candidate;     // ice
  unsigned mline = 0;        // ice: sdpMLineIndex
  std::string stats_json;    // stats: the "data" object as JSON
  double x_um = 0, y_um = 0; // pointer
  int64_t t = 0;             // ping: the client's clock, echoed back
};
// Throws Refusal (malformed, too large, invalid).  Unknown types are invalid.
ViewerMessage parse_viewer_message (const char *data, size_t len, size_t max_bytes);

} // namespace livemicro::orchestrator
