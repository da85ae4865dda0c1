// The home node's side of a view relay: serves one ViewStream to other
// nodes as MPEG-TS over SRT (AES, passphrase), one srtsink listener for
// every serving node that pulls the view.  It is one more viewer of the
// ViewStream, and only while at least one node is connected: the worker
// encodes once for local and remote viewers, and not at all for a relay
// nobody pulls.  Each connecting node starts at a keyframe asked of the
// worker, with the TS tables (PAT/PMT) sent to it first by srtsink.
#pragma once

#include "srt_link.h"
#include "view_stream.h"

#include <gio/gio.h>
#include <gst/gst.h>

#include <memory>
#include <mutex>
#include <string>

namespace livemicro::orchestrator::relay {

// For /metrics and the cluster's placement.
struct RelayOutStats {
  int callers = 0;                    // serving nodes connected now
  uint64_t callers_accepted = 0;      // since start
  uint64_t bytes_sent = 0;            // SRT payload to all callers, since start
  uint64_t packets_retransmitted = 0; // to the callers connected now
  bool feeding = false;               // a viewer of the ViewStream now
  std::string last_error;             // the pipeline failed: restart the relay
};

class RelayOut {
public:
  // Listens on `listen_address`:`port` (UDP) once started.
  RelayOut (std::shared_ptr<ViewStream> view, std::string listen_address, uint16_t port,
            SrtLinkSettings link);
  ~RelayOut ();
  RelayOut (const RelayOut &) = delete;
  RelayOut &operator= (const RelayOut &) = delete;

  // False with a message a user can act on (bad settings, the port taken);
  // nothing keeps running then.
  bool start (std::string &error);
  // Closes the connections (callers see the link drop at once) and stops
  // being a viewer.  Idempotent; the destructor calls it.
  void stop ();

  RelayOutStats stats () const;
  const std::shared_ptr<ViewStream> &view () const { return view_; }

private:
  static void on_caller_added (GstElement *sink, int socket, GSocketAddress *addr, gpointer self);
  static void on_caller_removed (GstElement *sink, int socket, GSocketAddress *addr, gpointer self);

  const std::shared_ptr<ViewStream> view_;
  const std::string listen_address_;
  const uint16_t port_;
  const SrtLinkSettings link_;
  GstElement *pipeline_ = nullptr, *appsrc_ = nullptr, *srtsink_ = nullptr;
  mutable std::mutex mutex_;
  int callers_ = 0;
  uint64_t callers_accepted_ = 0;
  int viewer_handle_ = 0; // 0: not a viewer
  std::string last_error_;
};

} // namespace livemicro::orchestrator::relay
