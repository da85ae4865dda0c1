// microscopesrc on real-hardware backends: Aravis' fake GenICam cameras
// (Fake_1 in-process, the GigE Vision fake on 127.0.0.1) and the GRBL
// emulator on a pseudo-terminal — caps from the camera, commands to the
// stage, and devices that go away and come back while PLAYING.
#include "emulator.h"
#include "fake_gv_camera.h"

#include <livemicro/stagemeta.h>

#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <mutex>

using livemicro::test::Emulator;
using livemicro::test::eventually;
using livemicro::test::FakeGvCamera;

namespace {

const bool gst_ready = [] {
  gst_init (nullptr, nullptr);
  return true;
}();

class Pipeline {
public:
  explicit Pipeline (const std::string &desc)
  {
    GError *e = nullptr;
    pipeline_ = gst_parse_launch (desc.c_str (), &e);
    if (e) {
      parse_error_ = e->message;
      g_error_free (e);
    }
    bus_ = gst_element_get_bus (pipeline_);
  }
  ~Pipeline ()
  {
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    drain ();
    gst_object_unref (bus_);
    gst_object_unref (pipeline_);
  }
  GstElement *get (const char *name)
  {
    GstElement *e = gst_bin_get_by_name (GST_BIN (pipeline_), name);
    gst_object_unref (e); // the pipeline keeps it
    return e;
  }
  GstStateChangeReturn play () { return gst_element_set_state (pipeline_, GST_STATE_PLAYING); }
  // Pulls one sample (owned by the caller) within the timeout; collects bus
  // messages.
  GstSample *pull (double timeout_s = 5)
  {
    GstSample *s
        = gst_app_sink_try_pull_sample (GST_APP_SINK (get ("sink")), (GstClockTime)(timeout_s * GST_SECOND));
    drain ();
    return s;
  }
  void drain ()
  {
    while (GstMessage *m = gst_bus_pop (bus_)) {
      GError *e = nullptr;
      if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_WARNING) {
        gst_message_parse_warning (m, &e, nullptr);
        warnings.push_back (e->message);
      } else if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR) {
        gst_message_parse_error (m, &e, nullptr);
        errors.push_back (e->message);
      } else if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ELEMENT
                 && gst_structure_has_name (gst_message_get_structure (m), "microscopesrc")) {
        const GstStructure *s = gst_message_get_structure (m);
        gboolean online = TRUE;
        gst_structure_get_boolean (s, "online", &online);
        health.push_back (std::string (online ? "online " : "offline ") + gst_structure_get_string (s, "part")
                          + " " + gst_structure_get_string (s, "device") + " "
                          + gst_structure_get_string (s, "problem"));
      }
      if (e)
        g_error_free (e);
      gst_message_unref (m);
    }
  }
  bool any_of (const std::vector<std::string> &v, const std::string &part)
  {
    for (auto &s : v)
      if (s.find (part) != std::string::npos)
        return true;
    return false;
  }
  std::vector<std::string> warnings, errors, health;
  std::string parse_error_;

private:
  GstElement *pipeline_ = nullptr;
  GstBus *bus_ = nullptr;
};

const LivemicroStageMeta *
meta_of (GstSample *s)
{
  return livemicro_buffer_get_stage_meta (gst_sample_get_buffer (s));
}

} // namespace

TEST (MicroscopeSrcHw, StreamsAravisFakeCameraAtItsOwnSizeAndRate)
{
  Pipeline p ("microscopesrc name=scope microscope=aravis://Fake_1 ! appsink "
              "name=sink sync=false");
  ASSERT_EQ (p.play (), GST_STATE_CHANGE_ASYNC);
  GstSample *a = p.pull (), *b = p.pull ();
  ASSERT_TRUE (a && b) << (p.errors.empty () ? "" : p.errors[0]);
  GstVideoInfo info;
  ASSERT_TRUE (gst_video_info_from_caps (&info, gst_sample_get_caps (a)));
  EXPECT_EQ (info.width, 512);
  EXPECT_EQ (info.height, 512);
  EXPECT_EQ (info.fps_n, 25);
  ASSERT_NE (meta_of (a), nullptr);
  EXPECT_EQ (meta_of (a)->um_per_px, 1.0);
  EXPECT_GT (meta_of (b)->frame_number, meta_of (a)->frame_number);
  EXPECT_GT (GST_BUFFER_PTS (gst_sample_get_buffer (b)), GST_BUFFER_PTS (gst_sample_get_buffer (a)));
  gboolean online = FALSE;
  g_object_get (p.get ("scope"), "online", &online, nullptr);
  EXPECT_TRUE (online);
  gst_sample_unref (a);
  gst_sample_unref (b);
}

