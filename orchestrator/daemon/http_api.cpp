#include "http_api.h"

#include "ws_guard.h"

#include "common/json_fields.h"

#include <json-glib/json-glib.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <stdexcept>

namespace livemicro::orchestrator {

namespace {

std::string
to_json (JsonNode *n)
{
  g_autofree char *s = json_to_string (n, FALSE);
  return s;
}

void
respond (SoupServerMessage *msg, int status, const std::string &body,
    const char *type = "application/json")
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

std::string
error_json (const std::string &message)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "error");
  json_builder_add_string_value (b, message.c_str ());
  json_builder_end_object (b);
  g_autoptr (JsonNode) n = json_builder_get_root (b);
  return to_json (n);
}

void
respond_error (SoupServerMessage *msg, int status, const std::string &message)
{
  if (status == 401)
    soup_message_headers_replace (soup_server_message_get_response_headers (msg),
        "WWW-Authenticate", "Bearer realm=\"LiveMicro\"");
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
  const char *auth = soup_message_headers_get_one (
      soup_server_message_get_request_headers (msg), "Authorization");
  if (!auth || g_ascii_strncasecmp (auth, "Bearer ", 7))
    return "";
  std::string t = auth + 7;
  while (!t.empty () && t.front () == ' ')
    t.erase (t.begin ());
  while (!t.empty () && (t.back () == ' ' || t.back () == '\r'))
    t.pop_back ();
  return t;
}

// Adds a JSON fragment (already serialised) as a member.
void
add_raw (JsonBuilder *b, const char *name, const std::string &json)
{
  json_builder_set_member_name (b, name);
  g_autoptr (JsonParser) p = json_parser_new ();
  if (json_parser_load_from_data (p, json.c_str (), -1, nullptr) && json_parser_get_root (p))
    json_builder_add_value (b, json_node_copy (json_parser_get_root (p)));
  else
    json_builder_add_null_value (b);
}

void
add_string (JsonBuilder *b, const char *name, const std::string &v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_string_value (b, v.c_str ());
}

}  // namespace

// A browser viewer: its WebSocket, its WebRTC peer, its event subscription.
struct HttpApi::Viewer {
  SoupWebsocketConnection *conn = nullptr;
  bool events_only = false;  // /api/v1/microscopes/{id}/events
  bool want_webrtc = true;
  Principal who;
  int presence = 0;
  std::string session_id;
  std::string microscope;
  std::string count_key;  // microscope/profile for the WebRTC viewer gauge
  bool authenticated = false;
  bool ended = false;  // closing: nothing it sends counts any more
  std::shared_ptr<WebRtcPeer> peer;
  int listener = 0;
  guint auth_timeout = 0;
  gulong closed_handler = 0, message_handler = 0;
};

HttpApi::HttpApi (Daemon &daemon) : d_ (daemon) {}

HttpApi::~HttpApi ()
{
  while (!viewers_.empty ())
    close_viewer (viewers_.begin ()->first);
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

void
cut_connection (SoupServerMessage *msg)
{
  if (GSocket *sock = soup_server_message_get_socket (msg))
    g_socket_shutdown (sock, TRUE, TRUE, nullptr);
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
  auto *g = new RequestGuard;
  g->max_body_bytes = static_cast<HttpApi *> (self)->max_body_bytes ();
  g_object_set_data_full (G_OBJECT (msg), "livemicro-guard", g, [] (gpointer d) {
    delete static_cast<RequestGuard *> (d);
  });
  // A client that connects and never finishes its headers is dropped.
  g->header_timer = g_timeout_add_seconds (kHeaderTimeoutS, [] (gpointer d) -> gboolean {
    auto *m = static_cast<SoupServerMessage *> (d);
    if (auto *g = static_cast<RequestGuard *> (g_object_get_data (G_OBJECT (m), "livemicro-guard"))) {
      g->header_timer = 0;
      cut_connection (m);
    }
    return G_SOURCE_REMOVE;
  }, msg);
  g_signal_connect (msg, "got-headers", G_CALLBACK (+[] (SoupServerMessage *m, gpointer) {
    auto *g = static_cast<RequestGuard *> (g_object_get_data (G_OBJECT (m), "livemicro-guard"));
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
    if (len > (goffset) g->max_body_bytes) {
      g->received = (size_t) len;
      refuse_body (m, g);
    }
  }), nullptr);
  g_signal_connect (msg, "got-chunk", G_CALLBACK (+[] (SoupServerMessage *m, GBytes *chunk, gpointer) {
    auto *g = static_cast<RequestGuard *> (g_object_get_data (G_OBJECT (m), "livemicro-guard"));
    g->received += g_bytes_get_size (chunk);
    if (g->received > g->max_body_bytes)
      refuse_body (m, g);
  }), nullptr);
  // The guard (and its timer) goes with the request, whatever happens to it.
  g_signal_connect (msg, "finished", G_CALLBACK (+[] (SoupServerMessage *m, gpointer) {
    g_object_set_data (G_OBJECT (m), "livemicro-guard", nullptr);
  }), nullptr);
}

}  // namespace

