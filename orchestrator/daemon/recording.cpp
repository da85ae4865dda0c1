#include "recording.h"

#include "common/json_writer.h"
#include "common/worker_protocol.h"

#include <livemicro/frame_record_meta.h>

#include <gst/app/gstappsrc.h>
#include <json-glib/json-glib.h>

#include <fcntl.h>
#include <glib/gstdio.h>
#include <unistd.h>

#include <stdexcept>

namespace livemicro::orchestrator {

std::string
new_recording_id (const std::string &profile, int64_t now_unix_us)
{
  g_autoptr (GDateTime) t = g_date_time_new_from_unix_utc (now_unix_us / G_USEC_PER_SEC);
  g_autofree char *when = g_date_time_format (t, "%Y%m%dT%H%M%SZ");
  char random[9];
  g_snprintf (random, sizeof random, "%08x", g_random_int ());
  return std::string (when) + "-" + profile + "-" + random;
}

std::string
stage_track_line (uint64_t frame, uint32_t segment, uint64_t pts_ns, const hw::FrameRecord &h)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  auto integer = [&b] (const char *name, int64_t v) {
    json_builder_set_member_name (b, name);
    json_builder_add_int_value (b, v);
  };
  auto number = [&b] (const char *name, double v) {
    json_builder_set_member_name (b, name);
    add_number (b, v);
  };
  json_builder_begin_object (b);
  integer ("frame", (int64_t)frame);
  integer ("segment", segment);
  integer ("pts_ns", (int64_t)pts_ns);
  integer ("capture_unix_us", h.capture_unix_us);
  number ("stage_x_um", h.stage_x_um);
  number ("stage_y_um", h.stage_y_um);
  number ("stage_z_um", h.stage_z_um);
  integer ("objective", h.objective);
  number ("um_per_px", h.um_per_px);
  json_builder_set_member_name (b, "moving");
  json_builder_add_boolean_value (b, h.moving);
  json_builder_end_object (b);
  return json_text (b) + "\n";
}

namespace {

std::string
segment_path (const std::string &dir, guint index, const char *extension)
{
  char name[32];
  g_snprintf (name, sizeof name, "segment-%05u.%s", index, extension);
  return dir + "/" + name;
}

GstElement *
make (const char *factory, const char *name)
{
  GstElement *e = gst_element_factory_make (factory, name);
  if (!e)
    throw std::runtime_error (std::string ("GStreamer element '") + factory + "' is missing");
  return e;
}

} // namespace

// appsrc (the view's access units, stamped from the capture clock) !
// h264parse ! splitmuxsink (mp4mux fragment-duration=kFragmentMs,
// filesink buffer-mode=unbuffered).
Recording::Recording (std::shared_ptr<ViewStream> view, RecordingStatus status, const std::string &directory,
                      Ended on_failed)
    : view_ (std::move (view)), path_ (directory + "/" + status.id), on_failed_ (std::move (on_failed)),
      status_ (std::move (status))
{
  if (g_mkdir_with_parents (directory.c_str (), 0750) != 0 || g_mkdir (path_.c_str (), 0750) != 0)
    throw std::runtime_error ("cannot create the recording directory '" + path_ + "': " + g_strerror (errno));
  pipeline_ = gst_pipeline_new ("recording");
  appsrc_ = make ("appsrc", "src");
  GstElement *parse = make ("h264parse", "parse");
  GstElement *split = make ("splitmuxsink", "split");
  GstElement *mux = make ("mp4mux", "mux");
  GstElement *file = make ("filesink", "file");
  // Each fragment reaches the disk as it is written (filesink's stdio
  // buffer would keep up to 64 KiB, a second of a small view, from a crash).
  gst_util_set_object_arg (G_OBJECT (file), "buffer-mode", "unbuffered");
  g_object_set (appsrc_, "is-live", TRUE, "format", GST_FORMAT_TIME, "do-timestamp", FALSE, nullptr);
  g_object_set (mux, "fragment-duration", kFragmentMs, nullptr);
  // The muxer before the link: splitmuxsink requests its pad when linked.
  g_object_set (split, "muxer", mux, "sink", file, "max-size-time", (guint64)status_.segment_s * GST_SECOND,
                nullptr);
  g_signal_connect (split, "format-location", G_CALLBACK (on_format_location), this);
  g_signal_connect (mux, "pad-added", G_CALLBACK (+[] (GstElement *, GstPad *pad, gpointer self) {
                      if (GST_PAD_IS_SINK (pad))
                        gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, on_muxer_input, self, nullptr);
                    }),
                    this);
  gst_bin_add_many (GST_BIN (pipeline_), appsrc_, parse, split, nullptr);
  if (!gst_element_link_many (appsrc_, parse, split, nullptr)) {
    gst_object_unref (pipeline_);
    throw std::runtime_error ("cannot link the recording pipeline");
  }
  GstPad *parse_in = gst_element_get_static_pad (parse, "sink");
  gst_pad_add_probe (parse_in, GST_PAD_PROBE_TYPE_BUFFER, on_parse_input, this, nullptr);
  gst_object_unref (parse_in);
  GstBus *bus = gst_element_get_bus (pipeline_);
  bus_watch_ = gst_bus_add_watch (bus, on_bus, this);
  gst_object_unref (bus);
  if (gst_element_set_state (pipeline_, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    g_source_remove (bus_watch_);
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    gst_object_unref (pipeline_);
    throw std::runtime_error ("the recording pipeline does not start");
  }
  viewer_ = view_->add_viewer (GST_APP_SRC (appsrc_), ViewStream::Timestamps::kCaptureClock);
}

