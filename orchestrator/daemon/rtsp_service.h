// RTSP for sessions: one mount per session (rtsp://host:port/s/{id}),
// Digest auth with user = session id and password = session token, and only
// that session's credentials open its mount.  Every mount's media is an
// appsrc fed from the session's shared view stream: no encode per viewer.
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

  RtspService (std::string address, int port, std::string state_dir);
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
  struct Mount;
  std::string address_, state_dir_;
  int port_;
  bool tls_ = false;
  GstRTSPServer *server_ = nullptr;
  GstRTSPAuth *auth_ = nullptr;
  guint source_ = 0;
  std::map<std::string, std::shared_ptr<Mount>> mounts_;
};

} // namespace livemicro::orchestrator