void
HttpApi::start ()
{
  server_ = soup_server_new ("server-header", "livemicrod", nullptr);
  if (d_.tls ())
    g_object_set (server_, "tls-certificate", d_.tls (), nullptr);
  g_signal_connect (server_, "request-started", G_CALLBACK (on_request_started), this);
  soup_server_add_handler (server_, nullptr, on_request, this, nullptr);

  g_autoptr (GError) error = nullptr;
  g_autoptr (GInetAddress) addr = g_inet_address_new_from_string (d_.config ().listen_address.c_str ());
  if (!addr)
    throw std::runtime_error ("HTTP: listen_address '" + d_.config ().listen_address + "' is not an IP address");
  g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (addr, (guint16) d_.config ().http_port);
  SoupServerListenOptions opts = d_.tls () ? SOUP_SERVER_LISTEN_HTTPS : (SoupServerListenOptions) 0;
  if (!soup_server_listen (server_, sa, opts, &error))
    throw std::runtime_error ("HTTP: cannot listen on " + d_.config ().listen_address + ":" +
                              std::to_string (d_.config ().http_port) + ": " + error->message);
  GSList *uris = soup_server_get_uris (server_);
  if (uris)
    port_ = g_uri_get_port (static_cast<GUri *> (uris->data));
  g_slist_free_full (uris, (GDestroyNotify) g_uri_unref);
  d_.set_http_port (port_);
}

size_t
HttpApi::max_body_bytes () const
{
  return d_.config ().max_body_bytes;
}

void
HttpApi::on_request (SoupServer *, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer self)
{
  auto *api = static_cast<HttpApi *> (self);
  if (soup_server_message_get_status (msg) != 0)
    return;  // answered while the request was read (413, 400)
  try {
    api->route (msg, path, query);
  } catch (const ApiError &e) {
    respond_error (msg, e.status, e.message);
  } catch (const StoreError &e) {
    g_printerr ("livemicrod: state database: %s\n", e.what ());
    respond_error (msg, 503, "the state database is not available just now; try again");
  } catch (const std::exception &e) {
    respond_error (msg, 500, std::string ("internal error: ") + e.what ());
  }
}

void
HttpApi::serve_file (SoupServerMessage *msg, const std::string &name, const char *type)
{
  std::string path = d_.paths ().web + "/" + name;
  g_autofree char *data = nullptr;
  gsize len = 0;
  if (!g_file_get_contents (path.c_str (), &data, &len, nullptr))
    throw ApiError {404, "no such file"};
  respond (msg, 200, std::string (data, len), type);
}

