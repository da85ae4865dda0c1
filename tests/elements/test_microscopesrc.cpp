// microscopesrc as a GStreamer element: StageMeta on every buffer, stage
// commands while PLAYING, formats, meta through converters, and the errors
// bad input gets (on the bus and from gst-launch-1.0).
#include "testutil.h"

#include <livemicro/stagemeta.h>

#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>
#include <opencv2/imgproc.hpp>

#include <fstream>
#include <mutex>
#include <functional>
#include <string>
#include <vector>

using livemicro::test::laplacian_variance;

namespace {

const char *kRgbCaps = "video/x-raw,format=RGB,width=320,height=240,framerate=60/1";

struct Frame {
  cv::Mat rgb; // converted to RGB when the caps are another format
  bool has_meta = false;
  LivemicroStageMeta meta{};
  GstClockTime pts = GST_CLOCK_TIME_NONE;
};

Frame
to_frame (GstBuffer *buf, GstCaps *caps)
{
  Frame f;
  GstVideoInfo info;
  EXPECT_TRUE (gst_video_info_from_caps (&info, caps));
  GstVideoFrame vf;
  EXPECT_TRUE (gst_video_frame_map (&vf, &info, buf, GST_MAP_READ));
  const int w = info.width, h = info.height;
  auto plane = [&] (int p, int rows, int cols, int type) {
    return cv::Mat (rows, cols, type, GST_VIDEO_FRAME_PLANE_DATA (&vf, p),
                    GST_VIDEO_FRAME_PLANE_STRIDE (&vf, p));
  };
  switch (GST_VIDEO_INFO_FORMAT (&info)) {
  case GST_VIDEO_FORMAT_RGB:
    plane (0, h, w, CV_8UC3).copyTo (f.rgb);
    break;
  case GST_VIDEO_FORMAT_RGBx:
    cv::cvtColor (plane (0, h, w, CV_8UC4), f.rgb, cv::COLOR_RGBA2RGB);
    break;
  case GST_VIDEO_FORMAT_BGRx:
    cv::cvtColor (plane (0, h, w, CV_8UC4), f.rgb, cv::COLOR_BGRA2RGB);
    break;
  case GST_VIDEO_FORMAT_I420: {
    cv::Mat i420 (h * 3 / 2, w, CV_8U);
    plane (0, h, w, CV_8U).copyTo (i420.rowRange (0, h));
    cv::Mat u = plane (1, h / 2, w / 2, CV_8U).clone ().reshape (1, h / 4);
    cv::Mat v = plane (2, h / 2, w / 2, CV_8U).clone ().reshape (1, h / 4);
    u.copyTo (i420.rowRange (h, h + h / 4));
    v.copyTo (i420.rowRange (h + h / 4, h * 3 / 2));
    cv::cvtColor (i420, f.rgb, cv::COLOR_YUV2RGB_I420);
    break;
  }
  default:
    ADD_FAILURE () << "unexpected format";
  }
  gst_video_frame_unmap (&vf);
  if (LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (buf)) {
    f.has_meta = true;
    f.meta = *m;
  }
  f.pts = GST_BUFFER_PTS (buf);
  return f;
}

class MicroscopeSrc : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }
  void TearDown () override
  {
    if (h_)
      gst_harness_teardown (h_);
  }

  // A live microscopesrc on the system clock, pulled by the harness.
  GstHarness *start (const std::string &props, const char *caps = kRgbCaps)
  {
    GError *err = nullptr;
    GstElement *e = gst_parse_launch (("microscopesrc " + props).c_str (), &err);
    EXPECT_EQ (err, nullptr) << err->message;
    h_ = gst_harness_new_with_element (e, nullptr, "src");
    gst_object_unref (e);
    gst_harness_use_systemclock (h_);
    gst_harness_set_sink_caps_str (h_, caps);
    gst_harness_play (h_);
    return h_;
  }
  GstElement *src () { return GST_ELEMENT (gst_object_ref (h_->element)); }
  Frame pull ()
  {
    GstBuffer *buf = gst_harness_pull (h_);
    EXPECT_NE (buf, nullptr);
    GstCaps *caps = gst_pad_get_current_caps (h_->sinkpad);
    Frame f = to_frame (buf, caps);
    gst_caps_unref (caps);
    gst_buffer_unref (buf);
    return f;
  }
  // Pulls until `done` holds for a frame (at most `limit` frames).
  Frame pull_until (const std::function<bool (const Frame &)> &done, int limit = 300)
  {
    for (int k = 0; k < limit; k++) {
      Frame f = pull ();
      if (done (f))
        return f;
    }
    ADD_FAILURE () << "condition not reached within " << limit << " frames";
    return Frame ();
  }
  GstHarness *h_ = nullptr;
};

} // namespace

