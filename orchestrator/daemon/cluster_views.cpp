// See cluster_views.h.
#include "cluster_views.h"

#include "api_json.h"
#include "node.h"

#include <gio/gio.h>
#include <libsoup/soup.h>

#include <algorithm>
#include <sstream>

namespace livemicro::orchestrator {

using livemicro::cluster::ClusterSession;
using livemicro::cluster::EtcdError;

namespace {

// A UDP port that was free a moment ago, for an SRT listener.
uint16_t
free_udp_port (const std::string &address)
{
  g_autoptr (GSocket) s
      = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_DATAGRAM, G_SOCKET_PROTOCOL_UDP, nullptr);
  g_autoptr (GInetAddress) ip = g_inet_address_new_from_string (address.c_str ());
  if (!ip)
    ip = g_inet_address_new_any (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) a = g_inet_socket_address_new (ip, 0);
  if (!s || !g_socket_bind (s, a, FALSE, nullptr))
    return 0;
  g_autoptr (GSocketAddress) bound = g_socket_get_local_address (s, nullptr);
  return bound ? g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound)) : 0;
}

std::string
view_key (const SessionRecord &s)
{
  return s.microscope + "/" + s.role;
}

} // namespace

ClusterViews::ClusterViews (Node &node, relay::SrtLinkSettings link) : node_ (node), link_ (std::move (link))
{}

ClusterViews::~ClusterViews ()
{
  *alive_ = false;
  for (auto &[key, in] : incoming_)
    for (const auto &id : in.sessions)
      node_.rtsp ().remove_session (id);
  incoming_.clear ();
  outgoing_.clear ();
}

void
ClusterViews::sync ()
{
  auto *cluster = node_.cluster ();
  if (!cluster)
    return;
  auto sessions = cluster->sessions ();
  replace_departed (sessions);
  sync_outgoing (sessions);
  sync_incoming (sessions);
}

bool
ClusterViews::open_outgoing (const std::string &key, const ClusterSession &s)
{
  auto *cluster = node_.cluster ();
  auto view = node_.hubs ().at (s.record.microscope)->view_of (s.record.id);
  if (!view)
    return false; // its branch is not built (yet)
  const Config &c = node_.config ();
  const uint16_t port = free_udp_port (c.listen_address);
  auto relay = std::make_unique<relay::RelayOut> (view, c.listen_address, port, link_);
  std::string error;
  if (!port || !relay->start (error)) {
    g_warning ("edge cloud: cannot serve view %s to other nodes: %s", key.c_str (),
               port ? error.c_str () : "no free UDP port");
    return false;
  }
  const std::string host = c.public_host.empty () ? c.listen_address : c.public_host;
  try {
    cluster->publish_relay (s.record.microscope, s.record.role, {cluster->config ().node, host, port});
  } catch (const EtcdError &e) {
    g_warning ("edge cloud: cannot publish the relay of view %s: %s", key.c_str (), e.what ());
    return false;
  }
  g_message ("edge cloud: serving view %s to other nodes on SRT port %u", key.c_str (), port);
  outgoing_[key] = {std::move (relay), s.record.microscope, s.record.role};
  return true;
}

void
ClusterViews::replace_departed (std::vector<ClusterSession> &sessions)
{
  auto *cluster = node_.cluster ();
  const std::string &me = cluster->config ().node;
  for (auto &s : sessions) {
    // Only the microscope's home decides, and only while it holds it.
    if (s.serving_node.empty () || s.serving_node == me || cluster->node (s.serving_node)
        || !node_.hubs ().count (s.record.microscope) || !cluster->fence (s.record.microscope))
      continue;
    const std::string to = node_.place_view (s.site);
    try {
      if (!cluster->move_session (s, to))
        continue; // changed meanwhile: seen again on the next read
    } catch (const EtcdError &e) {
      g_warning ("edge cloud: session %s stays placed on departed node %s: %s", s.record.id.c_str (),
                 s.serving_node.c_str (), e.what ());
      continue;
    }
    g_message ("edge cloud: node %s left; session %s is served by %s now", s.serving_node.c_str (),
               s.record.id.c_str (), to.c_str ());
    s.serving_node = to;
  }
}

void
ClusterViews::hold (const std::string &session_id, int delta)
{
  int &n = held_[session_id];
  n += delta;
  if (n <= 0)
    held_.erase (session_id);
  sync ();
}

