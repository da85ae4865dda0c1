#include "view_stream.h"

#include "common/h264.h"

#include <livemicro/frame_record_meta.h>
#include <algorithm>

namespace livemicro::orchestrator {

uint64_t
CaptureTimeline::pts (int64_t capture_unix_ns, uint64_t running_now_ns, uint64_t duration_ns)
{
  const bool now_known = running_now_ns != GST_CLOCK_TIME_NONE;
  const uint64_t step = duration_ns ? duration_ns : kMinStepNs;
  bool anchor = !anchored_ || reanchor_;
  reanchor_ = false;
  uint64_t pts = 0;
  if (!anchor) {
    int64_t since = capture_unix_ns - anchor_capture_ns_;
    if (since < 0) {
      anchor = true; // the capture clock went back
    } else {
      pts = anchor_pts_ + (uint64_t)since;
      uint64_t drift = !now_known ? 0 : pts > running_now_ns ? pts - running_now_ns : running_now_ns - pts;
      anchor = drift > kMaxDriftNs;
    }
  }
  if (anchor) {
    pts = now_known ? running_now_ns : 0;
    if (anchored_ && pts < last_pts_ + step)
      pts = last_pts_ + step;
    anchored_ = true;
    anchors_++;
    anchor_pts_ = pts;
    anchor_capture_ns_ = capture_unix_ns;
  } else if (pts < last_pts_ + kMinStepNs) {
    pts = last_pts_ + kMinStepNs; // two frames with one capture time
  }
  // Most frames leaving before their timestamp: the anchor frame was late
  // (a player pacing by the timestamps would hold them as long).  Per
  // window of kSettleFrames frames, when at least half of them were early
  // the anchor moves earlier by the least of those (at most half a frame),
  // whatever the others did: a burst of a few queued frames keeps its
  // spacing, while jitter no longer pins the stream to its anchor's delay
  // (it settles near the frames' median delay).
  if (anchor) {
    window_frames_ = early_frames_ = 0;
  } else if (now_known) {
    if (pts > running_now_ns) {
      const uint64_t early = pts - running_now_ns;
      least_early_ns_ = early_frames_ == 0 ? early : std::min (least_early_ns_, early);
      early_frames_++;
    }
    if (++window_frames_ >= kSettleFrames) {
      if (2 * early_frames_ >= window_frames_)
        anchor_pts_ -= std::min ({least_early_ns_, step / 2, anchor_pts_});
      window_frames_ = early_frames_ = 0;
    }
  }
  last_pts_ = pts;
  return pts;
}

void
HopStats::record (double ms)
{
  std::lock_guard<std::mutex> lock (mutex_);
  if (ring_.size () < kSamples)
    ring_.push_back (ms);
  else
    ring_[next_] = ms;
  next_ = (next_ + 1) % kSamples;
}

double
HopStats::quantile (double q) const
{
  std::vector<double> v;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    v = ring_;
  }
  if (v.empty ())
    return -1;
  size_t k = std::min (v.size () - 1, (size_t)(q * v.size ()));
  std::nth_element (v.begin (), v.begin () + k, v.end ());
  return v[k];
}

size_t
HopStats::samples () const
{
  std::lock_guard<std::mutex> lock (mutex_);
  return ring_.size ();
}

// What a capture-clock viewer's appsrc probe keeps.
struct ViewStream::Clock {
  CaptureTimeline timeline; // the streaming thread's alone
  std::shared_ptr<Hop> hop;
  std::atomic<bool> reanchor{false}; // set by play_viewer
};

