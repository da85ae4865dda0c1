// Benchmarks of livemicrod, run on purpose:
//   meson test -C build --benchmark --suite bench -v
//   build/tests/bench/bench-orchestrator [latency|session-start|control|hop|nuclei-json|all (all)] [--seconds
//   S=8]
//       [--repeats N=3] [--json FILE=bench-orchestrator.json]
//
// latency        glass-to-glass at 720p30 on loopback: capture time (carried in
//                every access unit as an SEI) → decoded at an rtspsrc client /
//                presented in headless Chromium (WebRTC), p50/p95, next to a
//                bare gst-rtsp-server (videotestsrc → x264enc zerolatency →
//                rtspsrc latency=0) and livemicrod's own pipeline in one
//                process (as gst-rtsp-server serves it, and with rate
//                control off as livemicrod does) in the same run, with
//                where the time goes (capture → encoder, payloader, client).
// session-start  POST /api/v1/sessions → first decoded frame at an RTSP client,
//                20 sessions of each kind; the run's first of each is
//                reported apart (the client's plugins load, the new branch's
//                first encodes).
// control        command accepted → first decoded frame showing the new field.
// hop            the worker→daemon hop (the worker's encoder output → the
//                daemon's RTSP payloader input) next to the same span in a
//                bare gst-rtsp-server, one viewer each, in turn.
// nuclei-json    one nuclei message (a field of 4000 nuclei, 12-point
//                outlines, in slide µm rounded to 0.01): its bytes, the
//                worker's encoding, the daemon's decoding, and the pages'
//                JSON: as JSON from a json-glib tree (17 digits a number)
//                both ways, as until 2026-12-01, and now packed
//                (pack_field) to the daemon and field_json (straight to
//                text, shortest numbers) to the pages, in turn.
// Viewers per node: bench-viewers (bench_viewers.cpp).
#include "bench_util.h"
#include "../orchestrator/daemon_process.h"
#include "../../orchestrator/common/encoder_timeline.h"
#include "../../orchestrator/common/h264.h"
#include "../../orchestrator/common/json_writer.h"
#include "../../orchestrator/common/worker_protocol.h"
#include "shared_feed.h"

#include <gst/app/gstappsink.h>
#include <gst/rtsp-server/rtsp-server.h>
#include <opencv2/core/utility.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

using namespace livemicro::test;
namespace h264 = livemicro::orchestrator::h264;

namespace {

// -1 (printed as such) when a measurement got no samples at all.
double
pct (const std::vector<double> &v, double q)
{
  return v.empty () ? -1 : livemicro::bench::percentile (v, q);
}

// An RTSP client measuring per-frame glass-to-glass latency from the SEI
// capture time, at the decoder's output (decode) or at the depayloader's
// (no decode, for many clients at once).
class LatencyClient {
public:
  LatencyClient (const std::string &url, const std::string &user, const std::string &pw, bool decode)
  {
    std::string desc
        = "rtspsrc name=src latency=0 protocols=tcp location=\"" + url + "\""
          + (user.empty () ? "" : " user-id=\"" + user + "\" user-pw=\"" + pw + "\"")
          + " ! rtph264depay name=depay ! video/x-h264,stream-format=byte-stream,alignment=au ! h264parse ! "
          + (decode ? "avdec_h264 ! " : "") + "fakesink name=sink sync=false signal-handoffs=true";
    pipeline_ = gst_parse_launch (desc.c_str (), nullptr);
    GstElement *depay = gst_bin_get_by_name (GST_BIN (pipeline_), "depay");
    GstPad *pad = gst_element_get_static_pad (depay, "src");
    gst_pad_add_probe (
        pad, GST_PAD_PROBE_TYPE_BUFFER,
        [] (GstPad *, GstPadProbeInfo *info, gpointer d) {
          auto *self = static_cast<LatencyClient *> (d);
          GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
          GstMapInfo map;
          if (gst_buffer_map (b, &map, GST_MAP_READ)) {
            auto t = h264::frame_record (map.data, map.size);
            gst_buffer_unmap (b, &map);
            if (t) {
              std::lock_guard<std::mutex> lock (self->mutex_);
              if (self->recording_)
                self->received_ms_.push_back ((g_get_real_time () - t->capture_unix_us) / 1000.0);
              self->capture_[GST_BUFFER_PTS (b)] = *t;
              while (self->capture_.size () > 64)
                self->capture_.erase (self->capture_.begin ());
            }
          }
          return GST_PAD_PROBE_OK;
        },
        this, nullptr);
    gst_object_unref (pad);
    gst_object_unref (depay);
    GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline_), "sink");
    g_signal_connect (sink, "handoff", G_CALLBACK (+[] (GstElement *, GstBuffer *b, GstPad *, gpointer d) {
                        auto *self = static_cast<LatencyClient *> (d);
                        gint64 now = g_get_real_time ();
                        std::lock_guard<std::mutex> lock (self->mutex_);
                        self->frames_++;
                        if (self->first_frame_us_ == 0)
                          self->first_frame_us_ = g_get_monotonic_time ();
                        auto it = self->capture_.find (GST_BUFFER_PTS (b));
                        if (it != self->capture_.end ()) {
                          if (self->recording_)
                            self->latency_ms_.push_back ((now - it->second.capture_unix_us) / 1000.0);
                          self->shown_.push_back ({g_get_monotonic_time (), it->second});
                          while (self->shown_.size () > 256)
                            self->shown_.erase (self->shown_.begin ());
                        }
                      }),
                      this);
    gst_object_unref (sink);
    gst_element_set_state (pipeline_, GST_STATE_PLAYING);
  }
  ~LatencyClient ()
  {
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    gst_object_unref (pipeline_);
  }
  void record (bool on)
  {
    std::lock_guard<std::mutex> lock (mutex_);
    recording_ = on;
    if (on) {
      latency_ms_.clear ();
      received_ms_.clear ();
      frames_at_record_ = frames_;
    }
  }
  std::vector<double> latencies ()
  {
    std::lock_guard<std::mutex> lock (mutex_);
    return latency_ms_;
  }
  // Capture → the depayloader's output, of the frames received while recording.
  std::vector<double> received ()
  {
    std::lock_guard<std::mutex> lock (mutex_);
    return received_ms_;
  }
  int frames_since_record ()
  {
    std::lock_guard<std::mutex> lock (mutex_);
    return frames_ - frames_at_record_;
  }
  gint64 first_frame_us ()
  {
    std::lock_guard<std::mutex> lock (mutex_);
    return first_frame_us_;
  }
  // The first decoded frame after `since_us` (monotonic) satisfying `ok`.
  std::optional<gint64> first_shown (gint64 since_us,
                                     const std::function<bool (const livemicro::hw::FrameRecord &)> &ok)
  {
    std::lock_guard<std::mutex> lock (mutex_);
    for (const auto &s : shown_)
      if (s.first >= since_us && ok (s.second))
        return s.first;
    return std::nullopt;
  }

