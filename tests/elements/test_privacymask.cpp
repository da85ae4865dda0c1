// privacymask as a GStreamer element: the guest view never shows the slide
// label (real pipelines over microscopesrc, thousands of frames), detected
// QR codes, barcodes and text are masked, the element fails closed, strips
// metas and tags, and refuses bad configuration with a clear error.
#include "printed_codes.h"
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
make_buffer (const cv::Mat &rgb, const hw::FrameRecord *info)
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
    m->objective = (guint)info->objective;
    m->um_per_px = info->um_per_px;
    m->frame_width = (guint)rgb.cols;
    m->frame_height = (guint)rgb.rows;
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
  EXPECT_GE (map.size, (gsize)w * h * 3);
  cv::Mat out = cv::Mat (h, w, CV_8UC3, map.data).clone ();
  gst_buffer_unmap (buf, &map);
  return out;
}

int
black_pixels (const cv::Mat &rgb, const cv::Rect &r)
{
  if (r.empty ())
    return 0;
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
    return (int)std::floor ((lo_um - centre) / upp + n / 2.0);
  };
  int x0 = first (r_um.x, m.stage_x_um, m.frame_width);
  int x1 = first (r_um.x + r_um.width, m.stage_x_um, m.frame_width);
  int y0 = first (r_um.y, m.stage_y_um, m.frame_height);
  int y1 = first (r_um.y + r_um.height, m.stage_y_um, m.frame_height);
  return cv::Rect (cv::Point (x0, y0), cv::Point (x1 + 1, y1 + 1))
         & cv::Rect (0, 0, (int)m.frame_width, (int)m.frame_height);
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
  void TearDown () override { teardown (); }
  void teardown ()
  {
    bus_.reset ();
    if (mask_)
      gst_object_unref (mask_);
    mask_ = nullptr;
    if (h_)
      gst_harness_teardown (h_);
    h_ = nullptr;
  }
  GstHarness *harness (const std::string &props, const char *caps = kRgbCaps)
  {
    GError *err = nullptr;
    GstElement *e = gst_parse_launch (("privacymask " + props).c_str (), &err);
    EXPECT_EQ (err, nullptr) << err->message;
    h_ = gst_harness_new_with_element (e, "sink", "src");
    gst_object_unref (e);
    mask_ = GST_ELEMENT (gst_object_ref (h_->element));
    bus_ = std::make_unique<Bus> (h_->element);
    gst_harness_set_src_caps_str (h_, caps);
    GstCaps *c = gst_caps_from_string (caps);
    GstVideoInfo info;
    EXPECT_TRUE (gst_video_info_from_caps (&info, c));
    gst_caps_unref (c);
    width_ = info.width;
    height_ = info.height;
    return h_;
  }
  // The privacymask element itself (not the harness' bin).
  GstElement *mask () { return mask_; }
  cv::Mat push_pull (GstBuffer *in, GstBuffer **out_buf = nullptr)
  {
    GstBuffer *out = gst_harness_push_and_pull (h_, in);
    EXPECT_NE (out, nullptr);
    cv::Mat rgb = to_rgb (out, width_, height_);
    if (out_buf)
      *out_buf = out;
    else
      gst_buffer_unref (out);
    return rgb;
  }
  GstHarness *h_ = nullptr;
  GstElement *mask_ = nullptr;
  int width_ = kW, height_ = kH;
  std::unique_ptr<Bus> bus_;
};

// The StageMeta geometry of a kW x kH capture.
LivemicroStageMeta
geometry_of (const hw::FrameRecord &info)
{
  LivemicroStageMeta m{};
  m.stage_x_um = info.stage_x_um;
  m.stage_y_um = info.stage_y_um;
  m.um_per_px = info.um_per_px;
  m.frame_width = kW;
  m.frame_height = kH;
  return m;
}

