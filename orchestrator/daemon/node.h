// livemicrod's node: what one edge node holds beside its microscopes —
// configuration, the state store (sessions, tokens, audit, annotations),
// the RTSP service, view profiles and templates, who is calling, and the
// event bus the WebSockets listen to.  Each microscope is a MicroscopeHub.
//
// The node may touch: the store, the RTSP service and its hubs.  It knows
// no HTTP: callers get typed results or a Refusal (requests.h); the HTTP
// layer (http_api.cpp) renders them.
#pragma once

#include "cluster/cluster_member.h"
#include "cluster_views.h"
#include "common/store.h"
#include "config.h"
#include "microscope_hub.h"
#include "recording.h"
#include "requests.h"
#include "rtsp_service.h"
#include "templates.h"

#include <livemicro/privacy/profiles.h>

#include <deque>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace livemicro::orchestrator {

// Who is calling: the admin, or a session (with its role and microscope).
struct Principal {
  bool admin = false;
  std::optional<SessionRecord> session;
  bool valid () const { return admin || session.has_value (); }
  std::string user () const { return admin ? "admin" : session->user; }
  std::string role () const { return admin ? "admin" : session->role; }
  std::string session_id () const { return admin ? "" : session->id; }
};

struct Paths {
  std::string worker;    // livemicro-worker executable
  std::string pipelines; // pipeline templates
  std::string web;       // the viewer page
};

class Node {
public:
  // Events for live listeners (WebSockets): kind is "state", "features",
  // "control", "presence", "command", "pointer", "annotation",
  // "annotation_deleted", "online", "offline" or "session_ended"; json is the
  // payload, rendered once for all listeners; session is the session it is
  // about (session_ended) or from (pointer).
  struct Event {
    std::string microscope, kind, json, session;
    std::string message; // {"type": kind, "data": json}, rendered once for every socket
  };
  using Listener = std::function<void (const Event &)>;

  Node (Config config, Paths paths);
  ~Node ();

  // Opens the store, starts RTSP and the workers.  Throws std::exception.
  void start ();
  void stop ();
  // With a "cluster" configuration: joins the edge cloud (docs/edge-cloud.md)
  // once the HTTP port is known; waits up to `wait_ms` for the first
  // registration (it goes on trying in the background after that).
  void join_cluster (int wait_ms);
  // The edge cloud as this node sees it; nullptr when not in one.
  livemicro::cluster::ClusterMember *cluster () const { return cluster_.get (); }
  // In an edge cloud, what moves a microscope or changes who drives it needs
  // its fencing token: `rows` (and `control`, when given) are written to
  // etcd only while this node still owns `microscope` there.  Throws a
  // Refusal (unavailable) when it does not, or etcd cannot be reached.
  // Alone (no cluster): nothing.
  void fenced (const std::string &microscope, const std::vector<AuditRecord> &rows,
               const ControlState *control = nullptr);
  // In an edge cloud a microscope's control is kept in etcd: a node that
  // (re)takes a microscope's home adopts it before anything changes it, so
  // a lease, its epoch and the queue outlive the home node's restarts and
  // moves.  Nothing when it is adopted already (or not in an edge cloud); a
  // Refusal (unavailable) when this node does not hold the microscope or
  // etcd cannot be read.
  void adopt_cluster_control (MicroscopeHub &hub);
  // In an edge cloud, the HTTP base URL of `microscope`'s home node when that
  // is another node (requests about it are answered there); nullopt when it
  // is this node, or unknown, or not in a cluster.  A Refusal (unavailable)
  // when its home node is away.
  std::optional<std::string> home_elsewhere (const std::string &microscope) const;
  // The HTTP base URL of a microscope's live home node (another node's).
  std::optional<std::string> home_url_of (const std::string &microscope) const;
  // A session another node made a moment ago at this node's request: its
  // view is placed here at once, not at the next read of etcd.
  void adopt_session (const std::string &session_id);
  // A viewer of a session of a microscope homed elsewhere came to this node
  // (+1) or left (-1): its view is relayed here while it has viewers here.
  void hold_view (const std::string &session_id, int delta);
  // The live node (not this one) that serves a session's view, if any.
  std::optional<livemicro::cluster::NodeInfo> serving_elsewhere (const SessionRecord &s) const;
  // The live nodes of the edge cloud, this one first, then those of its
  // site: where a viewer page may go on when this node fails.
  std::vector<livemicro::cluster::NodeInfo> failover_nodes () const;
  // The microscope of a session this node does not have, as the edge cloud
  // knows it.
  std::optional<std::string> microscope_of_cluster_session (const std::string &session_id) const;

