// featureoverlay draws an analysis result in slide coordinates: on frames
// taken after the stage moved, the outlines land on the nuclei they belong
// to; nothing is drawn while the result cannot be placed (another objective,
// focus or pixel size, stage moving, too old); the state a viewer's panel
// shows ("updating") is a property and a bus message; the density heat map
// fades where the tissue ends, not at the edges of the frame.
//
// "Slow analysis" is made deterministic with tumorfeatures interval=1000: the
// first frame is analysed (and waits for its result: the caps have no frame
// rate), every later frame carries that one result.  No test here depends on
// how long anything takes.
#include "sim/synthetic_slide.h"

#include <livemicro/analysis/overlay.h>
#include <livemicro/featuresmeta.h>
#include <livemicro/stagemeta.h>

#include <gst/app/gstappsink.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace an = livemicro::analysis;
using livemicro::hw::sim::SyntheticSlide;

namespace {

constexpr int kW = 640, kH = 480;

// Where a frame is taken.  render() snaps the position to the frame's pixel
// grid on the slide, as the virtual microscope does.
struct Shot {
  double x_um = 0, y_um = 0, z_um = 1000;
  int objective = 40;
  double um_per_px = 0.25;
  bool moving = false;
  bool has_stage = true;
};

Shot
at (const SyntheticSlide &slide, double dx_um, double dy_um, int objective = 40)
{
  Shot s;
  s.x_um = slide.home_um ().x + dx_um;
  s.y_um = slide.home_um ().y + dy_um;
  s.objective = objective;
  s.um_per_px = 10.0 / objective;
  return s;
}

cv::Mat
render (const SyntheticSlide &slide, Shot &s)
{
  const long x0 = std::lround (s.x_um / s.um_per_px - kW / 2.0);
  const long y0 = std::lround (s.y_um / s.um_per_px - kH / 2.0);
  s.x_um = (x0 + kW / 2.0) * s.um_per_px;
  s.y_um = (y0 + kH / 2.0) * s.um_per_px;
  cv::Mat rgb;
  slide.render (s.um_per_px, cv::Rect ((int)x0, (int)y0, kW, kH), rgb);
  return rgb.isContinuous () ? rgb : rgb.clone ();
}

GstBuffer *
buffer_of (const cv::Mat &rgb, const Shot &s, GstClockTime pts)
{
  GstBuffer *b = gst_buffer_new_memdup (rgb.data, rgb.total () * rgb.elemSize ());
  GST_BUFFER_PTS (b) = pts;
  if (s.has_stage) {
    LivemicroStageMeta *m = livemicro_buffer_add_stage_meta (b);
    m->stage_x_um = s.x_um;
    m->stage_y_um = s.y_um;
    m->stage_z_um = s.z_um;
    m->objective = (guint)s.objective;
    m->um_per_px = s.um_per_px;
    m->frame_width = (guint)rgb.cols;
    m->frame_height = (guint)rgb.rows;
    m->capture_unix_us = 1700000000000000 + (gint64)(pts / 1000);
    m->moving = s.moving;
  }
  return b;
}

cv::Mat
pixels_of (GstBuffer *b, int w = kW, int h = kH)
{
  GstMapInfo map;
  cv::Mat out;
  if (gst_buffer_map (b, &map, GST_MAP_READ)) {
    cv::Mat (h, w, CV_8UC3, map.data).copyTo (out);
    gst_buffer_unmap (b, &map);
  }
  return out;
}

// Pixels the overlay changed.
cv::Mat
drawn_mask (const cv::Mat &in, const cv::Mat &out)
{
  cv::Mat diff;
  cv::absdiff (in, out, diff);
  cv::cvtColor (diff, diff, cv::COLOR_RGB2GRAY);
  return diff > 0;
}

// The nucleus outlines of a result, in the analysed frame's pixels.
struct Result {
  std::vector<std::vector<cv::Point2f>> contours;
  std::vector<cv::Point2d> slide_um; // centroids
  GstClockTime analysed_pts = GST_CLOCK_TIME_NONE;
};

Result
result_of (GstBuffer *b)
{
  Result r;
  const LivemicroFeaturesMeta *m = livemicro_buffer_get_features_meta (b);
  if (!m)
    return r;
  r.analysed_pts = m->analysed_pts;
  for (guint k = 0; k < m->n_nuclei; k++) {
    std::vector<cv::Point2f> c;
    for (guint q = 0; q < m->nuclei[k].n_contour; q++)
      c.emplace_back (m->nuclei[k].contour[2 * q], m->nuclei[k].contour[2 * q + 1]);
    r.contours.push_back (c);
    r.slide_um.emplace_back (m->nuclei[k].x_um, m->nuclei[k].y_um);
  }
  return r;
}

// Frame b's continuous pixel coordinates of a point of frame a.
cv::Point2d
map_px (const Shot &a, const Shot &b, cv::Point2d p)
{
  const double x = a.x_um + (p.x - kW / 2.0) * a.um_per_px;
  const double y = a.y_um + (p.y - kH / 2.0) * a.um_per_px;
  return {(x - b.x_um) / b.um_per_px + kW / 2.0, (y - b.y_um) / b.um_per_px + kH / 2.0};
}

struct Registration {
  int drawn = 0;       // pixels drawn
  int far = 0;         // of them, farther than the tolerance from the outlines
  double worst_um = 0; // largest distance of a drawn pixel
  double recall = 0;   // share of whole outlines in view that are drawn
  int expected = 0;    // outline pixels of whole nuclei in view
};

// Distances are measured on a canvas with this margin around the frame, so
// that an outline running just outside the frame still counts.
constexpr int kPad = 16;

// Each drawn pixel against the result's outlines carried from frame a to
// frame b through the slide (where they belong on b).
Registration
check_registration (const cv::Mat &drawn, const Result &r, const Shot &a, const Shot &b, double tolerance_um)
{
  cv::Mat outlines = cv::Mat::zeros (kH + 2 * kPad, kW + 2 * kPad, CV_8U);
  cv::Mat whole = cv::Mat::zeros (kH, kW, CV_8U);
  for (const auto &c : r.contours) {
    if (c.size () < 2)
      continue;
    std::vector<cv::Point> pts, padded;
    // Whole: well inside the analysed frame (not cut by it) and this one.
    bool inside_a = true, inside_b = true;
    for (const auto &q : c) {
      inside_a &= q.x > 5 && q.y > 5 && q.x < kW - 5 && q.y < kH - 5;
      cv::Point2d m = map_px (a, b, q);
      inside_b &= m.x > 2 && m.y > 2 && m.x < kW - 2 && m.y < kH - 2;
      pts.emplace_back ((int)std::lround (m.x - 0.5), (int)std::lround (m.y - 0.5));
      padded.push_back (pts.back () + cv::Point (kPad, kPad));
    }
    cv::polylines (outlines, padded, true, 255, 1, cv::LINE_8);
    if (inside_a && inside_b)
      cv::polylines (whole, pts, true, 255, 1, cv::LINE_8);
  }
  cv::Mat dist;
  cv::distanceTransform (outlines == 0, dist, cv::DIST_L2, cv::DIST_MASK_PRECISE);
  Registration out;
  for (int y = 0; y < kH; y++)
    for (int x = 0; x < kW; x++) {
      if (!drawn.at<uchar> (y, x))
        continue;
      out.drawn++;
      const double d = dist.at<float> (y + kPad, x + kPad) * b.um_per_px;
      out.worst_um = std::max (out.worst_um, d);
      out.far += d > tolerance_um;
    }
  cv::Mat near_drawn;
  cv::dilate (drawn, near_drawn, cv::Mat::ones (3, 3, CV_8U));
  out.expected = cv::countNonZero (whole);
  out.recall = out.expected ? (double)cv::countNonZero (whole & near_drawn) / out.expected : 0;
  return out;
}

// Share of drawn pixels within tolerance_um of a ground-truth nucleus
// outline of the generated slide.
double
near_ground_truth (const cv::Mat &drawn, const SyntheticSlide &slide, const Shot &b, double tolerance_um)
{
  const double hw = kW / 2.0 * b.um_per_px, hh = kH / 2.0 * b.um_per_px;
  cv::Mat outlines = cv::Mat::zeros (kH + 2 * kPad, kW + 2 * kPad, CV_8U);
  for (const auto &n :
       slide.nuclei_in (cv::Rect2d (b.x_um - hw - 20, b.y_um - hh - 20, 2 * hw + 40, 2 * hh + 40))) {
    std::vector<cv::Point> pts;
    for (const cv::Point2d &p : n.outline_um (64)) {
      const double x = (p.x - b.x_um) / b.um_per_px + kW / 2.0;
      const double y = (p.y - b.y_um) / b.um_per_px + kH / 2.0;
      pts.emplace_back ((int)std::lround (x - 0.5) + kPad, (int)std::lround (y - 0.5) + kPad);
    }
    cv::polylines (outlines, pts, true, 255, 1, cv::LINE_8);
  }
  cv::Mat dist;
  cv::distanceTransform (outlines == 0, dist, cv::DIST_L2, cv::DIST_MASK_PRECISE);
  int drawn_n = 0, near = 0;
  for (int y = 0; y < kH; y++)
    for (int x = 0; x < kW; x++)
      if (drawn.at<uchar> (y, x)) {
        drawn_n++;
        near += dist.at<float> (y + kPad, x + kPad) * b.um_per_px <= tolerance_um;
      }
  return drawn_n ? (double)near / drawn_n : 0;
}

// The "featureoverlay" messages posted so far.
struct StateMessage {
  std::string state, reason;
  double coverage = -1;
};

std::vector<StateMessage>
pop_state_messages (GstBus *bus)
{
  std::vector<StateMessage> out;
  while (GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT)) {
    const GstStructure *s = gst_message_get_structure (msg);
    if (s && gst_structure_has_name (s, "featureoverlay")) {
      StateMessage m;
      m.state = gst_structure_get_string (s, "state");
      m.reason = gst_structure_get_string (s, "reason");
      gst_structure_get_double (s, "coverage", &m.coverage);
      EXPECT_TRUE (gst_structure_has_field (s, "timestamp"));
      EXPECT_TRUE (gst_structure_has_field (s, "running-time"));
      out.push_back (m);
    }
    gst_message_unref (msg);
  }
  return out;
}

