// edge-vs-cloud-helper: the processes bench-edge-vs-cloud starts inside its
// network namespaces (docs/evaluation.md).  One binary, one role per run:
//
//   wan PEER_NETNS             the WAN between two namespaces: a TUN device
//                              here ("wan0") and one in PEER_NETNS ("wan1");
//                              every IP packet is carried across after a fixed
//                              one-way delay and dropped with a probability
//                              (this kernel has no sch_netem).  Reads
//                              "DELAY_MS LOSS_PERCENT" lines on stdin; prints
//                              "ready" once both devices exist, and
//                              "bytes A_TO_B B_TO_A" after each "stats" line.
//                              The rate is tc tbf on the two devices.
//   cloud-process SOURCE_URL USER PASSWORD PORT BITRATE_KBPS
//                              the cloud placement's processing: plays the
//                              cloud node's RTSP mount of the mezzanine view,
//                              decodes it, restores each frame's StageMeta
//                              from its SEI, runs tumorfeatures, privacymask
//                              and featureoverlay as the home node's
//                              consultant view does, encodes it with the
//                              same x264 settings, writes the frame record
//                              SEI again and serves it at rtsp://*:PORT/view.
//   field-analyse PORT NEXT_HOST NEXT_PORT UM_PER_PX
//                              experiment 1's analysing node: receives a
//                              lossless field (PNG), runs it through
//                              tumorfeatures ! featureoverlay, sends the
//                              processed image (JPEG) and the nuclei count on.
//   field-send PNG HOST PORT   experiment 1's microscope: sends the field,
//                              stamped with the wall-clock time it started.
#include "field_wire.h"

#include "common/h264.h"
#include <livemicro/featuresmeta.h>
#include <livemicro/frame_record_meta.h>