private:
  GstElement *pipeline_;
  std::mutex mutex_;
  std::map<GstClockTime, livemicro::hw::FrameRecord> capture_;
  std::vector<std::pair<gint64, livemicro::hw::FrameRecord>> shown_; // decoded: when, what
  std::vector<double> latency_ms_, received_ms_;
  int frames_ = 0, frames_at_record_ = 0;
  gint64 first_frame_us_ = 0;
  bool recording_ = false;
};

// Runs the default main context (gst-rtsp-server in this process) on a thread.
class MainLoopThread {
public:
  MainLoopThread () : loop_ (g_main_loop_new (nullptr, FALSE)), thread_ ([this] { g_main_loop_run (loop_); })
  {}
  ~MainLoopThread ()
  {
    g_main_loop_quit (loop_);
    thread_.join ();
    g_main_loop_unref (loop_);
  }

private:
  GMainLoop *loop_;
  std::thread thread_;
};

// Capture times by PTS, stamped where frames are made and put into the
// encoded stream as SEI (as livemicro-worker does).
using CaptureTimes = livemicro::orchestrator::EncoderTimeline<gint64>;

GstPadProbeReturn
stamp_capture (GstPad *, GstPadProbeInfo *info, gpointer d)
{
  static_cast<CaptureTimes *> (d)->record (GST_BUFFER_PTS (GST_PAD_PROBE_INFO_BUFFER (info)),
                                           g_get_real_time ());
  return GST_PAD_PROBE_OK;
}

GstPadProbeReturn
insert_sei (GstPad *, GstPadProbeInfo *info, gpointer d)
{
  auto *t = static_cast<CaptureTimes *> (d);
  GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
  auto found = t->take (GST_BUFFER_PTS (b));
  if (!found)
    return GST_PAD_PROBE_OK;
  gint64 when = *found;
  GstMapInfo map;
  gst_buffer_map (b, &map, GST_MAP_READ);
  auto au = h264::with_capture_time (map.data, map.size, when);
  gst_buffer_unmap (b, &map);
  GstBuffer *out = gst_buffer_new_memdup (au.data (), au.size ());
  gst_buffer_copy_into (out, b, GST_BUFFER_COPY_METADATA, 0, -1);
  gst_buffer_unref (b);
  GST_PAD_PROBE_INFO_DATA (info) = out;
  return GST_PAD_PROBE_OK;
}

// The bare server's own "hop": from its encoder's output (before the SEI
// is put in, where livemicro-worker takes FrameHeader::encoded_unix_us) to
// its payloader's input, by PTS, while recording.
struct BareHop {
  std::mutex mutex;
  std::map<GstClockTime, gint64> encoded_us;
  std::vector<double> ms;
  bool recording = false;
} g_bare_hop;

GstPadProbeReturn
bare_encoded (GstPad *, GstPadProbeInfo *info, gpointer)
{
  std::lock_guard<std::mutex> lock (g_bare_hop.mutex);
  g_bare_hop.encoded_us[GST_BUFFER_PTS (GST_PAD_PROBE_INFO_BUFFER (info))] = g_get_real_time ();
  while (g_bare_hop.encoded_us.size () > 64)
    g_bare_hop.encoded_us.erase (g_bare_hop.encoded_us.begin ());
  return GST_PAD_PROBE_OK;
}

GstPadProbeReturn
bare_payloading (GstPad *, GstPadProbeInfo *info, gpointer)
{
  std::lock_guard<std::mutex> lock (g_bare_hop.mutex);
  auto it = g_bare_hop.encoded_us.find (GST_BUFFER_PTS (GST_PAD_PROBE_INFO_BUFFER (info)));
  if (it != g_bare_hop.encoded_us.end () && g_bare_hop.recording)
    g_bare_hop.ms.push_back ((g_get_real_time () - it->second) / 1000.0);
  return GST_PAD_PROBE_OK;
}

void
on_media_configure (GstRTSPMediaFactory *, GstRTSPMedia *media, gpointer)
{
  GstElement *bin = gst_rtsp_media_get_element (media);
  GstElement *cap = gst_bin_get_by_name_recurse_up (GST_BIN (bin), "capture");
  GstElement *enc = gst_bin_get_by_name_recurse_up (GST_BIN (bin), "enc");
  auto *times = new CaptureTimes ();
  g_object_set_data_full (G_OBJECT (media), "capture-times", times,
                          [] (gpointer p) { delete static_cast<CaptureTimes *> (p); });
  GstPad *cp = gst_element_get_static_pad (cap, "src");
  gst_pad_add_probe (cp, GST_PAD_PROBE_TYPE_BUFFER, stamp_capture, times, nullptr);
  gst_object_unref (cp);
  GstPad *ep = gst_element_get_static_pad (enc, "src");
  gst_pad_add_probe (ep, GST_PAD_PROBE_TYPE_BUFFER, bare_encoded, nullptr, nullptr);
  gst_pad_add_probe (ep, GST_PAD_PROBE_TYPE_BUFFER, insert_sei, times, nullptr);
  gst_object_unref (ep);
  if (GstElement *pay = gst_bin_get_by_name_recurse_up (GST_BIN (bin), "pay0")) {
    GstPad *pp = gst_element_get_static_pad (pay, "sink");
    gst_pad_add_probe (pp, GST_PAD_PROBE_TYPE_BUFFER, bare_payloading, nullptr, nullptr);
    gst_object_unref (pp);
    gst_object_unref (pay);
  }
  gst_object_unref (cap);
  gst_object_unref (enc);
  gst_object_unref (bin);
}