struct Scope {
  std::unique_ptr<hw::Microscope> m;
  explicit Scope (cv::Size size = {kW, kH})
      : m (hw::open_microscope ("sim://synthetic?stage_speed_um_s=100000"))
  {
    m->camera ().configure (size);
  }
  cv::Mat at (int objective, double x, double y, hw::FrameRecord &info)
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

} // namespace

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
    const double upp = 10.0 / obj; // sim: 2.5 µm/px at 4x
    const double fov_w = kW * upp, fov_h = kH * upp;
    // Three fields per second (a frame moves ~3 px at 100 fps); live, so
    // that the path is the same however fast the machine masks.
    const double speed = 3 * fov_w;
    // Half the objectives work along the slide's top edge, half the bottom.
    const bool top = obj == 4 || obj == 20;
    const double edge_y = top ? 0.2 * fov_h : 25000 - 0.2 * fov_h;
    double tx = label.br ().x + 0.7 * fov_w, ty = top ? 2 * fov_h : 25000 - 2 * fov_h;
    std::string desc
        = "microscopesrc name=src objective=" + std::to_string (obj) + " x-um=" + std::to_string (tx)
          + " y-um=" + std::to_string (ty)
          + " microscope=sim://synthetic?stage_speed_um_s=" + std::to_string ((int)speed)
          + " ! video/x-raw,format=RGB,width=320,height=240,framerate=100/1"
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
    double prev_x = 0, prev_y = 0, prev_upp = 0;
    auto jitter = [&] () { return ((int)(rng () % 200) - 100) / 100.0; };
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
          // Beyond the label, its margin (2 px) and the motion margin (the
          // travel since the previous frame), tissue or glass shows: the
          // mask is not a blanket.
          double travel = 0;
          if (m->moving)
            travel = prev_upp == m->um_per_px
                         ? std::hypot (m->stage_x_um - prev_x, m->stage_y_um - prev_y) / m->um_per_px
                         : 64;
          int right = std::min (kW, in_label.br ().x + 2 + (int)std::ceil (travel) + 8);
          if (right < kW) {
            eligible_outside++;
            if (black_pixels (rgb, cv::Rect (right, 0, kW - right, kH)) < (kW - right) * kH / 10)
              clear_outside++;
          }
        }
      }
      prev_x = m->stage_x_um;
      prev_y = m->stage_y_um;
      prev_upp = m->um_per_px;
      if (m->moving)
        moving_frames++;
      per_objective[m->objective]++;
      frames++;
      obj_frames++;
      bool arrived = !m->moving && std::abs (m->stage_x_um - tx) < 2 * m->um_per_px
                     && std::abs (m->stage_y_um - ty) < 2 * m->um_per_px;
      gst_sample_unref (s);
      if (obj_frames == 1 || arrived) {
        switch (leg++ % 5) {
        case 0: // deep into the label
          tx = label.br ().x - (0.6 + 0.4 * std::abs (jitter ())) * fov_w;
          ty = std::clamp (ty + jitter () * fov_h, 0.0, 25000.0);
          break;
        case 1: // out to the tissue side
          tx = label.br ().x + 0.7 * fov_w;
          break;
        case 2: // along the edge, half on the label
          tx = label.br ().x + 0.5 * jitter () * fov_w;
          ty = std::clamp (ty + (top ? 1 : -1) * fov_h, 0.0, 25000.0);
          break;
        case 3: // onto the slide's edge, still on the label
          tx = label.br ().x - 0.3 * fov_w;
          ty = edge_y;
          break;
        default: // back out and away from the edge
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
    std::string why; // the element says why it blanked, as warnings
    GstBus *bus = gst_element_get_bus (p);
    while (GstMessage *w = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING)) {
      GError *e = nullptr;
      gst_message_parse_warning (w, &e, nullptr);
      why += std::string ("\n  ") + e->message;
      g_error_free (e);
      gst_message_unref (w);
    }
    gst_object_unref (bus);
    EXPECT_EQ (blanked, 0u) << "every frame had a valid StageMeta: masked, not blanked (" << obj << "x)"
                            << why;
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
               per_objective[40], label_frames, partial_frames, clear_outside, eligible_outside, label_pixels,
               leaked);
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

// ---- detection in tissue ----------------------------------------------------

namespace {

using livemicro::test::qr_symbol;

// Pastes printed text; returns the mask of every pixel it changed.
cv::Mat
paste_text (cv::Mat &rgb, const std::string &text, cv::Point org, double scale)
{
  cv::Mat before = rgb.clone (), diff;
  cv::putText (rgb, text, org, cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar (20, 20, 24), 2, cv::LINE_AA);
  cv::absdiff (rgb, before, diff);
  cv::cvtColor (diff, diff, cv::COLOR_RGB2GRAY);
  return diff > 0;
}

// Pixels of `where` (8-bit mask) that are not the black fill in `rgb`.
int
shown (const cv::Mat &rgb, const cv::Mat &where)
{
  cv::Mat ch[3];
  cv::split (rgb, ch);
  cv::Mat lit = (ch[0] | ch[1] | ch[2]) > 0;
  return cv::countNonZero (lit & where);
}

// Pastes a QR code; returns the symbol's rectangle (its dark modules,
// without the white quiet zone, which carries nothing).
cv::Rect
paste_qr (cv::Mat &rgb, const cv::Mat &qr, cv::Point at)
{
  qr.copyTo (rgb (cv::Rect (at, qr.size ())));
  cv::Mat grey;
  cv::cvtColor (qr, grey, cv::COLOR_RGB2GRAY);
  return cv::boundingRect (grey < 128) + at;
}

} // namespace

TEST_F (PrivacyMask, QrCodesAndPrintedTextPastedAnywhereInTissueAreMaskedForGuests)
{
  const int w = 640, h = 480;
  harness ("profile=guest", "video/x-raw,format=RGB,width=640,height=480,framerate=30/1");
  Scope scope ({w, h});
  std::mt19937 rng (2024);
  int objects = 0, fully_masked = 0, tissue_visible = 0;
  for (int k = 0; k < 24; k++) {
    hw::FrameRecord info;
    const int obj = (int[]){10, 20, 40}[k % 3];
    cv::Mat f = scope.at (obj, 28000 + (rng () % 40000), 3000 + (rng () % 19000), info);
    cv::Mat qr = qr_symbol (110 + (int)(rng () % 120), "PID:" + std::to_string (rng ()) + ";NAME:DOE^JANE");
    cv::Rect qr_at
        = paste_qr (f, qr, cv::Point ((int)(rng () % (w - qr.cols)), (int)(rng () % (h / 2 - qr.rows / 2))));
    cv::Mat text = paste_text (f, "DOE, JANE  MRN " + std::to_string (rng () % 100000000),
                               cv::Point ((int)(rng () % (w / 3)), h - 20 - (int)(rng () % (h / 3))),
                               0.6 + (rng () % 60) / 100.0);
    cv::Mat out = push_pull (make_buffer (f, &info));
    objects += 2;
    int qr_shown = qr_at.area () - black_pixels (out, qr_at), text_shown = shown (out, text);
    fully_masked += (qr_shown == 0) + (text_shown == 0);
    EXPECT_EQ (qr_shown, 0) << "frame " << k << ": QR symbol " << qr_at;
    EXPECT_EQ (text_shown, 0) << "frame " << k << ": printed text";
    // Most of the tissue stays visible.
    tissue_visible += black_pixels (out, cv::Rect (0, 0, w, h)) < w * h / 3;
  }
  EXPECT_EQ (fully_masked, objects) << "every pasted QR code and text line is masked entirely";
  EXPECT_GE (tissue_visible, 20) << "and the rest of the tissue is still shown";
}

// ---- print coming into view while the stage moves ---------------------------

