#include "http_api.h"

#include "api_json.h"
#include "common/qupath_geojson.h"
#include "common/tokens.h"
#include "ws_guard.h"

#include <json-glib/json-glib.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <stdexcept>

namespace livemicro::orchestrator {

using api::add_json;
using api::add_string;
using api::error_json;
using api::recording_json;
using api::to_string;

int
http_status (Reason reason)
{
  switch (reason) {
  case Reason::kMalformed:
    return 400;
  case Reason::kUnauthenticated:
    return 401;
  case Reason::kForbidden:
    return 403;
  case Reason::kNotFound:
    return 404;
  case Reason::kConflict:
    return 409;
  case Reason::kTooLarge:
    return 413;
  case Reason::kInvalid:
    return 422;
  case Reason::kRateLimited:
    return 429;
  case Reason::kUnavailable:
    return 503;
  case Reason::kTimedOut:
    return 504;
  case Reason::kUnsupportedMediaType:
    return 415;
  }
  return 500;
}

namespace {

// Set on a request one node forwards to another: the receiver answers it
// itself (no forwarding loops between nodes that disagree for a moment).
constexpr const char *kForwardedBy = "X-LiveMicro-Forwarded-By";

void
respond (SoupServerMessage *msg, int status, const std::string &body, const char *type = "application/json")
{
  soup_server_message_set_status (msg, status, nullptr);
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);
  soup_message_headers_replace (h, "Cache-Control", "no-store");
  // One request per connection: libsoup 3.2 keeps a keep-alive connection
  // that the client closed after a response with a body in CLOSE-WAIT
  // forever (an fd per request; fixed upstream in 3.3), so the daemon
  // closes each connection after its response.
  soup_message_headers_replace (h, "Connection", "close");
  soup_server_message_set_response (msg, type, SOUP_MEMORY_COPY, body.data (), body.size ());
}

void
respond_error (SoupServerMessage *msg, int status, const std::string &message)
{
  if (status == 401)
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "WWW-Authenticate",
                                  "Bearer realm=\"LiveMicro\"");
  respond (msg, status, error_json (message));
}

std::vector<std::string>
split_path (const std::string &path)
{
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size ()) {
    size_t j = path.find ('/', i);
    if (j == std::string::npos)
      j = path.size ();
    if (j > i)
      parts.push_back (path.substr (i, j - i));
    i = j + 1;
  }
  return parts;
}

std::string
bearer_of (SoupServerMessage *msg)
{
  const char *auth
      = soup_message_headers_get_one (soup_server_message_get_request_headers (msg), "Authorization");
  if (!auth || g_ascii_strncasecmp (auth, "Bearer ", 7))
    return "";
  std::string t = auth + 7;
  while (!t.empty () && t.front () == ' ')
    t.erase (t.begin ());
  while (!t.empty () && (t.back () == ' ' || t.back () == '\r'))
    t.pop_back ();
  return t;
}

// The request's body as one JSON object (size and nesting bounded).
JsonInput
body_of (SoupServerMessage *msg, size_t max_bytes)
{
  SoupMessageBody *body = soup_server_message_get_request_body (msg);
  g_autoptr (GBytes) bytes = soup_message_body_flatten (body);
  gsize len = 0;
  const char *data = static_cast<const char *> (g_bytes_get_data (bytes, &len));
  return JsonInput::parse (data ? data : "", len, max_bytes);
}

} // namespace

// A browser viewer: its WebSocket, its WebRTC peer, its event subscription.
struct HttpApi::Viewer {
  SoupWebsocketConnection *conn = nullptr;
  bool events_only = false; // /api/v1/microscopes/{id}/events
  bool want_webrtc = true;
  bool want_nuclei = false; // asked for in its hello (tens to hundreds of kB each)
  bool relayed = false;     // another node relays it (that node tells the page where to go on)
  Principal who;
  int presence = 0;
  bool reads_analysis = false; // counted by its hub's demand
  std::string session_id;
  std::string microscope;
  std::string count_key; // microscope/profile for the WebRTC viewer gauge
  bool authenticated = false;
  bool ended = false; // closing: nothing it sends counts any more
  std::shared_ptr<WebRtcPeer> peer;
  std::unique_ptr<HomeLink> home; // its events, when its microscope is homed elsewhere
  bool holds_view = false;        // its view is relayed here while it is here
  int listener = 0;
  guint auth_timeout = 0;
  gulong closed_handler = 0, message_handler = 0;
};

std::string
HttpApi::Call::query_value (const char *key) const
{
  const char *v = query ? static_cast<const char *> (g_hash_table_lookup (query, key)) : nullptr;
  return v ? v : "";
}

HttpApi::HttpApi (Node &node) : node_ (node)
{
  forwarder_ = soup_session_new_with_options ("timeout", 15, "idle-timeout", 30, nullptr);
}

HttpApi::~HttpApi ()
{
  if (reap_timer_)
    g_source_remove (reap_timer_);
  if (nodes_timer_)
    g_source_remove (nodes_timer_);
  while (!viewers_.empty ())
    close_viewer (viewers_.begin ()->first);
  if (whep_listener_)
    node_.remove_listener (whep_listener_);
  while (!whep_.empty ())
    end_whep (whep_.begin ()->first);
  if (forwarder_) {
    soup_session_abort (forwarder_);
    g_clear_object (&forwarder_);
  }
  if (server_) {
    soup_server_disconnect (server_);
    g_object_unref (server_);
  }
}

namespace {

// Limits on what a request may send before the daemon reads it: the body
// (declared or chunked) and how long its headers may take.
struct RequestGuard {
  size_t max_body_bytes = 0;
  size_t received = 0;
  bool refused = false;
  guint header_timer = 0;
  ~RequestGuard ()
  {
    if (header_timer)
      g_source_remove (header_timer);
  }
};

constexpr guint kHeaderTimeoutS = 10;
// Past this many times the limit the daemon stops listening to the sender.
constexpr size_t kBodyCutFactor = 16;

// Drops the connection at once: shut down, then closed under libsoup (whose
// next read sees it closed and ends the message), so that a sender still
// pushing bytes gets a reset instead of a full window for minutes.
void
cut_connection (SoupServerMessage *msg)
{
  if (GSocket *sock = soup_server_message_get_socket (msg)) {
    g_socket_shutdown (sock, TRUE, TRUE, nullptr);
    g_socket_close (sock, nullptr);
  }
}

// A body over the limit: answered 413 (once the rest is read and
// discarded), or cut when the sender goes on far beyond it.
void
refuse_body (SoupServerMessage *msg, RequestGuard *g)
{
  if (!g->refused) {
    g->refused = true;
    soup_message_body_set_accumulate (soup_server_message_get_request_body (msg), FALSE);
    respond_error (msg, 413, "request body larger than " + std::to_string (g->max_body_bytes) + " bytes");
  }
  if (g->received > kBodyCutFactor * g->max_body_bytes)
    cut_connection (msg);
}

void
on_request_started (SoupServer *, SoupServerMessage *msg, gpointer self)
{
  auto *api = static_cast<HttpApi *> (self);
  api->socket_reaper ().track (soup_server_message_get_socket (msg));
  api->socket_reaper ().sweep ();
  auto *g = new RequestGuard;
  g->max_body_bytes = api->max_body_bytes ();
  g_object_set_data_full (G_OBJECT (msg), "livemicro-guard", g,
                          [] (gpointer d) { delete static_cast<RequestGuard *> (d); });
  // A client that connects and never finishes its headers is dropped.
  g->header_timer = g_timeout_add_seconds (
      kHeaderTimeoutS,
      [] (gpointer d) -> gboolean {
        auto *m = static_cast<SoupServerMessage *> (d);
        if (auto *g = static_cast<RequestGuard *> (g_object_get_data (G_OBJECT (m), "livemicro-guard"))) {
          g->header_timer = 0;
          cut_connection (m);
        }
        return G_SOURCE_REMOVE;
      },
      msg);
  g_signal_connect (msg, "got-headers", G_CALLBACK (+[] (SoupServerMessage *m, gpointer) {
                      auto *g
                          = static_cast<RequestGuard *> (g_object_get_data (G_OBJECT (m), "livemicro-guard"));
                      if (g->header_timer) {
                        g_source_remove (g->header_timer);
                        g->header_timer = 0;
                      }
                      SoupMessageHeaders *h = soup_server_message_get_request_headers (m);
                      const bool chunked = soup_message_headers_get_one (h, "Transfer-Encoding") != nullptr;
                      const bool sized = soup_message_headers_get_one (h, "Content-Length") != nullptr;
                      if (chunked && sized) {
                        // Ambiguous framing (request smuggling through a proxy): refused.
                        g->refused = true;
                        soup_message_body_set_accumulate (soup_server_message_get_request_body (m), FALSE);
                        respond_error (m, 400, "Content-Length and Transfer-Encoding together are refused");
                        return;
                      }
                      goffset len = sized ? soup_message_headers_get_content_length (h) : 0;
                      if (len > (goffset)g->max_body_bytes) {
                        g->received = (size_t)len;
                        refuse_body (m, g);
                      }
                    }),
                    nullptr);
  g_signal_connect (msg, "got-chunk", G_CALLBACK (+[] (SoupServerMessage *m, GBytes *chunk, gpointer) {
                      auto *g
                          = static_cast<RequestGuard *> (g_object_get_data (G_OBJECT (m), "livemicro-guard"));
                      g->received += g_bytes_get_size (chunk);
                      if (g->received > g->max_body_bytes)
                        refuse_body (m, g);
                    }),
                    nullptr);
  // The guard (and its timer) goes with the request, whatever happens to it.
  g_signal_connect (msg, "finished", G_CALLBACK (+[] (SoupServerMessage *m, gpointer) {
                      g_object_set_data (G_OBJECT (m), "livemicro-guard", nullptr);
                    }),
                    nullptr);
}

} // namespace

