// One microscope of the node: its media worker, the view branches its
// sessions watch, who drives it (control lease, queue, rate limits, jog
// dead-man), who is present, and its latest status and analysis — all typed.
//
// A command's path: the HTTP route parses it (requests.h) → the hub checks
// lease, rate and soft limits, writes its audit row, and sends it → the
// worker's hardware queue → the microscope.
//
// The hub may touch: its worker link, its views, its arbiter, and the node's
// store (audit rows, epochs), RTSP service (through the node) and event bus.
// Runs on the daemon's main loop; frames reach views on the worker link's
// reader thread through the hub's FrameRouter only.
#pragma once

#include "common/store.h"
#include "common/worker_protocol.h"
#include "config.h"
#include "control.h"
#include "requests.h"
#include "slide_map.h"
#include "view_stream.h"
#include "worker_link.h"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

namespace livemicro::orchestrator {

class Node;
struct Principal;
struct FrameRouter;

// Who is connected to a microscope, and through what.
struct Presence {
  std::string session, user, role, via; // via: viewer, events
};

// The answer to a control action.
struct ControlResult {
  std::string result;  // granted, queued, released, renewed, revoked, left_queue
  bool queued = false; // waiting in line (HTTP 202)
  std::optional<Lease> lease;
  int64_t expires_in_ms = 0;
  int queue_position = 0;
};

// A command accepted for the hardware thread.
struct CommandAccepted {
  uint64_t id = 0;
  CommandOp op = CommandOp::kStop;
};

// What became of an accepted command: pending until the hardware thread
// reports its end (done, failed, cancelled), or failed when the media
// worker stops before it does.
struct CommandOutcome {
  uint64_t id = 0;
  CommandOp op = CommandOp::kStop;
  std::string status = "pending"; // pending, done, failed, cancelled
  std::string detail;             // why it failed or was cancelled
};

class MicroscopeHub {
public:
  MicroscopeHub (Node &node, MicroscopeConfig config, uint64_t last_epoch);
  ~MicroscopeHub ();
  MicroscopeHub (const MicroscopeHub &) = delete;
  MicroscopeHub &operator= (const MicroscopeHub &) = delete;

  // Throws TemplateError (via the node) when the capture cannot be rendered.
  void start ();
  void stop ();

  const std::string &id () const { return config_.id; }
  const MicroscopeConfig &config () const { return config_; }
  bool online () const { return online_; }
  // Why it is offline, as the devices and libraries said (admin only; see
  // Node::shown_to).
  const std::string &last_error () const { return last_error_; }
  const std::optional<MicroscopeStatus> &status () const { return status_; }
  const std::optional<AnalysisSummary> &analysis () const { return analysis_; }
  const std::optional<event::Stats> &stats () const { return stats_; }
  // The slide map (unmasked: see slide_map.h) and the path the stage took,
  // a point each time it had gone kPathStepUm (the last kPathPoints).
  const std::optional<SlideMapImage> &slide_map () const { return slide_map_; }
  const std::vector<cv::Point2d> &path_um () const { return path_um_; }
  static constexpr double kPathStepUm = 25.0;
  static constexpr size_t kPathPoints = 4000;
  const ControlArbiter &control () const { return *control_; }
  const std::map<int, Presence> &presence () const { return presence_; }
  int worker_pid () const { return worker_->pid (); }
  int worker_restarts () const { return worker_->restarts (); }
  size_t view_branches () const { return views_.size (); }
  size_t encoders () const { return online_ ? views_confirmed_.size () : 0; }
  std::vector<std::shared_ptr<ViewStream>> views () const;

  // The view branch of a session's profile: shared by all sessions with the
  // same profile and encoding, built with the first, removed with the last.
  std::shared_ptr<ViewStream> acquire_view (const std::string &profile, const std::string &session_id);
  void release_view (const std::string &session_id);
  std::shared_ptr<ViewStream> view_of (const std::string &session_id) const;
  std::string view_error_of (const std::string &session_id) const;

  // Control and commands; a Refusal says why not (audited).
  ControlResult control (const Principal &by, const ControlRequest &r);
  CommandAccepted command (const Principal &by, const CommandRequest &c);
  // The last kOutcomesKept commands' outcomes; nullopt for an older or unknown id.
  static constexpr size_t kOutcomesKept = 1024;
  std::optional<CommandOutcome> command_outcome (uint64_t id) const;

