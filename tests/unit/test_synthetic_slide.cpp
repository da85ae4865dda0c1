// The generated slide: deterministic per seed, and its ground truth is what
// is drawn (nuclei where hematoxylin is, the label where the paper is).
#include "sim/synthetic_slide.h"
#include "testutil.h"

#include <gtest/gtest.h>
#include <json-glib/json-glib.h>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include <sstream>

using namespace livemicro::hw::sim;

namespace {

// Hematoxylin optical density by colour deconvolution with Ruifrok &
// Johnston's standard H&E(+DAB) vectors — deliberately not the slide's own.
cv::Mat
hematoxylin_od (const cv::Mat &rgb)
{
  cv::Matx33d stains (0.650, 0.704, 0.286,  // H
                      0.072, 0.990, 0.105,  // E
                      0.268, 0.570, 0.776); // DAB
  for (int r = 0; r < 3; r++) {
    double n = std::sqrt (stains (r, 0) * stains (r, 0) + stains (r, 1) * stains (r, 1)
                          + stains (r, 2) * stains (r, 2));
    for (int c = 0; c < 3; c++)
      stains (r, c) /= n;
  }
  cv::Matx33d inv = stains.inv ();
  cv::Mat h (rgb.size (), CV_32F);
  for (int j = 0; j < rgb.rows; j++)
    for (int i = 0; i < rgb.cols; i++) {
      cv::Vec3b p = rgb.at<cv::Vec3b> (j, i);
      double od[3];
      for (int c = 0; c < 3; c++)
        od[c] = -std::log (std::max (1.0, (double)p[c]) / 255.0);
      h.at<float> (j, i) = (float)(od[0] * inv (0, 0) + od[1] * inv (1, 0) + od[2] * inv (2, 0));
    }
  return h;
}

cv::Rect
frame_rect (const cv::Point2d &centre_um, double upp, cv::Size size)
{
  return cv::Rect ((int)std::lround (centre_um.x / upp - size.width / 2.0),
                   (int)std::lround (centre_um.y / upp - size.height / 2.0), size.width, size.height);
}

} // namespace

TEST (SyntheticSlide, SameSeedSamePixelsOtherSeedOtherSlide)
{
  SyntheticSlide a (7), b (7), c (8);
  cv::Rect r = frame_rect (a.home_um (), 0.5, {320, 240});
  cv::Mat ra, rb, rc;
  a.render (0.5, r, ra);
  b.render (0.5, r, rb);
  c.render (0.5, r, rc);
  EXPECT_EQ (cv::norm (ra, rb, cv::NORM_INF), 0.0);
  EXPECT_GT (cv::norm (ra, rc, cv::NORM_L1) / ra.total (), 5.0);
  EXPECT_EQ (a.label ().patient_name, b.label ().patient_name);
  EXPECT_EQ (a.label ().mrn, b.label ().mrn);
  EXPECT_NE (a.label ().mrn, c.label ().mrn);
}

TEST (SyntheticSlide, GeometryFollowsTheStandardSlide)
{
  SyntheticSlide s;
  EXPECT_DOUBLE_EQ (s.size_um ().width, 75000);
  EXPECT_DOUBLE_EQ (s.size_um ().height, 25000);
  EXPECT_EQ (s.label ().rect_um, cv::Rect2d (0, 0, 20000, 25000));
  cv::Point2d home = s.home_um ();
  EXPECT_GE (s.tissue_at (home.x, home.y), 0.9f);
  // No tissue outside x 25–70 mm.
  for (double x : {21000.0, 24000.0, 71000.0, 74000.0})
    for (double y = 500; y < 25000; y += 1000)
      EXPECT_EQ (s.tissue_at (x, y), 0.0f) << x << "," << y;
  auto outside = s.nuclei_in (cv::Rect2d (0, 0, 25000, 25000));
  EXPECT_TRUE (outside.empty ());
}

TEST (SyntheticSlide, NucleiAreWhereHematoxylinIs)
{
  SyntheticSlide s;
  const double upp = 0.25;
  cv::Rect r = frame_rect (s.home_um (), upp, {800, 600});
  cv::Mat rgb;
  s.render (upp, r, rgb);

  // Ground-truth mask from the outlines, at the same scale.
  cv::Rect2d region_um (r.x * upp, r.y * upp, r.width * upp, r.height * upp);
  cv::Rect2d wide (region_um.x - 15, region_um.y - 15, region_um.width + 30, region_um.height + 30);
  auto nuclei = s.nuclei_in (wide);
  ASSERT_GT (nuclei.size (), 200u) << "home should be in cellular tissue";
  cv::Mat truth = cv::Mat::zeros (rgb.size (), CV_8U);
  for (const Nucleus &n : nuclei) {
    std::vector<cv::Point> poly;
    for (const auto &p : n.outline_um (64))
      poly.emplace_back ((int)std::lround (p.x / upp - 0.5 - r.x), (int)std::lround (p.y / upp - 0.5 - r.y));
    cv::fillPoly (truth, std::vector<std::vector<cv::Point>>{poly}, 255);
  }

  cv::Mat h = hematoxylin_od (rgb);
  cv::Mat detected = h > 0.35f;
  double inter = cv::countNonZero (detected & truth);
  double dice = 2 * inter / (cv::countNonZero (detected) + cv::countNonZero (truth));
  EXPECT_GT (dice, 0.90) << "hematoxylin mask vs ground-truth outlines";

  // Every nucleus centre inside the frame is hematoxylin-dark.
  int inside = 0, dark = 0;
  for (const Nucleus &n : nuclei) {
    int px = (int)(n.x_um / upp - r.x), py = (int)(n.y_um / upp - r.y);
    if (px < 0 || py < 0 || px >= r.width || py >= r.height)
      continue;
    inside++;
    dark += h.at<float> (py, px) > 0.35f;
  }
  EXPECT_GT (inside, 200);
  EXPECT_EQ (dark, inside);
}