void
ClusterViews::sync_outgoing (const std::vector<ClusterSession> &sessions)
{
  auto *cluster = node_.cluster ();
  const std::string &me = cluster->config ().node;
  std::set<std::string> wanted;
  for (const auto &s : sessions) {
    // A view of a microscope homed here, served by another node that is here.
    if (s.serving_node.empty () || s.serving_node == me || !node_.hubs ().count (s.record.microscope)
        || !cluster->fence (s.record.microscope) || !cluster->node (s.serving_node))
      continue;
    const std::string key = view_key (s.record);
    if (outgoing_.count (key) || open_outgoing (key, s))
      wanted.insert (key);
  }
  for (auto it = outgoing_.begin (); it != outgoing_.end ();) {
    // Kept while a node pulls it (one whose viewers came to it on a failover).
    if (wanted.count (it->first) || it->second.relay->stats ().callers > 0) {
      ++it;
      continue;
    }
    try {
      cluster->withdraw_relay (it->second.microscope, it->second.profile);
    } catch (const EtcdError &e) {
      g_message ("edge cloud: relay of %s withdrawn here, not in etcd (its lease ends it): %s",
                 it->first.c_str (), e.what ());
    }
    it = outgoing_.erase (it);
  }
}

// Every session of a microscope homed elsewhere whose view some node may
// pull is mounted here: an RTSP player is served by whichever node it
// reaches.  The view is pulled from the home node only while the session is
// placed here, a page of it is here, or a player plays it here.
void
ClusterViews::sync_incoming (const std::vector<ClusterSession> &sessions)
{
  auto *cluster = node_.cluster ();
  const std::string &me = cluster->config ().node;
  std::map<std::string, std::vector<const ClusterSession *>> mounted;
  for (const auto &s : sessions) {
    if (node_.hubs ().count (s.record.microscope))
      continue;
    const bool here = s.serving_node == me || held_.count (s.record.id);
    if (here || cluster->relay (s.record.microscope, s.record.role))
      mounted[view_key (s.record)].push_back (&s);
  }
  for (const auto &[key, list] : mounted) {
    Incoming &in = incoming_[key];
    if (!in.view)
      open_incoming (in, key, list.front ()->record);
    const bool pulled = in.view->viewers () > 0 || std::any_of (list.begin (), list.end (), [&] (auto *s) {
                          return s->serving_node == me || held_.count (s->record.id);
                        });
    pull (in, key, pulled);
    std::set<std::string> ids;
    for (const ClusterSession *s : list) {
      ids.insert (s->record.id);
      if (in.sessions.insert (s->record.id).second)
        node_.rtsp ().add_session (
            s->record, in.view, "LiveMicro " + s->record.microscope + " \u2014 " + s->record.role + " view");
    }
    for (auto it = in.sessions.begin (); it != in.sessions.end ();) {
      if (ids.count (*it)) {
        ++it;
        continue;
      }
      ended_here (key, *it);
      it = in.sessions.erase (it);
    }
  }
  for (auto it = incoming_.begin (); it != incoming_.end ();) {
    if (mounted.count (it->first)) {
      ++it;
      continue;
    }
    for (const auto &id : it->second.sessions)
      ended_here (it->first, id);
    it = incoming_.erase (it);
  }
}

// A session relayed here is gone from the edge cloud: its players and
// WHEP peers here end with it.  The peers are told from the main loop's
// next turn: ending one lets go of its view (hold), which syncs again, and
// sync () is what is running now.
void
ClusterViews::ended_here (const std::string &key, const std::string &session_id)
{
  node_.rtsp ().remove_session (session_id);
  struct Ended {
    ClusterViews *self;
    std::shared_ptr<bool> alive;
    std::string microscope, session;
  };
  auto *e = new Ended{this, alive_, key.substr (0, key.find ('/')), session_id};
  g_idle_add_full (
      G_PRIORITY_DEFAULT,
      [] (gpointer d) -> gboolean {
        auto *e = static_cast<Ended *> (d);
        if (*e->alive)
          e->self->node_.notify (e->microscope, "session_ended", api::session_ended_json (e->session),
                                 e->session);
        return G_SOURCE_REMOVE;
      },
      e, [] (gpointer d) { delete static_cast<Ended *> (d); });
}

void
ClusterViews::open_incoming (Incoming &in, const std::string &key, const SessionRecord &first)
{
  in.view = std::make_shared<ViewStream> (next_view_id_++, first.microscope, first.role, key);
  in.view->set_keyframe_request ([this, alive = alive_, m = first.microscope, p = first.role] {
    if (*alive)
      ask_keyframe (m, p);
  });
  // A player came or went (on an RTSP thread): pull or stop on the main loop.
  in.view->set_viewers_changed ([this, alive = alive_] {
    auto *ctx = new std::pair<ClusterViews *, std::shared_ptr<bool>> (this, alive);
    g_idle_add_full (
        G_PRIORITY_DEFAULT,
        [] (gpointer d) -> gboolean {
          auto *c = static_cast<std::pair<ClusterViews *, std::shared_ptr<bool>> *> (d);
          if (*c->second)
            c->first->sync ();
          return G_SOURCE_REMOVE;
        },
        ctx, [] (gpointer d) { delete static_cast<std::pair<ClusterViews *, std::shared_ptr<bool>> *> (d); });
  });
  in.microscope = first.microscope;
  in.profile = first.role;
}