namespace {

// Code 128-like bars of varying width on a white strip (a printed specimen
// barcode); returns the bars' rectangle within the strip.
cv::Mat
barcode_strip (cv::Rect &bars)
{
  std::mt19937 rng (9);
  bars = cv::Rect (20, 15, 0, 90);
  cv::Mat strip (bars.height + 30, 260, CV_8UC3, cv::Scalar (250, 250, 250));
  int x = 20;
  while (x < strip.cols - 26) {
    int bw = 2 + (int)(rng () % 3) * 2, gap = 2 + (int)(rng () % 3) * 2;
    strip (cv::Rect (x, 15, bw, bars.height)).setTo (cv::Scalar (20, 20, 20));
    x += bw + gap;
  }
  bars.width = x - 20;
  return strip;
}

} // namespace

class PrivacyMaskModes : public PrivacyMask, public ::testing::WithParamInterface<const char *> {};

// A wide strip of the generated slide with a QR code, a barcode and a line
// of text pasted on the tissue (in slide coordinates: every frame shows them
// where they lie); the stage pans across it, 37 px per frame.  From the
// first frame that shows any of an object (a sliver of a glyph at the edge
// included), none of it is shown, whichever way the detectors run.
TEST_P (PrivacyMaskModes, PrintComingIntoViewIsMaskedInEveryFrameThatShowsIt)
{
  const int w = 640, h = 480, step = 37;
  Scope wide ({2000, h});
  hw::FrameRecord at;
  cv::Mat canvas = wide.at (10, 47000, 9000, at);
  const double upp = at.um_per_px, x0 = at.stage_x_um - 1000 * upp, y0 = at.stage_y_um - h / 2.0 * upp;
  const cv::Rect qr = paste_qr (canvas, qr_symbol (170, "PID:00424242;NAME:DOE^JANE"), {800, 40});
  cv::Rect bars;
  cv::Mat strip = barcode_strip (bars);
  strip.copyTo (canvas (cv::Rect (1150, 300, strip.cols, strip.rows)));
  bars += cv::Point (1150, 300);
  cv::Mat text = cv::Mat::zeros (h, 2000, CV_8U);
  paste_text (canvas, "DOE, JANE  MRN 00424242", {1450, 120}, 0.8).copyTo (text);
  harness (std::string ("profile=guest detection-mode=") + GetParam (),
           "video/x-raw,format=RGB,width=640,height=480,framerate=30/1");
  int frames_showing = 0;
  for (int x = 0; x + w <= canvas.cols; x += step) {
    hw::FrameRecord info = at;
    info.stage_x_um = x0 + (x + w / 2.0) * upp;
    info.stage_y_um = y0 + h / 2.0 * upp;
    GstBuffer *in = make_buffer (canvas (cv::Rect (x, 0, w, h)).clone (), &info);
    livemicro_buffer_get_stage_meta (in)->moving = TRUE;
    cv::Mat out = push_pull (in);
    const cv::Rect view (x, 0, w, h);
    auto visible = [&] (const cv::Rect &r) { return (r & view) - cv::Point (x, 0); };
    int qr_shown = visible (qr).area () - black_pixels (out, visible (qr));
    int bars_shown = visible (bars).area () - black_pixels (out, visible (bars));
    int text_shown = shown (out, text (view));
    frames_showing
        += !visible (qr).empty () || !visible (bars).empty () || cv::countNonZero (text (view)) > 0;
    EXPECT_EQ (qr_shown, 0) << "frame at x=" << x << ": QR code, " << visible (qr).width
                            << " px of it in view";
    EXPECT_EQ (bars_shown, 0) << "frame at x=" << x << ": barcode, " << visible (bars).width << " px in view";
    EXPECT_EQ (text_shown, 0) << "frame at x=" << x << ": text";
  }
  EXPECT_GE (frames_showing, 30);
}

// A still view whose content changes while its StageMeta does not (a slide
// swapped, a stage that does not report its moves): checked area is trusted
// for detection-interval frames, so print that appears is masked within that
// many frames, and from then on.
TEST_P (PrivacyMaskModes, PrintAppearingInAStillViewIsMaskedWithinTheDetectionInterval)
{
  Scope scope;
  hw::FrameRecord info;
  const cv::Mat tissue = scope.at (10, 59600, 11900, info);
  cv::Mat printed = tissue.clone ();
  const cv::Rect qr = paste_qr (printed, qr_symbol (120, "PID:00424242"), {150, 60});
  for (guint interval : {1u, 5u}) {
    harness (std::string ("profile=guest detection-mode=") + GetParam ()
             + " detection-interval=" + std::to_string (interval));
    for (int k = 0; k < 3; k++)
      push_pull (make_buffer (tissue, &info));
    int first_masked = -1;
    for (int k = 0; k < 12; k++) {
      cv::Mat out = push_pull (make_buffer (printed, &info));
      bool masked = black_pixels (out, qr) == qr.area ();
      if (masked && first_masked < 0)
        first_masked = k;
      if (first_masked >= 0) {
        EXPECT_TRUE (masked) << "frame " << k << ": stays masked";
      }
    }
    EXPECT_GE (first_masked, 0) << "interval " << interval;
    EXPECT_LT (first_masked, (int)interval) << "interval " << interval;
    teardown ();
  }
}

INSTANTIATE_TEST_SUITE_P (DetectionModes, PrivacyMaskModes, ::testing::Values ("incremental", "full-frame"));

