// One view branch's encoded stream in the daemon, fanned out to every
// viewer of the view: RTSP media and WebRTC peers each own an appsrc fed
// from here.  A viewer starts at a keyframe (asking the worker for one), with
// the SPS/PPS put in front when the keyframe lacks them.  No viewer costs an
// encode.
#pragma once

#include "common/wire.h"

#include <gst/app/gstappsrc.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace livemicro::orchestrator {

// Every buffer pushed to a viewer carries its frame's record as a StageMeta
// (livemicro/frame_record_meta.h): the capture time its timestamps come
// from, and where the frame was taken for per-frame messages.
// ... and, when the worker said it, when its encoder handed it over, and
// when the daemon received it (ns since the epoch), for Hop.
constexpr const char *kEncodedTimeCaps = "timestamp/x-livemicro-encoded";
constexpr const char *kReceivedTimeCaps = "timestamp/x-livemicro-received";

// A viewer's timestamps from the capture clock.  Its first frame is stamped
// with the viewer pipeline's running time when it leaves the appsrc; each
// later one by how much later it was captured, so the RTP timestamps keep
// the capture spacing (not the jitter of the socket from the worker, nor a
// burst of frames queued before PLAY) and agree with the RTCP sender
// reports, which map the same running time.  The timestamps only ever
// increase: a capture clock stepped back, frames from a restarted worker
// after a gap, or a drift of more than kMaxDriftNs from the running time
// start a new anchor at the running time (at least one frame after the
// last).  A stream keeps the offset of the frame it anchored on until, in a
// window of kSettleFrames frames, at least half are stamped after the
// running time they leave at (the anchor frame was late): then the anchor
// moves earlier by the least of those, at most half a frame at a time, so
// the timestamps settle near the frames' own median delay.  The timestamps
// do not hold the frames: the RTSP media send without rate control
// (rtsp_service.cpp).  Plain arithmetic, no GStreamer state: unit-tested.
class CaptureTimeline {
public:
  static constexpr uint64_t kMaxDriftNs = 1000000000; // 1 s
  static constexpr uint64_t kMinStepNs = 1000000;     // 1 ms, 90 ticks of RTP's clock
  static constexpr int kSettleFrames = 30;
  // `running_now_ns` is GST_CLOCK_TIME_NONE when the pipeline has no clock
  // yet; `duration_ns` 0 when unknown.
  uint64_t pts (int64_t capture_unix_ns, uint64_t running_now_ns, uint64_t duration_ns);
  bool anchored () const { return anchored_; }
  int anchors () const { return anchors_; }
  // The next frame starts a new anchor at the running time (still after the
  // last timestamp): the stream keeps that frame's delay, not the delay of
  // a frame that waited for PLAY in a prepared media.
  void reanchor () { reanchor_ = true; }

private:
  bool anchored_ = false, reanchor_ = false;
  int anchors_ = 0;
  uint64_t anchor_pts_ = 0, last_pts_ = 0;
  int64_t anchor_capture_ns_ = 0;
  int window_frames_ = 0;       // of the current settling window
  int early_frames_ = 0;        // of them, stamped after the running time
  uint64_t least_early_ns_ = 0; // the least of those
};

// The worker→daemon hop of a view's access units, in ms: from the worker's
// encoder handing one over (FrameHeader::encoded_unix_us) to the daemon
// handing it from an RTSP viewer's appsrc to its payloader, over the last
// kSamples frames.  Thread-safe.
class HopStats {
public:
  static constexpr size_t kSamples = 600;
  void record (double ms);
  // The q-quantile (nearest rank) of the recent samples; -1 without any.
  double quantile (double q) const;
  size_t samples () const;

private:
  mutable std::mutex mutex_;
  std::vector<double> ring_;
  size_t next_ = 0;
};

// The hop in parts: `socket` from the worker's encoder to the daemon's
// reader thread (the worker's SEI copy and write, the socket, the read),
// `daemon` from there to the payloader's input (the copy, the appsrc's
// queue and thread), `total` both.
struct Hop {
  HopStats total, socket, daemon;
  HopStats capture; // before the hop: the frame's capture → the worker's encoder output
};

