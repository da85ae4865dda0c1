// One viewer over WebRTC: appsrc (fed by the view's shared encoded stream)
// → rtph264pay → webrtcbin, send-only.  Two ways to negotiate, one peer:
// - the viewer page's WebSocket: the daemon offers (start), signalling
//   messages go out through `send` (JSON, on the main context): the offer,
//   trickled ICE candidates, and per frame the RTP timestamp with the capture
//   time, so that the page can measure glass-to-glass latency;
// - WHEP (answer): the viewer offers over HTTP, the daemon answers once ICE
//   gathering completed, every local candidate in the answer (no trickle).
#pragma once

#include "requests.h"
#include "view_stream.h"

#include <livemicro/hw/frame_record.h>

#include <gst/gst.h>
#include <json-glib/json-glib.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

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
  // WHEP: builds the pipeline for the offer's H.264 payload type, applies
  // the offer and answers.  `done` runs once on the main context with the
  // answer SDP, or with a refusal (malformed: webrtcbin would not take the
  // offer; unavailable: no answer came); the answer waits for ICE gathering
  // to complete, at most `gather_timeout_ms` (then it holds the candidates
  // gathered so far).  Throws when the pipeline cannot be built.
  using Answered = std::function<void (const std::string &answer_sdp, const std::optional<Refusal> &refused)>;
  static constexpr unsigned kGatherTimeoutMs = 5000;
  // A WHEP viewer not connected this long after its answer has gone.
  static constexpr unsigned kConnectTimeoutS = 30;
  void answer (const WhepOffer &offer, Answered done, unsigned gather_timeout_ms = kGatherTimeoutMs);
  // Runs once on the main context when ICE failed, the connection closed,
  // or (WHEP) it never connected: a viewer that left without DELETE.
  void set_on_failed (std::function<void ()> fn) { on_failed_ = std::move (fn); }
  void stop ();
  // An "answer" or "ice" message from the browser (other kinds are ignored).
  void on_message (const ViewerMessage &msg);
  const std::shared_ptr<ViewStream> &view () const { return view_; }

private:
  void build (unsigned payload_type);
  void launch (unsigned payload_type);
  void watch_payloader ();
  void connect_signals ();
  void restrict_ice ();
  static GstPadProbeReturn on_payloader_input (GstPad *pad, GstPadProbeInfo *info, gpointer self);
  static GstPadProbeReturn on_payloader_output (GstPad *pad, GstPadProbeInfo *info, gpointer self);
  void send_main (std::string json);
  void on_main (std::function<void (WebRtcPeer &)> fn);
  void finish_answer (std::optional<Refusal> refused);
  void failed ();
  static void on_negotiation_needed (GstElement *webrtc, gpointer self);
  static void on_ice_candidate (GstElement *webrtc, guint mline, gchar *candidate, gpointer self);

  std::shared_ptr<ViewStream> view_;
  std::string listen_address_;
  Send send_;
  bool offerer_ = false; // start (the page's WebSocket) rather than answer (WHEP)
  GstElement *pipeline_ = nullptr, *webrtc_ = nullptr;
  int viewer_handle_ = 0;
  std::mutex mutex_;
  std::map<GstClockTime, hw::FrameRecord> record_by_pts_; // across the payloader, guarded by mutex_
  // WHEP: the pending answer, candidates gathered for it, the wait bound.
  Answered answered_;
  std::vector<std::pair<unsigned, std::string>> local_candidates_; // guarded by mutex_
  guint gather_timeout_ = 0, connect_timeout_ = 0;
  std::atomic<bool> connected_{false};
  std::function<void ()> on_failed_;
  // Shared with callbacks that may outlive this object on other threads.
  std::shared_ptr<bool> alive_ = std::make_shared<bool> (true);
};

} // namespace livemicro::orchestrator