void
HttpApi::route (SoupServerMessage *msg, const std::string &path, GHashTable *query)
{
  const std::string method = soup_server_message_get_method (msg);
  std::vector<std::string> parts = split_path (path);

  // WebSockets: /ws/{session} (the viewer page) and
  // /api/v1/microscopes/{id}/events (event clients).
  const bool ws_path = (parts.size () == 2 && parts[0] == "ws") ||
                       (parts.size () == 5 && parts[0] == "api" && parts[1] == "v1" &&
                           parts[2] == "microscopes" && parts[4] == "events");
  if (ws_path) {
    if (!is_websocket_request (msg) || method != "GET")
      throw ApiError {400, "this path is a WebSocket: GET with Upgrade: websocket"};
    std::string why;
    if (!accept_websocket (msg, d_.config ().max_body_bytes, on_websocket, this, &why))
      throw ApiError {400, why};
    return;
  }

  if (path == "/healthz") {
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    add_string (b, "status", "ok");
    json_builder_set_member_name (b, "microscopes");
    json_builder_begin_object (b);
    for (const auto &kv : d_.microscopes ()) {
      json_builder_set_member_name (b, kv.first.c_str ());
      json_builder_add_string_value (b, kv.second.online ? "online" : "offline");
    }
    json_builder_end_object (b);
    json_builder_end_object (b);
    g_autoptr (JsonNode) n = json_builder_get_root (b);
    respond (msg, 200, to_json (n));
    return;
  }
  if (path == "/metrics") {
    respond (msg, 200, d_.metrics (), "text/plain; version=0.0.4");
    return;
  }
  if (parts.size () == 2 && parts[0] == "view" && method == "GET") {
    serve_file (msg, "viewer.html", "text/html; charset=utf-8");
    return;
  }
  if (parts.size () == 2 && parts[0] == "web" && method == "GET") {
    static const std::map<std::string, const char *> files = {
        {"viewer.js", "text/javascript; charset=utf-8"},
        {"viewer.css", "text/css; charset=utf-8"},
    };
    auto it = files.find (parts[1]);
    if (it == files.end ())
      throw ApiError {404, "no such file"};
    serve_file (msg, it->first, it->second);
    return;
  }
  if (parts.size () >= 2 && parts[0] == "api" && parts[1] == "v1") {
    api (msg, method, std::vector<std::string> (parts.begin () + 2, parts.end ()), query);
    return;
  }
  throw ApiError {404, "no route " + path};
}

namespace {

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

}  // namespace