void
ClusterViews::pull (Incoming &in, const std::string &key, bool wanted)
{
  if (!wanted) {
    in.relay.reset ();
    in.from.clear ();
    return;
  }
  auto at = node_.cluster ()->relay (in.microscope, in.profile);
  const std::string from = at ? at->host + ":" + std::to_string (at->port) : "";
  if (!at || from == in.from)
    return;
  // A new relay (or the home node came back on another port): pull from it.
  in.relay.reset ();
  auto relay = std::make_unique<relay::RelayIn> (in.view, at->host, (uint16_t)at->port, link_);
  std::string error;
  if (relay->start (error)) {
    in.relay = std::move (relay);
    in.from = from;
  } else {
    g_warning ("edge cloud: cannot pull view %s from %s: %s", key.c_str (), from.c_str (), error.c_str ());
  }
}

void
ClusterViews::ask_keyframe (const std::string &microscope, const std::string &profile)
{
  // From an RTSP thread: the cluster member answers from any thread, and the
  // request goes out on GLib's thread pool (nobody waits for it).
  auto url = node_.home_url_of (microscope);
  if (!url)
    return;
  struct Ask {
    std::string url, authorization, body;
  };
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "profile");
  json_builder_add_string_value (b, profile.c_str ());
  json_builder_end_object (b);
  auto *ask = new Ask{*url + "/api/v1/microscopes/" + microscope + "/keyframe",
                      "Bearer " + node_.admin_token (), api::to_string (b)};
  GTask *task = g_task_new (nullptr, nullptr, nullptr, nullptr);
  g_task_set_task_data (task, ask, [] (gpointer d) { delete static_cast<Ask *> (d); });
  g_task_run_in_thread (task, [] (GTask *t, gpointer, gpointer data, GCancellable *) {
    auto *a = static_cast<Ask *> (data);
    g_autoptr (SoupSession) session = soup_session_new_with_options ("timeout", 5, nullptr);
    g_autoptr (SoupMessage) msg = soup_message_new ("POST", a->url.c_str ());
    if (msg) {
      soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization",
                                    a->authorization.c_str ());
      g_autoptr (GBytes) body = g_bytes_new (a->body.data (), a->body.size ());
      soup_message_set_request_body_from_bytes (msg, "application/json", body);
      g_autoptr (GBytes) out = soup_session_send_and_read (session, msg, nullptr, nullptr);
    }
    g_task_return_boolean (t, TRUE);
  });
  g_object_unref (task);
}

std::shared_ptr<ViewStream>
ClusterViews::view_of_session (const std::string &session_id) const
{
  for (const auto &[key, in] : incoming_)
    if (in.sessions.count (session_id))
      return in.view;
  return nullptr;
}

std::vector<std::shared_ptr<ViewStream>>
ClusterViews::relayed_views () const
{
  std::vector<std::shared_ptr<ViewStream>> out;
  for (const auto &[key, in] : incoming_)
    if (in.view)
      out.push_back (in.view);
  return out;
}

std::string
ClusterViews::metrics () const
{
  std::ostringstream o;
  o << "# HELP livemicro_relay_out_callers Serving nodes pulling a view from this home node now.\n"
       "# TYPE livemicro_relay_out_callers gauge\n";
  for (const auto &[key, out] : outgoing_)
    o << "livemicro_relay_out_callers{microscope=\"" << out.microscope << "\",profile=\"" << out.profile
      << "\"} " << out.relay->stats ().callers << "\n";
  o << "# HELP livemicro_relay_out_bytes_total Bytes of a view sent to other nodes.\n"
       "# TYPE livemicro_relay_out_bytes_total counter\n";
  for (const auto &[key, out] : outgoing_)
    o << "livemicro_relay_out_bytes_total{microscope=\"" << out.microscope << "\",profile=\"" << out.profile
      << "\"} " << out.relay->stats ().bytes_sent << "\n";
  o << "# HELP livemicro_relay_in_connected A view pulled from its home node is flowing (1) or not (0).\n"
       "# TYPE livemicro_relay_in_connected gauge\n";
  for (const auto &[key, in] : incoming_)
    if (in.relay)
      o << "livemicro_relay_in_connected{microscope=\"" << in.microscope << "\",profile=\"" << in.profile
        << "\"} " << (in.relay->state ().connected ? 1 : 0) << "\n";
  o << "# HELP livemicro_relay_in_bytes_total Bytes of a view pulled from its home node.\n"
       "# TYPE livemicro_relay_in_bytes_total counter\n";
  for (const auto &[key, in] : incoming_)
    if (in.relay)
      o << "livemicro_relay_in_bytes_total{microscope=\"" << in.microscope << "\",profile=\"" << in.profile
        << "\"} " << in.relay->state ().bytes_received << "\n";
  return o.str ();
}

} // namespace livemicro::orchestrator
