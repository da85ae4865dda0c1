// A recording of one view: the view's own encoded H.264 (no second encode),
// written by splitmuxsink as fragmented MP4 segments, and beside each
// segment its stage track as JSON Lines, one line per frame in the order
// the frames are in the segment.
//
// The recording is one more viewer of the view's ViewStream in the daemon:
// it counts as a player for demand-driven media (the capture and encoder run
// while it records), a guest view's recording is the guest's masked stream,
// and a media worker restart is a gap in the recording, not its end (the
// view stream lives in the daemon).  mp4mux writes a fragment every
// kFragmentMs, so a daemon killed mid-segment leaves that segment playable up
// to its last fragment; closed segments are complete files.
// docs/orchestrator.md#recording.
#pragma once

#include "view_stream.h"

#include <gst/gst.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace livemicro::orchestrator {

// What a recording is and how far it got.
struct RecordingStatus {
  std::string id;                        // also the name of its directory under the recordings directory
  std::string session, microscope, view; // view: the profile recorded
  std::string state = "recording";       // recording, stopped, failed
  std::string error;                     // why it failed
  int64_t started_unix_us = 0, stopped_unix_us = 0;
  int segment_s = 0;
  uint64_t frames = 0;        // written into segments
  uint32_t segments = 0;      // segment files opened
  uint32_t interruptions = 0; // gaps of over Recording::kGapUs between frames (a worker restart)
};

// A recording's name: UTC start time, the view profile and 32 random bits
// ("20261130T014500Z-guest-1a2b3c4d"); nothing about the patient or user.
std::string new_recording_id (const std::string &profile, int64_t now_unix_us);

// One line of a stage track (JSON Lines): the frame's number in the
// recording, its segment, its time in the segment file (ns from the
// segment's first frame) and where it was taken.
std::string stage_track_line (uint64_t frame, uint32_t segment, uint64_t pts_ns, const hw::FrameRecord &r);

class Recording {
public:
  static constexpr unsigned kFragmentMs = 500;
  static constexpr unsigned kStopTimeoutMs = 5000;
  // Frames further apart than this in capture time are an interruption: a
  // media worker restart takes longer, a running capture never does (33 ms
  // at 30 fps; a stall of the capture this long counts too).
  static constexpr int64_t kGapUs = 300000;
  using Ended = std::function<void (const RecordingStatus &)>;

  // Creates `directory`/`status.id` and starts recording `view` at its next
  // keyframe.  `on_failed` is called (on the main loop) when the writing
  // fails by itself (disk full).  Throws std::runtime_error.
  Recording (std::shared_ptr<ViewStream> view, RecordingStatus status, const std::string &directory,
             Ended on_failed);
  ~Recording (); // finishes the files (bounded) when stop() was not called
  Recording (const Recording &) = delete;
  Recording &operator= (const Recording &) = delete;

  // Stops taking frames, finishes the last segment and calls `done` on the
  // main loop (within kStopTimeoutMs).
  void stop (Ended done);
  RecordingStatus status () const;
  bool stopping () const { return stopping_ || finished_; }

private:
  static gchar *on_format_location (GstElement *, guint index, gpointer self);
  static GstPadProbeReturn on_parse_input (GstPad *, GstPadProbeInfo *info, gpointer self);
  static GstPadProbeReturn on_muxer_input (GstPad *, GstPadProbeInfo *info, gpointer self);
  static gboolean on_bus (GstBus *, GstMessage *m, gpointer self);
  void finish (const std::string &state, const std::string &error);
  void close_track ();

  std::shared_ptr<ViewStream> view_;
  std::string path_;
  GstElement *pipeline_ = nullptr, *appsrc_ = nullptr;
  int viewer_ = 0;
  guint bus_watch_ = 0, timeout_ = 0, idle_ = 0;
  bool stopping_ = false, finished_ = false;
  Ended on_failed_, done_;

  mutable std::mutex mutex_; // the streaming threads' part
  RecordingStatus status_;
  std::map<uint64_t, hw::FrameRecord> by_pts_; // frames between h264parse and the muxer
  int track_fd_ = -1;                          // the current segment's stage track
  uint64_t segment_first_pts_ = GST_CLOCK_TIME_NONE;
  int64_t last_capture_us_ = 0;
};

} // namespace livemicro::orchestrator