void
HttpApi::api (SoupServerMessage *msg, const std::string &method, const std::vector<std::string> &parts,
    GHashTable *query)
{
  auto method_not_allowed = [&] (const char *allow) {
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Allow", allow);
    throw ApiError {405, "method " + method + " not allowed here (allowed: " + allow + ")"};
  };
  if (parts.empty ())
    throw ApiError {404, "no such API route"};
  const bool sessions = parts[0] == "sessions" && parts.size () <= 2;
  const bool microscopes = parts[0] == "microscopes" && parts.size () <= 2;
  const bool session_sub = parts[0] == "sessions" && parts.size () == 3;
  const bool microscope_sub = parts[0] == "microscopes" && (parts.size () == 3 || parts.size () == 4);
  const bool audit = parts[0] == "audit" && parts.size () == 1;
  if (!sessions && !microscopes && !session_sub && !microscope_sub && !audit)
    throw ApiError {404, "no such API route"};

  std::string token = bearer_of (msg);
  if (token.empty ())
    throw ApiError {401, "missing 'Authorization: Bearer <token>'"};
  Principal who = d_.authenticate (token);
  if (!who.valid ())
    throw ApiError {401, "invalid or expired token"};
  const size_t max_body = d_.config ().max_body_bytes;

  auto query_value = [&] (const char *k) -> std::string {
    const char *v = query ? static_cast<const char *> (g_hash_table_lookup (query, k)) : nullptr;
    return v ? v : "";
  };
  auto reply = [&] (const Daemon::Reply &r) {
    if (r.status == 204)
      respond (msg, 204, "", "text/plain");
    else
      respond (msg, r.status, r.json);
  };
  if (audit) {
    if (method != "GET")
      method_not_allowed ("GET");
    std::string after = query_value ("after"), limit = query_value ("limit");
    reply (d_.audit (who, after.empty () ? 0 : g_ascii_strtoll (after.c_str (), nullptr, 10),
        limit.empty () ? 1000 : (int) std::clamp<gint64> (g_ascii_strtoll (limit.c_str (), nullptr, 10), 1, 10000)));
    return;
  }
  if (microscope_sub) {
    const std::string &id = parts[1], &what = parts[2];
    if (what == "annotations" && parts.size () == 4) {
      if (method != "DELETE")
        method_not_allowed ("DELETE");
      char *end = nullptr;
      gint64 aid = g_ascii_strtoll (parts[3].c_str (), &end, 10);
      if (!end || *end)
        throw ApiError {404, "no annotation '" + parts[3] + "'"};
      reply (d_.delete_annotation (who, id, aid));
      return;
    }
    if (parts.size () != 3)
      throw ApiError {404, "no such API route"};
    if (what == "annotations" && !d_.may_see (who, "annotations"))
      throw ApiError {403, "the " + who.role () + " profile does not show annotations"};
    if (what == "annotations" && method == "GET") {
      reply (d_.annotations (who, id));
      return;
    }
    if (what != "control" && what != "commands" && what != "annotations")
      throw ApiError {404, "no such API route"};
    if (method != "POST")
      method_not_allowed (what == "annotations" ? "GET, POST" : "POST");
    if (what == "control") {
      std::optional<ControlRequest> request;
      try {
        request = parse_control_request (body_of (msg, max_body));
      } catch (const ApiError &e) {
        d_.refused (who, id, "control", "(malformed)", e);
        throw;
      }
      reply (d_.control_action (who, id, *request));
    } else if (what == "commands") {
      std::optional<CommandRequest> request;
      std::string op;
      try {
        request = parse_command_request (body_of (msg, max_body), &op);
      } catch (const ApiError &e) {
        d_.microscope_visible_to (who, id);  // 404/403 before 422
        d_.refused (who, id, "command", op.empty () ? "(none)" : op, e);
        throw;
      }
      reply (d_.command (who, id, *request));
    } else {
      d_.microscope_visible_to (who, id);
      reply (d_.add_annotation (who, id, parse_annotation_request (body_of (msg, max_body))));
    }
    return;
  }
  if (session_sub) {
    const std::string &id = parts[1], &what = parts[2];
    if (what == "annotations.geojson") {
      if (method != "GET")
        method_not_allowed ("GET");
      std::string upp = query_value ("um_per_px");
      Daemon::Reply r = d_.annotations_geojson (who, id, upp.empty () ? 0.25 : g_ascii_strtod (upp.c_str (), nullptr));
      respond (msg, r.status, r.json, "application/geo+json");
      return;
    }
    if (what != "stills")
      throw ApiError {404, "no such API route"};
    if (method != "POST")
      method_not_allowed ("POST");
    // Answered when the worker has the frame: pause the message meanwhile.
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
      asked = d_.request_still (who, id, [finish] (JsonObject *still) {
        const char *err = string_member (still, "error", nullptr);
        if (err) {
          finish (503, error_json (err), "application/json");
          return;
        }
        gsize len = 0;
        g_autofree guchar *png = g_base64_decode (
            string_member (still, "png_base64", ""), &len);
        finish (200, std::string ((const char *) png, len), "image/png");
      });
    } catch (...) {
      *answered = true;
      soup_server_message_unpause (msg);
      g_object_unref (msg);
      throw;
    }
    if (!asked)
      finish (503, error_json ("the microscope's media worker is not running"), "application/json");
    else
      g_timeout_add_seconds (5, [] (gpointer d) -> gboolean {
        auto *f = static_cast<std::function<void ()> *> (d);
        (*f) ();
        delete f;
        return G_SOURCE_REMOVE;
      }, new std::function<void ()> ([finish] { finish (504, error_json ("no frame within 5 s"), "application/json"); }));
    return;
  }

  auto session_json = [&] (JsonBuilder *b, const SessionRecord &s) {
    json_builder_begin_object (b);
    add_string (b, "id", s.id);
    add_string (b, "user", s.user);
    add_string (b, "role", s.role);
    add_string (b, "microscope", s.microscope);
    json_builder_set_member_name (b, "created_unix_us");
    json_builder_add_int_value (b, s.created_unix_us);
    add_string (b, "rtsp_url", d_.rtsp_url (s));
    json_builder_set_member_name (b, "view");
    json_builder_begin_object (b);
    auto view = d_.view_of_session (s.id);
    std::string error = d_.view_error_of_session (s.id);
    add_string (b, "profile", s.role);
    add_string (b, "state", !error.empty () ? "failed" : (view && view->frames () > 0 ? "streaming" : "starting"));
    if (!error.empty ())
      add_string (b, "error", d_.shown_to (who, error));
    json_builder_end_object (b);
  };

  if (sessions && parts.size () == 1) {
    if (method == "POST") {
      SessionRequest r = parse_session_request (body_of (msg, max_body));
      std::string fallback = who.admin ? (d_.microscopes ().size () == 1 ? d_.microscopes ().begin ()->first : "")
                                       : who.session->microscope;
      if (!r.microscope && fallback.empty ())
        throw ApiError {422, "missing field 'microscope'"};
      Daemon::NewSession n = d_.create_session (who, r.user, r.role, r.microscope.value_or (fallback));
      g_autoptr (JsonBuilder) b = json_builder_new ();
      session_json (b, n.record);
      add_string (b, "token", n.token);
      add_string (b, "viewer_url", d_.viewer_url (n.record, n.token));
      json_builder_end_object (b);
      g_autoptr (JsonNode) root = json_builder_get_root (b);
      soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Location",
          ("/api/v1/sessions/" + n.record.id).c_str ());
      respond (msg, 201, to_json (root));
      return;
    }
    if (method != "GET")
      method_not_allowed ("GET, POST");
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "sessions");
    json_builder_begin_array (b);
    for (const auto &s : d_.sessions_visible_to (who)) {
      session_json (b, s);
      json_builder_end_object (b);
    }
    json_builder_end_array (b);
    json_builder_end_object (b);
    g_autoptr (JsonNode) root = json_builder_get_root (b);
    respond (msg, 200, to_json (root));
    return;
  }
  if (sessions) {
    const std::string &id = parts[1];
    if (method == "DELETE") {
      d_.end_session (who, id);
      respond (msg, 204, "", "text/plain");
      return;
    }
    if (method != "GET")
      method_not_allowed ("GET, DELETE");
    SessionRecord s = d_.session_visible_to (who, id);
    g_autoptr (JsonBuilder) b = json_builder_new ();
    session_json (b, s);
    add_raw (b, "viewer_stats", d_.viewer_stats (s.id));
    json_builder_end_object (b);
    g_autoptr (JsonNode) root = json_builder_get_root (b);
    respond (msg, 200, to_json (root));
    return;
  }

  // microscopes
  if (method != "GET")
    method_not_allowed ("GET");
  auto microscope_json = [&] (JsonBuilder *b, const Daemon::MicroscopeRuntime &m) {
    json_builder_begin_object (b);
    add_string (b, "id", m.config.id);
    add_string (b, "name", m.config.name);
    if (who.admin) {  // a file path may name the patient
      add_string (b, "uri", m.config.uri);
      json_builder_set_member_name (b, "worker_pid");
      json_builder_add_int_value (b, m.worker->pid ());
    }
    json_builder_set_member_name (b, "online");
    json_builder_add_boolean_value (b, m.online);
    if (!m.online && !m.last_error.empty ())
      add_string (b, "error", d_.shown_to (who, m.last_error));
    // stage/objective/moving from the worker's latest state event.
    g_autoptr (JsonParser) p = json_parser_new ();
    JsonObject *st = nullptr;
    if (json_parser_load_from_data (p, m.state_json.c_str (), -1, nullptr) &&
        JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p)))
      st = json_node_get_object (json_parser_get_root (p));
    json_builder_set_member_name (b, "stage");
    if (st && json_object_has_member (st, "stage"))
      json_builder_add_value (b, json_node_copy (json_object_get_member (st, "stage")));
    else
      json_builder_add_null_value (b);
    json_builder_set_member_name (b, "objective");
    json_builder_add_int_value (b, st ? json_object_get_int_member_with_default (st, "objective", 0) : 0);
    json_builder_set_member_name (b, "um_per_px");
    json_builder_add_double_value (b, st ? json_object_get_double_member_with_default (st, "um_per_px", 0) : 0);
    json_builder_set_member_name (b, "moving");
    json_builder_add_boolean_value (b, st && json_object_get_boolean_member_with_default (st, "moving", FALSE));
    if (st && json_object_has_member (st, "limits"))
      add_raw (b, "soft_limits", to_json (json_object_get_member (st, "limits")));
    if (st && json_object_has_member (st, "objectives"))
      add_raw (b, "objectives", to_json (json_object_get_member (st, "objectives")));
    g_autoptr (JsonParser) cp = json_parser_new ();
    json_parser_load_from_data (cp, d_.control_json (m).c_str (), -1, nullptr);
    JsonObject *control = json_node_get_object (json_parser_get_root (cp));
    for (const char *k : {"controller", "epoch", "queue"}) {
      json_builder_set_member_name (b, k);
      json_builder_add_value (b, json_node_copy (json_object_get_member (control, k)));
    }
    add_raw (b, "presence", d_.presence_json (m));
    add_raw (b, "analysis", d_.may_see (who, "analysis") ? m.features_json : "null");
    json_builder_set_member_name (b, "view_branches");
    json_builder_add_int_value (b, (gint64) m.views.size ());
    json_builder_end_object (b);
  };
  g_autoptr (JsonBuilder) b = json_builder_new ();
  if (parts.size () == 1) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "microscopes");
    json_builder_begin_array (b);
    for (const auto &kv : d_.microscopes ())
      if (who.admin || who.session->microscope == kv.first)
        microscope_json (b, kv.second);
    json_builder_end_array (b);
    json_builder_end_object (b);
  } else {
    microscope_json (b, d_.microscope_visible_to (who, parts[1]));
  }
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  respond (msg, 200, to_json (root));
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
    d_.remove_listener (own->listener);
  if (own->presence)
    d_.leave (own->microscope, own->presence);
  if (own->peer) {
    own->peer->stop ();
    d_.count_webrtc_viewer (own->count_key, -1);
  }
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