void
HttpApi::start ()
{
  server_ = soup_server_new ("server-header", "livemicrod", nullptr);
  if (node_.tls ())
    g_object_set (server_, "tls-certificate", node_.tls (), nullptr);
  g_signal_connect (server_, "request-started", G_CALLBACK (on_request_started), this);
  // Sockets of the last connections are freed even when no request follows.
  reap_timer_ = g_timeout_add_seconds (
      5,
      [] (gpointer self) -> gboolean {
        static_cast<HttpApi *> (self)->socket_reaper ().sweep ();
        return G_SOURCE_CONTINUE;
      },
      this);
  // Pages learn when nodes join or leave the edge cloud (where to go on).
  nodes_timer_ = g_timeout_add_seconds (
      1,
      [] (gpointer self) -> gboolean {
        static_cast<HttpApi *> (self)->refresh_failover_nodes ();
        return G_SOURCE_CONTINUE;
      },
      this);
  soup_server_add_handler (server_, nullptr, on_request, this, nullptr);

  const Config &config = node_.config ();
  g_autoptr (GError) error = nullptr;
  g_autoptr (GInetAddress) addr = g_inet_address_new_from_string (config.listen_address.c_str ());
  if (!addr)
    throw std::runtime_error ("HTTP: listen_address '" + config.listen_address + "' is not an IP address");
  g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (addr, (guint16)config.http_port);
  SoupServerListenOptions opts = node_.tls () ? SOUP_SERVER_LISTEN_HTTPS : (SoupServerListenOptions)0;
  if (!soup_server_listen (server_, sa, opts, &error))
    throw std::runtime_error ("HTTP: cannot listen on " + config.listen_address + ":"
                              + std::to_string (config.http_port) + ": " + error->message);
  GSList *uris = soup_server_get_uris (server_);
  if (uris)
    port_ = g_uri_get_port (static_cast<GUri *> (uris->data));
  g_slist_free_full (uris, (GDestroyNotify)g_uri_unref);
  node_.set_http_port (port_);
  // A session that ends takes its WHEP peers with it.
  whep_listener_ = node_.add_listener ([this] (const Node::Event &e) {
    if (e.kind != "session_ended")
      return;
    std::vector<std::string> gone;
    for (const auto &[id, r] : whep_)
      if (r.session_id == e.session)
        gone.push_back (id);
    for (const auto &id : gone)
      end_whep (id);
  });
}

size_t
HttpApi::max_body_bytes () const
{
  return node_.config ().max_body_bytes;
}

void
HttpApi::on_request (SoupServer *, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer self)
{
  auto *api = static_cast<HttpApi *> (self);
  if (soup_server_message_get_status (msg) != 0)
    return; // answered while the request was read (413, 400)
  try {
    api->route (msg, path, query);
  } catch (const Refusal &e) {
    respond_error (msg, http_status (e.reason), e.message);
  } catch (const StoreError &e) {
    g_warning ("state database: %s", e.what ());
    respond_error (msg, 503, "the state database is not available just now; try again");
  } catch (const std::exception &e) {
    respond_error (msg, 500, std::string ("internal error: ") + e.what ());
  }
}

namespace {} // namespace

const std::vector<HttpApi::Route> &
HttpApi::routes ()
{
  static const std::vector<Route> table = {
      {"GET", "/healthz", false, &HttpApi::healthz},
      {"GET", "/metrics", false, &HttpApi::metrics},
      {"GET", "/view/{}", false, &HttpApi::viewer_page},
      {"GET", "/web/{}", false, &HttpApi::web_file},
      {"POST", "/api/v1/sessions", true, &HttpApi::create_session},
      {"GET", "/api/v1/sessions", true, &HttpApi::list_sessions},
      {"GET", "/api/v1/sessions/{}", true, &HttpApi::get_session},
      {"DELETE", "/api/v1/sessions/{}", true, &HttpApi::end_session},
      {"POST", "/api/v1/sessions/{}/stills", true, &HttpApi::take_still},
      {"POST", "/api/v1/sessions/{}/recording", true, &HttpApi::start_recording},
      {"GET", "/api/v1/sessions/{}/recording", true, &HttpApi::get_recording},
      {"DELETE", "/api/v1/sessions/{}/recording", true, &HttpApi::stop_recording},
      {"GET", "/api/v1/sessions/{}/annotations.geojson", true, &HttpApi::annotations_geojson},
      {"GET", "/api/v1/microscopes", true, &HttpApi::list_microscopes},
      {"GET", "/api/v1/microscopes/{}", true, &HttpApi::get_microscope},
      {"GET", "/api/v1/microscopes/{}/overview", true, &HttpApi::slide_map},
      {"GET", "/api/v1/microscopes/{}/overview.png", true, &HttpApi::slide_map_png},
      {"POST", "/api/v1/microscopes/{}/control", true, &HttpApi::control},
      {"POST", "/api/v1/microscopes/{}/commands", true, &HttpApi::command},
      {"GET", "/api/v1/microscopes/{}/commands/{}", true, &HttpApi::get_command},
      {"POST", "/api/v1/microscopes/{}/keyframe", true, &HttpApi::keyframe},
      {"GET", "/api/v1/microscopes/{}/annotations", true, &HttpApi::list_annotations},
      {"POST", "/api/v1/microscopes/{}/annotations", true, &HttpApi::add_annotation},
      {"DELETE", "/api/v1/microscopes/{}/annotations/{}", true, &HttpApi::delete_annotation},
      {"GET", "/api/v1/microscopes/{}/annotations.geojson", true, &HttpApi::microscope_annotations_geojson},
      {"GET", "/api/v1/audit", true, &HttpApi::audit},
      {"GET", "/api/v1/cluster", true, &HttpApi::cluster},
      {"POST", "/api/v1/cluster/sessions/{}", true, &HttpApi::adopt_placed_session},
      {"POST", "/whep/{}", true, &HttpApi::whep_offer},
      {"DELETE", "/whep/{}/{}", true, &HttpApi::whep_delete},
  };
  return table;
}

namespace {

// Whether `parts` fit `pattern`; its {parameters} go to `params`.
bool
matches (const char *pattern, const std::vector<std::string> &parts, std::vector<std::string> &params)
{
  std::vector<std::string> want = split_path (pattern);
  if (want.size () != parts.size ())
    return false;
  std::vector<std::string> found;
  for (size_t i = 0; i < want.size (); i++) {
    if (want[i] == "{}")
      found.push_back (parts[i]);
    else if (want[i] != parts[i])
      return false;
  }
  params = std::move (found);
  return true;
}

} // namespace