// A bare gst-rtsp-server: one launch-line factory per mount, with the
// capture time put into the stream the same way livemicro-worker does.
class BareServer {
public:
  // `launch` must contain an element named "capture" (where frames are
  // stamped) and an encoder named "enc".
  BareServer (const std::string &launch, bool shared) : BareServer ({{"/bare", launch}}, shared) {}
  // One factory per mount: {path, launch line}.
  BareServer (const std::vector<std::pair<std::string, std::string>> &mounts, bool shared)
  {
    server_ = gst_rtsp_server_new ();
    gst_rtsp_server_set_address (server_, "127.0.0.1");
    gst_rtsp_server_set_service (server_, "0");
    GstRTSPMountPoints *m = gst_rtsp_server_get_mount_points (server_);
    for (const auto &[path, launch] : mounts) {
      GstRTSPMediaFactory *f = gst_rtsp_media_factory_new ();
      gst_rtsp_media_factory_set_launch (f, launch.c_str ());
      gst_rtsp_media_factory_set_shared (f, shared);
      g_signal_connect (f, "media-configure", G_CALLBACK (on_media_configure), nullptr);
      gst_rtsp_mount_points_add_factory (m, path.c_str (), f);
    }
    g_object_unref (m);
    source_ = gst_rtsp_server_attach (server_, nullptr);
    port_ = gst_rtsp_server_get_bound_port (server_);
  }
  ~BareServer ()
  {
    g_source_remove (source_);
    g_object_unref (server_);
  }
  std::string url (const std::string &path = "/bare") const
  {
    return "rtsp://127.0.0.1:" + std::to_string (port_) + path;
  }

private:
  GstRTSPServer *server_;
  guint source_;
  int port_;
};

struct Row {
  std::string name;
  std::vector<double> values; // latency samples or times, ms
  double extra = 0;
  // Glass to glass in parts: capture → the client's depayloader output
  // (samples), and, where the server tells, capture → its encoder output and
  // → its payloader input (p50 per repeat).
  std::vector<double> received, encoded_p50, payloader_p50;
};

const char *kConfig720 = R"({
  "video": {"width": 1280, "height": 720, "framerate": 30, "bitrate_kbps": 2500},
  "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})";

// The bare gst-rtsp-server reference: the same size, rate and encoder
// settings as the daemon's view, one shared factory.
const char *kBarePipeline
    = "( videotestsrc is-live=true pattern=ball "
      "! video/x-raw,width=1280,height=720,framerate=30/1 ! identity name=capture "
      "! videoconvert ! video/x-raw,format=I420 "
      "! x264enc name=enc tune=zerolatency speed-preset=ultrafast bitrate=2500 "
      "key-int-max=30 bframes=0 threads=1 "
      "! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au "
      "! rtph264pay name=pay0 pt=96 config-interval=-1 )";

// livemicrod's own capture and owner view (its templates, rendered as the
// daemon renders them for the demo microscope) in a bare gst-rtsp-server in
// this process, its encoder's output handed to a shared factory's appsrc
// (shared_feed.h) with the capture time microscopesrc gave each frame as an
// SEI: the same work per frame and the same appsink → appsrc hand-over as
// livemicrod, without the worker→daemon hop between two processes.  Two
// mounts of the one pipeline: /own as gst-rtsp-server serves it (rate
// control on: each packet waits for its timestamp), /own-unpaced with rate
// control off after PLAY, as livemicrod serves its views.
class OwnPipelineServer {
public:
  OwnPipelineServer ()
  {
    producer_ = livemicro::bench::view_producer (PIPELINES_DIR, {"owner"}, feeds_, true);
    if (!producer_)
      return;
    server_ = gst_rtsp_server_new ();
    gst_rtsp_server_set_address (server_, "127.0.0.1");
    gst_rtsp_server_set_service (server_, "0");
    GstRTSPMountPoints *m = gst_rtsp_server_get_mount_points (server_);
    gst_rtsp_mount_points_add_factory (m, "/own", livemicro::bench::feed_factory (feeds_[0].get ()));
    GstRTSPMediaFactory *unpaced = livemicro::bench::feed_factory (feeds_[0].get ());
    g_signal_connect (unpaced, "media-configure",
                      G_CALLBACK (+[] (GstRTSPMediaFactory *, GstRTSPMedia *media) {
                        g_object_set_data (G_OBJECT (media), "unpaced", GINT_TO_POINTER (1));
                      }),
                      nullptr);
    gst_rtsp_mount_points_add_factory (m, "/own-unpaced", unpaced);
    g_object_unref (m);
    g_signal_connect (server_, "client-connected", G_CALLBACK (+[] (GstRTSPServer *, GstRTSPClient *c) {
                        g_signal_connect (
                            c, "play-request", G_CALLBACK (+[] (GstRTSPClient *, GstRTSPContext *ctx) {
                              if (ctx->media && g_object_get_data (G_OBJECT (ctx->media), "unpaced"))
                                gst_rtsp_media_set_rate_control (ctx->media, FALSE);
                            }),
                            nullptr);
                      }),
                      nullptr);
    source_ = gst_rtsp_server_attach (server_, nullptr);
    port_ = gst_rtsp_server_get_bound_port (server_);
  }
  ~OwnPipelineServer ()
  {
    if (source_)
      g_source_remove (source_);
    if (server_)
      g_object_unref (server_);
    if (producer_) {
      gst_element_set_state (producer_, GST_STATE_NULL);
      gst_object_unref (producer_);
    }
  }
  bool ok () const { return server_ != nullptr; }
  std::string url (bool paced) const
  {
    return "rtsp://127.0.0.1:" + std::to_string (port_) + (paced ? "/own" : "/own-unpaced");
  }
  // The pipeline runs only while measured, as livemicrod's worker captures
  // and encodes only while its view has a player: the other servers never
  // measure theirs against this one's load.
  void play (bool on) { gst_element_set_state (producer_, on ? GST_STATE_PLAYING : GST_STATE_NULL); }
  // Records capture → encoder output and → payloader input while on.
  void record (bool on)
  {
    std::lock_guard<std::mutex> lock (feeds_[0]->mutex);
    feeds_[0]->recording = on;
    if (on) {
      feeds_[0]->capture_to_encoded_ms.clear ();
      feeds_[0]->capture_to_payloader_ms.clear ();
    }
  }
  std::vector<double> capture_to_payloader ()
  {
    std::lock_guard<std::mutex> lock (feeds_[0]->mutex);
    return feeds_[0]->capture_to_payloader_ms;
  }
  std::vector<double> capture_to_encoded ()
  {
    std::lock_guard<std::mutex> lock (feeds_[0]->mutex);
    return feeds_[0]->capture_to_encoded_ms;
  }

private:
  std::vector<std::unique_ptr<livemicro::bench::ViewFeed>> feeds_;
  GstElement *producer_ = nullptr;
  GstRTSPServer *server_ = nullptr;
  guint source_ = 0;
  int port_ = 0;
};