std::string
state_of (GstElement *overlay)
{
  gint v = 0;
  g_object_get (overlay, "state", &v, nullptr);
  GEnumClass *k = G_ENUM_CLASS (g_type_class_ref (g_type_from_name ("GstFeatureOverlayState")));
  std::string nick = g_enum_get_value (k, v)->value_nick;
  g_type_class_unref (k);
  return nick;
}

// tumorfeatures (analysing the first frame only) and featureoverlay in a
// harness, with a bus.
class SlowAnalysis {
public:
  explicit SlowAnalysis (const std::string &overlay_props)
  {
    h = gst_harness_new_parse (("tumorfeatures interval=1000 um-per-px=0.25 ! "
                                "featureoverlay name=overlay "
                                + overlay_props)
                                   .c_str ());
    gst_harness_set_src_caps_str (h, ("video/x-raw,format=RGB,width=" + std::to_string (kW)
                                      + ",height=" + std::to_string (kH) + ",framerate=0/1")
                                         .c_str ());
    bus = gst_bus_new ();
    gst_element_set_bus (h->element, bus);
    overlay = gst_bin_get_by_name (GST_BIN (h->element), "overlay");
  }
  ~SlowAnalysis ()
  {
    gst_element_set_bus (h->element, nullptr);
    gst_object_unref (bus);
    gst_object_unref (overlay);
    gst_harness_teardown (h);
  }
  // Pushes a frame taken at `s`; the frame out and the frame in.
  GstBuffer *push (const cv::Mat &rgb, const Shot &s, GstClockTime pts)
  {
    return gst_harness_push_and_pull (h, buffer_of (rgb, s, pts));
  }
  GstHarness *h;
  GstBus *bus;
  GstElement *overlay;
};

