// livemicrod's HTTP side (libsoup 3): the REST API under /api/v1, /healthz,
// /metrics, the viewer page, and the viewer WebSocket (/ws/{session}) that
// carries WebRTC signalling and live microscope events.
#pragma once

#include "daemon.h"
#include "webrtc_peer.h"

#include <libsoup/soup.h>

#include <map>
#include <memory>
#include <string>

namespace livemicro::orchestrator {

class HttpApi {
public:
  explicit HttpApi (Daemon &daemon);
  ~HttpApi ();
  // Listens on the configured address and port (0: any free port); throws.
  void start ();
  int port () const { return port_; }
  size_t max_body_bytes () const;

private:
  struct Viewer;
  static void on_request (SoupServer *, SoupServerMessage *msg, const char *path,
      GHashTable *query, gpointer self);
  static void on_websocket (SoupServerMessage *msg, SoupWebsocketConnection *conn, gpointer self);
  void route (SoupServerMessage *msg, const std::string &path, GHashTable *query);
  void api (SoupServerMessage *msg, const std::string &method, const std::vector<std::string> &parts,
      GHashTable *query);
  void on_viewer_message (Viewer *v, const char *data, size_t len);
  void end_viewer (Viewer *v, int code, const char *reason);
  void authenticated (Viewer *v, const Principal &who);
  void serve_file (SoupServerMessage *msg, const std::string &name, const char *type);
  void close_viewer (Viewer *v);

  Daemon &d_;
  SoupServer *server_ = nullptr;
  int port_ = 0;
  std::map<Viewer *, std::unique_ptr<Viewer>> viewers_;
};

}  // namespace livemicro::orchestrator
