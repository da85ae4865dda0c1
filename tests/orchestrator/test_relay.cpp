// The view relay between nodes, for real: a home node's ViewStream served
// by RelayOut (srtsink, AES) on 127.0.0.1, pulled by RelayIn (srtsrc) into
// a serving node's ViewStream, watched there by decoding viewers.
#include "relay_fixtures.h"
#include "relay_in.h"
#include "relay_out.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

using namespace livemicro::orchestrator;
using namespace livemicro::orchestrator::relay;
using namespace livemicro::test;

namespace {

SrtLinkSettings
link (const std::string &passphrase = "correct horse battery staple")
{
  SrtLinkSettings s;
  s.passphrase = passphrase;
  s.key_bytes = 32;
  s.latency_ms = 120;
  return s;
}

std::shared_ptr<ViewStream>
view (uint32_t id)
{
  return std::make_shared<ViewStream> (id, "m1", "owner", "m1/owner");
}

// A home node's view fed by an encoder (`home`, `feed`), served by a
// started RelayOut on `port` (`out`); a serving node's view (`serving`).
class RelayTest : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }
  void serve_home_view (int width = 320, int height = 240, const std::string &pattern = "ball")
  {
    feed = std::make_unique<HomeFeed> (home, width, height, 30, pattern);
    out = std::make_unique<RelayOut> (home, "127.0.0.1", port, link ());
    ASSERT_TRUE (out->start (error)) << error;
  }
  std::shared_ptr<ViewStream> home = view (1), serving = view (7);
  const uint16_t port = free_udp_port ();
  std::unique_ptr<HomeFeed> feed; // outlives `out`, whose callers ask it for keyframes
  std::unique_ptr<RelayOut> out;
  std::string error;
};

} // namespace

TEST_F (RelayTest, FramesArriveWithTheirCaptureTimeAndStageAndDecode)
{
  ASSERT_NO_FATAL_FAILURE (serve_home_view ());
  EXPECT_FALSE (out->stats ().feeding) << "no node pulls the view yet: the worker need not encode for it";
  RelayIn in (serving, "127.0.0.1", port, link ());
  ASSERT_TRUE (in.start (error)) << error;
  LocalViewer viewer (serving);
  ASSERT_TRUE (wait_until ([&] { return viewer.decoded () >= 60; }, 20000))
      << "decoded " << viewer.decoded () << ", relay: " << in.state ().last_error;

  // Every frame the serving node's viewer got is one the home node pushed,
  // with its capture time in the SEI and its stage in the serving
  // ViewStream's frame records (rebuilt from the SEI), in order.
  const auto pushed = feed->pushed ();
  const auto arrivals = viewer.arrivals ();
  ASSERT_GE (arrivals.size (), 60u);
  int64_t last = 0;
  size_t stage_checked = 0;
  for (const auto &a : arrivals) {
    ASSERT_EQ (pushed.count (a.capture_unix_us), 1u) << a.capture_unix_us;
    EXPECT_GT (a.capture_unix_us, last);
    last = a.capture_unix_us;
    if (a.record) { // the frame record the serving ViewStream rebuilt, on the buffer
      stage_checked++;
      EXPECT_EQ (a.record->capture_unix_us, a.capture_unix_us);
      EXPECT_DOUBLE_EQ (a.record->stage_x_um, pushed.at (a.capture_unix_us));
      EXPECT_DOUBLE_EQ (a.record->stage_y_um, -3.5);
      EXPECT_DOUBLE_EQ (a.record->um_per_px, 0.25);
      EXPECT_EQ (a.record->objective, 40);
      EXPECT_EQ (a.record->frame_width, 320);
      EXPECT_EQ (a.record->frame_height, 240);
    }
  }
  EXPECT_GE (stage_checked, 30u);
  // Consecutive: no frame lost between the first and the last relayed.
  auto first = pushed.find (arrivals.front ().capture_unix_us);
  auto end = std::next (pushed.find (arrivals.back ().capture_unix_us));
  EXPECT_EQ ((size_t)std::distance (first, end), arrivals.size ());
  EXPECT_EQ (viewer.without_capture_time (), 0u);
  EXPECT_EQ (viewer.problems (), 0u) << "decoder errors or warnings";
  EXPECT_GE (viewer.decoded () + 5, viewer.access_units ()) << "every access unit decodes";

  RelayInState st = in.state ();
  EXPECT_TRUE (st.connected);
  EXPECT_EQ (st.frames_without_capture_time, 0u);
  EXPECT_EQ (st.reconnects, 0u);
  EXPECT_GT (st.bytes_received, 0u);
  EXPECT_GE (st.frames, arrivals.size ());
  RelayOutStats os = out->stats ();
  EXPECT_EQ (os.callers, 1);
  EXPECT_TRUE (os.feeding);
  EXPECT_GE (os.bytes_sent, st.bytes_received);
}