TEST_F (MicroscopeSrc, EveryBufferCarriesStageMetaWithTheCommandedPosition)
{
  start ("name=src x-um=47000 y-um=12000 z-um=1003 objective=20");
  gint64 before = g_get_real_time ();
  GstClockTime last_pts = GST_CLOCK_TIME_NONE;
  guint64 last_number = 0;
  for (int k = 0; k < 10; k++) {
    Frame f = pull ();
    ASSERT_TRUE (f.has_meta) << "frame " << k;
    EXPECT_NEAR (f.meta.stage_x_um, 47000, 0.25);
    EXPECT_NEAR (f.meta.stage_y_um, 12000, 0.25);
    EXPECT_DOUBLE_EQ (f.meta.stage_z_um, 1003);
    EXPECT_EQ (f.meta.objective, 20u);
    EXPECT_DOUBLE_EQ (f.meta.um_per_px, 0.5);
    EXPECT_EQ (f.meta.frame_width, 320u);
    EXPECT_EQ (f.meta.frame_height, 240u);
    EXPECT_FALSE (f.meta.moving);
    EXPECT_GE (f.meta.capture_unix_us, before - 1000000);
    EXPECT_LE (f.meta.capture_unix_us, g_get_real_time ());
    if (k > 0) {
      EXPECT_GT (f.meta.frame_number, last_number);
      EXPECT_GE (f.pts - last_pts, GST_SECOND / 60);
    }
    last_pts = f.pts;
    last_number = f.meta.frame_number;
  }
}

TEST_F (MicroscopeSrc, SettingAPositionWhilePlayingMovesTheStageVisiblyOverTime)
{
  start ("name=src microscope=sim://synthetic?stage_speed_um_s=2000");
  Frame first = pull ();
  ASSERT_TRUE (first.has_meta);
  const double x0 = first.meta.stage_x_um, target = x0 + 400; // 0.2 s
  GstElement *s = src ();
  g_object_set (s, "x-um", target, nullptr);
  int moving_frames = 0;
  Frame last = pull_until ([&] (const Frame &f) {
    if (f.meta.moving) {
      moving_frames++;
      EXPECT_GE (f.meta.stage_x_um, x0 - 1);
      EXPECT_LE (f.meta.stage_x_um, target + 1);
    }
    return !f.meta.moving && std::abs (f.meta.stage_x_um - target) < 1;
  });
  EXPECT_GE (moving_frames, 3) << "a 0.2 s move should span several frames at 60 fps";
  EXPECT_NEAR (last.meta.stage_y_um, first.meta.stage_y_um, 1e-6);
  gdouble x_prop;
  g_object_get (s, "x-um", &x_prop, nullptr);
  EXPECT_NEAR (x_prop, target, 1e-6);
  gst_object_unref (s);
}

TEST_F (MicroscopeSrc, StageMoveShiftsTheImageByTheExpectedPixels)
{
  start ("name=src objective=20 microscope=sim://synthetic?noise=0&vignetting=0&stage_speed_um_s=100000");
  Frame a = pull ();
  GstElement *s = src ();
  g_object_set (s, "x-um", a.meta.stage_x_um + 25.0, "y-um", a.meta.stage_y_um + 10.0, nullptr);
  gst_object_unref (s);
  Frame b = pull_until ([&] (const Frame &f) {
    return !f.meta.moving && std::abs (f.meta.stage_x_um - a.meta.stage_x_um - 25.0) < 0.3
           && std::abs (f.meta.stage_y_um - a.meta.stage_y_um - 10.0) < 0.3;
  });
  // 25 µm, 10 µm at 0.5 µm/px = 50 px, 20 px.
  cv::Mat a_part = a.rgb (cv::Rect (50, 20, 270, 220));
  cv::Mat b_part = b.rgb (cv::Rect (0, 0, 270, 220));
  EXPECT_EQ (cv::norm (a_part, b_part, cv::NORM_INF), 0.0);
}