void
HttpApi::route (SoupServerMessage *msg, const std::string &path, GHashTable *query)
{
  const std::string method = soup_server_message_get_method (msg);
  std::vector<std::string> parts = split_path (path);

  // WHEP from browser players on other origins: CORS headers on every
  // answer, and preflights (which carry no token) answered here.
  if (!parts.empty () && parts[0] == "whep") {
    allow_cross_origin (msg);
    if (method == "OPTIONS") {
      whep_options (msg, parts);
      return;
    }
  }

  // WebSockets: /ws/{session} (the viewer page) and
  // /api/v1/microscopes/{id}/events (event clients).
  const bool ws_path = (parts.size () == 2 && parts[0] == "ws")
                       || (parts.size () == 5 && parts[0] == "api" && parts[1] == "v1"
                           && parts[2] == "microscopes" && parts[4] == "events");
  if (ws_path) {
    if (!is_websocket_request (msg) || method != "GET")
      throw Refusal{Reason::kMalformed, "this path is a WebSocket: GET with Upgrade: websocket"};
    std::string why;
    if (!accept_websocket (msg, node_.config ().max_body_bytes, on_websocket, this, &why))
      throw Refusal{Reason::kMalformed, why};
    return;
  }

  // The route: a path no route has is 404; a path some route has, with
  // another method, is 405 (after the token, for the API).
  const Route *hit = nullptr;
  std::vector<std::string> params;
  std::string allowed;
  bool authenticated = false;
  for (const Route &r : routes ()) {
    std::vector<std::string> p;
    if (!matches (r.pattern, parts, p))
      continue;
    authenticated = authenticated || r.authenticated;
    allowed += (allowed.empty () ? "" : ", ") + std::string (r.method);
    if (method == r.method) {
      hit = &r;
      params = std::move (p);
    }
  }
  if (allowed.empty ())
    throw Refusal{Reason::kNotFound,
                  parts.size () >= 2 && parts[0] == "api" ? "no such API route" : "no route " + path};
  Call call{msg, std::move (params), query, {}};
  if (authenticated) {
    std::string token = bearer_of (msg);
    if (token.empty ())
      throw Refusal{Reason::kUnauthenticated, "missing 'Authorization: Bearer <token>'"};
    call.who = node_.authenticate (token);
    if (!call.who.valid ())
      throw Refusal{Reason::kUnauthenticated, "invalid or expired token"};
  }
  if (!hit) {
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Allow", allowed.c_str ());
    respond_error (msg, 405, "method " + method + " not allowed here (allowed: " + allowed + ")");
    return;
  }
  if (auto home = forward_target (call, parts, method)) {
    forward (msg, *home);
    return;
  }
  (this->*(hit->handler)) (call);
}

// ---- the edge cloud: requests answered by a microscope's home node ---------------

namespace {

struct Forwarding {
  SoupServerMessage *msg; // paused, referenced
  SoupMessage *out;
  Node *node;
  bool creates_session; // POST /api/v1/sessions
};

void
on_forwarded (GObject *source, GAsyncResult *res, gpointer data)
{
  std::unique_ptr<Forwarding> f (static_cast<Forwarding *> (data));
  g_autoptr (GError) error = nullptr;
  g_autoptr (GBytes) body = soup_session_send_and_read_finish (SOUP_SESSION (source), res, &error);
  if (!body) {
    respond_error (f->msg, 502, std::string ("the microscope's home node did not answer: ") + error->message);
  } else {
    SoupMessageHeaders *in = soup_message_get_response_headers (f->out);
    SoupMessageHeaders *back = soup_server_message_get_response_headers (f->msg);
    for (const char *h : {"Location", "WWW-Authenticate", "Allow", "Retry-After", "ETag", "Link"})
      if (const char *v = soup_message_headers_get_one (in, h))
        soup_message_headers_replace (back, h, v);
    const char *type = soup_message_headers_get_content_type (in, nullptr);
    gsize len = 0;
    const char *data = static_cast<const char *> (g_bytes_get_data (body, &len));
    const int status = (int)soup_message_get_status (f->out);
    respond (f->msg, status, std::string (data ? data : "", len), type ? type : "application/json");
    if (f->creates_session && status == 201) {
      // Its view may be placed on this node: ready before the viewer comes.
      const char *location = soup_message_headers_get_one (in, "Location");
      const char *id = location ? strrchr (location, '/') : nullptr;
      if (id && id[1])
        f->node->adopt_session (id + 1);
    }
  }
  soup_server_message_unpause (f->msg);
  g_object_unref (f->msg);
  g_object_unref (f->out);
}

} // namespace

std::optional<std::string>
HttpApi::forward_target (const Call &c, const std::vector<std::string> &parts,
                         const std::string &method) const
{
  if (!node_.cluster ()
      || soup_message_headers_get_one (soup_server_message_get_request_headers (c.msg), kForwardedBy))
    return std::nullopt;
  const bool api = parts.size () >= 3 && parts[0] == "api" && parts[1] == "v1";
  std::string microscope;
  if (api && parts[2] == "microscopes" && parts.size () >= 4) {
    microscope = parts[3];
  } else if (api && parts[2] == "sessions" && parts.size () >= 4) {
    microscope = node_.microscope_of_cluster_session (parts[3]).value_or ("");
  } else if (api && parts[2] == "sessions" && parts.size () == 3 && method == "POST") {
    try {
      microscope = parse_session_request (body_of (c.msg, max_body_bytes ())).microscope.value_or ("");
    } catch (const Refusal &) {
      // Malformed: answered here, by the route.
    }
  } else if (parts.size () >= 2 && parts[0] == "whep") {
    // Answered where it is asked: a session's view is relayed to any node
    // its viewers reach, as for its viewer page.
    return std::nullopt;
  }
  // A session of a microscope homed elsewhere: its home answers what it asks.
  if (microscope.empty () && !c.who.admin && c.who.session)
    microscope = c.who.session->microscope;
  if (microscope.empty ())
    return std::nullopt;
  return node_.home_elsewhere (microscope);
}

void
HttpApi::forward (SoupServerMessage *msg, const std::string &base)
{
  GUri *uri = soup_server_message_get_uri (msg);
  const char *q = g_uri_get_query (uri);
  const std::string url = base + g_uri_get_path (uri) + (q ? std::string ("?") + q : "");
  SoupMessage *out = soup_message_new (soup_server_message_get_method (msg), url.c_str ());
  if (!out)
    throw Refusal{Reason::kUnavailable, "the microscope's home node has no usable address"};
  SoupMessageHeaders *in = soup_server_message_get_request_headers (msg);
  SoupMessageHeaders *to = soup_message_get_request_headers (out);
  for (const char *h : {"Authorization", "Accept"})
    if (const char *v = soup_message_headers_get_one (in, h))
      soup_message_headers_replace (to, h, v);
  soup_message_headers_replace (to, kForwardedBy, node_.cluster ()->config ().node.c_str ());
  g_autoptr (GBytes) body = soup_message_body_flatten (soup_server_message_get_request_body (msg));
  if (g_bytes_get_size (body) > 0) {
    const char *type = soup_message_headers_get_content_type (in, nullptr);
    soup_message_set_request_body_from_bytes (out, type ? type : "application/octet-stream", body);
  }
  soup_server_message_pause (msg);
  const bool creates_session = g_str_equal (soup_server_message_get_method (msg), "POST")
                               && g_str_equal (g_uri_get_path (uri), "/api/v1/sessions");
  soup_session_send_and_read_async (
      forwarder_, out, G_PRIORITY_DEFAULT, nullptr, on_forwarded,
      new Forwarding{SOUP_SERVER_MESSAGE (g_object_ref (msg)), out, &node_, creates_session});
}

// ---- routes without a token ------------------------------------------------------

void
HttpApi::healthz (Call &c)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "status", "ok");
  json_builder_set_member_name (b, "microscopes");
  json_builder_begin_object (b);
  for (const auto &[id, hub] : node_.hubs ())
    add_string (b, id.c_str (), hub->online () ? "online" : "offline");
  json_builder_end_object (b);
  json_builder_end_object (b);
  respond (c.msg, 200, to_string (b));
}

void
HttpApi::metrics (Call &c)
{
  respond (c.msg, 200, node_.metrics (), "text/plain; version=0.0.4");
}

namespace {

void
serve_file (SoupServerMessage *msg, const std::string &path, const char *type)
{
  g_autofree char *data = nullptr;
  gsize len = 0;
  if (!g_file_get_contents (path.c_str (), &data, &len, nullptr))
    throw Refusal{Reason::kNotFound, "no such file"};
  respond (msg, 200, std::string (data, len), type);
}

} // namespace

void
HttpApi::viewer_page (Call &c)
{
  serve_file (c.msg, node_.paths ().web + "/viewer.html", "text/html; charset=utf-8");
}

void
HttpApi::web_file (Call &c)
{
  static const std::map<std::string, const char *> files = {
      {"viewer.js", "text/javascript; charset=utf-8"},
      {"viewer.css", "text/css; charset=utf-8"},
  };
  auto it = files.find (c.params[0]);
  if (it == files.end ())
    throw Refusal{Reason::kNotFound, "no such file"};
  serve_file (c.msg, node_.paths ().web + "/" + it->first, it->second);
}

// ---- sessions -----------------------------------------------------------------------

namespace {

void
add_session (JsonBuilder *b, const Node &node, const Principal &who, const SessionRecord &s)
{
  add_string (b, "id", s.id);
  add_string (b, "user", s.user);
  add_string (b, "role", s.role);
  add_string (b, "microscope", s.microscope);
  json_builder_set_member_name (b, "created_unix_us");
  json_builder_add_int_value (b, s.created_unix_us);
  add_string (b, "rtsp_url", node.rtsp_url (s));
  json_builder_set_member_name (b, "view");
  json_builder_begin_object (b);
  auto view = node.view_of_session (s);
  std::string error = node.view_error_of_session (s);
  add_string (b, "profile", s.role);
  add_string (b, "state",
              !error.empty () ? "failed" : (view && view->frames () > 0 ? "streaming" : "starting"));
  if (!error.empty ())
    add_string (b, "error", node.shown_to (who, error));
  json_builder_end_object (b);
}

} // namespace

