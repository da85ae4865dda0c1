#include "requests.h"

#include "common/json_writer.h"

#include <glib.h>
#include <gst/sdp/sdp.h>
#include <livemicro/json_text.h>

#include <cmath>
#include <cstring>

namespace livemicro::orchestrator {

JsonInput::JsonInput (std::shared_ptr<JsonParser> parser, JsonObject *object, std::string context)
    : parser_ (std::move (parser)), object_ (object), context_ (std::move (context))
{}

JsonInput
JsonInput::parse (const char *data, size_t len, size_t max_bytes)
{
  if (len > max_bytes)
    throw Refusal{Reason::kTooLarge, "body larger than " + std::to_string (max_bytes) + " bytes"};
  if (len == 0)
    throw Refusal{Reason::kMalformed, "malformed JSON: empty body"};
  // What json-glib 1.6 would get wrong (deep nesting overflows its stack,
  // bad escapes become invalid UTF-8, values after the first are dropped
  // and leaked) is refused before it reads the text.
  if (auto problem = livemicro::json::text_problem (std::string (data, len), kMaxJsonDepth))
    throw Refusal{Reason::kMalformed, "malformed JSON: " + problem->what};
  std::shared_ptr<JsonParser> parser (json_parser_new (), g_object_unref);
  g_autoptr (GError) error = nullptr;
  if (!json_parser_load_from_data (parser.get (), data, (gssize)len, &error))
    throw Refusal{Reason::kMalformed,
                  std::string ("malformed JSON: ") + (error ? error->message : "unreadable")};
  JsonNode *root = json_parser_get_root (parser.get ());
  if (!root || !JSON_NODE_HOLDS_OBJECT (root))
    throw Refusal{Reason::kMalformed, "the body must be a JSON object"};
  return JsonInput (std::move (parser), json_node_get_object (root), "");
}

bool
JsonInput::has (const char *name) const
{
  return json_object_has_member (object_, name);
}

JsonNode *
JsonInput::member (const char *name) const
{
  return json_object_has_member (object_, name) ? json_object_get_member (object_, name) : nullptr;
}

std::string
JsonInput::field (const char *name) const
{
  return context_.empty () ? std::string (name) : context_ + "." + name;
}

std::optional<std::string>
JsonInput::string (const char *name) const
{
  JsonNode *n = member (name);
  if (!n)
    return std::nullopt;
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
    throw Refusal{Reason::kInvalid, "field '" + field (name) + "' must be a string"};
  const char *s = json_node_get_string (n);
  return std::string (s ? s : "");
}

std::string
JsonInput::required_string (const char *name) const
{
  auto s = string (name);
  if (!s)
    throw Refusal{Reason::kInvalid, "missing field '" + field (name) + "'"};
  return *s;
}

std::optional<double>
JsonInput::number (const char *name) const
{
  JsonNode *n = member (name);
  if (!n)
    return std::nullopt;
  if (!JSON_NODE_HOLDS_VALUE (n)
      || (json_node_get_value_type (n) != G_TYPE_DOUBLE && json_node_get_value_type (n) != G_TYPE_INT64))
    throw Refusal{Reason::kInvalid, "field '" + field (name) + "' must be a number"};
  double v = json_node_get_double (n);
  if (!std::isfinite (v))
    throw Refusal{Reason::kInvalid, "field '" + field (name) + "' must be finite"};
  return v;
}

double
JsonInput::required_number (const char *name) const
{
  auto v = number (name);
  if (!v)
    throw Refusal{Reason::kInvalid, "field '" + field (name) + "' must be a number"};
  return *v;
}

std::optional<int64_t>
JsonInput::integer (const char *name, int64_t min, int64_t max) const
{
  JsonNode *n = member (name);
  if (!n)
    return std::nullopt;
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_INT64)
    throw Refusal{Reason::kInvalid, "field '" + field (name) + "' must be an integer"};
  gint64 v = json_node_get_int (n);
  if (v < min || v > max)
    throw Refusal{Reason::kInvalid, "field '" + field (name) + "' must be in [" + std::to_string (min) + ", "
                                        + std::to_string (max) + "]"};
  return v;
}

