// livemicrod's HTTP side (libsoup 3): the REST API under /api/v1, /healthz,
// /metrics, the viewer page, WHEP (/whep/{session}: WebRTC playback
// negotiated in one HTTP exchange, draft-ietf-wish-whep), and the WebSockets
// (/ws/{session}: the viewer page's WebRTC signalling and events;
// /api/v1/microscopes/{id}/events: events only).
//
// A route table of small handlers: each parses its request into a typed call
// (requests.h), calls the node or a microscope hub, and renders the typed
// result (api_json.h).  Refusals from the domain become HTTP statuses here,
// and only here.
#pragma once

#include "home_link.h"
#include "node.h"
#include "socket_reaper.h"
#include "webrtc_peer.h"

#include <libsoup/soup.h>

#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

namespace livemicro::orchestrator {

// The HTTP status of a refusal.
int http_status (Reason reason);

class HttpApi {
public:
  explicit HttpApi (Node &node);
  ~HttpApi ();
  // Listens on the configured address and port (0: any free port); throws.
  void start ();
  int port () const { return port_; }
  size_t max_body_bytes () const;
  LeakedSocketReaper &socket_reaper () { return reaper_; }

  // One request on its way through a route.
  struct Call {
    SoupServerMessage *msg;
    std::vector<std::string> params; // the path's {parameters}, in order
    GHashTable *query;
    Principal who; // for /api/v1 routes: the caller
    std::string query_value (const char *key) const;
  };
  using Handler = void (HttpApi::*) (Call &);
  struct Route {
    const char *method;
    const char *pattern; // e.g. "/api/v1/sessions/{}/stills"
    bool authenticated;  // needs a bearer token
    Handler handler;
  };

private:
  struct Viewer;
  static void on_request (SoupServer *, SoupServerMessage *msg, const char *path, GHashTable *query,
                          gpointer self);
  static void on_websocket (SoupServerMessage *msg, SoupWebsocketConnection *conn, gpointer self);
  void route (SoupServerMessage *msg, const std::string &path, GHashTable *query);
  // In an edge cloud: the home node that answers this request, when it is
  // about a microscope homed on another node (docs/edge-cloud.md).
  std::optional<std::string> forward_target (const Call &c, const std::vector<std::string> &parts,
                                             const std::string &method) const;
  // Sends the request on to `base` (the home node) with the caller's own
  // token and answers with what it answered.
  void forward (SoupServerMessage *msg, const std::string &base);
  static const std::vector<Route> &routes (); // the table

  // Handlers, one per route (the table is in http_api.cpp).
  void healthz (Call &c);
  void metrics (Call &c);
  void viewer_page (Call &c);
  void web_file (Call &c);
  void create_session (Call &c);
  void list_sessions (Call &c);
  void get_session (Call &c);
  void end_session (Call &c);
  void take_still (Call &c);
  void start_recording (Call &c);
  void get_recording (Call &c);
  void stop_recording (Call &c);
  void annotations_geojson (Call &c);
  void list_microscopes (Call &c);
  void get_microscope (Call &c);
  void slide_map (Call &c);
  void slide_map_png (Call &c);
  void control (Call &c);
  void command (Call &c);
  void get_command (Call &c);
  void keyframe (Call &c);
  void list_annotations (Call &c);
  void add_annotation (Call &c);
  void delete_annotation (Call &c);
  void microscope_annotations_geojson (Call &c);
  void audit (Call &c);
  void cluster (Call &c);
  void adopt_placed_session (Call &c);
  void whep_offer (Call &c);
  void whep_delete (Call &c);
  // CORS for WHEP: the headers a browser on an allowed origin needs (true
  // when the request's Origin is allowed), and the answer to a preflight.
  bool allow_cross_origin (SoupServerMessage *msg) const;
  void whep_options (SoupServerMessage *msg, const std::vector<std::string> &parts) const;

  // The viewer and events WebSockets.
  void on_viewer_message (Viewer *v, const char *data, size_t len);
  void authenticated (Viewer *v, const Principal &who);
  std::string welcome_json (const Principal &who, const MicroscopeHub &m) const;
  // A viewer page of a session of a microscope homed on another node (video
  // from the view relayed here, events from the home node: home_link.h), or
  // an events client of such a microscope (events from the home node).
  void serve_relayed (Viewer *v, const Principal &who, const std::string &token);
  void start_peer (Viewer *v, const Principal &who, std::shared_ptr<ViewStream> view);
  // Where the page may go on if this node fails (an edge cloud only).
  void send_failover_nodes (Viewer *v);
  // To every page, when the edge cloud's nodes changed.
  void refresh_failover_nodes ();
  void release_view (Viewer *v);
  void end_viewer (Viewer *v, int code, const char *reason);
  // The socket no longer reads its microscope's analysis (demand).
  void stop_reading_analysis (Viewer *v);
  void close_viewer (Viewer *v);

  // WHEP resources (/whep/{session}/{resource}): a WebRTC peer each.
  struct WhepResource {
    std::string session_id, count_key;
    std::shared_ptr<WebRtcPeer> peer;
    bool counted = false;    // answered: counted as a WebRTC viewer
    bool holds_view = false; // its view is relayed here while it lives
  };
  // Per session at once (a page that reloads makes a new one before its
  // old one's ICE times out).
  static constexpr size_t kMaxWhepPerSession = 8;
  void end_whep (const std::string &resource);

  Node &node_;
  SoupServer *server_ = nullptr;
  SoupSession *forwarder_ = nullptr; // to other nodes of the edge cloud
  int port_ = 0;
  LeakedSocketReaper reaper_;
  guint reap_timer_ = 0;
  guint nodes_timer_ = 0;
  std::string failover_nodes_; // their names and addresses, as last sent
  std::map<Viewer *, std::unique_ptr<Viewer>> viewers_;
  std::map<std::string, WhepResource> whep_; // by resource id
  int whep_listener_ = 0;
};

} // namespace livemicro::orchestrator
