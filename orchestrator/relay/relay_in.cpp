#include "relay_in.h"

#include "common/h264.h"

#include <gst/app/gstappsink.h>

#include <algorithm>

namespace livemicro::orchestrator::relay {

namespace {

// tsdemux hands over each PES (one access unit as the home node's mpegtsmux
// wrote it); h264parse checks it and marks keyframes.  The appsink does not
// wait for the clock: frames go to the ViewStream as they arrive, each
// viewer's appsrc stamps them.  srtsrc's own reconnection is off: this
// class rebuilds the whole pipeline, so tsdemux starts clean on the new
// stream (new PCR, new continuity counters).
constexpr const char *kPipeline
    = "srtsrc name=src auto-reconnect=false ! tsdemux ! video/x-h264,alignment=au ! h264parse "
      "! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false";

constexpr int kFirstRetryMs = 100, kMaxRetryMs = 1000;

std::string
message_text (GstMessage *m)
{
  if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_EOS)
    return "the home node ended the stream";
  g_autoptr (GError) err = nullptr;
  g_autofree gchar *debug = nullptr;
  gst_message_parse_error (m, &err, &debug);
  std::string text = err->message;
  // srtsrc says what went wrong in the last line of the debug text
  // ("Failed to authenticate: Incorrect passphrase", "Connection timeout").
  if (debug) {
    std::string d = debug;
    size_t nl = d.rfind ('\n');
    text += ": " + (nl == std::string::npos ? d : d.substr (nl + 1));
  }
  return text;
}

} // namespace

std::optional<wire::FrameHeader>
relayed_frame_header (const uint8_t *au, size_t len, const RelayedPicture &pic, uint32_t view_id)
{
  std::optional<hw::FrameRecord> record = h264::frame_record (au, len);
  if (!record)
    return std::nullopt;
  wire::FrameHeader h;
  h.view_id = view_id;
  h.record = *record;
  if (pic.keyframe)
    h.flags |= wire::kFlagKeyframe;
  // A record written without the frame size: the encoded picture's.
  if (!h.record.frame_width || !h.record.frame_height) {
    h.record.frame_width = (int)pic.width;
    h.record.frame_height = (int)pic.height;
  }
  h.duration_ns = pic.duration_ns;
  return h;
}

RelayIn::RelayIn (std::shared_ptr<ViewStream> view, std::string home_host, uint16_t home_port,
                  SrtLinkSettings link, int stall_timeout_ms)
    : view_ (std::move (view)), home_host_ (std::move (home_host)), home_port_ (home_port),
      link_ (std::move (link)), stall_timeout_ms_ (stall_timeout_ms)
{}

RelayIn::~RelayIn ()
{
  stop ();
}

bool
RelayIn::start (std::string &error)
{
  if (thread_.joinable ()) {
    error = "the relay is already started";
    return false;
  }
  // The same checks the pipeline makes, before any thread runs.
  g_autoptr (GstElement) probe = gst_element_factory_make ("srtsrc", nullptr);
  if (!probe) {
    error = "no srtsrc element (is gstreamer1.0-plugins-bad installed?)";
    return false;
  }
  if (auto why = configure_srt_element (probe, home_host_, home_port_, false, link_)) {
    error = *why;
    return false;
  }
  if (stall_timeout_ms_ < 100) {
    error = "the relay stall timeout must be at least 100 ms";
    return false;
  }
  {
    std::lock_guard<std::mutex> lock (mutex_);
    stopping_ = false;
  }
  thread_ = std::thread ([this] { run (); });
  return true;
}

void
RelayIn::stop ()
{
  {
    std::lock_guard<std::mutex> lock (mutex_);
    stopping_ = true;
  }
  wake_.notify_all ();
  if (thread_.joinable ())
    thread_.join ();
}

RelayInState
RelayIn::state () const
{
  RelayInState s;
  s.connected = connected_;
  s.bytes_received = bytes_;
  s.frames = frames_;
  s.frames_without_capture_time = without_capture_;
  s.reconnects = reconnects_;
  s.attempts = attempts_;
  std::lock_guard<std::mutex> lock (mutex_);
  s.last_error = last_error_;
  return s;
}

void
RelayIn::note_error (std::string message)
{
  std::lock_guard<std::mutex> lock (mutex_);
  last_error_ = std::move (message);
}

bool
RelayIn::wait_before_retry (int ms)
{
  std::unique_lock<std::mutex> lock (mutex_);
  return !wake_.wait_for (lock, std::chrono::milliseconds (ms), [this] { return stopping_; });
}

void
RelayIn::run ()
{
  int retry_ms = kFirstRetryMs;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock (mutex_);
      if (stopping_)
        return;
    }
    attempts_++;
    const bool carried = connect_once ();
    connected_ = false;
    retry_ms = carried ? kFirstRetryMs : std::min (retry_ms * 2, kMaxRetryMs);
    if (!wait_before_retry (carried ? kFirstRetryMs : retry_ms))
      return;
  }
}

