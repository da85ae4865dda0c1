// Collaborative control of a microscope: control leases, commands to the
// hardware thread, presence, pointers, annotations, stills and the audit log.
#include "daemon.h"

#include "common/tokens.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace livemicro::orchestrator {

namespace {

std::string
to_json (JsonNode *n)
{
  g_autofree char *s = json_to_string (n, FALSE);
  return s;
}

std::string
builder_json (JsonBuilder *b)
{
  g_autoptr (JsonNode) n = json_builder_get_root (b);
  return to_json (n);
}

void
member (JsonBuilder *b, const char *name, const std::string &v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_string_value (b, v.c_str ());
}

std::string
num (double v)
{
  std::ostringstream s;
  s << v;
  return s.str ();
}

JsonObject *
parse_object (const std::string &json, JsonParser *p)
{
  if (!json_parser_load_from_data (p, json.c_str (), -1, nullptr))
    return nullptr;
  JsonNode *r = json_parser_get_root (p);
  return r && JSON_NODE_HOLDS_OBJECT (r) ? json_node_get_object (r) : nullptr;
}

}  // namespace

Participant
Daemon::participant (const Principal &p)
{
  if (p.admin)
    return {"", "admin", "admin"};
  return {p.session->id, p.session->user, p.session->role};
}

AuditRecord
Daemon::audit_row (const Principal &by, const std::string &microscope, const std::string &action,
    const std::string &detail, const std::string &result)
{
  return {0, g_get_real_time (), by.user (), by.role (), by.admin ? "" : by.session->id, microscope,
      action, detail, result};
}

void
Daemon::record (const Principal &by, const std::string &microscope, const std::string &action,
    const std::string &detail, const std::string &result)
{
  record (audit_row (by, microscope, action, detail, result));
}

// Rows of what happened anyway (refusals, stops): written now, or kept and
// written as soon as the database takes them again.
void
Daemon::record (const AuditRecord &row)
{
  if (pending_audit_.empty ()) {
    try {
      store_->append_audit (row);
      return;
    } catch (const StoreError &e) {
      g_printerr ("livemicrod: audit row kept in memory until the database is writable: %s\n", e.what ());
    }
  }
  pending_audit_.push_back (row);
}

void
Daemon::flush_pending_audit ()
{
  while (!pending_audit_.empty ()) {
    try {
      store_->append_audit (pending_audit_.front ());
    } catch (const StoreError &) {
      return;  // still not writable: next tick
    }
    pending_audit_.pop_front ();
  }
}

void
Daemon::refused (const Principal &by, const std::string &microscope, const std::string &action,
    const std::string &detail, const ApiError &e)
{
  record (by, microscope, action, detail, "refused: " + e.message);
}

// What must be on disk before the daemon acts (a command to the hardware, a
// lease): `rows` and the microscope's control epoch in one transaction.  A
// database that refuses is a 503 and nothing happens.
void
Daemon::durable (const std::vector<AuditRecord> &rows, const MicroscopeRuntime *epoch_of)
{
  try {
    flush_pending_audit ();
    store_->transaction ([&] {
      for (const AuditRecord &r : rows)
        store_->append_audit (r);
      if (epoch_of)
        store_->set_value ("control_epoch:" + epoch_of->config.id, std::to_string (epoch_of->control->epoch ()));
    });
  } catch (const StoreError &e) {
    g_printerr ("livemicrod: refused, the state database cannot be written: %s\n", e.what ());
    throw ApiError {503, "the state database cannot be written just now (nothing was done; try again)"};
  }
}