std::optional<bool>
JsonInput::boolean (const char *name) const
{
  JsonNode *n = member (name);
  if (!n)
    return std::nullopt;
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_BOOLEAN)
    throw Refusal{Reason::kInvalid, "field '" + field (name) + "' must be true or false"};
  return json_node_get_boolean (n) != FALSE;
}

std::optional<JsonInput>
JsonInput::member_object (const char *name) const
{
  JsonNode *n = member (name);
  if (!n)
    return std::nullopt;
  if (!JSON_NODE_HOLDS_OBJECT (n))
    throw Refusal{Reason::kInvalid, "field '" + field (name) + "' must be an object"};
  return JsonInput (parser_, json_node_get_object (n), field (name));
}

void
JsonInput::only (std::initializer_list<const char *> allowed) const
{
  GList *members = json_object_get_members (object_);
  std::string unknown;
  for (GList *l = members; l && unknown.empty (); l = l->next) {
    const char *k = static_cast<const char *> (l->data);
    bool ok = false;
    for (const char *a : allowed)
      ok = ok || !strcmp (a, k);
    if (!ok)
      unknown = k;
  }
  g_list_free (members);
  if (!unknown.empty ())
    throw Refusal{Reason::kInvalid, "unknown field '" + field (unknown.c_str ()) + "'"};
}

std::string
JsonInput::member_json (const char *name) const
{
  JsonNode *n = member (name);
  if (!n)
    return "null";
  return json_text (n);
}

bool
valid_display_name (const std::string &name, std::string *why)
{
  auto refuse = [&] (const char *reason) {
    if (why)
      *why = reason;
    return false;
  };
  if (!g_utf8_validate (name.c_str (), (gssize)name.size (), nullptr))
    return refuse ("is not valid UTF-8");
  glong chars = g_utf8_strlen (name.c_str (), (gssize)name.size ());
  if (chars < 1 || chars > 128)
    return refuse ("must have 1 to 128 characters");
  bool visible = false;
  for (const char *p = name.c_str (); *p; p = g_utf8_next_char (p)) {
    gunichar c = g_utf8_get_char (p);
    switch (g_unichar_type (c)) {
    case G_UNICODE_CONTROL:
    case G_UNICODE_FORMAT: // bidi overrides and isolates, zero-width, soft hyphen
    case G_UNICODE_LINE_SEPARATOR:
    case G_UNICODE_PARAGRAPH_SEPARATOR:
    case G_UNICODE_SURROGATE:
    case G_UNICODE_UNASSIGNED:
    case G_UNICODE_PRIVATE_USE:
      return refuse (
          "must not contain control, format (e.g. bidi override), invisible or unassigned characters");
    case G_UNICODE_SPACE_SEPARATOR:
    case G_UNICODE_NON_SPACING_MARK:
    case G_UNICODE_ENCLOSING_MARK:
    case G_UNICODE_SPACING_MARK:
      break;
    default:
      visible = true;
    }
  }
  if (!visible)
    return refuse ("must contain a visible character");
  return true;
}

SessionRequest
parse_session_request (const JsonInput &body)
{
  body.only ({"user", "role", "microscope", "site"});
  SessionRequest r;
  r.user = body.required_string ("user");
  r.role = body.required_string ("role");
  r.microscope = body.string ("microscope");
  r.site = body.string ("site");
  return r;
}

KeyframeRequest
parse_keyframe_request (const JsonInput &body)
{
  body.only ({"profile"});
  return {body.required_string ("profile")};
}

RecordingRequest
parse_recording_request (const JsonInput &body)
{
  body.only ({"segment_s"});
  RecordingRequest r;
  if (auto s = body.integer ("segment_s", 1, 3600))
    r.segment_s = (int)*s;
  return r;
}

const char *
control_action_name (ControlAction a)
{
  switch (a) {
  case ControlAction::kRequest:
    return "request";
  case ControlAction::kRelease:
    return "release";
  case ControlAction::kRenew:
    return "renew";
  case ControlAction::kGrant:
    return "grant";
  case ControlAction::kRevoke:
    return "revoke";
  }
  return "?";
}