TEST_F (MicroscopeSrc, DefocusLowersSharpnessMonotonically)
{
  start ("name=src objective=40 microscope=sim://synthetic?noise=0&vignetting=0");
  Frame first = pull ();
  const double best = first.meta.stage_z_um; // home starts in focus
  GstElement *s = src ();
  double previous = 1e300;
  for (double dz : {0.0, 1.0, 2.0, 4.0, 8.0, 16.0}) {
    g_object_set (s, "z-um", best + dz, nullptr);
    Frame f = pull_until ([&] (const Frame &fr) {
      return !fr.meta.moving && std::abs (fr.meta.stage_z_um - (best + dz)) < 1e-6;
    });
    double sharp = laplacian_variance (f.rgb);
    EXPECT_LT (sharp, previous) << "dz=" << dz;
    previous = sharp;
  }
  gst_object_unref (s);
}

TEST_F (MicroscopeSrc, ObjectiveChangesMicronsPerPixel)
{
  start ("name=src");
  GstElement *s = src ();
  for (auto [mag, upp] : {std::pair<int, double>{4, 2.5}, {40, 0.25}, {20, 0.5}, {10, 1.0}}) {
    g_object_set (s, "objective", mag, nullptr);
    Frame f = pull_until ([&] (const Frame &fr) { return fr.meta.objective == (guint)mag; });
    EXPECT_DOUBLE_EQ (f.meta.um_per_px, upp);
    gdouble prop;
    g_object_get (s, "um-per-px", &prop, nullptr);
    EXPECT_DOUBLE_EQ (prop, upp);
  }
  gst_object_unref (s);
}

TEST_F (MicroscopeSrc, DeliversRgbRgbxBgrxAndI420WithTheSamePicture)
{
  const char *formats[] = {"RGB", "RGBx", "BGRx", "I420"};
  cv::Mat reference;
  for (const char *format : formats) {
    std::string caps = std::string ("video/x-raw,format=") + format + ",width=320,height=240,framerate=30/1";
    start ("name=src is-live=false num-buffers=1 microscope=sim://synthetic?noise=0", caps.c_str ());
    Frame f = pull ();
    ASSERT_TRUE (f.has_meta) << format;
    if (reference.empty ())
      reference = f.rgb;
    else
      EXPECT_GT (cv::PSNR (reference, f.rgb), std::string (format) == "I420" ? 30.0 : 99.0) << format;
    gst_harness_teardown (h_);
    h_ = nullptr;
  }
}

TEST_F (MicroscopeSrc, StageMetaSurvivesVideoconvertAndVideoscaleRescalesIt)
{
  h_ = gst_harness_new_parse ("microscopesrc is-live=false objective=20 ! "
                              "video/x-raw,width=320,height=240 ! videoconvert ! videoscale");
  gst_harness_set_sink_caps_str (h_, "video/x-raw,format=I420,width=160,height=120");
  gst_harness_play (h_);
  GstBuffer *buf = gst_harness_pull (h_);
  LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (buf);
  ASSERT_NE (m, nullptr);
  EXPECT_EQ (m->frame_width, 160u);
  EXPECT_EQ (m->frame_height, 120u);
  EXPECT_DOUBLE_EQ (m->um_per_px, 1.0) << "0.5 µm/px at 320 px is 1 µm/px at 160 px";
  EXPECT_EQ (m->objective, 20u);
  gst_buffer_unref (buf);
}

