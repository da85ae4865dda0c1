// What the view relay's tests and benchmark stand on: a home node's view
// fed by a real x264 encoder with LiveMicro's SEI (as the worker writes it),
// a local viewer that decodes what a ViewStream gives it, a free UDP port,
// and a UDP relay on 127.0.0.1 that drops datagrams (the kernel here has
// no netem).
#pragma once

#include <livemicro/frame_record_meta.h>

#include "common/h264.h"
#include "common/wire.h"
#include "view_stream.h"

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/video/video.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace livemicro::test {

using orchestrator::ViewStream;

// A UDP socket bound to 127.0.0.1 on a port the kernel chose (`port`).
inline int
loopback_udp_socket (uint16_t &port)
{
  int fd = socket (AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  bind (fd, (sockaddr *)&a, sizeof a);
  socklen_t len = sizeof a;
  getsockname (fd, (sockaddr *)&a, &len);
  port = ntohs (a.sin_port);
  return fd;
}

// A UDP port free on 127.0.0.1 now.
inline uint16_t
free_udp_port ()
{
  uint16_t port = 0;
  close (loopback_udp_socket (port));
  return port;
}

// The home node's encoder for one view: videotestsrc → x264 (constrained
// baseline, a keyframe every 30 frames or when a viewer asks) → the
// worker's SEI (capture time = now, stage x = 1.25 µm × frame number) →
// ViewStream::push, as the daemon's reader thread does.
class HomeFeed {
public:
  // `pattern`: videotestsrc's ("snow" keeps the encoder at its bitrate).
  HomeFeed (std::shared_ptr<ViewStream> view, int width = 320, int height = 240, int fps = 30,
            const std::string &pattern = "ball", int bitrate_kbps = 2048)
      : view_ (view)
  {
    const std::string launch
        = "videotestsrc is-live=true pattern=" + pattern
          + " ! video/x-raw,format=I420,width=" + std::to_string (width)
          + ",height=" + std::to_string (height) + ",framerate=" + std::to_string (fps)
          + "/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bframes=0 bitrate="
          + std::to_string (bitrate_kbps)
          + " ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au "
            "! appsink name=sink sync=false";
    pipeline_ = gst_parse_launch (launch.c_str (), nullptr);
    GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline_), "sink");
    sink_pad_ = gst_element_get_static_pad (sink, "sink");
    GstAppSinkCallbacks cb = {};
    cb.new_sample
        = [] (GstAppSink *s, gpointer self) { return static_cast<HomeFeed *> (self)->on_sample (s); };
    gst_app_sink_set_callbacks (GST_APP_SINK (sink), &cb, this, nullptr);
    gst_object_unref (sink);
    view_->set_keyframe_request ([this] {
      keyframe_requests_++;
      gst_pad_push_event (sink_pad_,
                          gst_video_event_new_upstream_force_key_unit (GST_CLOCK_TIME_NONE, TRUE, 0));
    });
    gst_element_set_state (pipeline_, GST_STATE_PLAYING);
  }
  ~HomeFeed ()
  {
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    view_->set_keyframe_request (nullptr);
    gst_object_unref (sink_pad_);
    gst_object_unref (pipeline_);
  }
  // Capture time (µs) → stage x (µm) of every frame pushed.
  std::map<int64_t, double> pushed () const
  {
    std::lock_guard<std::mutex> lock (mutex_);
    return pushed_;
  }
  uint64_t frames () const { return frames_; }
  int keyframe_requests () const { return keyframe_requests_; }

private:
  GstFlowReturn on_sample (GstAppSink *s)
  {
    GstSample *sample = gst_app_sink_pull_sample (s);
    if (!sample)
      return GST_FLOW_EOS;
    GstBuffer *buf = gst_sample_get_buffer (sample);
    GstMapInfo map;
    gst_buffer_map (buf, &map, GST_MAP_READ);
    orchestrator::wire::FrameHeader h;
    h.view_id = view_->id ();
    h.record.capture_unix_us = std::max (g_get_real_time (), last_capture_us_ + 1);
    last_capture_us_ = h.record.capture_unix_us;
    h.record.stage_x_um = 1.25 * (double)frames_;
    h.record.stage_y_um = -3.5;
    h.record.um_per_px = 0.25;
    h.record.objective = 40;
    h.record.frame_width = 320;
    h.record.frame_height = 240;
    h.record.frame_number = frames_;
    h.duration_ns = GST_BUFFER_DURATION_IS_VALID (buf) ? GST_BUFFER_DURATION (buf) : 0;
    if (!GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_DELTA_UNIT))
      h.flags |= orchestrator::wire::kFlagKeyframe;
    std::vector<uint8_t> au = orchestrator::h264::with_frame_record (map.data, map.size, h.record);
    gst_buffer_unmap (buf, &map);
    gst_sample_unref (sample);
    {
      std::lock_guard<std::mutex> lock (mutex_);
      pushed_[h.record.capture_unix_us] = h.record.stage_x_um;
    }
    frames_++;
    view_->push (h, au.data (), au.size ());
    return GST_FLOW_OK;
  }

  std::shared_ptr<ViewStream> view_;
  GstElement *pipeline_ = nullptr;
  GstPad *sink_pad_ = nullptr;
  mutable std::mutex mutex_;
  std::map<int64_t, double> pushed_;
  int64_t last_capture_us_ = 0;
  std::atomic<uint64_t> frames_{0};
  std::atomic<int> keyframe_requests_{0};
};

