#include "daemon.h"

#include "common/json_fields.h"
#include "common/tokens.h"

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <gst/gst.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace livemicro::orchestrator {

namespace {

std::string
node_to_string (JsonNode *n)
{
  g_autofree char *s = json_to_string (n, FALSE);
  return s;
}

// An event object without its "event" member, as JSON.
std::string
payload_of (JsonObject *event)
{
  g_autoptr (JsonNode) copy = json_node_new (JSON_NODE_OBJECT);
  JsonObject *o = json_object_new ();
  GList *members = json_object_get_members (event);
  for (GList *l = members; l; l = l->next) {
    const char *k = static_cast<const char *> (l->data);
    if (strcmp (k, "event"))
      json_object_set_member (o, k, json_node_copy (json_object_get_member (event, k)));
  }
  g_list_free (members);
  json_node_take_object (copy, o);
  return node_to_string (copy);
}

std::string
prom_label (const std::string &v)
{
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"')
      out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

// Frames from a worker's reader thread find their view here.
struct FrameRouter {
  std::mutex mutex;
  std::map<uint32_t, std::shared_ptr<ViewStream>> views;
};

Daemon::Daemon (Config config, Paths paths)
    : config_ (std::move (config)), paths_ (std::move (paths)), templates_ (paths_.pipelines)
{
}

Daemon::~Daemon ()
{
  stop ();
  g_clear_object (&tls_);
}

std::string
Daemon::render_capture (const MicroscopeConfig &m) const
{
  return Templates::render (templates_.load (m.capture_template),
      {{"uri", Templates::quote (m.uri)},
          {"width", std::to_string (config_.video.width)},
          {"height", std::to_string (config_.video.height)},
          {"framerate", std::to_string (config_.video.framerate)}});
}

std::string
Daemon::render_view (const std::string &profile) const
{
  std::map<std::string, std::string> values = {
      {"profile", profile},
      {"width", std::to_string (config_.video.width)},
      {"height", std::to_string (config_.video.height)},
      {"framerate", std::to_string (config_.video.framerate)},
      {"bitrate_kbps", std::to_string (config_.video.bitrate_kbps)},
      {"keyframe_interval", std::to_string (config_.video.keyframe_interval)},
      {"privacymask_options", config_.profiles_file.empty ()
                                  ? std::string ()
                                  : "profiles-location=" + Templates::quote (config_.profiles_file)},
  };
  values["encoder"] = Templates::render (templates_.load ("encoders/h264"), values);
  return Templates::render (templates_.load ("views/" + profile), values);
}

// Every role's view must be buildable: elements present, properties valid.
// A role whose template fails gets no sessions (503) rather than a view that
// might show what it must not.
void
Daemon::check_templates ()
{
  for (const auto &role : known_roles ()) {
    if (!profiles_.find (role)) {
      template_problems_[role] = "no view profile '" + role + "' in " + profiles_.source;
      g_printerr ("livemicrod: view profile '%s' is unavailable: %s\n", role.c_str (),
          template_problems_[role].c_str ());
      continue;
    }
    try {
      std::string desc = render_view (role);
      GError *err = nullptr;
      GstElement *bin = gst_parse_bin_from_description (desc.c_str (), TRUE, &err);
      if (err) {
        template_problems_[role] = err->message;
        g_error_free (err);
      }
      if (bin)
        gst_object_unref (bin);
    } catch (const TemplateError &e) {
      template_problems_[role] = e.what ();
    }
    if (template_problems_.count (role))
      g_printerr ("livemicrod: view profile '%s' is unavailable: %s\n", role.c_str (),
          template_problems_[role].c_str ());
  }
}

void
Daemon::start ()
{
  // State directory (created 0700) and the store.
  state_dir_ = config_.state_dir;
  if (state_dir_.empty ()) {
    g_autofree char *tmp = g_dir_make_tmp ("livemicrod-XXXXXX", nullptr);
    if (!tmp)
      throw std::runtime_error ("cannot create a temporary state directory");
    state_dir_ = tmp;
    temporary_state_ = true;
  } else if (g_mkdir_with_parents (state_dir_.c_str (), 0700) != 0) {
    throw std::runtime_error ("cannot create state directory '" + state_dir_ + "'");
  }
  g_chmod (state_dir_.c_str (), 0700);  // secrets inside: the daemon's user only
  store_ = std::make_unique<Store> (state_dir_ + "/livemicro.db");

  admin_token_ = config_.admin_token;
  if (admin_token_.empty ())
    if (const char *env = g_getenv ("LIVEMICRO_ADMIN_TOKEN"))
      admin_token_ = env;
  if (admin_token_.empty ()) {
    // Keep it where an operator finds it, readable by the daemon's user only.
    std::string path = state_dir_ + "/admin-token";
    g_autofree char *existing = nullptr;
    if (g_file_get_contents (path.c_str (), &existing, nullptr, nullptr) && *existing) {
      admin_token_ = g_strstrip (existing);
    } else {
      admin_token_ = random_token (32);
      g_file_set_contents_full (path.c_str (), admin_token_.c_str (), -1,
          G_FILE_SET_CONTENTS_CONSISTENT, 0600, nullptr);
    }
  }
  if (admin_token_.size () < 16)
    throw std::runtime_error ("the admin token must have at least 16 characters");

  if (!config_.tls_certificate.empty ()) {
    g_autoptr (GError) error = nullptr;
    tls_ = g_tls_certificate_new_from_files (config_.tls_certificate.c_str (),
        config_.tls_key.c_str (), &error);
    if (!tls_)
      throw std::runtime_error ("TLS certificate '" + config_.tls_certificate + "': " + error->message);
  }

  try {
    profiles_ = config_.profiles_file.empty () ? livemicro::privacy::builtin_profiles ()
                                               : livemicro::privacy::load_profiles_file (config_.profiles_file);
  } catch (const livemicro::privacy::ProfileError &e) {
    throw std::runtime_error (std::string ("view profiles: ") + e.what ());
  }

  rtsp_ = std::make_unique<RtspService> (config_.listen_address, config_.rtsp_port, state_dir_);
  rtsp_->start (tls_);

  check_templates ();

  for (const auto &mc : config_.microscopes) {
    MicroscopeRuntime &m = microscopes_[mc.id];
    m.config = mc;
    // What names the slide never reaches a session in an error text.
    for (const std::string &uri : {mc.uri, mc.camera, mc.stage, mc.focus}) {
      if (uri.empty ())
        continue;
      secrets_.push_back (uri);
      g_autoptr (GUri) parsed = g_uri_parse (uri.c_str (), G_URI_FLAGS_NONE, nullptr);
      std::string path = parsed ? g_uri_get_path (parsed) : uri;
      if (path.size () > 1) {
        secrets_.push_back (path);
        g_autofree char *base = g_path_get_basename (path.c_str ());
        std::string b = base;
        if (b.size () >= 6)
          secrets_.push_back (b);
        std::string stem = b.substr (0, b.rfind ('.'));
        if (stem.size () >= 8 && stem != b)
          secrets_.push_back (stem);
      }
    }
    auto router = std::make_shared<FrameRouter> ();
    m.router = router;
    WorkerLink::Callbacks cb;
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
    std::string id = mc.id;
    cb.event = [this, id] (JsonObject *e) { on_worker_event (microscopes_.at (id), e); };
    cb.started = [this, id] {
      // The capture runs: build the views.  It counts as online once its
      // first state (with the travel limits) arrives.
      MicroscopeRuntime &m = microscopes_.at (id);
      m.offline_devices.clear ();  // the element opened every device
      m.last_error.clear ();
      m.state_json = "null";
      for (auto &kv : m.views)
        send_add_view (m, *kv.second);
    };
    cb.down = [this, id] (const std::string &why) {
      MicroscopeRuntime &m = microscopes_.at (id);
      if (m.online)
        g_printerr ("livemicrod: microscope '%s' media worker %s; restarting\n", id.c_str (), why.c_str ());
      m.online = false;
      m.offline_devices.clear ();
      m.views_confirmed.clear ();
      if (m.last_error.empty ())
        m.last_error = "media worker " + why;
      notify (id, "offline", "{}");
    };
    m.worker = std::make_unique<WorkerLink> (mc.id, paths_.worker, std::move (cb));
    ControlArbiter::Options co;
    co.idle_timeout_us = (int64_t) config_.control.idle_timeout_ms * 1000;
    co.may_control = [this] (const std::string &role) {
      const livemicro::privacy::Profile *p = profiles_.find (role);
      return p && p->may_control;
    };
    uint64_t epoch = g_ascii_strtoull (store_->get_value ("control_epoch:" + mc.id, "0").c_str (), nullptr, 10);
    m.control = std::make_unique<ControlArbiter> (co, epoch, [] { return g_get_monotonic_time (); },
        [] { return random_id (); });
    try {
      m.worker->set_capture (render_capture (mc));
    } catch (const TemplateError &e) {
      throw std::runtime_error ("microscope '" + mc.id + "': " + e.what ());
    }
  }

  // Sessions survive restarts: mount them again.
  for (const SessionRecord &s : store_->sessions ()) {
    if (!microscopes_.count (s.microscope))
      continue;  // its microscope left the configuration
    register_session (s);
  }
  for (auto &kv : microscopes_)
    kv.second.worker->start ();
  // Leases lapse on time, not only when someone asks.
  control_tick_ = g_timeout_add (100, [] (gpointer d) -> gboolean {
    static_cast<Daemon *> (d)->tick ();
    return G_SOURCE_CONTINUE;
  }, this);
}

// Every 100 ms: leases that lapsed pass on (once their new epoch is on
// disk), and audit rows the database refused are written.
void
Daemon::tick ()
{
  flush_pending_audit ();
  for (auto &kv : microscopes_) {
    MicroscopeRuntime &m = kv.second;
    const ControlArbiter before = *m.control;
    m.control->tick ();
    if (!m.control->take_changed ())
      continue;
    const auto &h = m.control->holder ();
    std::string detail = h ? "lapsed; passed to " + h->holder.session + " epoch " + std::to_string (h->epoch)
                           : "lapsed";
    try {
      Principal system;
      system.admin = true;
      AuditRecord row = audit_row (system, kv.first, "control", detail, "ok");
      row.user = "livemicrod";
      row.role = "system";
      durable ({row}, &m);
    } catch (const ApiError &) {
      *m.control = before;  // tried again next tick
      continue;
    }
    control_changed (m);
  }
}

void
Daemon::stop ()
{
  if (control_tick_) {
    g_source_remove (control_tick_);
    control_tick_ = 0;
  }
  for (auto &kv : microscopes_)
    if (kv.second.worker)
      kv.second.worker->stop ();
  for (auto &kv : microscopes_)
    if (kv.second.stats)
      json_node_unref (kv.second.stats);
  microscopes_.clear ();
  rtsp_.reset ();
  store_.reset ();
  if (temporary_state_ && !state_dir_.empty ()) {
    for (const char *f : {"livemicro.db", "livemicro.db-wal", "livemicro.db-shm", "admin-token"})
      g_remove ((state_dir_ + "/" + f).c_str ());
    g_rmdir (state_dir_.c_str ());
    temporary_state_ = false;
  }
}

Principal
Daemon::authenticate (const std::string &token) const
{
  Principal p;
  if (token.empty () || !store_)
    return p;
  if (constant_time_equal (token, admin_token_)) {
    p.admin = true;
    return p;
  }
  p.session = store_->session_by_token_sha256 (sha256_hex (token));
  return p;
}

void
Daemon::send_add_view (MicroscopeRuntime &m, const ViewStream &v)
{
  std::string desc;
  try {
    desc = render_view (v.profile ());
  } catch (const TemplateError &e) {
    m.view_errors[v.id ()] = e.what ();
    return;
  }
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "cmd");
  json_builder_add_string_value (b, "add_view");
  json_builder_set_member_name (b, "view");
  json_builder_add_int_value (b, v.id ());
  json_builder_set_member_name (b, "description");
  json_builder_add_string_value (b, desc.c_str ());
  json_builder_end_object (b);
  g_autoptr (JsonNode) n = json_builder_get_root (b);
  m.worker->command (node_to_string (n));
}

std::shared_ptr<ViewStream>
Daemon::acquire_view (const std::string &microscope, const std::string &profile,
    const std::string &session_id)
{
  MicroscopeRuntime &m = microscopes_.at (microscope);
  const VideoConfig &v = config_.video;
  std::string key = profile + "|" + std::to_string (v.width) + "x" + std::to_string (v.height) +
                    "@" + std::to_string (v.framerate) + "|" + std::to_string (v.bitrate_kbps) + "k";
  auto it = m.views.find (key);
  std::shared_ptr<ViewStream> view;
  if (it != m.views.end ()) {
    view = it->second;
  } else {
    view = std::make_shared<ViewStream> (m.next_view_id++, microscope, profile, key);
    uint32_t vid = view->id ();
    WorkerLink *worker = m.worker.get ();
    view->set_keyframe_request ([worker, vid] {
      // From the RTSP or main thread: hop to the main context for the link.
      auto *args = new std::pair<WorkerLink *, uint32_t> (worker, vid);
      g_main_context_invoke (nullptr, [] (gpointer d) -> gboolean {
        std::unique_ptr<std::pair<WorkerLink *, uint32_t>> a (static_cast<std::pair<WorkerLink *, uint32_t> *> (d));
        a->first->command ("{\"cmd\":\"keyframe\",\"view\":" + std::to_string (a->second) + "}");
        return G_SOURCE_REMOVE;
      }, args);
    });
    m.views[key] = view;
    {
      std::lock_guard<std::mutex> lock (m.router->mutex);
      m.router->views[vid] = view;
    }
    if (template_problems_.count (profile))
      m.view_errors[vid] = template_problems_[profile];
    else if (m.online)
      send_add_view (m, *view);
  }
  m.view_sessions[view->id ()].insert (session_id);
  session_views_[session_id] = {microscope, view->id ()};
  return view;
}

void
Daemon::release_view (const std::string &session_id)
{
  auto sv = session_views_.find (session_id);
  if (sv == session_views_.end ())
    return;
  auto [microscope, vid] = sv->second;
  session_views_.erase (sv);
  auto mit = microscopes_.find (microscope);
  if (mit == microscopes_.end ())
    return;
  MicroscopeRuntime &m = mit->second;
  auto &users = m.view_sessions[vid];
  users.erase (session_id);
  if (!users.empty ())
    return;
  // Last session of this view: the branch and its encoder go away.
  m.view_sessions.erase (vid);
  m.view_errors.erase (vid);
  m.views_confirmed.erase (vid);
  for (auto it = m.views.begin (); it != m.views.end (); ++it)
    if (it->second->id () == vid) {
      m.views.erase (it);
      break;
    }
  {
    std::lock_guard<std::mutex> lock (m.router->mutex);
    m.router->views.erase (vid);
  }
  m.worker->command ("{\"cmd\":\"remove_view\",\"view\":" + std::to_string (vid) + "}");
}

void
Daemon::register_session (const SessionRecord &s)
{
  auto view = acquire_view (s.microscope, s.role, s.id);
  rtsp_->add_session (s, view);
}

Daemon::NewSession
Daemon::create_session (const Principal &by, const std::string &user, const std::string &role,
    const std::string &microscope)
{
  std::string why;
  if (!valid_display_name (user, &why))
    throw ApiError {422, "user " + why};
  if (!is_known_role (role))
    throw ApiError {422, "role '" + role + "' is not one of owner, consultant, trainee, guest"};
  if (!microscopes_.count (microscope))
    throw ApiError {422, "no microscope '" + microscope + "' on this node"};
  if (!by.admin) {
    // An owner invites others to their own microscope; nobody else creates sessions.
    if (by.session->role != "owner")
      throw ApiError {403, "only the admin or the session owner can create sessions"};
    if (by.session->microscope != microscope)
      throw ApiError {403, "an owner can only invite to their own microscope"};
    if (role == "owner")
      throw ApiError {403, "only the admin can create owner sessions"};
  }
  if (!config_.users.empty ()) {
    auto u = std::find_if (config_.users.begin (), config_.users.end (),
        [&] (const UserConfig &c) { return c.name == user; });
    if (u == config_.users.end ())
      throw ApiError {422, "user '" + user + "' is not configured on this node"};
    if (std::find (u->roles.begin (), u->roles.end (), role) == u->roles.end ())
      throw ApiError {422, "user '" + user + "' may not take the role '" + role + "'"};
  }
  if (template_problems_.count (role))
    throw ApiError {503, "the " + role + " view cannot be built on this node: " + template_problems_[role]};

  NewSession n;
  n.token = random_token (32);
  n.record.id = random_id ();
  n.record.user = user;
  n.record.role = role;
  n.record.microscope = microscope;
  n.record.token_sha256 = sha256_hex (n.token);
  n.record.digest_ha1 = digest_ha1 (n.record.id, RtspService::kRealm, n.token);
  n.record.created_unix_us = g_get_real_time ();
  try {
    store_->transaction ([&] {
      store_->insert_session (n.record);
      store_->append_audit (audit_row (by, microscope, "session.start",
          "session " + n.record.id + " for " + user + " as " + role, "ok"));
    });
  } catch (const StoreError &e) {
    g_printerr ("livemicrod: session not created, the state database cannot be written: %s\n", e.what ());
    throw ApiError {503, "the state database cannot be written just now (no session was created; try again)"};
  }
  register_session (n.record);
  return n;
}

void
Daemon::end_session (const Principal &by, const std::string &id)
{
  SessionRecord s = session_visible_to (by, id);
  auto mit = microscopes_.find (s.microscope);
  MicroscopeRuntime *m = mit == microscopes_.end () ? nullptr : &mit->second;
  // Its lease passes on: the new epoch is written with the end.
  std::optional<ControlArbiter> before;
  bool control_moved = false;
  if (m) {
    before = *m->control;
    control_moved = m->control->forget (id);
    control_moved = m->control->take_changed () || control_moved;
  }
  try {
    store_->transaction ([&] {
      store_->end_session (id);
      store_->append_audit (audit_row (by, s.microscope, "session.end", "session " + id, "ok"));
      if (control_moved)
        store_->set_value ("control_epoch:" + s.microscope, std::to_string (m->control->epoch ()));
    });
  } catch (const StoreError &e) {
    if (m)
      *m->control = *before;
    g_printerr ("livemicrod: session not ended, the state database cannot be written: %s\n", e.what ());
    throw ApiError {503, "the state database cannot be written just now (the session was not ended; try again)"};
  }
  // Its players, peers and sockets go now.
  notify (s.microscope, "session_ended", "{\"id\":\"" + id + "\"}");
  rtsp_->remove_session (id);
  release_view (id);
  viewer_stats_.erase (id);
  if (m) {
    m->rate.erase (id);
    if (control_moved)
      control_changed (*m);
  }
}

std::vector<SessionRecord>
Daemon::sessions_visible_to (const Principal &p) const
{
  if (p.admin)
    return store_->sessions ();
  if (p.session->role == "owner")
    return store_->sessions (p.session->microscope);
  return {*p.session};
}

SessionRecord
Daemon::session_visible_to (const Principal &p, const std::string &id) const
{
  auto s = store_->session (id);
  if (!s)
    throw ApiError {404, "no session '" + id + "'"};
  if (p.admin || p.session->id == id ||
      (p.session->role == "owner" && p.session->microscope == s->microscope))
    return *s;
  throw ApiError {403, "this session may not see session '" + id + "'"};
}

std::shared_ptr<ViewStream>
Daemon::view_of_session (const std::string &id) const
{
  auto sv = session_views_.find (id);
  if (sv == session_views_.end ())
    return nullptr;
  const auto &m = microscopes_.at (sv->second.first);
  for (const auto &kv : m.views)
    if (kv.second->id () == sv->second.second)
      return kv.second;
  return nullptr;
}

std::string
Daemon::view_error_of_session (const std::string &id) const
{
  auto sv = session_views_.find (id);
  if (sv == session_views_.end ())
    return "";
  const auto &m = microscopes_.at (sv->second.first);
  auto it = m.view_errors.find (sv->second.second);
  return it == m.view_errors.end () ? "" : it->second;
}

std::string
Daemon::rtsp_url (const SessionRecord &s) const
{
  std::string host = config_.public_host.empty () ? config_.listen_address : config_.public_host;
  return std::string (rtsp_->tls () ? "rtsps" : "rtsp") + "://" + host + ":" +
         std::to_string (rtsp_->port ()) + "/s/" + s.id;
}

std::string
Daemon::viewer_url (const SessionRecord &s, const std::string &token) const
{
  std::string host = config_.public_host.empty () ? config_.listen_address : config_.public_host;
  // The token rides in the fragment: browsers never send it to a server.
  return std::string (tls_ ? "https" : "http") + "://" + host + ":" + std::to_string (http_port_) +
         "/view/" + s.id + "#token=" + token;
}

Daemon::MicroscopeRuntime &
Daemon::runtime_visible_to (const Principal &p, const std::string &id)
{
  return const_cast<MicroscopeRuntime &> (microscope_visible_to (p, id));
}

bool
Daemon::session_live (const std::string &id) const
{
  return session_views_.count (id) > 0;
}

std::string
Daemon::shown_to (const Principal &p, const std::string &text) const
{
  if (p.admin)
    return text;
  std::string out = text;
  for (const std::string &secret : secrets_)
    for (size_t at; !secret.empty () && (at = out.find (secret)) != std::string::npos;)
      out.replace (at, secret.size (), "<slide>");
  // Whatever else looks like a URI or an absolute path.
  std::string clean;
  size_t i = 0;
  auto boundary = [&] (size_t k) {
    return k == 0 || strchr (" \t'\"(:=,[<", out[k - 1]) != nullptr;
  };
  while (i < out.size ()) {
    size_t scheme_end = out.find ("://", i);
    bool uri = false;
    if (boundary (i) && g_ascii_isalpha (out[i]) && scheme_end != std::string::npos) {
      uri = true;
      for (size_t k = i; k < scheme_end; k++)
        uri = uri && (g_ascii_isalnum (out[k]) || out[k] == '+' || out[k] == '-' || out[k] == '.');
    }
    bool path = boundary (i) && (out[i] == '/' || (out[i] == '~' && i + 1 < out.size () && out[i + 1] == '/'));
    if (uri || path) {
      size_t end = i;
      while (end < out.size () && !strchr (" \t'\")\n", out[end]))
        end++;
      while (end > i && strchr (".,:;", out[end - 1]))
        end--;
      clean += uri ? "<uri>" : "<path>";
      i = end;
      continue;
    }
    clean += out[i++];
  }
  return clean;
}

const Daemon::MicroscopeRuntime &
Daemon::microscope_visible_to (const Principal &p, const std::string &id) const
{
  auto it = microscopes_.find (id);
  if (it == microscopes_.end ())
    throw ApiError {404, "no microscope '" + id + "'"};
  if (!p.admin && p.session->microscope != id)
    throw ApiError {403, "this session belongs to microscope '" + p.session->microscope + "'"};
  return it->second;
}

bool
Daemon::command_microscope (const std::string &id, const std::string &json)
{
  auto it = microscopes_.find (id);
  // Offline (a device gone, or the worker down): refuse rather than queue
  // commands that would run whenever the device comes back.
  return it != microscopes_.end () && it->second.online && it->second.worker->command (json);
}

void
Daemon::on_worker_event (MicroscopeRuntime &m, JsonObject *e)
{
  const char *name = string_member (e, "event", "");
  const std::string &id = m.config.id;
  if (!strcmp (name, "state")) {
    m.state_json = payload_of (e);
    if (!m.online && m.offline_devices.empty () && json_object_has_member (e, "limits")) {
      m.online = true;
      notify (id, "online", "{}");
    }
    notify (id, "state", m.state_json);
  } else if (!strcmp (name, "features")) {
    JsonObject *summary = json_object_get_object_member (e, "summary");
    if (summary) {
      g_autoptr (JsonNode) n = json_node_new (JSON_NODE_OBJECT);
      json_node_set_object (n, summary);
      m.features_json = node_to_string (n);
      notify (id, "features", m.features_json);
    }
  } else if (!strcmp (name, "stats")) {
    if (m.stats)
      json_node_unref (m.stats);
    m.stats = json_node_new (JSON_NODE_OBJECT);
    json_node_set_object (m.stats, e);
  } else if (!strcmp (name, "view_added")) {
    uint32_t vid = (uint32_t) json_object_get_int_member_with_default (e, "view", 0);
    m.views_confirmed.insert (vid);
    m.view_errors.erase (vid);
  } else if (!strcmp (name, "view_error")) {
    uint32_t vid = (uint32_t) json_object_get_int_member_with_default (e, "view", 0);
    m.view_errors[vid] = string_member (e, "message", "error");
    m.views_confirmed.erase (vid);
    g_printerr ("livemicrod: microscope '%s' view %u: %s\n", id.c_str (), vid, m.view_errors[vid].c_str ());
  } else if (!strcmp (name, "command")) {
    notify (id, "command", payload_of (e));
  } else if (!strcmp (name, "still")) {
    int64_t request = json_object_get_int_member_with_default (e, "request", 0);
    auto it = stills_.find (request);
    if (it != stills_.end ()) {
      auto done = std::move (it->second);
      stills_.erase (it);
      done (e);
    }
  } else if (!strcmp (name, "warning")) {
    g_printerr ("livemicrod: microscope '%s': %s: %s\n", id.c_str (),
        string_member (e, "source", "?"),
        string_member (e, "message", ""));
  } else if (!strcmp (name, "device")) {
    // A device went away or came back; the worker keeps streaming (a slate
    // while the camera is gone) and the sessions stay.
    std::string device = string_member (e, "device", "");
    std::string problem = string_member (e, "problem", "");
    bool device_online = json_object_get_boolean_member_with_default (e, "online", TRUE);
    if (!device_online)
      m.offline_devices[device] = problem;
    else
      m.offline_devices.erase (device);
    bool online = m.offline_devices.empty () && m.worker->running ();
    std::string reason;
    for (const auto &kv : m.offline_devices)
      reason += (reason.empty () ? "" : "; ") + kv.second;
    if (online != m.online || (!online && reason != m.last_error)) {
      g_printerr ("livemicrod: microscope '%s' is %s%s%s\n", id.c_str (), online ? "online" : "offline",
          online ? "" : ": ", reason.c_str ());
      m.online = online;
      m.last_error = reason;
      g_autoptr (JsonBuilder) b = json_builder_new ();
      json_builder_begin_object (b);
      if (!online) {
        json_builder_set_member_name (b, "reason");
        json_builder_add_string_value (b, reason.c_str ());
      }
      json_builder_end_object (b);
      g_autoptr (JsonNode) n = json_builder_get_root (b);
      notify (id, online ? "online" : "offline", node_to_string (n));
    }
  } else if (!strcmp (name, "error")) {
    m.last_error = string_member (e, "message", "error");
    g_printerr ("livemicrod: microscope '%s': %s\n", id.c_str (), m.last_error.c_str ());
  }
}

void
Daemon::set_viewer_stats (const std::string &session_id, const std::string &json)
{
  viewer_stats_[session_id] = json;
}

std::string
Daemon::viewer_stats (const std::string &session_id) const
{
  auto it = viewer_stats_.find (session_id);
  return it == viewer_stats_.end () ? "null" : it->second;
}

void
Daemon::count_webrtc_viewer (const std::string &profile_key, int delta)
{
  webrtc_viewers_[profile_key] += delta;
}

bool
Daemon::may_see (const Principal &p, const std::string &overlay) const
{
  if (p.admin)
    return true;
  const livemicro::privacy::Profile *profile = profiles_.find (p.session->role);
  return profile && profile->may_draw (overlay);
}

int
Daemon::add_listener (Listener l)
{
  int h = next_listener_++;
  listeners_[h] = std::move (l);
  return h;
}

void
Daemon::remove_listener (int handle)
{
  listeners_.erase (handle);
}

void
Daemon::notify (const std::string &microscope, const std::string &kind, const std::string &json)
{
  // Listeners may remove themselves while being called.
  std::vector<Listener> ls;
  for (auto &kv : listeners_)
    ls.push_back (kv.second);
  for (auto &l : ls)
    l (microscope, kind, json);
}

std::string
Daemon::metrics () const
{
  std::ostringstream o;
  auto head = [&] (const char *name, const char *type, const char *help) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  std::map<std::pair<std::string, std::string>, int> sessions;
  for (const auto &s : store_->sessions ())
    sessions[{s.microscope, s.role}]++;
  head ("livemicro_sessions", "gauge", "Live sessions, by microscope and role.");
  for (const auto &kv : sessions)
    o << "livemicro_sessions{microscope=\"" << prom_label (kv.first.first) << "\",role=\""
      << prom_label (kv.first.second) << "\"} " << kv.second << "\n";

  head ("livemicro_worker_up", "gauge", "1 when the microscope's media worker runs its capture.");
  for (const auto &kv : microscopes_)
    o << "livemicro_worker_up{microscope=\"" << prom_label (kv.first) << "\"} " << (kv.second.online ? 1 : 0) << "\n";
  head ("livemicro_worker_restarts_total", "counter", "Media worker restarts.");
  for (const auto &kv : microscopes_)
    o << "livemicro_worker_restarts_total{microscope=\"" << prom_label (kv.first) << "\"} "
      << kv.second.worker->restarts () << "\n";
  head ("livemicro_view_branches", "gauge", "View branches (distinct profile and encoding) per microscope.");
  for (const auto &kv : microscopes_)
    o << "livemicro_view_branches{microscope=\"" << prom_label (kv.first) << "\"} " << kv.second.views.size () << "\n";
  head ("livemicro_encoders", "gauge", "Running video encoders per microscope (one per built view branch).");
  for (const auto &kv : microscopes_)
    o << "livemicro_encoders{microscope=\"" << prom_label (kv.first) << "\"} "
      << (kv.second.online ? kv.second.views_confirmed.size () : 0) << "\n";

  head ("livemicro_viewers", "gauge", "Viewers receiving a view, by transport.");
  for (const auto &kv : microscopes_)
    for (const auto &v : kv.second.views) {
      std::string labels = "microscope=\"" + prom_label (kv.first) + "\",profile=\"" + prom_label (v.second->profile ()) + "\"";
      auto w = webrtc_viewers_.find (kv.first + "/" + v.second->profile ());
      o << "livemicro_viewers{" << labels << ",transport=\"rtsp\"} " << rtsp_->viewers (v.second->id ()) << "\n";
      o << "livemicro_viewers{" << labels << ",transport=\"webrtc\"} " << (w == webrtc_viewers_.end () ? 0 : w->second) << "\n";
    }

  head ("livemicro_view_frames_total", "counter", "Encoded frames received from the worker per view branch.");
  for (const auto &kv : microscopes_)
    for (const auto &v : kv.second.views)
      o << "livemicro_view_frames_total{microscope=\"" << prom_label (kv.first) << "\",profile=\""
        << prom_label (v.second->profile ()) << "\"} " << v.second->frames () << "\n";
  // fps and dropped frames as the worker measures them.
  head ("livemicro_view_fps", "gauge", "Frames per second leaving each view branch's encoder.");
  std::ostringstream dropped;
  for (const auto &kv : microscopes_) {
    if (!kv.second.stats)
      continue;
    JsonObject *st = json_node_get_object (kv.second.stats);
    JsonArray *views = json_object_get_array_member (st, "views");
    for (guint i = 0; views && i < json_array_get_length (views); i++) {
      JsonObject *v = json_array_get_object_element (views, i);
      uint32_t vid = (uint32_t) json_object_get_int_member_with_default (v, "view", 0);
      std::string profile;
      for (const auto &vv : kv.second.views)
        if (vv.second->id () == vid)
          profile = vv.second->profile ();
      if (profile.empty ())
        continue;
      std::string labels = "microscope=\"" + prom_label (kv.first) + "\",profile=\"" + prom_label (profile) + "\"";
      o << "livemicro_view_fps{" << labels << "} " << json_object_get_double_member_with_default (v, "fps", 0) << "\n";
      dropped << "livemicro_view_dropped_frames_total{" << labels << "} "
              << json_object_get_int_member_with_default (v, "dropped", 0) << "\n";
    }
  }
  head ("livemicro_view_dropped_frames_total", "counter", "Frames a view branch dropped at its input (slow encoder).");
  o << dropped.str ();
  head ("livemicro_analysis_ms", "gauge", "Mean analysis time per analysed frame (tumorfeatures).");
  for (const auto &kv : microscopes_)
    if (kv.second.stats)
      o << "livemicro_analysis_ms{microscope=\"" << prom_label (kv.first) << "\"} "
        << json_object_get_double_member_with_default (json_node_get_object (kv.second.stats), "analysis_ms_mean", 0) << "\n";
  return o.str ();
}

}  // namespace livemicro::orchestrator