class FeatureOverlay : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }
};

} // namespace

// ---- The placement and density algorithms (plain C++) ----

TEST (Placement, SameFieldMapsOntoItselfAndAStageDeltaShifts)
{
  an::FieldOfView a;
  a.x_um = 30000;
  a.y_um = 12000;
  a.z_um = 1000;
  a.objective = 40;
  a.um_per_px = 0.25;
  a.width_px = 640;
  a.height_px = 480;
  an::Placement same = an::place_result (a, a, 0.5, an::PlacementLimits ());
  ASSERT_TRUE (same.ok ()) << an::unplaced_token (same.why);
  EXPECT_DOUBLE_EQ (same.scale, 1.0);
  EXPECT_NEAR (same.offset.x, 0, 1e-9);
  EXPECT_NEAR (same.offset.y, 0, 1e-9);
  EXPECT_DOUBLE_EQ (same.coverage, 1.0);

  // Stage 10 µm right, 5 µm down: what was at pixel p is now 40 px left, 20 px
  // up.
  an::FieldOfView b = a;
  b.x_um += 10;
  b.y_um += 5;
  an::Placement moved = an::place_result (a, b, 0.5, an::PlacementLimits ());
  ASSERT_TRUE (moved.ok ());
  EXPECT_NEAR (moved.map ({100, 100}).x, 60, 1e-9);
  EXPECT_NEAR (moved.map ({100, 100}).y, 80, 1e-9);
  EXPECT_NEAR (moved.coverage, (600.0 * 460) / (640 * 480), 1e-9);
  // The same slide point either way.
  cv::Point2d slide = a.to_slide_um ({100.5, 37.25});
  cv::Point2d on_b = b.to_frame_px (slide);
  EXPECT_NEAR (moved.map ({100.5, 37.25}).x, on_b.x, 1e-9);
  EXPECT_NEAR (moved.map ({100.5, 37.25}).y, on_b.y, 1e-9);
  EXPECT_EQ (an::edges_in_view (moved, {640, 480}),
             4u | 8u); // right and bottom

  // A half-size frame of the same field (videoscale): coordinates halve.
  an::FieldOfView half = a;
  half.um_per_px = 0.5;
  half.width_px = 320;
  half.height_px = 240;
  an::Placement scaled = an::place_result (half, half, 0, an::PlacementLimits ());
  ASSERT_TRUE (scaled.ok ());
  EXPECT_NEAR (scaled.map ({320, 240}).x, 320, 1e-9);
}

TEST (Placement, NothingPlacedWhenObjectiveFocusPixelSizeAgeOrMotionDiffer)
{
  an::FieldOfView a;
  a.x_um = 30000;
  a.y_um = 12000;
  a.z_um = 1000;
  a.objective = 40;
  a.um_per_px = 0.25;
  a.width_px = 640;
  a.height_px = 480;
  an::PlacementLimits limits;
  limits.max_age_s = 5;
  auto why = [&] (const an::FieldOfView &b, double age) { return an::place_result (a, b, age, limits).why; };
  an::FieldOfView b = a;
  b.objective = 20;
  b.um_per_px = 0.5;
  EXPECT_EQ (why (b, 1), an::Unplaced::kObjective);
  b = a;
  b.um_per_px = 0.26; // a zoom or a recalibration
  EXPECT_EQ (why (b, 1), an::Unplaced::kUmPerPx);
  b = a;
  b.z_um += 2.0; // beyond 40x's 1.7 µm depth of field
  EXPECT_EQ (why (b, 1), an::Unplaced::kFocus);
  b.z_um = a.z_um - 1.5; // within it
  EXPECT_EQ (why (b, 1), an::Unplaced::kNone);
  limits.focus_tolerance_um = 1.0; // a set tolerance wins
  EXPECT_EQ (why (b, 1), an::Unplaced::kFocus);
  limits.focus_tolerance_um = 0;
  b = a;
  EXPECT_EQ (why (b, 5.5), an::Unplaced::kStale);
  EXPECT_EQ (why (b, NAN), an::Unplaced::kStale);
  EXPECT_EQ (why (b, 5.0), an::Unplaced::kNone);
  b.moving = true;
  EXPECT_EQ (why (b, 1), an::Unplaced::kMoving);
  b = a;
  b.x_um += 200; // a whole field away
  EXPECT_EQ (why (b, 1), an::Unplaced::kOutside);
  b = a;
  b.x_um = NAN;
  EXPECT_EQ (why (b, 1), an::Unplaced::kNoStage);
  b = a;
  b.z_um = NAN;
  EXPECT_EQ (why (b, 1), an::Unplaced::kUnknownField);
}

TEST (Placement, DepthOfFieldFollowsTheObjective)
{
  EXPECT_NEAR (an::depth_of_field_um (40, 0.25), 1.69, 0.01);
  EXPECT_NEAR (an::depth_of_field_um (20, 0.5), 4.69, 0.01);
  EXPECT_NEAR (an::depth_of_field_um (10, 1.0), 12.8, 0.01);
  EXPECT_NEAR (an::depth_of_field_um (4, 2.5), 80.0, 0.01);
  // Between the table's entries: between their depths.
  EXPECT_GT (an::depth_of_field_um (60, 0.17), 0.5);
  EXPECT_LT (an::depth_of_field_um (60, 0.17), an::depth_of_field_um (40, 0.25));
  EXPECT_GT (an::typical_numerical_aperture (25), 0.40);
  EXPECT_LT (an::typical_numerical_aperture (25), 0.65);
}