TEST_F (PrivacyMask, OneDimensionalBarcodeInTissueIsMaskedForGuests)
{
  const int w = 640, h = 480;
  harness ("profile=guest", "video/x-raw,format=RGB,width=640,height=480,framerate=30/1");
  Scope scope ({w, h});
  hw::FrameRecord info;
  cv::Mat f = scope.at (20, 47000, 9000, info);
  // Code 128-like bars of varying width (a printed specimen barcode).
  std::mt19937 rng (9);
  cv::Rect bars (180, 160, 0, 110);
  cv::Mat strip (bars.height + 30, 300, CV_8UC3, cv::Scalar (250, 250, 250));
  int x = 20;
  while (x < strip.cols - 26) {
    int bw = 2 + (int)(rng () % 3) * 2, gap = 2 + (int)(rng () % 3) * 2;
    strip (cv::Rect (x, 15, bw, bars.height)).setTo (cv::Scalar (20, 20, 20));
    x += bw + gap;
  }
  strip.copyTo (f (cv::Rect (bars.x - 20, bars.y - 15, strip.cols, strip.rows)));
  bars.width = x - 20;
  cv::Mat out = push_pull (make_buffer (f, &info));
  EXPECT_EQ (black_pixels (out, bars), bars.area ());
  gchar *regions = nullptr;
  g_object_get (mask (), "regions", &regions, nullptr);
  EXPECT_NE (std::string (regions).find ("\"class\":\"barcode\""), std::string::npos) << regions;
  g_free (regions);
}

TEST_F (PrivacyMask, OwnerSeesTheFrameAsCapturedAndConsultantsSeeTissueText)
{
  Scope scope;
  hw::FrameRecord info;
  cv::Mat f = scope.at (10, 59600, 11900, info); // dense tissue
  const cv::Rect text = cv::boundingRect (paste_text (f, "MRN 1234", cv::Point (40, 200), 0.6));
  harness ("profile=owner");
  cv::Mat out = push_pull (make_buffer (f, &info));
  EXPECT_EQ (cv::norm (out, f, cv::NORM_INF), 0) << "owner: untouched";
  gst_harness_teardown (h_);
  h_ = nullptr;
  harness ("profile=consultant");
  out = push_pull (make_buffer (f, &info));
  EXPECT_EQ (cv::norm (out (text), f (text), cv::NORM_INF), 0) << "consultant: tissue text shown";
  // ... and the label masked.
  cv::Mat label = scope.at (10, 19900, 9000, info);
  out = push_pull (make_buffer (label, &info));
  cv::Rect in = touching (geometry_of (info), cv::Rect2d (0, 0, 20000, 25000));
  ASSERT_GT (in.area (), kW * kH / 3);
  EXPECT_EQ (black_pixels (out, in), in.area ());
}

// ---- fail closed --------------------------------------------------------

TEST_F (PrivacyMask, MissingStageMetaBlanksTheWholeFrameAndWarns)
{
  Scope scope;
  hw::FrameRecord info;
  cv::Mat tissue = scope.at (10, 47000, 9000, info);
  for (const char *profile : {"guest", "consultant", "trainee"}) {
    harness (std::string ("profile=") + profile);
    cv::Mat out = push_pull (make_buffer (tissue, nullptr));
    EXPECT_EQ (black_pixels (out, cv::Rect (0, 0, kW, kH)), kW * kH) << profile;
    std::string w = bus_->next (GST_MESSAGE_WARNING);
    EXPECT_NE (w.find ("no StageMeta"), std::string::npos) << w;
    EXPECT_NE (w.find ("blanked"), std::string::npos) << w;
    // A frame with its StageMeta is shown again (tissue, unmasked).
    out = push_pull (make_buffer (tissue, &info));
    EXPECT_LT (black_pixels (out, cv::Rect (0, 0, kW, kH)), kW * kH / 10) << profile;
    guint64 blanked = 0;
    g_object_get (mask (), "blanked-frames", &blanked, nullptr);
    EXPECT_EQ (blanked, 1u);
    teardown ();
  }
  // The owner masks nothing and needs no StageMeta.
  harness ("profile=owner");
  cv::Mat out = push_pull (make_buffer (tissue, nullptr));
  EXPECT_EQ (cv::norm (out, tissue, cv::NORM_INF), 0);
}

TEST_F (PrivacyMask, InvalidStageMetaBlanksTheFrame)
{
  Scope scope;
  hw::FrameRecord info;
  cv::Mat tissue = scope.at (10, 47000, 9000, info);
  harness ("profile=guest");
  info.um_per_px = 0;
  cv::Mat out = push_pull (make_buffer (tissue, &info));
  EXPECT_EQ (black_pixels (out, cv::Rect (0, 0, kW, kH)), kW * kH);
  EXPECT_NE (bus_->next (GST_MESSAGE_WARNING).find ("invalid StageMeta"), std::string::npos);
}

TEST_F (PrivacyMask, DetectorFailureBlanksTheWholeFrameAndWarns)
{
  Scope scope;
  hw::FrameRecord info;
  cv::Mat tissue = scope.at (10, 47000, 9000, info);
  g_setenv ("LIVEMICRO_PRIVACY_INJECT_FAULT", "detect", TRUE);
  harness ("profile=guest");
  cv::Mat out = push_pull (make_buffer (tissue, &info));
  g_unsetenv ("LIVEMICRO_PRIVACY_INJECT_FAULT");
  EXPECT_EQ (black_pixels (out, cv::Rect (0, 0, kW, kH)), kW * kH);
  std::string w = bus_->next (GST_MESSAGE_WARNING);
  EXPECT_NE (w.find ("detection failed"), std::string::npos) << w;
  EXPECT_NE (w.find ("injected detector fault"), std::string::npos) << w;
}