std::string
Daemon::control_json (const MicroscopeRuntime &m) const
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "controller");
  const auto &h = m.control->holder ();
  if (h) {
    json_builder_begin_object (b);
    member (b, "session", h->holder.session);
    member (b, "user", h->holder.user);
    member (b, "role", h->holder.role);
    json_builder_set_member_name (b, "epoch");
    json_builder_add_int_value (b, (gint64) h->epoch);
    json_builder_set_member_name (b, "expires_in_ms");
    json_builder_add_int_value (b, m.control->expires_in_us () / 1000);
    json_builder_end_object (b);
  } else {
    json_builder_add_null_value (b);
  }
  json_builder_set_member_name (b, "epoch");
  json_builder_add_int_value (b, (gint64) m.control->epoch ());
  json_builder_set_member_name (b, "queue");
  json_builder_begin_array (b);
  for (const auto &q : m.control->queue ()) {
    json_builder_begin_object (b);
    member (b, "session", q.session);
    member (b, "user", q.user);
    member (b, "role", q.role);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  return builder_json (b);
}

std::string
Daemon::presence_json (const MicroscopeRuntime &m) const
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_array (b);
  for (const auto &kv : m.presence) {
    json_builder_begin_object (b);
    member (b, "session", kv.second.session);
    member (b, "user", kv.second.user);
    member (b, "role", kv.second.role);
    member (b, "via", kv.second.via);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  return builder_json (b);
}

void
Daemon::control_changed (MicroscopeRuntime &m)
{
  notify (m.config.id, "control", control_json (m));
}

Daemon::Reply
Daemon::control_action (const Principal &by, const std::string &id, const ControlRequest &r)
{
  MicroscopeRuntime &m = runtime_visible_to (by, id);
  const std::string action = control_action_name (r.action);
  Participant me = participant (by);
  auto refuse = [&] (int status, const std::string &detail, const std::string &why) {
    ApiError e {status, why};
    refused (by, id, "control", detail, e);
    throw e;
  };
  // The change counts only once it is durable: undone if it cannot be.
  const ControlArbiter before = *m.control;
  ControlArbiter::Outcome o;
  std::string detail = action;
  switch (r.action) {
    case ControlAction::kRequest:
    case ControlAction::kRelease:
    case ControlAction::kRenew:
      if (by.admin)
        refuse (403, action, "the admin grants and revokes; requesting control needs a session");
      o = r.action == ControlAction::kRequest   ? m.control->request (me)
          : r.action == ControlAction::kRelease ? m.control->release (me)
                                                : m.control->renew (me, r.lease);
      break;
    case ControlAction::kGrant: {
      auto target = store_->session (r.session);
      if (!target || target->microscope != id)
        refuse (422, action, "no session '" + r.session + "' on this microscope");
      detail = "grant to " + target->id;
      o = m.control->grant (me, {target->id, target->user, target->role});
      break;
    }
    case ControlAction::kRevoke:
      o = m.control->revoke (me);
      break;
  }
  const bool changed = m.control->take_changed ();
  if (o.status >= 400) {
    *m.control = before;
    refuse (o.status, detail, o.reason);
  }
  try {
    durable ({audit_row (by, id, "control", detail,
                 o.result + (o.lease ? " epoch " + std::to_string (o.lease->epoch) : "") +
                     (o.queue_position ? " position " + std::to_string (o.queue_position) : ""))},
        changed ? &m : nullptr);
  } catch (const ApiError &) {
    *m.control = before;
    throw;
  }
  if (changed)
    control_changed (m);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "result", o.result);
  if (o.lease) {
    member (b, "lease", o.lease->id);
    json_builder_set_member_name (b, "epoch");
    json_builder_add_int_value (b, (gint64) o.lease->epoch);
    json_builder_set_member_name (b, "expires_in_ms");
    json_builder_add_int_value (b, m.control->expires_in_us () / 1000);
  }
  if (o.queue_position) {
    json_builder_set_member_name (b, "queue_position");
    json_builder_add_int_value (b, o.queue_position);
  }
  json_builder_end_object (b);
  return {o.status, builder_json (b)};
}

bool
Daemon::send_hw (MicroscopeRuntime &m, uint64_t id, const std::string &op, double a, double b, int objective)
{
  g_autoptr (JsonBuilder) jb = json_builder_new ();
  json_builder_begin_object (jb);
  member (jb, "cmd", "hw");
  json_builder_set_member_name (jb, "id");
  json_builder_add_int_value (jb, (gint64) id);
  member (jb, "op", op);
  json_builder_set_member_name (jb, "a");
  json_builder_add_double_value (jb, a);
  json_builder_set_member_name (jb, "b");
  json_builder_add_double_value (jb, b);
  json_builder_set_member_name (jb, "objective");
  json_builder_add_int_value (jb, objective);
  json_builder_end_object (jb);
  return m.worker->command (builder_json (jb));
}