TEST (MicroscopeSrcHw, GstLaunchStreamsAndRefusesSizesTheCameraCannotDeliver)
{
  auto run = [] (const std::string &args, std::string &out) {
    std::string cmd = "gst-launch-1.0 -q " + args + " 2>&1";
    FILE *f = popen (cmd.c_str (), "r");
    char buf[512];
    while (fgets (buf, sizeof buf, f))
      out += buf;
    return pclose (f);
  };
  std::string out;
  EXPECT_EQ (run ("microscopesrc microscope=aravis://Fake_1 num-buffers=5 ! "
                  "videoconvert ! fakesink",
                  out),
             0)
      << out;
  out.clear ();
  EXPECT_NE (run ("microscopesrc microscope=aravis://Fake_1 num-buffers=5 ! "
                  "video/x-raw,width=1280,height=720 ! fakesink",
                  out),
             0);
  EXPECT_NE (out.find ("the microscope aravis://Fake_1 delivers video/x-raw"), std::string::npos) << out;
  EXPECT_NE (out.find ("size 512 x 512, framerate 25/1"), std::string::npos) << out;
  out.clear ();
  EXPECT_NE (run ("microscopesrc microscope=aravis://Nope_3?interface=Fake "
                  "num-buffers=5 ! fakesink",
                  out),
             0);
  EXPECT_NE (out.find ("no GenICam camera 'Nope_3'"), std::string::npos) << out;
}

// Long by nature: one story told in order (commands, each device going away and back).
TEST (MicroscopeSrcHw, CommandsAComposedStageAndSurvivesItsDevicesGoingAway)
{
  FakeGvCamera gv;
  ASSERT_TRUE (gv.running ());
  Emulator emu ("grbl_emulator.py");
  std::string grbl = "grbl://" + emu.link () + "?poll_ms=30%26reconnect_ms=100%26speed_um_s=20000";
  std::string uri = "compose:?camera=aravis://"
                    "127.0.0.1?timeout_ms=500%26reconnect_ms=200&stage="
                    + grbl + "&objectives=10:0.69,40:0.17";
  Pipeline p ("microscopesrc name=scope microscope=\"" + uri
              + "\" x-um=12000 y-um=11000 objective=40 "
                "! appsink name=sink sync=false max-buffers=2 drop=true");
  ASSERT_TRUE (p.parse_error_.empty ()) << p.parse_error_;
  p.play ();
  GstSample *s = p.pull ();
  ASSERT_TRUE (s) << (p.errors.empty () ? "" : p.errors[0]);
  ASSERT_NE (meta_of (s), nullptr);
  EXPECT_NEAR (meta_of (s)->stage_x_um, 12000,
               1); // start position reached before the first frame
  EXPECT_DOUBLE_EQ (meta_of (s)->um_per_px, 0.17);
  gst_sample_unref (s);

  // A move while playing; the frames follow the stage.
  GstElement *scope = p.get ("scope");
  g_object_set (scope, "x-um", 14000.0, nullptr);
  ASSERT_TRUE (eventually (
      [&] {
        GstSample *x = p.pull ();
        bool there = x && meta_of (x) && std::abs (meta_of (x)->stage_x_um - 14000) < 1;
        if (x)
          gst_sample_unref (x);
        return there;
      },
      5));
  // Out of range: a warning, nothing sent.
  size_t mark = emu.mark ();
  g_object_set (scope, "x-um", 900000.0, nullptr);
  p.drain ();
  EXPECT_TRUE (p.any_of (p.warnings, "stage x 900000 µm is outside the travel range")) << p.warnings.size ();
  EXPECT_TRUE (emu.received (mark, "G53").empty ());

  // The stage controller goes away: warning + message, frames go on.
  emu.control ("disconnect");
  ASSERT_TRUE (eventually (
      [&] {
        if (GstSample *x = p.pull (1))
          gst_sample_unref (x);
        return p.any_of (p.health, "offline stage " + grbl.substr (0, 10));
      },
      5))
      << "health messages: " << p.health.size ();
  EXPECT_TRUE (p.any_of (p.warnings, "GRBL controller on " + emu.link () + " is offline"));
  gboolean online = TRUE;
  gchar *reason = nullptr;
  g_object_get (scope, "online", &online, "offline-reason", &reason, nullptr);
  EXPECT_FALSE (online);
  EXPECT_NE (std::string (reason ? reason : "").find ("GRBL controller on"), std::string::npos);
  g_free (reason);
  s = p.pull ();
  ASSERT_TRUE (s);
  EXPECT_NE (meta_of (s), nullptr) << "the camera still streams";
  gst_sample_unref (s);
  emu.control ("connect");
  ASSERT_TRUE (eventually (
      [&] {
        if (GstSample *x = p.pull (1))
          gst_sample_unref (x);
        g_object_get (scope, "online", &online, nullptr);
        return online;
      },
      5));
  EXPECT_TRUE (p.any_of (p.health, "online stage"));

  // The camera goes away: a warning naming it, slate frames without meta.
  gv.unplug ();
  bool slate = false;
  ASSERT_TRUE (eventually (
      [&] {
        GstSample *x = p.pull (1);
        if (x) {
          slate
              = slate
                || (!meta_of (x) && GST_BUFFER_FLAG_IS_SET (gst_sample_get_buffer (x), GST_BUFFER_FLAG_GAP));
          gst_sample_unref (x);
        }
        return slate;
      },
      8));
  EXPECT_TRUE (p.any_of (p.warnings, "camera aravis://127.0.0.1?timeout_ms=500&reconnect_ms=200 is offline"));
  EXPECT_TRUE (p.any_of (p.health, "offline camera aravis://127.0.0.1"));
  ASSERT_TRUE (gv.plug ());
  ASSERT_TRUE (eventually (
      [&] {
        GstSample *x = p.pull (1);
        bool real = x && meta_of (x);
        if (x)
          gst_sample_unref (x);
        return real;
      },
      10))
      << "no real frame after the camera came back";
  EXPECT_TRUE (p.errors.empty ()) << p.errors[0];
}
