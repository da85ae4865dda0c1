// privacymask as a GStreamer element: the guest view never shows the slide
// label (real pipelines over microscopesrc, thousands of frames), detected
// QR codes, barcodes and text are masked, the element fails closed, strips
// metas and tags, and refuses bad configuration with a clear error.
#include "testutil.h"

#include "sim/synthetic_slide.h"
#include <livemicro/hw/microscope.h>
#include <livemicro/stagemeta.h>

#include <gst/app/gstappsink.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include <fstream>
#include <algorithm>
#include <map>
#include <random>
#include <string>

namespace hw = livemicro::hw;

namespace {

const int kW = 320, kH = 240;
const char *kRgbCaps = "video/x-raw,format=RGB,width=320,height=240,framerate=30/1";

// RGB buffer with a StageMeta from a capture (or none).
GstBuffer *
make_buffer (const cv::Mat &rgb, const hw::CaptureInfo *info)
{
  GstBuffer *buf = gst_buffer_new_allocate (nullptr, rgb.total () * 3, nullptr);
  GstMapInfo map;
  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  cv::Mat dst (rgb.rows, rgb.cols, CV_8UC3, map.data);
  rgb.copyTo (dst);
  gst_buffer_unmap (buf, &map);
  if (info) {
    LivemicroStageMeta *m = livemicro_buffer_add_stage_meta (buf);
    m->stage_x_um = info->stage_x_um;
    m->stage_y_um = info->stage_y_um;
    m->stage_z_um = info->stage_z_um;
    m->objective = (guint) info->objective;
    m->um_per_px = info->um_per_px;
    m->frame_width = (guint) rgb.cols;
    m->frame_height = (guint) rgb.rows;
    m->capture_unix_us = info->capture_unix_us;
    m->frame_number = info->frame_number;
  }
  GST_BUFFER_PTS (buf) = 0;
  return buf;
}

cv::Mat
to_rgb (GstBuffer *buf, int w = kW, int h = kH)
{
  GstMapInfo map;
  EXPECT_TRUE (gst_buffer_map (buf, &map, GST_MAP_READ));
  EXPECT_GE (map.size, (gsize) w * h * 3);
  cv::Mat out = cv::Mat (h, w, CV_8UC3, map.data).clone ();
  gst_buffer_unmap (buf, &map);
  return out;
}

int
black_pixels (const cv::Mat &rgb, const cv::Rect &r)
{
  cv::Mat g;
  cv::cvtColor (rgb (r), g, cv::COLOR_RGB2GRAY);
  cv::Mat nonzero;
  cv::Mat ch[3];
  cv::split (rgb (r), ch);
  cv::Mat any = ch[0] | ch[1] | ch[2];
  return r.area () - cv::countNonZero (any);
}

// The frame rectangle (pixel indices) whose pixel squares touch `r_um`.
cv::Rect
touching (const LivemicroStageMeta &m, const cv::Rect2d &r_um)
{
  const double upp = m.um_per_px;
  auto first = [&] (double lo_um, double centre, guint n) {
    // pixel i covers [c + (i − n/2)·upp, c + (i + 1 − n/2)·upp]
    return (int) std::floor ((lo_um - centre) / upp + n / 2.0);
  };
  int x0 = first (r_um.x, m.stage_x_um, m.frame_width);
  int x1 = first (r_um.x + r_um.width, m.stage_x_um, m.frame_width);
  int y0 = first (r_um.y, m.stage_y_um, m.frame_height);
  int y1 = first (r_um.y + r_um.height, m.stage_y_um, m.frame_height);
  return cv::Rect (cv::Point (x0, y0), cv::Point (x1 + 1, y1 + 1)) &
         cv::Rect (0, 0, (int) m.frame_width, (int) m.frame_height);
}

// Messages from an element's own bus.
struct Bus {
  GstBus *bus;
  explicit Bus (GstElement *e) : bus (gst_bus_new ()) { gst_element_set_bus (e, bus); }
  ~Bus () { gst_object_unref (bus); }
  std::string next (GstMessageType type, GstClockTime timeout = 0)
  {
    GstMessage *m = gst_bus_timed_pop_filtered (bus, timeout, type);
    if (!m)
      return "";
    std::string text = "(message)";
    GError *e = nullptr;
    if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_WARNING)
      gst_message_parse_warning (m, &e, nullptr);
    else if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR)
      gst_message_parse_error (m, &e, nullptr);
    if (e) {
      text = e->message;
      g_error_free (e);
    }
    gst_message_unref (m);
    return text;
  }
};

