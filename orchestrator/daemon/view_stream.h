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

// Every buffer pushed to a viewer carries its capture time as a
// GstReferenceTimestampMeta with these caps (ns since the Unix epoch).
constexpr const char *kCaptureTimeCaps = "timestamp/x-unix";

class ViewStream {
public:
  ViewStream (uint32_t id, std::string microscope, std::string profile, std::string key);
  ~ViewStream ();

  uint32_t id () const { return id_; }
  const std::string &microscope () const { return microscope_; }
  const std::string &profile () const { return profile_; }
  const std::string &key () const { return key_; }

  // Adds an appsrc (caps set here); returns a handle for remove_viewer.
  int add_viewer (GstAppSrc *appsrc);
  void remove_viewer (int handle);
  size_t viewers () const;

  // Reader thread: one access unit from the worker.
  void push (const wire::FrameHeader &h, const uint8_t *au, size_t len);

  // How to ask the worker for a keyframe (set by the daemon).
  void set_keyframe_request (std::function<void ()> fn) { request_keyframe_ = std::move (fn); }
  // Called (on the caller's thread, no lock held) after a viewer came or
  // went: the worker encodes this view only while it has viewers.
  void set_viewers_changed (std::function<void ()> fn) { viewers_changed_ = std::move (fn); }

  // The header of a recent frame by capture time (for per-frame overlays).
  bool recent_frame (int64_t capture_unix_us, wire::FrameHeader &out) const;

  uint64_t frames () const { return frames_; }
  uint64_t bytes () const { return bytes_; }
  int64_t last_capture_unix_us () const { return last_capture_us_; }

private:
  struct Viewer {
    GstAppSrc *appsrc = nullptr;
    bool started = false;
  };
  const uint32_t id_;
  const std::string microscope_, profile_, key_;
  mutable std::mutex mutex_;
  std::map<int, Viewer> viewers_;
  int next_handle_ = 1;
  std::vector<uint8_t> parameter_sets_;
  std::map<int64_t, wire::FrameHeader> recent_;  // by capture time, last ~2 s
  std::function<void ()> request_keyframe_;
  std::function<void ()> viewers_changed_;
  std::atomic<uint64_t> frames_ {0}, bytes_ {0};
  std::atomic<int64_t> last_capture_us_ {0};
  GstCaps *capture_caps_ = nullptr;
};

}  // namespace livemicro::orchestrator