  const Config &config () const { return config_; }
  const Paths &paths () const { return paths_; }
  Store &store () { return *store_; }
  RtspService &rtsp () { return *rtsp_; }
  const std::string &admin_token () const { return admin_token_; }
  void set_http_port (int port) { http_port_ = port; }
  bool https () const { return tls_ != nullptr; }
  GTlsCertificate *tls () const { return tls_; }

  Principal authenticate (const std::string &bearer_token) const;

  // Sessions.
  struct NewSession {
    SessionRecord record;
    std::string token;
  };
  // `viewer_site`: where its viewers are, for placing its view in an edge
  // cloud (empty: this node's site).
  NewSession create_session (const Principal &by, const std::string &user, const std::string &role,
                             const std::string &microscope, const std::string &viewer_site = "");
  void end_session (const Principal &by, const std::string &id);
  std::vector<SessionRecord> sessions_visible_to (const Principal &p) const;
  SessionRecord session_visible_to (const Principal &p, const std::string &id) const;
  bool session_live (const std::string &id) const;
  std::string rtsp_url (const SessionRecord &s) const;
  std::string viewer_url (const SessionRecord &s, const std::string &token) const;
  // The session's view and why it failed (empty when it did not).
  std::shared_ptr<ViewStream> view_of_session (const SessionRecord &s) const;
  std::string view_error_of_session (const SessionRecord &s) const;

  // Recordings of a session's view (node_recordings.cpp): started and
  // stopped by the admin or an owner of the session's microscope, audited;
  // seen by whoever sees the session.  One at a time per session (a second
  // start is a conflict); a stop answers `done` on the main loop once the
  // last segment is finished.  Ending the session stops its recording.
  RecordingStatus start_recording (const Principal &by, const std::string &session_id,
                                   const RecordingRequest &r);
  void stop_recording (const Principal &by, const std::string &session_id, Recording::Ended done);
  // The running recording, else the last one that ended; NotFound if none.
  RecordingStatus recording_of (const Principal &by, const std::string &session_id) const;
  std::string recordings_directory () const;

  // Microscopes.
  const std::map<std::string, std::unique_ptr<MicroscopeHub>> &hubs () const { return hubs_; }
  MicroscopeHub &hub_visible_to (const Principal &p, const std::string &id) const;

  // Annotations (kept with the session, in the store).
  AnnotationRecord add_annotation (const Principal &by, const std::string &microscope,
                                   const AnnotationRequest &r);
  std::vector<AnnotationRecord> annotations (const Principal &by, const std::string &microscope) const;
  void delete_annotation (const Principal &by, const std::string &microscope, int64_t id);
  // Exports (GeoJSON).  A session's annotations (the admin, the session, its
  // microscope's owner); a microscope's, every session's (the admin; its
  // sessions whose profile shows annotations).  Both leave out what the
  // caller's profile masks: an annotation touching a slide region masked in
  // its view (the slide label, where patient data is) is not exported to it.
  std::vector<AnnotationRecord> session_annotations (const Principal &by,
                                                     const std::string &session_id) const;
  std::vector<AnnotationRecord> exported_annotations (const Principal &by,
                                                      const std::string &microscope) const;

  // The audit log, oldest first (admin: all; owner: their microscope).
  std::vector<AuditRecord> audit (const Principal &by, int64_t after_id, int limit) const;
  // Audit rows of what happened whatever the database says (refusals, a
  // stop): written now, or kept and written as soon as it allows.
  void record (const AuditRecord &row);
  void record (const Principal &by, const std::string &microscope, const std::string &action,
               const std::string &detail, const std::string &result);
  void refused (const Principal &by, const std::string &microscope, const std::string &action,
                const std::string &detail, const Refusal &e);
  // What must be on disk before the daemon acts: `rows` and, if given, the
  // microscope's control epoch, in one transaction; a Refusal (unavailable)
  // when the database refuses.  In an edge cloud a control change goes to
  // etcd first, fenced.
  void durable (const std::vector<AuditRecord> &rows, const MicroscopeHub *epoch_of);
  static AuditRecord audit_row (const Principal &by, const std::string &microscope, const std::string &action,
                                const std::string &detail, const std::string &result);