void
HttpApi::create_session (Call &c)
{
  SessionRequest r = parse_session_request (body_of (c.msg, max_body_bytes ()));
  const Principal &who = c.who;
  std::string fallback = who.admin ? (node_.hubs ().size () == 1 ? node_.hubs ().begin ()->first : "")
                                   : who.session->microscope;
  if (!r.microscope && fallback.empty ())
    throw Refusal{Reason::kInvalid, "missing field 'microscope'"};
  // Its viewers' site: as asked, else the site of the node asked first.
  std::string site = r.site.value_or ("");
  const char *forwarded_by
      = soup_message_headers_get_one (soup_server_message_get_request_headers (c.msg), kForwardedBy);
  if (site.empty () && forwarded_by && node_.cluster ())
    if (auto first = node_.cluster ()->node (forwarded_by))
      site = first->site;
  Node::NewSession n = node_.create_session (who, r.user, r.role, r.microscope.value_or (fallback), site);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_session (b, node_, who, n.record);
  add_string (b, "token", n.token);
  add_string (b, "viewer_url", node_.viewer_url (n.record, n.token));
  json_builder_end_object (b);
  soup_message_headers_replace (soup_server_message_get_response_headers (c.msg), "Location",
                                ("/api/v1/sessions/" + n.record.id).c_str ());
  auto serving = node_.serving_elsewhere (n.record);
  if (!serving || (forwarded_by && serving->name == forwarded_by)) {
    respond (c.msg, 201, to_string (b)); // (the node that forwarded it takes it up with the answer)
    return;
  }
  // Placed on another node: it mounts the session before its players come
  // (else it would at its next read of etcd).  Answered either way.
  struct Told {
    SoupServerMessage *msg;
    std::string body;
  };
  SoupMessage *tell
      = soup_message_new ("POST", (serving->http_url + "/api/v1/cluster/sessions/" + n.record.id).c_str ());
  if (!tell) {
    respond (c.msg, 201, to_string (b));
    return;
  }
  soup_message_headers_replace (soup_message_get_request_headers (tell), "Authorization",
                                ("Bearer " + node_.admin_token ()).c_str ());
  soup_server_message_pause (c.msg);
  soup_session_send_and_read_async (
      forwarder_, tell, G_PRIORITY_DEFAULT, nullptr,
      [] (GObject *source, GAsyncResult *res, gpointer data) {
        std::unique_ptr<Told> t (static_cast<Told *> (data));
        g_autoptr (GBytes) ignored = soup_session_send_and_read_finish (SOUP_SESSION (source), res, nullptr);
        respond (t->msg, 201, t->body);
        soup_server_message_unpause (t->msg);
        g_object_unref (t->msg);
      },
      new Told{SOUP_SERVER_MESSAGE (g_object_ref (c.msg)), to_string (b)});
  g_object_unref (tell);
}

void
HttpApi::adopt_placed_session (Call &c)
{
  if (!c.who.admin)
    throw Refusal{Reason::kForbidden, "sessions are placed by the edge cloud's nodes (the admin)"};
  if (!node_.cluster ())
    throw Refusal{Reason::kNotFound, "this node is not in an edge cloud"};
  node_.adopt_session (c.params[0]);
  respond (c.msg, 204, "");
}

void
HttpApi::list_sessions (Call &c)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "sessions");
  json_builder_begin_array (b);
  for (const auto &s : node_.sessions_visible_to (c.who)) {
    json_builder_begin_object (b);
    add_session (b, node_, c.who, s);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  respond (c.msg, 200, to_string (b));
}

void
HttpApi::get_session (Call &c)
{
  SessionRecord s = node_.session_visible_to (c.who, c.params[0]);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_session (b, node_, c.who, s);
  add_json (b, "viewer_stats", node_.viewer_stats (s.id));
  json_builder_end_object (b);
  respond (c.msg, 200, to_string (b));
}

void
HttpApi::end_session (Call &c)
{
  node_.end_session (c.who, c.params[0]);
  respond (c.msg, 204, "", "text/plain");
}

// Answered when the worker has the frame: the message waits meanwhile.
void
HttpApi::take_still (Call &c)
{
  SessionRecord s = node_.session_visible_to (c.who, c.params[0]);
  MicroscopeHub &hub = node_.hub_visible_to (c.who, s.microscope);
  SoupServerMessage *msg = c.msg;
  g_object_ref (msg);
  soup_server_message_pause (msg);
  auto answered = std::make_shared<bool> (false);
  auto finish = [msg, answered] (int status, const std::string &body, const char *type) {
    if (*answered)
      return;
    *answered = true;
    respond (msg, status, body, type);
    soup_server_message_unpause (msg);
    g_object_unref (msg);
  };
  bool asked;
  try {
    asked = hub.request_still (c.who, s, [finish] (const event::StillTaken &still) {
      if (!still.error.empty ()) {
        finish (503, error_json (still.error), "application/json");
        return;
      }
      gsize len = 0;
      g_autofree guchar *png = g_base64_decode (still.png_base64.c_str (), &len);
      finish (200, std::string ((const char *)png, len), "image/png");
    });
  } catch (...) {
    *answered = true;
    soup_server_message_unpause (msg);
    g_object_unref (msg);
    throw;
  }
  if (!asked) {
    finish (503, error_json ("the microscope's media worker is not running"), "application/json");
    return;
  }
  g_timeout_add_seconds (
      5,
      [] (gpointer d) -> gboolean {
        std::unique_ptr<std::function<void ()>> f (static_cast<std::function<void ()> *> (d));
        (*f) ();
        return G_SOURCE_REMOVE;
      },
      new std::function<void ()> (
          [finish] { finish (504, error_json ("no frame within 5 s"), "application/json"); }));
}

// ---- recordings of a session's view ----------------------------------------------

void
HttpApi::start_recording (Call &c)
{
  RecordingRequest r = parse_recording_request (body_of (c.msg, max_body_bytes ()));
  RecordingStatus st = node_.start_recording (c.who, c.params[0], r);
  soup_message_headers_replace (soup_server_message_get_response_headers (c.msg), "Location",
                                ("/api/v1/sessions/" + c.params[0] + "/recording").c_str ());
  respond (c.msg, 201, recording_json (st));
}

void
HttpApi::get_recording (Call &c)
{
  respond (c.msg, 200, recording_json (node_.recording_of (c.who, c.params[0])));
}

// Answered once the last segment is finished: the message waits meanwhile.
void
HttpApi::stop_recording (Call &c)
{
  SoupServerMessage *msg = c.msg;
  g_object_ref (msg);
  soup_server_message_pause (msg);
  try {
    node_.stop_recording (c.who, c.params[0], [msg] (const RecordingStatus &st) {
      respond (msg, 200, recording_json (st));
      soup_server_message_unpause (msg);
      g_object_unref (msg);
    });
  } catch (...) {
    soup_server_message_unpause (msg);
    g_object_unref (msg);
    throw;
  }
}

namespace {

// An annotation as QuPath reads it, in the pixel space of the image it has
// open: slide µm / um_per_px.  Its id is a UUID named by the microscope, the
// session and the annotation's row, so each export gives it the same one.
qupath::PathObject
qupath_annotation (const AnnotationRecord &a, double um_per_px)
{
  qupath::PathObject o;
  o.id = qupath::name_uuid ("annotation/" + a.microscope + "/" + a.session + "/" + std::to_string (a.id));
  o.object_type = "annotation";
  o.shape = a.kind == "point"   ? qupath::Shape::kPoint
            : a.kind == "arrow" ? qupath::Shape::kLineString
                                : qupath::Shape::kPolygon;
  for (const auto &[x, y] : a.points_um ())
    o.points_px.push_back ({x / um_per_px, y / um_per_px});
  o.name = a.label.empty () ? a.kind : a.label;
  o.classification = qupath::standard_class (a.label);
  o.properties = {{"author", a.user}, {"kind", a.kind}};
  return o;
}

// ?um_per_px=X: the scale of the image the export is for (default 0.25, the
// 40x scale of a whole-slide scan).
double
export_um_per_px (const HttpApi::Call &c)
{
  const std::string text = c.query_value ("um_per_px");
  if (text.empty ())
    return 0.25;
  char *end = nullptr;
  const double v = g_ascii_strtod (text.c_str (), &end);
  if (!end || *end || !(v > 0 && v < 1000))
    throw Refusal{Reason::kInvalid, "um_per_px '" + text + "' is not a number in (0, 1000)"};
  return v;
}

std::string
qupath_annotations (const std::vector<AnnotationRecord> &list, double um_per_px)
{
  std::vector<qupath::PathObject> objects;
  for (const auto &a : list)
    objects.push_back (qupath_annotation (a, um_per_px));
  return qupath::feature_collection (objects);
}

} // namespace