// One connection: builds the pipeline, then watches its bus (every 50 ms,
// so stop() is heard quickly) until an error, the end of the stream, a
// stall or stop().
bool
RelayIn::connect_once ()
{
  g_autoptr (GError) err = nullptr;
  GstElement *pipeline = gst_parse_launch (kPipeline, &err);
  if (!pipeline) {
    note_error (std::string ("cannot build the relay pipeline: ") + err->message);
    return false;
  }
  GstElement *src = gst_bin_get_by_name (GST_BIN (pipeline), "src");
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  configure_srt_element (src, home_host_, home_port_, false, link_); // checked in start()
  GstAppSinkCallbacks callbacks = {};
  callbacks.new_sample = [] (GstAppSink *s, gpointer self) { return on_access_unit (GST_ELEMENT (s), self); };
  gst_app_sink_set_callbacks (GST_APP_SINK (sink), &callbacks, this, nullptr);
  GstPad *pad = gst_element_get_static_pad (src, "src");
  gst_pad_add_probe (
      pad, GST_PAD_PROBE_TYPE_BUFFER,
      [] (GstPad *, GstPadProbeInfo *info, gpointer data) {
        auto *self = static_cast<RelayIn *> (data);
        self->bytes_ += gst_buffer_get_size (GST_PAD_PROBE_INFO_BUFFER (info));
        self->last_data_us_ = g_get_monotonic_time ();
        if (!self->connected_.exchange (true)) {
          if (self->had_connection_.exchange (true))
            self->reconnects_++;
          // Viewers that joined before the link was up start at a keyframe
          // now, not at the next GOP.
          if (self->view_->viewers () > 0)
            self->view_->request_keyframe ();
        }
        return GST_PAD_PROBE_OK;
      },
      this, nullptr);
  gst_object_unref (pad);
  gst_object_unref (src);
  gst_object_unref (sink);

  last_data_us_ = g_get_monotonic_time ();
  GstBus *bus = gst_element_get_bus (pipeline);
  if (gst_element_set_state (pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    GstMessage *m = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
    note_error (m ? message_text (m) : "the relay pipeline did not start");
    if (m)
      gst_message_unref (m);
  } else {
    for (;;) {
      {
        std::lock_guard<std::mutex> lock (mutex_);
        if (stopping_)
          break;
      }
      GstMessage *m = gst_bus_timed_pop_filtered (bus, 50 * GST_MSECOND,
                                                  (GstMessageType)(GST_MESSAGE_ERROR | GST_MESSAGE_EOS));
      if (m) {
        note_error (message_text (m));
        gst_message_unref (m);
        break;
      }
      if (g_get_monotonic_time () - last_data_us_ > (int64_t)stall_timeout_ms_ * 1000) {
        note_error ("nothing received from the home node for " + std::to_string (stall_timeout_ms_) + " ms");
        break;
      }
    }
  }
  gst_object_unref (bus);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (pipeline);
  return connected_;
}

// The appsink's streaming thread: one access unit into the ViewStream.
GstFlowReturn
RelayIn::on_access_unit (GstElement *appsink, gpointer data)
{
  auto *self = static_cast<RelayIn *> (data);
  GstSample *sample = gst_app_sink_pull_sample (GST_APP_SINK (appsink));
  if (!sample)
    return GST_FLOW_EOS;
  GstBuffer *buf = gst_sample_get_buffer (sample);
  RelayedPicture pic;
  pic.keyframe = !GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_DELTA_UNIT);
  pic.duration_ns = GST_BUFFER_DURATION_IS_VALID (buf) ? GST_BUFFER_DURATION (buf) : 0;
  if (GstCaps *caps = gst_sample_get_caps (sample)) {
    const GstStructure *st = gst_caps_get_structure (caps, 0);
    int w = 0, h = 0;
    if (gst_structure_get_int (st, "width", &w) && gst_structure_get_int (st, "height", &h)) {
      pic.width = (uint32_t)w;
      pic.height = (uint32_t)h;
    }
  }
  GstMapInfo map;
  if (gst_buffer_map (buf, &map, GST_MAP_READ)) {
    std::optional<wire::FrameHeader> h = relayed_frame_header (map.data, map.size, pic, self->view_->id ());
    if (!h) {
      // Not from a LiveMicro worker: still relayed (a decoder needs every
      // frame), stamped with its arrival.
      self->without_capture_++;
      h = wire::FrameHeader{};
      h->view_id = self->view_->id ();
      h->record.capture_unix_us = g_get_real_time ();
      h->flags = pic.keyframe ? wire::kFlagKeyframe : 0;
    }
    self->view_->push (*h, map.data, map.size);
    self->frames_++;
    gst_buffer_unmap (buf, &map);
  }
  gst_sample_unref (sample);
  return GST_FLOW_OK;
}

} // namespace livemicro::orchestrator::relay