TEST_F (PrivacyMask, CapsChangeUnderTheMaskBlanksUntilTheStageMetaAgrees)
{
  Scope scope;
  hw::FrameRecord info;
  cv::Mat f = scope.at (10, 47000, 9000, info);
  harness ("profile=consultant");
  push_pull (make_buffer (f, &info));
  // Caps go to 640x480, a buffer still says 320x240 in its StageMeta.
  gst_harness_set_src_caps_str (h_, "video/x-raw,format=RGB,width=640,height=480,framerate=30/1");
  cv::Mat big;
  cv::resize (f, big, cv::Size (640, 480));
  GstBuffer *in = make_buffer (big, &info);
  LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (in);
  m->frame_width = kW;
  m->frame_height = kH;
  GstBuffer *out = gst_harness_push_and_pull (h_, in);
  cv::Mat rgb = to_rgb (out, 640, 480);
  gst_buffer_unref (out);
  EXPECT_EQ (black_pixels (rgb, cv::Rect (0, 0, 640, 480)), 640 * 480);
  std::string w = bus_->next (GST_MESSAGE_WARNING);
  EXPECT_NE (w.find ("caps changed from 320x240 RGB to 640x480 RGB"), std::string::npos) << w;
  EXPECT_NE (w.find ("StageMeta describes a 320x240 frame"), std::string::npos) << w;
  // With a matching StageMeta the new size is masked, not blanked.
  in = make_buffer (big, &info);
  m = livemicro_buffer_get_stage_meta (in);
  m->um_per_px = info.um_per_px / 2;
  out = gst_harness_push_and_pull (h_, in);
  rgb = to_rgb (out, 640, 480);
  gst_buffer_unref (out);
  EXPECT_LT (black_pixels (rgb, cv::Rect (0, 0, 640, 480)), 640 * 48);
}

// ---- metadata hygiene -----------------------------------------------------

namespace {

// Stands in for issue 3's FeaturesMeta: registered by API name only, as the
// strip list knows it.
struct FakeFeaturesMeta {
  GstMeta meta;
  int nuclei;
};

GType
fake_features_api ()
{
  static GType t = 0;
  static const gchar *tags[] = {nullptr};
  if (g_once_init_enter (&t))
    g_once_init_leave (&t, gst_meta_api_type_register ("LivemicroFeaturesMetaAPI", tags));
  return t;
}

const GstMetaInfo *
fake_features_info ()
{
  static const GstMetaInfo *info = nullptr;
  if (g_once_init_enter ((GstMetaInfo **)&info)) {
    const GstMetaInfo *i = gst_meta_register (
        fake_features_api (), "TestFakeFeaturesMeta", sizeof (FakeFeaturesMeta),
        [] (GstMeta *, gpointer, GstBuffer *) -> gboolean { return TRUE; }, nullptr,
        [] (GstBuffer *dest, GstMeta *meta, GstBuffer *, GQuark, gpointer) -> gboolean {
          auto *d = (FakeFeaturesMeta *)gst_buffer_add_meta (dest, fake_features_info (), nullptr);
          d->nuclei = ((FakeFeaturesMeta *)meta)->nuclei;
          return TRUE;
        });
    g_once_init_leave ((GstMetaInfo **)&info, (GstMetaInfo *)i);
  }
  return info;
}

} // namespace

TEST_F (PrivacyMask, GuestLosesAnalysisMetasAndCaptureTimeButKeepsGeometry)
{
  Scope scope;
  hw::FrameRecord info;
  cv::Mat f = scope.at (10, 47000, 9000, info);
  for (const char *profile : {"owner", "consultant", "guest"}) {
    harness (std::string ("profile=") + profile);
    GstBuffer *in = make_buffer (f, &info);
    ((FakeFeaturesMeta *)gst_buffer_add_meta (in, fake_features_info (), nullptr))->nuclei = 7;
    gst_buffer_add_reference_timestamp_meta (in, gst_caps_new_empty_simple ("timestamp/x-unix"), 12345,
                                             GST_CLOCK_TIME_NONE);
    GstBuffer *out = nullptr;
    push_pull (in, &out);
    bool guest = std::string (profile) == "guest";
    EXPECT_EQ (gst_buffer_get_meta (out, fake_features_api ()) == nullptr, guest) << profile;
    EXPECT_EQ (gst_buffer_get_meta (out, GST_REFERENCE_TIMESTAMP_META_API_TYPE) == nullptr, guest) << profile;
    LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (out);
    ASSERT_NE (m, nullptr) << profile << ": viewers need the geometry for pointers";
    EXPECT_DOUBLE_EQ (m->stage_x_um, info.stage_x_um);
    EXPECT_DOUBLE_EQ (m->um_per_px, info.um_per_px);
    EXPECT_EQ (m->capture_unix_us == 0, guest) << profile;
    EXPECT_EQ (m->frame_number == 0, guest || info.frame_number == 0) << profile;
    gst_buffer_unref (out);
    teardown ();
  }
}

TEST_F (PrivacyMask, PatientTagsNeverLeaveTheGuestView)
{
  for (const char *profile : {"owner", "guest"}) {
    harness (std::string ("profile=") + profile);
    gst_harness_play (h_);
    GstTagList *tags = gst_tag_list_new (GST_TAG_TITLE, "DOE, JANE 1950-01-02", GST_TAG_COMMENT,
                                         "MRN 00424242", GST_TAG_VIDEO_CODEC, "raw", nullptr);
    ASSERT_TRUE (gst_harness_push_event (h_, gst_event_new_tag (tags)));
    GstEvent *e;
    GstTagList *seen = nullptr;
    while ((e = gst_harness_try_pull_event (h_))) {
      if (GST_EVENT_TYPE (e) == GST_EVENT_TAG) {
        GstTagList *t;
        gst_event_parse_tag (e, &t);
        seen = gst_tag_list_copy (t);
      }
      gst_event_unref (e);
    }
    ASSERT_NE (seen, nullptr) << profile;
    gchar *s = nullptr;
    bool guest = std::string (profile) == "guest";
    EXPECT_EQ (gst_tag_list_get_string (seen, GST_TAG_TITLE, &s), !guest) << profile;
    g_free (s);
    s = nullptr;
    EXPECT_EQ (gst_tag_list_get_string (seen, GST_TAG_COMMENT, &s), !guest) << profile;
    g_free (s);
    s = nullptr;
    EXPECT_TRUE (gst_tag_list_get_string (seen, GST_TAG_VIDEO_CODEC, &s)) << profile;
    g_free (s);
    gst_tag_list_unref (seen);
    teardown ();
  }
}