Daemon::Reply
Daemon::command (const Principal &by, const std::string &id, const CommandRequest &c)
{
  MicroscopeRuntime &m = runtime_visible_to (by, id);
  const std::string op = command_op_name (c.op);
  auto refuse = [&] (int status, const std::string &why) {
    ApiError e {status, why};
    refused (by, id, "command", op, e);
    throw e;
  };
  if (!m.online)
    refuse (503, "microscope '" + id + "' is offline: " + shown_to (by, m.last_error.empty () ? "starting" : m.last_error));

  // The lease: required, except that the owner and the admin may always stop.
  const bool emergency_stop = c.op == CommandOp::kStop && (by.admin || by.session->role == "owner");
  if (!emergency_stop) {
    if (by.admin)
      refuse (403, "the admin has no lease; only stop is allowed without one");
    if (c.lease.empty ())
      refuse (409, "no lease: request control first");
    bool current = m.control->check (by.session->id, c.lease);
    if (m.control->take_changed ())
      control_changed (m);
    if (!current)
      refuse (409, "not the current lease (it lapsed, was revoked or handed over)");
  }
  // Rate: a token bucket per session; stop is never limited.
  if (c.op != CommandOp::kStop && !by.admin) {
    auto &bucket = m.rate[by.session->id];
    const double cap = config_.control.max_commands_per_s;
    int64_t now = g_get_monotonic_time ();
    bucket.tokens = bucket.at_us ? std::min (cap, bucket.tokens + (now - bucket.at_us) * cap / 1e6) : cap;
    bucket.at_us = now;
    if (bucket.tokens < 1)
      refuse (429, "more than " + std::to_string (config_.control.max_commands_per_s) + " commands per second");
    bucket.tokens -= 1;
  }

  // Values and soft limits (from the worker's latest state).
  g_autoptr (JsonParser) sp = json_parser_new ();
  JsonObject *st = parse_object (m.state_json, sp);
  JsonObject *stage = st ? json_object_get_object_member (st, "stage") : nullptr;
  JsonObject *lim = st && json_object_has_member (st, "limits") ? json_object_get_object_member (st, "limits") : nullptr;
  if (!lim)
    refuse (503, "the microscope's travel limits are not known yet (the camera is starting)");
  auto limit = [&] (const char *k, double fallback) { return json_object_get_double_member_with_default (lim, k, fallback); };
  auto cur = [&] (const char *k) { return stage ? json_object_get_double_member_with_default (stage, k, 0) : 0; };
  auto check_range = [&] (const char *axis, double v, double lo, double hi) {
    if (v < lo || v > hi)
      refuse (422, std::string (axis) + " " + num (v) + " µm is outside the soft travel limit [" + num (lo) +
                       ", " + num (hi) + "] µm for this objective");
  };
  std::string detail = op;
  switch (c.op) {
    case CommandOp::kMove:
    case CommandOp::kMoveBy: {
      const bool rel = c.op == CommandOp::kMoveBy;
      double tx = rel ? cur ("x_um") + c.a : c.a, ty = rel ? cur ("y_um") + c.b : c.b;
      check_range ("x", tx, limit ("x_min_um", -1e12), limit ("x_max_um", 1e12));
      check_range ("y", ty, limit ("y_min_um", -1e12), limit ("y_max_um", 1e12));
      detail = op + " " + num (c.a) + ", " + num (c.b);
      break;
    }
    case CommandOp::kFocus:
    case CommandOp::kFocusBy: {
      const bool rel = c.op == CommandOp::kFocusBy;
      check_range ("z", rel ? cur ("z_um") + c.a : c.a, limit ("z_min_um", -1e12), limit ("z_max_um", 1e12));
      detail = op + " " + num (c.a);
      break;
    }
    case CommandOp::kObjective: {
      JsonArray *mags = json_object_has_member (st, "objectives") ? json_object_get_array_member (st, "objectives") : nullptr;
      bool mounted = !mags;
      std::string list;
      for (guint i = 0; mags && i < json_array_get_length (mags); i++) {
        gint64 mg = json_array_get_int_element (mags, i);
        mounted = mounted || mg == c.objective;
        list += (list.empty () ? "" : ", ") + std::to_string (mg) + "x";
      }
      if (!mounted)
        refuse (422, "objective " + std::to_string (c.objective) + "x is not mounted (available: " + list + ")");
      detail = "objective " + std::to_string (c.objective);
      break;
    }
    case CommandOp::kJog: {
      double v = std::hypot (c.a, c.b);
      if (v <= 0 || v > 20000)
        refuse (422, "jog speed " + num (v) + " µm/s is outside (0, 20000] µm/s");
      detail = "jog " + num (c.a) + ", " + num (c.b);
      break;
    }
    case CommandOp::kAutofocus:
    case CommandOp::kStop:
      break;
  }
  const uint64_t cid = m.next_command_id++;
  const AuditRecord row = audit_row (by, id, "command", detail,
      "accepted as " + std::to_string (cid) + (emergency_stop && c.lease.empty () ? " (emergency stop)" : ""));
  if (c.op == CommandOp::kStop) {
    // Stop is never held back: executed first, its row written as soon as
    // the database allows.
    send_hw (m, cid, op, 0, 0, 0);
    record (row);
  } else {
    // Nothing reaches the hardware before its audit row is on disk.
    durable ({row}, nullptr);
    if (!send_hw (m, cid, op, c.a, c.b, c.objective)) {
      record (audit_row (by, id, "command", detail, "not delivered as " + std::to_string (cid) + ": the media worker is down"));
      throw ApiError {503, "microscope '" + id + "' went offline before the command could be delivered"};
    }
    if (c.op == CommandOp::kJog) {
      m.jog_session = by.session->id;
      m.jog_until_us = g_get_monotonic_time () + 600000;
    }
  }
  g_autoptr (JsonBuilder) jb = json_builder_new ();
  json_builder_begin_object (jb);
  json_builder_set_member_name (jb, "command");
  json_builder_add_int_value (jb, (gint64) cid);
  member (jb, "op", op);
  json_builder_end_object (jb);
  return {202, builder_json (jb)};
}