// One viewer of a ViewStream, as the RTSP media's appsrc is (capture-clock
// timestamps), decoding with avdec_h264: what arrives (capture time read
// back from the SEI in the bytes, arrival time) and what decodes.
class LocalViewer {
public:
  struct Arrival {
    int64_t capture_unix_us, arrival_unix_us;
    std::optional<hw::FrameRecord> record; // the StageMeta the ViewStream put on the buffer
  };
  explicit LocalViewer (std::shared_ptr<ViewStream> view) : view_ (view)
  {
    pipeline_
        = gst_parse_launch ("appsrc name=src is-live=true format=time do-timestamp=false min-latency=0 "
                            "! h264parse ! avdec_h264 ! fakesink name=out sync=false signal-handoffs=true",
                            nullptr);
    GstElement *src = gst_bin_get_by_name (GST_BIN (pipeline_), "src");
    GstElement *out = gst_bin_get_by_name (GST_BIN (pipeline_), "out");
    g_signal_connect (out, "handoff", G_CALLBACK (+[] (GstElement *, GstBuffer *, GstPad *, gpointer self) {
                        static_cast<LocalViewer *> (self)->decoded_++;
                      }),
                      this);
    GstPad *pad = gst_element_get_static_pad (src, "src");
    gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, on_access_unit, this, nullptr);
    gst_object_unref (pad);
    GstBus *bus = gst_element_get_bus (pipeline_);
    gst_bus_set_sync_handler (
        bus,
        [] (GstBus *, GstMessage *m, gpointer self) {
          if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR || GST_MESSAGE_TYPE (m) == GST_MESSAGE_WARNING)
            static_cast<LocalViewer *> (self)->problems_++;
          return GST_BUS_DROP;
        },
        this, nullptr);
    gst_object_unref (bus);
    gst_element_set_state (pipeline_, GST_STATE_PLAYING);
    handle_ = view_->add_viewer (GST_APP_SRC (src), ViewStream::Timestamps::kCaptureClock);
    gst_object_unref (src);
    gst_object_unref (out);
  }
  ~LocalViewer ()
  {
    view_->remove_viewer (handle_);
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    gst_object_unref (pipeline_);
  }
  std::vector<Arrival> arrivals () const
  {
    std::lock_guard<std::mutex> lock (mutex_);
    return arrivals_;
  }
  uint64_t access_units () const { return access_units_; }
  uint64_t without_capture_time () const { return without_capture_time_; }
  uint64_t decoded () const { return decoded_; }
  uint64_t problems () const { return problems_; } // bus errors and warnings (decode errors)