TEST (Placement, OutlinesCutByTheAnalysedFrameAreKnown)
{
  const float cut_left[] = {0.5f, 10, 3, 8, 6, 10, 3, 12, 0.5f, 12};
  const float whole[] = {20, 20, 24, 20, 24, 24, 20, 24};
  EXPECT_EQ (an::cut_edges (cut_left, 5, {640, 480}, 1.0), 1u);
  EXPECT_EQ (an::cut_edges (whole, 4, {640, 480}, 1.0), 0u);
  const float cut_right_bottom[] = {639.5f, 470, 630, 479.5f};
  EXPECT_EQ (an::cut_edges (cut_right_bottom, 2, {640, 480}, 1.0), 4u | 8u);
}

// Nuclei evenly spread over the frame: the density is the same at the
// frame's edges as in its middle; where they stop (the tissue ends) it
// falls to nothing; outside the observed area there is no value.
TEST (Density, FlatToTheFrameEdgesFallingWhereTheNucleiStop)
{
  const double upp = 1.0; // 10x: the 640 px frame is 640 µm wide
  std::vector<cv::Point2d> grid, left_half;
  for (double y = 10; y < kH; y += 20)
    for (double x = 10; x < kW; x += 20) {
      grid.emplace_back (x, y); // one per 400 µm²: 2500 / mm²
      if (x < kW / 2)
        left_half.emplace_back (x, y);
    }
  const cv::Rect2d all (0, 0, kW, kH);
  cv::Mat d = an::nuclear_density_per_mm2 (grid, all, {kW, kH}, upp);
  double lo, hi;
  cv::minMaxLoc (d, &lo, &hi);
  EXPECT_GT (lo, 2500 * 0.9) << "the edges fade";
  EXPECT_LT (hi, 2500 * 1.1);

  cv::Mat t = an::nuclear_density_per_mm2 (left_half, all, {kW, kH}, upp);
  EXPECT_NEAR (t.at<float> (240, 0), 2500, 250); // frame edge: no fade
  EXPECT_NEAR (t.at<float> (0, 100), 2500, 250);
  EXPECT_NEAR (t.at<float> (240, 160), 2500, 250);
  EXPECT_LT (t.at<float> (240, 420),
             2500 * 0.02); // 100 µm past the last nuclei
  EXPECT_LT (t.at<float> (240, 330), t.at<float> (240, 300));

  // Only the left 400 px observed (the stage moved since): no value on the
  // right, no fade at the observed area's edge.
  cv::Mat part = an::nuclear_density_per_mm2 (grid, cv::Rect2d (-240, 0, 640, 480), {kW, kH}, upp);
  EXPECT_TRUE (std::isnan (part.at<float> (240, 420)));
  EXPECT_NEAR (part.at<float> (240, 399), 2500, 250);
  EXPECT_NEAR (part.at<float> (240, 200), 2500, 250);
}

// ---- The element ----

// The scenario: the analysis is slow (one result for the whole
// run), the stage moves several times.  On every frame, every drawn pixel
// is within 2 µm of the outline it belongs to, carried through the slide,
// and the outlines of the nuclei still in view are drawn.
TEST_F (FeatureOverlay, OutlinesStayOnTheirNucleiWhileTheStageMovesAndAnalysisIsSlow)
{
  SyntheticSlide slide;
  SlowAnalysis run ("summary=false heatmap=false color-by=none");
  Shot home = at (slide, 0, 0);
  cv::Mat rgb0 = render (slide, home);
  GstBuffer *out0 = run.push (rgb0, home, 0);
  ASSERT_NE (out0, nullptr);
  const Result r = result_of (out0);
  ASSERT_GT (r.contours.size (), 20u) << "no result on the analysed frame";
  ASSERT_EQ (r.analysed_pts, 0u);
  gst_buffer_unref (out0);

  const std::pair<double, double> moves[]
      = {{0, 0}, {37.5, 21.25}, {-60.0, 35.5}, {80.25, -40.0}, {-20.0, -20.0}, {0, 0}};
  GstClockTime pts = 0;
  for (auto [dx, dy] : moves) {
    SCOPED_TRACE ("stage moved by " + std::to_string (dx) + ", " + std::to_string (dy) + " µm");
    pts += 200 * GST_MSECOND;
    Shot s = at (slide, dx, dy);
    cv::Mat rgb = render (slide, s);
    GstBuffer *out = run.push (rgb, s, pts);
    ASSERT_NE (out, nullptr);
    const LivemicroFeaturesMeta *m = livemicro_buffer_get_features_meta (out);
    ASSERT_NE (m, nullptr);
    EXPECT_FALSE (m->analysed);
    EXPECT_EQ (m->analysed_pts, 0u) << "the slow analysis' one result";
    const cv::Mat drawn = drawn_mask (rgb, pixels_of (out));
    gst_buffer_unref (out);
    const Registration reg = check_registration (drawn, r, home, s, 2.0);
    EXPECT_GT (reg.drawn, 300);
    EXPECT_EQ (reg.far, 0) << "drawn pixels more than 2 µm from their outline; worst " << reg.worst_um
                           << " µm";
    EXPECT_GT (reg.expected, 300);
    EXPECT_GE (reg.recall, 0.95);
    // And against the generated slide's own nuclei.
    const double gt = near_ground_truth (drawn, slide, s, 2.0);
    EXPECT_GE (gt, 0.9) << "share of drawn pixels within 2 µm of a true nucleus outline";
    const std::string want = dx == 0 && dy == 0 ? "current" : "moved";
    EXPECT_EQ (state_of (run.overlay), want);
  }
  auto msgs = pop_state_messages (run.bus);
  // current (analysed frame, then same place) → moved → current: each change
  // once.
  std::vector<std::string> states;
  for (const auto &m : msgs)
    states.push_back (m.state);
  EXPECT_EQ (states, (std::vector<std::string>{"current", "moved", "current"}));
}

