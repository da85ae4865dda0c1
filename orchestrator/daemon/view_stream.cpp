#include "view_stream.h"

#include "common/h264.h"

namespace livemicro::orchestrator {

ViewStream::ViewStream (uint32_t id, std::string microscope, std::string profile,
    std::string key)
    : id_ (id), microscope_ (std::move (microscope)), profile_ (std::move (profile)),
      key_ (std::move (key)), capture_caps_ (gst_caps_from_string (kCaptureTimeCaps))
{
}

ViewStream::~ViewStream ()
{
  for (auto &kv : viewers_)
    gst_object_unref (kv.second.appsrc);
  gst_caps_unref (capture_caps_);
}

int
ViewStream::add_viewer (GstAppSrc *appsrc)
{
  GstCaps *caps = gst_caps_from_string (
      "video/x-h264,stream-format=byte-stream,alignment=au,profile=constrained-baseline");
  gst_app_src_set_caps (appsrc, caps);
  gst_caps_unref (caps);
  int handle;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    handle = next_handle_++;
    viewers_[handle] = Viewer {GST_APP_SRC (gst_object_ref (appsrc)), false};
  }
  // The encoder runs again first, then the keyframe is asked for.
  if (viewers_changed_)
    viewers_changed_ ();
  if (request_keyframe_)
    request_keyframe_ ();
  return handle;
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

bool
ViewStream::recent_frame (int64_t capture_unix_us, wire::FrameHeader &out) const
{
  std::lock_guard<std::mutex> lock (mutex_);
  auto it = recent_.find (capture_unix_us);
  if (it == recent_.end ())
    return false;
  out = it->second;
  return true;
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
  frames_++;
  bytes_ += len;
  last_capture_us_ = h.capture_unix_us;
  const bool key = h.flags & wire::kFlagKeyframe;
  std::vector<uint8_t> ps;
  if (key)
    ps = h264::parameter_sets (au, len);
  {
    std::lock_guard<std::mutex> lock (mutex_);
    if (!ps.empty ())
      parameter_sets_ = std::move (ps);
    recent_[h.capture_unix_us] = h;
    while (recent_.size () > 64)
      recent_.erase (recent_.begin ());
  }
  GstBuffer *frame = nullptr;     // the access unit as it came
  GstBuffer *with_ps = nullptr;   // with SPS/PPS in front, for a first keyframe
  std::lock_guard<std::mutex> lock (mutex_);
  for (auto &kv : viewers_) {
    Viewer &v = kv.second;
    if (!v.started && !key)
      continue;
    GstBuffer *src;
    if (!v.started) {
      v.started = true;
      if (!with_ps) {
        bool has_sps = h264::has_nal (au, len, h264::kSps);
        std::vector<uint8_t> data;
        if (!has_sps)
          data = parameter_sets_;
        data.insert (data.end (), au, au + len);
        with_ps = gst_buffer_new_memdup (data.data (), data.size ());
      }
      src = with_ps;
    } else {
      if (!frame)
        frame = gst_buffer_new_memdup (au, len);
      src = frame;
    }
    // A shallow copy per viewer: appsrc stamps its own timestamps.
    GstBuffer *b = gst_buffer_copy (src);
    GST_BUFFER_PTS (b) = GST_BUFFER_DTS (b) = GST_CLOCK_TIME_NONE;
    GST_BUFFER_DURATION (b) = h.duration_ns ? h.duration_ns : GST_CLOCK_TIME_NONE;
    if (!key)
      GST_BUFFER_FLAG_SET (b, GST_BUFFER_FLAG_DELTA_UNIT);
    gst_buffer_add_reference_timestamp_meta (b, capture_caps_,
        (GstClockTime) h.capture_unix_us * 1000, GST_CLOCK_TIME_NONE);
    gst_app_src_push_buffer (v.appsrc, b);
  }
  if (frame)
    gst_buffer_unref (frame);
  if (with_ps)
    gst_buffer_unref (with_ps);
}

}  // namespace livemicro::orchestrator
