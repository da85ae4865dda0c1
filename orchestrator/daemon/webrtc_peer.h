// One browser viewer over WebRTC: appsrc (fed by the view's shared encoded
// stream) → rtph264pay → webrtcbin, send-only.  Signalling messages go out
// through `send` (JSON, on the main context): the offer, ICE candidates, and
// per frame the RTP timestamp with the capture time, so that the page can
// measure glass-to-glass latency.
#pragma once

#include "requests.h"
#include "view_stream.h"

#include <gst/gst.h>
#include <json-glib/json-glib.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace livemicro::orchestrator {

class WebRtcPeer : public std::enable_shared_from_this<WebRtcPeer> {
public:
  using Send = std::function<void (const std::string &json)>;

  // ICE gathers on `listen_address` only (all interfaces when it is a
  // wildcard such as 0.0.0.0), without UPnP.
  WebRtcPeer (std::shared_ptr<ViewStream> view, std::string listen_address, Send send);
  ~WebRtcPeer ();
  // Builds and starts the pipeline; the offer follows.  Throws on failure.
  void start ();
  void stop ();
  // An "answer" or "ice" message from the browser (other kinds are ignored).
  void on_message (const ViewerMessage &msg);
  const std::shared_ptr<ViewStream> &view () const { return view_; }

private:
  void send_main (std::string json);
  static void on_negotiation_needed (GstElement *webrtc, gpointer self);
  static void on_ice_candidate (GstElement *webrtc, guint mline, gchar *candidate, gpointer self);

  std::shared_ptr<ViewStream> view_;
  std::string listen_address_;
  Send send_;
  GstElement *pipeline_ = nullptr, *webrtc_ = nullptr;
  int viewer_handle_ = 0;
  std::mutex mutex_;
  std::map<GstClockTime, int64_t> capture_by_pts_;
  // Shared with callbacks that may outlive this object on other threads.
  std::shared_ptr<bool> alive_ = std::make_shared<bool> (true);
};

}  // namespace livemicro::orchestrator