// An outline the analysed frame's edge cut would run straight across a
// nucleus that is whole in view after a move: it is left out.
TEST_F (FeatureOverlay, OutlinesCutByTheAnalysedFramesEdgeAreLeftOut)
{
  SyntheticSlide slide;
  SlowAnalysis run ("summary=false heatmap=false color-by=none");
  Shot home = at (slide, 0, 0);
  cv::Mat rgb0 = render (slide, home);
  GstBuffer *out0 = run.push (rgb0, home, 0);
  const Result r = result_of (out0);
  gst_buffer_unref (out0);
  // OpenCV traces an object the frame's edge cuts through the first pixel
  // inside the edge: at 40x (analysis at 0.5 µm/px) x = 3 frame pixels.
  float edge_u = 1e9f;
  for (const auto &c : r.contours)
    for (const auto &p : c)
      edge_u = std::min (edge_u, p.x);
  ASSERT_LE (edge_u, 3.0f);
  int cut_left = 0;
  for (const auto &c : r.contours)
    cut_left += std::any_of (c.begin (), c.end (), [&] (const cv::Point2f &p) { return p.x <= edge_u; });
  ASSERT_GE (cut_left, 2) << "the field has nuclei on its left edge";
  // The stage 40 µm left: the analysed frame's left edge is now at x = 160.
  Shot s = at (slide, -40.0, 0);
  cv::Mat rgb = render (slide, s);
  GstBuffer *out = run.push (rgb, s, 200 * GST_MSECOND);
  const cv::Mat drawn = drawn_mask (rgb, pixels_of (out));
  gst_buffer_unref (out);
  const int field_x = (int)std::lround (map_px (home, s, {0.0, 0}).x);
  ASSERT_EQ (field_x, 160);
  const int edge_x = (int)std::lround (map_px (home, s, {edge_u, 0}).x - 0.5);
  // The cut outlines would run straight down this column.
  int longest = 0;
  for (int x : {edge_x - 1, edge_x, edge_x + 1}) {
    int run_len = 0;
    for (int y = 0; y < kH; y++) {
      run_len = drawn.at<uchar> (y, x) ? run_len + 1 : 0;
      longest = std::max (longest, run_len);
    }
  }
  EXPECT_LE (longest, 4) << "a straight cut drawn along the old frame edge";
  EXPECT_GT (cv::countNonZero (drawn.colRange (edge_x + 2, kW)), 300) << "the rest is drawn";
  EXPECT_EQ (cv::countNonZero (drawn.colRange (0, field_x)), 0) << "nothing left of the analysed field";
}

// Nothing is drawn while the result cannot be placed, and the state says
// why ("updating"); once it can be placed again it is drawn again.
TEST_F (FeatureOverlay, NothingDrawnWhileTheResultCannotBePlaced)
{
  SyntheticSlide slide;
  SlowAnalysis run ("summary=false heatmap=true color-by=none");
  Shot home = at (slide, 0, 0);
  cv::Mat rgb0 = render (slide, home);
  GstBuffer *out0 = run.push (rgb0, home, 0);
  ASSERT_GT (result_of (out0).contours.size (), 20u);
  const cv::Mat drawn0 = drawn_mask (rgb0, pixels_of (out0));
  gst_buffer_unref (out0);
  ASSERT_GT (cv::countNonZero (drawn0), 1000);
  pop_state_messages (run.bus);

  struct Step {
    std::string name;
    Shot shot;
    GstClockTime pts;
    std::string state, reason;
  };
  Shot objective20 = at (slide, 0, 0, 20);
  Shot defocused = home, refocused = home, moving = home, away = at (slide, 400, 0), no_stage = home;
  defocused.z_um += 3.0; // 40x depth of field: 1.7 µm
  refocused.z_um += 1.0;
  moving.moving = true;
  no_stage.has_stage = false;
  const Step steps[] = {
      {"objective changed", objective20, 1 * GST_SECOND, "updating", "objective"},
      {"objective back", home, 2 * GST_SECOND, "current", ""},
      {"focus 3 um away", defocused, 3 * GST_SECOND, "updating", "focus"},
      {"focus 1 um away", refocused, 4 * GST_SECOND, "current", ""},
      {"stage moving", moving, 5 * GST_SECOND, "updating", "moving"},
      {"a field away", away, 6 * GST_SECOND, "updating", "outside"},
      {"no StageMeta", no_stage, 7 * GST_SECOND, "updating", "no-stage"},
      {"back home", home, 8 * GST_SECOND, "current", ""},
      {"older than max-age (10 s)", home, 10 * GST_SECOND + 1, "updating", "stale"},
  };
  for (Step st : steps) {
    SCOPED_TRACE (st.name);
    cv::Mat rgb = render (slide, st.shot);
    GstBuffer *out = run.push (rgb, st.shot, st.pts);
    ASSERT_NE (out, nullptr);
    ASSERT_NE (livemicro_buffer_get_features_meta (out), nullptr);
    EXPECT_EQ (livemicro_buffer_get_features_meta (out)->analysed_pts, 0u);
    const cv::Mat drawn = drawn_mask (rgb, pixels_of (out));
    gst_buffer_unref (out);
    if (st.state == "updating") {
      EXPECT_EQ (cv::countNonZero (drawn), 0) << "drawn although it cannot be placed";
    } else {
      EXPECT_EQ (cv::countNonZero (drawn != drawn0), 0) << "not drawn as on the analysed frame";
    }
    EXPECT_EQ (state_of (run.overlay), st.state);
    auto msgs = pop_state_messages (run.bus);
    ASSERT_EQ (msgs.size (), 1u) << "one message per change";
    EXPECT_EQ (msgs[0].state, st.state);
    EXPECT_EQ (msgs[0].reason, st.reason);
  }
  // A longer max-age draws the same result again; the same state is not posted
  // twice.
  g_object_set (run.overlay, "max-age", (guint64)60 * GST_SECOND, nullptr);
  for (GstClockTime pts : {11 * GST_SECOND, 12 * GST_SECOND}) {
    GstBuffer *out = run.push (rgb0, home, pts);
    EXPECT_EQ (cv::countNonZero (drawn_mask (rgb0, pixels_of (out)) != drawn0), 0);
    gst_buffer_unref (out);
  }
  auto msgs = pop_state_messages (run.bus);
  ASSERT_EQ (msgs.size (), 1u);
  EXPECT_EQ (msgs[0].state, "current");
  EXPECT_NEAR (msgs[0].coverage, 1.0, 1e-6);
}