// Records `seconds` of `c` into `row` once it has settled; `recording`
// is told when the recording starts and stops.
void
measure_client (LatencyClient &c, double seconds, Row &row, const std::function<void (bool)> &recording = {})
{
  // Let it settle first (keyframe, jitter of the first second).
  g_usleep (1500000);
  c.record (true);
  if (recording)
    recording (true);
  g_usleep ((gulong)(seconds * 1e6));
  c.record (false);
  if (recording)
    recording (false);
  if (g_getenv ("BENCH_DEBUG"))
    std::fprintf (stderr, "client: %d frames, %zu samples\n", c.frames_since_record (),
                  c.latencies ().size ());
  auto v = c.latencies (), r = c.received ();
  row.values.insert (row.values.end (), v.begin (), v.end ());
  row.received.insert (row.received.end (), r.begin (), r.end ());
}

std::vector<double>
webrtc_latency (Daemon &d, double seconds, std::string &note)
{
  const char *chromium = "/usr/bin/chromium";
  if (!g_file_test (chromium, G_FILE_TEST_IS_EXECUTABLE)) {
    note = "chromium not installed";
    return {};
  }
  HttpReply s = d.create_session ("bench-webrtc", "owner");
  TempDir profile;
  std::vector<std::string> args
      = livemicro::test::headless_chromium_args (profile.path (), s.str ("viewer_url"));
  std::vector<const char *> argv;
  for (auto &a : args)
    argv.push_back (a.c_str ());
  argv.push_back (nullptr);
  GSubprocess *browser = g_subprocess_newv (
      argv.data (), (GSubprocessFlags)(G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE),
      nullptr);
  // Wait for the page to play, then take the last `seconds` of samples.
  std::vector<double> out;
  gint64 deadline = g_get_monotonic_time () + 30 * G_USEC_PER_SEC;
  gint64 decoded = 0;
  while (g_get_monotonic_time () < deadline && decoded < 30) {
    g_usleep (500000);
    HttpReply r = d.request ("GET", "/api/v1/sessions/" + s.str ("id"));
    JsonNode *st = r.object () ? json_object_get_member (r.object (), "viewer_stats") : nullptr;
    if (st && JSON_NODE_HOLDS_OBJECT (st))
      decoded = json_object_get_int_member_with_default (json_node_get_object (st), "frames_decoded", 0);
  }
  g_usleep ((gulong)(std::min (seconds, 9.5) * 1e6) + 1200000);
  HttpReply r = d.request ("GET", "/api/v1/sessions/" + s.str ("id"));
  JsonNode *st = r.object () ? json_object_get_member (r.object (), "viewer_stats") : nullptr;
  if (st && JSON_NODE_HOLDS_OBJECT (st)) {
    JsonArray *a = json_object_get_array_member (json_node_get_object (st), "latencies_ms");
    for (guint i = 0; a && i < json_array_get_length (a); i++)
      out.push_back (json_array_get_double_element (a, i));
  }
  g_subprocess_force_exit (browser);
  g_subprocess_wait (browser, nullptr, nullptr);
  g_object_unref (browser);
  d.request ("DELETE", "/api/v1/sessions/" + s.str ("id"));
  if (out.empty ())
    note = "no samples (the page did not play)";
  return out;
}

// Rows of bench_latency, in the order printed.
enum LatencyRow { kOurs, kBare, kOwnPaced, kOwnUnpaced, kWebrtc };

void
print_latency_table (const std::vector<Row> &rows)
{
  std::printf ("%-52s %8s %8s %8s %8s\n", "glass-to-glass latency, 720p30, loopback", "samples", "p50 ms",
               "p95 ms", "max ms");
  for (const Row &r : rows)
    std::printf ("%-52s %8zu %8.1f %8.1f %8.1f\n", r.name.c_str (), r.values.size (), pct (r.values, 0.5),
                 pct (r.values, 0.95),
                 r.values.empty () ? -1.0 : *std::max_element (r.values.begin (), r.values.end ()));
  // Where the time goes, from the capture time each frame carries: to the
  // server's encoder output and payloader input (p50 of each repeat, their
  // median; livemicrod's from its /metrics), to the client's depayloader
  // output and its decoder output (pooled p50).
  std::printf ("\n%-52s %12s %12s %12s %12s\n", "p50 from capture, ms", "encoded", "payloader", "received",
               "decoded");
  auto median_or
      = [] (const std::vector<double> &v) { return v.empty () ? -1.0 : livemicro::bench::median (v); };
  for (const Row &r : rows)
    if (!r.received.empty ())
      std::printf ("%-52s %12.1f %12.1f %12.1f %12.1f\n", r.name.c_str (), median_or (r.encoded_p50),
                   median_or (r.payloader_p50), pct (r.received, 0.5), pct (r.values, 0.5));
  auto added = [&] (LatencyRow a, LatencyRow b, const char *what) {
    std::printf ("livemicrod RTSP over %s: p50 %+.1f ms, p95 %+.1f ms\n", what,
                 pct (rows[a].values, 0.5) - pct (rows[b].values, 0.5),
                 pct (rows[a].values, 0.95) - pct (rows[b].values, 0.95));
  };
  std::printf ("\n");
  added (kOurs, kOwnUnpaced, "its own pipeline in one process, rate control off (the two processes' cost)");
  added (kOurs, kOwnPaced, "its own pipeline in a stock gst-rtsp-server");
  added (kOurs, kBare, "the stock videotestsrc server");
}