// ---- regions are listed -----------------------------------------------------

TEST_F (PrivacyMask, FoundRegionsAreRememberedInSlideCoordinatesAndPosted)
{
  Scope scope;
  hw::FrameRecord info;
  // 4x over the QR code of the label (ground truth), label regions off so
  // only what detection found is masked.
  const cv::Rect2d qr_um = hw::sim::SyntheticSlide ().label ().qr_rect_um;
  livemicro::test::TempDir dir;
  std::ofstream (dir.file ("p.json")) << R"({"profiles": [{"name": "detect-only",
      "regions": [], "detect": ["qr", "text", "label"]}]})";
  cv::Mat f = scope.at (4, qr_um.x + qr_um.width / 2, qr_um.y + qr_um.height / 2, info);
  harness ("profile=detect-only profiles-location=" + dir.file ("p.json"));
  push_pull (make_buffer (f, &info));
  GstMessage *msg = gst_bus_pop_filtered (bus_->bus, GST_MESSAGE_ELEMENT);
  ASSERT_NE (msg, nullptr);
  const GstStructure *s = gst_message_get_structure (msg);
  EXPECT_TRUE (gst_structure_has_name (s, "privacymask"));
  EXPECT_STREQ (gst_structure_get_string (s, "profile"), "detect-only");
  const GValue *list = gst_structure_get_value (s, "regions");
  ASSERT_NE (list, nullptr);
  ASSERT_GT (gst_value_list_get_size (list), 0u);
  // Together they cover the QR symbol, in slide µm.
  cv::Rect2d all;
  for (guint i = 0; i < gst_value_list_get_size (list); i++) {
    const GstStructure *r = gst_value_get_structure (gst_value_list_get_value (list, i));
    double x, y, w, h;
    ASSERT_TRUE (gst_structure_get (r, "x-um", G_TYPE_DOUBLE, &x, "y-um", G_TYPE_DOUBLE, &y, "width-um",
                                    G_TYPE_DOUBLE, &w, "height-um", G_TYPE_DOUBLE, &h, nullptr));
    all = i == 0 ? cv::Rect2d (x, y, w, h) : (all | cv::Rect2d (x, y, w, h));
  }
  // The symbol (2.1 mm) is larger than this 4x frame (0.8 × 0.6 mm).
  const cv::Rect2d frame_um (info.stage_x_um - kW / 2.0 * info.um_per_px,
                             info.stage_y_um - kH / 2.0 * info.um_per_px, kW * info.um_per_px,
                             kH * info.um_per_px);
  const cv::Rect2d visible = qr_um & frame_um;
  ASSERT_GT (visible.area (), 0.9 * frame_um.area ());
  EXPECT_GE ((all & visible).area (), 0.99 * visible.area ());
  gst_message_unref (msg);
  gchar *json = nullptr;
  g_object_get (mask (), "regions", &json, nullptr);
  EXPECT_NE (std::string (json).find ("\"x_um\""), std::string::npos) << json;
  g_free (json);
  // Remembered in slide coordinates: the stage moves on, then comes back to
  // a view where the detectors find nothing (a plain grey frame stands in
  // for, say, a defocused image); the QR area is still masked.
  cv::Mat elsewhere = scope.at (4, 50000, 12000, info);
  push_pull (make_buffer (elsewhere, &info));
  cv::Mat blank (kH, kW, CV_8UC3, cv::Scalar (200, 200, 200));
  scope.at (4, qr_um.x + qr_um.width / 2, qr_um.y + qr_um.height / 2, info);
  cv::Mat out = push_pull (make_buffer (blank, &info));
  EXPECT_EQ (black_pixels (out, cv::Rect (0, 0, kW, kH)), kW * kH)
      << "the whole 4x frame lies inside the remembered QR region";
}

// ---- formats and methods ----------------------------------------------------

TEST_F (PrivacyMask, LabelIsMaskedInEveryPlaneOfI420)
{
  harness ("profile=consultant", "video/x-raw,format=I420,width=320,height=240,framerate=30/1");
  Scope scope;
  hw::FrameRecord info;
  cv::Mat f = scope.at (10, 20000, 9000, info); // left half on the label
  cv::Mat yuv;
  cv::cvtColor (f, yuv, cv::COLOR_RGB2YUV_I420);
  GstBuffer *in = gst_buffer_new_allocate (nullptr, yuv.total (), nullptr);
  gst_buffer_fill (in, 0, yuv.data, yuv.total ());
  LivemicroStageMeta *m = livemicro_buffer_add_stage_meta (in);
  m->stage_x_um = info.stage_x_um;
  m->stage_y_um = info.stage_y_um;
  m->um_per_px = info.um_per_px;
  m->frame_width = kW;
  m->frame_height = kH;
  GstBuffer *out = gst_harness_push_and_pull (h_, in);
  GstMapInfo map;
  gst_buffer_map (out, &map, GST_MAP_READ);
  cv::Mat y (kH, kW, CV_8U, map.data);
  cv::Mat u (kH / 2, kW / 2, CV_8U, map.data + kW * kH);
  cv::Mat v (kH / 2, kW / 2, CV_8U, map.data + kW * kH + kW * kH / 4);
  cv::Rect in_label = touching (*m, cv::Rect2d (0, 0, 20000, 25000));
  ASSERT_GE (in_label.width, kW / 2);
  EXPECT_EQ (cv::countNonZero (y (in_label) != 16), 0);
  cv::Rect c (0, 0, kW / 4, kH / 2);
  EXPECT_EQ (cv::countNonZero (u (c) != 128), 0);
  EXPECT_EQ (cv::countNonZero (v (c) != 128), 0);
  EXPECT_GT (cv::mean (y (cv::Rect (kW / 2 + 8, 0, kW / 2 - 8, kH)))[0], 100) << "glass shown";
  gst_buffer_unmap (out, &map);
  gst_buffer_unref (out);
}