// The summary panel says "updating" instead of another field's numbers.
TEST_F (FeatureOverlay, SummaryPanelSaysUpdating)
{
  SyntheticSlide slide;
  SlowAnalysis run ("contours=false heatmap=false");
  Shot home = at (slide, 0, 0);
  cv::Mat rgb0 = render (slide, home);
  GstBuffer *out0 = run.push (rgb0, home, 0);
  const cv::Mat panel0 = drawn_mask (rgb0, pixels_of (out0));
  gst_buffer_unref (out0);
  Shot o20 = at (slide, 0, 0, 20);
  cv::Mat rgb = render (slide, o20);
  GstBuffer *out = run.push (rgb, o20, GST_SECOND);
  const cv::Mat panel = drawn_mask (rgb, pixels_of (out));
  gst_buffer_unref (out);
  // Two lines instead of six: a smaller panel, still top-left.
  const cv::Rect box0 = cv::boundingRect (panel0), box = cv::boundingRect (panel);
  EXPECT_GT (box.area (), 1000);
  EXPECT_LT (box.height, box0.height * 0.6);
  EXPECT_LT (box.y, 20);
}

// A leaky queue before the overlay may drop the analysed frame itself: its
// result is still placed when the frames just before and after it agree
// with where its nuclei say it was; when they do not, nothing is drawn.
TEST_F (FeatureOverlay, AnalysedFrameDroppedBeforeTheOverlay)
{
  SyntheticSlide slide;
  const std::string caps = "video/x-raw,format=RGB,width=640,height=480,framerate=0/1";
  for (bool moved_in_the_gap : {false, true}) {
    SCOPED_TRACE (moved_in_the_gap ? "stage moved in the gap" : "stage still");
    GstHarness *tf = gst_harness_new_parse ("tumorfeatures interval=2");
    GstHarness *fo = gst_harness_new_parse ("featureoverlay summary=false heatmap=false");
    gst_harness_set_src_caps_str (tf, caps.c_str ());
    gst_harness_set_src_caps_str (fo, caps.c_str ());
    Shot home = at (slide, 0, 0), there = at (slide, moved_in_the_gap ? 30.0 : 0.0, 0);
    cv::Mat a = render (slide, home), b = render (slide, there);
    // Frame 0 (analysed) and 1 reach the overlay; frame 2 (analysed) is
    // dropped on the way; frame 3 carries frame 2's result.
    const Shot *shots[] = {&home, &home, &there, &there};
    const cv::Mat *frames[] = {&a, &a, &b, &b};
    cv::Mat last_in, last_out;
    for (int k = 0; k < 4; k++) {
      GstBuffer *mid
          = gst_harness_push_and_pull (tf, buffer_of (*frames[k], *shots[k], k * 200 * GST_MSECOND));
      ASSERT_NE (mid, nullptr);
      if (k == 2) {
        gst_buffer_unref (mid);
        continue;
      }
      GstBuffer *out = gst_harness_push_and_pull (fo, mid);
      if (k == 3) {
        const LivemicroFeaturesMeta *m = livemicro_buffer_get_features_meta (out);
        ASSERT_NE (m, nullptr);
        EXPECT_EQ (m->analysed_pts, 400 * GST_MSECOND);
        last_out = pixels_of (out);
      }
      gst_buffer_unref (out);
    }
    const int drawn = cv::countNonZero (drawn_mask (*frames[3], last_out));
    GstElement *overlay = gst_harness_find_element (fo, "featureoverlay");
    if (moved_in_the_gap) {
      EXPECT_EQ (drawn, 0);
      EXPECT_EQ (state_of (overlay), "updating");
    } else {
      EXPECT_GT (drawn, 300);
      EXPECT_EQ (state_of (overlay), "current");
    }
    gst_object_unref (overlay);
    gst_harness_teardown (fo);
    gst_harness_teardown (tf);
  }
}

namespace {

// A grey frame with a hand-made result: nuclei on a grid of `spacing_um`
// where keep(x, y) (analysed-frame pixels) says so.
template <typename Keep>
GstBuffer *
grid_frame (const Shot &s, const Shot &analysed, double spacing_um, GstClockTime pts,
            GstClockTime analysed_pts, Keep keep)
{
  cv::Mat grey (kH, kW, CV_8UC3, cv::Scalar (200, 200, 200));
  GstBuffer *b = buffer_of (grey, s, pts);
  LivemicroFeaturesMeta *m = livemicro_buffer_add_features_meta (b);
  m->analysed = pts == analysed_pts;
  m->analysed_pts = analysed_pts;
  m->quality = LIVEMICRO_FEATURES_QUALITY_OK;
  m->frame_width = kW;
  m->frame_height = kH;
  m->um_per_px = analysed.um_per_px;
  m->working_um_per_px = analysed.um_per_px;
  std::vector<LivemicroNucleus> nuclei;
  const double step = spacing_um / analysed.um_per_px;
  for (double y = step / 2; y < kH; y += step)
    for (double x = step / 2; x < kW; x += step) {
      if (!keep (x, y))
        continue;
      LivemicroNucleus n{};
      n.x_px = (float)x;
      n.y_px = (float)y;
      n.x_um = analysed.x_um + (x - kW / 2.0) * analysed.um_per_px;
      n.y_um = analysed.y_um + (y - kH / 2.0) * analysed.um_per_px;
      n.area_um2 = 30;
      nuclei.push_back (n);
    }
  livemicro_features_meta_set_nuclei (m, nuclei.data (), (guint)nuclei.size ());
  return b;
}

} // namespace

