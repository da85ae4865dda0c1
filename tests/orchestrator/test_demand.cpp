// Demand-driven media (docs/media-demand.md), end to end: a real livemicrod
// and its worker on 127.0.0.1, real rtspsrc players and events sockets.
// What is asserted is what the worker reports (/metrics: frames the capture
// delivered, whether it runs at full rate, which encoders get frames) and
// what players see (frames, pixels); never CPU time.
#include "daemon_process.h"
#include "events_client.h"
#include "webrtc_client.h"

#include <gst/gst.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

using livemicro::test::Daemon;
using livemicro::test::EventsClient;
using livemicro::test::HttpReply;
using livemicro::test::RtspPlayer;
using livemicro::test::WebRtcClient;

namespace {

const char *kSmall = R"({
  "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 500},
  "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})";

const std::string kCaptureActive = "livemicro_capture_active{microscope=\"demo\"}";
const std::string kCaptureFrames = "livemicro_capture_frames_total{microscope=\"demo\"}";
const std::string kEncodersActive = "livemicro_encoders_active{microscope=\"demo\"}";
const std::string kAnalysisActive = "livemicro_analysis_active{microscope=\"demo\"}";

class Demand : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }

  static bool until (const Daemon &d, const std::string &metric, const std::function<bool (double)> &want,
                     double seconds = 10)
  {
    return d.until_metric (metric, want, seconds);
  }
  // Frames the capture delivered during `seconds` (as reported; the report
  // lags up to a second at both ends, the same lag).
  static double captured_during (const Daemon &d, double seconds)
  {
    double before = d.metric (kCaptureFrames);
    g_usleep ((gulong)(seconds * 1e6));
    return d.metric (kCaptureFrames) - before;
  }
  static bool idle (const Daemon &d, double seconds = 10)
  {
    return until (
               d, kCaptureActive, [] (double v) { return v == 0; }, seconds)
           && until (
               d, kEncodersActive, [] (double v) { return v == 0; }, seconds);
  }
};

// A player that keeps the luma range of each decoded frame.
class PixelPlayer {
public:
  PixelPlayer (const std::string &url, const std::string &user, const std::string &password)
  {
    std::string desc
        = "rtspsrc latency=0 protocols=tcp location=\"" + url + "\" user-id=\"" + user + "\" user-pw=\""
          + password
          + "\" ! rtph264depay ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=GRAY8 "
            "! appsink name=out sync=false emit-signals=true";
    pipeline_ = gst_parse_launch (desc.c_str (), nullptr);
    GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline_), "out");
    g_signal_connect (sink, "new-sample", G_CALLBACK (on_sample), this);
    gst_object_unref (sink);
    gst_element_set_state (pipeline_, GST_STATE_PLAYING);
  }
  ~PixelPlayer ()
  {
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    gst_object_unref (pipeline_);
  }
  std::vector<std::pair<int, int>> wait_frames (size_t n, double timeout_s)
  {
    gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
    while (g_get_monotonic_time () < deadline) {
      {
        std::lock_guard<std::mutex> lock (mutex_);
        if (ranges_.size () >= n)
          break;
      }
      g_usleep (20000);
    }
    std::lock_guard<std::mutex> lock (mutex_);
    return ranges_;
  }

private:
  static GstFlowReturn on_sample (GstElement *s, gpointer d)
  {
    auto *self = static_cast<PixelPlayer *> (d);
    GstSample *sample = nullptr;
    g_signal_emit_by_name (s, "pull-sample", &sample);
    if (!sample)
      return GST_FLOW_EOS;
    GstMapInfo map;
    GstBuffer *b = gst_sample_get_buffer (sample);
    if (gst_buffer_map (b, &map, GST_MAP_READ)) {
      uint8_t lo = 255, hi = 0;
      for (gsize i = 0; i < map.size; i++) {
        lo = std::min (lo, map.data[i]);
        hi = std::max (hi, map.data[i]);
      }
      gst_buffer_unmap (b, &map);
      std::lock_guard<std::mutex> lock (self->mutex_);
      self->ranges_.push_back ({lo, hi});
    }
    gst_sample_unref (sample);
    return GST_FLOW_OK;
  }

  GstElement *pipeline_ = nullptr;
  std::mutex mutex_;
  std::vector<std::pair<int, int>> ranges_; // (min, max) luma per frame
};

} // namespace