Recording::~Recording ()
{
  if (!finished_) {
    // The daemon stops: finish the files, bounded.
    if (viewer_)
      view_->remove_viewer (viewer_);
    viewer_ = 0;
    if (bus_watch_)
      g_source_remove (bus_watch_);
    bus_watch_ = 0;
    gst_app_src_end_of_stream (GST_APP_SRC (appsrc_));
    GstBus *bus = gst_element_get_bus (pipeline_);
    GstMessage *m = gst_bus_timed_pop_filtered (bus, kStopTimeoutMs * GST_MSECOND,
                                                (GstMessageType)(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
    if (m)
      gst_message_unref (m);
    gst_object_unref (bus);
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    close_track ();
  }
  for (guint *id : {&bus_watch_, &timeout_, &idle_})
    if (*id)
      g_source_remove (*id);
  gst_object_unref (pipeline_);
}

void
Recording::stop (Ended done)
{
  if (stopping_ || finished_)
    return;
  stopping_ = true;
  done_ = std::move (done);
  view_->remove_viewer (viewer_);
  viewer_ = 0;
  gst_app_src_end_of_stream (GST_APP_SRC (appsrc_));
  timeout_ = g_timeout_add (
      kStopTimeoutMs,
      [] (gpointer self) -> gboolean {
        auto *r = static_cast<Recording *> (self);
        r->timeout_ = 0;
        r->finish ("stopped", "the last segment was not finished within 5 s");
        return G_SOURCE_REMOVE;
      },
      this);
}

RecordingStatus
Recording::status () const
{
  std::lock_guard<std::mutex> lock (mutex_);
  return status_;
}

void
Recording::close_track ()
{
  std::lock_guard<std::mutex> lock (mutex_);
  if (track_fd_ >= 0)
    close (track_fd_);
  track_fd_ = -1;
}

// On the main loop: EOS (stopped), an error (failed), or the stop's timeout.
void
Recording::finish (const std::string &state, const std::string &error)
{
  if (finished_)
    return;
  finished_ = true;
  if (viewer_)
    view_->remove_viewer (viewer_);
  viewer_ = 0;
  gst_element_set_state (pipeline_, GST_STATE_NULL);
  close_track ();
  {
    std::lock_guard<std::mutex> lock (mutex_);
    status_.state = state;
    status_.error = error;
    status_.stopped_unix_us = g_get_real_time ();
  }
  if (timeout_)
    g_source_remove (timeout_);
  timeout_ = 0;
  // Told from an idle callback: the owner may destroy this recording then.
  idle_ = g_idle_add (
      [] (gpointer self) -> gboolean {
        auto *r = static_cast<Recording *> (self);
        r->idle_ = 0;
        Ended tell = r->stopping_ ? r->done_ : r->on_failed_;
        if (tell)
          tell (r->status ());
        return G_SOURCE_REMOVE;
      },
      this);
}

gboolean
Recording::on_bus (GstBus *, GstMessage *m, gpointer self)
{
  auto *r = static_cast<Recording *> (self);
  if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_EOS) {
    r->bus_watch_ = 0;
    r->finish ("stopped", "");
    return G_SOURCE_REMOVE;
  }
  if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR) {
    g_autoptr (GError) e = nullptr;
    gst_message_parse_error (m, &e, nullptr);
    g_warning ("recording %s: %s", r->status_.id.c_str (), e->message);
    r->bus_watch_ = 0;
    r->finish ("failed", e->message);
    return G_SOURCE_REMOVE;
  }
  return G_SOURCE_CONTINUE;
}