std::vector<Row>
bench_latency (double seconds, int repeats)
{
  std::vector<Row> rows = {{"livemicrod RTSP (rtspsrc, decoded)", {}},
                           {"bare gst-rtsp-server, videotestsrc (same client)", {}},
                           {"bare gst-rtsp-server, livemicrod's pipeline", {}},
                           {"  the same, rate control off as livemicrod", {}},
                           {"livemicrod WebRTC (Chromium, presented)", {}}};
  MainLoopThread loop;
  BareServer bare (kBarePipeline, true);
  OwnPipelineServer own;
  Daemon d (kConfig720);
  if (!d.start ()) {
    std::fprintf (stderr, "livemicrod: %s\n", d.error ().c_str ());
    return rows;
  }
  HttpReply s = d.create_session ("bench", "owner");
  auto metric = [&d] (const std::string &name, const char *labels) {
    return d.metric (name + "{microscope=\"demo\",profile=\"owner\"" + labels + ",quantile=\"0.5\"}");
  };
  // Interleaved, so that the machine's noise hits all alike.  The WebRTC
  // peers come after: the daemon's summary of its last 600 RTSP frames
  // (capture → encoder output) then covers the RTSP runs alone.
  for (int k = 0; k < repeats; k++) {
    {
      LatencyClient c (s.str ("rtsp_url"), s.str ("id"), s.str ("token"), true);
      measure_client (c, seconds, rows[kOurs]);
      const double encoded = metric ("livemicro_view_capture_to_encoded_ms", "");
      rows[kOurs].encoded_p50.push_back (encoded);
      rows[kOurs].payloader_p50.push_back (encoded + metric ("livemicro_worker_hop_ms", ",part=\"total\""));
    }
    {
      LatencyClient c (bare.url (), "", "", true);
      measure_client (c, seconds, rows[kBare]);
    }
    if (own.ok ()) {
      own.play (true);
      for (LatencyRow r : {kOwnPaced, kOwnUnpaced}) {
        LatencyClient c (own.url (r == kOwnPaced), "", "", true);
        measure_client (c, seconds, rows[r], [&own] (bool on) { own.record (on); });
        rows[r].encoded_p50.push_back (pct (own.capture_to_encoded (), 0.5));
        rows[r].payloader_p50.push_back (pct (own.capture_to_payloader (), 0.5));
      }
      own.play (false);
    }
  }
  std::string note;
  for (int k = 0; k < repeats; k++) {
    auto w = webrtc_latency (d, seconds, note);
    rows[kWebrtc].values.insert (rows[kWebrtc].values.end (), w.begin (), w.end ());
  }
  if (!note.empty ())
    rows[kWebrtc].name += " [" + note + "]";
  return rows;
}

std::vector<Row>
bench_session_start (int n)
{
  Row shared{"POST → first decoded frame, view branch exists", {}};
  Row fresh{"POST → first decoded frame, first session of a view", {}};
  Row cold_shared{"  view branch exists, the run's first (apart)", {}};
  Row cold_fresh{"  first session of a view, the run's first (apart)", {}};
  Daemon d (kConfig720);
  if (!d.start ())
    return {};
  HttpReply keep = d.create_session ("keep", "owner"); // keeps the owner branch alive
  // The first round is reported apart: it is the first RTSP client of this
  // process (GStreamer loads the client's plugins then) and the first frames
  // the just-built owner branch encodes, which no later session pays.
  for (int k = -1; k < n; k++) {
    for (Row *row : {&shared, &fresh}) {
      std::string role = row == &shared ? "owner" : "trainee";
      if (k < 0)
        row = row == &shared ? &cold_shared : &cold_fresh;
      gint64 t0 = g_get_monotonic_time ();
      HttpReply s = d.create_session ("u" + std::to_string (k), role);
      if (s.status != 201) {
        if (row->name.find ('[') == std::string::npos)
          row->name += " [" + role + ": " + s.str ("error") + "]";
        continue;
      }
      LatencyClient c (s.str ("rtsp_url"), s.str ("id"), s.str ("token"), true);
      gint64 deadline = t0 + 5 * G_USEC_PER_SEC;
      while (!c.first_frame_us () && g_get_monotonic_time () < deadline)
        g_usleep (2000);
      if (c.first_frame_us ())
        row->values.push_back ((c.first_frame_us () - t0) / 1000.0);
      d.request ("DELETE", "/api/v1/sessions/" + s.str ("id"));
    }
  }
  return {shared, cold_shared, fresh, cold_fresh};
}

// Control to photon: command accepted (202 received) → the first decoded
// frame at an RTSP client whose SEI says it was taken at the new position,
// with the stage's travel time (distance / speed) reported apart.
std::vector<Row>
bench_control_to_photon (int n)
{
  Row total{"command accepted → new field decoded (RTSP)", {}};
  Row beyond{"… minus stage travel time", {}};
  Row travel{"stage travel time (distance / speed)", {}};
  Daemon d (kConfig720);
  if (!d.start ())
    return {};
  HttpReply s = d.create_session ("driver", "owner");
  std::string lease
      = d.request ("POST", "/api/v1/microscopes/demo/control", R"({"action":"request"})", s.str ("token"))
            .str ("lease");
  HttpReply m = d.request ("GET", "/api/v1/microscopes/demo");
  JsonObject *stage = json_object_get_object_member (m.object (), "stage");
  double x = json_object_get_double_member (stage, "x_um");
  double upp = json_object_get_double_member (m.object (), "um_per_px");
  const double speed = 20000; // the virtual stage's default, µm/s
  LatencyClient c (s.str ("rtsp_url"), s.str ("id"), s.str ("token"), true);
  g_usleep (2000000);
  for (int k = 0; k < n; k++) {
    double dx = (k % 2 ? -1 : 1) * 200.0;
    double target = x + dx;
    HttpReply r = d.request ("POST", "/api/v1/microscopes/demo/commands",
                             "{\"lease\":\"" + lease + "\",\"move\":{\"x_um\":" + std::to_string (target)
                                 + ",\"y_um\":"
                                 + std::to_string (json_object_get_double_member (stage, "y_um")) + "}}",
                             s.str ("token"));
    gint64 t0 = g_get_monotonic_time ();
    if (r.status != 202)
      continue;
    std::optional<gint64> t1;
    while (!t1 && g_get_monotonic_time () - t0 < 3 * G_USEC_PER_SEC) {
      g_usleep (1000);
      t1 = c.first_shown (t0, [&] (const livemicro::hw::FrameRecord &f) {
        return !f.moving && std::abs (f.stage_x_um - target) <= upp;
      });
    }
    if (t1) {
      double ms = (*t1 - t0) / 1000.0, tr = std::abs (dx) / speed * 1000.0;
      total.values.push_back (ms);
      travel.values.push_back (tr);
      beyond.values.push_back (ms - tr);
    }
    x = target;
    g_usleep (300000);
  }
  return {total, beyond, travel};
}