TEST_F (MicroscopeSrc, NonUniformScaleDropsStageMetaRatherThanLie)
{
  h_ = gst_harness_new_parse ("microscopesrc is-live=false ! video/x-raw,width=320,height=240 ! videoscale");
  gst_harness_set_sink_caps_str (h_, "video/x-raw,format=RGB,width=320,height=120,pixel-aspect-ratio=1/2");
  gst_harness_play (h_);
  GstBuffer *buf = gst_harness_pull (h_);
  EXPECT_EQ (livemicro_buffer_get_stage_meta (buf), nullptr);
  gst_buffer_unref (buf);
}

// An RTP payloader fragments an encoded frame with region copies: the
// fragments get no StageMeta, and that is not an error on the log.
TEST_F (MicroscopeSrc, APartOfABufferGetsNoStageMetaQuietly)
{
  h_ = gst_harness_new_parse (
      "microscopesrc is-live=false ! video/x-raw,format=RGB,width=64,height=48 ! identity");
  gst_harness_play (h_);
  GstBuffer *buf = gst_harness_pull (h_);
  ASSERT_NE (livemicro_buffer_get_stage_meta (buf), nullptr);
  int errors = 0;
  gst_debug_set_threshold_for_name ("GST_BUFFER", GST_LEVEL_ERROR);
  GstLogFunction count_errors = [] (GstDebugCategory *, GstDebugLevel level, const gchar *, const gchar *,
                                    gint, GObject *, GstDebugMessage *, gpointer d) {
    if (level == GST_LEVEL_ERROR)
      ++*static_cast<int *> (d);
  };
  gst_debug_add_log_function (count_errors, &errors, nullptr);
  GstBuffer *whole = gst_buffer_copy (buf);
  GstBuffer *part = gst_buffer_copy_region (buf, GST_BUFFER_COPY_ALL, 0, 100);
  gst_debug_remove_log_function_by_data (&errors);
  EXPECT_NE (livemicro_buffer_get_stage_meta (whole), nullptr);
  EXPECT_EQ (livemicro_buffer_get_stage_meta (part), nullptr);
  EXPECT_EQ (errors, 0);
  gst_buffer_unref (part);
  gst_buffer_unref (whole);
  gst_buffer_unref (buf);
}

TEST_F (MicroscopeSrc, StagePropertiesCanBeHammeredWhilePlaying)
{
  start ("name=src");
  GstElement *s = src ();
  GValue x = G_VALUE_INIT;
  g_value_init (&x, G_TYPE_DOUBLE);
  g_value_set_double (&x, 40000.0);
  GstHarnessThread *t = gst_harness_stress_property_start_full (h_, "x-um", &x, 0);
  GThread *setter = g_thread_new (
      "setter",
      [] (gpointer data) -> gpointer {
        for (int k = 0; k < 2000; k++)
          g_object_set (data, "y-um", 5000.0 + (k % 100) * 100.0, "objective", k % 2 ? 20 : 40, nullptr);
        return nullptr;
      },
      s);
  for (int k = 0; k < 20; k++) {
    Frame f = pull ();
    ASSERT_TRUE (f.has_meta);
    EXPECT_GE (f.meta.stage_y_um, 0);
    EXPECT_LE (f.meta.stage_y_um, 25000);
  }
  g_thread_join (setter);
  gst_harness_stress_thread_stop (t);
  g_value_unset (&x);
  gst_object_unref (s);
}

TEST_F (MicroscopeSrc, ReportsOneFrameOfLatencyWhenLive)
{
  start ("name=src", "video/x-raw,format=RGB,width=64,height=48,framerate=25/1");
  pull ();
  GstQuery *q = gst_query_new_latency ();
  ASSERT_TRUE (gst_pad_peer_query (h_->sinkpad, q));
  gboolean live;
  GstClockTime min, max;
  gst_query_parse_latency (q, &live, &min, &max);
  EXPECT_TRUE (live);
  EXPECT_EQ (min, GST_SECOND / 25);
  gst_query_unref (q);
}

// ---- bad input: errors on the bus -------------------------------------