// The detectors see every format the element takes (each converted only
// where they look): a QR code and a line of text in tissue are masked.
// Long by nature: one frame built, masked and checked pixel by pixel, in order.
TEST_P (PrivacyMaskModes, PastedPrintIsMaskedInEveryFormat)
{
  const int w = 640, h = 480;
  Scope scope ({w, h});
  hw::FrameRecord info;
  cv::Mat rgb = scope.at (20, 52000, 9000, info);
  const cv::Rect qr = paste_qr (rgb, qr_symbol (150, "PID:00424242;NAME:DOE^JANE"), {60, 50});
  const cv::Mat text = paste_text (rgb, "DOE, JANE  MRN 00424242", {260, 400}, 0.8);
  for (const char *format : {"RGB", "BGR", "BGRx", "RGBA", "xRGB", "I420", "NV12", "GRAY8"}) {
    const std::string f = format;
    harness (std::string ("profile=guest detection-mode=") + GetParam (),
             ("video/x-raw,format=" + f + ",width=640,height=480,framerate=30/1").c_str ());
    cv::Mat data;
    if (f == "RGB")
      data = rgb;
    else if (f == "BGR")
      cv::cvtColor (rgb, data, cv::COLOR_RGB2BGR);
    else if (f == "BGRx")
      cv::cvtColor (rgb, data, cv::COLOR_RGB2BGRA);
    else if (f == "RGBA")
      cv::cvtColor (rgb, data, cv::COLOR_RGB2RGBA);
    else if (f == "xRGB") {
      cv::Mat rgba;
      cv::cvtColor (rgb, rgba, cv::COLOR_RGB2RGBA);
      data.create (rgb.size (), CV_8UC4);
      const int from_to[] = {3, 0, 0, 1, 1, 2, 2, 3};
      cv::mixChannels (&rgba, 1, &data, 1, from_to, 4);
    } else if (f == "GRAY8")
      cv::cvtColor (rgb, data, cv::COLOR_RGB2GRAY);
    else {
      cv::cvtColor (rgb, data, cv::COLOR_RGB2YUV_I420);
      if (f == "NV12") { // interleave U and V
        cv::Mat nv12 = data.clone ();
        const uchar *u = data.ptr (h), *v = u + w * h / 4;
        uchar *uv = nv12.ptr (h);
        for (int k = 0; k < w * h / 4; k++) {
          uv[2 * k] = u[k];
          uv[2 * k + 1] = v[k];
        }
        data = nv12;
      }
    }
    const size_t size = data.total () * data.elemSize ();
    GstBuffer *in = gst_buffer_new_allocate (nullptr, size, nullptr);
    gst_buffer_fill (in, 0, data.data, size);
    LivemicroStageMeta *m = livemicro_buffer_add_stage_meta (in);
    m->stage_x_um = info.stage_x_um;
    m->stage_y_um = info.stage_y_um;
    m->um_per_px = info.um_per_px;
    m->frame_width = w;
    m->frame_height = h;
    GstBuffer *out = gst_harness_push_and_pull (h_, in);
    GstMapInfo map;
    ASSERT_TRUE (gst_buffer_map (out, &map, GST_MAP_READ));
    // The first plane: luma (fill 16) or packed pixels (fill 0, alpha aside).
    const bool yuv = f == "I420" || f == "NV12";
    const int channels = yuv || f == "GRAY8" ? 1 : (int)data.elemSize ();
    cv::Mat plane (h, w, CV_8UC (channels), map.data);
    // Pixels of `r` (where `where` is set, if given) hidden by the fill.
    auto hidden = [&] (const cv::Rect &r, const cv::Mat &where = cv::Mat ()) {
      cv::Mat ch[4];
      cv::split (plane (r), ch);
      int ok = 0;
      for (int y = 0; y < r.height; y++)
        for (int x = 0; x < r.width; x++) {
          if (!where.empty () && !where.at<uchar> (r.y + y, r.x + x))
            continue;
          bool all = true;
          for (int c = 0; c < channels; c++) {
            const bool alpha = (f == "RGBA" && c == 3);
            if (!alpha && ch[c].at<uchar> (y, x) != (yuv ? 16 : 0))
              all = false;
          }
          ok += all;
        }
      return ok;
    };
    EXPECT_EQ (hidden (qr), qr.area ()) << format << ": QR code";
    EXPECT_EQ (hidden (cv::Rect (0, 0, w, h), text), cv::countNonZero (text)) << format << ": text";
    EXPECT_LT (hidden (cv::Rect (0, 0, w, h)), w * h / 2) << format << ": tissue still shown";
    gst_buffer_unmap (out, &map);
    gst_buffer_unref (out);
    teardown ();
  }
}

TEST_F (PrivacyMask, PixelateAndBlurHideTheLabelDifferentlyFromFill)
{
  Scope scope;
  hw::FrameRecord info;
  cv::Mat f = scope.at (4, 5000, 12000, info); // the patient's name lines
  for (const char *method : {"pixelate", "blur"}) {
    harness (std::string ("profile=consultant method=") + method);
    cv::Mat out = push_pull (make_buffer (f, &info));
    EXPECT_LT (black_pixels (out, cv::Rect (0, 0, kW, kH)), kW * kH / 2) << method;
    cv::Mat grey_in, grey_out;
    cv::cvtColor (f, grey_in, cv::COLOR_RGB2GRAY);
    cv::cvtColor (out, grey_out, cv::COLOR_RGB2GRAY);
    // Fine print is gone: far less local detail than the label had.
    cv::Mat lin, lout;
    cv::Laplacian (grey_in, lin, CV_64F);
    cv::Laplacian (grey_out, lout, CV_64F);
    EXPECT_LT (cv::norm (lout), 0.5 * cv::norm (lin)) << method;
    teardown ();
  }
}