namespace {

// What leaves a viewer's appsrc gets its timestamps from the capture time its
// record carries (CaptureTimeline); a buffer without one keeps what it has.
// The hop from the worker's encoder to here is recorded on the way.
GstPadProbeReturn
stamp_from_capture_time (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  static GstCaps *encoded_caps = gst_caps_from_string (kEncodedTimeCaps);
  static GstCaps *received_caps = gst_caps_from_string (kReceivedTimeCaps);
  ViewStream::Clock *clock_data = static_cast<std::shared_ptr<ViewStream::Clock> *> (data)->get ();
  CaptureTimeline *timeline = &clock_data->timeline;
  if (clock_data->reanchor.exchange (false))
    timeline->reanchor ();
  GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
  const int64_t now_us = g_get_real_time ();
  if (GstReferenceTimestampMeta *e = gst_buffer_get_reference_timestamp_meta (b, encoded_caps))
    clock_data->hop->total.record ((now_us - (int64_t)(e->timestamp / 1000)) / 1000.0);
  if (GstReferenceTimestampMeta *r = gst_buffer_get_reference_timestamp_meta (b, received_caps))
    clock_data->hop->daemon.record ((now_us - (int64_t)(r->timestamp / 1000)) / 1000.0);
  const LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (b);
  if (!m || m->capture_unix_us == 0)
    return GST_PAD_PROBE_OK;
  const int64_t capture_unix_ns = m->capture_unix_us * 1000;
  GstClockTime now = GST_CLOCK_TIME_NONE;
  GstElement *src = GST_ELEMENT (gst_pad_get_parent (pad));
  if (src) {
    if (GstClock *clock = gst_element_get_clock (src)) {
      GstClockTime t = gst_clock_get_time (clock), base = gst_element_get_base_time (src);
      if (t != GST_CLOCK_TIME_NONE && base != GST_CLOCK_TIME_NONE && t >= base)
        now = t - base;
      gst_object_unref (clock);
    }
    gst_object_unref (src);
  }
  b = gst_buffer_make_writable (b);
  GST_BUFFER_PTS (b) = GST_BUFFER_DTS (b)
      = timeline->pts (capture_unix_ns, now, GST_BUFFER_DURATION_IS_VALID (b) ? GST_BUFFER_DURATION (b) : 0);
  GST_PAD_PROBE_INFO_DATA (info) = b;
  return GST_PAD_PROBE_OK;
}

} // namespace

ViewStream::ViewStream (uint32_t id, std::string microscope, std::string profile, std::string key)
    : id_ (id), microscope_ (std::move (microscope)), profile_ (std::move (profile)), key_ (std::move (key)),
      encoded_caps_ (gst_caps_from_string (kEncodedTimeCaps)),
      received_caps_ (gst_caps_from_string (kReceivedTimeCaps))
{}

ViewStream::~ViewStream ()
{
  for (auto &kv : viewers_)
    gst_object_unref (kv.second.appsrc);
  gst_caps_unref (encoded_caps_);
  gst_caps_unref (received_caps_);
}

int
ViewStream::add_viewer (GstAppSrc *appsrc, Timestamps timestamps, bool until_play)
{
  GstCaps *caps = gst_caps_from_string (
      "video/x-h264,stream-format=byte-stream,alignment=au,profile=constrained-baseline");
  gst_app_src_set_caps (appsrc, caps);
  gst_caps_unref (caps);
  GstPad *pad = timestamps == Timestamps::kCaptureClock
                    ? gst_element_get_static_pad (GST_ELEMENT (appsrc), "src")
                    : nullptr;
  std::shared_ptr<Clock> clock;
  if (pad) {
    clock = std::make_shared<Clock> ();
    clock->hop = hop_;
    gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, stamp_from_capture_time,
                       new std::shared_ptr<Clock> (clock),
                       [] (gpointer d) { delete static_cast<std::shared_ptr<Clock> *> (d); });
    gst_object_unref (pad);
  }
  int handle;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    handle = next_handle_++;
    Viewer v;
    v.appsrc = GST_APP_SRC (gst_object_ref (appsrc));
    v.clock = clock;
    v.until_play = until_play;
    viewers_[handle] = v;
  }
  // The encoder runs again first, then the keyframe is asked for.
  if (viewers_changed_)
    viewers_changed_ ();
  request_keyframe ();
  return handle;
}

void
ViewStream::request_keyframe ()
{
  const int64_t now = g_get_monotonic_time ();
  int64_t asked = keyframe_asked_us_.load ();
  do {
    if (asked != 0 && now - asked < kKeyframeRetryUs)
      return;
  } while (!keyframe_asked_us_.compare_exchange_weak (asked, now));
  if (request_keyframe_)
    request_keyframe_ ();
}