// No player: the capture idles (about one frame a second), no encoder gets
// frames, no analysis runs.  A player brings full rate at once and gets
// frames; once it leaves, everything idles again.
TEST_F (Demand, TheCaptureRunsAtFullRateOnlyWhileSomeonePlays)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  ASSERT_TRUE (until (d, kCaptureFrames, [] (double v) { return v >= 1; })) << d.metrics ();
  EXPECT_TRUE (idle (d)) << d.metrics ();
  EXPECT_LE (captured_during (d, 3), 6) << "idle: about one frame a second";
  EXPECT_EQ (d.metric (kAnalysisActive), 0) << "nobody reads the analysis";

  // A session alone is not a player.
  HttpReply s = d.create_session ("alice", "owner");
  ASSERT_EQ (s.status, 201) << s.body;
  g_usleep (1500000);
  EXPECT_EQ (d.metric (kCaptureActive), 0);
  EXPECT_EQ (d.metric (kEncodersActive), 0) << "a view without players encodes nothing";
  EXPECT_EQ (d.metric ("livemicro_encoders{microscope=\"demo\"}"), 1) << "the branch is built, waiting";

  {
    RtspPlayer p (s.str ("rtsp_url"), s.str ("id"), s.str ("token"), "tcp", false);
    ASSERT_TRUE (p.wait_frames (10, 15)) << p.error ();
    EXPECT_TRUE (until (d, kCaptureActive, [] (double v) { return v == 1; })) << d.metrics ();
    EXPECT_EQ (d.metric (kEncodersActive), 1);
    EXPECT_EQ (d.metric (kAnalysisActive), 1) << "the owner's view draws the analysis";
    EXPECT_GE (captured_during (d, 2), 20) << "full rate (30 fps) while played";
    int before = p.frames ();
    g_usleep (1000000);
    EXPECT_GE (p.frames () - before, 10) << "the player keeps getting frames";
  }
  EXPECT_TRUE (idle (d)) << "the player left: idle again\n" << d.metrics ();
  EXPECT_TRUE (until (d, kAnalysisActive, [] (double v) { return v == 0; }));
  EXPECT_LE (captured_during (d, 3), 6);

  // And back again: a second player after idle gets frames too.
  RtspPlayer again (s.str ("rtsp_url"), s.str ("id"), s.str ("token"), "udp", false);
  EXPECT_TRUE (again.wait_frames (10, 15)) << again.error ();
}

// Two viewers of one view (two sessions of the same role share the branch,
// and two players of one session share its mount): the second joining and
// leaving never stalls the first, and the encoder runs until the last leaves.
TEST_F (Demand, ASecondViewerJoiningAndLeavingDoesNotStallTheFirst)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply a = d.create_session ("a", "consultant"), b = d.create_session ("b", "consultant");
  ASSERT_EQ (b.status, 201) << b.body;
  RtspPlayer first (a.str ("rtsp_url"), a.str ("id"), a.str ("token"), "tcp", false);
  ASSERT_TRUE (first.wait_frames (5, 15)) << first.error ();
  for (int round = 0; round < 3; round++) {
    {
      // Another session's player of the same view, then a second player of the first's mount.
      RtspPlayer other (b.str ("rtsp_url"), b.str ("id"), b.str ("token"), round % 2 ? "udp" : "tcp", false);
      EXPECT_TRUE (other.wait_frames (5, 15)) << "round " << round << ": " << other.error ();
      RtspPlayer same_mount (a.str ("rtsp_url"), a.str ("id"), a.str ("token"), "tcp", false);
      EXPECT_TRUE (same_mount.wait_frames (5, 15)) << "round " << round << ": " << same_mount.error ();
    }
    int before = first.frames ();
    g_usleep (2000000);
    EXPECT_GE (first.frames () - before, 20) << "round " << round << ": the first player stalled";
    EXPECT_EQ (d.metric (kCaptureActive), 1);
    EXPECT_EQ (d.metric (kEncodersActive), 1);
  }
}

