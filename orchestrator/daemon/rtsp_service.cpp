#include "rtsp_service.h"

#include <glib/gstdio.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <stdexcept>

namespace livemicro::orchestrator {

// The factory every session of one view mounts (each at its own path), so
// that all their players share one media.
struct RtspService::ViewMount {
  std::shared_ptr<ViewStream> view;
  std::string title; // the SDP session name
  GstRTSPMediaFactory *factory = nullptr;
  std::set<std::string> sessions; // ids
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

// A factory whose media is the same whatever the path it is reached by:
// every session of a view mounts it, and their players share one media.
struct LivemicroViewFactory {
  GstRTSPMediaFactory parent;
};
struct LivemicroViewFactoryClass {
  GstRTSPMediaFactoryClass parent_class;
};
G_DEFINE_TYPE (LivemicroViewFactory, livemicro_view_factory, GST_TYPE_RTSP_MEDIA_FACTORY)

void
livemicro_view_factory_class_init (LivemicroViewFactoryClass *klass)
{
  GST_RTSP_MEDIA_FACTORY_CLASS (klass)->gen_key
      = [] (GstRTSPMediaFactory *, const GstRTSPUrl *) -> gchar * { return g_strdup ("view"); };
}

void
livemicro_view_factory_init (LivemicroViewFactory *)
{}

// The session's mount, in its Digest token: a session's credentials open
// only its own path, although every session of a view mounts one factory
// (whose permissions name all of their roles).
constexpr const char *kTokenMount = "livemicro.mount";

bool
path_is_under (const char *path, const std::string &mount)
{
  size_t n = mount.size ();
  return path && strncmp (path, mount.c_str (), n) == 0 && (path[n] == '\0' || path[n] == '/');
}

struct LivemicroRtspAuth {
  GstRTSPAuth parent;
};
struct LivemicroRtspAuthClass {
  GstRTSPAuthClass parent_class;
};
G_DEFINE_TYPE (LivemicroRtspAuth, livemicro_rtsp_auth, GST_TYPE_RTSP_AUTH)

gboolean
livemicro_rtsp_auth_check (GstRTSPAuth *auth, GstRTSPContext *ctx, const gchar *check)
{
  if (!GST_RTSP_AUTH_CLASS (livemicro_rtsp_auth_parent_class)->check (auth, ctx, check))
    return FALSE;
  if (!g_str_equal (check, GST_RTSP_AUTH_CHECK_MEDIA_FACTORY_ACCESS))
    return TRUE;
  const gchar *mount = ctx->token ? gst_rtsp_token_get_string (ctx->token, kTokenMount) : nullptr;
  if (mount && ctx->uri && path_is_under (ctx->uri->abspath, mount))
    return TRUE;
  // Another session's mount: 404, as gst-rtsp-server answers a role
  // without access (it does not say the mount exists).
  if (ctx->request && ctx->response && ctx->client) {
    gst_rtsp_message_init_response (ctx->response, GST_RTSP_STS_NOT_FOUND,
                                    gst_rtsp_status_as_text (GST_RTSP_STS_NOT_FOUND), ctx->request);
    gst_rtsp_client_send_message (ctx->client, ctx->session, ctx->response);
  }
  return FALSE;
}

void
livemicro_rtsp_auth_class_init (LivemicroRtspAuthClass *klass)
{
  GST_RTSP_AUTH_CLASS (klass)->check = livemicro_rtsp_auth_check;
}

void
livemicro_rtsp_auth_init (LivemicroRtspAuth *)
{}

// The view a media streams and its viewer handle there, for its players'
// PLAY requests.
constexpr const char *kViewKey = "livemicro-view";
struct MediaViewer {
  std::weak_ptr<ViewStream> view;
  int handle;
};

// The first PLAY of a media starts its stream (ViewStream::play_viewer); a
// player joining a media that already streams (another session of the view
// plays it) starts at a keyframe asked for now, not at the view's next
// regular one.
//
// A view's frames leave as soon as the worker hands them over: without
// rate control the stream's sink does not hold each packet until the
// pipeline's running time reaches its (capture-clock) timestamp, which cost
// every RTSP player 15-25 ms glass to glass and, after a late anchor frame,
// tens more (docs/benchmarks.md).  The frames come from a live capture, so
// there is nothing to pace; the RTP timestamps still carry the capture
// times for the players' jitter buffers.  gst-rtsp-server turns rate
// control back on at every PLAY without a "Rate-Control: no" header, so it
// is turned off here, after the request was handled.
void
on_play_request (GstRTSPClient *, GstRTSPContext *ctx, gpointer)
{
  if (!ctx->media)
    return;
  gst_rtsp_media_set_rate_control (ctx->media, FALSE);
  auto *mv = static_cast<MediaViewer *> (g_object_get_data (G_OBJECT (ctx->media), kViewKey));
  if (auto view = mv ? mv->view.lock () : nullptr)
    view->play_viewer (mv->handle);
}

GstRTSPPermissions *
permissions_for (const std::set<std::string> &sessions)
{
  GstRTSPPermissions *p = gst_rtsp_permissions_new ();
  for (const auto &id : sessions)
    gst_rtsp_permissions_add_role (p, role_for (id).c_str (), GST_RTSP_PERM_MEDIA_FACTORY_ACCESS,
                                   G_TYPE_BOOLEAN, TRUE, GST_RTSP_PERM_MEDIA_FACTORY_CONSTRUCT,
                                   G_TYPE_BOOLEAN, TRUE, nullptr);
  return p;
}

} // namespace

RtspService::RtspService (std::string address, int port, std::string state_dir, int client_threads)
    : address_ (std::move (address)), state_dir_ (std::move (state_dir)), port_ (port),
      client_threads_ (client_threads)
{}

RtspService::~RtspService ()
{
  if (source_)
    g_source_remove (source_);
  for (auto &kv : views_)
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
  // Connections share a fixed number of threads, whatever their number.
  GstRTSPThreadPool *pool = gst_rtsp_server_get_thread_pool (server_);
  gst_rtsp_thread_pool_set_max_threads (pool, client_threads_);
  g_object_unref (pool);
  g_signal_connect (server_, "client-connected", G_CALLBACK (+[] (GstRTSPServer *, GstRTSPClient *client) {
                      g_signal_connect (client, "play-request", G_CALLBACK (on_play_request), nullptr);
                    }),
                    nullptr);
  auth_ = GST_RTSP_AUTH (g_object_new (livemicro_rtsp_auth_get_type (), nullptr));
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

namespace {

// The one factory of a view: its media is an appsrc the view feeds, shared
// by every player of every session of the view.
GstRTSPMediaFactory *
view_factory (const std::shared_ptr<ViewStream> &view, const std::string &title)
{
  GstRTSPMediaFactory *f
      = GST_RTSP_MEDIA_FACTORY (g_object_new (livemicro_view_factory_get_type (), nullptr));
  gst_rtsp_media_factory_set_launch (
      f, "( appsrc name=src is-live=true format=time do-timestamp=false min-latency=0 "
         "! rtph264pay name=pay0 pt=96 config-interval=0 aggregate-mode=zero-latency )");
  gst_rtsp_media_factory_set_media_gtype (f, livemicro_rtsp_media_get_type ());
  gst_rtsp_media_factory_set_shared (f, TRUE);
  gst_rtsp_media_factory_set_suspend_mode (f, GST_RTSP_SUSPEND_MODE_NONE);
  struct Feed {
    std::shared_ptr<ViewStream> view;
    std::string title;
  };
  g_signal_connect_data (
      f, "media-configure", G_CALLBACK (+[] (GstRTSPMediaFactory *, GstRTSPMedia *media, gpointer data) {
        auto *feed = static_cast<Feed *> (data);
        g_object_set_data_full (G_OBJECT (media), kSdpTitleKey, g_strdup (feed->title.c_str ()), g_free);
        GstElement *bin = gst_rtsp_media_get_element (media);
        GstElement *src = gst_bin_get_by_name_recurse_up (GST_BIN (bin), "src");
        gst_object_unref (bin);
        if (!src)
          return;
        int handle = feed->view->add_viewer (GST_APP_SRC (src), ViewStream::Timestamps::kCaptureClock, true);
        gst_object_unref (src);
        g_object_set_data_full (G_OBJECT (media), kViewKey, new MediaViewer{feed->view, handle},
                                [] (gpointer p) { delete static_cast<MediaViewer *> (p); });
        struct Ctx {
          std::shared_ptr<ViewStream> view;
          int handle;
        };
        g_signal_connect_data (
            media, "unprepared", G_CALLBACK (+[] (GstRTSPMedia *, gpointer d) {
              auto *c = static_cast<Ctx *> (d);
              c->view->remove_viewer (c->handle);
            }),
            new Ctx{feed->view, handle}, [] (gpointer d, GClosure *) { delete static_cast<Ctx *> (d); },
            G_CONNECT_DEFAULT);
      }),
      new Feed{view, sdp_text (title)}, [] (gpointer d, GClosure *) { delete static_cast<Feed *> (d); },
      G_CONNECT_DEFAULT);
  return f;
}

} // namespace

void
RtspService::add_session (const SessionRecord &s, std::shared_ptr<ViewStream> view, const std::string &title)
{
  remove_session (s.id);
  std::shared_ptr<ViewMount> &vm = views_[view.get ()];
  if (!vm) {
    vm = std::make_shared<ViewMount> ();
    vm->view = view;
    vm->factory = view_factory (view, title);
  }
  vm->sessions.insert (s.id);
  GstRTSPPermissions *perms = permissions_for (vm->sessions);
  gst_rtsp_media_factory_set_permissions (vm->factory, perms);
  gst_rtsp_permissions_unref (perms);

  const std::string path = "/s/" + s.id;
  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points (server_);
  gst_rtsp_mount_points_add_factory (mounts, path.c_str (),
                                     GST_RTSP_MEDIA_FACTORY (g_object_ref (vm->factory)));
  g_object_unref (mounts);

  // Digest credentials from the stored HA1 (the token itself is not kept):
  // gst-rtsp-server reads them from an htdigest line.
  std::string file = state_dir_ + "/.htdigest-" + s.id;
  std::string line = s.id + ":" + kRealm + ":" + s.digest_ha1 + "\n";
  g_file_set_contents_full (file.c_str (), line.c_str (), (gssize)line.size (), G_FILE_SET_CONTENTS_NONE,
                            0600, nullptr);
  GstRTSPToken *token
      = gst_rtsp_token_new (GST_RTSP_TOKEN_MEDIA_FACTORY_ROLE, G_TYPE_STRING, role_for (s.id).c_str (),
                            kTokenMount, G_TYPE_STRING, path.c_str (), nullptr);
  gst_rtsp_auth_parse_htdigest (auth_, file.c_str (), token);
  gst_rtsp_token_unref (token);
  g_remove (file.c_str ());
  mounts_[s.id] = vm;
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
  std::shared_ptr<ViewMount> vm = it->second;
  mounts_.erase (it);
  gst_rtsp_auth_remove_digest (auth_, id.c_str ());
  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points (server_);
  std::string path = "/s/" + id;
  gst_rtsp_mount_points_remove_factory (mounts, path.c_str ());
  g_object_unref (mounts);
  vm->sessions.erase (id);
  if (vm->sessions.empty ()) {
    views_.erase (vm->view.get ());
    g_object_unref (vm->factory);
  } else {
    GstRTSPPermissions *perms = permissions_for (vm->sessions);
    gst_rtsp_media_factory_set_permissions (vm->factory, perms);
    gst_rtsp_permissions_unref (perms);
  }
  // The session's players stop now, not at their next request.
  bool others_play = false;
  for (const auto &other : vm->sessions)
    others_play = others_play || count_players (server_, "/s/" + other) > 0;
  if (others_play) {
    // The view's media goes on for the other sessions' players: these
    // players' transports leave it, their RTSP sessions go, their
    // connections close (a player over UDP hears of it when its connection
    // closes; rtspsrc gives up after its UDP timeout).
    disconnect_players (server_, path);
    return;
  }
  // Only this session's players play the media: first its stream ends (EOS
  // into its appsrc), so rtpbin sends RTCP BYE and players over TCP or UDP
  // end their stream rather than wait for packets; the media is no longer
  // shared, so a player arriving meanwhile (another session of the view)
  // gets a new one.  Then, once the BYE is out, their sessions and
  // connections go.
  {
    MountPlayers mp;
    mp.path = path;
    players_of (server_, mp);
    for (GstRTSPMedia *m : mp.media) {
      gst_rtsp_media_set_shared (m, FALSE);
      GstElement *bin = gst_rtsp_media_get_element (m);
      if (GstElement *src = gst_bin_get_by_name_recurse_up (GST_BIN (bin), "src")) {
        gst_app_src_end_of_stream (GST_APP_SRC (src));
        gst_object_unref (src);
      }
      gst_object_unref (bin);
    }
  }
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