ControlRequest
parse_control_request (const JsonInput &body)
{
  static const char *kActions = "action must be one of request, release, renew, grant, revoke";
  JsonNode *a = json_object_has_member (body.object (), "action")
                    ? json_object_get_member (body.object (), "action")
                    : nullptr;
  if (!a || !JSON_NODE_HOLDS_VALUE (a) || json_node_get_value_type (a) != G_TYPE_STRING)
    throw Refusal{Reason::kInvalid, kActions};
  const std::string name = json_node_get_string (a);
  ControlRequest r;
  if (name == "request")
    r.action = ControlAction::kRequest;
  else if (name == "release")
    r.action = ControlAction::kRelease;
  else if (name == "renew")
    r.action = ControlAction::kRenew;
  else if (name == "grant")
    r.action = ControlAction::kGrant;
  else if (name == "revoke")
    r.action = ControlAction::kRevoke;
  else
    throw Refusal{Reason::kInvalid, kActions};
  if (r.action == ControlAction::kRenew) {
    auto l = body.has ("lease") ? body.string ("lease") : std::nullopt;
    if (!l)
      throw Refusal{Reason::kInvalid, "renew needs \"lease\": the lease id"};
    r.lease = *l;
  }
  if (r.action == ControlAction::kGrant) {
    auto s = body.has ("session") ? body.string ("session") : std::nullopt;
    if (!s)
      throw Refusal{Reason::kInvalid, "grant needs \"session\": the session to give control to"};
    r.session = *s;
  }
  return r;
}

CommandRequest
parse_command_request (const JsonInput &body, std::string *op_seen)
{
  std::optional<CommandOp> op;
  std::string unknown, first;
  GList *members = json_object_get_members (body.object ());
  for (GList *l = members; l; l = l->next) {
    const std::string k = static_cast<const char *> (l->data);
    if (k == "lease")
      continue;
    std::optional<CommandOp> known = command_op_from_name (k);
    if (!known)
      unknown = "unknown command '" + k + "'";
    else if (!op) {
      op = known;
      first = k;
    } else
      unknown = "one command per request, got two ('" + first + "' and '" + k + "')";
  }
  g_list_free (members);
  if (op && op_seen)
    *op_seen = command_op_name (*op);
  if (!unknown.empty ())
    throw Refusal{Reason::kInvalid, unknown};
  if (!op)
    throw Refusal{Reason::kInvalid,
                  "no command: give one of move, move_by, focus, focus_by, objective, jog, autofocus, stop"};
  CommandRequest r;
  r.op = *op;
  if (body.has ("lease"))
    r.lease = *body.string ("lease");
  const char *name = command_op_name (r.op);
  if (r.op == CommandOp::kObjective) {
    try {
      r.objective = (int)*body.integer ("objective", 1, 1000);
    } catch (const Refusal &) {
      throw Refusal{Reason::kInvalid, "objective must be a magnification, an integer in [1, 1000], e.g. 20"};
    }
    return r;
  }
  auto args = json_object_get_member (body.object (), name);
  if (!JSON_NODE_HOLDS_OBJECT (args))
    throw Refusal{Reason::kInvalid, std::string (name) + " must be an object"};
  JsonInput arg = *body.member_object (name);
  switch (r.op) {
  case CommandOp::kMove:
    r.a = arg.required_number ("x_um");
    r.b = arg.required_number ("y_um");
    break;
  case CommandOp::kMoveBy:
    r.a = arg.required_number ("dx_um");
    r.b = arg.required_number ("dy_um");
    break;
  case CommandOp::kFocus:
    r.a = arg.required_number ("z_um");
    break;
  case CommandOp::kFocusBy:
    r.a = arg.required_number ("dz_um");
    break;
  case CommandOp::kJog:
    r.a = arg.required_number ("vx_um_s");
    r.b = arg.required_number ("vy_um_s");
    break;
  default:
    break;
  }
  return r;
}

