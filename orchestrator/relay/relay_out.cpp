#include "relay_out.h"

#include <gst/app/gstappsrc.h>

namespace livemicro::orchestrator::relay {

namespace {

// H.264 as the worker encoded it, with its SEI (capture time, stage) kept:
// h264parse passes SEI NAL units through and mpegtsmux puts each access
// unit whole into one PES.  Seven TS packets (1316 bytes) per SRT message,
// SRT's usual payload.  srtsink does not wait for the clock (sync=false):
// frames leave as they come, SRT paces their delivery on the other side.
// The cost of alignment=7: mpegtsmux keeps a frame's last partial group of
// seven until the next frame fills it, one frame interval (measured: the
// hop's delay is the SRT latency + ~35 ms at 30 fps).  alignment=1, 0 or
// -1 (no hold) made 1.22's mpegtsmux stop after its tables in this
// pipeline (a caller joins before the first frame), so 7 it is.
constexpr const char *kPipeline = "appsrc name=src is-live=true format=time do-timestamp=true min-latency=0 "
                                  "! h264parse config-interval=-1 ! mpegtsmux alignment=7 "
                                  "! srtsink name=sink sync=false async=false wait-for-connection=false";

} // namespace

RelayOut::RelayOut (std::shared_ptr<ViewStream> view, std::string listen_address, uint16_t port,
                    SrtLinkSettings link)
    : view_ (std::move (view)), listen_address_ (std::move (listen_address)), port_ (port),
      link_ (std::move (link))
{}

RelayOut::~RelayOut ()
{
  stop ();
}

bool
RelayOut::start (std::string &error)
{
  if (pipeline_) {
    error = "the relay is already started";
    return false;
  }
  g_autoptr (GError) err = nullptr;
  GstElement *pipeline = gst_parse_launch (kPipeline, &err);
  if (!pipeline) {
    error = std::string ("cannot build the relay pipeline: ") + err->message
            + " (is gstreamer1.0-plugins-bad installed?)";
    return false;
  }
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  GstElement *src = gst_bin_get_by_name (GST_BIN (pipeline), "src");
  if (auto why = configure_srt_element (sink, listen_address_, port_, true, link_)) {
    error = *why;
    gst_object_unref (sink);
    gst_object_unref (src);
    gst_object_unref (pipeline);
    return false;
  }
  // An error after the start (none is expected: a caller that fails is
  // dropped by srtsink) is kept for stats(); the owner restarts the relay.
  g_autoptr (GstBus) bus = gst_element_get_bus (pipeline);
  gst_bus_set_sync_handler (
      bus,
      [] (GstBus *, GstMessage *m, gpointer data) {
        if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR) {
          auto *self = static_cast<RelayOut *> (data);
          g_autoptr (GError) err = nullptr;
          g_autofree gchar *debug = nullptr;
          gst_message_parse_error (m, &err, &debug);
          std::lock_guard<std::mutex> lock (self->mutex_);
          self->last_error_ = std::string (err->message) + (debug ? std::string (" (") + debug + ")" : "");
        }
        return GST_BUS_DROP; // nobody reads this bus
      },
      this, nullptr);
  g_signal_connect (sink, "caller-added", G_CALLBACK (on_caller_added), this);
  g_signal_connect (sink, "caller-removed", G_CALLBACK (on_caller_removed), this);
  if (gst_element_set_state (pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    error = "cannot listen for relay callers on " + listen_address_ + ":" + std::to_string (port_) + ": "
            + stats ().last_error;
    gst_element_set_state (pipeline, GST_STATE_NULL);
    gst_object_unref (sink);
    gst_object_unref (src);
    gst_object_unref (pipeline);
    return false;
  }
  pipeline_ = pipeline;
  srtsink_ = sink;
  appsrc_ = src;
  return true;
}

void
RelayOut::stop ()
{
  if (!pipeline_)
    return;
  // Closing the sockets tells every caller at once; signals from the SRT
  // thread may still come until the state change returns.
  gst_element_set_state (pipeline_, GST_STATE_NULL);
  {
    std::lock_guard<std::mutex> lock (mutex_);
    if (viewer_handle_)
      view_->remove_viewer (viewer_handle_);
    viewer_handle_ = 0;
    callers_ = 0;
  }
  gst_object_unref (srtsink_);
  gst_object_unref (appsrc_);
  gst_object_unref (pipeline_);
  pipeline_ = srtsink_ = appsrc_ = nullptr;
}

// SRT's listener thread.  The first caller makes the relay a viewer (which
// asks for a keyframe); a later one asks for a keyframe of its own.
void
RelayOut::on_caller_added (GstElement *, int, GSocketAddress *, gpointer data)
{
  auto *self = static_cast<RelayOut *> (data);
  std::lock_guard<std::mutex> lock (self->mutex_);
  self->callers_++;
  self->callers_accepted_++;
  if (!self->viewer_handle_)
    self->viewer_handle_
        = self->view_->add_viewer (GST_APP_SRC (self->appsrc_), ViewStream::Timestamps::kArrival);
  else
    self->view_->request_keyframe ();
}

// SRT's thread (a write to the caller failed, or it closed): the last one
// gone, the relay stops being a viewer, so the worker may stop encoding.
void
RelayOut::on_caller_removed (GstElement *, int, GSocketAddress *, gpointer data)
{
  auto *self = static_cast<RelayOut *> (data);
  std::lock_guard<std::mutex> lock (self->mutex_);
  if (self->callers_ > 0)
    self->callers_--;
  if (self->callers_ == 0 && self->viewer_handle_) {
    self->view_->remove_viewer (self->viewer_handle_);
    self->viewer_handle_ = 0;
  }
}

RelayOutStats
RelayOut::stats () const
{
  RelayOutStats s;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    s.callers = callers_;
    s.callers_accepted = callers_accepted_;
    s.feeding = viewer_handle_ != 0;
    s.last_error = last_error_;
  }
  if (!srtsink_)
    return s;
  GstStructure *st = nullptr;
  g_object_get (srtsink_, "stats", &st, nullptr);
  if (!st)
    return s;
  guint64 bytes = 0;
  if (gst_structure_get_uint64 (st, "bytes-sent-total", &bytes))
    s.bytes_sent = bytes;
  // Listener mode: one structure per caller in "callers" (a GValueArray).
  G_GNUC_BEGIN_IGNORE_DEPRECATIONS
  const GValue *callers = gst_structure_get_value (st, "callers");
  if (callers && G_VALUE_HOLDS (callers, g_value_array_get_type ())) {
    GValueArray *arr = static_cast<GValueArray *> (g_value_get_boxed (callers));
    for (guint k = 0; arr && k < arr->n_values; k++) {
      const GValue *v = g_value_array_get_nth (arr, k);
      const GstStructure *c = G_VALUE_HOLDS (v, GST_TYPE_STRUCTURE) ? gst_value_get_structure (v) : nullptr;
      int retransmitted = 0;
      if (c && gst_structure_get_int (c, "packets-retransmitted", &retransmitted))
        s.packets_retransmitted += (uint64_t)retransmitted;
    }
  }
  G_GNUC_END_IGNORE_DEPRECATIONS
  gst_structure_free (st);
  return s;
}

} // namespace livemicro::orchestrator::relay