// The worker→daemon hop: from the worker's encoder handing an access unit
// over to the daemon handing it to the RTSP payloader (the daemon's
// livemicro_worker_hop_ms over the last 600 frames, i.e. the last 20 s at
// 30 fps), next to the same span in a bare gst-rtsp-server (encoder output
// → payloader input, one process, one thread), one viewer each, in turn.
// Per repeat: p50 and p95 of each.
struct HopRepeat {
  double ours_p50 = -1, ours_p95 = -1, bare_p50 = -1, bare_p95 = -1;
  double socket_p50 = -1, socket_p95 = -1, daemon_p50 = -1, daemon_p95 = -1; // livemicrod's parts
};

std::vector<HopRepeat>
bench_hop (int repeats)
{
  std::vector<HopRepeat> out;
  MainLoopThread loop;
  BareServer bare (kBarePipeline, true);
  Daemon d (kConfig720);
  if (!d.start ()) {
    std::fprintf (stderr, "livemicrod: %s\n", d.error ().c_str ());
    return out;
  }
  HttpReply s = d.create_session ("bench", "owner");
  auto hop = [&d] (const char *part, const char *q) {
    return d.metric (std::string ("livemicro_worker_hop_ms{microscope=\"demo\",profile=\"owner\",part=\"")
                     + part + "\",quantile=\"" + q + "\"}");
  };
  for (int k = 0; k < repeats; k++) {
    HopRepeat r;
    {
      LatencyClient c (s.str ("rtsp_url"), s.str ("id"), s.str ("token"), false);
      g_usleep (21 * G_USEC_PER_SEC); // the metric's window: the last 600 frames
      r.ours_p50 = hop ("total", "0.5");
      r.ours_p95 = hop ("total", "0.95");
      r.socket_p50 = hop ("socket", "0.5");
      r.socket_p95 = hop ("socket", "0.95");
      r.daemon_p50 = hop ("daemon", "0.5");
      r.daemon_p95 = hop ("daemon", "0.95");
    }
    {
      LatencyClient c (bare.url (), "", "", false);
      g_usleep (1500000);
      {
        std::lock_guard<std::mutex> lock (g_bare_hop.mutex);
        g_bare_hop.ms.clear ();
        g_bare_hop.recording = true;
      }
      g_usleep (20 * G_USEC_PER_SEC);
      std::lock_guard<std::mutex> lock (g_bare_hop.mutex);
      g_bare_hop.recording = false;
      r.bare_p50 = pct (g_bare_hop.ms, 0.5);
      r.bare_p95 = pct (g_bare_hop.ms, 0.95);
    }
    std::printf (
        "  repeat %d: livemicrod hop p50 %.2f ms, p95 %.2f ms (socket %.2f / %.2f, daemon %.2f / %.2f); "
        "bare p50 %.2f ms, p95 %.2f ms\n",
        k + 1, r.ours_p50, r.ours_p95, r.socket_p50, r.socket_p95, r.daemon_p50, r.daemon_p95, r.bare_p50,
        r.bare_p95);
    std::fflush (stdout);
    out.push_back (r);
  }
  return out;
}

// One nuclei message through json-glib's writer and LiveMicro's, in turn.
struct NucleiJsonRow {
  const char *writer;
  // Medians: the worker's message and what it costs to make, the daemon's
  // decoding of it, and the pages' JSON and what it costs the main loop.
  double bytes = 0, worker_ms = 0, parse_ms = 0, daemon_ms = 0, page_bytes = 0;
};