// A session's annotations, as QuPath GeoJSON.
void
HttpApi::annotations_geojson (Call &c)
{
  const auto list = node_.session_annotations (c.who, c.params[0]); // who may, before what they asked
  respond (c.msg, 200, qupath_annotations (list, export_um_per_px (c)), "application/geo+json");
}

// A microscope's annotations (every session's, as the caller may see them),
// as QuPath GeoJSON.
void
HttpApi::microscope_annotations_geojson (Call &c)
{
  const auto list = node_.exported_annotations (c.who, c.params[0]);
  respond (c.msg, 200, qupath_annotations (list, export_um_per_px (c)), "application/geo+json");
}

// ---- microscopes ---------------------------------------------------------------------

namespace {

void
add_microscope (JsonBuilder *b, const Node &node, const Principal &who, const MicroscopeHub &m)
{
  json_builder_begin_object (b);
  add_string (b, "id", m.id ());
  add_string (b, "name", m.config ().name);
  if (who.admin) { // a file path may name the patient
    add_string (b, "uri", m.config ().uri);
    json_builder_set_member_name (b, "worker_pid");
    json_builder_add_int_value (b, m.worker_pid ());
  }
  json_builder_set_member_name (b, "online");
  json_builder_add_boolean_value (b, m.online ());
  if (!m.online () && !m.last_error ().empty ())
    add_string (b, "error", node.shown_to (who, m.last_error ()));
  const std::optional<MicroscopeStatus> &st = m.status ();
  json_builder_set_member_name (b, "stage");
  if (st) {
    json_builder_begin_object (b);
    for (auto [k, v] :
         {std::pair<const char *, double>{"x_um", st->x_um}, {"y_um", st->y_um}, {"z_um", st->z_um}}) {
      json_builder_set_member_name (b, k);
      add_number (b, v);
    }
    json_builder_end_object (b);
  } else {
    json_builder_add_null_value (b);
  }
  json_builder_set_member_name (b, "objective");
  json_builder_add_int_value (b, st ? st->objective : 0);
  json_builder_set_member_name (b, "um_per_px");
  add_number (b, st ? st->um_per_px : 0);
  json_builder_set_member_name (b, "moving");
  json_builder_add_boolean_value (b, st && st->moving);
  if (st && st->limits) {
    json_builder_set_member_name (b, "soft_limits");
    json_builder_begin_object (b);
    add_limits_members (b, *st->limits);
    json_builder_end_object (b);
  }
  if (st) {
    json_builder_set_member_name (b, "objectives");
    json_builder_begin_array (b);
    for (int mag : st->objectives)
      json_builder_add_int_value (b, mag);
    json_builder_end_array (b);
  }
  api::add_control_members (b, m.control ());
  add_json (b, "presence", api::presence_json (m.presence ()));
  add_json (b, "analysis", node.may_see (who, "analysis") ? api::analysis_json (m.analysis ()) : "null");
  json_builder_set_member_name (b, "view_branches");
  json_builder_add_int_value (b, (gint64)m.view_branches ());
  json_builder_end_object (b);
}

} // namespace

void
HttpApi::list_microscopes (Call &c)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "microscopes");
  json_builder_begin_array (b);
  for (const auto &[id, hub] : node_.hubs ())
    if (c.who.admin || c.who.session->microscope == id)
      add_microscope (b, node_, c.who, *hub);
  json_builder_end_array (b);
  json_builder_end_object (b);
  respond (c.msg, 200, to_string (b));
}

void
HttpApi::get_microscope (Call &c)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  add_microscope (b, node_, c.who, node_.hub_visible_to (c.who, c.params[0]));
  respond (c.msg, 200, to_string (b));
}

namespace {

// What a viewer's copy of the slide map hides: the configured regions its
// profile masks (the label), and whether it is coarsened because the
// profile masks print found anywhere (slide_map.h).  The admin sees all.
struct MapMask {
  std::vector<std::vector<cv::Point2d>> polygons_um;
  bool coarse = false;
};
MapMask
map_mask_for (const Node &node, const Principal &who)
{
  MapMask m;
  if (who.admin)
    return m;
  const livemicro::privacy::Profile *profile = node.profiles ().find (who.session->role);
  if (!profile)
    throw Refusal{Reason::kForbidden, "no view profile '" + who.session->role + "' on this node"};
  for (const livemicro::privacy::SlideRegion *r : node.profiles ().regions_for (*profile))
    m.polygons_um.push_back (r->polygon_um);
  using livemicro::privacy::RegionClass;
  m.coarse = profile->detects (RegionClass::kText) || profile->detects (RegionClass::kQr)
             || profile->detects (RegionClass::kBarcode);
  return m;
}

const SlideMapImage &
map_of (const MicroscopeHub &hub)
{
  if (!hub.slide_map ())
    throw Refusal{Reason::kUnavailable, "no slide map yet: it is made from the first frames"};
  return *hub.slide_map ();
}

} // namespace

void
HttpApi::slide_map (Call &c)
{
  MicroscopeHub &hub = node_.hub_visible_to (c.who, c.params[0]);
  respond (c.msg, 200,
           api::overview_json (map_of (hub), map_mask_for (node_, c.who).polygons_um, hub.path_um ()));
}

void
HttpApi::slide_map_png (Call &c)
{
  MicroscopeHub &hub = node_.hub_visible_to (c.who, c.params[0]);
  MapMask mask = map_mask_for (node_, c.who);
  std::vector<unsigned char> png = masked_png (map_of (hub), mask.polygons_um, mask.coarse);
  respond (c.msg, 200, std::string (png.begin (), png.end ()), "image/png");
}

void
HttpApi::control (Call &c)
{
  MicroscopeHub &hub = node_.hub_visible_to (c.who, c.params[0]);
  std::optional<ControlRequest> request;
  try {
    request = parse_control_request (body_of (c.msg, max_body_bytes ()));
  } catch (const Refusal &e) {
    node_.refused (c.who, hub.id (), "control", "(malformed)", e);
    throw;
  }
  ControlResult r = hub.control (c.who, *request);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "result", r.result);
  if (r.lease) {
    add_string (b, "lease", r.lease->id);
    json_builder_set_member_name (b, "epoch");
    json_builder_add_int_value (b, (gint64)r.lease->epoch);
    json_builder_set_member_name (b, "expires_in_ms");
    json_builder_add_int_value (b, r.expires_in_ms);
  }
  if (r.queue_position) {
    json_builder_set_member_name (b, "queue_position");
    json_builder_add_int_value (b, r.queue_position);
  }
  json_builder_end_object (b);
  respond (c.msg, r.queued ? 202 : 200, to_string (b));
}

void
HttpApi::command (Call &c)
{
  MicroscopeHub &hub = node_.hub_visible_to (c.who, c.params[0]);
  std::optional<CommandRequest> request;
  std::string op;
  try {
    request = parse_command_request (body_of (c.msg, max_body_bytes ()), &op);
  } catch (const Refusal &e) {
    node_.refused (c.who, hub.id (), "command", op.empty () ? "(none)" : op, e);
    throw;
  }
  CommandAccepted a = hub.command (c.who, *request);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "command");
  json_builder_add_int_value (b, (gint64)a.id);
  add_string (b, "op", command_op_name (a.op));
  json_builder_end_object (b);
  respond (c.msg, 202, to_string (b));
}

// What became of a command: {"command", "op", "status", "detail"}.
void
HttpApi::get_command (Call &c)
{
  MicroscopeHub &hub = node_.hub_visible_to (c.who, c.params[0]);
  char *end = nullptr;
  const guint64 cid = g_ascii_strtoull (c.params[1].c_str (), &end, 10);
  std::optional<CommandOutcome> o;
  if (end && !*end && !c.params[1].empty () && g_ascii_isdigit (c.params[1][0]))
    o = hub.command_outcome (cid);
  if (!o)
    throw Refusal{Reason::kNotFound, "no command '" + c.params[1] + "' on microscope '" + hub.id ()
                                         + "' (only the last " + std::to_string (MicroscopeHub::kOutcomesKept)
                                         + " are kept)"};
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "command");
  json_builder_add_int_value (b, (gint64)o->id);
  add_string (b, "op", command_op_name (o->op));
  add_string (b, "status", o->status);
  add_string (b, "detail", o->detail);
  json_builder_end_object (b);
  respond (c.msg, 200, to_string (b));
}

// A keyframe of a view now (the admin: serving nodes of the edge cloud ask
// it when a viewer joins a view they relay).
void
HttpApi::keyframe (Call &c)
{
  if (!c.who.admin)
    throw Refusal{Reason::kForbidden, "keyframes are asked by the admin (the edge cloud's nodes)"};
  MicroscopeHub &hub = node_.hub_visible_to (c.who, c.params[0]);
  const KeyframeRequest r = parse_keyframe_request (body_of (c.msg, max_body_bytes ()));
  bool found = false;
  for (const auto &v : hub.views ())
    if (v->profile () == r.profile) {
      v->request_keyframe ();
      found = true;
    }
  if (!found)
    throw Refusal{Reason::kNotFound, "no " + r.profile + " view on microscope '" + hub.id () + "' just now"};
  respond (c.msg, 202, "{}");
}