private:
  static GstPadProbeReturn on_access_unit (GstPad *, GstPadProbeInfo *info, gpointer data)
  {
    auto *self = static_cast<LocalViewer *> (data);
    GstMapInfo map;
    GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
    if (!gst_buffer_map (b, &map, GST_MAP_READ))
      return GST_PAD_PROBE_OK;
    auto capture = orchestrator::h264::capture_time (map.data, map.size);
    gst_buffer_unmap (b, &map);
    std::optional<hw::FrameRecord> record;
    if (const LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (b))
      record = livemicro::frame_record_of (*m);
    self->access_units_++;
    if (!capture) {
      self->without_capture_time_++;
      return GST_PAD_PROBE_OK;
    }
    std::lock_guard<std::mutex> lock (self->mutex_);
    self->arrivals_.push_back ({*capture, g_get_real_time (), record});
    return GST_PAD_PROBE_OK;
  }

  std::shared_ptr<ViewStream> view_;
  GstElement *pipeline_ = nullptr;
  int handle_ = 0;
  mutable std::mutex mutex_;
  std::vector<Arrival> arrivals_;
  std::atomic<uint64_t> access_units_{0}, without_capture_time_{0}, decoded_{0}, problems_{0};
};

// Forwards UDP datagrams between a caller and 127.0.0.1:`to_port`, dropping
// every `drop_every`-th datagram towards the caller (0: none) once
// `spare_first` have passed (the handshake), or all of them while
// `blackhole` is set (a home node gone without a word).
class UdpLossRelay {
public:
  UdpLossRelay (uint16_t to_port, int drop_every, int spare_first = 50)
      : drop_every_ (drop_every), spare_first_ (spare_first)
  {
    front_ = loopback_udp_socket (port_);
    back_ = socket (AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    a.sin_port = htons (to_port);
    connect (back_, (sockaddr *)&a, sizeof a);
    thread_ = std::thread ([this] { run (); });
  }
  ~UdpLossRelay ()
  {
    stop_ = true;
    thread_.join ();
    close (front_);
    close (back_);
  }
  uint16_t port () const { return port_; }
  uint64_t to_caller () const { return to_caller_; }
  uint64_t dropped () const { return dropped_; }
  void set_blackhole (bool on) { blackhole_ = on; }

private:
  void run ()
  {
    sockaddr_in caller{};
    socklen_t caller_len = 0;
    std::vector<uint8_t> buf (65536);
    pollfd fds[2] = {{front_, POLLIN, 0}, {back_, POLLIN, 0}};
    while (!stop_) {
      if (poll (fds, 2, 50) <= 0)
        continue;
      if (fds[0].revents & POLLIN) {
        socklen_t len = sizeof caller;
        ssize_t n = recvfrom (front_, buf.data (), buf.size (), 0, (sockaddr *)&caller, &len);
        caller_len = len;
        if (n > 0 && !blackhole_)
          send (back_, buf.data (), n, 0);
      }
      if (fds[1].revents & POLLIN) {
        ssize_t n = recv (back_, buf.data (), buf.size (), 0);
        if (n <= 0 || caller_len == 0 || blackhole_)
          continue;
        uint64_t k = ++to_caller_;
        if (drop_every_ > 0 && k > (uint64_t)spare_first_ && k % drop_every_ == 0) {
          dropped_++;
          continue;
        }
        sendto (front_, buf.data (), n, 0, (sockaddr *)&caller, caller_len);
      }
    }
  }

  const int drop_every_, spare_first_;
  int front_ = -1, back_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false}, blackhole_{false};
  std::atomic<uint64_t> to_caller_{0}, dropped_{0};
};

// Polls `done` every 20 ms for up to `timeout_ms`.
template <typename F>
bool
wait_until (F done, int timeout_ms)
{
  for (int waited = 0; waited < timeout_ms; waited += 20) {
    if (done ())
      return true;
    g_usleep (20000);
  }
  return done ();
}

} // namespace livemicro::test
