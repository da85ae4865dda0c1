// The JSON the daemon shows its clients (REST replies and WebSocket events),
// rendered from the domain's types with json-glib — the output half of the
// HTTP/WebSocket codec (requests.h is the input half).
#pragma once

#include "cluster/cluster_member.h"
#include "common/store.h"
#include "common/worker_protocol.h"
#include "control.h"
#include "microscope_hub.h"
#include "recording.h"

#include <json-glib/json-glib.h>

#include <map>
#include <optional>
#include <string>

namespace livemicro::orchestrator::api {

// The builder's root as compact JSON.
std::string to_string (JsonBuilder *b);
// A node as compact JSON.
std::string to_string (JsonNode *n);

std::string error_json (const std::string &message);
// The status and analysis as their JSON objects, or null.
std::string status_json (const std::optional<MicroscopeStatus> &s);
std::string analysis_json (const std::optional<AnalysisSummary> &a);
// The slide map's geometry for a viewer, the regions masked in its copy
// and the path driven (GET …/overview, the 'overview' event).
std::string overview_json (const SlideMapImage &map, const std::vector<std::vector<cv::Point2d>> &masked_um,
                           const std::vector<cv::Point2d> &path_um);
// {"controller": {...} | null, "epoch", "queue": [...]}
std::string control_json (const ControlArbiter &c);
void add_control_members (JsonBuilder *b, const ControlArbiter &c);
std::string presence_json (const std::map<int, Presence> &p);
std::string annotation_json (const AnnotationRecord &a);
void add_annotation (JsonBuilder *b, const AnnotationRecord &a);
std::string command_ended_json (const event::CommandEnded &e);
std::string pointer_json (const SessionRecord &s, double x_um, double y_um);
std::string session_ended_json (const std::string &session_id);
// {} or {"reason": why}
std::string reason_json (const std::string &reason);
std::string annotation_deleted_json (int64_t id);
// GET /api/v1/cluster: this node, the nodes, the microscopes' homes, etcd's members.
std::string cluster_json (const livemicro::cluster::ClusterView &v);
// A recording's state (POST/GET/DELETE /api/v1/sessions/{id}/recording).
std::string recording_json (const RecordingStatus &r);
// A member holding already-rendered JSON (parsed back into the tree).
void add_json (JsonBuilder *b, const char *name, const std::string &json);
void add_string (JsonBuilder *b, const char *name, const std::string &v);

} // namespace livemicro::orchestrator::api
