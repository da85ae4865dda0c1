// The worker's slide views and the daemon's masking of the map, on plain
// images: frames stitched where their stage position puts them, nuclei
// carried into slide µm, and every pixel of a masked region filled.
#include "daemon/slide_map.h"
#include "worker/slide_view.h"

#include <glib.h>
#include <gst/gst.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>

using namespace livemicro::orchestrator;

namespace {

cv::Mat
decode (const SlideOverview &o)
{
  gsize len = 0;
  g_autofree guchar *png = g_base64_decode (o.png_base64.c_str (), &len);
  cv::Mat bgr = cv::imdecode (cv::Mat (1, (int)len, CV_8UC1, png), cv::IMREAD_COLOR);
  cv::Mat rgb;
  cv::cvtColor (bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

TEST (SlideMap, FramesLandWhereTheStageWasAndAStillStageChangesNothing)
{
  // 80 × 40 mm of travel at 100 µm per map pixel (800 × 400).
  SlideMap map (cv::Rect2d (-40000, -20000, 80000, 40000), 800);
  EXPECT_DOUBLE_EQ (map.um_per_px (), 100.0);
  ASSERT_TRUE (map.take_if_changed ()); // the empty map, once
  EXPECT_FALSE (map.take_if_changed ());
  // A 2 × 1 mm red frame (200 × 100 px at 10 µm/px) centred at (10 mm, -5 mm).
  cv::Mat red (100, 200, CV_8UC3, cv::Scalar (255, 0, 0));
  ASSERT_TRUE (map.paste (red, 10000, -5000, 10.0));
  EXPECT_FALSE (map.paste (red, 10020, -5010, 10.0)) << "within a map pixel: nothing new";
  auto o = map.take_if_changed ();
  ASSERT_TRUE (o);
  EXPECT_FALSE (map.take_if_changed ());
  cv::Mat rgb = decode (*o);
  ASSERT_EQ (rgb.cols, 800);
  ASSERT_EQ (rgb.rows, 400);
  cv::Mat is_red;
  cv::inRange (rgb, cv::Scalar (250, 0, 0), cv::Scalar (255, 5, 5), is_red);
  cv::Rect found = cv::boundingRect (is_red);
  // x: 9–11 mm → map px 490–510; y: -5.5…-4.5 mm → 145–155.
  EXPECT_EQ (found, cv::Rect (490, 145, 20, 10));
  EXPECT_FALSE (map.paste (red, 90000, 0, 10.0)) << "off the map";
}

TEST (SlideMap, MaskedCopyFillsEveryPixelTheRegionTouchesAndCoarsens)
{
  SlideOverview g;
  g.width_um = 75000;
  g.height_um = 25000;
  g.width = 750;
  g.height = 250;
  SlideMapImage map{g, cv::Mat (250, 750, CV_8UC3, cv::Scalar (20, 20, 20)), 0};
  std::vector<std::vector<cv::Point2d>> label{{{0, 0}, {20000, 0}, {20000, 25000}, {0, 25000}}};
  for (bool coarse : {false, true}) {
    std::vector<unsigned char> png = masked_png (map, label, coarse);
    cv::Mat bgr = cv::imdecode (png, cv::IMREAD_COLOR);
    ASSERT_FALSE (bgr.empty ());
    EXPECT_EQ (bgr.cols, coarse ? 150 : 750);
    int label_cols = (int)std::ceil (20000.0 / 75000.0 * bgr.cols);
    cv::Mat mask;
    cv::inRange (bgr (cv::Rect (0, 0, label_cols, bgr.rows)), cv::Scalar (104, 96, 96),
                 cv::Scalar (104, 96, 96), mask);
    EXPECT_EQ (cv::countNonZero (mask), label_cols * bgr.rows) << "coarse " << coarse;
    EXPECT_EQ (bgr.at<cv::Vec3b> (bgr.rows / 2, bgr.cols - 1), cv::Vec3b (20, 20, 20))
        << "the rest untouched";
  }
}

TEST (SlideViews, NucleiGoToSlideMicronsThroughTheirOwnPosition)
{
  gst_init (nullptr, nullptr);
  GstBuffer *buf = gst_buffer_new ();
  LivemicroFeaturesMeta *m = livemicro_buffer_add_features_meta (buf);
  m->frame_width = 640;
  m->frame_height = 480;
  m->um_per_px = 0.5;
  m->analysed_pts = 42;
  // A square nucleus of 10 px around pixel (100.0, 50.0); the frame's centre
  // is at slide (30000, 12000).
  float contour[] = {95, 45, 105, 45, 105, 55, 95, 55};
  LivemicroNucleus n{};
  n.x_px = 100;
  n.y_px = 50;
  n.x_um = 30000 + (100 - 320) * 0.5;
  n.y_um = 12000 + (50 - 240) * 0.5;
  n.area_um2 = 25;
  n.n_contour = 4;
  n.contour = contour;
  livemicro_features_meta_set_nuclei (m, &n, 1);
  auto f = analysed_field (*m);
  ASSERT_TRUE (f);
  EXPECT_NEAR (f->x_um, 30000, 1e-6);
  EXPECT_NEAR (f->y_um, 12000, 1e-6);
  EXPECT_DOUBLE_EQ (f->width_um, 320);
  ASSERT_EQ (f->nuclei.size (), 1u);
  const NucleusOutline &o = f->nuclei[0];
  EXPECT_NEAR (o.x_um, 29890, 0.01);
  ASSERT_EQ (o.outline_um.size (), 8u);
  EXPECT_NEAR (o.outline_um[0], 29887.5, 0.01);
  EXPECT_NEAR (o.outline_um[1], 11902.5, 0.01);
  // Without a slide position there is nothing to place.
  n.x_um = NAN;
  livemicro_features_meta_set_nuclei (m, &n, 1);
  EXPECT_FALSE (analysed_field (*m));
  gst_buffer_unref (buf);
}

} // namespace
