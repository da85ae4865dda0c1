#include "rtsp_service.h"

#include <glib/gstdio.h>

#include <algorithm>
#include <memory>
#include <stdexcept>

namespace livemicro::orchestrator {

struct RtspService::Mount {
  std::string session_id;
  std::string title; // the SDP session name
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

// The media of a mount: gst-rtsp-server's, with the SDP session name (s=)
// saying which microscope and view it is instead of "Session streamed with
// GStreamer".  The client sets its default name before the media's
// setup_sdp runs, so the media overrides it there.
constexpr const char *kSdpTitleKey = "livemicro-sdp-title";

struct LivemicroRtspMedia {
  GstRTSPMedia parent;
};
struct LivemicroRtspMediaClass {
  GstRTSPMediaClass parent_class;
};
G_DEFINE_TYPE (LivemicroRtspMedia, livemicro_rtsp_media, GST_TYPE_RTSP_MEDIA)

gboolean
livemicro_rtsp_media_setup_sdp (GstRTSPMedia *media, GstSDPMessage *sdp, GstSDPInfo *info)
{
  if (!GST_RTSP_MEDIA_CLASS (livemicro_rtsp_media_parent_class)->setup_sdp (media, sdp, info))
    return FALSE;
  if (auto *title = static_cast<const char *> (g_object_get_data (G_OBJECT (media), kSdpTitleKey))) {
    gst_sdp_message_set_session_name (sdp, title);
    gst_sdp_message_set_information (sdp, "LiveMicro live view (H.264)");
  }
  return TRUE;
}

void
livemicro_rtsp_media_class_init (LivemicroRtspMediaClass *klass)
{
  GST_RTSP_MEDIA_CLASS (klass)->setup_sdp = livemicro_rtsp_media_setup_sdp;
}

void
livemicro_rtsp_media_init (LivemicroRtspMedia *)
{}

// One line of printable text for an SDP field.
std::string
sdp_text (const std::string &text)
{
  std::string out;
  for (unsigned char c : text)
    if (c >= 0x20 && c != 0x7f)
      out += (char)c;
  return out.empty () ? "LiveMicro" : out;
}

} // namespace

RtspService::RtspService (std::string address, int port, std::string state_dir)
    : address_ (std::move (address)), state_dir_ (std::move (state_dir)), port_ (port)
{}

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
RtspService::add_session (const SessionRecord &s, std::shared_ptr<ViewStream> view, const std::string &title)
{
  remove_session (s.id);
  auto mount = std::make_shared<Mount> ();
  mount->session_id = s.id;
  mount->title = sdp_text (title);
  mount->view = view;
  GstRTSPMediaFactory *f = gst_rtsp_media_factory_new ();
  gst_rtsp_media_factory_set_launch (
      f, "( appsrc name=src is-live=true format=time do-timestamp=false min-latency=0 "
         "! rtph264pay name=pay0 pt=96 config-interval=0 aggregate-mode=zero-latency )");
  gst_rtsp_media_factory_set_media_gtype (f, livemicro_rtsp_media_get_type ());
  // All players of one session share one media (and the stream of the view).
  gst_rtsp_media_factory_set_shared (f, TRUE);
  gst_rtsp_media_factory_set_suspend_mode (f, GST_RTSP_SUSPEND_MODE_NONE);
  GstStructure *role
      = gst_structure_new (role_for (s.id).c_str (), GST_RTSP_PERM_MEDIA_FACTORY_ACCESS, G_TYPE_BOOLEAN, TRUE,
                           GST_RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, G_TYPE_BOOLEAN, TRUE, nullptr);
  gst_rtsp_media_factory_add_role_from_structure (f, role);
  gst_structure_free (role);

  g_signal_connect_data (
      f, "media-configure", G_CALLBACK (+[] (GstRTSPMediaFactory *, GstRTSPMedia *media, gpointer data) {
        auto mount = *static_cast<std::shared_ptr<Mount> *> (data);
        g_object_set_data_full (G_OBJECT (media), kSdpTitleKey, g_strdup (mount->title.c_str ()), g_free);
        GstElement *bin = gst_rtsp_media_get_element (media);
        GstElement *src = gst_bin_get_by_name_recurse_up (GST_BIN (bin), "src");
        gst_object_unref (bin);
        if (!src)
          return;
        int handle = mount->view->add_viewer (GST_APP_SRC (src), ViewStream::Timestamps::kCaptureClock);
        gst_object_unref (src);
        struct Ctx {
          std::shared_ptr<Mount> mount;
          int handle;
        };
        g_signal_connect_data (
            media, "unprepared", G_CALLBACK (+[] (GstRTSPMedia *, gpointer d) {
              auto *c = static_cast<Ctx *> (d);
              c->mount->view->remove_viewer (c->handle);
            }),
            new Ctx{mount, handle}, [] (gpointer d, GClosure *) { delete static_cast<Ctx *> (d); },
            G_CONNECT_DEFAULT);
      }),
      new std::shared_ptr<Mount> (mount),
      [] (gpointer d, GClosure *) { delete static_cast<std::shared_ptr<Mount> *> (d); }, G_CONNECT_DEFAULT);
  mount->factory = f;

  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points (server_);
  gst_rtsp_mount_points_add_factory (mounts, ("/s/" + s.id).c_str (),
                                     GST_RTSP_MEDIA_FACTORY (g_object_ref (f)));
  g_object_unref (mounts);

  // Digest credentials from the stored HA1 (the token itself is not kept):
  // gst-rtsp-server reads them from an htdigest line.
  std::string path = state_dir_ + "/.htdigest-" + s.id;
  std::string line = s.id + ":" + kRealm + ":" + s.digest_ha1 + "\n";
  g_file_set_contents_full (path.c_str (), line.c_str (), (gssize)line.size (), G_FILE_SET_CONTENTS_NONE,
                            0600, nullptr);
  GstRTSPToken *token = gst_rtsp_token_new (GST_RTSP_TOKEN_MEDIA_FACTORY_ROLE, G_TYPE_STRING,
                                            role_for (s.id).c_str (), nullptr);
  gst_rtsp_auth_parse_htdigest (auth_, path.c_str (), token);
  gst_rtsp_token_unref (token);
  g_remove (path.c_str ());
  mounts_[s.id] = mount;
}

namespace {

// The players of one mount path: each client's RTSP session that plays it,
// and the media they share.  Holds references until destroyed.
struct MountPlayers {
  struct Player {
    GstRTSPClient *client;
    GstRTSPSession *session;
  };
  std::string path;
  std::vector<Player> players;
  std::vector<GstRTSPMedia *> media;
  ~MountPlayers ()
  {
    for (auto &p : players) {
      g_object_unref (p.client);
      g_object_unref (p.session);
    }
    for (GstRTSPMedia *m : media)
      g_object_unref (m);
  }
};

struct Walk {
  MountPlayers *out;
  GstRTSPClient *client;
};

GstRTSPFilterResult
media_filter (GstRTSPSession *session, GstRTSPSessionMedia *sm, gpointer data)
{
  auto *w = static_cast<Walk *> (data);
  gint matched = 0;
  if (!gst_rtsp_session_media_matches (sm, w->out->path.c_str (), &matched)
      || matched != (gint)w->out->path.size ())
    return GST_RTSP_FILTER_KEEP;
  w->out->players.push_back (
      {GST_RTSP_CLIENT (g_object_ref (w->client)), GST_RTSP_SESSION (g_object_ref (session))});
  GstRTSPMedia *media = gst_rtsp_session_media_get_media (sm);
  if (media && std::find (w->out->media.begin (), w->out->media.end (), media) == w->out->media.end ())
    w->out->media.push_back (GST_RTSP_MEDIA (g_object_ref (media)));
  return GST_RTSP_FILTER_KEEP;
}

void
players_of (GstRTSPServer *server, MountPlayers &out)
{
  gst_rtsp_server_client_filter (
      server,
      [] (GstRTSPServer *, GstRTSPClient *client, gpointer data) -> GstRTSPFilterResult {
        Walk w{static_cast<MountPlayers *> (data), client};
        gst_rtsp_client_session_filter (
            client,
            [] (GstRTSPClient *, GstRTSPSession *session, gpointer d) -> GstRTSPFilterResult {
              gst_rtsp_session_filter (session, media_filter, d);
              return GST_RTSP_FILTER_KEEP;
            },
            &w);
        return GST_RTSP_FILTER_KEEP;
      },
      &out);
}

size_t
count_players (GstRTSPServer *server, const std::string &path)
{
  MountPlayers mp;
  mp.path = path;
  players_of (server, mp);
  return mp.players.size ();
}

// Ends every player of a removed mount, the way a TEARDOWN would: their
// session media stop and are released (the media no longer sends to them,
// and the last one unprepares it), their RTSP sessions go, then their
// connections close.
void
disconnect_players (GstRTSPServer *server, const std::string &path)
{
  MountPlayers mp;
  mp.path = path;
  players_of (server, mp);
  GstRTSPSessionPool *pool = gst_rtsp_server_get_session_pool (server);
  for (auto &p : mp.players) {
    gint matched = 0;
    GstRTSPSessionMedia *sm = gst_rtsp_session_get_media (p.session, path.c_str (), &matched);
    if (!sm)
      continue;
    GstRTSPMedia *media = GST_RTSP_MEDIA (g_object_ref (gst_rtsp_session_media_get_media (sm)));
    gst_rtsp_media_lock (media);
    gst_rtsp_session_media_set_state (sm, GST_STATE_NULL);
    if (!gst_rtsp_session_release_media (p.session, sm))
      gst_rtsp_session_pool_remove (pool, p.session);
    gst_rtsp_media_unlock (media);
    g_object_unref (media);
  }
  g_object_unref (pool);
  for (auto &p : mp.players)
    gst_rtsp_client_close (p.client);
}

} // namespace

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
  // The session's players stop now, not at their next request.  First the
  // stream ends (EOS into the media's appsrc): rtpbin sends RTCP BYE, so
  // players over TCP or UDP end their stream rather than wait for packets.
  // It is a media of a removed mount: no new player can get it meanwhile.
  {
    MountPlayers mp;
    mp.path = path;
    players_of (server_, mp);
    for (GstRTSPMedia *m : mp.media) {
      GstElement *bin = gst_rtsp_media_get_element (m);
      if (GstElement *src = gst_bin_get_by_name_recurse_up (GST_BIN (bin), "src")) {
        gst_app_src_end_of_stream (GST_APP_SRC (src));
        gst_object_unref (src);
      }
      gst_object_unref (bin);
    }
  }
  // Then, once the BYE is out, their sessions and connections.
  struct Later {
    GstRTSPServer *server;
    std::string path;
  };
  g_timeout_add (
      300,
      [] (gpointer d) -> gboolean {
        std::unique_ptr<Later> l (static_cast<Later *> (d));
        disconnect_players (l->server, l->path);
        g_object_unref (l->server);
        return G_SOURCE_REMOVE;
      },
      new Later{GST_RTSP_SERVER (g_object_ref (server_)), path});
  g_object_unref (it->second->factory);
  mounts_.erase (it);
}

size_t
RtspService::viewers (uint32_t view_id) const
{
  size_t n = 0;
  for (const auto &kv : mounts_)
    if (kv.second->view->id () == view_id)
      n += count_players (server_, "/s/" + kv.first);
  return n;
}

size_t
RtspService::viewers () const
{
  size_t n = 0;
  for (const auto &kv : mounts_)
    n += count_players (server_, "/s/" + kv.first);
  return n;
}

} // namespace livemicro::orchestrator