TEST (SyntheticSlide, NucleusAreaMatchesItsOutline)
{
  SyntheticSlide s;
  auto nuclei = s.nuclei_in (cv::Rect2d (s.home_um () - cv::Point2d (200, 200), cv::Size2d (400, 400)));
  ASSERT_FALSE (nuclei.empty ());
  for (const Nucleus &n : nuclei) {
    std::vector<cv::Point2f> poly;
    for (const auto &p : n.outline_um (720))
      poly.emplace_back ((float)p.x, (float)p.y);
    EXPECT_NEAR (cv::contourArea (poly), n.area_um2 (), 0.01 * n.area_um2 ());
    EXPECT_GT (n.area_um2 (), 5.0);
    EXPECT_LT (n.area_um2 (), 120.0);
  }
}

// Debian's OpenCV 4.6 is built without QUIRC: QRCodeDetector finds QR codes
// but cannot decode them, so the test checks where the code is found.
TEST (SyntheticSlide, LabelCarriesAQrCodeWhereTheGroundTruthSays)
{
  SyntheticSlide s;
  const SlideLabel &l = s.label ();
  EXPECT_FALSE (l.patient_name.empty ());
  EXPECT_EQ (l.mrn.size (), 8u);
  EXPECT_NE (l.qr_payload.find (l.mrn), std::string::npos);
  // Render the QR region as a 4x camera frame (2.5 µm/px) downscaled 2x, the
  // way a detector looks at a large frame.
  const double upp = 5.0;
  cv::Rect2d q = l.qr_rect_um;
  cv::Rect r ((int)((q.x - 800) / upp), (int)((q.y - 800) / upp), (int)((q.width + 1600) / upp),
              (int)((q.height + 1600) / upp));
  cv::Mat rgb, grey;
  s.render (upp, r, rgb);
  cv::cvtColor (rgb, grey, cv::COLOR_RGB2GRAY);
  cv::QRCodeDetector detector;
  std::vector<cv::Point2f> corners;
  ASSERT_TRUE (detector.detect (grey, corners));
  cv::Rect2f found = cv::boundingRect (corners);
  EXPECT_NEAR ((found.x + r.x) * upp, q.x, 5 * upp);
  EXPECT_NEAR ((found.y + r.y) * upp, q.y, 5 * upp);
  EXPECT_NEAR (found.width * upp, q.width, 5 * upp);
  EXPECT_NEAR (found.height * upp, q.height, 5 * upp);

  // The paper is bright, with dark ink where the text lines are.
  const double text_upp = 2.5;
  cv::Rect2d t = l.text_rects_um.at (3); // patient name
  cv::Rect tr ((int)(t.x / text_upp), (int)(t.y / text_upp), (int)(t.width / text_upp),
               (int)(t.height / text_upp));
  s.render (text_upp, tr, rgb);
  cv::cvtColor (rgb, grey, cv::COLOR_RGB2GRAY);
  double ink = cv::countNonZero (grey < 100) / (double)grey.total ();
  EXPECT_GT (ink, 0.05);
  EXPECT_LT (ink, 0.7);
}

TEST (SyntheticSlide, OffSlideIsEmptyLightPath)
{
  SyntheticSlide s;
  cv::Mat rgb;
  s.render (1.0, cv::Rect (-50, -50, 40, 40), rgb);
  EXPECT_EQ (cv::norm (rgb, cv::Mat (rgb.size (), CV_8UC3, cv::Scalar (250, 250, 250)), cv::NORM_INF), 0.0);
}

TEST (SyntheticSlide, GroundTruthJsonListsWhatIsInTheRegion)
{
  SyntheticSlide s (42);
  cv::Rect2d region (s.home_um ().x, s.home_um ().y, 300, 200);
  std::ostringstream out;
  s.write_ground_truth (out, region);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = nullptr;
  ASSERT_TRUE (json_parser_load_from_data (parser, out.str ().c_str (), -1, &error))
      << (error ? error->message : "");
  JsonObject *root = json_node_get_object (json_parser_get_root (parser));
  EXPECT_EQ (json_object_get_int_member (root, "seed"), 42);
  JsonObject *label = json_object_get_object_member (root, "label");
  EXPECT_STREQ (json_object_get_string_member (label, "mrn"), s.label ().mrn.c_str ());
  JsonObject *rect = json_object_get_object_member (label, "rect");
  EXPECT_DOUBLE_EQ (json_object_get_double_member (rect, "width_um"), 20000);
  JsonArray *nuclei = json_object_get_array_member (root, "nuclei");
  auto expected = s.nuclei_in (region);
  ASSERT_EQ (json_array_get_length (nuclei), expected.size ());
  ASSERT_FALSE (expected.empty ());
  JsonObject *first = json_array_get_object_element (nuclei, 0);
  EXPECT_NEAR (json_object_get_double_member (first, "x_um"), expected[0].x_um, 1e-3);
  EXPECT_NEAR (json_object_get_double_member (first, "area_um2"), expected[0].area_um2 (), 1e-3);
  EXPECT_TRUE (json_object_has_member (first, "kind"));
}