// Streaming thread, before a segment's first frame reaches the muxer.
gchar *
Recording::on_format_location (GstElement *, guint index, gpointer self)
{
  auto *r = static_cast<Recording *> (self);
  std::string track = segment_path (r->path_, index, "jsonl");
  int fd = g_open (track.c_str (), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0)
    g_warning ("recording %s: cannot write '%s': %s", r->status_.id.c_str (), track.c_str (),
               g_strerror (errno));
  std::lock_guard<std::mutex> lock (r->mutex_);
  if (r->track_fd_ >= 0)
    close (r->track_fd_);
  r->track_fd_ = fd;
  r->segment_first_pts_ = GST_CLOCK_TIME_NONE;
  r->status_.segments = index + 1;
  return g_strdup (segment_path (r->path_, index, "mp4").c_str ());
}

// Streaming thread (appsrc): where each frame was taken, by its timestamp.
GstPadProbeReturn
Recording::on_parse_input (GstPad *, GstPadProbeInfo *info, gpointer self)
{
  auto *r = static_cast<Recording *> (self);
  GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
  // The view's frame record rides on each buffer as its StageMeta.
  const LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (b);
  if (!m || !GST_BUFFER_PTS_IS_VALID (b))
    return GST_PAD_PROBE_OK;
  const hw::FrameRecord h = livemicro::frame_record_of (*m);
  std::lock_guard<std::mutex> lock (r->mutex_);
  r->by_pts_[GST_BUFFER_PTS (b)] = h;
  while (r->by_pts_.size () > 256) // the muxer's side fell far behind: forget the oldest
    r->by_pts_.erase (r->by_pts_.begin ());
  return GST_PAD_PROBE_OK;
}

// Streaming thread (splitmuxsink's output): a frame enters the current
// segment; its stage track line follows.
GstPadProbeReturn
Recording::on_muxer_input (GstPad *, GstPadProbeInfo *info, gpointer self)
{
  auto *r = static_cast<Recording *> (self);
  GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
  if (!GST_BUFFER_PTS_IS_VALID (b))
    return GST_PAD_PROBE_OK;
  const uint64_t pts = GST_BUFFER_PTS (b);
  std::lock_guard<std::mutex> lock (r->mutex_);
  hw::FrameRecord h;
  auto it = r->by_pts_.find (pts);
  if (it != r->by_pts_.end ())
    h = it->second;
  else
    h.capture_unix_us = 0; // not known (cannot happen while frames pass whole)
  r->by_pts_.erase (r->by_pts_.begin (), it == r->by_pts_.end () ? r->by_pts_.lower_bound (pts) : ++it);
  if (r->segment_first_pts_ == GST_CLOCK_TIME_NONE)
    r->segment_first_pts_ = pts;
  if (r->last_capture_us_ && h.capture_unix_us - r->last_capture_us_ > Recording::kGapUs)
    r->status_.interruptions++;
  if (h.capture_unix_us)
    r->last_capture_us_ = h.capture_unix_us;
  std::string line = stage_track_line (r->status_.frames, r->status_.segments ? r->status_.segments - 1 : 0,
                                       pts - r->segment_first_pts_, h);
  r->status_.frames++;
  if (r->track_fd_ >= 0 && write (r->track_fd_, line.data (), line.size ()) != (ssize_t)line.size ())
    g_warning ("recording %s: the stage track cannot be written", r->status_.id.c_str ());
  return GST_PAD_PROBE_OK;
}

} // namespace livemicro::orchestrator