TEST_F (RelayTest, AWrongPassphraseGetsNothingAndTheRightOneStillWorks)
{
  auto intruder_view = view (8);
  ASSERT_NO_FATAL_FAILURE (serve_home_view ());

  RelayIn intruder (intruder_view, "127.0.0.1", port, link ("not the cluster's passphrase"));
  ASSERT_TRUE (intruder.start (error)) << error;
  LocalViewer intruder_viewer (intruder_view);
  ASSERT_TRUE (wait_until ([&] { return intruder.state ().attempts >= 2; }, 10000));
  RelayInState st = intruder.state ();
  EXPECT_FALSE (st.connected);
  EXPECT_EQ (st.bytes_received, 0u);
  EXPECT_EQ (st.frames, 0u);
  EXPECT_EQ (intruder_viewer.access_units (), 0u);
  EXPECT_NE (st.last_error.find ("passphrase"), std::string::npos) << st.last_error;
  EXPECT_EQ (out->stats ().callers_accepted, 0u);
  EXPECT_FALSE (out->stats ().feeding);

  // A caller without any passphrase (a plain srtsrc) is refused as well.
  const std::string plain = "srtsrc uri=srt://127.0.0.1:" + std::to_string (port)
                            + " auto-reconnect=false ! fakesink name=out signal-handoffs=true";
  GstElement *unencrypted = gst_parse_launch (plain.c_str (), nullptr);
  ASSERT_TRUE (unencrypted);
  std::atomic<int> got{0};
  GstElement *sink = gst_bin_get_by_name (GST_BIN (unencrypted), "out");
  g_signal_connect (sink, "handoff", G_CALLBACK (+[] (GstElement *, GstBuffer *, GstPad *, gpointer n) {
                      (*static_cast<std::atomic<int> *> (n))++;
                    }),
                    &got);
  gst_object_unref (sink);
  gst_element_set_state (unencrypted, GST_STATE_PLAYING);
  g_usleep (1500000);
  gst_element_set_state (unencrypted, GST_STATE_NULL);
  gst_object_unref (unencrypted);
  EXPECT_EQ (got, 0);
  EXPECT_EQ (out->stats ().callers_accepted, 0u);

  // The listener was there all along: the right passphrase gets frames.
  RelayIn in (serving, "127.0.0.1", port, link ());
  ASSERT_TRUE (in.start (error)) << error;
  ASSERT_TRUE (wait_until ([&] { return in.state ().frames >= 10; }, 15000)) << in.state ().last_error;
  EXPECT_EQ (intruder.state ().frames, 0u);
  EXPECT_EQ (out->stats ().callers, 1);
}

TEST_F (RelayTest, SettingsThatCannotWorkAreRefusedBeforeAnythingRuns)
{
  RelayIn short_pass (serving, "127.0.0.1", 9000, link ("short"));
  EXPECT_FALSE (short_pass.start (error));
  EXPECT_NE (error.find ("10 to 79 characters"), std::string::npos) << error;
  SrtLinkSettings odd_key = link ();
  odd_key.key_bytes = 20;
  RelayOut bad_key (home, "127.0.0.1", 9000, odd_key);
  EXPECT_FALSE (bad_key.start (error));
  EXPECT_NE (error.find ("16, 24 or 32"), std::string::npos) << error;
  RelayIn injected (serving, "127.0.0.1?mode=listener", 9000, link ());
  EXPECT_FALSE (injected.start (error));
  EXPECT_NE (error.find ("not a host name"), std::string::npos) << error;

  // A port another relay already listens on.
  RelayOut first (home, "127.0.0.1", port, link ());
  ASSERT_TRUE (first.start (error)) << error;
  RelayOut second (home, "127.0.0.1", port, link ());
  EXPECT_FALSE (second.start (error));
  EXPECT_NE (error.find (std::to_string (port)), std::string::npos) << error;
  EXPECT_EQ (home->viewers (), 0u);
}