TEST_F (PrivacyMask, SwitchingProfilesWhilePlayingNeverUnmasksTheLabel)
{
  harness ("profile=guest");
  gst_harness_play (h_);
  GValue v = G_VALUE_INIT;
  g_value_init (&v, G_TYPE_STRING);
  g_value_set_string (&v, "consultant");
  GstHarnessThread *t = gst_harness_stress_property_start_full (h_, "profile", &v, 0);
  Scope scope;
  hw::FrameRecord info;
  for (int k = 0; k < 40; k++) {
    cv::Mat f = scope.at (10, 19800 + 5 * k, 9000, info); // crossing the label edge
    g_object_set (mask (), "profile", k % 2 ? "guest" : "trainee", nullptr);
    cv::Mat out = push_pull (make_buffer (f, &info));
    cv::Rect in = touching (geometry_of (info), cv::Rect2d (0, 0, 20000, 25000));
    ASSERT_EQ (black_pixels (out, in), in.area ()) << "frame " << k;
  }
  gst_harness_stress_thread_stop (t);
  g_value_unset (&v);
}

// ---- bad configuration --------------------------------------------------------

namespace {

// Starts `privacymask <props>` in a pipeline; returns the error text or "".
std::string
start_error (const std::string &props)
{
  std::string desc = "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=64,height=48 ! "
                     "privacymask "
                     + props + " ! fakesink";
  GError *err = nullptr;
  GstElement *p = gst_parse_launch (desc.c_str (), &err);
  EXPECT_EQ (err, nullptr);
  gst_element_set_state (p, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus (p);
  GstMessage *m = gst_bus_timed_pop_filtered (bus, 10 * GST_SECOND,
                                              (GstMessageType)(GST_MESSAGE_ERROR | GST_MESSAGE_EOS));
  std::string text;
  if (m && GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR) {
    GError *e = nullptr;
    gst_message_parse_error (m, &e, nullptr);
    text = e->message;
    g_error_free (e);
  }
  if (m)
    gst_message_unref (m);
  gst_object_unref (bus);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (p);
  return text;
}

} // namespace

TEST (PrivacyMaskConfig, BadConfigurationIsAnErrorAtStartNamingTheProblem)
{
  gst_init (nullptr, nullptr);
  livemicro::test::TempDir dir;
  std::ofstream (dir.file ("bad.json")) << "{\n  \"profiles\": [\n    {\"name\": \"g\", \"regions\": [],\n"
                                           "     \"detect\": [\"face\"]}\n  ]\n}\n";
  std::ofstream (dir.file ("broken.json")) << "{\n  \"profiles\": [ {\"name\": \"g\"\n";
  struct {
    std::string props;
    std::vector<std::string> expected;
  } cases[] = {
      {"profile=visitor", {"unknown profile 'visitor'", "owner, consultant, trainee, guest"}},
      {"profile=guest fail-closed=false", {"fail-closed=false", "'guest'"}},
      {"profile=consultant fail-closed=false", {"fail-closed=false", "'consultant'"}},
      {"profiles-location=" + dir.file ("bad.json"),
       {dir.file ("bad.json") + ":4:", "profiles.g.detect[0]", "unknown region class 'face'"}},
      {"profiles-location=" + dir.file ("broken.json"), {dir.file ("broken.json") + ":"}},
      {"profiles-location=/nonexistent/p.json", {"/nonexistent/p.json"}},
      {"profiles-location=" + std::string (LIVEMICRO_SOURCE_DIR "/pipelines/profiles.json")
           + " profile=nobody",
       {"unknown profile 'nobody'", "profiles.json"}},
  };
  for (const auto &c : cases) {
    std::string e = start_error (c.props);
    ASSERT_FALSE (e.empty ()) << c.props << " started";
    for (const auto &s : c.expected)
      EXPECT_NE (e.find (s), std::string::npos) << c.props << ": '" << e << "' lacks '" << s << "'";
  }
  EXPECT_EQ (start_error ("profile=owner fail-closed=false"), "");
  EXPECT_EQ (start_error ("profile=guest profiles-location=" LIVEMICRO_SOURCE_DIR "/pipelines/profiles.json"),
             "");
}

TEST (PrivacyMaskConfig, GstLaunchExitsNonZeroWithTheMessage)
{
  struct {
    const char *pipeline;
    const char *expected;
  } cases[] = {
      {"videotestsrc num-buffers=1 ! privacymask profile=visitor ! fakesink", "unknown profile 'visitor'"},
      {"videotestsrc num-buffers=1 ! privacymask fail-closed=false ! fakesink", "fail-closed=false"},
      {"videotestsrc num-buffers=1 ! privacymask profiles-location=/no/such/profiles.json ! fakesink",
       "/no/such/profiles.json"},
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

TEST_F (PrivacyMask, RefusedChangesWhilePlayingWarnAndChangeNothing)
{
  harness ("profile=guest");
  gst_harness_play (h_);
  g_object_set (mask (), "profile", "visitor", nullptr);
  EXPECT_NE (bus_->next (GST_MESSAGE_WARNING).find ("unknown profile 'visitor'"), std::string::npos);
  g_object_set (mask (), "fail-closed", FALSE, nullptr);
  EXPECT_NE (bus_->next (GST_MESSAGE_WARNING).find ("fail-closed=false"), std::string::npos);
  gchar *profile = nullptr;
  gboolean fail_closed = FALSE;
  g_object_get (mask (), "profile", &profile, "fail-closed", &fail_closed, nullptr);
  EXPECT_STREQ (profile, "guest");
  EXPECT_TRUE (fail_closed);
  g_free (profile);
  // Still masking: a frame without StageMeta is blanked.
  Scope scope;
  hw::FrameRecord info;
  cv::Mat out = push_pull (make_buffer (scope.at (10, 47000, 9000, info), nullptr));
  EXPECT_EQ (black_pixels (out, cv::Rect (0, 0, kW, kH)), kW * kH);
}