void
ViewStream::play_viewer (int handle)
{
  {
    std::lock_guard<std::mutex> lock (mutex_);
    auto it = viewers_.find (handle);
    if (it != viewers_.end () && it->second.until_play) {
      it->second.until_play = false;
      it->second.started = false; // from the keyframe asked for below,
      if (it->second.clock)       // which takes the delay it comes with
        it->second.clock->reanchor = true;
    }
  }
  request_keyframe ();
}

void
ViewStream::remove_viewer (int handle)
{
  GstAppSrc *appsrc = nullptr;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    auto it = viewers_.find (handle);
    if (it == viewers_.end ())
      return;
    appsrc = it->second.appsrc;
    viewers_.erase (it);
  }
  gst_object_unref (appsrc);
  if (viewers_changed_)
    viewers_changed_ ();
}

size_t
ViewStream::viewers () const
{
  std::lock_guard<std::mutex> lock (mutex_);
  return viewers_.size ();
}

void
ViewStream::push (const wire::FrameHeader &h, const uint8_t *au, size_t len)
{
  const int64_t received_us = g_get_real_time ();
  if (h.encoded_unix_us > 0)
    hop_->socket.record ((received_us - h.encoded_unix_us) / 1000.0);
  if (h.encoded_unix_us > 0 && h.record.capture_unix_us > 0)
    hop_->capture.record ((h.encoded_unix_us - h.record.capture_unix_us) / 1000.0);
  frames_++;
  bytes_ += len;
  last_capture_us_ = h.record.capture_unix_us;
  const bool key = h.flags & wire::kFlagKeyframe;
  // Before the viewers are walked: one that asks from here on is not
  // served by this keyframe and asks for another (request_keyframe).
  if (key)
    keyframe_asked_us_ = 0;
  const bool has_sps = key && h264::has_nal (au, len, h264::kSps);
  std::vector<uint8_t> ps;
  if (has_sps)
    ps = h264::parameter_sets (au, len);
  std::lock_guard<std::mutex> lock (mutex_);
  if (!ps.empty ())
    parameter_sets_ = std::move (ps);
  // Every keyframe carries SPS/PPS (put in after its delimiter when the
  // encoder left them out), so a viewer can start at any of them.  The RTSP
  // payloader adds none of its own (config-interval=0): a second copy after
  // the SEI made ffmpeg split the frame and lose its timestamp.
  GstBuffer *frame = nullptr;
  for (auto &kv : viewers_) {
    Viewer &v = kv.second;
    // A prepared RTSP media holds its first frame until PLAY: the frames
    // after it wait for play_viewer (queued in the appsrc, they would leave
    // in a burst at PLAY, and the capture-clock timestamps would then hold
    // every later frame that much behind).
    if (v.until_play && v.frames_pushed > 0)
      continue;
    if (!v.started && !key)
      continue;
    v.started = true;
    v.frames_pushed++;
    if (!frame) {
      if (key && !has_sps && !parameter_sets_.empty ()) {
        std::vector<uint8_t> data = h264::with_parameter_sets (au, len, parameter_sets_);
        frame = gst_buffer_new_memdup (data.data (), data.size ());
      } else {
        frame = gst_buffer_new_memdup (au, len);
      }
    }
    // A shallow copy per viewer, stamped when it leaves the viewer's appsrc
    // (Timestamps).
    GstBuffer *b = gst_buffer_copy (frame);
    GST_BUFFER_PTS (b) = GST_BUFFER_DTS (b) = GST_CLOCK_TIME_NONE;
    GST_BUFFER_DURATION (b) = h.duration_ns ? h.duration_ns : GST_CLOCK_TIME_NONE;
    if (!key)
      GST_BUFFER_FLAG_SET (b, GST_BUFFER_FLAG_DELTA_UNIT);
    livemicro::add_frame_record_meta (b, h.record);
    if (h.encoded_unix_us > 0) {
      gst_buffer_add_reference_timestamp_meta (b, encoded_caps_, (GstClockTime)h.encoded_unix_us * 1000,
                                               GST_CLOCK_TIME_NONE);
      gst_buffer_add_reference_timestamp_meta (b, received_caps_, (GstClockTime)received_us * 1000,
                                               GST_CLOCK_TIME_NONE);
    }
    gst_app_src_push_buffer (v.appsrc, b);
  }
  if (frame)
    gst_buffer_unref (frame);
}

} // namespace livemicro::orchestrator