namespace {

struct BusResult {
  bool error = false;
  std::string error_text, warning_text;
};

// Runs a pipeline until the first error, EOS or `seconds`.
BusResult
run_pipeline (const std::string &description, double seconds = 10)
{
  BusResult r;
  GError *err = nullptr;
  GstElement *p = gst_parse_launch (description.c_str (), &err);
  EXPECT_NE (p, nullptr) << (err ? err->message : "");
  if (err)
    g_error_free (err);
  if (!p)
    return r;
  gst_element_set_state (p, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus (p);
  gint64 deadline = g_get_monotonic_time () + (gint64)(seconds * 1e6);
  while (g_get_monotonic_time () < deadline) {
    GstMessage *m = gst_bus_timed_pop_filtered (
        bus, 100 * GST_MSECOND, (GstMessageType)(GST_MESSAGE_ERROR | GST_MESSAGE_EOS | GST_MESSAGE_WARNING));
    if (!m)
      continue;
    GError *e = nullptr;
    bool stop = false;
    if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR) {
      gst_message_parse_error (m, &e, nullptr);
      r.error = true;
      r.error_text = e->message;
      stop = true;
    } else if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_WARNING) {
      gst_message_parse_warning (m, &e, nullptr);
      r.warning_text += e->message;
    } else {
      stop = true;
    }
    if (e)
      g_error_free (e);
    gst_message_unref (m);
    if (stop)
      break;
  }
  gst_object_unref (bus);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (p);
  return r;
}

} // namespace

struct BadInputCase {
  std::string pipeline;
  std::vector<std::string> expected; // substrings of the error message
};

class MicroscopeSrcBadInput : public ::testing::TestWithParam<BadInputCase> {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }
};

TEST_P (MicroscopeSrcBadInput, PostsAnErrorNamingTheProblem)
{
  const BadInputCase &c = GetParam ();
  BusResult r = run_pipeline (c.pipeline);
  ASSERT_TRUE (r.error) << c.pipeline;
  for (const auto &s : c.expected)
    EXPECT_NE (r.error_text.find (s), std::string::npos)
        << "error '" << r.error_text << "' should mention '" << s << "'";
}

INSTANTIATE_TEST_SUITE_P (
    Errors, MicroscopeSrcBadInput,
    ::testing::Values (BadInputCase{"microscopesrc microscope=sim:///nonexistent/slide.svs ! fakesink",
                                    {"/nonexistent/slide.svs", "does not exist"}},
                       BadInputCase{"microscopesrc microscope=foo://bar ! fakesink",
                                    {"unknown microscope URI scheme 'foo'"}},
                       BadInputCase{"microscopesrc microscope=sim://synthetic?noise=99 ! fakesink",
                                    {"noise=99", "[0, 50]"}},
                       BadInputCase{"microscopesrc x-um=90000 ! fakesink", {"90000", "[0, 75000]"}},
                       BadInputCase{"microscopesrc z-um=5000 ! fakesink", {"5000", "[0, 2000]"}},
                       BadInputCase{"microscopesrc objective=60 ! fakesink", {"60x", "4x, 10x, 20x, 40x"}}));

// Caps an application sets after linking (gst-launch-1.0 refuses such a link
// itself, see below): negotiation fails with a message naming both sides.
TEST (MicroscopeSrcCaps, ImpossibleCapsRequestNamesWhatWasAskedAndWhatIsOffered)
{
  gst_init (nullptr, nullptr);
  for (const char *wanted :
       {"video/x-raw,format=YUV9", "video/x-raw,width=10000", "video/x-raw,framerate=0/1", "image/jpeg"}) {
    GstElement *p = gst_pipeline_new (nullptr);
    GstElement *src = gst_element_factory_make ("microscopesrc", nullptr);
    GstElement *filter = gst_element_factory_make ("capsfilter", nullptr);
    GstElement *sink = gst_element_factory_make ("fakesink", nullptr);
    gst_bin_add_many (GST_BIN (p), src, filter, sink, nullptr);
    ASSERT_TRUE (gst_element_link_many (src, filter, sink, nullptr));
    GstCaps *caps = gst_caps_from_string (wanted);
    g_object_set (filter, "caps", caps, nullptr);
    gst_caps_unref (caps);
    gst_element_set_state (p, GST_STATE_PLAYING);
    GstBus *bus = gst_element_get_bus (p);
    GstMessage *m = gst_bus_timed_pop_filtered (bus, 10 * GST_SECOND, GST_MESSAGE_ERROR);
    ASSERT_NE (m, nullptr) << wanted;
    GError *e = nullptr;
    gst_message_parse_error (m, &e, nullptr);
    std::string text = e->message;
    EXPECT_NE (text.find ("cannot produce the requested video"), std::string::npos) << text;
    EXPECT_NE (text.find ("8192"), std::string::npos) << text;
    g_error_free (e);
    gst_message_unref (m);
    gst_object_unref (bus);
    gst_element_set_state (p, GST_STATE_NULL);
    gst_object_unref (p);
  }
}

