// livemicrod's core: microscopes (each with a media worker), sessions and
// their view branches, credentials, and the services that serve them.
#pragma once

#include "common/store.h"
#include "config.h"
#include "control.h"
#include "requests.h"
#include "rtsp_service.h"
#include "templates.h"
#include "view_stream.h"
#include "worker_link.h"

#include <livemicro/privacy/profiles.h>

#include <json-glib/json-glib.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

namespace livemicro::orchestrator {

struct FrameRouter;

// Who is calling: the admin, or a session (with its role and microscope).
struct Principal {
  bool admin = false;
  std::optional<SessionRecord> session;
  bool valid () const { return admin || session.has_value (); }
  std::string user () const { return admin ? "admin" : session->user; }
  std::string role () const { return admin ? "admin" : session->role; }
};

struct Paths {
  std::string worker;     // livemicro-worker executable
  std::string pipelines;  // pipeline templates
  std::string web;        // the viewer page
};

class Daemon {
public:
  struct MicroscopeRuntime {
    MicroscopeConfig config;
    std::unique_ptr<WorkerLink> worker;
    std::shared_ptr<FrameRouter> router;  // view id → stream, for the reader thread
    bool online = false;
    std::string last_error;
    // Devices of the microscope (camera, stage/focus controllers) that its
    // worker reports gone, with why; the microscope is offline while any is.
    std::map<std::string, std::string> offline_devices;
    // View branches by key (profile + encoding), each with its sessions.
    std::map<std::string, std::shared_ptr<ViewStream>> views;
    std::map<uint32_t, std::set<std::string>> view_sessions;
    std::map<uint32_t, std::string> view_errors;
    std::set<uint32_t> views_confirmed;  // the worker built them
    uint32_t next_view_id = 1;
    std::string state_json = "null";     // latest "state" event (stage, objective)
    std::string features_json = "null";  // latest analysis summary
    JsonNode *stats = nullptr;           // latest "stats" event
    // Collaboration
    std::unique_ptr<ControlArbiter> control;
    uint64_t next_command_id = 1;
    struct Bucket {
      double tokens = 0;
      int64_t at_us = 0;
    };
    std::map<std::string, Bucket> rate;  // per session
    std::string jog_session;             // who jogs, while jogging
    int64_t jog_until_us = 0;
    struct Presence {
      std::string session, user, role, via;
    };
    std::map<int, Presence> presence;
  };

  // One answer of the collaboration API: HTTP status and a JSON body.
  struct Reply {
    int status = 200;
    std::string json;
  };

  // Events for live listeners (viewer WebSockets): kind is "state",
  // "features", "online" or "offline"; json is the payload object.
  using Listener = std::function<void (const std::string &microscope,
      const std::string &kind, const std::string &json)>;

  Daemon (Config config, Paths paths);
  ~Daemon ();

  // Opens the store, starts RTSP and the workers.  Throws std::exception.
  void start ();
  void stop ();

  const Config &config () const { return config_; }
  const Paths &paths () const { return paths_; }
  Store &store () { return *store_; }
  RtspService &rtsp () { return *rtsp_; }
  const std::string &admin_token () const { return admin_token_; }
  void set_http_port (int port) { http_port_ = port; }
  int http_port () const { return http_port_; }
  bool https () const { return tls_ != nullptr; }
  GTlsCertificate *tls () const { return tls_; }

  Principal authenticate (const std::string &bearer_token) const;

  struct NewSession {
    SessionRecord record;
    std::string token;
  };
  NewSession create_session (const Principal &by, const std::string &user,
      const std::string &role, const std::string &microscope);
  void end_session (const Principal &by, const std::string &id);
  std::vector<SessionRecord> sessions_visible_to (const Principal &p) const;
  SessionRecord session_visible_to (const Principal &p, const std::string &id) const;
  std::shared_ptr<ViewStream> view_of_session (const std::string &id) const;
  std::string view_error_of_session (const std::string &id) const;

  std::string rtsp_url (const SessionRecord &s) const;
  std::string viewer_url (const SessionRecord &s, const std::string &token) const;

  const std::map<std::string, MicroscopeRuntime> &microscopes () const { return microscopes_; }
  const MicroscopeRuntime &microscope_visible_to (const Principal &p, const std::string &id) const;
  // Whether a session is live (not ended).
  bool session_live (const std::string &id) const;
  // An error text as `p` may read it: the admin (the operator) reads what
  // the devices and libraries said; sessions never read file paths or URIs
  // (a slide's path may name the patient): those are replaced by
  // "<slide>" / "<path>".
  std::string shown_to (const Principal &p, const std::string &text) const;
  // Sends "set" properties to a microscope's worker (stage commands); false
  // (nothing sent) when the microscope is unknown or offline — a device gone
  // or the worker down; last_error of its runtime says why.
  bool command_microscope (const std::string &id, const std::string &json);