#include <gio/gio.h>
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <gst/rtsp-server/rtsp-server.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace {

namespace h264 = livemicro::orchestrator::h264;
using livemicro::bench::field::Reply;

// ---- wan ------------------------------------------------------------------

int
open_tun (const char *name)
{
  int fd = open ("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return -1;
  struct ifreq ifr = {};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::strncpy (ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl (fd, TUNSETIFF, &ifr) < 0) {
    close (fd);
    return -1;
  }
  return fd;
}

struct Held {
  gint64 due_us;
  std::vector<char> packet;
};

// One direction of the WAN: packets read from `from` wait `delay` and are
// written to `to`, unless dropped.
struct Direction {
  int from = -1, to = -1;
  std::deque<Held> queue;
  unsigned long long bytes = 0; // carried (not dropped), IP packet bytes
};

int
run_wan (const char *peer_netns)
{
  const int a = open_tun ("wan0");
  const int ns = open ((std::string ("/run/netns/") + peer_netns).c_str (), O_RDONLY | O_CLOEXEC);
  if (a < 0 || ns < 0 || setns (ns, CLONE_NEWNET) < 0) {
    std::perror ("wan: tun or netns");
    return 1;
  }
  const int b = open_tun ("wan1");
  if (b < 0) {
    std::perror ("wan: tun in the peer namespace");
    return 1;
  }
  std::printf ("ready\n");
  std::fflush (stdout);
  Direction dir[2];
  dir[0].from = a, dir[0].to = b;
  dir[1].from = b, dir[1].to = a;
  double delay_ms = 0, loss = 0;
  std::mt19937_64 rng (20261130);
  std::uniform_real_distribution<double> uniform (0, 1);
  std::string line;
  char buf[65536];
  for (;;) {
    gint64 now = g_get_monotonic_time ();
    int timeout_ms = 100;
    for (auto &d : dir)
      if (!d.queue.empty ())
        timeout_ms = std::min<int> (timeout_ms,
                                    (int)std::max<gint64> (0, (d.queue.front ().due_us - now + 999) / 1000));
    struct pollfd p[3] = {{a, POLLIN, 0}, {b, POLLIN, 0}, {0, POLLIN, 0}};
    poll (p, 3, timeout_ms);
    now = g_get_monotonic_time ();
    for (int i = 0; i < 2; i++)
      for (;;) {
        ssize_t n = read (dir[i].from, buf, sizeof buf);
        if (n <= 0)
          break;
        if (uniform (rng) * 100 < loss)
          continue;
        dir[i].queue.push_back ({now + (gint64)(delay_ms * 1000), std::vector<char> (buf, buf + n)});
      }
    for (auto &d : dir)
      while (!d.queue.empty () && d.queue.front ().due_us <= now) {
        if (write (d.to, d.queue.front ().packet.data (), d.queue.front ().packet.size ()) > 0)
          d.bytes += d.queue.front ().packet.size ();
        d.queue.pop_front ();
      }
    if (p[2].revents & (POLLIN | POLLHUP)) {
      ssize_t n = read (0, buf, sizeof buf);
      if (n <= 0)
        return 0; // the benchmark went away: so do the devices
      line.append (buf, n);
      size_t eol;
      while ((eol = line.find ('\n')) != std::string::npos) {
        std::string cmd = line.substr (0, eol);
        line.erase (0, eol + 1);
        if (cmd == "stats")
          std::printf ("bytes %llu %llu\n", dir[0].bytes, dir[1].bytes);
        else
          std::sscanf (cmd.c_str (), "%lf %lf", &delay_ms, &loss);
        std::fflush (stdout);
      }
    }
  }
}

// ---- cloud-process ----------------------------------------------------------

// The frame record of each frame by its PTS: from the mezzanine's SEI to the
// decoded frame (StageMeta), and from the encoder's input to its output.  A
// frame without an exact match takes the latest record before it (the
// decoder's first frames after a damaged one).
struct RecordMap {
  std::mutex mutex;
  std::map<GstClockTime, livemicro::hw::FrameRecord> by_pts;
  unsigned long found = 0, nearest = 0, none = 0;
  void put (GstClockTime pts, const livemicro::hw::FrameRecord &r)
  {
    std::lock_guard<std::mutex> lock (mutex);
    by_pts[pts] = r;
    while (by_pts.size () > 256)
      by_pts.erase (by_pts.begin ());
  }
  bool get (GstClockTime pts, livemicro::hw::FrameRecord &r)
  {
    std::lock_guard<std::mutex> lock (mutex);
    auto it = by_pts.upper_bound (pts);
    if (it == by_pts.begin ()) {
      none++;
      return false;
    }
    --it;
    (it->first == pts ? found : nearest)++;
    r = it->second;
    return true;
  }
};

// x264enc shifts its output PTS (its min-pts of 1000 hours), so the encoder's
// frames are matched in order: one access unit out per frame in, in order
// (no B-frames, no lookahead), which `late` would show otherwise.
struct EncoderRecords {
  std::mutex mutex;
  std::deque<livemicro::hw::FrameRecord> in_order;
  unsigned long matched = 0, late = 0, none = 0;
};

struct Records {
  RecordMap decoded;
  EncoderRecords encoded;
};

GstPadProbeReturn
read_sei (GstPad *, GstPadProbeInfo *info, gpointer data)
{
  GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
  GstMapInfo map;
  if (GST_BUFFER_PTS_IS_VALID (b) && gst_buffer_map (b, &map, GST_MAP_READ)) {
    if (auto r = h264::frame_record (map.data, map.size))
      static_cast<Records *> (data)->decoded.put (GST_BUFFER_PTS (b), *r);
    gst_buffer_unmap (b, &map);
  }
  return GST_PAD_PROBE_OK;
}

GstPadProbeReturn
add_stage_meta (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  auto *records = static_cast<Records *> (data);
  GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
  livemicro::hw::FrameRecord r;
  if (!records->decoded.get (GST_BUFFER_PTS (b), r))
    return GST_PAD_PROBE_OK;
  if (GstCaps *caps = gst_pad_get_current_caps (pad)) {
    GstStructure *s = gst_caps_get_structure (caps, 0);
    gst_structure_get_int (s, "width", &r.frame_width);
    gst_structure_get_int (s, "height", &r.frame_height);
    gst_caps_unref (caps);
  }
  b = gst_buffer_make_writable (b);
  livemicro::add_frame_record_meta (b, r);
  GST_PAD_PROBE_INFO_DATA (info) = b;
  return GST_PAD_PROBE_OK;
}

GstPadProbeReturn
keep_for_encoder (GstPad *, GstPadProbeInfo *info, gpointer data)
{
  GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
  auto &e = static_cast<Records *> (data)->encoded;
  std::lock_guard<std::mutex> lock (e.mutex);
  LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (b);
  e.in_order.push_back (m ? livemicro::frame_record_of (*m) : livemicro::hw::FrameRecord ());
  return GST_PAD_PROBE_OK;
}

GstPadProbeReturn
write_sei (GstPad *, GstPadProbeInfo *info, gpointer data)
{
  auto *records = static_cast<Records *> (data);
  GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
  livemicro::hw::FrameRecord r;
  {
    auto &e = records->encoded;
    std::lock_guard<std::mutex> lock (e.mutex);
    if (e.in_order.empty () || e.in_order.front ().capture_unix_us == 0) {
      e.none++;
      if (!e.in_order.empty ())
        e.in_order.pop_front ();
      return GST_PAD_PROBE_OK;
    }
    r = e.in_order.front ();
    e.in_order.pop_front ();
    (e.in_order.empty () ? e.matched : e.late)++;
  }
  GstMapInfo map;
  if (!gst_buffer_map (b, &map, GST_MAP_READ))
    return GST_PAD_PROBE_OK;
  std::vector<uint8_t> au = h264::with_frame_record (map.data, map.size, r);
  gst_buffer_unmap (b, &map);
  GstBuffer *out = gst_buffer_new_memdup (au.data (), au.size ());
  gst_buffer_copy_into (out, b, GST_BUFFER_COPY_METADATA, 0, -1);
  gst_buffer_unref (b);
  GST_PAD_PROBE_INFO_DATA (info) = out;
  const unsigned long n = records->encoded.matched + records->encoded.late;
  if (n % 150 == 1)
    std::fprintf (stderr,
                  "cloud-process: decoded frames given their record %lu by PTS, %lu by the latest, %lu not; "
                  "encoded %lu in step, %lu behind, %lu without\n",
                  records->decoded.found, records->decoded.nearest, records->decoded.none,
                  records->encoded.matched, records->encoded.late, records->encoded.none);
  return GST_PAD_PROBE_OK;
}

void
probe (GstElement *bin, const char *name, const char *pad, GstPadProbeCallback cb, Records *records)
{
  g_autoptr (GstElement) e = gst_bin_get_by_name (GST_BIN (bin), name);
  g_autoptr (GstPad) p = gst_element_get_static_pad (e, pad);
  gst_pad_add_probe (p, GST_PAD_PROBE_TYPE_BUFFER, cb, records, nullptr);
}

void
on_media_configure (GstRTSPMediaFactory *, GstRTSPMedia *media, gpointer data)
{
  auto *records = static_cast<Records *> (data);
  g_autoptr (GstElement) bin = gst_rtsp_media_get_element (media);
  probe (bin, "seiin", "src", read_sei, records);
  probe (bin, "features", "sink", add_stage_meta, records);
  probe (bin, "encode", "sink", keep_for_encoder, records);
  probe (bin, "seiout", "src", write_sei, records);
}

int
run_cloud_process (const char *source, const char *user, const char *password, const char *port,
                   const char *bitrate_kbps)
{
  // The home node's capture and consultant view, as pipelines/capture.pipeline
  // and views/consultant.pipeline with encoders/h264.pipeline run them.
  const std::string launch
      = std::string ("( rtspsrc latency=0 protocols=tcp location=\"") + source + "\" user-id=\"" + user
        + "\" user-pw=\"" + password
        + "\" ! rtph264depay ! video/x-h264,stream-format=byte-stream,alignment=au ! h264parse name=seiin"
          " ! avdec_h264 ! videoconvert ! video/x-raw,format=RGB"
          " ! tumorfeatures name=features interval=3 wait-for-result=false analysis-nice=10"
          " ! queue leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0"
          " ! privacymask profile=consultant detection-interval=10"
          " ! featureoverlay contours=true summary=false heatmap=false"
          " ! videoconvert ! video/x-raw,format=I420"
          " ! x264enc name=encode tune=zerolatency speed-preset=ultrafast bitrate="
        + bitrate_kbps
        + " key-int-max=30 bframes=0 threads=1 sliced-threads=false"
          " ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au"
          " ! identity name=seiout ! rtph264pay name=pay0 pt=96 config-interval=-1 )";
  static Records records;
  GstRTSPServer *server = gst_rtsp_server_new ();
  gst_rtsp_server_set_address (server, "0.0.0.0");
  gst_rtsp_server_set_service (server, port);
  GstRTSPMediaFactory *factory = gst_rtsp_media_factory_new ();
  gst_rtsp_media_factory_set_launch (factory, launch.c_str ());
  gst_rtsp_media_factory_set_shared (factory, TRUE);
  g_signal_connect (factory, "media-configure", G_CALLBACK (on_media_configure), &records);
  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points (server);
  gst_rtsp_mount_points_add_factory (mounts, "/view", factory);
  g_object_unref (mounts);
  if (gst_rtsp_server_attach (server, nullptr) == 0) {
    std::fprintf (stderr, "cloud-process: cannot listen on port %s\n", port);
    return 1;
  }
  std::printf ("ready\n");
  std::fflush (stdout);
  g_main_loop_run (g_main_loop_new (nullptr, FALSE));
  return 0;
}

// ---- field-analyse / field-send ---------------------------------------------

GSocketConnection *
connect_to (const char *host, int port)
{
  g_autoptr (GSocketClient) c = g_socket_client_new ();
  return g_socket_client_connect_to_host (c, (std::string (host) + ":" + std::to_string (port)).c_str (), 0,
                                          nullptr, nullptr);
}

// appsrc ! tumorfeatures ! featureoverlay ! appsink, reused for every field.
struct Analyser {
  GstElement *pipeline = nullptr, *src = nullptr, *sink = nullptr;
  GstClockTime next_pts = 0;

  Analyser ()
  {
    pipeline
        = gst_parse_launch ("appsrc name=src format=time is-live=false ! tumorfeatures wait-for-result=true"
                            " ! featureoverlay contours=true summary=true ! appsink name=sink sync=false",
                            nullptr);
    src = gst_bin_get_by_name (GST_BIN (pipeline), "src");
    sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  }

  // The processed image as JPEG, and the nuclei found (-1: not analysed).
  std::vector<uint8_t> process (const cv::Mat &rgb, double um_per_px, int &nuclei)
  {
    g_autoptr (GstCaps) caps
        = gst_caps_new_simple ("video/x-raw", "format", G_TYPE_STRING, "RGB", "width", G_TYPE_INT, rgb.cols,
                               "height", G_TYPE_INT, rgb.rows, "framerate", GST_TYPE_FRACTION, 1, 1, nullptr);
    gst_app_src_set_caps (GST_APP_SRC (src), caps);
    if (next_pts == 0)
      gst_element_set_state (pipeline, GST_STATE_PLAYING);
    GstBuffer *b = gst_buffer_new_allocate (nullptr, rgb.total () * 3, nullptr);
    gst_buffer_fill (b, 0, rgb.data, rgb.total () * 3);
    GST_BUFFER_PTS (b) = next_pts;
    GST_BUFFER_DURATION (b) = GST_SECOND;
    next_pts += GST_SECOND;
    livemicro::hw::FrameRecord r;
    r.um_per_px = um_per_px;
    r.objective = 40;
    r.frame_width = rgb.cols;
    r.frame_height = rgb.rows;
    r.capture_unix_us = g_get_real_time ();
    livemicro::add_frame_record_meta (b, r);
    gst_app_src_push_buffer (GST_APP_SRC (src), b);
    GstSample *sample = gst_app_sink_pull_sample (GST_APP_SINK (sink));
    std::vector<uint8_t> jpeg;
    nuclei = -1;
    if (!sample)
      return jpeg;
    GstBuffer *out = gst_sample_get_buffer (sample);
    if (auto *m = (LivemicroFeaturesMeta *)gst_buffer_get_meta (out, LIVEMICRO_FEATURES_META_API_TYPE))
      nuclei = m->analysed ? (int)m->nuclei_count : -1;
    GstMapInfo map;
    if (gst_buffer_map (out, &map, GST_MAP_READ)) {
      cv::Mat shown (rgb.rows, rgb.cols, CV_8UC3, map.data), bgr;
      cv::cvtColor (shown, bgr, cv::COLOR_RGB2BGR);
      cv::imencode (".jpg", bgr, jpeg, {cv::IMWRITE_JPEG_QUALITY, 90});
      gst_buffer_unmap (out, &map);
    }
    gst_sample_unref (sample);
    return jpeg;
  }
};

int
run_field_analyse (int port, const char *next_host, int next_port, double um_per_px)
{
  Analyser analyser;
  g_autoptr (GSocketListener) listener = g_socket_listener_new ();
  if (!g_socket_listener_add_inet_port (listener, port, nullptr, nullptr)) {
    std::fprintf (stderr, "field-analyse: cannot listen on %d\n", port);
    return 1;
  }
  std::printf ("ready\n");
  std::fflush (stdout);
  for (;;) {
    g_autoptr (GSocketConnection) in = g_socket_listener_accept (listener, nullptr, nullptr, nullptr);
    if (!in)
      continue;
    int64_t sent_unix_us = 0;
    std::vector<uint8_t> png;
    if (!livemicro::bench::field::read_field (in, sent_unix_us, png))
      continue;
    cv::Mat bgr = cv::imdecode (png, cv::IMREAD_COLOR), rgb;
    cv::cvtColor (bgr, rgb, cv::COLOR_BGR2RGB);
    Reply reply;
    reply.sent_unix_us = sent_unix_us;
    reply.field_bytes = png.size ();
    reply.jpeg = analyser.process (rgb, um_per_px, reply.nuclei);
    g_autoptr (GSocketConnection) out = connect_to (next_host, next_port);
    if (out)
      livemicro::bench::field::write_reply (out, reply);
  }
}

int
run_field_send (const char *png_path, const char *host, int port)
{
  std::ifstream f (png_path, std::ios::binary);
  std::vector<uint8_t> png ((std::istreambuf_iterator<char> (f)), std::istreambuf_iterator<char> ());
  // The clock starts before the connection: its handshake crosses the link too.
  const int64_t start = g_get_real_time ();
  g_autoptr (GSocketConnection) c = connect_to (host, port);
  if (png.empty () || !c || !livemicro::bench::field::write_field (c, start, png)) {
    std::fprintf (stderr, "field-send: cannot send %s to %s:%d\n", png_path, host, port);
    return 1;
  }
  g_io_stream_close (G_IO_STREAM (c), nullptr, nullptr);
  return 0;
}

} // namespace

int
main (int argc, char **argv)
{
  const std::string role = argc > 1 ? argv[1] : "";
  if (role == "wan" && argc == 3)
    return run_wan (argv[2]);
  gst_init (&argc, &argv);
  if (role == "cloud-process" && argc == 7)
    return run_cloud_process (argv[2], argv[3], argv[4], argv[5], argv[6]);
  if (role == "field-analyse" && argc == 6)
    return run_field_analyse (std::atoi (argv[2]), argv[3], std::atoi (argv[4]), std::atof (argv[5]));
  if (role == "field-send" && argc == 5)
    return run_field_send (argv[2], argv[3], std::atoi (argv[4]));
  std::fprintf (stderr, "usage: see the top of tests/bench/edge_vs_cloud_helper.cpp\n");
  return 2;
}
