#include "rtsp_service.h"

#include <glib/gstdio.h>

#include <algorithm>
#include <memory>
#include <stdexcept>

namespace livemicro::orchestrator {

struct RtspService::Mount {
  std::string session_id;
  std::shared_ptr<ViewStream> view;
  GstRTSPMediaFactory *factory = nullptr;
};

namespace {

std::string
role_for (const std::string &session_id)
{
  // GstStructure names (roles) must start with a letter.
  return "session-" + session_id;
}

}  // namespace

RtspService::RtspService (std::string address, int port, std::string state_dir)
    : address_ (std::move (address)), state_dir_ (std::move (state_dir)), port_ (port)
{
}

RtspService::~RtspService ()
{
  if (source_)
    g_source_remove (source_);
  for (auto &kv : mounts_)
    g_object_unref (kv.second->factory);
  g_clear_object (&auth_);
  g_clear_object (&server_);
}

void
RtspService::start (GTlsCertificate *tls)
{
  server_ = gst_rtsp_server_new ();
  gst_rtsp_server_set_address (server_, address_.c_str ());
  gst_rtsp_server_set_service (server_, std::to_string (port_).c_str ());
  // A burst of players (a class joining at once) is queued, not refused:
  // gst-rtsp-server's default backlog is 5.
  gst_rtsp_server_set_backlog (server_, kListenBacklog);
  auth_ = gst_rtsp_auth_new ();
  gst_rtsp_auth_set_supported_methods (auth_, GST_RTSP_AUTH_DIGEST);
  gst_rtsp_auth_set_realm (auth_, kRealm);
  if (tls) {
    gst_rtsp_auth_set_tls_certificate (auth_, tls);
    tls_ = true;
  }
  gst_rtsp_server_set_auth (server_, auth_);
  source_ = gst_rtsp_server_attach (server_, nullptr);
  if (!source_)
    throw std::runtime_error ("RTSP: cannot listen on " + address_ + ":" + std::to_string (port_));
  port_ = gst_rtsp_server_get_bound_port (server_);
}

void
RtspService::add_session (const SessionRecord &s, std::shared_ptr<ViewStream> view)
{
  remove_session (s.id);
  auto mount = std::make_shared<Mount> ();
  mount->session_id = s.id;
  mount->view = view;
  GstRTSPMediaFactory *f = gst_rtsp_media_factory_new ();
  gst_rtsp_media_factory_set_launch (f,
      "( appsrc name=src is-live=true format=time do-timestamp=true min-latency=0 "
      "! rtph264pay name=pay0 pt=96 config-interval=-1 aggregate-mode=zero-latency )");
  // All players of one session share one media (and the stream of the view).
  gst_rtsp_media_factory_set_shared (f, TRUE);
  gst_rtsp_media_factory_set_suspend_mode (f, GST_RTSP_SUSPEND_MODE_NONE);
  GstStructure *role = gst_structure_new (role_for (s.id).c_str (),
      GST_RTSP_PERM_MEDIA_FACTORY_ACCESS, G_TYPE_BOOLEAN, TRUE,
      GST_RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, G_TYPE_BOOLEAN, TRUE, nullptr);
  gst_rtsp_media_factory_add_role_from_structure (f, role);
  gst_structure_free (role);

  g_signal_connect_data (f, "media-configure",
      G_CALLBACK (+[] (GstRTSPMediaFactory *, GstRTSPMedia *media, gpointer data) {
        auto mount = *static_cast<std::shared_ptr<Mount> *> (data);
        GstElement *bin = gst_rtsp_media_get_element (media);
        GstElement *src = gst_bin_get_by_name_recurse_up (GST_BIN (bin), "src");
        gst_object_unref (bin);
        if (!src)
          return;
        int handle = mount->view->add_viewer (GST_APP_SRC (src));
        gst_object_unref (src);
        struct Ctx {
          std::shared_ptr<Mount> mount;
          int handle;
        };
        g_signal_connect_data (media, "unprepared",
            G_CALLBACK (+[] (GstRTSPMedia *, gpointer d) {
              auto *c = static_cast<Ctx *> (d);
              c->mount->view->remove_viewer (c->handle);
            }),
            new Ctx {mount, handle},
            [] (gpointer d, GClosure *) { delete static_cast<Ctx *> (d); },
            G_CONNECT_DEFAULT);
      }),
      new std::shared_ptr<Mount> (mount),
      [] (gpointer d, GClosure *) { delete static_cast<std::shared_ptr<Mount> *> (d); },
      G_CONNECT_DEFAULT);
  mount->factory = f;

  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points (server_);
  gst_rtsp_mount_points_add_factory (mounts, ("/s/" + s.id).c_str (), GST_RTSP_MEDIA_FACTORY (g_object_ref (f)));
  g_object_unref (mounts);

  // Digest credentials from the stored HA1 (the token itself is not kept):
  // gst-rtsp-server reads them from an htdigest line.
  std::string path = state_dir_ + "/.htdigest-" + s.id;
  std::string line = s.id + ":" + kRealm + ":" + s.digest_ha1 + "\n";
  g_file_set_contents_full (path.c_str (), line.c_str (), (gssize) line.size (),
      G_FILE_SET_CONTENTS_NONE, 0600, nullptr);
  GstRTSPToken *token = gst_rtsp_token_new (GST_RTSP_TOKEN_MEDIA_FACTORY_ROLE, G_TYPE_STRING,
      role_for (s.id).c_str (), nullptr);
  gst_rtsp_auth_parse_htdigest (auth_, path.c_str (), token);
  gst_rtsp_token_unref (token);
  g_remove (path.c_str ());
  mounts_[s.id] = mount;
}

namespace {

// RTSP sessions of all clients that play one mount path: counted, or torn
// down with their clients and media.
struct MountQuery {
  std::string path;
  bool remove = false;      // the players' sessions, and their connections
  bool stop_media = false;  // the media (EOS → BYE → stop)
  bool hit = false;
  size_t count = 0;
  std::vector<GstRTSPClient *> clients;  // to close (owned refs)
  std::vector<GstRTSPMedia *> media;     // to unprepare (owned refs)
};

GstRTSPFilterResult
media_filter (GstRTSPSession *, GstRTSPSessionMedia *sm, gpointer data)
{
  auto *q = static_cast<MountQuery *> (data);
  gint matched = 0;
  if (gst_rtsp_session_media_matches (sm, q->path.c_str (), &matched) &&
      matched == (gint) q->path.size ()) {
    q->hit = true;
    if (q->stop_media) {
      GstRTSPMedia *media = gst_rtsp_session_media_get_media (sm);
      if (media && std::find (q->media.begin (), q->media.end (), media) == q->media.end ())
        q->media.push_back (GST_RTSP_MEDIA (g_object_ref (media)));
    }
  }
  return GST_RTSP_FILTER_KEEP;
}

GstRTSPFilterResult
session_filter (GstRTSPClient *client, GstRTSPSession *session, gpointer data)
{
  auto *q = static_cast<MountQuery *> (data);
  q->hit = false;
  gst_rtsp_session_filter (session, media_filter, q);
  if (!q->hit)
    return GST_RTSP_FILTER_KEEP;
  q->count++;
  if (!q->remove)
    return GST_RTSP_FILTER_KEEP;
  if (std::find (q->clients.begin (), q->clients.end (), client) == q->clients.end ())
    q->clients.push_back (GST_RTSP_CLIENT (g_object_ref (client)));
  return GST_RTSP_FILTER_REMOVE;
}

size_t
walk_mount (GstRTSPServer *server, const std::string &path, bool remove, bool stop_media = false)
{
  MountQuery q;
  q.path = path;
  q.remove = remove;
  q.stop_media = stop_media;
  gst_rtsp_server_client_filter (server,
      [] (GstRTSPServer *, GstRTSPClient *client, gpointer data) -> GstRTSPFilterResult {
        gst_rtsp_client_session_filter (client, session_filter, data);
        return GST_RTSP_FILTER_KEEP;
      },
      &q);
  for (GstRTSPMedia *m : q.media) {
    // EOS first: rtpbin sends RTCP BYE, and players (TCP or UDP) end their
    // stream instead of waiting for packets.  Only for a media of a removed
    // mount: no new player can get it while it winds down.
    gst_rtsp_media_set_eos_shutdown (m, TRUE);
    gst_rtsp_media_unprepare (m);
    g_object_unref (m);
  }
  for (GstRTSPClient *c : q.clients) {
    gst_rtsp_client_close (c);
    g_object_unref (c);
  }
  return q.count;
}

}  // namespace

void
RtspService::remove_session (const std::string &id)
{
  auto it = mounts_.find (id);
  if (it == mounts_.end ())
    return;
  gst_rtsp_auth_remove_digest (auth_, id.c_str ());
  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points (server_);
  std::string path = "/s/" + id;
  gst_rtsp_mount_points_remove_factory (mounts, path.c_str ());
  g_object_unref (mounts);
  // The session's players stop now, not at their next request: the media
  // ends (BYE reaches them over TCP and UDP), then their sessions and
  // connections go once the BYE is out.
  walk_mount (server_, path, false, true);
  struct Later {
    GstRTSPServer *server;
    std::string path;
  };
  g_timeout_add (300, [] (gpointer d) -> gboolean {
    std::unique_ptr<Later> l (static_cast<Later *> (d));
    walk_mount (l->server, l->path, true);
    g_object_unref (l->server);
    return G_SOURCE_REMOVE;
  }, new Later {GST_RTSP_SERVER (g_object_ref (server_)), path});
  g_object_unref (it->second->factory);
  mounts_.erase (it);
}

size_t
RtspService::viewers (uint32_t view_id) const
{
  size_t n = 0;
  for (const auto &kv : mounts_)
    if (kv.second->view->id () == view_id)
      n += walk_mount (server_, "/s/" + kv.first, false);
  return n;
}

size_t
RtspService::viewers () const
{
  size_t n = 0;
  for (const auto &kv : mounts_)
    n += walk_mount (server_, "/s/" + kv.first, false);
  return n;
}

}  // namespace livemicro::orchestrator
