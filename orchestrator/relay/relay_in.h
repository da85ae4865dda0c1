// The serving node's side of a view relay: pulls one view from its home
// node over SRT (caller, passphrase) and pushes each H.264 access unit into
// a local ViewStream, so the node's RTSP and WebRTC serving work unchanged.
// The frame header is rebuilt from the SEI the home node's worker wrote
// (relayed_frame_header), so local players see the original capture time.
// A thread of its own keeps the link up: when it fails, ends or carries
// nothing for `stall_timeout_ms`, the pipeline is rebuilt and the call
// retried (100 ms, doubling to 1 s between attempts).
#pragma once

#include "common/wire.h"
#include "srt_link.h"
#include "view_stream.h"

#include <gst/gst.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace livemicro::orchestrator::relay {

// What a relayed access unit tells about its frame, besides its bytes.
struct RelayedPicture {
  bool keyframe = false;
  uint32_t width = 0, height = 0; // of the encoded picture (from the SPS)
  uint64_t duration_ns = 0;       // 0: unknown
};

// The FrameHeader of a relayed access unit: capture time and stage from
// LiveMicro's SEI (h264::frame_info), the rest from the picture.  Nothing
// when the access unit has no capture-time SEI.  What the SEI does not
// carry: the worker's encoder PTS (pts_ns stays 0) and the size of the
// camera frame the stage record refers to (frame_width/height are the
// encoded picture's: the same unless the view scales).
std::optional<wire::FrameHeader> relayed_frame_header (const uint8_t *au, size_t len,
                                                       const RelayedPicture &pic, uint32_t view_id);

// For /metrics.
struct RelayInState {
  bool connected = false;                   // bytes arrived on the current connection
  uint64_t bytes_received = 0;              // SRT payload (MPEG-TS), since start
  uint64_t frames = 0;                      // access units pushed into the ViewStream
  uint64_t frames_without_capture_time = 0; // of those, no LiveMicro SEI: stamped on arrival
  uint64_t reconnects = 0;                  // links lost after carrying data
  uint64_t attempts = 0;                    // calls made, including failed ones
  std::string last_error;                   // the last failure, "" when none yet
};

class RelayIn {
public:
  RelayIn (std::shared_ptr<ViewStream> view, std::string home_host, uint16_t home_port, SrtLinkSettings link,
           int stall_timeout_ms = 2000);
  ~RelayIn ();
  RelayIn (const RelayIn &) = delete;
  RelayIn &operator= (const RelayIn &) = delete;

  // False with a message when the settings cannot work (nothing started);
  // otherwise the link is kept up until stop(), whatever the home node does.
  bool start (std::string &error);
  void stop (); // idempotent; the destructor calls it
  RelayInState state () const;

private:
  void run ();
  bool connect_once (); // one pipeline until it fails or stop(); true if data came
  bool wait_before_retry (int ms);
  void note_error (std::string message);
  static GstFlowReturn on_access_unit (GstElement *appsink, gpointer self);

  const std::shared_ptr<ViewStream> view_;
  const std::string home_host_;
  const uint16_t home_port_;
  const SrtLinkSettings link_;
  const int stall_timeout_ms_;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::string last_error_;
  std::atomic<bool> connected_{false}, had_connection_{false};
  std::atomic<int64_t> last_data_us_{0};
  std::atomic<uint64_t> bytes_{0}, frames_{0}, without_capture_{0}, reconnects_{0}, attempts_{0};
};

} // namespace livemicro::orchestrator::relay