class ViewStream {
public:
  ViewStream (uint32_t id, std::string microscope, std::string profile, std::string key);
  ~ViewStream ();

  uint32_t id () const { return id_; }
  const std::string &microscope () const { return microscope_; }
  const std::string &profile () const { return profile_; }
  const std::string &key () const { return key_; }

  // How a viewer's appsrc stamps what leaves it.
  enum class Timestamps {
    kCaptureClock, // CaptureTimeline (give the appsrc do-timestamp=false): RTSP players
    kArrival,      // the appsrc's do-timestamp (give it do-timestamp=true): WebRTC
                   // peers, as before (their playout follows arrival; the page
                   // maps RTP timestamps to capture times with "frame" messages)
  };
  // A kCaptureClock viewer's timeline and hop record, kept by its appsrc's
  // probe (view_stream.cpp).
  struct Clock;
  // Adds an appsrc (caps set here); returns a handle for remove_viewer.
  // `until_play`: an RTSP media, prepared before its first PLAY
  // (play_viewer); other viewers (WebRTC, recordings, relays) get every
  // frame from the first keyframe on.
  int add_viewer (GstAppSrc *appsrc, Timestamps timestamps, bool until_play = false);
  // The first PLAY of a kCaptureClock viewer's media: until then it got
  // one keyframe (to prepare the media) and nothing more; from here on it
  // gets every frame from the keyframe this asks for.  For a media already
  // playing (another player joins) it only asks for a keyframe.
  void play_viewer (int handle);
  void remove_viewer (int handle);
  size_t viewers () const;

  // Reader thread: one access unit from the worker.
  void push (const wire::FrameHeader &h, const uint8_t *au, size_t len);

  // How to ask the worker for a keyframe (set by the daemon).
  void set_keyframe_request (std::function<void ()> fn) { request_keyframe_ = std::move (fn); }
  // Asks for one now: a viewer that joins an appsrc already fed (a second
  // node pulling a relay) starts at once rather than at the next GOP.
  // Unless one asked for is still on its way (not pushed yet, asked less
  // than kKeyframeRetryUs ago): every viewer waiting starts at that one, so
  // players joining together cost the encoder one keyframe, not one each.
  void request_keyframe ();
  static constexpr int64_t kKeyframeRetryUs = 1000000;
  // Called (on the caller's thread, no lock held) after a viewer came or
  // went: the worker encodes this view only while it has viewers.
  void set_viewers_changed (std::function<void ()> fn) { viewers_changed_ = std::move (fn); }

  const Hop &hop () const { return *hop_; }
  uint64_t frames () const { return frames_; }
  uint64_t bytes () const { return bytes_; }
  int64_t last_capture_unix_us () const { return last_capture_us_; }

private:
  struct Viewer {
    GstAppSrc *appsrc = nullptr;
    std::shared_ptr<Clock> clock; // kCaptureClock viewers
    bool started = false;         // from a keyframe on
    bool until_play = false;      // an RTSP media before its first PLAY
    uint64_t frames_pushed = 0;
  };
  const uint32_t id_;
  const std::string microscope_, profile_, key_;
  mutable std::mutex mutex_;
  std::map<int, Viewer> viewers_;
  int next_handle_ = 1;
  std::vector<uint8_t> parameter_sets_;
  std::function<void ()> request_keyframe_;
  std::function<void ()> viewers_changed_;
  std::atomic<uint64_t> frames_{0}, bytes_{0};
  std::atomic<int64_t> last_capture_us_{0};
  std::atomic<int64_t> keyframe_asked_us_{0}; // monotonic; 0: none on its way
  GstCaps *encoded_caps_ = nullptr, *received_caps_ = nullptr;
  std::shared_ptr<Hop> hop_ = std::make_shared<Hop> ();
};

} // namespace livemicro::orchestrator
