#include "api_json.h"

#include "common/json_writer.h"

namespace livemicro::orchestrator::api {

std::string
to_string (JsonNode *n)
{
  return json_text (n);
}

std::string
to_string (JsonBuilder *b)
{
  g_autoptr (JsonNode) n = json_builder_get_root (b);
  return to_string (n);
}

void
add_string (JsonBuilder *b, const char *name, const std::string &v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_string_value (b, v.c_str ());
}

void
add_json (JsonBuilder *b, const char *name, const std::string &json)
{
  json_builder_set_member_name (b, name);
  g_autoptr (JsonParser) p = json_parser_new ();
  if (json_parser_load_from_data (p, json.c_str (), (gssize)json.size (), nullptr)
      && json_parser_get_root (p))
    json_builder_add_value (b, json_node_copy (json_parser_get_root (p)));
  else
    json_builder_add_null_value (b);
}

namespace {

template <typename Fill>
std::string
object (Fill fill)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  fill (b);
  json_builder_end_object (b);
  return to_string (b);
}

} // namespace

std::string
error_json (const std::string &message)
{
  return object ([&] (JsonBuilder *b) { add_string (b, "error", message); });
}

std::string
status_json (const std::optional<MicroscopeStatus> &s)
{
  return s ? object ([&] (JsonBuilder *b) { add_status_members (b, *s); }) : "null";
}

std::string
analysis_json (const std::optional<AnalysisSummary> &a)
{
  return a ? object ([&] (JsonBuilder *b) { add_summary_members (b, *a); }) : "null";
}

namespace {

void
add_points (JsonBuilder *b, const std::vector<cv::Point2d> &points)
{
  json_builder_begin_array (b);
  for (const cv::Point2d &p : points) {
    json_builder_begin_array (b);
    add_number (b, std::round (p.x * 10) / 10);
    add_number (b, std::round (p.y * 10) / 10);
    json_builder_end_array (b);
  }
  json_builder_end_array (b);
}

} // namespace

std::string
overview_json (const SlideMapImage &map, const std::vector<std::vector<cv::Point2d>> &masked_um,
               const std::vector<cv::Point2d> &path_um)
{
  return object ([&] (JsonBuilder *b) {
    const SlideOverview &g = map.geometry;
    for (auto [k, v] : {std::pair<const char *, double>{"x_um", g.x_um},
                        {"y_um", g.y_um},
                        {"width_um", g.width_um},
                        {"height_um", g.height_um}}) {
      json_builder_set_member_name (b, k);
      add_number (b, v);
    }
    json_builder_set_member_name (b, "macro");
    json_builder_add_boolean_value (b, g.macro);
    json_builder_set_member_name (b, "updated_unix_us");
    json_builder_add_int_value (b, map.updated_unix_us);
    json_builder_set_member_name (b, "masked_um");
    json_builder_begin_array (b);
    for (const auto &poly : masked_um)
      add_points (b, poly);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "path_um");
    add_points (b, path_um);
  });
}

void
add_control_members (JsonBuilder *b, const ControlArbiter &c)
{
  json_builder_set_member_name (b, "controller");
  if (const auto &h = c.holder ()) {
    json_builder_begin_object (b);
    add_string (b, "session", h->holder.session);
    add_string (b, "user", h->holder.user);
    add_string (b, "role", h->holder.role);
    json_builder_set_member_name (b, "epoch");
    json_builder_add_int_value (b, (gint64)h->epoch);
    json_builder_set_member_name (b, "expires_in_ms");
    json_builder_add_int_value (b, c.expires_in_us () / 1000);
    json_builder_end_object (b);
  } else {
    json_builder_add_null_value (b);
  }
  json_builder_set_member_name (b, "epoch");
  json_builder_add_int_value (b, (gint64)c.epoch ());
  json_builder_set_member_name (b, "queue");
  json_builder_begin_array (b);
  for (const auto &q : c.queue ()) {
    json_builder_begin_object (b);
    add_string (b, "session", q.session);
    add_string (b, "user", q.user);
    add_string (b, "role", q.role);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
}

std::string
control_json (const ControlArbiter &c)
{
  return object ([&] (JsonBuilder *b) { add_control_members (b, c); });
}

std::string
presence_json (const std::map<int, Presence> &presence)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_array (b);
  for (const auto &kv : presence) {
    json_builder_begin_object (b);
    add_string (b, "session", kv.second.session);
    add_string (b, "user", kv.second.user);
    add_string (b, "role", kv.second.role);
    add_string (b, "via", kv.second.via);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  return to_string (b);
}

void
add_annotation (JsonBuilder *b, const AnnotationRecord &a)
{
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "id");
  json_builder_add_int_value (b, a.id);
  add_string (b, "session", a.session);
  add_string (b, "user", a.user);
  add_string (b, "kind", a.kind);
  add_string (b, "label", a.label);
  add_json (b, "points_um", a.points_json);
  json_builder_set_member_name (b, "created_unix_us");
  json_builder_add_int_value (b, a.created_unix_us);
  json_builder_end_object (b);
}