AnnotationRequest
parse_annotation_request (const JsonInput &body)
{
  body.only ({"kind", "points_um", "label"});
  AnnotationRequest r;
  r.kind = body.required_string ("kind");
  if (r.kind != "point" && r.kind != "arrow" && r.kind != "region")
    throw Refusal{Reason::kInvalid, "kind must be point, arrow or region"};
  r.label = body.string ("label").value_or ("");
  if (!g_utf8_validate (r.label.c_str (), (gssize)r.label.size (), nullptr)
      || g_utf8_strlen (r.label.c_str (), (gssize)r.label.size ()) > 500)
    throw Refusal{Reason::kInvalid, "label must be at most 500 characters"};
  for (const char *p = r.label.c_str (); *p; p = g_utf8_next_char (p)) {
    gunichar c = g_utf8_get_char (p);
    if ((g_unichar_type (c) == G_UNICODE_CONTROL && c != '\n' && c != '\t') || (c >= 0x202A && c <= 0x202E)
        || (c >= 0x2066 && c <= 0x2069))
      throw Refusal{Reason::kInvalid, "label must not contain control characters or bidi overrides"};
  }
  JsonNode *pts = json_object_has_member (body.object (), "points_um")
                      ? json_object_get_member (body.object (), "points_um")
                      : nullptr;
  if (!pts || !JSON_NODE_HOLDS_ARRAY (pts))
    throw Refusal{Reason::kInvalid, "points_um must be an array of [x_um, y_um]"};
  JsonArray *arr = json_node_get_array (pts);
  guint n = json_array_get_length (arr);
  guint need = r.kind == "point" ? 1 : r.kind == "arrow" ? 2 : 3;
  if (n < need || n > 10000 || (r.kind != "region" && n != need))
    throw Refusal{Reason::kInvalid, r.kind + " needs "
                                        + (r.kind == "region" ? "3 to 10000" : std::to_string (need))
                                        + " points"};
  for (guint i = 0; i < n; i++) {
    JsonNode *p = json_array_get_element (arr, i);
    const std::string where = "points_um[" + std::to_string (i) + "]";
    if (!JSON_NODE_HOLDS_ARRAY (p) || json_array_get_length (json_node_get_array (p)) != 2)
      throw Refusal{Reason::kInvalid, where + " must be [x_um, y_um]"};
    double xy[2];
    for (guint k = 0; k < 2; k++) {
      JsonNode *v = json_array_get_element (json_node_get_array (p), k);
      if (!JSON_NODE_HOLDS_VALUE (v)
          || (json_node_get_value_type (v) != G_TYPE_DOUBLE && json_node_get_value_type (v) != G_TYPE_INT64)
          || !std::isfinite (json_node_get_double (v)))
        throw Refusal{Reason::kInvalid, where + " must hold two numbers"};
      xy[k] = json_node_get_double (v);
      if (std::fabs (xy[k]) > kMaxSlideCoordinateUm)
        throw Refusal{Reason::kInvalid, where + " is beyond ±1e9 µm: not on a slide"};
    }
    r.points_um.emplace_back (xy[0], xy[1]);
  }
  return r;
}

ViewerMessage
parse_viewer_message (const char *data, size_t len, size_t max_bytes)
{
  JsonInput in = JsonInput::parse (data, len, max_bytes);
  const std::string type = in.required_string ("type");
  ViewerMessage m;
  if (type == "hello") {
    m.kind = ViewerMessage::Kind::kHello;
    m.token = in.required_string ("token");
    m.webrtc = in.boolean ("webrtc").value_or (true);
    m.nuclei = in.boolean ("nuclei").value_or (false);
    m.relayed = in.boolean ("relayed").value_or (false);
  } else if (type == "answer") {
    m.kind = ViewerMessage::Kind::kAnswer;
    m.sdp = in.required_string ("sdp");
  } else if (type == "ice") {
    m.kind = ViewerMessage::Kind::kIce;
    m.candidate = in.required_string ("candidate");
    m.mline = (unsigned)in.integer ("sdpMLineIndex", 0, 255).value_or (0);
  } else if (type == "stats") {
    m.kind = ViewerMessage::Kind::kStats;
    if (!in.member_object ("data"))
      throw Refusal{Reason::kInvalid, "stats needs \"data\": an object"};
    m.stats_json = in.member_json ("data");
  } else if (type == "pointer") {
    m.kind = ViewerMessage::Kind::kPointer;
    m.x_um = in.required_number ("x_um");
    m.y_um = in.required_number ("y_um");
    if (std::fabs (m.x_um) > kMaxSlideCoordinateUm || std::fabs (m.y_um) > kMaxSlideCoordinateUm)
      throw Refusal{Reason::kInvalid, "pointer beyond ±1e9 µm: not on a slide"};
  } else if (type == "ping") {
    m.kind = ViewerMessage::Kind::kPing;
    double t = in.number ("t").value_or (0);
    if (std::fabs (t) > 9e15)
      throw Refusal{Reason::kInvalid, "field 't' must be a time in ms"};
    m.t = (int64_t)t;
  } else {
    throw Refusal{Reason::kInvalid, "unknown message type '" + type + "'"};
  }
  return m;
}

} // namespace livemicro::orchestrator