  // Client-side statistics a viewer page reports (frames decoded, latency).
  void set_viewer_stats (const std::string &session_id, const std::string &json);
  std::string viewer_stats (const std::string &session_id) const;
  void count_webrtc_viewer (const std::string &profile_key, int delta);

  // The event bus.
  int add_listener (Listener l);
  void remove_listener (int handle);
  void notify (const std::string &microscope, const std::string &kind, const std::string &json,
               const std::string &session = "");

  std::string metrics () const;

  // View profiles (privacy): what each role's view masks, whether it may
  // drive, which overlays it may see ("analysis", "pointers", "annotations").
  const livemicro::privacy::ProfileSet &profiles () const { return profiles_; }
  bool may_see (const Principal &p, const std::string &overlay) const;
  // An error text as `p` may read it: the admin (the operator) reads what
  // the devices and libraries said; sessions never read file paths or URIs
  // (a slide's path may name the patient): those become "<slide>",
  // "<path>" or "<uri>".
  std::string shown_to (const Principal &p, const std::string &text) const
  {
    return p.admin ? text : redacted (text);
  }
  std::string redacted (const std::string &text) const;

  // For the hubs: the rendered pipeline descriptions, and why a profile's
  // view cannot be built here (empty when it can).
  std::string render_capture (const MicroscopeConfig &m) const;
  std::string render_view (const std::string &profile) const;
  std::string template_problem (const std::string &profile) const;

  // The node of the edge cloud that serves a view for viewers at `site`: the
  // least loaded live node of that site, else this one.
  std::string place_view (const std::string &site) const;

private:
  void may_record (const Principal &by) const;
  void stop_recording_of (const Principal &by, const SessionRecord &s, const std::string &why,
                          Recording::Ended done);
  void stop_all_recordings ();
  void register_session (const SessionRecord &s);
  std::vector<AnnotationRecord> unmasked_for (const Principal &p, std::vector<AnnotationRecord> list) const;
  // Where annotations are kept: etcd in an edge cloud, else the store.
  // Refusal (unavailable) when etcd cannot be reached.
  int64_t keep_annotation (const AnnotationRecord &a);
  std::vector<AnnotationRecord> stored_annotations (const std::string &microscope,
                                                    const std::string &session = "") const;
  void forget_annotation (const std::string &microscope, int64_t id);
  void move_annotations_to_cluster ();
  void check_templates ();
  void flush_pending_audit ();
  void tick ();
  void check_user (const std::string &user, const std::string &role) const;
  void report_load ();
  void forget_cluster_session (const SessionRecord &s);

  Config config_;
  Paths paths_;
  Templates templates_;
  std::string admin_token_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<RtspService> rtsp_;
  GTlsCertificate *tls_ = nullptr;
  int http_port_ = 0;
  std::string state_dir_;
  bool temporary_state_ = false;
  std::map<std::string, std::unique_ptr<MicroscopeHub>> hubs_;
  std::map<std::string, std::string> template_problems_; // profile → why it cannot be built
  livemicro::privacy::ProfileSet profiles_;
  std::map<std::string, std::string> viewer_stats_;
  std::map<std::string, int> webrtc_viewers_; // by microscope/profile
  std::map<int, Listener> listeners_;
  int next_listener_ = 1;
  guint tick_source_ = 0;
  std::deque<AuditRecord> pending_audit_; // rows the database refused, oldest first
  std::vector<std::string> secrets_;      // texts sessions never read (slide paths, URIs)
  std::unique_ptr<livemicro::cluster::ClusterMember> cluster_;
  std::unique_ptr<ClusterViews> cluster_views_;
  int64_t views_synced_us_ = 0;
  bool annotations_moved_ = false;             // a node's own annotations, into etcd once joined
  std::set<std::string> annotations_moved_of_; // microscopes done
  int64_t load_reported_us_ = 0;
  uint64_t cpu_busy_ = 0, cpu_total_ = 0;                        // /proc/stat at the last report
  std::map<std::string, std::unique_ptr<Recording>> recordings_; // by session, while they run
  std::map<std::string, RecordingStatus> recorded_;              // by session, the last that ended
};

} // namespace livemicro::orchestrator