// The density heat map with nuclei everywhere is as strong at the frame's
// edges as in its middle; it fades only where the nuclei (tissue) stop, and
// after a move it tints only what the analysis saw, without fading at the
// edge of that.
TEST_F (FeatureOverlay, HeatMapFadesWhereTheTissueEndsNotAtTheFrameEdges)
{
  GstHarness *h = gst_harness_new_parse ("featureoverlay contours=false summary=false heatmap=true");
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=640,height=480,framerate=5/1");
  Shot s; // 10x: 1 µm per pixel, the frame is 640 × 480 µm
  s.x_um = 30000;
  s.y_um = 12000;
  s.objective = 10;
  s.um_per_px = 1.0;
  auto everywhere = [] (double, double) { return true; };
  auto left_half = [] (double x, double) { return x < kW / 2; };
  const cv::Vec3i grey (200, 200, 200);
  auto tint = [&] (const cv::Mat &img, int x, int y) {
    return cv::norm (cv::Vec3i (img.at<cv::Vec3b> (y, x)) - grey, cv::NORM_INF);
  };
  auto colour_gap = [] (const cv::Mat &img, cv::Point a, cv::Point b) {
    return cv::norm (cv::Vec3i (img.at<cv::Vec3b> (a)) - cv::Vec3i (img.at<cv::Vec3b> (b)), cv::NORM_INF);
  };

  // 2500 nuclei / mm² everywhere: the same colour at every edge and corner.
  GstBuffer *out = gst_harness_push_and_pull (h, grid_frame (s, s, 20.0, 0, 0, everywhere));
  cv::Mat img = pixels_of (out);
  gst_buffer_unref (out);
  const cv::Point centre (320, 240);
  ASSERT_GT (tint (img, 320, 240), 30) << "the heat map tints";
  for (cv::Point p : {cv::Point (0, 0), cv::Point (639, 0), cv::Point (0, 479), cv::Point (639, 479),
                      cv::Point (320, 0), cv::Point (0, 240), cv::Point (639, 240), cv::Point (320, 479)})
    EXPECT_LE (colour_gap (img, p, centre), 8) << "fades at " << p;

  // Nuclei in the left half only: the left edge as strong as the left
  // half's middle, nothing 100 µm past the last nuclei.
  out = gst_harness_push_and_pull (h, grid_frame (s, s, 20.0, GST_SECOND, GST_SECOND, left_half));
  img = pixels_of (out);
  gst_buffer_unref (out);
  EXPECT_LE (colour_gap (img, {0, 240}, {160, 240}), 8);
  EXPECT_LE (colour_gap (img, {0, 0}, {160, 240}), 8);
  EXPECT_EQ (tint (img, 420, 240), 0);
  EXPECT_EQ (cv::countNonZero (
                 drawn_mask (cv::Mat (kH, kW, CV_8UC3, cv::Scalar::all (200)), img).colRange (430, kW)),
             0);

  // The result of a frame 240 µm to the left (the stage moved right since):
  // it covers the left 400 px only; untinted right of that; no fade at its
  // edge.
  Shot before = s;
  before.x_um -= 240;
  gst_buffer_unref (gst_harness_push_and_pull (
      h, grid_frame (before, before, 20.0, 2 * GST_SECOND, 2 * GST_SECOND, everywhere)));
  out = gst_harness_push_and_pull (h,
                                   grid_frame (s, before, 20.0, 3 * GST_SECOND, 2 * GST_SECOND, everywhere));
  img = pixels_of (out);
  gst_buffer_unref (out);
  EXPECT_EQ (cv::countNonZero (
                 drawn_mask (cv::Mat (kH, kW, CV_8UC3, cv::Scalar::all (200)), img).colRange (400, kW)),
             0);
  EXPECT_LE (colour_gap (img, {399, 240}, {200, 240}), 8);
  EXPECT_LE (colour_gap (img, {0, 479}, {200, 240}), 8);
  gst_harness_teardown (h);
}

namespace {

Shot
shot_of (const LivemicroStageMeta *sm)
{
  Shot s;
  s.x_um = sm->stage_x_um;
  s.y_um = sm->stage_y_um;
  s.z_um = sm->stage_z_um;
  s.objective = (int)sm->objective;
  s.um_per_px = sm->um_per_px;
  s.moving = sm->moving;
  return s;
}

// The frames as they enter featureoverlay, by PTS (a pad probe).
struct FramesIn {
  std::mutex mutex;
  std::map<GstClockTime, cv::Mat> frames;

  static GstPadProbeReturn probe (GstPad *, GstPadProbeInfo *info, gpointer data)
  {
    auto *self = static_cast<FramesIn *> (data);
    GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
    cv::Mat rgb = pixels_of (b);
    std::lock_guard<std::mutex> lock (self->mutex);
    self->frames[GST_BUFFER_PTS (b)] = rgb;
    return GST_PAD_PROBE_OK;
  }
  cv::Mat take (GstClockTime pts)
  {
    std::lock_guard<std::mutex> lock (mutex);
    cv::Mat m = frames[pts];
    frames.erase (pts);
    return m;
  }
};

} // namespace