// ---- annotations and audit -----------------------------------------------------------

namespace {

void
require_annotations (const Node &node, const Principal &who)
{
  if (!node.may_see (who, "annotations"))
    throw Refusal{Reason::kForbidden, "the " + who.role () + " profile does not show annotations"};
}

} // namespace

void
HttpApi::list_annotations (Call &c)
{
  require_annotations (node_, c.who);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "annotations");
  json_builder_begin_array (b);
  for (const auto &a : node_.annotations (c.who, c.params[0]))
    api::add_annotation (b, a);
  json_builder_end_array (b);
  json_builder_end_object (b);
  respond (c.msg, 200, to_string (b));
}

void
HttpApi::add_annotation (Call &c)
{
  require_annotations (node_, c.who);
  node_.hub_visible_to (c.who, c.params[0]);
  AnnotationRecord a = node_.add_annotation (c.who, c.params[0],
                                             parse_annotation_request (body_of (c.msg, max_body_bytes ())));
  respond (c.msg, 201, api::annotation_json (a));
}

void
HttpApi::delete_annotation (Call &c)
{
  char *end = nullptr;
  gint64 aid = g_ascii_strtoll (c.params[1].c_str (), &end, 10);
  if (!end || *end || c.params[1].empty ())
    throw Refusal{Reason::kNotFound, "no annotation '" + c.params[1] + "'"};
  node_.delete_annotation (c.who, c.params[0], aid);
  respond (c.msg, 204, "", "text/plain");
}

void
HttpApi::audit (Call &c)
{
  std::string after = c.query_value ("after"), limit = c.query_value ("limit");
  auto rows = node_.audit (
      c.who, after.empty () ? 0 : g_ascii_strtoll (after.c_str (), nullptr, 10),
      limit.empty () ? 1000
                     : (int)std::clamp<gint64> (g_ascii_strtoll (limit.c_str (), nullptr, 10), 1, 10000));
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "audit");
  json_builder_begin_array (b);
  for (const auto &r : rows) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "id");
    json_builder_add_int_value (b, r.id);
    json_builder_set_member_name (b, "time_unix_us");
    json_builder_add_int_value (b, r.time_unix_us);
    add_string (b, "user", r.user);
    add_string (b, "role", r.role);
    add_string (b, "session", r.session);
    add_string (b, "microscope", r.microscope);
    add_string (b, "action", r.action);
    add_string (b, "detail", r.detail);
    add_string (b, "result", r.result);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  respond (c.msg, 200, to_string (b));
}

// GET /api/v1/cluster (the admin): the edge cloud as this node sees it.
void
HttpApi::cluster (Call &c)
{
  if (!c.who.admin)
    throw Refusal{Reason::kForbidden, "the edge cloud's state is for the admin"};
  if (!node_.cluster ())
    throw Refusal{Reason::kNotFound,
                  "this node is not in an edge cloud (start it with --cluster etcd=URL,…)"};
  respond (c.msg, 200, api::cluster_json (node_.cluster ()->view ()));
}

// ---- WHEP (draft-ietf-wish-whep): /whep/{session} ------------------------------
// The viewer offers (POST, application/sdp), the daemon answers with every
// candidate in the answer (201, Location: the resource); DELETE on the
// resource ends it.  No trickle ICE (PATCH is 405).  The same peer as the
// page's WebSocket signalling (WebRtcPeer), the same authorisation: the
// session's own token only, and the session's own view (a guest's is
// masked).

void
HttpApi::whep_offer (Call &c)
{
  const std::string &session_id = c.params[0];
  if (!c.who.session || c.who.session->id != session_id)
    throw Refusal{Reason::kUnauthenticated, "invalid token for this session"};
  SoupMessageHeaders *h = soup_server_message_get_request_headers (c.msg);
  const char *type = soup_message_headers_get_one (h, "Content-Type");
  g_autoptr (GBytes) bytes = soup_message_body_flatten (soup_server_message_get_request_body (c.msg));
  gsize len = 0;
  const char *data = static_cast<const char *> (g_bytes_get_data (bytes, &len));
  WhepOffer offer = parse_whep_offer (type ? type : "", data, len, max_body_bytes ());
  size_t open = std::count_if (whep_.begin (), whep_.end (),
                               [&] (const auto &kv) { return kv.second.session_id == session_id; });
  if (open >= kMaxWhepPerSession)
    throw Refusal{Reason::kRateLimited,
                  "this session has " + std::to_string (open) + " WHEP viewers already; DELETE one first"};
  // In an edge cloud, a session of a microscope homed elsewhere: its view
  // is pulled here while the resource lives.
  const bool relayed = !node_.hubs ().count (c.who.session->microscope);
  if (relayed) {
    node_.adopt_session (session_id);
    node_.hold_view (session_id, +1);
  }
  auto view = node_.view_of_session (*c.who.session);
  if (!view) {
    if (relayed)
      node_.hold_view (session_id, -1);
    throw Refusal{Reason::kUnavailable, "no view for this session"};
  }

  const std::string resource = random_id ();
  auto peer = std::make_shared<WebRtcPeer> (view, node_.config ().listen_address, nullptr);
  whep_[resource]
      = WhepResource{session_id, view->microscope () + "/" + view->profile (), peer, false, relayed};
  peer->set_on_failed ([this, resource] { end_whep (resource); });
  SoupServerMessage *msg = c.msg;
  g_object_ref (msg);
  soup_server_message_pause (msg);
  const Principal who = c.who;
  auto answered = [this, msg, resource, session_id, who] (const std::string &sdp,
                                                          const std::optional<Refusal> &refused) {
    auto it = whep_.find (resource);
    if (refused || it == whep_.end ()) {
      if (it != whep_.end ())
        end_whep (resource);
      Refusal r = refused.value_or (Refusal{Reason::kNotFound, "the session ended"});
      respond_error (msg, http_status (r.reason), node_.shown_to (who, r.message));
    } else {
      it->second.counted = true;
      node_.count_webrtc_viewer (it->second.count_key, +1);
      soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Location",
                                    ("/whep/" + session_id + "/" + resource).c_str ());
      respond (msg, 201, sdp, "application/sdp");
    }
    soup_server_message_unpause (msg);
    g_object_unref (msg);
  };
  try {
    peer->answer (offer, answered);
  } catch (const std::exception &e) {
    // answer() threw before it could call back: nobody else answers.
    end_whep (resource);
    respond_error (msg, 503, node_.shown_to (who, e.what ()));
    soup_server_message_unpause (msg);
    g_object_unref (msg);
  }
}

void
HttpApi::whep_delete (Call &c)
{
  const std::string &session_id = c.params[0], &resource = c.params[1];
  if (!c.who.session || c.who.session->id != session_id)
    throw Refusal{Reason::kUnauthenticated, "invalid token for this session"};
  auto it = whep_.find (resource);
  if (it == whep_.end () || it->second.session_id != session_id)
    throw Refusal{Reason::kNotFound, "no such WHEP resource"};
  end_whep (resource);
  respond (c.msg, 204, "", "text/plain");
}

// The origin must be one of cors.allowed_origins (docs/security.md): the
// daemon's own pages need none of this (same origin).
bool
HttpApi::allow_cross_origin (SoupServerMessage *msg) const
{
  SoupMessageHeaders *out = soup_server_message_get_response_headers (msg);
  soup_message_headers_append (out, "Vary", "Origin");
  const char *origin = soup_message_headers_get_one (soup_server_message_get_request_headers (msg), "Origin");
  if (!origin || !node_.config ().cors.allows (origin))
    return false;
  soup_message_headers_replace (out, "Access-Control-Allow-Origin", origin);
  soup_message_headers_replace (out, "Access-Control-Expose-Headers", "Location, Link, ETag");
  return true;
}

void
HttpApi::whep_options (SoupServerMessage *msg, const std::vector<std::string> &parts) const
{
  if (parts.size () != 2 && parts.size () != 3)
    throw Refusal{Reason::kNotFound, "no such WHEP endpoint"};
  const char *methods = parts.size () == 2 ? "POST, OPTIONS" : "DELETE, OPTIONS";
  SoupMessageHeaders *in = soup_server_message_get_request_headers (msg);
  SoupMessageHeaders *out = soup_server_message_get_response_headers (msg);
  soup_message_headers_replace (out, "Allow", methods);
  const char *origin = soup_message_headers_get_one (in, "Origin");
  if (origin && !node_.config ().cors.allows (origin))
    throw Refusal{Reason::kForbidden,
                  std::string ("origin '") + origin + "' may not use WHEP here (see cors.allowed_origins)"};
  if (origin) {
    soup_message_headers_replace (out, "Access-Control-Allow-Methods", methods);
    soup_message_headers_replace (out, "Access-Control-Allow-Headers",
                                  "Authorization, Content-Type, If-Match");
    soup_message_headers_replace (out, "Access-Control-Max-Age", "600");
  }
  respond (msg, 204, "", "text/plain");
}