class PrivacyMask : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }
  void TearDown () override
  {
    bus_.reset ();
    if (h_)
      gst_harness_teardown (h_);
  }
  GstHarness *harness (const std::string &props, const char *caps = kRgbCaps)
  {
    h_ = gst_harness_new_parse (("privacymask " + props).c_str ());
    bus_ = std::make_unique<Bus> (h_->element);
    gst_harness_set_src_caps_str (h_, caps);
    return h_;
  }
  cv::Mat push_pull (GstBuffer *in, GstBuffer **out_buf = nullptr)
  {
    GstBuffer *out = gst_harness_push_and_pull (h_, in);
    EXPECT_NE (out, nullptr);
    cv::Mat rgb = to_rgb (out);
    if (out_buf)
      *out_buf = out;
    else
      gst_buffer_unref (out);
    return rgb;
  }
  GstHarness *h_ = nullptr;
  std::unique_ptr<Bus> bus_;
};

struct Scope {
  std::unique_ptr<hw::Microscope> m;
  explicit Scope (cv::Size size = {kW, kH})
      : m (hw::open_microscope ("sim://synthetic?stage_speed_um_s=100000"))
  {
    m->camera ().configure (size);
  }
  cv::Mat at (int objective, double x, double y, hw::CaptureInfo &info)
  {
    m->turret ().select (objective);
    m->stage ().move_to (x, y);
    while (m->stage ().state ().moving)
      g_usleep (500);
    cv::Mat rgb;
    info = m->camera ().grab (rgb);
    return rgb.clone ();
  }
};

}  // namespace

// ---- the leak test ------------------------------------------------------