int
Daemon::join (const std::string &microscope, const SessionRecord &s, const std::string &via)
{
  auto it = microscopes_.find (microscope);
  if (it == microscopes_.end ())
    return 0;
  int h = next_presence_++;
  it->second.presence[h] = {s.id, s.user, s.role, via};
  notify (microscope, "presence", presence_json (it->second));
  return h;
}

void
Daemon::leave (const std::string &microscope, int handle)
{
  auto it = microscopes_.find (microscope);
  if (it == microscopes_.end ())
    return;
  MicroscopeRuntime &m = it->second;
  auto p = m.presence.find (handle);
  if (p == m.presence.end ())
    return;
  std::string session = p->second.session;
  m.presence.erase (p);
  notify (microscope, "presence", presence_json (m));
  // The driver's connection dropped during a jog: the motion stops.
  bool still_there = false;
  for (const auto &kv : m.presence)
    still_there = still_there || kv.second.session == session;
  if (!still_there && m.jog_session == session && g_get_monotonic_time () < m.jog_until_us) {
    uint64_t cid = m.next_command_id++;
    send_hw (m, cid, "stop", 0, 0, 0);
    record (AuditRecord {0, g_get_real_time (), "livemicrod", "system", session, microscope, "command",
        "stop (the jogging session's connection dropped)", "accepted as " + std::to_string (cid)});
    m.jog_session.clear ();
  }
}