// The same with the virtual microscope driven through microscopesrc's
// properties while the one slow result is carried: move the stage, change
// the objective and back.  On every frame, whatever is drawn lies within
// 2 µm of its nucleus' outline carried through the slide; nothing is drawn
// under the other objective or while the stage moves.
// Long by nature: one story (move, change objective, back) checked frame by frame.
TEST_F (FeatureOverlay, MicroscopeMovesAndChangesObjectiveWhileTheAnalysisIsSlow)
{
  GError *err = nullptr;
  GstElement *pipeline
      = gst_parse_launch ("microscopesrc name=scope is-live=false "
                          "microscope=sim://synthetic?prefetch=0 objective=40 "
                          "! video/x-raw,format=RGB,width=640,height=480,framerate=30/1 "
                          "! tumorfeatures interval=1000 "
                          "! featureoverlay name=overlay summary=false heatmap=false color-by=none "
                          "! appsink name=out sync=false max-buffers=1 drop=false",
                          &err);
  ASSERT_EQ (err, nullptr) << err->message;
  GstElement *scope = gst_bin_get_by_name (GST_BIN (pipeline), "scope");
  GstElement *overlay = gst_bin_get_by_name (GST_BIN (pipeline), "overlay");
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), "out");
  GstPad *overlay_sink = gst_element_get_static_pad (overlay, "sink");
  FramesIn in;
  gst_pad_add_probe (overlay_sink, GST_PAD_PROBE_TYPE_BUFFER, FramesIn::probe, &in, nullptr);
  gst_object_unref (overlay_sink);
  GstBus *bus = gst_element_get_bus (pipeline);
  ASSERT_NE (gst_element_set_state (pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);

  std::map<GstClockTime, Shot> shots; // every frame's, by PTS
  std::optional<Shot> analysed;
  Result result;
  int frames = 0, checked = 0, drawn_frames = 0, blank_other_objective = 0;
  // Pulls one frame and checks it; false at the end of the stream.
  auto next = [&] (Shot &shot, int &drawn_px) {
    GstSample *smp = gst_app_sink_try_pull_sample (GST_APP_SINK (sink), 60 * GST_SECOND);
    if (!smp)
      return false;
    GstBuffer *b = gst_sample_get_buffer (smp);
    const LivemicroStageMeta *sm = livemicro_buffer_get_stage_meta (b);
    const LivemicroFeaturesMeta *m = livemicro_buffer_get_features_meta (b);
    EXPECT_NE (sm, nullptr);
    shot = shot_of (sm);
    shots[GST_BUFFER_PTS (b)] = shot;
    cv::Mat before = in.take (GST_BUFFER_PTS (b));
    const cv::Mat drawn = drawn_mask (before, pixels_of (b));
    drawn_px = cv::countNonZero (drawn);
    frames++;
    if (m && m->n_nuclei && !analysed) {
      // The slow analysis' one result: of the first frame, whether it came
      // in time for that frame (within 33 ms) or on a later one.
      EXPECT_EQ (m->analysed_pts, 0u);
      result = result_of (b);
      if (shots.count (m->analysed_pts))
        analysed = shots[m->analysed_pts];
    }
    if (drawn_px) {
      EXPECT_TRUE (analysed.has_value ());
      if (analysed) {
        const Registration reg = check_registration (drawn, result, *analysed, shot, 2.0);
        EXPECT_EQ (reg.far, 0) << "frame " << frames << " at " << shot.x_um << ", " << shot.y_um << " "
                               << shot.objective << "x: drawn up to " << reg.worst_um
                               << " µm from its outline";
        checked++;
      }
      EXPECT_EQ (shot.objective, 40) << "drawn under another objective";
      EXPECT_FALSE (shot.moving) << "drawn while the stage moved";
      drawn_frames++;
    } else if (shot.objective != 40) {
      blank_other_objective++;
    }
    gst_sample_unref (smp);
    return true;
  };
  Shot shot;
  int px = 0;
  // The first frame is analysed.  The source blocks on the full appsink, so
  // holding the first frame holds the stream (a few frames ahead at most)
  // until the analysis has posted its result, however long it takes.
  ASSERT_TRUE (next (shot, px));
  for (bool finished = false; !finished;) {
    GstMessage *msg = gst_bus_timed_pop_filtered (bus, 120 * GST_SECOND, GST_MESSAGE_ELEMENT);
    ASSERT_NE (msg, nullptr) << "no analysis result in 2 minutes";
    finished = gst_structure_has_name (gst_message_get_structure (msg), "tumorfeatures");
    gst_message_unref (msg);
  }
  for (int k = 0; k < 10 && !analysed; k++)
    ASSERT_TRUE (next (shot, px));
  ASSERT_TRUE (analysed.has_value ()) << "no result carried";
  const Shot home = *analysed;

  // Until a frame satisfies `done`, at most 200 frames.
  auto until = [&] (auto done) {
    for (int k = 0; k < 200; k++) {
      if (!next (shot, px))
        return false;
      if (done ())
        return true;
    }
    return false;
  };
  ASSERT_TRUE (until ([&] { return px > 300; })) << "not drawn at home";
  EXPECT_EQ (state_of (overlay), "current");

  // Move 30 µm right and 20 µm down.
  g_object_set (scope, "x-um", home.x_um + 30.0, nullptr);
  g_object_set (scope, "y-um", home.y_um + 20.0, nullptr);
  auto arrived = [&] (double x, double y) {
    return !shot.moving && std::abs (shot.x_um - x) < 0.5 && std::abs (shot.y_um - y) < 0.5;
  };
  ASSERT_TRUE (until ([&] { return arrived (home.x_um + 30, home.y_um + 20); }));
  EXPECT_GT (px, 300) << "the part of the old field still in view is drawn";
  EXPECT_EQ (state_of (overlay), "moved");

  // Another objective: nothing drawn, the state says updating.
  g_object_set (scope, "objective", 20, nullptr);
  ASSERT_TRUE (until ([&] { return shot.objective == 20; }));
  for (int k = 0; k < 3; k++) {
    ASSERT_TRUE (next (shot, px));
    EXPECT_EQ (px, 0);
  }
  EXPECT_EQ (state_of (overlay), "updating");

  // Back to 40x: drawn again where it belongs.
  g_object_set (scope, "objective", 40, nullptr);
  ASSERT_TRUE (until ([&] { return shot.objective == 40 && !shot.moving; }));
  ASSERT_TRUE (next (shot, px));
  EXPECT_GT (px, 300);
  EXPECT_EQ (state_of (overlay), "moved");

  EXPECT_GT (checked, 3);
  EXPECT_GE (blank_other_objective, 3);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (sink);
  gst_object_unref (overlay);
  gst_object_unref (scope);
  gst_object_unref (pipeline);
}