// A WebRTC peer (webrtcbin on 127.0.0.1, as a browser would be) is a player
// too: RTP flows, the capture and the view's encoder run while it is
// connected and idle once it leaves.  (A peer whose ICE does not complete is
// retried, as the viewer page does.)
TEST_F (Demand, AWebRtcPeerIsAPlayer)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply s = d.create_session ("vera", "consultant");
  ASSERT_EQ (s.status, 201) << s.body;
  ASSERT_TRUE (idle (d)) << d.metrics ();
  bool flowed = false;
  for (int attempt = 0; attempt < 3 && !flowed; attempt++) {
    WebRtcClient c (d.http_port (), s.str ("id"), s.str ("token"));
    flowed = c.wait_packets (30, 15);
    if (flowed) {
      EXPECT_TRUE (until (d, kCaptureActive, [] (double v) { return v == 1; })) << d.metrics ();
      EXPECT_EQ (d.metric (kEncodersActive), 1);
      int before = c.packets ();
      g_usleep (1000000);
      EXPECT_GT (c.packets (), before) << "RTP keeps flowing";
    }
  }
  EXPECT_TRUE (flowed) << "no RTP from a WebRTC peer in 3 attempts";
  EXPECT_TRUE (idle (d)) << "the peer left: idle again\n" << d.metrics ();
}

// A still of a view nobody plays: the still is demand while it is pending
// (frames flow through the view), and the microscope idles again after.
TEST_F (Demand, AStillOfAnIdleMicroscopeIsTakenAndTheCaptureIdlesAgain)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply s = d.create_session ("olga", "owner");
  ASSERT_EQ (s.status, 201) << s.body;
  ASSERT_TRUE (idle (d)) << d.metrics ();
  for (int k = 0; k < 3; k++) {
    HttpReply still = d.request ("POST", "/api/v1/sessions/" + s.str ("id") + "/stills", "", s.str ("token"));
    ASSERT_EQ (still.status, 200) << still.body.substr (0, 200);
    EXPECT_EQ (still.body.substr (1, 3), "PNG");
  }
  EXPECT_TRUE (idle (d)) << "no still pending: idle again\n" << d.metrics ();
}

// Someone reading the analysis on the events socket keeps it running (and
// the capture with it); a guest's socket, which is not shown the analysis,
// does not.
TEST_F (Demand, TheAnalysisRunsWhileAnEventsSocketReadsIt)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply owner = d.create_session ("o", "owner"), guest = d.create_session ("g", "guest");
  ASSERT_EQ (guest.status, 201) << guest.body;
  ASSERT_TRUE (idle (d)) << d.metrics ();
  {
    EventsClient g (d.http_port (), "demo", guest.str ("token"));
    g_usleep (1500000);
    EXPECT_EQ (d.metric (kAnalysisActive), 0) << "a guest is not shown the analysis";
    EventsClient o (d.http_port (), "demo", owner.str ("token"));
    EXPECT_TRUE (until (d, kAnalysisActive, [] (double v) { return v == 1; })) << d.metrics ();
    EXPECT_EQ (d.metric (kCaptureActive), 1);
    EXPECT_EQ (d.metric (kEncodersActive), 0) << "no player: no encoder";
  }
  EXPECT_TRUE (until (d, kAnalysisActive, [] (double v) { return v == 0; })) << d.metrics ();
  EXPECT_TRUE (idle (d));
}

// Privacy fails closed across idle: with the stage on the slide label, the
// guest view is black from its very first frame after the capture wakes
// (the owner's view of the same place shows the label, so the test would see
// an unmasked frame).
TEST_F (Demand, AGuestNeverSeesAnUnmaskedFrameWhenTheCaptureWakes)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply owner = d.create_session ("o", "owner"), guest = d.create_session ("g", "guest");
  ASSERT_EQ (guest.status, 201) << guest.body;
  ASSERT_EQ (livemicro::test::move_stage (d, owner.str ("token"), 10000, 12000), "")
      << "the stage on the label";
  for (int round = 0; round < 3; round++) {
    ASSERT_TRUE (idle (d)) << d.metrics ();
    {
      PixelPlayer g (guest.str ("rtsp_url"), guest.str ("id"), guest.str ("token"));
      auto frames = g.wait_frames (15, 20);
      ASSERT_GE (frames.size (), 15u) << "round " << round;
      for (size_t k = 0; k < frames.size (); k++)
        EXPECT_LT (frames[k].second, 48) << "round " << round << ", guest frame " << k << " shows something";
    }
    if (round == 0) {
      ASSERT_TRUE (idle (d)) << d.metrics ();
      PixelPlayer o (owner.str ("rtsp_url"), owner.str ("id"), owner.str ("token"));
      auto frames = o.wait_frames (5, 20);
      ASSERT_GE (frames.size (), 5u);
      EXPECT_GT (frames.back ().second, 100) << "the owner sees the label there";
    }
  }
}