// microscopesrc over sim://synthetic drives along paths that enter, cross and
// leave the label at every objective, the stage moving; in the guest view,
// no pixel whose square touches the label (ground truth, mapped with the
// frame's own StageMeta) is anything but the black fill.
TEST (PrivacyMaskLeak, GuestViewNeverShowsOnePixelOfTheLabelOver2000MovingFrames)
{
  gst_init (nullptr, nullptr);
  const cv::Rect2d label = hw::sim::SyntheticSlide ().label ().rect_um;
  ASSERT_EQ (label, cv::Rect2d (0, 0, 20000, 25000));
  std::mt19937 rng (4);
  long frames = 0, moving_frames = 0, label_frames = 0, partial_frames = 0, label_pixels = 0;
  long leaked = 0, clear_outside = 0, eligible_outside = 0;
  std::map<guint, long> per_objective;
  for (int obj : {4, 10, 20, 40}) {
    const double upp = 10.0 / obj;  // sim: 2.5 µm/px at 4x
    const double fov_w = kW * upp, fov_h = kH * upp;
    // Three fields per second (a frame moves ~3 px at 100 fps); live, so
    // that the path is the same however fast the machine masks.
    const double speed = 3 * fov_w;
    // Half the objectives work along the slide's top edge, half the bottom.
    const bool top = obj == 4 || obj == 20;
    const double edge_y = top ? 0.2 * fov_h : 25000 - 0.2 * fov_h;
    double tx = label.br ().x + 0.7 * fov_w, ty = top ? 2 * fov_h : 25000 - 2 * fov_h;
    std::string desc = "microscopesrc name=src objective=" + std::to_string (obj) +
        " x-um=" + std::to_string (tx) + " y-um=" + std::to_string (ty) +
        " microscope=sim://synthetic?stage_speed_um_s=" + std::to_string ((int) speed) +
        " ! video/x-raw,format=RGB,width=320,height=240,framerate=100/1"
        " ! privacymask name=mask profile=guest ! appsink name=sink max-buffers=2 sync=false";
    GstElement *p = gst_parse_launch (desc.c_str (), nullptr);
    ASSERT_NE (p, nullptr);
    GstElement *src = gst_bin_get_by_name (GST_BIN (p), "src");
    GstElement *sink = gst_bin_get_by_name (GST_BIN (p), "sink");
    GstElement *mask = gst_bin_get_by_name (GST_BIN (p), "mask");
    ASSERT_NE (gst_element_set_state (p, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
    // Legs, each about a field and a half: into the label across its edge,
    // out again, along the edge half on the label, onto the slide's edge,
    // with an objective change in the middle of one move.
    int leg = 0;
    long obj_frames = 0;
    auto jitter = [&] () { return ((int) (rng () % 200) - 100) / 100.0; };
    while (obj_frames < 520) {
      GstSample *s = gst_app_sink_try_pull_sample (GST_APP_SINK (sink), 10 * GST_SECOND);
      ASSERT_NE (s, nullptr) << "no frame";
      GstBuffer *buf = gst_sample_get_buffer (s);
      const LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (buf);
      ASSERT_NE (m, nullptr) << "guest keeps the StageMeta geometry";
      EXPECT_EQ (m->capture_unix_us, 0) << "guest: capture time stripped";
      cv::Mat rgb = to_rgb (buf);
      cv::Rect in_label = touching (*m, label);
      if (!in_label.empty ()) {
        int dark = black_pixels (rgb, in_label);
        leaked += in_label.area () - dark;
        label_pixels += in_label.area ();
        label_frames++;
        if (in_label.area () < kW * kH) {
          partial_frames++;
          // Beyond the label, its margin and the motion margin, tissue or
          // glass shows: the mask is not a blanket.
          int right = std::min (kW, in_label.br ().x + 40);
          if (right < kW) {
            eligible_outside++;
            if (black_pixels (rgb, cv::Rect (right, 0, kW - right, kH)) < (kW - right) * kH / 10)
              clear_outside++;
          }
        }
      }
      if (m->moving)
        moving_frames++;
      per_objective[m->objective]++;
      frames++;
      obj_frames++;
      bool arrived = !m->moving && std::abs (m->stage_x_um - tx) < 2 * m->um_per_px &&
                     std::abs (m->stage_y_um - ty) < 2 * m->um_per_px;
      gst_sample_unref (s);
      if (obj_frames == 1 || arrived) {
        switch (leg++ % 5) {
          case 0:  // deep into the label
            tx = label.br ().x - (0.6 + 0.4 * std::abs (jitter ())) * fov_w;
            ty = std::clamp (ty + jitter () * fov_h, 0.0, 25000.0);
            break;
          case 1:  // out to the tissue side
            tx = label.br ().x + 0.7 * fov_w;
            break;
          case 2:  // along the edge, half on the label
            tx = label.br ().x + 0.5 * jitter () * fov_w;
            ty = std::clamp (ty + (top ? 1 : -1) * fov_h, 0.0, 25000.0);
            break;
          case 3:  // onto the slide's edge, still on the label
            tx = label.br ().x - 0.3 * fov_w;
            ty = edge_y;
            break;
          default:  // back out and away from the edge
            tx = label.br ().x + 0.6 * fov_w;
            ty = top ? 2 * fov_h : 25000 - 2 * fov_h;
            break;
        }
        g_object_set (src, "x-um", tx, "y-um", ty, nullptr);
        // Switch objective while the stage moves, and back on the next leg.
        if (leg % 5 == 4)
          g_object_set (src, "objective", obj == 40 ? 20 : obj * 2, nullptr);
        else if (leg % 5 == 0)
          g_object_set (src, "objective", obj, nullptr);
      }
    }
    guint64 blanked = 0;
    g_object_get (mask, "blanked-frames", &blanked, nullptr);
    EXPECT_EQ (blanked, 0u) << "every frame had a valid StageMeta: masked, not blanked";
    gst_element_set_state (p, GST_STATE_NULL);
    gst_object_unref (src);
    gst_object_unref (sink);
    gst_object_unref (mask);
    gst_object_unref (p);
  }
  std::printf ("leak test: %ld frames (%ld moving; 4x %ld, 10x %ld, 20x %ld, 40x %ld), %ld showing "
               "the label (%ld partly; beyond it clear in %ld of %ld), %ld label pixels checked, "
               "%ld leaked\n",
      frames, moving_frames, per_objective[4], per_objective[10], per_objective[20],
      per_objective[40], label_frames, partial_frames, clear_outside, eligible_outside,
      label_pixels, leaked);
  EXPECT_EQ (leaked, 0);
  EXPECT_GE (frames, 2000);
  EXPECT_GE (moving_frames, frames / 2);
  EXPECT_GE (label_frames, frames / 4);
  EXPECT_GE (partial_frames, 100);
  EXPECT_GE (eligible_outside, 100);
  EXPECT_GE (clear_outside, eligible_outside * 9 / 10);
  for (guint obj : {4u, 10u, 20u, 40u})
    EXPECT_GE (per_objective[obj], 300) << obj << "x";
}