std::string
typed (const char *type, const std::string &payload_member, const std::string &payload)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "type", type);
  add_raw (b, payload_member.c_str (), payload);
  json_builder_end_object (b);
  g_autoptr (JsonNode) n = json_builder_get_root (b);
  return to_json (n);
}

std::string
ws_error (const std::string &message)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "type", "error");
  add_string (b, "error", message);
  json_builder_end_object (b);
  g_autoptr (JsonNode) n = json_builder_get_root (b);
  return to_json (n);
}

}  // namespace

// After the token checked out: welcome, events, presence, and (viewer page)
// the WebRTC peer.
void
HttpApi::authenticated (Viewer *v, const Principal &who)
{
  v->authenticated = true;
  v->who = who;
  if (who.session)
    v->microscope = who.session->microscope;
  const auto &m = d_.microscopes ().at (v->microscope);
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
  json_builder_add_boolean_value (b, m.online);
  add_raw (b, "state", m.state_json);
  add_raw (b, "features", d_.may_see (who, "analysis") ? m.features_json : "null");
  add_raw (b, "control", d_.control_json (m));
  json_builder_set_member_name (b, "server_time_us");
  json_builder_add_int_value (b, g_get_real_time ());
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  ws_send (v->conn, to_json (root));

  std::string own_session = who.session ? who.session->id : "";
  std::string microscope = v->microscope;
  // What this viewer's profile lets it see.
  const bool analysis = d_.may_see (who, "analysis"), pointers = d_.may_see (who, "pointers"),
             annotations = d_.may_see (who, "annotations");
  v->listener = d_.add_listener ([this, v, own_session, microscope, analysis, pointers, annotations] (
                                     const std::string &mic, const std::string &kind, const std::string &json) {
    if (mic != microscope)
      return;
    if ((kind == "features" && !analysis) || (kind == "pointer" && !pointers) ||
        (kind.rfind ("annotation", 0) == 0 && !annotations))
      return;
    if (kind == "session_ended") {
      if (!own_session.empty () && json.find (own_session) != std::string::npos)
        end_viewer (v, 4403, "session ended");
      return;
    }
    ws_send (v->conn, typed (kind.c_str (), "data", json));
  });
  if (who.session) {
    v->presence = d_.join (v->microscope, *who.session, v->events_only ? "events" : "viewer");
    ws_send (v->conn, typed ("presence", "data", d_.presence_json (d_.microscopes ().at (v->microscope))));
  }
  if (v->events_only || !v->want_webrtc)
    return;
  auto view = d_.view_of_session (own_session);
  if (!view) {
    ws_send (v->conn, ws_error ("no view for this session"));
    return;
  }
  SoupWebsocketConnection *conn = v->conn;
  v->peer = std::make_shared<WebRtcPeer> (view, d_.config ().listen_address,
      [conn] (const std::string &json) { ws_send (conn, json); });
  try {
    v->peer->start ();
    v->count_key = view->microscope () + "/" + view->profile ();
    d_.count_webrtc_viewer (v->count_key, +1);
  } catch (const std::exception &e) {
    v->peer->stop ();
    v->peer.reset ();
    ws_send (v->conn, ws_error (d_.shown_to (who, e.what ())));
  }
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
    d_.remove_listener (v->listener);
    v->listener = 0;
  }
  if (v->presence) {
    d_.leave (v->microscope, v->presence);
    v->presence = 0;
  }
  if (v->peer) {
    v->peer->stop ();
    v->peer.reset ();
    d_.count_webrtc_viewer (v->count_key, -1);
  }
  if (soup_websocket_connection_get_state (v->conn) == SOUP_WEBSOCKET_STATE_OPEN)
    soup_websocket_connection_close (v->conn, (gushort) code, reason);
}