std::vector<NucleiJsonRow>
bench_nuclei_json (int repeats)
{
  namespace orch = livemicro::orchestrator;
  orch::AnalysedField field;
  field.x_um = 37512.5;
  field.y_um = 12004.25;
  field.width_um = 320;
  field.height_um = 180;
  field.um_per_px = 0.25;
  auto rounded = [] (double v) { return std::round (v * 100) / 100; };
  for (int i = 0; i < 4000; i++) {
    orch::NucleusOutline n;
    n.x_um = rounded (field.x_um - 160 + (i % 80) * 4.01 + 0.37 * (i % 7));
    n.y_um = rounded (field.y_um - 90 + (i / 80) * 3.6 + 0.29 * (i % 5));
    n.area_um2 = std::round ((25 + (i % 23) * 1.37) * 10) / 10;
    for (int k = 0; k < 12; k++) {
      n.outline_um.push_back (rounded (n.x_um + (2.8 + 0.1 * (i % 3)) * std::cos (k * 0.5236)));
      n.outline_um.push_back (rounded (n.y_um + (2.4 + 0.1 * (i % 4)) * std::sin (k * 0.5236)));
    }
    field.nuclei.push_back (n);
  }
  auto ms_since = [] (std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli> (std::chrono::steady_clock::now () - t).count ();
  };
  // The field as the worker's message (wrapped in its event) or as the
  // daemon's for the pages.  LiveMicro's: straight to text (field_json).
  // json-glib's, as both wrote it until 2026-12-01: a JsonBuilder tree,
  // then json_to_string.
  auto text_of = [] (const orch::AnalysedField &f, bool ours, bool wrapped = false) {
    if (ours)
      return wrapped ? orch::encode (orch::WorkerEvent{orch::event::Nuclei{f}}) : orch::field_json (f);
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    if (wrapped) {
      json_builder_set_member_name (b, "event");
      json_builder_add_string_value (b, "nuclei");
      json_builder_set_member_name (b, "field");
      json_builder_begin_object (b);
    }
    json_builder_set_member_name (b, "analysed_pts");
    json_builder_add_int_value (b, (gint64)f.analysed_pts);
    for (auto [k, v] : {std::pair<const char *, double>{"x_um", f.x_um},
                        {"y_um", f.y_um},
                        {"width_um", f.width_um},
                        {"height_um", f.height_um},
                        {"um_per_px", f.um_per_px}}) {
      json_builder_set_member_name (b, k);
      orch::add_number (b, v);
    }
    json_builder_set_member_name (b, "nuclei");
    json_builder_begin_array (b);
    for (const orch::NucleusOutline &n : f.nuclei) {
      json_builder_begin_object (b);
      for (auto [k, v] :
           {std::pair<const char *, double>{"x_um", n.x_um}, {"y_um", n.y_um}, {"area_um2", n.area_um2}}) {
        json_builder_set_member_name (b, k);
        orch::add_number (b, v);
      }
      json_builder_set_member_name (b, "mitotic_candidate");
      json_builder_add_boolean_value (b, n.mitotic_candidate);
      json_builder_set_member_name (b, "outline_um");
      json_builder_begin_array (b);
      for (double v : n.outline_um)
        orch::add_number (b, v);
      json_builder_end_array (b);
      json_builder_end_object (b);
    }
    json_builder_end_array (b);
    if (wrapped)
      json_builder_end_object (b);
    json_builder_end_object (b);
    g_autoptr (JsonNode) root = json_builder_get_root (b);
    g_autofree char *text = json_to_string (root, FALSE);
    return std::string (text);
  };
  std::vector<NucleiJsonRow> rows = {{"JSON, json-glib (until now)"}, {"packed + field_json (now)"}};
  std::vector<double> samples[2][5];
  for (int r = 0; r < repeats * 5; r++)
    for (int w = 0; w < 2; w++) {
      // The worker's message: JSON (json-glib) or packed (LiveMicro).
      auto t = std::chrono::steady_clock::now ();
      const std::string text = w == 0 ? text_of (field, false, true) : std::string ();
      const std::vector<uint8_t> packed = w == 1 ? orch::pack_field (field) : std::vector<uint8_t> ();
      samples[w][1].push_back (ms_since (t));
      samples[w][0].push_back ((double)(w == 0 ? text.size () : packed.size ()));
      t = std::chrono::steady_clock::now ();
      std::optional<orch::AnalysedField> got;
      if (w == 0) {
        auto e = orch::decode_event (text);
        if (const auto *n = e ? std::get_if<orch::event::Nuclei> (&*e) : nullptr)
          got = n->field;
      } else {
        got = orch::unpack_field (packed.data (), packed.size ());
      }
      samples[w][2].push_back (ms_since (t));
      if (!got || got->nuclei.size () != field.nuclei.size ()) {
        std::fprintf (stderr, "the %s message does not decode\n", rows[w].writer);
        return {};
      }
      t = std::chrono::steady_clock::now ();
      const std::string page = text_of (*got, w == 1);
      samples[w][3].push_back (ms_since (t));
      samples[w][4].push_back ((double)page.size ());
    }
  for (int w = 0; w < 2; w++) {
    rows[w].bytes = livemicro::bench::median (samples[w][0]);
    rows[w].worker_ms = livemicro::bench::median (samples[w][1]);
    rows[w].parse_ms = livemicro::bench::median (samples[w][2]);
    rows[w].daemon_ms = livemicro::bench::median (samples[w][3]);
    rows[w].page_bytes = livemicro::bench::median (samples[w][4]);
  }
  return rows;
}

} // namespace

