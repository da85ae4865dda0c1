// RTSP for sessions: one mount per session (rtsp://host:port/s/{id}),
// Digest auth with user = session id and password = session token, and only
// that session's credentials open its mount.  All the mounts of one view
// share one factory and so one media (appsrc ! rtph264pay, fed from the
// view's stream): a player costs its connection and its transport in that
// media, never a pipeline, a payloader or a thread of its own.  Connections
// are served by a fixed pool of threads (RtspConfig::client_threads).
#pragma once

#include "common/store.h"
#include "view_stream.h"

#include <gst/rtsp-server/rtsp-server.h>

#include <atomic>
#include <vector>
#include <map>
#include <memory>
#include <string>

namespace livemicro::orchestrator {

class RtspService {
public:
  static constexpr const char *kRealm = "LiveMicro";
  static constexpr int kListenBacklog = 1024; // the kernel caps it at somaxconn

  // `client_threads`: GstRTSPThreadPool max-threads (0 = the main loop).
  RtspService (std::string address, int port, std::string state_dir, int client_threads = 2);
  ~RtspService ();
  // Attaches the server to the default main context; throws on failure.
  void start (GTlsCertificate *tls = nullptr);
  int port () const { return port_; }
  bool tls () const { return tls_; }

  // `title` is the SDP session name players show (s=; ffprobe's "title"),
  // e.g. "LiveMicro demo — consultant view"; control characters are dropped.
  void add_session (const SessionRecord &s, std::shared_ptr<ViewStream> view, const std::string &title);
  void remove_session (const std::string &id);
  // Clients that are playing, per view id.
  size_t viewers (uint32_t view_id) const;
  size_t viewers () const;

private:
  struct ViewMount;
  std::string address_, state_dir_;
  int port_;
  int client_threads_;
  bool tls_ = false;
  GstRTSPServer *server_ = nullptr;
  GstRTSPAuth *auth_ = nullptr;
  guint source_ = 0;
  std::map<std::string, std::shared_ptr<ViewMount>> mounts_; // by session id
  std::map<const ViewStream *, std::shared_ptr<ViewMount>> views_;
};

} // namespace livemicro::orchestrator