void
Daemon::pointer (const SessionRecord &s, double x_um, double y_um)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "session", s.id);
  member (b, "user", s.user);
  member (b, "role", s.role);
  json_builder_set_member_name (b, "x_um");
  json_builder_add_double_value (b, x_um);
  json_builder_set_member_name (b, "y_um");
  json_builder_add_double_value (b, y_um);
  json_builder_end_object (b);
  notify (s.microscope, "pointer", builder_json (b));
}

namespace {

std::string
annotation_json (const AnnotationRecord &a)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "id");
  json_builder_add_int_value (b, a.id);
  member (b, "session", a.session);
  member (b, "user", a.user);
  member (b, "kind", a.kind);
  member (b, "label", a.label);
  json_builder_set_member_name (b, "points_um");
  g_autoptr (JsonParser) p = json_parser_new ();
  if (json_parser_load_from_data (p, a.points_json.c_str (), -1, nullptr))
    json_builder_add_value (b, json_node_copy (json_parser_get_root (p)));
  else
    json_builder_add_null_value (b);
  json_builder_set_member_name (b, "created_unix_us");
  json_builder_add_int_value (b, a.created_unix_us);
  json_builder_end_object (b);
  return builder_json (b);
}

}  // namespace

Daemon::Reply
Daemon::add_annotation (const Principal &by, const std::string &id, const AnnotationRequest &r)
{
  microscope_visible_to (by, id);
  if (by.admin)
    throw ApiError {403, "annotations belong to sessions; the admin has none"};
  AnnotationRecord a;
  a.microscope = id;
  a.session = by.session->id;
  a.user = by.session->user;
  a.kind = r.kind;
  a.label = r.label;
  g_autoptr (JsonBuilder) pb = json_builder_new ();
  json_builder_begin_array (pb);
  for (const auto &[x, y] : r.points_um) {
    json_builder_begin_array (pb);
    json_builder_add_double_value (pb, x);
    json_builder_add_double_value (pb, y);
    json_builder_end_array (pb);
  }
  json_builder_end_array (pb);
  a.points_json = builder_json (pb);
  a.created_unix_us = g_get_real_time ();
  a.id = store_->insert_annotation (a);
  std::string json = annotation_json (a);
  notify (id, "annotation", json);
  return {201, json};
}

Daemon::Reply
Daemon::annotations (const Principal &by, const std::string &id) const
{
  microscope_visible_to (by, id);
  std::string out = "{\"annotations\":[";
  bool first = true;
  for (const auto &a : store_->annotations (id)) {
    out += (first ? "" : ",") + annotation_json (a);
    first = false;
  }
  return {200, out + "]}"};
}

Daemon::Reply
Daemon::delete_annotation (const Principal &by, const std::string &id, int64_t aid)
{
  microscope_visible_to (by, id);
  auto a = store_->annotation (aid);
  if (!a || a->microscope != id)
    throw ApiError {404, "no annotation " + std::to_string (aid)};
  if (!by.admin && by.session->id != a->session && by.session->role != "owner")
    throw ApiError {403, "only its author, the owner or the admin can delete an annotation"};
  store_->delete_annotation (aid);
  notify (id, "annotation_deleted", "{\"id\":" + std::to_string (aid) + "}");
  return {204, ""};
}