std::string
annotation_json (const AnnotationRecord &a)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  add_annotation (b, a);
  return to_string (b);
}

std::string
command_ended_json (const event::CommandEnded &e)
{
  return object ([&] (JsonBuilder *b) {
    json_builder_set_member_name (b, "id");
    json_builder_add_int_value (b, (gint64)e.id);
    add_string (b, "op", e.op);
    add_string (b, "status", e.status);
    add_string (b, "detail", e.detail);
  });
}

std::string
pointer_json (const SessionRecord &s, double x_um, double y_um)
{
  return object ([&] (JsonBuilder *b) {
    add_string (b, "session", s.id);
    add_string (b, "user", s.user);
    add_string (b, "role", s.role);
    json_builder_set_member_name (b, "x_um");
    add_number (b, x_um);
    json_builder_set_member_name (b, "y_um");
    add_number (b, y_um);
  });
}

std::string
session_ended_json (const std::string &session_id)
{
  return object ([&] (JsonBuilder *b) { add_string (b, "id", session_id); });
}

std::string
reason_json (const std::string &reason)
{
  return object ([&] (JsonBuilder *b) {
    if (!reason.empty ())
      add_string (b, "reason", reason);
  });
}

std::string
annotation_deleted_json (int64_t id)
{
  return object ([&] (JsonBuilder *b) {
    json_builder_set_member_name (b, "id");
    json_builder_add_int_value (b, id);
  });
}

std::string
cluster_json (const livemicro::cluster::ClusterView &v)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "node", v.node);
  add_string (b, "site", v.site);
  json_builder_set_member_name (b, "joined");
  json_builder_add_boolean_value (b, v.joined);
  add_string (b, "lease", std::to_string (v.lease));
  add_string (b, "error", v.error);
  json_builder_set_member_name (b, "nodes");
  json_builder_begin_array (b);
  for (const auto &n : v.nodes) {
    // The record as the node keeps it in etcd.
    const std::string record = livemicro::cluster::node_record_json (n);
    g_autoptr (JsonParser) p = json_parser_new ();
    if (json_parser_load_from_data (p, record.c_str (), (gssize)record.size (), nullptr))
      json_builder_add_value (b, json_node_copy (json_parser_get_root (p)));
  }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "microscopes");
  json_builder_begin_array (b);
  for (const auto &h : v.homes) {
    json_builder_begin_object (b);
    add_string (b, "id", h.microscope);
    add_string (b, "home", h.node);
    json_builder_set_member_name (b, "fencing_revision");
    json_builder_add_int_value (b, h.revision);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "etcd");
  json_builder_begin_array (b);
  for (const auto &m : v.etcd) {
    json_builder_begin_object (b);
    add_string (b, "endpoint", m.endpoint);
    json_builder_set_member_name (b, "healthy");
    json_builder_add_boolean_value (b, m.healthy);
    add_string (b, "version", m.version);
    add_string (b, "member_id", m.member_id);
    add_string (b, "leader", m.leader);
    add_string (b, "error", m.error);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  return to_string (b);
}

std::string
recording_json (const RecordingStatus &r)
{
  return object ([&] (JsonBuilder *b) {
    add_string (b, "recording", r.id);
    add_string (b, "session", r.session);
    add_string (b, "microscope", r.microscope);
    add_string (b, "view", r.view);
    add_string (b, "state", r.state);
    if (!r.error.empty ())
      add_string (b, "error", r.error);
    for (const auto &[name, v] : {std::pair<const char *, int64_t>{"started_unix_us", r.started_unix_us},
                                  {"stopped_unix_us", r.stopped_unix_us},
                                  {"segment_s", r.segment_s},
                                  {"frames", (int64_t)r.frames},
                                  {"segments", r.segments},
                                  {"interruptions", r.interruptions}}) {
      if (v == 0 && std::string (name) == "stopped_unix_us")
        continue;
      json_builder_set_member_name (b, name);
      json_builder_add_int_value (b, v);
    }
  });
}

} // namespace livemicro::orchestrator::api