void
HttpApi::end_whep (const std::string &resource)
{
  auto it = whep_.find (resource);
  if (it == whep_.end ())
    return;
  WhepResource r = std::move (it->second);
  whep_.erase (it);
  r.peer->stop ();
  if (r.counted)
    node_.count_webrtc_viewer (r.count_key, -1);
  if (r.holds_view)
    node_.hold_view (r.session_id, -1);
}

// ---- WebSockets: the viewer page (/ws/{session}) and event clients
// (/api/v1/microscopes/{id}/events) ------------------------------------------

void
HttpApi::close_viewer (Viewer *v)
{
  auto it = viewers_.find (v);
  if (it == viewers_.end ())
    return;
  std::unique_ptr<Viewer> own = std::move (it->second);
  viewers_.erase (it);
  if (own->auth_timeout)
    g_source_remove (own->auth_timeout);
  if (own->listener)
    node_.remove_listener (own->listener);
  if (own->presence)
    node_.hubs ().at (own->microscope)->leave (own->presence);
  stop_reading_analysis (own.get ());
  if (own->peer) {
    own->peer->stop ();
    node_.count_webrtc_viewer (own->count_key, -1);
  }
  release_view (own.get ());
  if (soup_websocket_connection_get_state (own->conn) == SOUP_WEBSOCKET_STATE_OPEN)
    soup_websocket_connection_close (own->conn, SOUP_WEBSOCKET_CLOSE_NORMAL, nullptr);
  // The message handler first: the closed handler's data dies with it.
  g_signal_handler_disconnect (own->conn, own->message_handler);
  g_signal_handler_disconnect (own->conn, own->closed_handler);
  g_object_unref (own->conn);
}

namespace {

void
ws_send (SoupWebsocketConnection *c, const std::string &json)
{
  if (soup_websocket_connection_get_state (c) == SOUP_WEBSOCKET_STATE_OPEN)
    soup_websocket_connection_send_text (c, json.c_str ());
}

// An event for a socket: {"type": kind, "data": payload}.
std::string
typed (const std::string &type, const std::string &payload)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "type", type);
  add_json (b, "data", payload);
  json_builder_end_object (b);
  return to_string (b);
}

std::string
ws_error (const std::string &message)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "type", "error");
  add_string (b, "error", message);
  json_builder_end_object (b);
  return to_string (b);
}

} // namespace

// The first message a viewer or events socket gets: who it is, the
// microscope's state, what this viewer may offer and see.
std::string
HttpApi::welcome_json (const Principal &who, const MicroscopeHub &m) const
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "type", "welcome");
  json_builder_set_member_name (b, "session");
  if (who.session) {
    json_builder_begin_object (b);
    add_string (b, "id", who.session->id);
    add_string (b, "user", who.session->user);
    add_string (b, "role", who.session->role);
    add_string (b, "microscope", who.session->microscope);
    json_builder_end_object (b);
  } else {
    json_builder_add_null_value (b);
  }
  json_builder_set_member_name (b, "online");
  json_builder_add_boolean_value (b, m.online ());
  add_json (b, "state", api::status_json (m.status ()));
  add_json (b, "features", node_.may_see (who, "analysis") ? api::analysis_json (m.analysis ()) : "null");
  add_json (b, "control", api::control_json (m.control ()));
  // What the page may offer: a control this viewer cannot use is not shown,
  // so the page fires no request that would be refused.
  const livemicro::privacy::Profile *profile
      = who.session ? node_.profiles ().find (who.session->role) : nullptr;
  json_builder_set_member_name (b, "permissions");
  json_builder_begin_object (b);
  for (auto [name, allowed] : {std::pair<const char *, bool>{"control", profile && profile->may_control},
                               {"stop", who.admin || (who.session && who.session->role == "owner")},
                               {"analysis", node_.may_see (who, "analysis")},
                               {"pointers", node_.may_see (who, "pointers")},
                               {"annotations", node_.may_see (who, "annotations") && !who.admin}}) {
    json_builder_set_member_name (b, name);
    json_builder_add_boolean_value (b, allowed);
  }
  json_builder_end_object (b);
  // The slide map's geometry as this viewer may see it (null until the
  // first frames made one, or for a role without a profile here); its
  // pixels come from …/overview.png.
  std::string slide_map = "null";
  if (m.slide_map ()) {
    try {
      slide_map = api::overview_json (*m.slide_map (), map_mask_for (node_, who).polygons_um, m.path_um ());
    } catch (const Refusal &) {
    }
  }
  add_json (b, "slide_map", slide_map);
  json_builder_set_member_name (b, "server_time_us");
  json_builder_add_int_value (b, g_get_real_time ());
  json_builder_end_object (b);
  return to_string (b);
}

// After the token checked out: welcome, events, presence, and (viewer page)
// the WebRTC peer.
void
HttpApi::authenticated (Viewer *v, const Principal &who)
{
  v->authenticated = true;
  v->who = who;
  if (who.session)
    v->microscope = who.session->microscope;
  MicroscopeHub &m = *node_.hubs ().at (v->microscope);
  ws_send (v->conn, welcome_json (who, m));

  std::string own_session = who.session ? who.session->id : "";
  std::string microscope = v->microscope;
  // What this viewer's profile lets it see.
  const bool analysis = node_.may_see (who, "analysis"), pointers = node_.may_see (who, "pointers"),
             annotations = node_.may_see (who, "annotations"), nuclei = analysis && v->want_nuclei;
  v->listener = node_.add_listener (
      [this, v, own_session, microscope, analysis, pointers, annotations, nuclei] (const Node::Event &e) {
        if (e.microscope != microscope)
          return;
        if ((e.kind == "features" && !analysis) || (e.kind == "nuclei" && !nuclei)
            || (e.kind == "pointer" && !pointers) || (e.kind.rfind ("annotation", 0) == 0 && !annotations))
          return;
        if (e.kind == "session_ended") {
          if (!own_session.empty () && e.session == own_session)
            end_viewer (v, 4403, "session ended");
          return;
        }
        ws_send (v->conn, e.message);
      });
  if (analysis) {
    v->reads_analysis = true;
    m.watch_analysis (+1);
  }
  if (who.session) {
    v->presence = m.join (*who.session, v->events_only ? "events" : "viewer");
    ws_send (v->conn, typed ("presence", api::presence_json (m.presence ())));
  }
  send_failover_nodes (v);
  if (!v->events_only && v->want_webrtc)
    start_peer (v, who, who.session ? m.view_of (own_session) : nullptr);
}

void
HttpApi::start_peer (Viewer *v, const Principal &who, std::shared_ptr<ViewStream> view)
{
  if (!view) {
    ws_send (v->conn, ws_error ("no view for this session"));
    return;
  }
  SoupWebsocketConnection *conn = v->conn;
  v->peer = std::make_shared<WebRtcPeer> (view, node_.config ().listen_address,
                                          [conn] (const std::string &json) { ws_send (conn, json); });
  try {
    v->peer->start ();
    v->count_key = view->microscope () + "/" + view->profile ();
    node_.count_webrtc_viewer (v->count_key, +1);
  } catch (const std::exception &e) {
    v->peer->stop ();
    v->peer.reset ();
    ws_send (v->conn, ws_error (node_.shown_to (who, e.what ())));
  }
}

void
HttpApi::serve_relayed (Viewer *v, const Principal &who, const std::string &token)
{
  v->authenticated = true;
  v->who = who;
  if (!v->events_only)
    v->microscope = who.session->microscope;
  auto home = node_.home_url_of (v->microscope);
  if (!home) {
    end_viewer (v, 4503, "the microscope's home node is not in the edge cloud just now");
    return;
  }
  // A viewer page: its view is pulled here while it is open.
  const bool page = !v->events_only && who.session;
  if (page) {
    node_.adopt_session (who.session->id);
    node_.hold_view (who.session->id, +1);
    v->holds_view = true;
  }
  // Up to the home node with the page's own token: it checks it again and
  // sends what this session may see, as it would to the page itself.
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "type", "hello");
  add_string (b, "token", token);
  json_builder_set_member_name (b, "webrtc");
  json_builder_add_boolean_value (b, FALSE);
  json_builder_set_member_name (b, "nuclei");
  json_builder_add_boolean_value (b, v->want_nuclei);
  json_builder_set_member_name (b, "relayed");
  json_builder_add_boolean_value (b, TRUE);
  json_builder_end_object (b);
  SoupWebsocketConnection *conn = v->conn;
  const std::string path
      = page ? "/ws/" + who.session->id : "/api/v1/microscopes/" + v->microscope + "/events";
  v->home = std::make_unique<HomeLink> (
      *home + path, to_string (b), [conn] (const std::string &text) { ws_send (conn, text); },
      [this, v] (int code, const std::string &reason) {
        // The home node's refusals (token, session ended) reach the page as
        // they are; its going away is one the page retries.
        const bool refusal = code >= 4400 && code < 4500;
        end_viewer (v, refusal ? code : 4503,
                    refusal ? reason.c_str () : "the microscope's home node went away");
      });
  send_failover_nodes (v);
  if (page && v->want_webrtc)
    start_peer (v, who, node_.view_of_session (*who.session));
}