Daemon::Reply
Daemon::annotations_geojson (const Principal &by, const std::string &session_id, double um_per_px)
{
  SessionRecord s = session_visible_to (by, session_id);
  if (!(um_per_px > 0 && um_per_px < 1000))
    throw ApiError {422, "um_per_px must be in (0, 1000)"};
  // QuPath reads GeoJSON in the pixel space of the image it has open: slide
  // µm / um_per_px (default 0.25, the 40x scale of a whole-slide scan).
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "type", "FeatureCollection");
  json_builder_set_member_name (b, "features");
  json_builder_begin_array (b);
  for (const auto &a : store_->annotations (s.microscope, s.id)) {
    g_autoptr (JsonParser) p = json_parser_new ();
    if (!json_parser_load_from_data (p, a.points_json.c_str (), -1, nullptr))
      continue;
    JsonArray *pts = json_node_get_array (json_parser_get_root (p));
    auto add_point = [&] (guint i) {
      JsonArray *xy = json_array_get_array_element (pts, i);
      json_builder_begin_array (b);
      json_builder_add_double_value (b, json_array_get_double_element (xy, 0) / um_per_px);
      json_builder_add_double_value (b, json_array_get_double_element (xy, 1) / um_per_px);
      json_builder_end_array (b);
    };
    json_builder_begin_object (b);
    member (b, "type", "Feature");
    member (b, "id", "livemicro-" + std::to_string (a.id));
    json_builder_set_member_name (b, "geometry");
    json_builder_begin_object (b);
    guint n = json_array_get_length (pts);
    if (a.kind == "point") {
      member (b, "type", "Point");
      json_builder_set_member_name (b, "coordinates");
      add_point (0);
    } else if (a.kind == "arrow") {
      member (b, "type", "LineString");
      json_builder_set_member_name (b, "coordinates");
      json_builder_begin_array (b);
      for (guint i = 0; i < n; i++)
        add_point (i);
      json_builder_end_array (b);
    } else {
      member (b, "type", "Polygon");
      json_builder_set_member_name (b, "coordinates");
      json_builder_begin_array (b);
      json_builder_begin_array (b);
      for (guint i = 0; i < n; i++)
        add_point (i);
      add_point (0);  // closed ring
      json_builder_end_array (b);
      json_builder_end_array (b);
    }
    json_builder_end_object (b);
    json_builder_set_member_name (b, "properties");
    json_builder_begin_object (b);
    member (b, "objectType", "annotation");
    member (b, "name", a.label.empty () ? a.kind : a.label);
    json_builder_set_member_name (b, "classification");
    json_builder_begin_object (b);
    member (b, "name", a.kind);
    json_builder_end_object (b);
    member (b, "author", a.user);
    json_builder_set_member_name (b, "created_unix_us");
    json_builder_add_int_value (b, a.created_unix_us);
    json_builder_end_object (b);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  return {200, builder_json (b)};
}

bool
Daemon::request_still (const Principal &by, const std::string &session_id,
    std::function<void (JsonObject *)> done)
{
  SessionRecord s = session_visible_to (by, session_id);
  auto sv = session_views_.find (s.id);
  if (sv == session_views_.end ())
    throw ApiError {409, "this session has no view"};
  MicroscopeRuntime &m = microscopes_.at (s.microscope);
  // The worker runs commands in order: a view still being built is there by
  // the time it reads this request.
  if (!m.online || m.view_errors.count (sv->second.second)) {
    std::string why = m.view_errors.count (sv->second.second) ? m.view_errors.at (sv->second.second)
                      : m.last_error.empty () ? "the microscope is offline" : m.last_error;
    record (by, s.microscope, "still", "session " + s.id, "refused: " + why);
    throw ApiError {503, "no still: " + shown_to (by, why)};
  }
  int64_t request = next_still_++;
  stills_[request] = std::move (done);
  record (by, s.microscope, "still", "session " + s.id + " (" + s.role + " view)", "requested as " + std::to_string (request));
  return m.worker->command ("{\"cmd\":\"still\",\"view\":" + std::to_string (sv->second.second) +
                            ",\"request\":" + std::to_string (request) + "}");
}

Daemon::Reply
Daemon::audit (const Principal &by, int64_t after_id, int limit) const
{
  if (!by.admin && by.session->role != "owner")
    throw ApiError {403, "the audit log is for the admin and the owner"};
  limit = std::clamp (limit, 1, 10000);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "audit");
  json_builder_begin_array (b);
  for (const auto &r : store_->audit (after_id, limit, by.admin ? "" : by.session->microscope)) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "id");
    json_builder_add_int_value (b, r.id);
    json_builder_set_member_name (b, "time_unix_us");
    json_builder_add_int_value (b, r.time_unix_us);
    member (b, "user", r.user);
    member (b, "role", r.role);
    member (b, "session", r.session);
    member (b, "microscope", r.microscope);
    member (b, "action", r.action);
    member (b, "detail", r.detail);
    member (b, "result", r.result);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  return {200, builder_json (b)};
}

}  // namespace livemicro::orchestrator