TEST_F (RelayTest, AHomeRelayRestartedMidStreamIsPulledAgainWithinTwoSeconds)
{
  ASSERT_NO_FATAL_FAILURE (serve_home_view ());
  RelayIn in (serving, "127.0.0.1", port, link (), /*stall_timeout_ms*/ 1000);
  ASSERT_TRUE (in.start (error)) << error;
  LocalViewer viewer (serving);
  ASSERT_TRUE (wait_until ([&] { return viewer.decoded () >= 20; }, 20000)) << in.state ().last_error;

  out.reset (); // the home node's relay goes away (a restart)
  EXPECT_EQ (home->viewers (), 0u);
  ASSERT_TRUE (wait_until ([&] { return !in.state ().connected; }, 3000)) << "the drop is noticed";
  g_usleep (300000);
  const uint64_t before = viewer.decoded ();
  const int64_t restarted = g_get_monotonic_time ();
  out = std::make_unique<RelayOut> (home, "127.0.0.1", port, link ());
  ASSERT_TRUE (out->start (error)) << error;
  ASSERT_TRUE (wait_until ([&] { return viewer.decoded () >= before + 10; }, 10000))
      << in.state ().last_error;
  const double back_s = (g_get_monotonic_time () - restarted) / 1e6;
  RecordProperty ("frames_back_after_s", std::to_string (back_s));
  EXPECT_LT (back_s, 2.5) << "frames flow again " << back_s << " s after the restart";
  EXPECT_EQ (in.state ().reconnects, 1u);
  EXPECT_EQ (viewer.problems (), 0u);
}

TEST_F (RelayTest, AHomeNodeGoneWithoutAWordIsNoticedByTheStallTimeout)
{
  ASSERT_NO_FATAL_FAILURE (serve_home_view ());
  UdpLossRelay net (port, /*drop_every*/ 0);
  RelayIn in (serving, "127.0.0.1", net.port (), link (), /*stall_timeout_ms*/ 1000);
  ASSERT_TRUE (in.start (error)) << error;
  ASSERT_TRUE (wait_until ([&] { return in.state ().frames >= 20; }, 20000)) << in.state ().last_error;
  net.set_blackhole (true); // no close, no shutdown message: silence
  ASSERT_TRUE (wait_until ([&] { return !in.state ().connected; }, 3000));
  EXPECT_NE (in.state ().last_error.find ("nothing received"), std::string::npos) << in.state ().last_error;
  net.set_blackhole (false);
  const uint64_t before = in.state ().frames;
  ASSERT_TRUE (wait_until ([&] { return in.state ().frames >= before + 10; }, 10000))
      << in.state ().last_error;
  EXPECT_GE (in.state ().reconnects, 1u);
}

// One SRT connection per serving node whatever the number of its viewers;
// and one srtsink listener serves several serving nodes (GStreamer 1.22).
TEST_F (RelayTest, OneConnectionPerServingNodeWhateverItsViewers)
{
  auto serving_b = serving, serving_c = view (9);
  ASSERT_NO_FATAL_FAILURE (serve_home_view ());
  RelayIn in_b (serving_b, "127.0.0.1", port, link ());
  ASSERT_TRUE (in_b.start (error)) << error;
  std::vector<std::unique_ptr<LocalViewer>> viewers;
  for (int k = 0; k < 4; k++)
    viewers.push_back (std::make_unique<LocalViewer> (serving_b));
  ASSERT_TRUE (wait_until (
      [&] {
        return std::all_of (viewers.begin (), viewers.end (), [] (auto &v) { return v->decoded () >= 30; });
      },
      20000));
  EXPECT_EQ (out->stats ().callers, 1);
  EXPECT_EQ (out->stats ().callers_accepted, 1u);
  EXPECT_EQ (home->viewers (), 1u) << "the home node's view has one viewer: the relay";

  // Bytes on the link over 2 s against the bytes the view's encoder made:
  // the stream once (plus MPEG-TS overhead), not once per local viewer.
  const uint64_t sent0 = out->stats ().bytes_sent, encoded0 = home->bytes ();
  g_usleep (2000000);
  const double ratio = (double)(out->stats ().bytes_sent - sent0) / (double)(home->bytes () - encoded0);
  RecordProperty ("link_bytes_per_encoded_byte", std::to_string (ratio));
  EXPECT_GT (ratio, 0.9);
  EXPECT_LT (ratio, 2.0) << "4 local viewers, one stream on the link (MPEG-TS and SRT overhead aside)";

  // A second serving node: the same listener, a second caller.
  RelayIn in_c (serving_c, "127.0.0.1", port, link ());
  ASSERT_TRUE (in_c.start (error)) << error;
  LocalViewer viewer_c (serving_c);
  ASSERT_TRUE (wait_until ([&] { return viewer_c.decoded () >= 20; }, 20000)) << in_c.state ().last_error;
  EXPECT_EQ (out->stats ().callers, 2);
  EXPECT_EQ (home->viewers (), 1u);
  const uint64_t b0 = viewers[0]->decoded ();
  ASSERT_TRUE (wait_until ([&] { return viewers[0]->decoded () >= b0 + 10; }, 5000)) << "node B still plays";
  for (auto &v : viewers)
    EXPECT_EQ (v->problems (), 0u);
}