  // Client-side statistics a viewer page reports (frames decoded, latency).
  void set_viewer_stats (const std::string &session_id, const std::string &json);
  std::string viewer_stats (const std::string &session_id) const;
  void count_webrtc_viewer (const std::string &profile_key, int delta);

  int add_listener (Listener l);
  void remove_listener (int handle);

  // Collaboration (control leases, commands, presence, pointers,
  // annotations, stills, audit) — collaboration.cpp.
  Reply control_action (const Principal &by, const std::string &microscope, const ControlRequest &r);
  Reply command (const Principal &by, const std::string &microscope, const CommandRequest &c);
  // A request refused before it reached the daemon's logic (malformed):
  // audited like any refusal.
  void refused (const Principal &by, const std::string &microscope, const std::string &action,
      const std::string &detail, const ApiError &e);
  std::string control_json (const MicroscopeRuntime &m) const;
  std::string presence_json (const MicroscopeRuntime &m) const;
  int join (const std::string &microscope, const SessionRecord &s, const std::string &via);
  void leave (const std::string &microscope, int handle);
  void pointer (const SessionRecord &s, double x_um, double y_um);
  Reply add_annotation (const Principal &by, const std::string &microscope, const AnnotationRequest &r);
  Reply annotations (const Principal &by, const std::string &microscope) const;
  Reply delete_annotation (const Principal &by, const std::string &microscope, int64_t id);
  Reply annotations_geojson (const Principal &by, const std::string &session_id, double um_per_px);
  // Asks the session's view for a still; `done` gets the worker's "still"
  // event (or an error) on the main loop.  Returns false when it cannot be
  // asked (worker down).
  bool request_still (const Principal &by, const std::string &session_id,
      std::function<void (JsonObject *still)> done);
  Reply audit (const Principal &by, int64_t after_id, int limit) const;
  // Audit rows of what happened whatever the database says (refusals, a
  // stop): written now, or kept and written as soon as it allows.
  void record (const Principal &by, const std::string &microscope, const std::string &action,
      const std::string &detail, const std::string &result);
  void record (const AuditRecord &row);

  std::string metrics () const;

  // View profiles (privacy): what each role's view masks, whether it may
  // drive, which overlays it may see ("analysis", "pointers", "annotations").
  const livemicro::privacy::ProfileSet &profiles () const { return profiles_; }
  bool may_see (const Principal &p, const std::string &overlay) const;

private:
  std::string render_capture (const MicroscopeConfig &m) const;
  std::string render_view (const std::string &profile) const;
  std::shared_ptr<ViewStream> acquire_view (const std::string &microscope,
      const std::string &profile, const std::string &session_id);
  void release_view (const std::string &session_id);
  void send_add_view (MicroscopeRuntime &m, const ViewStream &v);
  void on_worker_event (MicroscopeRuntime &m, JsonObject *event);
  void notify (const std::string &microscope, const std::string &kind, const std::string &json);
  void register_session (const SessionRecord &s);
  void check_templates ();
  void control_changed (MicroscopeRuntime &m);
  bool send_hw (MicroscopeRuntime &m, uint64_t id, const std::string &op, double a, double b, int objective);
  static Participant participant (const Principal &p);
  MicroscopeRuntime &runtime_visible_to (const Principal &p, const std::string &id);
  static AuditRecord audit_row (const Principal &by, const std::string &microscope, const std::string &action,
      const std::string &detail, const std::string &result);
  // Writes `rows` (and the microscope's control epoch) in one transaction
  // before the daemon acts; ApiError 503 when the database refuses.
  void durable (const std::vector<AuditRecord> &rows, const MicroscopeRuntime *epoch_of);
  void flush_pending_audit ();
  void tick ();

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
  std::map<std::string, MicroscopeRuntime> microscopes_;
  std::map<std::string, std::pair<std::string, uint32_t>> session_views_;  // id → (microscope, view)
  std::map<std::string, std::string> template_problems_;  // profile → why it cannot be built
  livemicro::privacy::ProfileSet profiles_;
  std::map<std::string, std::string> viewer_stats_;
  std::map<std::string, int> webrtc_viewers_;  // by microscope/profile
  std::map<int, Listener> listeners_;
  int next_listener_ = 1;
  int next_presence_ = 1;
  int64_t next_still_ = 1;
  std::map<int64_t, std::function<void (JsonObject *)>> stills_;
  guint control_tick_ = 0;
  std::deque<AuditRecord> pending_audit_;  // rows the database refused, oldest first
  std::vector<std::string> secrets_;       // texts sessions never read (slide paths, URIs)
};

}  // namespace livemicro::orchestrator
