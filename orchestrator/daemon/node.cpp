#include "node.h"

#include "api_json.h"
#include "common/tokens.h"

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <gst/gst.h>

#include <algorithm>
#include <tuple>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace livemicro::orchestrator {

namespace {

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

} // namespace

Node::Node (Config config, Paths paths)
    : config_ (std::move (config)), paths_ (std::move (paths)), templates_ (paths_.pipelines)
{}

Node::~Node ()
{
  stop ();
  g_clear_object (&tls_);
}

std::string
Node::render_capture (const MicroscopeConfig &m) const
{
  return Templates::render (templates_.load (m.capture_template),
                            {{"uri", Templates::quote (m.uri)},
                             {"width", std::to_string (config_.video.width)},
                             {"height", std::to_string (config_.video.height)},
                             {"framerate", std::to_string (config_.video.framerate)}});
}

std::string
Node::render_view (const std::string &profile) const
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

std::string
Node::template_problem (const std::string &profile) const
{
  auto it = template_problems_.find (profile);
  return it == template_problems_.end () ? "" : it->second;
}

// Every role's view must be buildable: elements present, properties valid.
// A role whose template fails gets no sessions (503) rather than a view that
// might show what it must not.
void
Node::check_templates ()
{
  for (const auto &role : known_roles ()) {
    if (!profiles_.find (role)) {
      template_problems_[role] = "no view profile '" + role + "' in " + profiles_.source;
      g_warning ("view profile '%s' is unavailable: %s", role.c_str (), template_problems_[role].c_str ());
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
      g_warning ("view profile '%s' is unavailable: %s", role.c_str (), template_problems_[role].c_str ());
  }
}

namespace {

// The state directory (created 0700: secrets inside, the daemon's user
// only); a temporary one when the configuration names none.
std::string
open_state_dir (const std::string &configured, bool &temporary)
{
  std::string dir = configured;
  if (dir.empty ()) {
    g_autofree char *tmp = g_dir_make_tmp ("livemicrod-XXXXXX", nullptr);
    if (!tmp)
      throw std::runtime_error ("cannot create a temporary state directory");
    dir = tmp;
    temporary = true;
  } else if (g_mkdir_with_parents (dir.c_str (), 0700) != 0) {
    throw std::runtime_error ("cannot create state directory '" + dir + "'");
  }
  g_chmod (dir.c_str (), 0700);
  return dir;
}

// The admin token: configured, else LIVEMICRO_ADMIN_TOKEN, else the one kept
// in the state directory (made on first start, readable by the daemon's
// user only, where an operator finds it).
std::string
admin_token_of (const std::string &configured, const std::string &state_dir)
{
  std::string token = configured;
  if (token.empty ())
    if (const char *env = g_getenv ("LIVEMICRO_ADMIN_TOKEN"))
      token = env;
  if (token.empty ()) {
    std::string path = state_dir + "/admin-token";
    g_autofree char *existing = nullptr;
    if (g_file_get_contents (path.c_str (), &existing, nullptr, nullptr) && *existing) {
      token = g_strstrip (existing);
    } else {
      token = random_token (32);
      g_file_set_contents_full (path.c_str (), token.c_str (), -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600,
                                nullptr);
    }
  }
  if (token.size () < 16)
    throw std::runtime_error ("the admin token must have at least 16 characters");
  return token;
}

// What names the slide (URIs, paths, file names and stems) never reaches a
// session in an error text.
void
add_slide_secrets (const MicroscopeConfig &mc, std::vector<std::string> &secrets)
{
  for (const std::string &uri : {mc.uri, mc.camera, mc.stage, mc.focus}) {
    if (uri.empty ())
      continue;
    secrets.push_back (uri);
    g_autoptr (GUri) parsed = g_uri_parse (uri.c_str (), G_URI_FLAGS_NONE, nullptr);
    std::string path = parsed ? g_uri_get_path (parsed) : uri;
    if (path.size () > 1) {
      secrets.push_back (path);
      g_autofree char *base = g_path_get_basename (path.c_str ());
      std::string b = base;
      if (b.size () >= 6)
        secrets.push_back (b);
      std::string stem = b.substr (0, b.rfind ('.'));
      if (stem.size () >= 8 && stem != b)
        secrets.push_back (stem);
    }
  }
}

} // namespace

void
Node::start ()
{
  state_dir_ = open_state_dir (config_.state_dir, temporary_state_);
  store_ = std::make_unique<Store> (state_dir_ + "/livemicro.db");
  admin_token_ = admin_token_of (config_.admin_token, state_dir_);

  if (!config_.tls_certificate.empty ()) {
    g_autoptr (GError) error = nullptr;
    tls_ = g_tls_certificate_new_from_files (config_.tls_certificate.c_str (), config_.tls_key.c_str (),
                                             &error);
    if (!tls_)
      throw std::runtime_error ("TLS certificate '" + config_.tls_certificate + "': " + error->message);
  }

  try {
    profiles_ = config_.profiles_file.empty ()
                    ? livemicro::privacy::builtin_profiles ()
                    : livemicro::privacy::load_profiles_file (config_.profiles_file);
  } catch (const livemicro::privacy::ProfileError &e) {
    throw std::runtime_error (std::string ("view profiles: ") + e.what ());
  }

  rtsp_ = std::make_unique<RtspService> (config_.listen_address, config_.rtsp_port, state_dir_,
                                         config_.rtsp.client_threads);
  rtsp_->start (tls_);

  check_templates ();

  for (const auto &mc : config_.microscopes) {
    add_slide_secrets (mc, secrets_);
    uint64_t epoch
        = g_ascii_strtoull (store_->get_value ("control_epoch:" + mc.id, "0").c_str (), nullptr, 10);
    hubs_[mc.id] = std::make_unique<MicroscopeHub> (*this, mc, epoch);
  }

  // Sessions survive restarts: mount them again.
  for (const SessionRecord &s : store_->sessions ()) {
    if (!hubs_.count (s.microscope))
      continue; // its microscope left the configuration
    register_session (s);
  }
  for (auto &kv : hubs_) {
    try {
      kv.second->start ();
    } catch (const TemplateError &e) {
      throw std::runtime_error ("microscope '" + kv.first + "': " + e.what ());
    }
  }
  // Leases lapse on time, not only when someone asks.
  tick_source_ = g_timeout_add (
      100,
      [] (gpointer d) -> gboolean {
        static_cast<Node *> (d)->tick ();
        return G_SOURCE_CONTINUE;
      },
      this);
}

// Every 100 ms: leases that lapsed pass on (once their new epoch is on
// disk), and audit rows the database refused are written.
void
Node::tick ()
{
  flush_pending_audit ();
  for (auto &kv : hubs_) {
    try {
      adopt_cluster_control (*kv.second);
    } catch (const Refusal &) {
      continue; // etcd unreachable: tried again next tick
    }
    kv.second->tick ();
  }
  if (cluster_ && g_get_monotonic_time () - load_reported_us_ > G_USEC_PER_SEC)
    report_load ();
  if (cluster_ && !annotations_moved_ && cluster_->view ().joined)
    move_annotations_to_cluster ();
  if (cluster_views_ && g_get_monotonic_time () - views_synced_us_ > G_USEC_PER_SEC / 2) {
    views_synced_us_ = g_get_monotonic_time ();
    cluster_views_->sync ();
  }
}

// ---- the edge cloud ---------------------------------------------------------------

namespace {

// The machine's busy and total jiffies, from /proc/stat's first line.
bool
read_cpu (uint64_t &busy, uint64_t &total)
{
  g_autofree char *text = nullptr;
  if (!g_file_get_contents ("/proc/stat", &text, nullptr, nullptr))
    return false;
  unsigned long long v[8] = {};
  if (sscanf (text, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
              &v[6], &v[7])
      != 8)
    return false;
  total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
  busy = total - v[3] - v[4]; // all but idle and iowait
  return true;
}

} // namespace

void
Node::join_cluster (int wait_ms)
{
  if (!config_.cluster.enabled () || cluster_)
    return;
  livemicro::cluster::ClusterConfig c = config_.cluster;
  if (c.node.empty ())
    c.node = g_get_host_name ();
  for (const UserConfig &u : config_.users)
    c.users[u.name] = u.roles;
  const std::string host = config_.public_host.empty () ? config_.listen_address : config_.public_host;
  c.http_url = std::string (https () ? "https" : "http") + "://" + host + ":" + std::to_string (http_port_);
  c.rtsp_url
      = std::string (rtsp_->tls () ? "rtsps" : "rtsp") + "://" + host + ":" + std::to_string (rtsp_->port ());
  std::vector<std::string> homed;
  for (const auto &[id, hub] : hubs_)
    homed.push_back (id);
  cluster_ = std::make_unique<livemicro::cluster::ClusterMember> (c, homed);
  // Views between nodes: SRT with AES-256, its passphrase derived from the
  // admin token every node of an edge cloud shares (docs/edge-cloud.md).
  relay::SrtLinkSettings link;
  link.passphrase = "lm-" + sha256_hex ("livemicro view relay\n" + admin_token_).substr (0, 48);
  cluster_views_ = std::make_unique<ClusterViews> (*this, link);
  report_load ();
  cluster_->start ();
  if (!cluster_->wait_joined (wait_ms))
    g_warning ("edge cloud: not joined yet (%s); going on trying", cluster_->view ().error.c_str ());
}

void
Node::report_load ()
{
  load_reported_us_ = g_get_monotonic_time ();
  livemicro::cluster::NodeLoad load;
  uint64_t busy = 0, total = 0;
  if (read_cpu (busy, total) && total > cpu_total_ && cpu_total_)
    load.cpu = double (busy - cpu_busy_) / double (total - cpu_total_);
  cpu_busy_ = busy;
  cpu_total_ = total;
  for (const auto &[id, hub] : hubs_) {
    load.encoders += (int)hub->encoders ();
    for (const auto &v : hub->views ())
      load.viewers += rtsp_->viewers (v->id ());
  }
  for (const auto &[key, n] : webrtc_viewers_)
    load.viewers += n;
  load.sessions = (int)store_->sessions ().size ();
  cluster_->set_load (load);
}

void
Node::forget_cluster_session (const SessionRecord &s)
{
  try {
    cluster_->remove_session (s);
  } catch (const livemicro::cluster::EtcdError &e) {
    g_warning ("edge cloud: session %s stays in etcd: %s", s.id.c_str (), e.what ());
  }
}

std::string
Node::place_view (const std::string &site) const
{
  const std::string &me = cluster_->config ().node;
  std::map<std::string, int> placed; // sessions whose view each node serves
  for (const auto &s : cluster_->sessions ())
    placed[s.serving_node]++;
  // The least loaded node of the site: by its stated viewer capacity, else by
  // CPU in steps of 10 % (finer differences are noise); then by the sessions
  // placed on it; then this node.
  auto load_of = [&] (const livemicro::cluster::NodeInfo &n) {
    const double busy = n.capacity_viewers > 0 ? double (n.load.viewers) / n.capacity_viewers
                                               : std::floor (n.load.cpu * 10) / 10;
    return std::make_tuple (busy, placed[n.name], n.name == me ? 0 : 1);
  };
  const livemicro::cluster::NodeInfo *best = nullptr;
  const auto view = cluster_->view ();
  for (const auto &n : view.nodes)
    if (n.site == site && (!best || load_of (n) < load_of (*best)))
      best = &n;
  return best ? best->name : me;
}

std::optional<livemicro::cluster::NodeInfo>
Node::serving_elsewhere (const SessionRecord &s) const
{
  if (!cluster_)
    return std::nullopt;
  std::optional<livemicro::cluster::ClusterSession> cs;
  try {
    cs = cluster_->session (s.id);
  } catch (const livemicro::cluster::EtcdError &) {
  }
  if (!cs || cs->serving_node.empty () || cs->serving_node == cluster_->config ().node)
    return std::nullopt;
  return cluster_->node (cs->serving_node);
}

std::optional<std::string>
Node::home_elsewhere (const std::string &microscope) const
{
  if (!cluster_ || hubs_.count (microscope))
    return std::nullopt;
  const std::string &me = cluster_->config ().node;
  auto home = cluster_->home_of (microscope);
  auto n = home && *home != me ? cluster_->node (*home) : std::nullopt;
  if (n && !n->http_url.empty ())
    return n->http_url;
  auto last = cluster_->last_home_of (microscope);
  if (!home && last && *last != me)
    throw Refusal{Reason::kUnavailable,
                  "microscope '" + microscope + "' is offline: its home node '" + *last
                      + "' is not in the edge cloud just now (its sessions, annotations "
                        "and leases are kept; it comes back with the node)"};
  return std::nullopt;
}

void
Node::adopt_session (const std::string &session_id)
{
  if (!cluster_ || !cluster_views_)
    return;
  try {
    if (auto s = cluster_->session (session_id))
      cluster_->remember (*s);
  } catch (const livemicro::cluster::EtcdError &e) {
    g_message ("edge cloud: session %s comes with the next read: %s", session_id.c_str (), e.what ());
  }
  cluster_views_->sync ();
}

void
Node::hold_view (const std::string &session_id, int delta)
{
  if (cluster_views_)
    cluster_views_->hold (session_id, delta);
}

std::vector<livemicro::cluster::NodeInfo>
Node::failover_nodes () const
{
  if (!cluster_)
    return {};
  auto nodes = cluster_->view ().nodes;
  const auto &me = cluster_->config ();
  auto rank = [&] (const livemicro::cluster::NodeInfo &n) {
    return n.name == me.node ? 0 : n.site == me.site ? 1 : 2;
  };
  std::stable_sort (nodes.begin (), nodes.end (),
                    [&] (const auto &a, const auto &b) { return rank (a) < rank (b); });
  return nodes;
}

std::optional<std::string>
Node::home_url_of (const std::string &microscope) const
{
  if (!cluster_)
    return std::nullopt;
  auto home = cluster_->home_of (microscope);
  auto n = home ? cluster_->node (*home) : std::nullopt;
  if (!n || n->http_url.empty ())
    return std::nullopt;
  return n->http_url;
}

std::optional<std::string>
Node::microscope_of_cluster_session (const std::string &session_id) const
{
  if (!cluster_ || store_->session (session_id))
    return std::nullopt;
  try {
    auto s = cluster_->session (session_id);
    if (s)
      return s->record.microscope;
  } catch (const livemicro::cluster::EtcdError &e) {
    g_warning ("edge cloud: cannot look session %s up: %s", session_id.c_str (), e.what ());
  }
  return std::nullopt;
}

namespace {

Refusal
not_held (const std::string &microscope)
{
  return {Reason::kUnavailable, "this node does not hold microscope '" + microscope
                                    + "' in the edge cloud just now (not joined, lease lapsed or "
                                      "cut off from etcd): nothing was done"};
}

} // namespace

void
Node::fenced (const std::string &microscope, const std::vector<AuditRecord> &rows,
              const ControlState *control)
{
  if (!cluster_)
    return;
  auto fence = cluster_->fence (microscope);
  if (!fence)
    throw not_held (microscope);
  try {
    if (!cluster_->commit_fenced (*fence, rows, control))
      throw Refusal{Reason::kUnavailable, "this node's ownership of microscope '" + microscope
                                              + "' lapsed (fencing token " + std::to_string (fence->revision)
                                              + " is stale): nothing was done"};
  } catch (const livemicro::cluster::EtcdError &e) {
    g_warning ("edge cloud: fenced write refused: %s", e.what ());
    throw Refusal{Reason::kUnavailable,
                  "the edge cloud's store cannot be reached just now: nothing was done"};
  }
}

void
Node::adopt_cluster_control (MicroscopeHub &hub)
{
  if (!cluster_)
    return;
  auto fence = cluster_->fence (hub.id ());
  if (!fence)
    throw not_held (hub.id ());
  if (fence->revision == hub.control_revision ())
    return;
  try {
    std::optional<ControlState> kept = cluster_->control (hub.id ());
    // Sessions that ended while it was kept drive and wait no more.
    std::set<std::string> ended;
    if (kept) {
      std::vector<Participant> all = kept->queue;
      if (kept->holder)
        all.push_back (kept->holder->holder);
      for (const Participant &p : all)
        if (!store_->session (p.session) && !cluster_->session (p.session))
          ended.insert (p.session);
    }
    // What this node knows is written when etcd has nothing newer.
    if (!hub.adopt_control (kept, fence->revision, ended)) {
      ControlState mine = hub.control ().state ();
      if (!cluster_->commit_fenced (*fence, {}, &mine))
        return; // lost the microscope meanwhile: the next holder adopts it
    }
  } catch (const livemicro::cluster::EtcdError &e) {
    g_warning ("edge cloud: the control of microscope '%s' cannot be read: %s", hub.id ().c_str (),
               e.what ());
    throw Refusal{Reason::kUnavailable,
                  "the edge cloud's store cannot be reached just now: nothing was done"};
  }
  g_message ("edge cloud: microscope '%s': control adopted under fencing token %" G_GINT64_FORMAT,
             hub.id ().c_str (), fence->revision);
}

void
Node::stop ()
{
  if (tick_source_) {
    g_source_remove (tick_source_);
    tick_source_ = 0;
  }
  cluster_views_.reset ();
  cluster_.reset (); // leaves the edge cloud first: others see it gone at once
  stop_all_recordings ();
  for (auto &kv : hubs_)
    kv.second->stop ();
  hubs_.clear ();
  rtsp_.reset ();
  store_.reset ();
  if (temporary_state_ && !state_dir_.empty ()) {
    for (const char *f : {"livemicro.db", "livemicro.db-wal", "livemicro.db-shm", "admin-token"})
      g_remove ((state_dir_ + "/" + f).c_str ());
    g_rmdir (state_dir_.c_str ());
    temporary_state_ = false;
  }
}

// Who may join, as what: the edge cloud's users when it has any (every
// node's configured users, kept in etcd), else this node's configuration;
// none listed anywhere: anyone.
void
Node::check_user (const std::string &user, const std::string &role) const
{
  std::map<std::string, std::vector<std::string>> users;
  if (cluster_)
    users = cluster_->users ();
  const char *where = "this edge cloud";
  if (users.empty ()) {
    for (const UserConfig &u : config_.users)
      users[u.name] = u.roles;
    where = "this node";
  }
  if (users.empty ())
    return;
  auto u = users.find (user);
  if (u == users.end ())
    throw Refusal{Reason::kInvalid, "user '" + user + "' is not configured on " + where};
  if (std::find (u->second.begin (), u->second.end (), role) == u->second.end ())
    throw Refusal{Reason::kInvalid, "user '" + user + "' may not take the role '" + role + "'"};
}

Principal
Node::authenticate (const std::string &token) const
{
  Principal p;
  if (token.empty () || !store_)
    return p;
  if (constant_time_equal (token, admin_token_)) {
    p.admin = true;
    return p;
  }
  const std::string hash = sha256_hex (token);
  p.session = store_->session_by_token_sha256 (hash);
  if (!p.session && cluster_) {
    // A session of another node of the edge cloud (its requests about its
    // microscope are forwarded to the home node; see HttpApi::route).
    try {
      p.session = cluster_->session_by_token_sha256 (hash);
    } catch (const livemicro::cluster::EtcdError &e) {
      g_warning ("edge cloud: cannot look a token up: %s", e.what ());
    }
  }
  return p;
}

Node::NewSession
Node::create_session (const Principal &by, const std::string &user, const std::string &role,
                      const std::string &microscope, const std::string &viewer_site)
{
  std::string why;
  if (!valid_display_name (user, &why))
    throw Refusal{Reason::kInvalid, "user " + why};
  if (!is_known_role (role))
    throw Refusal{Reason::kInvalid, "role '" + role + "' is not one of owner, consultant, trainee, guest"};
  if (!hubs_.count (microscope))
    throw Refusal{Reason::kInvalid, "no microscope '" + microscope + "' on this node"};
  if (!by.admin) {
    // An owner invites others to their own microscope; nobody else creates sessions.
    if (by.session->role != "owner")
      throw Refusal{Reason::kForbidden, "only the admin or the session owner can create sessions"};
    if (by.session->microscope != microscope)
      throw Refusal{Reason::kForbidden, "an owner can only invite to their own microscope"};
    if (role == "owner")
      throw Refusal{Reason::kForbidden, "only the admin can create owner sessions"};
  }
  check_user (user, role);
  if (template_problems_.count (role))
    throw Refusal{Reason::kUnavailable,
                  "the " + role + " view cannot be built on this node: " + template_problems_[role]};

  NewSession n;
  n.token = random_token (32);
  n.record.id = random_id ();
  n.record.user = user;
  n.record.role = role;
  n.record.microscope = microscope;
  n.record.token_sha256 = sha256_hex (n.token);
  n.record.digest_ha1 = digest_ha1 (n.record.id, RtspService::kRealm, n.token);
  n.record.created_unix_us = g_get_real_time ();
  if (cluster_) {
    // Known to the whole edge cloud before it is answered: any node
    // authenticates it.
    try {
      const std::string site = viewer_site.empty () ? cluster_->config ().site : viewer_site;
      cluster_->put_session (n.record, place_view (site), site);
    } catch (const livemicro::cluster::EtcdError &e) {
      g_warning ("session not created, the edge cloud's store refused: %s", e.what ());
      throw Refusal{Reason::kUnavailable,
                    "the edge cloud's store cannot be reached just now (no session was created; try again)"};
    }
  }
  try {
    store_->transaction ([&] {
      store_->insert_session (n.record);
      store_->append_audit (audit_row (by, microscope, "session.start",
                                       "session " + n.record.id + " for " + user + " as " + role, "ok"));
    });
  } catch (const StoreError &e) {
    g_warning ("session not created, the state database cannot be written: %s", e.what ());
    forget_cluster_session (n.record);
    throw Refusal{Reason::kUnavailable,
                  "the state database cannot be written just now (no session was created; try again)"};
  }
  register_session (n.record);
  if (cluster_views_)
    cluster_views_->sync (); // a view served elsewhere is relayed from now on
  return n;
}

void
Node::end_session (const Principal &by, const std::string &id)
{
  SessionRecord s = session_visible_to (by, id);
  auto hit = hubs_.find (s.microscope);
  MicroscopeHub *hub = hit == hubs_.end () ? nullptr : hit->second.get ();
  // No node of the edge cloud accepts its token any more, first.
  if (cluster_) {
    try {
      cluster_->remove_session (s);
    } catch (const livemicro::cluster::EtcdError &e) {
      g_warning ("session not ended, the edge cloud's store refused: %s", e.what ());
      throw Refusal{
          Reason::kUnavailable,
          "the edge cloud's store cannot be reached just now (the session was not ended; try again)"};
    }
  }
  // Its lease passes on: the new epoch is written with the end.
  std::optional<MicroscopeHub::Forgetting> forgetting;
  if (hub)
    forgetting = hub->forget (id);
  if (cluster_ && forgetting && forgetting->control_moved) {
    // Best effort: a node adopting the control later drops ended sessions.
    const ControlState control = hub->control ().state ();
    try {
      fenced (s.microscope, {}, &control);
    } catch (const Refusal &e) {
      g_warning ("edge cloud: the control of '%s' after session %s ended is not in etcd yet: %s",
                 s.microscope.c_str (), id.c_str (), e.message.c_str ());
    }
  }
  try {
    store_->transaction ([&] {
      store_->end_session (id);
      store_->append_audit (audit_row (by, s.microscope, "session.end", "session " + id, "ok"));
      if (forgetting && forgetting->control_moved)
        store_->set_value ("control_epoch:" + s.microscope, std::to_string (hub->control ().epoch ()));
    });
  } catch (const StoreError &e) {
    if (hub)
      hub->undo (*forgetting);
    if (cluster_) {
      try {
        cluster_->put_session (s, ""); // it goes on (served here): valid everywhere again
      } catch (const livemicro::cluster::EtcdError &) {
      }
    }
    g_warning ("session not ended, the state database cannot be written: %s", e.what ());
    throw Refusal{Reason::kUnavailable,
                  "the state database cannot be written just now (the session was not ended; try again)"};
  }
  // Its players, peers and sockets go now.
  notify (s.microscope, "session_ended", api::session_ended_json (id), id);
  rtsp_->remove_session (id);
  viewer_stats_.erase (id);
  if (recordings_.count (id))
    stop_recording_of (by, s, "the session ended", nullptr);
  if (hub)
    hub->ended (id, *forgetting);
}

std::vector<SessionRecord>
Node::sessions_visible_to (const Principal &p) const
{
  if (p.admin)
    return store_->sessions ();
  if (p.session->role == "owner")
    return store_->sessions (p.session->microscope);
  return {*p.session};
}

SessionRecord
Node::session_visible_to (const Principal &p, const std::string &id) const
{
  auto s = store_->session (id);
  if (!s)
    throw Refusal{Reason::kNotFound, "no session '" + id + "'"};
  if (p.admin || p.session->id == id
      || (p.session->role == "owner" && p.session->microscope == s->microscope))
    return *s;
  throw Refusal{Reason::kForbidden, "this session may not see session '" + id + "'"};
}

bool
Node::session_live (const std::string &id) const
{
  for (const auto &kv : hubs_)
    if (kv.second->view_of (id))
      return true;
  return false;
}

std::shared_ptr<ViewStream>
Node::view_of_session (const SessionRecord &s) const
{
  auto it = hubs_.find (s.microscope);
  if (it == hubs_.end ())
    return cluster_views_ ? cluster_views_->view_of_session (s.id) : nullptr;
  return it->second->view_of (s.id);
}

std::string
Node::view_error_of_session (const SessionRecord &s) const
{
  auto it = hubs_.find (s.microscope);
  return it == hubs_.end () ? "" : it->second->view_error_of (s.id);
}

void
Node::register_session (const SessionRecord &s)
{
  MicroscopeHub &hub = *hubs_.at (s.microscope);
  auto view = hub.acquire_view (s.role, s.id);
  const std::string &scope = hub.config ().name.empty () ? hub.id () : hub.config ().name;
  rtsp_->add_session (s, view, "LiveMicro " + scope + " \u2014 " + s.role + " view");
}

std::string
Node::rtsp_url (const SessionRecord &s) const
{
  if (auto serving = serving_elsewhere (s))
    return serving->rtsp_url + "/s/" + s.id;
  std::string host = config_.public_host.empty () ? config_.listen_address : config_.public_host;
  return std::string (rtsp_->tls () ? "rtsps" : "rtsp") + "://" + host + ":" + std::to_string (rtsp_->port ())
         + "/s/" + s.id;
}

std::string
Node::viewer_url (const SessionRecord &s, const std::string &token) const
{
  std::string host = config_.public_host.empty () ? config_.listen_address : config_.public_host;
  // The token rides in the fragment: browsers never send it to a server.
  if (auto serving = serving_elsewhere (s))
    return serving->http_url + "/view/" + s.id + "#token=" + token;
  return std::string (tls_ ? "https" : "http") + "://" + host + ":" + std::to_string (http_port_) + "/view/"
         + s.id + "#token=" + token;
}

MicroscopeHub &
Node::hub_visible_to (const Principal &p, const std::string &id) const
{
  auto it = hubs_.find (id);
  if (it == hubs_.end ())
    throw Refusal{Reason::kNotFound, "no microscope '" + id + "'"};
  if (!p.admin && p.session->microscope != id)
    throw Refusal{Reason::kForbidden, "this session belongs to microscope '" + p.session->microscope + "'"};
  return *it->second;
}

std::string
Node::redacted (const std::string &text) const
{
  std::string out = text;
  for (const std::string &secret : secrets_)
    for (size_t at; !secret.empty () && (at = out.find (secret)) != std::string::npos;)
      out.replace (at, secret.size (), "<slide>");
  // Whatever else looks like a URI or an absolute path.
  std::string clean;
  size_t i = 0;
  auto boundary = [&] (size_t k) { return k == 0 || strchr (" \t'\"(:=,[<", out[k - 1]) != nullptr; };
  while (i < out.size ()) {
    size_t scheme_end = out.find ("://", i);
    bool uri = false;
    if (boundary (i) && g_ascii_isalpha (out[i]) && scheme_end != std::string::npos) {
      uri = true;
      for (size_t k = i; k < scheme_end; k++)
        uri = uri && (g_ascii_isalnum (out[k]) || out[k] == '+' || out[k] == '-' || out[k] == '.');
    }
    bool path
        = boundary (i) && (out[i] == '/' || (out[i] == '~' && i + 1 < out.size () && out[i + 1] == '/'));
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

void
Node::set_viewer_stats (const std::string &session_id, const std::string &json)
{
  viewer_stats_[session_id] = json;
}

std::string
Node::viewer_stats (const std::string &session_id) const
{
  auto it = viewer_stats_.find (session_id);
  return it == viewer_stats_.end () ? "null" : it->second;
}

void
Node::count_webrtc_viewer (const std::string &profile_key, int delta)
{
  webrtc_viewers_[profile_key] += delta;
}

bool
Node::may_see (const Principal &p, const std::string &overlay) const
{
  if (p.admin)
    return true;
  const livemicro::privacy::Profile *profile = profiles_.find (p.session->role);
  return profile && profile->may_draw (overlay);
}

int
Node::add_listener (Listener l)
{
  int h = next_listener_++;
  listeners_[h] = std::move (l);
  return h;
}

void
Node::remove_listener (int handle)
{
  listeners_.erase (handle);
}

void
Node::notify (const std::string &microscope, const std::string &kind, const std::string &json,
              const std::string &session)
{
  // Listeners may remove themselves while being called.
  std::vector<Listener> ls;
  for (auto &kv : listeners_)
    ls.push_back (kv.second);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  api::add_string (b, "type", kind);
  api::add_json (b, "data", json);
  json_builder_end_object (b);
  const Event e{microscope, kind, json, session, api::to_string (b)};
  for (auto &l : ls)
    l (e);
}

// One flat list of Prometheus metric families, in the order /metrics shows
// them: long, and clearest as one list.
std::string
Node::metrics () const
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
  for (const auto &[id, hub] : hubs_)
    o << "livemicro_worker_up{microscope=\"" << prom_label (id) << "\"} " << (hub->online () ? 1 : 0) << "\n";
  head ("livemicro_worker_restarts_total", "counter", "Media worker restarts.");
  for (const auto &[id, hub] : hubs_)
    o << "livemicro_worker_restarts_total{microscope=\"" << prom_label (id) << "\"} "
      << hub->worker_restarts () << "\n";
  head ("livemicro_view_branches", "gauge", "View branches (distinct profile and encoding) per microscope.");
  for (const auto &[id, hub] : hubs_)
    o << "livemicro_view_branches{microscope=\"" << prom_label (id) << "\"} " << hub->view_branches ()
      << "\n";
  head ("livemicro_encoders", "gauge", "Running video encoders per microscope (one per built view branch).");
  for (const auto &[id, hub] : hubs_)
    o << "livemicro_encoders{microscope=\"" << prom_label (id) << "\"} " << hub->encoders () << "\n";

  auto labels_of = [] (const std::string &microscope, const std::string &profile) {
    return "microscope=\"" + prom_label (microscope) + "\",profile=\"" + prom_label (profile) + "\"";
  };
  head ("livemicro_viewers", "gauge", "Viewers receiving a view here (relayed or not), by transport.");
  std::vector<std::shared_ptr<ViewStream>> views;
  for (const auto &[id, hub] : hubs_)
    for (const auto &v : hub->views ())
      views.push_back (v);
  if (cluster_views_)
    for (const auto &v : cluster_views_->relayed_views ())
      views.push_back (v);
  for (const auto &v : views) {
    auto w = webrtc_viewers_.find (v->microscope () + "/" + v->profile ());
    o << "livemicro_viewers{" << labels_of (v->microscope (), v->profile ()) << ",transport=\"rtsp\"} "
      << rtsp_->viewers (v->id ()) << "\n";
    o << "livemicro_viewers{" << labels_of (v->microscope (), v->profile ()) << ",transport=\"webrtc\"} "
      << (w == webrtc_viewers_.end () ? 0 : w->second) << "\n";
  }

  head ("livemicro_view_frames_total", "counter", "Encoded frames received from the worker per view branch.");
  for (const auto &[id, hub] : hubs_)
    for (const auto &v : hub->views ())
      o << "livemicro_view_frames_total{" << labels_of (id, v->profile ()) << "} " << v->frames () << "\n";
  head ("livemicro_worker_hop_ms", "summary",
        "Worker to daemon hop of each view's access units over the last 600 frames, ms, by part: socket (the "
        "worker's encoder to the daemon's reader), daemon (the reader to the RTSP payloader), total.");
  for (const auto &[id, hub] : hubs_)
    for (const auto &v : hub->views ())
      for (auto [part, stats] : {std::pair<const char *, const HopStats *>{"total", &v->hop ().total},
                                 {"socket", &v->hop ().socket},
                                 {"daemon", &v->hop ().daemon}})
        if (stats->samples ())
          for (double q : {0.5, 0.95})
            o << "livemicro_worker_hop_ms{" << labels_of (id, v->profile ()) << ",part=\"" << part
              << "\",quantile=\"" << q << "\"} " << stats->quantile (q) << "\n";
  head ("livemicro_view_capture_to_encoded_ms", "summary",
        "From a frame's capture to its view's encoder output in the worker, over the last 600 frames, ms.");
  for (const auto &[id, hub] : hubs_)
    for (const auto &v : hub->views ())
      if (v->hop ().capture.samples ())
        for (double q : {0.5, 0.95})
          o << "livemicro_view_capture_to_encoded_ms{" << labels_of (id, v->profile ()) << ",quantile=\"" << q
            << "\"} " << v->hop ().capture.quantile (q) << "\n";
  // fps and dropped frames as the worker measures them.
  head ("livemicro_view_fps", "gauge", "Frames per second leaving each view branch's encoder.");
  std::ostringstream dropped;
  for (const auto &[id, hub] : hubs_) {
    if (!hub->stats ())
      continue;
    for (const auto &vs : hub->stats ()->views)
      for (const auto &v : hub->views ())
        if (v->id () == vs.view) {
          o << "livemicro_view_fps{" << labels_of (id, v->profile ()) << "} " << vs.fps << "\n";
          dropped << "livemicro_view_dropped_frames_total{" << labels_of (id, v->profile ()) << "} "
                  << vs.dropped << "\n";
        }
  }
  head ("livemicro_view_dropped_frames_total", "counter",
        "Frames a view branch dropped at its input (slow encoder).");
  o << dropped.str ();
  // What runs on demand (docs/media-demand.md), as the worker last said.
  auto worker_gauge = [&] (const char *name, const char *type, const char *help, auto value) {
    head (name, type, help);
    for (const auto &[id, hub] : hubs_)
      if (hub->stats ())
        o << name << "{microscope=\"" << prom_label (id) << "\"} " << value (*hub->stats ()) << "\n";
  };
  worker_gauge (
      "livemicro_capture_active", "gauge",
      "1 while the capture runs at full rate (someone watches), 0 while it idles at one frame per second.",
      [] (const event::Stats &s) { return s.capture_active ? 1 : 0; });
  worker_gauge ("livemicro_capture_frames_total", "counter",
                "Frames the capture delivered (since the worker started).",
                [] (const event::Stats &s) { return s.capture_frames; });
  worker_gauge ("livemicro_analysis_active", "gauge",
                "1 while the analysis runs (someone reads it or a played view draws it).",
                [] (const event::Stats &s) { return s.analysis_active ? 1 : 0; });
  worker_gauge ("livemicro_encoders_active", "gauge",
                "View encoders that get frames (their view has players or a still pending).",
                [] (const event::Stats &s) {
                  return std::count_if (s.views.begin (), s.views.end (),
                                        [] (const event::ViewStats &v) { return v.encoding; });
                });
  head ("livemicro_analysis_ms", "gauge", "Mean analysis time per analysed frame (tumorfeatures).");
  for (const auto &[id, hub] : hubs_)
    if (hub->stats ())
      o << "livemicro_analysis_ms{microscope=\"" << prom_label (id) << "\"} "
        << hub->stats ()->analysis_ms_mean << "\n";
  if (cluster_views_)
    o << cluster_views_->metrics ();
  return o.str ();
}

// ---- audit -----------------------------------------------------------------------

AuditRecord
Node::audit_row (const Principal &by, const std::string &microscope, const std::string &action,
                 const std::string &detail, const std::string &result)
{
  return {0,     g_get_real_time (), by.user (), by.role (), by.session_id (), microscope, action, detail,
          result};
}

void
Node::record (const Principal &by, const std::string &microscope, const std::string &action,
              const std::string &detail, const std::string &result)
{
  record (audit_row (by, microscope, action, detail, result));
}

void
Node::record (const AuditRecord &row)
{
  if (pending_audit_.empty ()) {
    try {
      store_->append_audit (row);
      return;
    } catch (const StoreError &e) {
      g_warning ("audit row kept in memory until the database is writable: %s", e.what ());
    }
  }
  pending_audit_.push_back (row);
}

void
Node::flush_pending_audit ()
{
  while (!pending_audit_.empty ()) {
    try {
      store_->append_audit (pending_audit_.front ());
    } catch (const StoreError &) {
      return; // still not writable: next tick
    }
    pending_audit_.pop_front ();
  }
}

void
Node::refused (const Principal &by, const std::string &microscope, const std::string &action,
               const std::string &detail, const Refusal &e)
{
  record (by, microscope, action, detail, "refused: " + e.message);
}

void
Node::durable (const std::vector<AuditRecord> &rows, const MicroscopeHub *epoch_of)
{
  if (cluster_ && epoch_of) {
    const ControlState control = epoch_of->control ().state ();
    fenced (epoch_of->id (), rows, &control);
  }
  try {
    flush_pending_audit ();
    store_->transaction ([&] {
      for (const AuditRecord &r : rows)
        store_->append_audit (r);
      if (epoch_of)
        store_->set_value ("control_epoch:" + epoch_of->id (),
                           std::to_string (epoch_of->control ().epoch ()));
    });
  } catch (const StoreError &e) {
    g_warning ("refused, the state database cannot be written: %s", e.what ());
    throw Refusal{Reason::kUnavailable,
                  "the state database cannot be written just now (nothing was done; try again)"};
  }
}

std::vector<AuditRecord>
Node::audit (const Principal &by, int64_t after_id, int limit) const
{
  if (!by.admin && by.session->role != "owner")
    throw Refusal{Reason::kForbidden, "the audit log is for the admin and the owner"};
  return store_->audit (after_id, std::clamp (limit, 1, 10000), by.admin ? "" : by.session->microscope);
}

// ---- annotations -------------------------------------------------------------------

AnnotationRecord
Node::add_annotation (const Principal &by, const std::string &microscope, const AnnotationRequest &r)
{
  hub_visible_to (by, microscope);
  if (by.admin)
    throw Refusal{Reason::kForbidden, "annotations belong to sessions; the admin has none"};
  AnnotationRecord a;
  a.microscope = microscope;
  a.session = by.session->id;
  a.user = by.session->user;
  a.kind = r.kind;
  a.label = r.label;
  g_autoptr (JsonBuilder) pb = json_builder_new ();
  json_builder_begin_array (pb);
  for (const auto &[x, y] : r.points_um) {
    json_builder_begin_array (pb);
    add_number (pb, x);
    add_number (pb, y);
    json_builder_end_array (pb);
  }
  json_builder_end_array (pb);
  a.points_json = api::to_string (pb);
  a.created_unix_us = g_get_real_time ();
  a.id = keep_annotation (a);
  notify (microscope, "annotation", api::annotation_json (a));
  return a;
}

std::vector<AnnotationRecord>
Node::annotations (const Principal &by, const std::string &microscope) const
{
  hub_visible_to (by, microscope);
  return stored_annotations (microscope);
}

void
Node::delete_annotation (const Principal &by, const std::string &microscope, int64_t aid)
{
  hub_visible_to (by, microscope);
  std::optional<AnnotationRecord> a;
  for (auto &x : stored_annotations (microscope))
    if (x.id == aid)
      a = x;
  if (!a)
    throw Refusal{Reason::kNotFound, "no annotation " + std::to_string (aid)};
  if (!by.admin && by.session->id != a->session && by.session->role != "owner")
    throw Refusal{Reason::kForbidden, "only its author, the owner or the admin can delete an annotation"};
  forget_annotation (microscope, aid);
  notify (microscope, "annotation_deleted", api::annotation_deleted_json (aid));
}

std::vector<AnnotationRecord>
Node::session_annotations (const Principal &by, const std::string &session_id) const
{
  SessionRecord s = session_visible_to (by, session_id);
  return unmasked_for (by, stored_annotations (s.microscope, s.id));
}

std::vector<AnnotationRecord>
Node::exported_annotations (const Principal &by, const std::string &microscope) const
{
  hub_visible_to (by, microscope);
  if (!may_see (by, "annotations"))
    throw Refusal{Reason::kForbidden, "the " + by.role () + " profile does not show annotations"};
  return unmasked_for (by, stored_annotations (microscope));
}

// A node that joins an edge cloud brings the annotations it kept alone: once,
// for each of its microscopes that has none in etcd yet (they keep their
// text, author and time; etcd gives them new ids).  They stay in its store.
void
Node::move_annotations_to_cluster ()
{
  try {
    for (const auto &[id, hub] : hubs_) {
      if (annotations_moved_of_.count (id) || !cluster_->fence (id))
        continue; // done, or not (yet) its home
      const auto local = store_->annotations (id);
      if (cluster_->annotations (id).empty ())
        for (const auto &a : local)
          cluster_->put_annotation (a);
      if (!local.empty ())
        g_message ("edge cloud: the annotations of microscope %s are kept in etcd from now on", id.c_str ());
      annotations_moved_of_.insert (id);
    }
    annotations_moved_ = annotations_moved_of_.size () == hubs_.size ();
  } catch (const livemicro::cluster::EtcdError &e) {
    g_message ("edge cloud: annotations move to etcd on the next try: %s", e.what ());
  }
}

// Annotations are kept in etcd in an edge cloud (they stay with the
// microscope whichever node is its home), else in the node's store.
int64_t
Node::keep_annotation (const AnnotationRecord &a)
{
  if (!cluster_)
    return store_->insert_annotation (a);
  try {
    return cluster_->put_annotation (a);
  } catch (const livemicro::cluster::EtcdError &e) {
    g_warning ("annotation not kept, the edge cloud's store refused: %s", e.what ());
    throw Refusal{
        Reason::kUnavailable,
        "the edge cloud's store cannot be reached just now (the annotation was not kept; try again)"};
  }
}

std::vector<AnnotationRecord>
Node::stored_annotations (const std::string &microscope, const std::string &session) const
{
  if (!cluster_)
    return store_->annotations (microscope, session);
  std::vector<AnnotationRecord> all;
  try {
    all = cluster_->annotations (microscope);
  } catch (const livemicro::cluster::EtcdError &e) {
    g_warning ("annotations not read, the edge cloud's store refused: %s", e.what ());
    throw Refusal{Reason::kUnavailable, "the edge cloud's store cannot be reached just now (try again)"};
  }
  if (!session.empty ())
    all.erase (
        std::remove_if (all.begin (), all.end (), [&] (const auto &a) { return a.session != session; }),
        all.end ());
  return all;
}

void
Node::forget_annotation (const std::string &microscope, int64_t id)
{
  if (!cluster_) {
    store_->delete_annotation (id);
    return;
  }
  try {
    cluster_->delete_annotation (microscope, id);
  } catch (const livemicro::cluster::EtcdError &e) {
    g_warning ("annotation not deleted, the edge cloud's store refused: %s", e.what ());
    throw Refusal{
        Reason::kUnavailable,
        "the edge cloud's store cannot be reached just now (the annotation was not deleted; try again)"};
  }
}

std::vector<AnnotationRecord>
Node::unmasked_for (const Principal &p, std::vector<AnnotationRecord> list) const
{
  if (p.admin)
    return list;
  const livemicro::privacy::Profile *profile = profiles_.find (p.session->role);
  if (!profile)
    return {}; // fail closed: no profile, nothing known to be safe
  const auto masked = profiles_.regions_for (*profile);
  auto touches_masked = [&] (const AnnotationRecord &a) {
    std::vector<cv::Point2d> pts;
    for (const auto &[x, y] : a.points_um ())
      pts.emplace_back (x, y);
    if (pts.empty ())
      return true;
    const cv::Rect2d box = livemicro::privacy::bounding_box (pts);
    for (const livemicro::privacy::SlideRegion *r : masked) {
      const cv::Rect2d rb = r->bounds_um ();
      // Closed boxes: a point annotation (zero size) on the region's edge counts.
      if (box.x <= rb.x + rb.width && rb.x <= box.x + box.width && box.y <= rb.y + rb.height
          && rb.y <= box.y + box.height)
        return true;
    }
    return false;
  };
  list.erase (std::remove_if (list.begin (), list.end (), touches_masked), list.end ());
  return list;
}

} // namespace livemicro::orchestrator