void
HttpApi::on_viewer_message (Viewer *v, const char *data, size_t len)
{
  if (v->ended)
    return;
  ViewerMessage m;
  try {
    m = parse_viewer_message (data, len, d_.config ().max_body_bytes);
  } catch (const ApiError &e) {
    if (!v->authenticated)  // the first message must be a well-formed hello
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
    Principal who = d_.authenticate (m.token);
    bool ok = v->events_only
                  ? who.valid () && (who.admin || who.session->microscope == v->microscope)
                  : who.session && who.session->id == v->session_id;
    if (!ok) {
      end_viewer (v, 4401, "invalid token for this socket");
      return;
    }
    v->want_webrtc = m.webrtc;
    authenticated (v, who);
    return;
  }
  // The session may have ended since it authenticated.
  if (v->who.session && !d_.session_live (v->who.session->id)) {
    end_viewer (v, 4403, "session ended");
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
        d_.set_viewer_stats (v->who.session->id, m.stats_json);
      break;
    case ViewerMessage::Kind::kPointer:
      if (v->who.session && d_.may_see (v->who, "pointers"))
        d_.pointer (*v->who.session, m.x_um, m.y_um);
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
      g_autoptr (JsonNode) n = json_builder_get_root (b);
      ws_send (v->conn, to_json (n));
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
  auto *ctx = new Ctx {api, vp};
  vp->closed_handler = g_signal_connect_data (conn, "closed", G_CALLBACK (+[] (SoupWebsocketConnection *, gpointer d) {
    auto *c = static_cast<Ctx *> (d);
    c->api->close_viewer (c->v);
  }), ctx, [] (gpointer d, GClosure *) { delete static_cast<Ctx *> (d); }, G_CONNECT_DEFAULT);
  vp->message_handler = g_signal_connect (conn, "message",
      G_CALLBACK (+[] (SoupWebsocketConnection *, gint type, GBytes *bytes, gpointer d) {
        auto *ctx = static_cast<Ctx *> (d);
        gsize len = 0;
        const char *data = static_cast<const char *> (g_bytes_get_data (bytes, &len));
        if (type != SOUP_WEBSOCKET_DATA_TEXT)
          len = 0;  // binary: treated as malformed
        ctx->api->on_viewer_message (ctx->v, data ? data : "", len);
      }), ctx);
  if (vp->events_only && !api->d_.microscopes ().count (vp->microscope)) {
    api->end_viewer (vp, 4404, "no such microscope");
    return;
  }

  // Event clients may authenticate with the Authorization header; everyone
  // else (browsers cannot set it) with a first "hello" message within 5 s.
  std::string bearer = bearer_of (msg);
  if (vp->events_only && !bearer.empty ()) {
    Principal who = api->d_.authenticate (bearer);
    if (!who.valid () || (!who.admin && who.session->microscope != vp->microscope)) {
      api->end_viewer (vp, 4401, "invalid token for this microscope");
      return;
    }
    api->authenticated (vp, who);
    return;
  }
  vp->auth_timeout = g_timeout_add_seconds (5, [] (gpointer d) -> gboolean {
    auto *c = static_cast<Ctx *> (d);
    c->v->auth_timeout = 0;
    if (!c->v->authenticated)
      c->api->end_viewer (c->v, 4401, "authentication timeout");
    return G_SOURCE_REMOVE;
  }, ctx);
}

}  // namespace livemicro::orchestrator