// Long by nature: a benchmark read top to bottom (its options, the measured runs, the
// table and the JSON in the order they are printed); its steps are the functions above.
int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  cv::setNumThreads (0); // as livemicro-worker does
  std::string what = "all", json_path = "bench-orchestrator.json";
  double seconds = 8;
  int repeats = 3;
  if (auto status = livemicro::bench::parse_options (
          argc, argv,
          "bench-orchestrator [latency|session-start|control|hop|nuclei-json|all (all)] [--seconds S=8] "
          "[--repeats N=3] "
          "[--json FILE=bench-orchestrator.json]",
          {{"--repeats", &repeats, 1}},
          {{"--json", &json_path}, {"WHAT", &what, "latency|session-start|control|hop|nuclei-json|all"}},
          {{"--seconds", &seconds, 1}}))
    return *status;
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, "meson test -C build --benchmark --suite bench -v");
  auto add_rows = [&] (const char *name, const std::vector<Row> &rows) {
    json_builder_set_member_name (b, name);
    json_builder_begin_array (b);
    for (const Row &r : rows) {
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "name");
      json_builder_add_string_value (b, r.name.c_str ());
      json_builder_set_member_name (b, "samples");
      json_builder_add_int_value (b, (gint64)r.values.size ());
      json_builder_set_member_name (b, "p50_ms");
      json_builder_add_double_value (b, pct (r.values, 0.5));
      json_builder_set_member_name (b, "p95_ms");
      json_builder_add_double_value (b, pct (r.values, 0.95));
      if (!r.received.empty ()) { // glass to glass in parts (print_latency_table)
        json_builder_set_member_name (b, "received_p50_ms");
        json_builder_add_double_value (b, pct (r.received, 0.5));
        for (auto [key, v] :
             {std::pair<const char *, const std::vector<double> *>{"encoded_p50_ms", &r.encoded_p50},
              {"payloader_p50_ms", &r.payloader_p50}}) {
          json_builder_set_member_name (b, key);
          json_builder_add_double_value (b, v->empty () ? -1.0 : livemicro::bench::median (*v));
        }
      }
      json_builder_end_object (b);
    }
    json_builder_end_array (b);
  };

  if (what == "latency" || what == "all") {
    auto rows = bench_latency (seconds, repeats);
    print_latency_table (rows);
    add_rows ("latency", rows);
  }
  if (what == "session-start" || what == "all") {
    auto rows = bench_session_start (20);
    std::printf ("\n%-60s %8s %8s %8s\n", "session start (20 each)", "n", "p50 ms", "p95 ms");
    for (const Row &r : rows)
      std::printf ("%-60s %8zu %8.1f %8.1f\n", r.name.c_str (), r.values.size (), pct (r.values, 0.5),
                   pct (r.values, 0.95));
    add_rows ("session_start", rows);
  }
  if (what == "control" || what == "all") {
    auto rows = bench_control_to_photon (30);
    std::printf ("\n%-60s %8s %8s %8s\n", "control to photon, 720p30, 10x, 200 µm moves", "n", "p50 ms",
                 "p95 ms");
    for (const Row &r : rows)
      std::printf ("%-60s %8zu %8.1f %8.1f\n", r.name.c_str (), r.values.size (), pct (r.values, 0.5),
                   pct (r.values, 0.95));
    add_rows ("control_to_photon", rows);
  }
  if (what == "hop" || what == "all") {
    double load[3] = {0, 0, 0};
    getloadavg (load, 3);
    std::printf (
        "\nworker→daemon hop, 720p30, one RTSP viewer, 20 s per repeat; load average %.2f %.2f %.2f\n",
        load[0], load[1], load[2]);
    auto reps = bench_hop (repeats);
    std::vector<double> o50, o95, b50, b95, a50, a95, s50, s95, d50, d95;
    for (const HopRepeat &r : reps) {
      s50.push_back (r.socket_p50);
      s95.push_back (r.socket_p95);
      d50.push_back (r.daemon_p50);
      d95.push_back (r.daemon_p95);
      o50.push_back (r.ours_p50);
      o95.push_back (r.ours_p95);
      b50.push_back (r.bare_p50);
      b95.push_back (r.bare_p95);
      a50.push_back (r.ours_p50 - r.bare_p50);
      a95.push_back (r.ours_p95 - r.bare_p95);
    }
    using livemicro::bench::median;
    std::printf (
        "median of %zu: livemicrod hop p50 %.2f ms, p95 %.2f ms (socket %.2f / %.2f, daemon %.2f / %.2f); "
        "bare p50 %.2f ms, p95 %.2f ms; added p50 %.2f ms (target <= 2: %s), p95 %.2f ms (target <= 5: %s)\n",
        reps.size (), median (o50), median (o95), median (s50), median (s95), median (d50), median (d95),
        median (b50), median (b95), median (a50), median (a50) <= 2 ? "met" : "NOT met", median (a95),
        median (a95) <= 5 ? "met" : "NOT met");
    json_builder_set_member_name (b, "hop");
    json_builder_begin_object (b);
    for (auto &[name, v] :
         std::vector<std::pair<const char *, std::vector<double> *>>{{"livemicrod_p50_ms", &o50},
                                                                     {"livemicrod_p95_ms", &o95},
                                                                     {"bare_p50_ms", &b50},
                                                                     {"bare_p95_ms", &b95},
                                                                     {"added_p50_ms", &a50},
                                                                     {"added_p95_ms", &a95},
                                                                     {"socket_p50_ms", &s50},
                                                                     {"socket_p95_ms", &s95},
                                                                     {"daemon_p50_ms", &d50},
                                                                     {"daemon_p95_ms", &d95}}) {
      json_builder_set_member_name (b, name);
      json_builder_begin_array (b);
      for (double x : *v)
        json_builder_add_double_value (b, x);
      json_builder_end_array (b);
    }
    json_builder_set_member_name (b, "load_average");
    json_builder_add_double_value (b, load[0]);
    json_builder_end_object (b);
  }
  if (what == "nuclei-json" || what == "all") {
    double load[3] = {0, 0, 0};
    getloadavg (load, 3);
    auto rows = bench_nuclei_json (repeats);
    std::printf ("\none nuclei message, 4000 nuclei, medians of %d; load average %.2f %.2f %.2f\n"
                 "%-30s %12s %11s %13s %12s %12s\n",
                 repeats * 5, load[0], load[1], load[2], "worker -> daemon", "wire bytes", "worker ms",
                 "daemon decode", "page bytes", "page JSON ms");
    for (const NucleiJsonRow &r : rows)
      std::printf ("%-30s %12.0f %11.1f %13.1f %12.0f %12.1f\n", r.writer, r.bytes, r.worker_ms, r.parse_ms,
                   r.page_bytes, r.daemon_ms);
    if (rows.size () == 2)
      std::printf (
          "now / until now: wire bytes x%.2f, worker x%.3f, daemon decode x%.3f, page bytes x%.2f, page "
          "JSON x%.2f\n",
          rows[1].bytes / rows[0].bytes, rows[1].worker_ms / rows[0].worker_ms,
          rows[1].parse_ms / rows[0].parse_ms, rows[1].page_bytes / rows[0].page_bytes,
          rows[1].daemon_ms / rows[0].daemon_ms);
    json_builder_set_member_name (b, "nuclei_json");
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "load_average");
    json_builder_add_double_value (b, load[0]);
    json_builder_set_member_name (b, "rows");
    json_builder_begin_array (b);
    for (const NucleiJsonRow &r : rows) {
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "writer");
      json_builder_add_string_value (b, r.writer);
      for (auto [k, v] : {std::pair<const char *, double>{"bytes", r.bytes},
                          {"worker_ms", r.worker_ms},
                          {"daemon_parse_ms", r.parse_ms},
                          {"daemon_to_pages_ms", r.daemon_ms},
                          {"page_bytes", r.page_bytes}}) {
        json_builder_set_member_name (b, k);
        json_builder_add_double_value (b, v);
      }
      json_builder_end_object (b);
    }
    json_builder_end_array (b);
    json_builder_end_object (b);
  }
  json_builder_end_object (b);
  livemicro::bench::write_json (b, json_path);
  return 0;
}