// 1 % of the datagrams towards the serving node dropped (a user-space relay:
// this kernel has no netem): SRT asks for them again and every frame
// arrives whole.
TEST_F (RelayTest, LostPacketsAreRetransmittedAndEveryFrameDecodes)
{
  ASSERT_NO_FATAL_FAILURE (serve_home_view (640, 360, "snow")); // 2 Mbit/s: ~200 datagrams a second
  UdpLossRelay net (port, /*drop_every*/ 100);
  RelayIn in (serving, "127.0.0.1", net.port (), link ());
  ASSERT_TRUE (in.start (error)) << error;
  LocalViewer viewer (serving);
  ASSERT_TRUE (wait_until ([&] { return net.dropped () >= 10 && viewer.decoded () >= 90; }, 30000))
      << "dropped " << net.dropped () << ", decoded " << viewer.decoded () << ": " << in.state ().last_error;

  EXPECT_GT (out->stats ().packets_retransmitted, 0u);
  const auto pushed = feed->pushed ();
  const auto arrivals = viewer.arrivals ();
  auto first = pushed.find (arrivals.front ().capture_unix_us);
  auto end = std::next (pushed.find (arrivals.back ().capture_unix_us));
  EXPECT_EQ ((size_t)std::distance (first, end), arrivals.size ()) << "no frame lost";
  EXPECT_EQ (viewer.problems (), 0u) << "no decode error";
  EXPECT_GE (viewer.decoded () + 5, viewer.access_units ());
  EXPECT_EQ (in.state ().reconnects, 0u);
  RecordProperty ("datagrams_dropped", std::to_string (net.dropped ()));
}

TEST (RelayedFrameHeader, ComesFromTheSeiAndThePictureAndNeedsTheCaptureTime)
{
  // SPS, PPS, IDR slice (as in the H.264 unit test) with the worker's SEI.
  const uint8_t au[] = {0,    0,    0,    1,    0x67, 0x42, 0xc0, 0x1f, 0,    0,    0,    1,
                        0x68, 0xce, 0x3c, 0x80, 0,    0,    1,    0x65, 0x88, 0x84, 0x00, 0x33};
  livemicro::hw::FrameRecord fi;
  fi.capture_unix_us = 1795367801658453;
  fi.stage_x_um = 47000.125;
  fi.stage_y_um = -0.5;
  fi.stage_z_um = 1003.25;
  fi.um_per_px = 0.25;
  fi.objective = 40;
  fi.moving = true;
  fi.frame_number = 12345;
  const std::vector<uint8_t> with_sei = h264::with_frame_record (au, sizeof au, fi);
  RelayedPicture pic{true, 1280, 720, 33333333};
  auto h = relayed_frame_header (with_sei.data (), with_sei.size (), pic, 7);
  ASSERT_TRUE (h.has_value ());
  EXPECT_EQ (h->view_id, 7u);
  EXPECT_EQ (h->record.capture_unix_us, fi.capture_unix_us);
  EXPECT_DOUBLE_EQ (h->record.stage_x_um, 47000.125);
  EXPECT_DOUBLE_EQ (h->record.stage_y_um, -0.5);
  EXPECT_DOUBLE_EQ (h->record.stage_z_um, 1003.25);
  EXPECT_DOUBLE_EQ (h->record.um_per_px, 0.25);
  EXPECT_EQ (h->record.objective, 40);
  EXPECT_TRUE (h->record.moving);
  EXPECT_EQ (h->record.frame_number, 12345u);
  EXPECT_EQ (h->flags, wire::kFlagKeyframe);
  EXPECT_EQ (h->record.frame_width, 1280) << "no size in the record: the picture's";
  EXPECT_EQ (h->record.frame_height, 720);
  EXPECT_EQ (h->duration_ns, 33333333u);
  EXPECT_EQ (h->pts_ns, 0u) << "not carried";
  pic.keyframe = false;
  fi.moving = false;
  fi.frame_width = 640;
  fi.frame_height = 480;
  const std::vector<uint8_t> still = h264::with_frame_record (au, sizeof au, fi);
  auto hs = relayed_frame_header (still.data (), still.size (), pic, 7);
  EXPECT_EQ (hs->flags, 0u);
  EXPECT_FALSE (hs->record.moving);
  EXPECT_EQ (hs->record.frame_width, 640) << "the record's own size wins";
  EXPECT_FALSE (relayed_frame_header (au, sizeof au, pic, 7).has_value ()) << "no SEI, no capture time";
}