void
HttpApi::release_view (Viewer *v)
{
  if (!v->holds_view)
    return;
  v->holds_view = false;
  node_.hold_view (v->who.session->id, -1);
}

void
HttpApi::refresh_failover_nodes ()
{
  std::string names;
  for (const auto &n : node_.failover_nodes ())
    names += n.name + " " + n.http_url + "\n";
  if (names == failover_nodes_)
    return;
  failover_nodes_ = names;
  for (auto &[ptr, v] : viewers_)
    if (v->authenticated && !v->ended)
      send_failover_nodes (v.get ());
}

void
HttpApi::send_failover_nodes (Viewer *v)
{
  const auto nodes = node_.failover_nodes ();
  if (nodes.empty () || v->relayed || v->events_only)
    return;
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "type", "nodes");
  json_builder_set_member_name (b, "nodes");
  json_builder_begin_array (b);
  for (const auto &n : nodes) {
    json_builder_begin_object (b);
    add_string (b, "name", n.name);
    add_string (b, "site", n.site);
    add_string (b, "url", n.http_url);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  ws_send (v->conn, to_string (b));
}

void
HttpApi::stop_reading_analysis (Viewer *v)
{
  if (!v->reads_analysis)
    return;
  v->reads_analysis = false;
  node_.hubs ().at (v->microscope)->watch_analysis (-1);
}

// The session ended (or the socket misbehaved): from now on nothing it
// sends counts and nothing more reaches it; the close handshake follows.
void
HttpApi::end_viewer (Viewer *v, int code, const char *reason)
{
  if (v->ended)
    return;
  v->ended = true;
  if (v->listener) {
    node_.remove_listener (v->listener);
    v->listener = 0;
  }
  if (v->presence) {
    node_.hubs ().at (v->microscope)->leave (v->presence);
    v->presence = 0;
  }
  stop_reading_analysis (v);
  if (v->peer) {
    v->peer->stop ();
    v->peer.reset ();
    node_.count_webrtc_viewer (v->count_key, -1);
  }
  release_view (v);
  if (soup_websocket_connection_get_state (v->conn) == SOUP_WEBSOCKET_STATE_OPEN)
    soup_websocket_connection_close (v->conn, (gushort)code, reason);
}

void
HttpApi::on_viewer_message (Viewer *v, const char *data, size_t len)
{
  if (v->ended)
    return;
  ViewerMessage m;
  try {
    m = parse_viewer_message (data, len, node_.config ().max_body_bytes);
  } catch (const Refusal &e) {
    if (!v->authenticated) // the first message must be a well-formed hello
      end_viewer (v, 4401, "the first message must be hello with a token");
    else
      ws_send (v->conn, ws_error (e.message));
    return;
  }
  if (!v->authenticated) {
    if (m.kind != ViewerMessage::Kind::kHello) {
      end_viewer (v, 4401, "the first message must be hello with a token");
      return;
    }
    Principal who = node_.authenticate (m.token);
    bool ok = v->events_only ? who.valid () && (who.admin || who.session->microscope == v->microscope)
                             : who.session && who.session->id == v->session_id;
    if (!ok) {
      end_viewer (v, 4401, "invalid token for this socket");
      return;
    }
    v->want_webrtc = m.webrtc;
    v->want_nuclei = m.nuclei;
    v->relayed = m.relayed;
    const std::string &microscope = v->events_only ? v->microscope : who.session->microscope;
    if (!node_.hubs ().count (microscope))
      serve_relayed (v, who, m.token);
    else
      authenticated (v, who);
    return;
  }
  // The session may have ended since it authenticated (of a microscope
  // homed elsewhere: its home node closes the link when it ends).
  if (v->who.session && !v->home && !node_.session_live (v->who.session->id)) {
    end_viewer (v, 4403, "session ended");
    return;
  }
  if (v->home && (m.kind == ViewerMessage::Kind::kStats || m.kind == ViewerMessage::Kind::kPointer)) {
    v->home->send (std::string (data, len));
    return;
  }
  switch (m.kind) {
  case ViewerMessage::Kind::kAnswer:
  case ViewerMessage::Kind::kIce:
    if (v->peer)
      v->peer->on_message (m);
    break;
  case ViewerMessage::Kind::kStats:
    if (v->who.session)
      node_.set_viewer_stats (v->who.session->id, m.stats_json);
    break;
  case ViewerMessage::Kind::kPointer:
    if (v->who.session && node_.may_see (v->who, "pointers"))
      node_.hubs ().at (v->microscope)->pointer (*v->who.session, m.x_um, m.y_um);
    break;
  case ViewerMessage::Kind::kPing: {
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    add_string (b, "type", "pong");
    json_builder_set_member_name (b, "t");
    json_builder_add_int_value (b, m.t);
    json_builder_set_member_name (b, "server_time_us");
    json_builder_add_int_value (b, g_get_real_time ());
    json_builder_end_object (b);
    ws_send (v->conn, to_string (b));
    break;
  }
  case ViewerMessage::Kind::kHello:
    ws_send (v->conn, ws_error ("already authenticated"));
    break;
  }
}

void
HttpApi::on_websocket (SoupServerMessage *msg, SoupWebsocketConnection *conn, gpointer self)
{
  auto *api = static_cast<HttpApi *> (self);
  std::vector<std::string> parts = split_path (g_uri_get_path (soup_server_message_get_uri (msg)));
  auto v = std::make_unique<Viewer> ();
  v->conn = SOUP_WEBSOCKET_CONNECTION (g_object_ref (conn));
  // /ws/{session}  or  /api/v1/microscopes/{id}/events
  if (parts.size () == 5 && parts[0] == "api" && parts[4] == "events") {
    v->events_only = true;
    v->microscope = parts[3];
  } else {
    v->session_id = parts.size () == 2 ? parts[1] : "";
  }
  Viewer *vp = v.get ();
  api->viewers_[vp] = std::move (v);

  struct Ctx {
    HttpApi *api;
    Viewer *v;
  };
  auto *ctx = new Ctx{api, vp};
  vp->closed_handler = g_signal_connect_data (
      conn, "closed", G_CALLBACK (+[] (SoupWebsocketConnection *, gpointer d) {
        auto *c = static_cast<Ctx *> (d);
        c->api->close_viewer (c->v);
      }),
      ctx, [] (gpointer d, GClosure *) { delete static_cast<Ctx *> (d); }, G_CONNECT_DEFAULT);
  vp->message_handler = g_signal_connect (
      conn, "message", G_CALLBACK (+[] (SoupWebsocketConnection *, gint type, GBytes *bytes, gpointer d) {
        auto *ctx = static_cast<Ctx *> (d);
        gsize len = 0;
        const char *data = static_cast<const char *> (g_bytes_get_data (bytes, &len));
        if (type != SOUP_WEBSOCKET_DATA_TEXT)
          len = 0; // binary: treated as malformed
        ctx->api->on_viewer_message (ctx->v, data ? data : "", len);
      }),
      ctx);
  // (Of a microscope homed on another node: relayed from there.)
  if (vp->events_only && !api->node_.hubs ().count (vp->microscope)
      && !api->node_.home_url_of (vp->microscope)) {
    api->end_viewer (vp, 4404, "no such microscope");
    return;
  }

  // Event clients may authenticate with the Authorization header; everyone
  // else (browsers cannot set it) with a first "hello" message within 5 s.
  std::string bearer = bearer_of (msg);
  if (vp->events_only && !bearer.empty ()) {
    Principal who = api->node_.authenticate (bearer);
    if (!who.valid () || (!who.admin && who.session->microscope != vp->microscope)) {
      api->end_viewer (vp, 4401, "invalid token for this microscope");
      return;
    }
    if (api->node_.hubs ().count (vp->microscope))
      api->authenticated (vp, who);
    else
      api->serve_relayed (vp, who, bearer);
    return;
  }
  vp->auth_timeout = g_timeout_add_seconds (
      5,
      [] (gpointer d) -> gboolean {
        auto *c = static_cast<Ctx *> (d);
        c->v->auth_timeout = 0;
        if (!c->v->authenticated)
          c->api->end_viewer (c->v, 4401, "authentication timeout");
        return G_SOURCE_REMOVE;
      },
      ctx);
}

} // namespace livemicro::orchestrator