namespace livemicro::orchestrator {

namespace {

// The value of an SDP attribute at media level, else at session level.
const char *
sdp_attribute (const GstSDPMessage *sdp, const GstSDPMedia *m, const char *key)
{
  if (const char *v = gst_sdp_media_get_attribute_val (m, key))
    return v;
  return gst_sdp_message_get_attribute_val (sdp, key);
}

// Whether the fmtp parameters of a payload ("packetization-mode=1;
// profile-level-id=42e01f;...") fit what the daemon sends; `rank` is lower
// for a better fit (constrained baseline before baseline).
bool
h264_fmtp_fits (const std::string &params, int &rank)
{
  bool mode1 = false;
  std::string profile;
  g_auto (GStrv) parts = g_strsplit (params.c_str (), ";", -1);
  for (char **p = parts; *p; p++) {
    g_autofree char *item = g_strstrip (g_strdup (*p));
    g_autofree char *lower = g_ascii_strdown (item, -1);
    if (!strcmp (lower, "packetization-mode=1"))
      mode1 = true;
    else if (g_str_has_prefix (lower, "profile-level-id="))
      profile = lower + strlen ("profile-level-id=");
  }
  if (!mode1 || profile.size () != 6)
    return false;
  // profile_idc 66 (baseline) with constraint_set1 (constrained baseline)
  // first; any level: the stream's level is below what receivers offer.
  if (profile.compare (0, 2, "42") != 0)
    return false;
  unsigned constraints = (unsigned)g_ascii_strtoull (profile.substr (2, 2).c_str (), nullptr, 16);
  rank = (constraints & 0x40) ? 0 : 1;
  return true;
}

// The offer's text once it is an SDP body as a browser sends it: the right
// content type and size, UTF-8, "v=0" first and every line
// "<letter>=<value>" (gst_sdp_message_parse_buffer skips what it does not
// understand; the daemon does not).
std::string
offer_text (const std::string &content_type, const char *data, size_t len, size_t max_bytes)
{
  if (len == 0)
    throw Refusal{Reason::kMalformed, "malformed SDP: empty body (the offer goes in the body)"};
  std::string type = content_type.substr (0, content_type.find (';'));
  while (!type.empty () && type.back () == ' ')
    type.pop_back ();
  if (g_ascii_strcasecmp (type.c_str (), "application/sdp") != 0)
    throw Refusal{Reason::kUnsupportedMediaType,
                  "the body must be an SDP offer with 'Content-Type: application/sdp'"};
  if (len > max_bytes)
    throw Refusal{Reason::kTooLarge, "body larger than " + std::to_string (max_bytes) + " bytes"};
  std::string text (data, len);
  if (!g_utf8_validate (text.data (), (gssize)text.size (), nullptr) || text.find ('\0') != std::string::npos)
    throw Refusal{Reason::kMalformed, "malformed SDP: not UTF-8 text"};
  if (text.compare (0, 4, "v=0\n") != 0 && text.compare (0, 5, "v=0\r\n") != 0)
    throw Refusal{Reason::kMalformed, "malformed SDP: it must start with 'v=0'"};
  size_t i = 0;
  while (i < text.size ()) {
    size_t j = text.find ('\n', i);
    if (j == std::string::npos)
      j = text.size ();
    std::string line = text.substr (i, j - i);
    if (!line.empty () && line.back () == '\r')
      line.pop_back ();
    if (!line.empty () && (line.size () < 2 || !g_ascii_islower (line[0]) || line[1] != '='))
      throw Refusal{Reason::kMalformed, "malformed SDP: a line is not '<type>=<value>'"};
    i = j + 1;
  }
  return text;
}

// The payload type of the best H.264 that `m` offers (packetization-mode=1
// and a baseline profile, constrained baseline first); -1 when none fits.
int
best_h264_payload (const GstSDPMedia *m)
{
  int best_pt = -1, best_rank = 2;
  for (guint k = 0; k < gst_sdp_media_attributes_len (m); k++) {
    const GstSDPAttribute *a = gst_sdp_media_get_attribute (m, k);
    if (g_strcmp0 (a->key, "rtpmap") != 0 || !a->value)
      continue;
    // "<pt> H264/90000"
    char *end = nullptr;
    guint64 pt = g_ascii_strtoull (a->value, &end, 10);
    if (end == a->value || pt < 96 || pt > 127 || !end || *end != ' '
        || g_ascii_strncasecmp (end + 1, "H264/90000", 10) != 0)
      continue;
    std::string prefix = std::to_string (pt) + " ";
    for (guint f = 0; f < gst_sdp_media_attributes_len (m); f++) {
      const GstSDPAttribute *fa = gst_sdp_media_get_attribute (m, f);
      int rank = 2;
      if (g_strcmp0 (fa->key, "fmtp") == 0 && fa->value && g_str_has_prefix (fa->value, prefix.c_str ())
          && h264_fmtp_fits (fa->value + prefix.size (), rank) && rank < best_rank) {
        best_rank = rank;
        best_pt = (int)pt;
      }
    }
  }
  return best_pt;
}

} // namespace

WhepOffer
parse_whep_offer (const std::string &content_type, const char *data, size_t len, size_t max_bytes)
{
  std::string text = offer_text (content_type, data, len, max_bytes);
  GstSDPMessage *parsed = nullptr;
  if (gst_sdp_message_new_from_text (text.c_str (), &parsed) != GST_SDP_OK || !parsed)
    throw Refusal{Reason::kMalformed, "malformed SDP"};
  std::unique_ptr<GstSDPMessage, decltype (&gst_sdp_message_free)> sdp (parsed, gst_sdp_message_free);
  const guint n = gst_sdp_message_medias_len (sdp.get ());
  if (n == 0)
    throw Refusal{Reason::kMalformed, "malformed SDP: no m= section"};
  WhepOffer out;
  int best = -1;
  std::string why = "no m=video section";
  for (guint i = 0; i < n; i++) {
    const GstSDPMedia *m = gst_sdp_message_get_media (sdp.get (), i);
    if (!sdp_attribute (sdp.get (), m, "ice-ufrag") || !sdp_attribute (sdp.get (), m, "ice-pwd"))
      throw Refusal{Reason::kMalformed, "malformed SDP: an m= section without ice-ufrag and ice-pwd"};
    if (!sdp_attribute (sdp.get (), m, "fingerprint"))
      throw Refusal{Reason::kMalformed, "malformed SDP: an m= section without a DTLS fingerprint"};
    if (g_strcmp0 (gst_sdp_media_get_media (m), "video") != 0 || best >= 0)
      continue;
    if (gst_sdp_media_get_attribute_val (m, "sendonly") || gst_sdp_media_get_attribute_val (m, "inactive")) {
      why = "the video section does not receive (sendonly or inactive)";
      continue;
    }
    why = "no H.264 with packetization-mode=1 and a baseline profile offered";
    int pt = best_h264_payload (m);
    if (pt >= 0) {
      out.h264_payload = (unsigned)pt;
      out.video_mline = i;
      best = (int)i;
    }
  }
  if (best < 0)
    throw Refusal{Reason::kInvalid, "the offer has nothing LiveMicro can send: " + why};
  out.sdp = std::move (text);
  return out;
}

} // namespace livemicro::orchestrator