TEST (MicroscopeSrcFiles, CorruptSlideFileNamesThePath)
{
  gst_init (nullptr, nullptr);
  livemicro::test::TempDir dir;
  std::string path = dir.file ("corrupt.svs");
  std::ofstream (path) << "II*\0 definitely not a slide";
  BusResult r = run_pipeline ("microscopesrc microscope=sim://" + path + " ! fakesink");
  ASSERT_TRUE (r.error);
  EXPECT_NE (r.error_text.find (path), std::string::npos) << r.error_text;
  EXPECT_NE (r.error_text.find ("cannot read slide"), std::string::npos) << r.error_text;
}

TEST (MicroscopeSrcWhilePlaying, OutOfRangeMoveWarnsAndTheStageStaysPut)
{
  gst_init (nullptr, nullptr);
  GstElement *p
      = gst_parse_launch ("microscopesrc name=src ! video/x-raw,width=64,height=48 ! fakesink", nullptr);
  ASSERT_NE (p, nullptr);
  ASSERT_NE (gst_element_set_state (p, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
  ASSERT_EQ (gst_element_get_state (p, nullptr, nullptr, 10 * GST_SECOND), GST_STATE_CHANGE_SUCCESS);
  GstElement *src = gst_bin_get_by_name (GST_BIN (p), "src");
  gdouble x_before, x_after;
  g_object_get (src, "x-um", &x_before, nullptr);
  g_object_set (src, "x-um", 123456.0, nullptr);
  GstBus *bus = gst_element_get_bus (p);
  GstMessage *m = gst_bus_timed_pop_filtered (bus, 5 * GST_SECOND,
                                              (GstMessageType)(GST_MESSAGE_WARNING | GST_MESSAGE_ERROR));
  ASSERT_NE (m, nullptr);
  EXPECT_EQ (GST_MESSAGE_TYPE (m), GST_MESSAGE_WARNING) << "streaming goes on";
  GError *e = nullptr;
  gst_message_parse_warning (m, &e, nullptr);
  ASSERT_NE (e, nullptr);
  EXPECT_NE (std::string (e->message).find ("123456"), std::string::npos) << e->message;
  EXPECT_NE (std::string (e->message).find ("[0, 75000]"), std::string::npos) << e->message;
  g_error_free (e);
  gst_message_unref (m);
  g_usleep (100000);
  g_object_get (src, "x-um", &x_after, nullptr);
  EXPECT_DOUBLE_EQ (x_after, x_before);
  GstState state;
  gst_element_get_state (p, &state, nullptr, 0);
  EXPECT_EQ (state, GST_STATE_PLAYING);
  gst_object_unref (bus);
  gst_object_unref (src);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (p);
}

// Idle (nobody watches): one frame per idle interval; clearing idle brings
// the next frame at once (not at the end of the interval) and the full rate
// back, with timestamps that keep increasing on the frame grid.  Bounds are
// generous: the machine running the tests is shared.
TEST (MicroscopeSrcWhilePlaying, IdleSlowsToTheIdleIntervalAndWakesAtOnce)
{
  gst_init (nullptr, nullptr);
  GstElement *p
      = gst_parse_launch ("microscopesrc name=src idle=true idle-interval-ms=20000 "
                          "! video/x-raw,width=64,height=48,framerate=30/1 ! fakesink name=sink sync=false",
                          nullptr);
  ASSERT_NE (p, nullptr);
  struct Seen {
    std::mutex mutex;
    std::vector<GstClockTime> pts;
    std::vector<gint64> at_us;
  } seen;
  GstElement *sink = gst_bin_get_by_name (GST_BIN (p), "sink");
  GstPad *pad = gst_element_get_static_pad (sink, "sink");
  gst_pad_add_probe (
      pad, GST_PAD_PROBE_TYPE_BUFFER,
      [] (GstPad *, GstPadProbeInfo *info, gpointer d) -> GstPadProbeReturn {
        auto *s = static_cast<Seen *> (d);
        std::lock_guard<std::mutex> lock (s->mutex);
        s->pts.push_back (GST_BUFFER_PTS (GST_PAD_PROBE_INFO_BUFFER (info)));
        s->at_us.push_back (g_get_monotonic_time ());
        return GST_PAD_PROBE_OK;
      },
      &seen, nullptr);
  gst_object_unref (pad);
  gst_object_unref (sink);
  auto count = [&seen] {
    std::lock_guard<std::mutex> lock (seen.mutex);
    return seen.pts.size ();
  };
  ASSERT_NE (gst_element_set_state (p, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
  for (int k = 0; k < 200 && count () == 0; k++)
    g_usleep (50000);
  ASSERT_EQ (count (), 1u) << "the first frame comes at once, even idle";
  g_usleep (1500000);
  EXPECT_EQ (count (), 1u) << "idle: no second frame before the 20 s interval";
  GstElement *src = gst_bin_get_by_name (GST_BIN (p), "src");
  const gint64 woken_us = g_get_monotonic_time ();
  g_object_set (src, "idle", FALSE, nullptr);
  for (int k = 0; k < 200 && count () < 2; k++)
    g_usleep (10000);
  ASSERT_GE (count (), 2u);
  {
    std::lock_guard<std::mutex> lock (seen.mutex);
    EXPECT_LT (seen.at_us[1] - woken_us, 1500000) << "the wait ended when idle was cleared";
  }
  g_usleep (2000000);
  EXPECT_GE (count (), 20u) << "full rate again (30 fps for 2 s)";
  {
    std::lock_guard<std::mutex> lock (seen.mutex);
    for (size_t k = 1; k < seen.pts.size (); k++)
      EXPECT_GT (seen.pts[k], seen.pts[k - 1]) << "frame " << k;
    EXPECT_EQ (seen.pts[1] % (GST_SECOND / 30), 0u) << "the woken frame takes a slot of the grid";
  }
  gst_object_unref (src);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (p);
}

// ---- gst-launch-1.0 exits non-zero --------------------------------------

TEST (GstLaunch, BadInputMakesGstLaunchExitNonZeroWithTheMessage)
{
  struct {
    const char *pipeline;
    const char *expected;
  } cases[] = {
      {"microscopesrc microscope=sim:///no/such/slide.svs ! fakesink", "/no/such/slide.svs"},
      {"microscopesrc x-um=-1 y-um=30000 ! fakesink", "30000"},
      {"microscopesrc ! video/x-raw,format=YUV9 ! fakesink", "YUV9"},
      {"microscopesrc ! video/x-raw,width=10000 ! fakesink", "width=(int)10000"},
      {"microscopesrc objective=25 ! fakesink", "25x"},
  };
  for (const auto &c : cases) {
    g_autofree char *cmd = g_strdup_printf ("gst-launch-1.0 -q %s", c.pipeline);
    g_autofree char *out = nullptr;
    g_autofree char *err = nullptr;
    int status = 0;
    g_autoptr (GError) error = nullptr;
    ASSERT_TRUE (g_spawn_command_line_sync (cmd, &out, &err, &status, &error))
        << (error ? error->message : "");
    EXPECT_FALSE (g_spawn_check_wait_status (status, nullptr)) << cmd;
    std::string text = std::string (out ? out : "") + (err ? err : "");
    EXPECT_NE (text.find (c.expected), std::string::npos) << cmd << " printed: " << text;
    EXPECT_EQ (text.find ("CRITICAL"), std::string::npos) << text;
  }
}
