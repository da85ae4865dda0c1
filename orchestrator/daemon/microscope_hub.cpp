#include "microscope_hub.h"

#include "api_json.h"
#include "common/tokens.h"
#include "node.h"

#include <livemicro/hw/text.h>
#include <algorithm>
#include <cmath>
#include <mutex>
#include <sstream>

namespace livemicro::orchestrator {

// Frames from the worker's reader thread find their view here.
struct FrameRouter {
  std::mutex mutex;
  std::map<uint32_t, std::shared_ptr<ViewStream>> views;
};

using livemicro::hw::num;

namespace {

Participant
participant (const Principal &p)
{
  if (p.admin)
    return {"", "admin", "admin"};
  return {p.session->id, p.session->user, p.session->role};
}

} // namespace

MicroscopeHub::MicroscopeHub (Node &node, MicroscopeConfig config, uint64_t last_epoch)
    : node_ (node), config_ (std::move (config)), router_ (std::make_shared<FrameRouter> ())
{
  WorkerLink::Callbacks cb;
  auto router = router_;
  cb.frame = [router] (const wire::FrameHeader &h, const uint8_t *au, size_t len) {
    std::shared_ptr<ViewStream> v;
    {
      std::lock_guard<std::mutex> lock (router->mutex);
      auto it = router->views.find (h.view_id);
      if (it != router->views.end ())
        v = it->second;
    }
    if (v)
      v->push (h, au, len);
  };
  cb.event = [this] (const WorkerEvent &e) { on_event (e); };
  cb.started = [this] { on_started (); };
  cb.down = [this] (const std::string &why) { on_down (why); };
  worker_ = std::make_unique<WorkerLink> (config_.id, node_.paths ().worker, std::move (cb));
  ControlArbiter::Options co;
  co.idle_timeout_us = (int64_t)node_.config ().control.idle_timeout_ms * 1000;
  co.may_control = [&node] (const std::string &role) {
    const livemicro::privacy::Profile *p = node.profiles ().find (role);
    return p && p->may_control;
  };
  control_ = std::make_unique<ControlArbiter> (
      co, last_epoch, [] { return g_get_monotonic_time (); }, [] { return random_id (); });
}

MicroscopeHub::~MicroscopeHub ()
{
  *alive_ = false;
  stop ();
}

void
MicroscopeHub::start ()
{
  worker_->set_capture (node_.render_capture (config_));
  worker_->start ();
}

void
MicroscopeHub::stop ()
{
  if (worker_)
    worker_->stop ();
}

bool
MicroscopeHub::send (const WorkerCommand &c)
{
  return worker_->command (encode (c));
}

std::vector<std::shared_ptr<ViewStream>>
MicroscopeHub::views () const
{
  std::vector<std::shared_ptr<ViewStream>> out;
  for (const auto &kv : views_)
    out.push_back (kv.second);
  return out;
}

// ---- the worker ---------------------------------------------------------------

void
MicroscopeHub::on_started ()
{
  // The capture runs: build the views.  It counts as online once its first
  // state (with the travel limits) arrives.
  offline_devices_.clear (); // the element opened every device
  last_error_.clear ();
  status_.reset ();
  for (auto &kv : views_)
    send_add_view (*kv.second);
  update_demand (true);
}

void
MicroscopeHub::on_down (const std::string &why)
{
  if (online_)
    g_warning ("microscope '%s' media worker %s; restarting", id ().c_str (), why.c_str ());
  online_ = false;
  offline_devices_.clear ();
  views_confirmed_.clear ();
  if (last_error_.empty ())
    last_error_ = "media worker " + why;
  // What the worker had not finished ends with it (its hardware queue is gone).
  for (auto &[cid, o] : outcomes_)
    if (o.status == "pending") {
      o.status = "failed";
      o.detail = "the microscope's media worker stopped before the command ended";
    }
  node_.notify (id (), "offline", api::reason_json (""));
}

void
MicroscopeHub::send_add_view (const ViewStream &v)
{
  std::string desc;
  try {
    desc = node_.render_view (v.profile ());
  } catch (const TemplateError &e) {
    view_errors_[v.id ()] = e.what ();
    return;
  }
  send (command::AddView{v.id (), desc});
}

// The worker's state: the microscope comes online with its first travel
// limits; the stage's path grows by steps of kPathStepUm.
void
MicroscopeHub::on_state (const event::State &m)
{
  status_ = m.status;
  if (!online_ && offline_devices_.empty () && status_->limits) {
    online_ = true;
    node_.notify (id (), "online", api::reason_json (""));
  }
  node_.notify (id (), "state", api::status_json (status_));
  const cv::Point2d here (m.status.x_um, m.status.y_um);
  if (path_um_.empty () || cv::norm (here - path_um_.back ()) >= kPathStepUm) {
    path_um_.push_back (here);
    if (path_um_.size () > kPathPoints)
      path_um_.erase (path_um_.begin ());
  }
}

// A device went away or came back; the worker keeps streaming (a slate while
// the camera is gone) and the sessions stay.
void
MicroscopeHub::on_device (const event::Device &m)
{
  if (!m.online)
    offline_devices_[m.device] = m.problem;
  else
    offline_devices_.erase (m.device);
  bool online = offline_devices_.empty () && worker_->running ();
  std::string reason;
  for (const auto &kv : offline_devices_)
    reason += (reason.empty () ? "" : "; ") + kv.second;
  if (online != online_ || (!online && reason != last_error_)) {
    g_message ("microscope '%s' is %s%s%s", id ().c_str (), online ? "online" : "offline", online ? "" : ": ",
               reason.c_str ());
    online_ = online;
    last_error_ = reason;
    node_.notify (id (), online ? "online" : "offline", api::reason_json (node_.redacted (reason)));
  }
}

void
MicroscopeHub::on_event (const WorkerEvent &e)
{
  std::visit (
      [this] (const auto &m) {
        using T = std::decay_t<decltype (m)>;
        if constexpr (std::is_same_v<T, event::State>) {
          on_state (m);
        } else if constexpr (std::is_same_v<T, event::Features>) {
          analysis_ = m.summary;
          node_.notify (id (), "features", api::analysis_json (analysis_));
        } else if constexpr (std::is_same_v<T, event::Nuclei>) {
          node_.notify (id (), "nuclei", field_json (m.field));
        } else if constexpr (std::is_same_v<T, event::Overview>) {
          if (auto map = decode_overview (m.overview, g_get_real_time ())) {
            slide_map_ = std::move (map);
            node_.notify (id (), "overview", api::overview_json (*slide_map_, {}, path_um_));
          } else {
            g_warning ("microscope '%s': the slide map from its worker does not decode", id ().c_str ());
          }
        } else if constexpr (std::is_same_v<T, event::Stats>) {
          stats_ = m;
        } else if constexpr (std::is_same_v<T, event::ViewAdded>) {
          views_confirmed_.insert (m.view);
          view_errors_.erase (m.view);
        } else if constexpr (std::is_same_v<T, event::ViewError>) {
          view_errors_[m.view] = m.message;
          views_confirmed_.erase (m.view);
          g_warning ("microscope '%s' view %u: %s", id ().c_str (), m.view, m.message.c_str ());
        } else if constexpr (std::is_same_v<T, event::CommandEnded>) {
          event::CommandEnded shown = m;
          shown.detail = node_.redacted (m.detail); // every session reads it
          if (auto o = outcomes_.find (m.id); o != outcomes_.end ()) {
            o->second.status = m.status;
            o->second.detail = shown.detail;
          }
          node_.notify (id (), "command", api::command_ended_json (shown));
        } else if constexpr (std::is_same_v<T, event::StillTaken>) {
          auto it = stills_.find (m.request);
          if (it != stills_.end ()) {
            auto done = std::move (it->second);
            stills_.erase (it);
            done (m);
          }
        } else if constexpr (std::is_same_v<T, event::Warning>) {
          g_warning ("microscope '%s': %s: %s", id ().c_str (), m.source.c_str (), m.message.c_str ());
        } else if constexpr (std::is_same_v<T, event::Device>) {
          on_device (m);
        } else if constexpr (std::is_same_v<T, event::Failed>) {
          last_error_ = m.message.empty () ? "error" : m.message;
          g_warning ("microscope '%s': %s", id ().c_str (), last_error_.c_str ());
        }
      },
      e);
}

// ---- views ----------------------------------------------------------------------

std::shared_ptr<ViewStream>
MicroscopeHub::acquire_view (const std::string &profile, const std::string &session_id)
{
  const VideoConfig &v = node_.config ().video;
  std::string key = profile + "|" + std::to_string (v.width) + "x" + std::to_string (v.height) + "@"
                    + std::to_string (v.framerate) + "|" + std::to_string (v.bitrate_kbps) + "k";
  auto it = views_.find (key);
  std::shared_ptr<ViewStream> view;
  if (it != views_.end ()) {
    view = it->second;
  } else {
    view = std::make_shared<ViewStream> (next_view_id_++, id (), profile, key);
    uint32_t vid = view->id ();
    WorkerLink *worker = worker_.get ();
    view->set_keyframe_request ([worker, vid] {
      // From the RTSP or main thread: hop to the main context for the link.
      auto *args = new std::pair<WorkerLink *, uint32_t> (worker, vid);
      g_main_context_invoke (
          nullptr,
          [] (gpointer d) -> gboolean {
            std::unique_ptr<std::pair<WorkerLink *, uint32_t>> a (
                static_cast<std::pair<WorkerLink *, uint32_t> *> (d));
            a->first->command (encode (command::Keyframe{a->second}));
            return G_SOURCE_REMOVE;
          },
          args);
    });
    // Players come and go on RTSP and WebRTC threads: the demand is
    // worked out again on the main loop.
    std::weak_ptr<bool> alive = alive_;
    view->set_viewers_changed ([this, alive] {
      auto *args = new std::pair<MicroscopeHub *, std::weak_ptr<bool>> (this, alive);
      g_main_context_invoke (
          nullptr,
          [] (gpointer d) -> gboolean {
            std::unique_ptr<std::pair<MicroscopeHub *, std::weak_ptr<bool>>> a (
                static_cast<std::pair<MicroscopeHub *, std::weak_ptr<bool>> *> (d));
            auto alive = a->second.lock ();
            if (alive && *alive)
              a->first->update_demand ();
            return G_SOURCE_REMOVE;
          },
          args);
    });
    views_[key] = view;
    {
      std::lock_guard<std::mutex> lock (router_->mutex);
      router_->views[vid] = view;
    }
    std::string problem = node_.template_problem (profile);
    if (!problem.empty ())
      view_errors_[vid] = problem;
    else if (online_)
      send_add_view (*view);
  }
  view_sessions_[view->id ()].insert (session_id);
  session_views_[session_id] = view->id ();
  return view;
}

void
MicroscopeHub::release_view (const std::string &session_id)
{
  auto sv = session_views_.find (session_id);
  if (sv == session_views_.end ())
    return;
  uint32_t vid = sv->second;
  session_views_.erase (sv);
  auto &users = view_sessions_[vid];
  users.erase (session_id);
  if (!users.empty ())
    return;
  // Last session of this view: the branch and its encoder go away.
  view_sessions_.erase (vid);
  view_errors_.erase (vid);
  views_confirmed_.erase (vid);
  for (auto it = views_.begin (); it != views_.end (); ++it)
    if (it->second->id () == vid) {
      views_.erase (it);
      break;
    }
  {
    std::lock_guard<std::mutex> lock (router_->mutex);
    router_->views.erase (vid);
  }
  send (command::RemoveView{vid});
  update_demand ();
}

std::shared_ptr<ViewStream>
MicroscopeHub::view_of (const std::string &session_id) const
{
  auto sv = session_views_.find (session_id);
  if (sv == session_views_.end ())
    return nullptr;
  for (const auto &kv : views_)
    if (kv.second->id () == sv->second)
      return kv.second;
  return nullptr;
}

std::string
MicroscopeHub::view_error_of (const std::string &session_id) const
{
  auto sv = session_views_.find (session_id);
  if (sv == session_views_.end ())
    return "";
  auto it = view_errors_.find (sv->second);
  return it == view_errors_.end () ? "" : it->second;
}

// ---- control and commands --------------------------------------------------------

void
MicroscopeHub::control_changed ()
{
  node_.notify (id (), "control", api::control_json (*control_));
}

ControlResult
MicroscopeHub::control (const Principal &by, const ControlRequest &r)
{
  const std::string action = control_action_name (r.action);
  Participant me = participant (by);
  auto refuse = [&] (Reason reason, const std::string &detail, const std::string &why) {
    Refusal e{reason, why};
    node_.refused (by, id (), "control", detail, e);
    throw e;
  };
  try {
    node_.adopt_cluster_control (*this);
  } catch (const Refusal &e) {
    refuse (e.reason, action, e.message);
  }
  // The change counts only once it is durable: undone if it cannot be.
  const ControlArbiter before = *control_;
  ControlArbiter::Outcome o;
  std::string detail = action;
  switch (r.action) {
  case ControlAction::kRequest:
  case ControlAction::kRelease:
  case ControlAction::kRenew:
    if (by.admin)
      refuse (Reason::kForbidden, action, "the admin grants and revokes; requesting control needs a session");
    o = r.action == ControlAction::kRequest   ? control_->request (me)
        : r.action == ControlAction::kRelease ? control_->release (me)
                                              : control_->renew (me, r.lease);
    break;
  case ControlAction::kGrant: {
    auto target = node_.store ().session (r.session);
    if (!target || target->microscope != id ())
      refuse (Reason::kInvalid, action, "no session '" + r.session + "' on this microscope");
    detail = "grant to " + target->id;
    o = control_->grant (me, {target->id, target->user, target->role});
    break;
  }
  case ControlAction::kRevoke:
    o = control_->revoke (me);
    break;
  }
  const bool changed = control_->take_changed ();
  if (o.refused) {
    *control_ = before;
    refuse (o.refused->reason, detail, o.refused->message);
  }
  try {
    node_.durable (
        {Node::audit_row (by, id (), "control", detail,
                          o.result + (o.lease ? " epoch " + std::to_string (o.lease->epoch) : "")
                              + (o.queue_position ? " position " + std::to_string (o.queue_position) : ""))},
        changed ? this : nullptr);
  } catch (const Refusal &) {
    *control_ = before;
    throw;
  }
  if (changed)
    control_changed ();
  ControlResult result;
  result.result = o.result;
  result.queued = o.queued ();
  result.lease = o.lease;
  result.expires_in_ms = control_->expires_in_us () / 1000;
  result.queue_position = o.queue_position;
  return result;
}

// A command's way to the hardware thread: admitted (online, lease, rate),
// its values checked, audited, then sent.
CommandAccepted
MicroscopeHub::command (const Principal &by, const CommandRequest &c)
{
  const bool emergency_stop = admit_command (by, c);
  const std::string detail = check_command_values (by, c);
  return dispatch_command (by, c, detail, emergency_stop);
}

void
MicroscopeHub::refuse_command (const Principal &by, const CommandRequest &c, Reason reason,
                               const std::string &why)
{
  Refusal e{reason, why};
  node_.refused (by, id (), "command", command_op_name (c.op), e);
  throw e;
}

// Online, the lease (required, except that the owner and the admin may
// always stop) and the rate (a token bucket per session; stop is never
// limited).  Returns whether this is an emergency stop without a lease.
bool
MicroscopeHub::admit_command (const Principal &by, const CommandRequest &c)
{
  if (!online_)
    refuse_command (by, c, Reason::kUnavailable,
                    "microscope '" + id () + "' is offline: "
                        + node_.shown_to (by, last_error_.empty () ? "starting" : last_error_));
  const bool emergency_stop = c.op == CommandOp::kStop && (by.admin || by.session->role == "owner");
  if (!emergency_stop) {
    try {
      node_.adopt_cluster_control (*this);
    } catch (const Refusal &e) {
      refuse_command (by, c, e.reason, e.message);
    }
    if (by.admin)
      refuse_command (by, c, Reason::kForbidden, "the admin has no lease; only stop is allowed without one");
    if (c.lease.empty ())
      refuse_command (by, c, Reason::kConflict, "no lease: request control first");
    const ControlArbiter before = *control_;
    bool current = control_->check (by.session->id, c.lease);
    if (control_->take_changed ())
      keep_passed_on (before, "lapsed");
    if (!current)
      refuse_command (by, c, Reason::kConflict,
                      "not the current lease (it lapsed, was revoked or handed over)");
  }
  if (c.op != CommandOp::kStop && !by.admin) {
    auto &bucket = rate_[by.session->id];
    const double cap = node_.config ().control.max_commands_per_s;
    int64_t now = g_get_monotonic_time ();
    bucket.tokens = bucket.at_us ? std::min (cap, bucket.tokens + (now - bucket.at_us) * cap / 1e6) : cap;
    bucket.at_us = now;
    if (bucket.tokens < 1)
      refuse_command (by, c, Reason::kRateLimited,
                      "more than " + std::to_string (node_.config ().control.max_commands_per_s)
                          + " commands per second");
    bucket.tokens -= 1;
  }
  return emergency_stop;
}

// Values against the soft limits of the current objective (hw::SoftLimits,
// as the worker last reported them), the mounted objectives and the jog
// speed.  Returns the command as the audit log shows it.
std::string
MicroscopeHub::check_command_values (const Principal &by, const CommandRequest &c)
{
  const std::string op = command_op_name (c.op);
  if (!status_ || !status_->limits)
    refuse_command (by, c, Reason::kUnavailable,
                    "the microscope's travel limits are not known yet (the camera is starting)");
  const MicroscopeStatus &st = *status_;
  const SoftLimits &lim = *st.limits;
  auto check_range = [&] (const char *axis, double v, const hw::AxisLimits &range) {
    if (!range.contains (v))
      refuse_command (by, c, Reason::kInvalid,
                      std::string (axis) + " " + num (v) + " µm is outside the soft travel limit ["
                          + num (range.min_um) + ", " + num (range.max_um) + "] µm for this objective");
  };
  switch (c.op) {
  case CommandOp::kMove:
  case CommandOp::kMoveBy: {
    const bool rel = c.op == CommandOp::kMoveBy;
    check_range ("x", rel ? st.x_um + c.a : c.a, lim.x);
    check_range ("y", rel ? st.y_um + c.b : c.b, lim.y);
    return op + " " + num (c.a) + ", " + num (c.b);
  }
  case CommandOp::kFocus:
  case CommandOp::kFocusBy:
    check_range ("z", c.op == CommandOp::kFocusBy ? st.z_um + c.a : c.a, lim.z);
    return op + " " + num (c.a);
  case CommandOp::kObjective: {
    const auto &mags = st.objectives;
    if (!mags.empty () && std::find (mags.begin (), mags.end (), c.objective) == mags.end ()) {
      std::string list;
      for (int mg : mags)
        list += (list.empty () ? "" : ", ") + std::to_string (mg) + "x";
      refuse_command (by, c, Reason::kInvalid,
                      "objective " + std::to_string (c.objective) + "x is not mounted (available: " + list
                          + ")");
    }
    return "objective " + std::to_string (c.objective);
  }
  case CommandOp::kJog: {
    double v = std::hypot (c.a, c.b);
    if (v <= 0 || v > 20000)
      refuse_command (by, c, Reason::kInvalid, "jog speed " + num (v) + " µm/s is outside (0, 20000] µm/s");
    return "jog " + num (c.a) + ", " + num (c.b);
  }
  case CommandOp::kAutofocus:
  case CommandOp::kStop:
    break;
  }
  return op;
}

// Audits the command and sends it to the worker; its end comes later, on
// this loop, as the worker's CommandEnded.
CommandAccepted
MicroscopeHub::dispatch_command (const Principal &by, const CommandRequest &c, const std::string &detail,
                                 bool emergency_stop)
{
  const uint64_t cid = next_command_id_++;
  const AuditRecord row
      = Node::audit_row (by, id (), "command", detail,
                         "accepted as " + std::to_string (cid)
                             + (emergency_stop && c.lease.empty () ? " (emergency stop)" : ""));
  const command::Hardware hw{cid, c.op, c.a, c.b, c.objective};
  CommandOutcome outcome{cid, c.op, "pending", ""};
  if (c.op == CommandOp::kStop) {
    // Stop is never held back: executed first, its row written as soon as
    // the database allows.
    if (!send (hw))
      outcome = {cid, c.op, "failed", "the microscope's media worker is not running"};
    node_.record (row);
  } else {
    // Nothing reaches the hardware before its audit row is on disk (and, in
    // an edge cloud, in etcd under this node's fencing token).
    try {
      node_.fenced (id (), {row});
    } catch (const Refusal &e) {
      refuse_command (by, c, e.reason, e.message);
    }
    node_.durable ({row}, nullptr);
    if (!send (hw)) {
      node_.record (
          Node::audit_row (by, id (), "command", detail,
                           "not delivered as " + std::to_string (cid) + ": the media worker is down"));
      throw Refusal{Reason::kUnavailable,
                    "microscope '" + id () + "' went offline before the command could be delivered"};
    }
    if (c.op == CommandOp::kJog) {
      jog_session_ = by.session->id;
      jog_until_us_ = g_get_monotonic_time () + 600000;
    }
  }
  outcomes_[cid] = outcome;
  while (outcomes_.size () > kOutcomesKept)
    outcomes_.erase (outcomes_.begin ());
  return {cid, c.op};
}

std::optional<CommandOutcome>
MicroscopeHub::command_outcome (uint64_t cid) const
{
  auto it = outcomes_.find (cid);
  if (it == outcomes_.end ())
    return std::nullopt;
  return it->second;
}

MicroscopeHub::Forgetting
MicroscopeHub::forget (const std::string &session_id)
{
  Forgetting f{false, *control_};
  f.control_moved = control_->forget (session_id);
  f.control_moved = control_->take_changed () || f.control_moved;
  return f;
}

void
MicroscopeHub::ended (const std::string &session_id, const Forgetting &f)
{
  rate_.erase (session_id);
  release_view (session_id);
  if (f.control_moved)
    control_changed ();
}

bool
MicroscopeHub::adopt_control (const std::optional<ControlState> &kept, int64_t fence_revision,
                              const std::set<std::string> &ended)
{
  control_revision_ = fence_revision;
  if (!kept || !control_->restore (*kept))
    return false;
  control_->take_changed ();
  const ControlArbiter before = *control_;
  for (const std::string &s : ended)
    control_->forget (s);
  if (control_->take_changed ())
    keep_passed_on (before, "session ended while its home was away");
  else
    control_changed ();
  return true;
}

void
MicroscopeHub::tick ()
{
  const ControlArbiter before = *control_;
  control_->tick ();
  if (control_->take_changed ())
    keep_passed_on (before, "lapsed");
}

// The control passed on by itself (`why`: a lease lapsed, its session is
// gone): kept once durable (and, in an edge cloud, in etcd), else undone
// (a lapse is tried again at the next tick).
void
MicroscopeHub::keep_passed_on (const ControlArbiter &before, const std::string &why)
{
  const auto &h = control_->holder ();
  std::string detail
      = h ? why + "; passed to " + h->holder.session + " epoch " + std::to_string (h->epoch) : why;
  try {
    AuditRecord row{0, g_get_real_time (), "livemicrod", "system", "", id (), "control", detail, "ok"};
    node_.durable ({row}, this);
  } catch (const Refusal &) {
    *control_ = before;
    return;
  }
  control_changed ();
}

// ---- demand ----------------------------------------------------------------------

void
MicroscopeHub::watch_analysis (int delta)
{
  analysis_watchers_ = std::max (0, analysis_watchers_ + delta);
  update_demand ();
}

void
MicroscopeHub::update_demand (bool force)
{
  command::Demand d;
  for (const auto &kv : views_)
    if (kv.second->viewers () > 0)
      d.playing.push_back (kv.second->id ());
  std::sort (d.playing.begin (), d.playing.end ());
  d.analysis = analysis_watchers_ > 0;
  if (!force && demand_sent_ && demand_sent_->playing == d.playing && demand_sent_->analysis == d.analysis)
    return;
  // A worker that is down gets it with its next start.
  if (send (d))
    demand_sent_ = d;
  else
    demand_sent_.reset ();
}

// ---- presence, pointers, stills ---------------------------------------------------

int
MicroscopeHub::join (const SessionRecord &s, const std::string &via)
{
  int h = next_presence_++;
  presence_[h] = {s.id, s.user, s.role, via};
  node_.notify (id (), "presence", api::presence_json (presence_));
  return h;
}

void
MicroscopeHub::leave (int handle)
{
  auto p = presence_.find (handle);
  if (p == presence_.end ())
    return;
  std::string session = p->second.session;
  presence_.erase (p);
  node_.notify (id (), "presence", api::presence_json (presence_));
  // The driver's connection dropped during a jog: the motion stops.
  bool still_there = false;
  for (const auto &kv : presence_)
    still_there = still_there || kv.second.session == session;
  if (!still_there && jog_session_ == session && g_get_monotonic_time () < jog_until_us_) {
    uint64_t cid = next_command_id_++;
    send (command::Hardware{cid, CommandOp::kStop, 0, 0, 0});
    node_.record (AuditRecord{0, g_get_real_time (), "livemicrod", "system", session, id (), "command",
                              "stop (the jogging session's connection dropped)",
                              "accepted as " + std::to_string (cid)});
    jog_session_.clear ();
  }
}

void
MicroscopeHub::pointer (const SessionRecord &s, double x_um, double y_um)
{
  node_.notify (id (), "pointer", api::pointer_json (s, x_um, y_um), s.id);
}

bool
MicroscopeHub::request_still (const Principal &by, const SessionRecord &s, StillDone done)
{
  auto sv = session_views_.find (s.id);
  if (sv == session_views_.end ())
    throw Refusal{Reason::kConflict, "this session has no view"};
  // The worker runs commands in order: a view still being built is there by
  // the time it reads this request.
  auto err = view_errors_.find (sv->second);
  if (!online_ || err != view_errors_.end ()) {
    std::string why = err != view_errors_.end () ? err->second
                      : last_error_.empty ()     ? "the microscope is offline"
                                                 : last_error_;
    node_.record (by, id (), "still", "session " + s.id, "refused: " + why);
    throw Refusal{Reason::kUnavailable, "no still: " + node_.shown_to (by, why)};
  }
  int64_t request = next_still_++;
  stills_[request] = std::move (done);
  node_.record (by, id (), "still", "session " + s.id + " (" + s.role + " view)",
                "requested as " + std::to_string (request));
  return send (command::Still{sv->second, request});
}

} // namespace livemicro::orchestrator