  // A session ends: out of the queue, its lease passes on.  The change is
  // made durable by the caller (with the session's end) and then applied
  // with ended(); `undo` restores the arbiter when it could not be.
  struct Forgetting {
    bool control_moved = false;
    ControlArbiter before;
  };
  Forgetting forget (const std::string &session_id);
  void undo (const Forgetting &f) { *control_ = f.before; }
  void ended (const std::string &session_id, const Forgetting &f);

  // Presence (a socket joins or leaves) and pointers.
  int join (const SessionRecord &s, const std::string &via);
  void leave (int handle);
  void pointer (const SessionRecord &s, double x_um, double y_um);

  // A still of the session's view; `done` gets the worker's answer on the
  // main loop.  False when the worker cannot be asked.
  using StillDone = std::function<void (const event::StillTaken &)>;
  bool request_still (const Principal &by, const SessionRecord &s, StillDone done);

  // Every 100 ms: leases that lapsed pass on once durable.
  void tick ();

  // In an edge cloud: the control kept in etcd, adopted when this node took
  // the microscope under `fence_revision` (Node::adopt_cluster_control);
  // the `ended` sessions leave it (a lease they held passes on).  False
  // when there was none, or it is older than this hub's own: then the hub's
  // own stands.
  bool adopt_control (const std::optional<ControlState> &kept, int64_t fence_revision,
                      const std::set<std::string> &ended);
  // The fencing revision under which the control was last adopted (0: never).
  int64_t control_revision () const { return control_revision_; }

  // A socket that receives this microscope's analysis opens (+1) or closes
  // (-1): the worker analyses only while someone reads it (or a playing
  // view draws it).
  void watch_analysis (int delta);

private:
  // The stages of command (): each throws a Refusal (audited) when it says no.
  [[noreturn]] void refuse_command (const Principal &by, const CommandRequest &c, Reason reason,
                                    const std::string &why);
  bool admit_command (const Principal &by, const CommandRequest &c);
  std::string check_command_values (const Principal &by, const CommandRequest &c);
  CommandAccepted dispatch_command (const Principal &by, const CommandRequest &c, const std::string &detail,
                                    bool emergency_stop);
  void on_event (const WorkerEvent &e);
  void on_state (const event::State &m);
  void on_device (const event::Device &m);
  void on_started ();
  void on_down (const std::string &why);
  void send_add_view (const ViewStream &v);
  bool send (const WorkerCommand &c);
  void control_changed ();
  void keep_passed_on (const ControlArbiter &before, const std::string &why);
  void notify_state ();
  // Tells the worker who watches (docs/media-demand.md) when it changed, or
  // always with `force` (a freshly started worker is idle).
  void update_demand (bool force = false);

  Node &node_;
  MicroscopeConfig config_;
  std::unique_ptr<WorkerLink> worker_;
  std::shared_ptr<FrameRouter> router_; // view id → stream, for the reader thread
  bool online_ = false;
  std::string last_error_;
  // Devices its worker reports gone, with why; offline while any is.
  std::map<std::string, std::string> offline_devices_;
  std::optional<MicroscopeStatus> status_;
  std::optional<AnalysisSummary> analysis_;
  std::optional<event::Stats> stats_;
  std::optional<SlideMapImage> slide_map_;
  std::vector<cv::Point2d> path_um_;
  // View branches by key (profile + encoding), each with its sessions.
  std::map<std::string, std::shared_ptr<ViewStream>> views_;
  std::map<uint32_t, std::set<std::string>> view_sessions_;
  std::map<uint32_t, std::string> view_errors_;
  std::set<uint32_t> views_confirmed_; // the worker built them
  std::map<std::string, uint32_t> session_views_;
  uint32_t next_view_id_ = 1;
  // Collaboration.
  std::unique_ptr<ControlArbiter> control_;
  int64_t control_revision_ = 0;
  uint64_t next_command_id_ = 1;
  std::map<uint64_t, CommandOutcome> outcomes_; // by id, the newest kOutcomesKept
  struct Bucket {
    double tokens = 0;
    int64_t at_us = 0;
  };
  std::map<std::string, Bucket> rate_; // per session
  std::string jog_session_;            // who jogs, while jogging
  int64_t jog_until_us_ = 0;
  std::map<int, Presence> presence_;
  int next_presence_ = 1;
  int64_t next_still_ = 1;
  std::map<int64_t, StillDone> stills_;
  // Demand: readers of the analysis, and what the worker was last told.
  int analysis_watchers_ = 0;
  std::optional<command::Demand> demand_sent_;
  // Callbacks hopping to the main loop check it before touching the hub.
  std::shared_ptr<bool> alive_ = std::make_shared<bool> (true);
};

} // namespace livemicro::orchestrator
