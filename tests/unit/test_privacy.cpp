// livemicro::privacy without GStreamer: the profiles file (good and bad),
// conservative rasterisation of slide regions, the region memory, and the
// detectors on frames of the generated slide.
#include "printed_codes.h"
#include "testutil.h"

#include "sim/synthetic_slide.h"
#include <livemicro/hw/microscope.h>
#include <livemicro/privacy/detect.h>
#include <livemicro/privacy/incremental.h>
#include <livemicro/privacy/mask.h>
#include <livemicro/json_text.h>
#include <livemicro/privacy/profiles.h>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include <fstream>
#include <functional>
#include <random>

using namespace livemicro::privacy;
using livemicro::test::ean13_symbol;
using livemicro::test::qr_symbol;
using livemicro::test::turned_on_white;

namespace {

ProfileSet
parse (const std::string &json)
{
  return parse_profiles (json, "test.json");
}

std::string
error_of (const std::string &json)
{
  try {
    parse (json);
  } catch (const ProfileError &e) {
    return e.what ();
  }
  return "(no error)";
}

// The record of a w × h frame whose centre shows slide point (x_um, y_um).
livemicro::hw::FrameRecord
placed (double x_um, double y_um, double um_per_px, int w, int h)
{
  livemicro::hw::FrameRecord r;
  r.stage_x_um = x_um;
  r.stage_y_um = y_um;
  r.um_per_px = um_per_px;
  r.frame_width = w;
  r.frame_height = h;
  return r;
}

} // namespace

TEST (Profiles, BuiltInProfilesSayWhatEachRoleMaySee)
{
  const ProfileSet &b = builtin_profiles ();
  EXPECT_EQ (b.names (), (std::vector<std::string>{"owner", "consultant", "trainee", "guest"}));
  const Profile &owner = *b.find ("owner");
  EXPECT_FALSE (owner.masks_anything ());
  EXPECT_TRUE (owner.may_control);
  EXPECT_TRUE (owner.may_draw ("analysis"));
  for (const char *name : {"consultant", "trainee"}) {
    const Profile &p = *b.find (name);
    ASSERT_EQ (b.regions_for (p).size (), 1u) << name;
    EXPECT_EQ (b.regions_for (p)[0]->bounds_um (), cv::Rect2d (0, 0, 20000, 25000));
    EXPECT_TRUE (p.detects (RegionClass::kLabel));
    EXPECT_FALSE (p.detects (RegionClass::kText));
  }
  EXPECT_TRUE (b.find ("consultant")->may_control);
  EXPECT_TRUE (b.find ("trainee")->may_control);
  const Profile &guest = *b.find ("guest");
  for (RegionClass c : all_region_classes ())
    EXPECT_TRUE (guest.detects (c)) << region_class_name (c);
  EXPECT_TRUE (guest.strips_meta ("LivemicroFeaturesMetaAPI"));
  EXPECT_EQ (guest.stage_meta, StageMetaPolicy::kGeometry);
  EXPECT_TRUE (guest.strips_tag ("title"));
  EXPECT_TRUE (guest.strips_tag ("comment"));
  EXPECT_FALSE (guest.strips_tag ("video-codec"));
  EXPECT_FALSE (guest.may_control);
  EXPECT_FALSE (guest.may_draw ("analysis"));
  EXPECT_EQ (b.find ("nobody"), nullptr);
}

TEST (Profiles, TheShippedExampleFileMatchesTheBuiltInProfiles)
{
  ProfileSet f = load_profiles_file (LIVEMICRO_SOURCE_DIR "/pipelines/profiles.json");
  const ProfileSet &b = builtin_profiles ();
  ASSERT_EQ (f.names (), b.names ());
  for (const auto &name : b.names ()) {
    const Profile &x = *f.find (name), &y = *b.find (name);
    EXPECT_EQ (x.detect, y.detect) << name;
    EXPECT_EQ (x.strip_metas, y.strip_metas) << name;
    EXPECT_EQ (x.stage_meta, y.stage_meta) << name;
    EXPECT_EQ (x.strip_tags, y.strip_tags) << name;
    EXPECT_EQ (x.keep_tags, y.keep_tags) << name;
    EXPECT_EQ (x.may_control, y.may_control) << name;
    EXPECT_EQ (x.overlays, y.overlays) << name;
    auto rx = f.regions_for (x), ry = b.regions_for (y);
    ASSERT_EQ (rx.size (), ry.size ()) << name;
    for (size_t i = 0; i < rx.size (); i++)
      EXPECT_EQ (rx[i]->polygon_um, ry[i]->polygon_um) << name;
  }
}

TEST (Profiles, PolygonsRectanglesAndWildcardsParse)
{
  ProfileSet s = parse (R"({
    "regions": [
      {"name": "a", "class": "text", "polygon_um": [[0, 0], [100, 0], [50, 80.5]]},
      {"name": "b", "class": "qr", "rect_um": [10, 20, 30, 40]}
    ],
    "profiles": [
      {"name": "reviewer", "regions": ["b"], "detect": ["qr", "qr"],
       "strip_metas": ["LivemicroFeaturesMetaAPI"], "stage_meta": "remove",
       "strip_tags": ["title"], "may_control": true, "overlays": ["analysis"],
       "extensions": {"encoding": {"max_width": 1280}}}
    ]})");
  ASSERT_EQ (s.regions.size (), 2u);
  EXPECT_EQ (s.regions[0].polygon_um.size (), 3u);
  EXPECT_EQ (s.regions[1].bounds_um (), cv::Rect2d (10, 20, 30, 40));
  const Profile &p = *s.find ("reviewer");
  ASSERT_EQ (s.regions_for (p).size (), 1u);
  EXPECT_EQ (s.regions_for (p)[0]->name, "b");
  EXPECT_EQ (p.detect, std::vector<RegionClass>{RegionClass::kQr});
  EXPECT_TRUE (p.strips_meta ("LivemicroFeaturesMetaAPI"));
  EXPECT_FALSE (p.strips_meta ("GstVideoRegionOfInterestMetaAPI"));
  EXPECT_EQ (p.stage_meta, StageMetaPolicy::kRemove);
  EXPECT_TRUE (p.strips_tag ("title"));
  EXPECT_FALSE (p.strips_tag ("comment"));
  EXPECT_TRUE (p.may_control);
  EXPECT_EQ (p.extensions_json, R"({"encoding":{"max_width":1280}})");
  EXPECT_TRUE (builtin_profiles ().find ("guest")->extensions_json.empty ());
}

struct BadFile {
  std::string json;
  std::vector<std::string> expected; // substrings of the error
};

class ProfilesBadInput : public ::testing::TestWithParam<BadFile> {};

TEST_P (ProfilesBadInput, ErrorNamesFileLineAndField)
{
  std::string e = error_of (GetParam ().json);
  for (const auto &s : GetParam ().expected)
    EXPECT_NE (e.find (s), std::string::npos) << "error '" << e << "' should mention '" << s << "'";
}

INSTANTIATE_TEST_SUITE_P (
    Errors, ProfilesBadInput,
    ::testing::Values (
        BadFile{"{\n  \"profiles\": [\n    {\"name\": \"x\",, }\n  ]\n}", {"test.json:3:"}},
        BadFile{"", {"test.json", "empty"}}, BadFile{"[1, 2]", {"test.json:1", "(top level)", "JSON object"}},
        BadFile{"{\"regions\": []}", {"test.json", "missing field 'profiles'"}},
        BadFile{"{\"profiles\": []}", {"profiles", "at least one profile"}},
        BadFile{"{\n\"profiles\": [\n{\"name\": \"g\",\n \"regions\": [],\n \"detcet\": [\"qr\"]}]}",
                {"test.json:5:", "profiles[0].detcet", "unknown field"}},
        BadFile{"{\"profiles\": [{\"name\": \"g\", \"regions\": []}]}",
                {"profiles.g", "missing field 'detect'"}},
        BadFile{"{\n\"profiles\": [{\"name\": \"g\", \"regions\": [],\n \"detect\": [\"faces\"]}]}",
                {"test.json:3:", "profiles.g.detect[0]", "unknown region class 'faces'"}},
        BadFile{"{\"profiles\": [{\"name\": \"g\", \"regions\": [\"nowhere\"], \"detect\": []}]}",
                {"profiles.g.regions[0]", "no region named 'nowhere'"}},
        BadFile{
            "{\"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": [], \"may_control\": \"yes\"}]}",
            {"profiles.g.may_control", "true or false"}},
        BadFile{
            "{\"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": [], \"stage_meta\": \"blur\"}]}",
            {"profiles.g.stage_meta", "keep, geometry, remove"}},
        BadFile{"{\"profiles\": [{\"name\": \"a b\", \"regions\": [], \"detect\": []}]}",
                {"profiles[0].name", "letters, digits"}},
        BadFile{"{\"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": []},"
                " {\"name\": \"g\", \"regions\": [], \"detect\": []}]}",
                {"profiles[1].name", "duplicate profile name 'g'"}},
        BadFile{"{\n\"regions\": [\n{\"name\": \"r\", \"class\": \"label\",\n \"rect_um\": [0, 0, -5, 10]}],"
                " \"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": []}]}",
                {"test.json:4:", "regions[0].rect_um", "above 0"}},
        BadFile{"{\"regions\": [{\"name\": \"r\", \"class\": \"label\", \"polygon_um\": [[0, 0], [1, 1]]}],"
                " \"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": []}]}",
                {"regions[0].polygon_um", "at least 3 points"}},
        BadFile{"{\"regions\": [{\"name\": \"r\", \"class\": \"label\", \"polygon_um\": [[0, 0], [1, 1], [2, "
                "2]]}],"
                " \"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": []}]}",
                {"regions[0].polygon_um", "no area"}},
        BadFile{"{\"regions\": [{\"name\": \"r\", \"class\": \"label\", \"polygon_um\": [[0, 0], [1, \"a\"], "
                "[2, 5]]}],"
                " \"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": []}]}",
                {"regions[0].polygon_um[1][1]", "number"}},
        BadFile{"{\"regions\": [{\"name\": \"r\", \"class\": \"label\", \"rect_um\": [0, 0, 5, 5],"
                " \"polygon_um\": [[0, 0], [1, 0], [0, 1]]}],"
                " \"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": []}]}",
                {"regions[0]", "exactly one of"}},
        BadFile{"{\"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": [], \"extensions\": 3}]}",
                {"profiles.g.extensions", "JSON object"}},
        BadFile{"{\"version\": 2, \"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": []}]}",
                {"version", "must be 1"}},
        // Found by tests/fuzz (fuzz-profiles): json-glib reads these, but
        // what it makes of them is not JSON (invalid UTF-8, "inf.0").
        BadFile{"{\"profiles\": [{\"name\": \"g\",\n \"description\": \"dr\\ud800ive\", \"regions\": [],"
                " \"detect\": []}]}",
                {"test.json:2: (file): a \\u escape of half a surrogate pair"}},
        BadFile{"{\"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": [],"
                " \"overlays\": [\"\\udc00\\udc00\"]}]}",
                {"test.json:1:", "half a surrogate pair"}},
        BadFile{"{\"profiles\": [{\"name\": \"g\", \"regions\": [], \"detect\": [],"
                " \"extensions\": {\"max\": [1e999]}}]}",
                {"profiles.g.extensions", "finite numbers"}},
        BadFile{std::string (100000, '['), {"test.json:1: (file): nested deeper than 64 levels"}}));

// What json-glib 1.6 gets wrong, found before it reads the text.
TEST (JsonText, DeepNestingAndHalfSurrogatePairsAreFoundTheWayJsonGlibReadsText)
{
  using livemicro::json::text_problem;
  EXPECT_FALSE (text_problem (R"({"a": [[1], {"b": "\ud83d\udd2c"}]})", 3));
  EXPECT_EQ (text_problem (R"({"a": [[1]]})", 2)->what, "nested deeper than 2 levels");
  EXPECT_EQ (text_problem ("[\n[\n[", 2)->line, 3);
  // Brackets in strings and comments do not nest; quotes in them do not
  // start a string.
  EXPECT_FALSE (text_problem (R"(["[[[[", '[[[[', "\"[[[["])", 1));
  EXPECT_FALSE (text_problem ("/* [[[[ \" */ [1]", 1));
  EXPECT_TRUE (text_problem ("['\"'] [[[", 2));
  EXPECT_TRUE (text_problem ("/* \" */ [[[", 2));
  // Surrogates: a pair is fine, half of one is not (in "…" strings only:
  // json-glib reads '…' without escapes).
  EXPECT_TRUE (text_problem (R"(["\ud800"])", 5));
  EXPECT_TRUE (text_problem (R"(["\ud800\u0041"])", 5));
  EXPECT_TRUE (text_problem (R"(["\uDC00x"])", 5));
  EXPECT_FALSE (text_problem (R"(["\\ud800"])", 5)); // an escaped backslash
  EXPECT_FALSE (text_problem (R"(['\ud800'])", 5));
  EXPECT_FALSE (text_problem (R"(["\u00e9\uD83D\uDD2C"])", 5));
  EXPECT_TRUE (text_problem (R"(["\ud8op"])", 5));
  EXPECT_TRUE (text_problem (R"(["\ud80"\ud800"])", 5));
  EXPECT_EQ (text_problem (R"(["B\\\641"])", 5)->what, "an escape JSON does not have: \\6");
  EXPECT_TRUE (text_problem (R"(["a\qb"])", 5));
  EXPECT_FALSE (text_problem (R"(["\"\\\/\b\f\n\r\t"])", 5));
  // One value: json-glib would return the first and leak the others.
  EXPECT_EQ (text_problem ("[][]", 5)->what, "text after the end of the JSON value");
  EXPECT_TRUE (text_problem (R"({"a":1}{"b":2})", 5));
  EXPECT_TRUE (text_problem ("1e99[]", 5));
  EXPECT_EQ (text_problem ("{\"a\": 1}\n\n x", 5)->line, 3);
  EXPECT_FALSE (text_problem ("\n {\"a\": 1} /* end */\r\n", 5));
}

TEST (Profiles, UnreadableFileNamesThePath)
{
  try {
    load_profiles_file ("/nonexistent/profiles.json");
    FAIL () << "no error";
  } catch (const ProfileError &e) {
    EXPECT_NE (std::string (e.what ()).find ("/nonexistent/profiles.json"), std::string::npos) << e.what ();
  }
}

// ---- masks ------------------------------------------------------------------

TEST (Mask, EveryPixelTouchingARegionIsMaskedAndFarPixelsAreNot)
{
  std::mt19937 rng (7);
  std::uniform_real_distribution<double> u (0, 1);
  for (int k = 0; k < 300; k++) {
    livemicro::hw::FrameRecord g;
    g.frame_width = 64 + (int)(u (rng) * 200);
    g.frame_height = 48 + (int)(u (rng) * 150);
    g.um_per_px = 0.1 + u (rng) * 3;
    g.stage_x_um = 1000 + u (rng) * 500;
    g.stage_y_um = 1000 + u (rng) * 500;
    // A rectangle somewhere around the frame, in slide µm.
    const double fw = g.frame_width * g.um_per_px, fh = g.frame_height * g.um_per_px;
    cv::Rect2d r (g.stage_x_um - fw + u (rng) * 1.5 * fw, g.stage_y_um - fh + u (rng) * 1.5 * fh,
                  u (rng) * fw, u (rng) * fh);
    const double margin = 1 + (int)(u (rng) * 3);
    FramePolygon fp;
    for (auto p : {r.tl (), cv::Point2d (r.br ().x, r.y), r.br (), cv::Point2d (r.x, r.br ().y)})
      fp.points.push_back (to_frame (g, p));
    cv::Mat mask;
    cv::Rect roi = rasterise ({fp}, margin, cv::Size (g.frame_width, g.frame_height), mask);
    int missed = 0, far_masked = 0;
    for (int j = 0; j < g.frame_height; j++)
      for (int i = 0; i < g.frame_width; i++) {
        // The pixel's square on the slide.
        double x0 = g.stage_x_um + (i - g.frame_width / 2.0) * g.um_per_px;
        double y0 = g.stage_y_um + (j - g.frame_height / 2.0) * g.um_per_px;
        cv::Rect2d px (x0, y0, g.um_per_px, g.um_per_px);
        bool touches = (px & r).area () > 0;
        // Distance in pixels from the pixel square to the rectangle.
        double dx = std::max ({0.0, r.x - (x0 + g.um_per_px), x0 - r.br ().x}) / g.um_per_px;
        double dy = std::max ({0.0, r.y - (y0 + g.um_per_px), y0 - r.br ().y}) / g.um_per_px;
        bool set = mask.at<uchar> (j, i) != 0;
        if (touches && !set)
          missed++;
        if (std::max (dx, dy) > margin + 2.5 && set)
          far_masked++;
        if (set) {
          EXPECT_TRUE (roi.contains (cv::Point (i, j)));
        }
      }
    ASSERT_EQ (missed, 0) << "case " << k;
    ASSERT_EQ (far_masked, 0) << "case " << k;
  }
}

TEST (Mask, RotatedPolygonIsCoveredWithItsMargin)
{
  const cv::Size size (200, 150);
  std::vector<cv::Point2d> poly = {{40.3, 20.7}, {160.2, 60.1}, {120.9, 140.4}, {30.5, 90.2}};
  cv::Mat mask;
  rasterise ({{poly}}, 2, size, mask);
  std::vector<cv::Point2f> pf (poly.begin (), poly.end ());
  for (int j = 0; j < size.height; j++)
    for (int i = 0; i < size.width; i++) {
      double d = cv::pointPolygonTest (pf, cv::Point2f ((float)i, (float)j), true);
      if (d >= -2.0) { // inside or within the margin
        ASSERT_NE (mask.at<uchar> (j, i), 0) << i << "," << j << " d=" << d;
      }
      if (d < -5.5) {
        ASSERT_EQ (mask.at<uchar> (j, i), 0) << i << "," << j << " d=" << d;
      }
    }
}

TEST (Mask, PixelateAndBlurChangeTheAreaButFillIsTheOnlyBlank)
{
  cv::Mat img (100, 100, CV_8UC3);
  cv::randu (img, 0, 255);
  cv::Mat mask;
  cv::Rect roi = rasterise ({{{{20, 20}, {60, 20}, {60, 60}, {20, 60}}}}, 1, img.size (), mask);
  for (MaskMethod m : {MaskMethod::kFill, MaskMethod::kPixelate, MaskMethod::kBlur}) {
    cv::Mat out = img.clone ();
    apply_mask (out, mask, roi, m, cv::Scalar (0, 0, 0), 8);
    cv::Mat inside = out (cv::Rect (20, 20, 41, 41));
    cv::Mat orig = img (cv::Rect (20, 20, 41, 41));
    EXPECT_GT (cv::norm (inside, orig, cv::NORM_L1) / inside.total (), 20) << mask_method_name (m);
    EXPECT_EQ (cv::norm (out (cv::Rect (70, 70, 30, 30)), img (cv::Rect (70, 70, 30, 30)), cv::NORM_INF), 0);
    EXPECT_EQ (cv::countNonZero (inside.reshape (1)) == 0, m == MaskMethod::kFill) << mask_method_name (m);
  }
}

TEST (Mask, RegionMemoryMergesOverlapsAndListsAsJson)
{
  RegionMemory m;
  EXPECT_TRUE (m.remember (RegionClass::kQr, {0, 0, 10, 10}, 1));
  EXPECT_FALSE (m.remember (RegionClass::kQr, {2, 2, 5, 5}, 2)) << "already covered";
  EXPECT_TRUE (m.remember (RegionClass::kQr, {5, 5, 10, 10}, 3)) << "grows";
  EXPECT_TRUE (m.remember (RegionClass::kText, {0, 0, 10, 10}, 4)) << "another class";
  ASSERT_EQ (m.regions ().size (), 2u);
  EXPECT_EQ (m.regions ()[0].rect_um, cv::Rect2d (0, 0, 15, 15));
  EXPECT_EQ (m.regions ()[0].hits, 3u);
  std::string j = m.to_json ();
  EXPECT_NE (j.find ("\"class\":\"qr\""), std::string::npos) << j;
  EXPECT_NE (j.find ("\"width_um\":15"), std::string::npos) << j;
}

// ---- detectors on the generated slide ---------------------------------------

namespace {

namespace hw = livemicro::hw;

struct Scope {
  std::unique_ptr<hw::Microscope> m;
  explicit Scope (cv::Size size) : m (hw::open_microscope ("sim://synthetic?stage_speed_um_s=100000"))
  {
    m->camera ().configure (size);
  }
  cv::Mat at (int objective, double x, double y, hw::FrameRecord *info = nullptr)
  {
    m->turret ().select (objective);
    m->stage ().move_to (x, y);
    while (m->stage ().state ().moving)
      g_usleep (1000);
    cv::Mat rgb;
    hw::FrameRecord c = m->camera ().grab (rgb);
    if (info)
      *info = c;
    return rgb;
  }
};

} // namespace

TEST (Detect, TissueFramesAreNotMistakenForText)
{
  Scope s ({640, 480});
  Detector d;
  hw::FrameRecord info;
  s.at (10, 0, 0, &info);
  for (int obj : {4, 10, 20, 40})
    for (double x : {32000.0, 45000.0, 58000.0}) {
      cv::Mat f = s.at (obj, x, 12500);
      auto found = d.detect (f, all_region_classes ());
      double area = 0;
      for (const auto &det : found)
        area += (det.bounds_px () & cv::Rect2d (0, 0, 640, 480)).area ();
      EXPECT_LT (area, 0.02 * 640 * 480)
          << obj << "x at x=" << x << ": " << found.size () << " false detections";
    }
}

// The cheap path on tissue: no more false detections, and none of the
// code searches (a barcode search costs ~3 ms per call).
TEST (Detect, ScreenRunsNoCodeSearchOnTissue)
{
  Scope s ({640, 480});
  Detector d;
  ScreenStats st;
  for (int obj : {4, 10, 20, 40})
    for (double x : {32000.0, 45000.0, 58000.0}) {
      cv::Mat f = s.at (obj, x, 12500);
      auto found
          = d.screen (f, all_region_classes (), true, 1.0, 1.0, {0, 0}, cv::Rect (0, 0, 640, 480), &st);
      double area = 0;
      for (const auto &det : found)
        area += (det.bounds_px () & cv::Rect2d (0, 0, 640, 480)).area ();
      EXPECT_LT (area, 0.02 * 640 * 480) << obj << "x at x=" << x;
    }
  EXPECT_EQ (st.qr_runs, 0);
  EXPECT_EQ (st.barcode_runs, 0);
}

TEST (Detect, RealHistologyTilesAreNotMistakenForPrint)
{
  LIVEMICRO_REQUIRE_TESTDATA (dir);
  Detector d;
  for (const char *tile :
       {"monuseg/TCGA-B0-5710-01Z-00-DX1.png", "tiles/torchstain_target.png", "tiles/torchstain_source.png",
        "tiles/stardist_histo.jpg", "tiles/skimage_ihc.png"}) {
    cv::Mat bgr = cv::imread (dir + "/" + tile, cv::IMREAD_COLOR), rgb;
    ASSERT_FALSE (bgr.empty ()) << tile;
    cv::cvtColor (bgr, rgb, cv::COLOR_BGR2RGB);
    cv::Mat m = cv::Mat::zeros (rgb.size (), CV_8U);
    for (const auto &det : d.detect (rgb, all_region_classes ()))
      cv::rectangle (m, det.bounds_px (), cv::Scalar (255), cv::FILLED);
    EXPECT_LT (cv::countNonZero (m), 0.02 * m.total ()) << tile << ": masked as print";
    // The cheap path, too, and without code searches.
    ScreenStats st;
    m.setTo (0);
    for (const auto &det :
         d.screen (rgb, all_region_classes (), true, 1.0, Detector::work_scale (rgb.size ()), {0, 0},
                   cv::Rect (cv::Point (0, 0), rgb.size ()), &st))
      cv::rectangle (m, det.bounds_px (), cv::Scalar (255), cv::FILLED);
    EXPECT_LT (cv::countNonZero (m), 0.02 * m.total ()) << tile << ": masked as print (screen)";
    EXPECT_EQ (st.qr_runs + st.barcode_runs, 0) << tile;
  }
}

TEST (Detect, PrintedLabelLinesAreFoundAsLabelAndText)
{
  Scope s ({640, 480});
  livemicro::hw::sim::SyntheticSlide slide;
  Detector d;
  // 4x: 2.5 µm/px, the patient-name line fills part of the frame.
  const cv::Rect2d name_um = slide.label ().text_rects_um[3];
  hw::FrameRecord info;
  cv::Mat f = s.at (4, name_um.x + 0.5 * 640 * 2.5 - 100, name_um.y + name_um.height / 2, &info);
  const livemicro::hw::FrameRecord g = placed (info.stage_x_um, info.stage_y_um, info.um_per_px, 640, 480);
  cv::Point2d a = to_frame (g, name_um.tl ()), b = to_frame (g, name_um.br ());
  cv::Rect2d target = cv::Rect2d (a, b) & cv::Rect2d (0, 0, 640, 480);
  ASSERT_GT (target.area (), 1000);
  auto found = d.detect (f, {RegionClass::kLabel, RegionClass::kText});
  // Each word is found; together they cover the line's ink.
  cv::Mat m = cv::Mat::zeros (480, 640, CV_8U), ink;
  for (const auto &det : found)
    if (det.region_class == RegionClass::kLabel)
      cv::rectangle (m, det.bounds_px (), cv::Scalar (255), cv::FILLED);
  cv::Mat grey;
  cv::cvtColor (f, grey, cv::COLOR_RGB2GRAY);
  ink = grey < 100;
  int ink_px = cv::countNonZero (ink (cv::Rect (target)));
  cv::Mat uncovered = ink & ~m;
  EXPECT_GT (ink_px, 500);
  EXPECT_EQ (cv::countNonZero (uncovered (cv::Rect (target))), 0);
}

namespace {

// Pastes a QR code, a barcode and a line of text on tissue at 10x and 20x
// and checks that `run` finds each as its class and covers each entirely.
void
expect_pasted_print_found (const std::function<std::vector<Detection> (const cv::Mat &)> &run,
                           cv::Size frame = {960, 720})
{
  Scope s (frame);
  std::mt19937 rng (11);
  int qr_found = 0, bar_found = 0, text_found = 0, n = 9;
  for (int k = 0; k < n; k++) {
    cv::Mat f = s.at (k % 2 ? 10 : 20, 30000 + 5000 * k, 8000 + 1500 * k).clone ();
    cv::Mat qr = qr_symbol (160 + 40 * (k % 3));
    cv::Rect pasted (40 + (int)(rng () % 300), 40 + (int)(rng () % 200), qr.cols, qr.rows);
    qr.copyTo (f (pasted));
    // The symbol (its dark modules), without the white quiet zone.
    cv::Mat qr_grey;
    cv::cvtColor (qr, qr_grey, cv::COLOR_RGB2GRAY);
    const cv::Rect qr_at = cv::boundingRect (qr_grey < 128) + pasted.tl ();
    cv::Mat bar = ean13_symbol (2 + k % 2, 90);
    cv::Rect bar_at (480 + (int)(rng () % 150), 380 + (int)(rng () % 150), bar.cols, bar.rows);
    bar.copyTo (f (bar_at));
    const std::string text = "MRN 00424242";
    double scale = 0.8 + 0.2 * (k % 3);
    cv::Point org (40 + (int)(rng () % 300), 600 + (int)(rng () % 60));
    cv::Mat before = f.clone ();
    cv::putText (f, text, org, cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar (20, 20, 24), 2, cv::LINE_AA);
    // Every pixel the print changed.
    cv::Mat diff;
    cv::absdiff (f, before, diff);
    cv::cvtColor (diff, diff, cv::COLOR_RGB2GRAY);
    const cv::Mat printed = diff > 0;
    const cv::Rect2d text_at = cv::boundingRect (printed);
    auto found = run (f);
    // Each detector finds its own kind (overlapping most of it), and what
    // all of them found together covers every pasted object entirely.
    cv::Mat all = cv::Mat::zeros (f.size (), CV_8U);
    for (const auto &det : found)
      cv::rectangle (all, det.bounds_px (), cv::Scalar (255), cv::FILLED);
    auto found_as = [&] (RegionClass c, const cv::Rect &r) {
      cv::Mat m = cv::Mat::zeros (f.size (), CV_8U);
      for (const auto &det : found)
        if (det.region_class == c)
          cv::rectangle (m, det.bounds_px (), cv::Scalar (255), cv::FILLED);
      return cv::countNonZero (m (r)) >= 0.5 * r.area () * (c == RegionClass::kText ? 0.5 : 1);
    };
    auto covered = [&] (const cv::Rect &r) { return cv::countNonZero (all (r)) == r.area (); };
    const int module = 2 + k % 2; // quiet zone: 10 modules left and right, 5 above
    const cv::Rect bars (bar_at.x + 10 * module, bar_at.y + 5 * module, bar.cols - 20 * module, 90);
    qr_found += found_as (RegionClass::kQr, qr_at) && covered (qr_at);
    bar_found += found_as (RegionClass::kBarcode, bars) && covered (bars);
    // Every pixel the print changed (not the gaps between its words).
    const bool text_covered = cv::countNonZero (printed & ~all) == 0;
    text_found += found_as (RegionClass::kText, cv::Rect (text_at)) && text_covered;
    EXPECT_TRUE (covered (qr_at)) << "case " << k << ": QR " << qr_at;
    EXPECT_TRUE (covered (bars)) << "case " << k << ": barcode " << bars;
    EXPECT_TRUE (text_covered) << "case " << k;
  }
  EXPECT_EQ (qr_found, n);
  EXPECT_EQ (bar_found, n);
  EXPECT_EQ (text_found, n);
}

} // namespace

TEST (Detect, PastedQrCodesBarcodesAndTextAreFoundOnTissue)
{
  Detector d;
  expect_pasted_print_found ([&] (const cv::Mat &f) { return d.detect (f, all_region_classes ()); });
}

// The cheap path finds the same print on the whole frame, running the code
// detectors only where a code is.
TEST (Detect, ScreenFindsPastedQrCodesBarcodesAndTextToo)
{
  Detector d;
  ScreenStats st;
  int frames = 0;
  expect_pasted_print_found ([&] (const cv::Mat &f) {
    frames++;
    return d.screen (f, all_region_classes (), true, 1.0, Detector::work_scale (f.size ()), {0, 0},
                     cv::Rect (0, 0, f.cols, f.rows), &st);
  });
  EXPECT_GE (st.qr_runs, frames);
  EXPECT_LE (st.qr_runs, 2 * frames) << "QR searches only on candidates that show a finder pattern";
  EXPECT_GE (st.barcode_runs, frames);
  EXPECT_LE (st.barcode_runs, 2 * frames) << "barcode searches only where bars are";
}

// A 1280×720 frame is analysed at 3/4 of its size, which Detector::shrink
// takes by bilinear samples: the same print is found, by both paths.
TEST (Detect, PrintIsFoundInFramesAnalysedAtThreeQuarters)
{
  const cv::Size hd (1280, 720);
  ASSERT_DOUBLE_EQ (Detector::work_scale (hd), 0.75);
  Detector d;
  expect_pasted_print_found ([&] (const cv::Mat &f) { return d.detect (f, all_region_classes ()); }, hd);
  expect_pasted_print_found (
      [&] (const cv::Mat &f) {
        return d.screen (f, all_region_classes (), true, 1.0, Detector::work_scale (f.size ()), {0, 0},
                         cv::Rect (0, 0, f.cols, f.rows));
      },
      hd);
}

// Shrinking keeps a printed stroke 2 pixels wide dark enough to be ink, at
// factors from 2/3 to 7/8 and wherever it falls on the pixel grid (at
// worst, the area average leaves it 32–85 grey levels, bilinear samples
// 19–64; ink is darker than 90).
TEST (Detect, ShrinkingKeepsStrokesTwoPixelsWideDark)
{
  for (int side : {1100, 1200, 1280, 1300, 1400, 1440})
    for (int at = 100; at < 112; at++) {
      // A stroke down and one across, crossing only away from row and column 0.
      cv::Mat paper (side, side, CV_8UC3, cv::Scalar (255, 255, 255)), small;
      paper.colRange (at, at + 2).setTo (cv::Scalar (0, 0, 0));
      paper.rowRange (at, at + 2).setTo (cv::Scalar (0, 0, 0));
      Detector::shrink (paper, small, Detector::work_scale ({side, side}));
      cv::Mat grey;
      cv::cvtColor (small, grey, cv::COLOR_RGB2GRAY);
      double darkest_across_the_down_stroke, darkest_across_the_other;
      cv::minMaxLoc (grey.row (0), &darkest_across_the_down_stroke);
      cv::minMaxLoc (grey.col (0), &darkest_across_the_other);
      EXPECT_LT (darkest_across_the_down_stroke, 90) << side << " px, stroke at " << at;
      EXPECT_LT (darkest_across_the_other, 90) << side << " px, stroke at " << at;
    }
}

// A QR code is told by where its three finder patterns are: at any
// rotation and down to ~1.5 working pixels per module (a 1080p frame is
// analysed at half size), on tissue, it is found as a QR code and covered.
TEST (Detect, ScreenFindsRotatedAndSmallQrCodes)
{
  Scope s ({1920, 1080});
  Detector d;
  const double work = Detector::work_scale ({1920, 1080});
  int cases = 0, found_qr = 0;
  for (int side : {130, 180, 260})
    for (double angle : {0.0, 15.0, 30.0, 45.0, 70.0}) {
      cv::Mat f = s.at (10, 30000 + 300 * cases, 9000).clone ();
      const cv::Mat turned = turned_on_white (qr_symbol (side), angle);
      const cv::Rect at (200 + 97 * (cases % 11), 150 + 41 * (cases % 13), turned.cols, turned.rows);
      turned.copyTo (f (at));
      cv::Mat grey;
      cv::cvtColor (turned, grey, cv::COLOR_RGB2GRAY);
      const cv::Rect symbol = cv::boundingRect (grey < 128) + at.tl ();
      auto found = d.screen (f, all_region_classes (), true, 1.0, work, {0, 0}, cv::Rect (0, 0, 1920, 1080));
      cv::Mat all = cv::Mat::zeros (f.size (), CV_8U), as_qr = all.clone ();
      for (const auto &det : found) {
        cv::rectangle (all, det.bounds_px (), cv::Scalar (255), cv::FILLED);
        if (det.region_class == RegionClass::kQr)
          cv::rectangle (as_qr, det.bounds_px (), cv::Scalar (255), cv::FILLED);
      }
      EXPECT_EQ (cv::countNonZero (all (symbol)), symbol.area ())
          << side << " px at " << angle << "°: not all of it is masked";
      const bool qr_here = cv::countNonZero (as_qr (symbol)) == symbol.area ();
      EXPECT_TRUE (qr_here) << side << " px at " << angle << "°: not found as a QR code";
      found_qr += qr_here;
      cases++;
    }
  RecordProperty ("found_as_qr", found_qr);
}

// A barcode is told by its bars: many, crossed alike by lines through its
// middle, at any angle and down to 1 working pixel per module (2 px modules
// at 1080p), on tissue, wherever its bars fall on the working pixels (bars
// of one module that straddle two blur into grey there: those candidates
// are checked in the frame's own pixels).
TEST (Detect, ScreenFindsTurnedAndFineBarcodes)
{
  Scope s ({1920, 1080});
  Detector d;
  const double work = Detector::work_scale ({1920, 1080});
  int cases = 0;
  for (int module : {2, 3, 4, 6})
    for (double angle : {0.0, 20.0, 45.0, 90.0})
      for (int shift : {0, 1}) { // frame pixels: the bars on or across the working pixels' grid
        cv::Mat f = s.at (10, 31000 + 300 * cases, 9500).clone ();
        const cv::Mat turned = turned_on_white (ean13_symbol (module, 30 * module), angle);
        const cv::Rect at (2 * (75 + 56 * (cases % 7)) + shift, 2 * (50 + 18 * (cases % 5)) + shift,
                           turned.cols, turned.rows);
        turned.copyTo (f (at));
        cv::Mat grey;
        cv::cvtColor (turned, grey, cv::COLOR_RGB2GRAY);
        const cv::Rect bars = cv::boundingRect (grey < 128) + at.tl ();
        cv::Mat all = cv::Mat::zeros (f.size (), CV_8U), as_bar = all.clone ();
        for (const auto &det :
             d.screen (f, all_region_classes (), true, 1.0, work, {0, 0}, cv::Rect (0, 0, 1920, 1080))) {
          cv::rectangle (all, det.bounds_px (), cv::Scalar (255), cv::FILLED);
          if (det.region_class == RegionClass::kBarcode)
            cv::rectangle (as_bar, det.bounds_px (), cv::Scalar (255), cv::FILLED);
        }
        EXPECT_EQ (cv::countNonZero (all (bars)), bars.area ())
            << module << " px modules at " << angle << "°, shifted " << shift << ": not all of it is masked";
        EXPECT_GE (cv::countNonZero (as_bar (bars)), 0.9 * bars.area ())
            << module << " px modules at " << angle << "°, shifted " << shift << ": not found as a barcode";
        cases++;
      }
}

// Parallel rules (a form's lines, a frame around a label) have bars' edges
// but not a barcode's many bars.
TEST (Detect, ParallelRulesAreNotABarcode)
{
  Scope s ({1920, 1080});
  Detector d;
  const double work = Detector::work_scale ({1920, 1080});
  ScreenStats st;
  int barcodes = 0;
  for (int rules : {4, 8}) {
    cv::Mat f = s.at (10, 61000 + 500 * rules, 9500).clone ();
    const cv::Rect paper (400, 300, 420, rules * 24 + 60);
    f (paper).setTo (cv::Scalar (250, 250, 248));
    for (int k = 0; k < rules; k++)
      f (cv::Rect (paper.x + 30, paper.y + 30 + 24 * k, 360, 4)).setTo (cv::Scalar (20, 20, 25));
    for (const auto &det :
         d.screen (f, all_region_classes (), true, 1.0, work, {0, 0}, cv::Rect (0, 0, 1920, 1080), &st))
      barcodes += det.region_class == RegionClass::kBarcode;
  }
  EXPECT_GE (st.barcode_runs, 1) << "the rules were looked at as bars";
  EXPECT_EQ (barcodes, 0);
}

// Blocks of print — bold or thin, large or small, short lines of digits
// and letters that run dark:light:dark:light:dark, as square as a code —
// are text, never QR codes or barcodes.
TEST (Detect, BlocksOfTextAreNotTakenForCodes)
{
  Scope s ({1920, 1080});
  Detector d;
  const double work = Detector::work_scale ({1920, 1080});
  const int fonts[] = {cv::FONT_HERSHEY_SIMPLEX, cv::FONT_HERSHEY_DUPLEX, cv::FONT_HERSHEY_COMPLEX,
                       cv::FONT_HERSHEY_TRIPLEX, cv::FONT_HERSHEY_PLAIN};
  const std::vector<std::vector<std::string>> blocks = {{"MRN 0042", "ROSSI M", "1950-01-02"},
                                                        {"B 0808", "80 8 OO", "H&E #12"},
                                                        {"III 101", "OHO 88", "0O0 M8M"}};
  ScreenStats st;
  int cases = 0, qr = 0;
  for (int font : fonts)
    for (const auto &lines : blocks)
      for (double scale : {1.2, 2.0, 3.0}) {
        cv::Mat f = s.at (10, 40000 + 300 * cases, 11000).clone ();
        const int thickness = 1 + cases % 4;
        int base = 0, width = 0, line_h = 0;
        for (const auto &l : lines) {
          const cv::Size size = cv::getTextSize (l, font, scale, thickness, &base);
          width = std::max (width, size.width);
          line_h = std::max (line_h, size.height + base + thickness);
        }
        const cv::Rect paper (100, 200, width + 80, (int)lines.size () * line_h + 80);
        f (paper).setTo (cv::Scalar (250, 250, 248));
        for (size_t k = 0; k < lines.size (); k++)
          cv::putText (f, lines[k], cv::Point (paper.x + 40, paper.y + 40 + (int)(k + 1) * line_h - base),
                       font, scale, cv::Scalar (15, 15, 20), thickness, cv::LINE_AA);
        for (const auto &det :
             d.screen (f, all_region_classes (), true, 1.0, work, {0, 0}, cv::Rect (0, 0, 1920, 1080), &st))
          if (det.region_class == RegionClass::kQr) {
            qr++;
            ADD_FAILURE () << "\"" << lines[0] << "\"… (font " << font << ", scale " << scale
                           << ", thickness " << thickness << ") taken for a QR code at " << det.bounds_px ();
          }
        cases++;
      }
  EXPECT_EQ (qr, 0) << "of " << cases << " blocks";
}

// Three finder patterns make a QR code only where a symbol puts them (at
// the corners of a right isosceles triangle): the same marks with legs of
// 1:2 are print of another kind.
TEST (Detect, FinderPatternsOutOfPlaceAreNotAQrCode)
{
  Scope s ({1920, 1080});
  Detector d;
  const double work = Detector::work_scale ({1920, 1080});
  auto qr_found = [&] (int module, cv::Point third, ScreenStats &st) {
    // 31 x 31 modules of stripes (print, no finder-like runs across), three
    // finder patterns: at (0, 0), (24, 0) and `third`.
    cv::Mat m (31, 31, CV_8U, cv::Scalar (0));
    for (int y = 0; y < m.rows; y += 2)
      m.row (y).setTo (255);
    for (cv::Point at : {cv::Point (0, 0), cv::Point (24, 0), third}) {
      m (cv::Rect (at - cv::Point (1, 1), cv::Size (9, 9)) & cv::Rect (0, 0, 31, 31)).setTo (0);
      m (cv::Rect (at, cv::Size (7, 7))).setTo (255);
      m (cv::Rect (at + cv::Point (1, 1), cv::Size (5, 5))).setTo (0);
      m (cv::Rect (at + cv::Point (2, 2), cv::Size (3, 3))).setTo (255);
    }
    cv::Mat big;
    cv::resize (m, big, cv::Size (), module, module, cv::INTER_NEAREST);
    cv::Mat f = s.at (10, 52000 + 700 * module + third.y * 10, 11000).clone ();
    const cv::Rect paper (300, 300, big.cols + 16 * module, big.rows + 16 * module);
    f (paper).setTo (cv::Scalar (250, 250, 248));
    f (cv::Rect (paper.tl () + cv::Point (8, 8) * module, big.size ())).setTo (cv::Scalar (15, 15, 20), big);
    int qr = 0;
    for (const auto &det :
         d.screen (f, all_region_classes (), true, 1.0, work, {0, 0}, cv::Rect (0, 0, 1920, 1080), &st))
      qr += det.region_class == RegionClass::kQr;
    return qr;
  };
  for (int module : {4, 6}) {
    ScreenStats placed, misplaced;
    EXPECT_EQ (qr_found (module, {0, 24}, placed), 1) << module << " px modules, a symbol's layout";
    EXPECT_EQ (qr_found (module, {0, 12}, misplaced), 0) << module << " px modules, legs of 1:2";
    EXPECT_GE (misplaced.qr_runs, 1) << "the three patterns were seen";
  }
}

TEST (Detect, InjectedFaultThrows)
{
  Detector d;
  d.set_inject_fault (true);
  cv::Mat f (48, 64, CV_8UC3, cv::Scalar (200, 100, 200));
  EXPECT_THROW (d.detect (f, {RegionClass::kQr}), cv::Exception);
}

// ---- detection only where it can matter ---------------------------------------

namespace {

// A wide capture of the generated slide that frames are cut from, so that
// consecutive frames show the same slide where they overlap.
struct Canvas {
  cv::Mat rgb;
  double x0_um = 0, y0_um = 0, um_per_px = 1; // slide µm at the top-left edge

  Canvas (cv::Size size, int objective, double x_um, double y_um)
  {
    Scope s (size);
    hw::FrameRecord info;
    rgb = s.at (objective, x_um, y_um, &info).clone ();
    um_per_px = info.um_per_px;
    x0_um = info.stage_x_um - size.width / 2.0 * um_per_px;
    y0_um = info.stage_y_um - size.height / 2.0 * um_per_px;
  }
  // The frame whose top-left pixel is canvas pixel `at`, and its geometry.
  cv::Mat frame (cv::Point at, cv::Size size, livemicro::hw::FrameRecord &g) const
  {
    g = placed (x0_um + (at.x + size.width / 2.0) * um_per_px, y0_um + (at.y + size.height / 2.0) * um_per_px,
                um_per_px, size.width, size.height);
    return rgb (cv::Rect (at, size));
  }
};

} // namespace

TEST (Incremental, PanningChecksOnlyWhatComesIntoViewAndAStillViewNothing)
{
  const Canvas c ({1600, 480}, 10, 45000, 12500);
  const cv::Size fs (640, 480);
  IncrementalDetector inc;
  IncrementalStats st;
  livemicro::hw::FrameRecord g;
  uint64_t frame = 0;
  for (int k = 0; k < 20; k++, frame++) {
    MatSource src (c.frame ({40 * k, 0}, fs, g));
    inc.detect (src, g, all_region_classes (), cv::Mat (), cv::Rect (), frame, 1000, &st);
    if (k == 0) {
      EXPECT_EQ (st.cells_to_check, st.cells_visible) << "a new view is checked whole";
      EXPECT_EQ (st.analysed_px, fs.area ());
    } else {
      // A 40 px strip (10 cells) and the cells the frame shows only in part.
      EXPECT_LE (st.cells_to_check, 0.15 * st.cells_visible) << "frame " << k;
      EXPECT_GE (st.cells_to_check, 10 * (480 / 4)) << "frame " << k;
      EXPECT_LE (st.analysed_px, 0.45 * fs.area ()) << "frame " << k;
    }
  }
  // Still: the same view again, even its cells at the edges, is not analysed.
  for (int k = 0; k < 3; k++, frame++) {
    MatSource src (c.frame ({40 * 19, 0}, fs, g));
    inc.detect (src, g, all_region_classes (), cv::Mat (), cv::Rect (), frame, 1000, &st);
    EXPECT_EQ (st.cells_to_check, 0);
    EXPECT_EQ (st.rects, 0);
  }
  // Going back over checked area costs little either.
  MatSource back (c.frame ({100, 0}, fs, g));
  inc.detect (back, g, all_region_classes (), cv::Mat (), cv::Rect (), frame, 1000, &st);
  EXPECT_LE (st.cells_to_check, 0.1 * st.cells_visible);
  // Checked area is trusted for recheck_frames frames only.
  inc.detect (back, g, all_region_classes (), cv::Mat (), cv::Rect (), frame + 1000, 1000, &st);
  EXPECT_EQ (st.cells_to_check, st.cells_visible);
}

// A view whose edges cut cells (the frame not aligned to the record's grid):
// the cells it shows in part are remembered as checked for this view, so a
// still view is not analysed again at its edges either.
TEST (Incremental, AStillViewWhoseEdgesCutCellsIsNotCheckedAgain)
{
  const Canvas c ({800, 500}, 10, 45000, 12500);
  const cv::Size fs (637, 477);
  IncrementalDetector inc;
  IncrementalStats st;
  livemicro::hw::FrameRecord g;
  MatSource first (c.frame ({3, 5}, fs, g));
  inc.detect (first, g, all_region_classes (), cv::Mat (), cv::Rect (), 0, 1000, &st);
  ASSERT_EQ (st.cells_to_check, st.cells_visible) << "a new view is checked whole";
  for (uint64_t frame = 1; frame <= 3; frame++) {
    MatSource src (c.frame ({3, 5}, fs, g));
    inc.detect (src, g, all_region_classes (), cv::Mat (), cv::Rect (), frame, 1000, &st);
    EXPECT_EQ (st.cells_to_check, 0) << "frame " << frame;
    EXPECT_EQ (st.cells_fresh, st.cells_visible) << "frame " << frame;
  }
}

TEST (Incremental, AreaMaskedAnywayIsNotAnalysed)
{
  const Canvas c ({640, 480}, 10, 45000, 12500);
  livemicro::hw::FrameRecord g;
  MatSource src (c.frame ({0, 0}, {640, 480}, g));
  cv::Mat hidden = cv::Mat::zeros (480, 640, CV_8U);
  hidden (cv::Rect (0, 0, 400, 480)).setTo (255);
  IncrementalDetector inc;
  IncrementalStats st;
  inc.detect (src, g, all_region_classes (), hidden, cv::Rect (0, 0, 400, 480), 0, 10, &st);
  EXPECT_GE (st.cells_hidden, (400 / 4 - 1) * (480 / 4 - 1));
  EXPECT_LE (st.analysed_px, (240 + 4 + 48) * 480) << "the rest and its context only";
  // Revealed (another profile, say): checked then.
  inc.detect (src, g, all_region_classes (), cv::Mat (), cv::Rect (), 1, 10, &st);
  EXPECT_GE (st.cells_to_check, (400 / 4 - 1) * (480 / 4 - 1));
}

TEST (Incremental, AnotherObjectiveFocusOrDetectorSetIsCheckedAfresh)
{
  const Canvas c ({640, 480}, 10, 45000, 12500);
  livemicro::hw::FrameRecord g;
  MatSource src (c.frame ({0, 0}, {640, 480}, g));
  IncrementalDetector inc;
  IncrementalStats st;
  uint64_t n = 0;
  auto run = [&] (const livemicro::hw::FrameRecord &geo, double z, const std::vector<RegionClass> &classes) {
    livemicro::hw::FrameRecord at = geo;
    at.stage_z_um = z;
    inc.detect (src, at, classes, cv::Mat (), cv::Rect (), n++, 100, &st);
    return st.cells_to_check == st.cells_visible;
  };
  ASSERT_TRUE (run (g, 0, {RegionClass::kLabel}));
  EXPECT_FALSE (run (g, 0, {RegionClass::kLabel}));
  EXPECT_TRUE (run (g, 2.5, {RegionClass::kLabel})) << "print out of focus may have been missed";
  EXPECT_TRUE (run (g, 0, all_region_classes ())) << "checked for labels only, not for codes";
  livemicro::hw::FrameRecord g20 = g;
  g20.um_per_px /= 2;
  EXPECT_TRUE (run (g20, 0, all_region_classes ())) << "another objective";
  EXPECT_FALSE (run (g, 0, {RegionClass::kLabel})) << "the earlier layers are kept";
}

TEST (Incremental, AFailedCheckMarksNothing)
{
  const Canvas c ({640, 480}, 10, 45000, 12500);
  livemicro::hw::FrameRecord g;
  MatSource src (c.frame ({0, 0}, {640, 480}, g));
  IncrementalDetector inc;
  IncrementalStats st;
  inc.set_inject_fault (true);
  EXPECT_THROW (inc.detect (src, g, all_region_classes (), cv::Mat (), cv::Rect (), 0, 10, &st),
                cv::Exception);
  inc.set_inject_fault (false);
  inc.detect (src, g, all_region_classes (), cv::Mat (), cv::Rect (), 1, 10, &st);
  EXPECT_EQ (st.cells_to_check, st.cells_visible);
}

TEST (Incremental, AnAbsurdPositionThrowsInsteadOfOverflowing)
{
  cv::Mat f (48, 64, CV_8UC3, cv::Scalar (230, 200, 220));
  MatSource src (f);
  IncrementalDetector inc;
  const livemicro::hw::FrameRecord g = placed (1e300, 0, 1e-6, 64, 48);
  EXPECT_THROW (inc.detect (src, g, all_region_classes (), cv::Mat (), cv::Rect (), 0, 10), std::range_error);
}

TEST (Incremental, TheRecordStaysBounded)
{
  cv::Mat f (48, 64, CV_8UC3, cv::Scalar (230, 200, 220));
  MatSource src (f);
  IncrementalDetector inc;
  for (int k = 0; k < 700; k++) {
    // A new tile of 64 × 64 cells (4 µm each) every frame.
    const livemicro::hw::FrameRecord g
        = placed (1000.0 + 300.0 * (k % 50), 1000.0 + 300.0 * (k / 50), 1.0, 64, 48);
    inc.detect (src, g, all_region_classes (), cv::Mat (), cv::Rect (), (uint64_t)k, 10);
  }
  EXPECT_LE (inc.tiles (), 512u);
  EXPECT_GE (inc.tiles (), 500u);
}

// QR codes, barcodes and text pasted on the slide are found as they come
// into view, in the frame that first shows each whole.
TEST (Incremental, PrintPastedOnTheSlideIsFoundAsItComesIntoView)
{
  Canvas c ({1800, 480}, 10, 45000, 12500);
  const cv::Mat qr = qr_symbol (150), bar = ean13_symbol (2, 80);
  const cv::Rect qr_at (900, 60, qr.cols, qr.rows), bar_at (1250, 300, bar.cols, bar.rows);
  qr.copyTo (c.rgb (qr_at));
  bar.copyTo (c.rgb (bar_at));
  cv::putText (c.rgb, "DOE, JANE MRN 00424242", {1100, 440}, cv::FONT_HERSHEY_SIMPLEX, 0.7,
               cv::Scalar (20, 20, 24), 2, cv::LINE_AA);
  const cv::Size fs (640, 480);
  IncrementalDetector inc;
  IncrementalStats st;
  std::vector<std::pair<RegionClass, cv::Rect2d>> found_um;
  int qr_first = -1, bar_first = -1, frames = 0;
  for (int x = 0; x + fs.width <= c.rgb.cols; x += 45, frames++) {
    livemicro::hw::FrameRecord g;
    MatSource src (c.frame ({x, 0}, fs, g));
    for (const auto &d :
         inc.detect (src, g, all_region_classes (), cv::Mat (), cv::Rect (), (uint64_t)frames, 100, &st)) {
      cv::Rect2d b = d.bounds_px ();
      found_um.push_back ({d.region_class, cv::Rect2d (to_slide (g, b.tl ()), to_slide (g, b.br ()))});
      if (d.region_class == RegionClass::kQr && qr_first < 0)
        qr_first = x;
      if (d.region_class == RegionClass::kBarcode && bar_first < 0)
        bar_first = x;
    }
    EXPECT_LE (st.screen.qr_runs, 2) << "frame at " << x;
  }
  // Found by the first frame that shows the symbol whole (its right edge in
  // view; a barcode's detector may find it a little before).
  cv::Mat grey;
  cv::cvtColor (qr, grey, cv::COLOR_RGB2GRAY);
  const cv::Rect qr_marks = cv::boundingRect (grey < 128) + qr_at.tl ();
  const cv::Rect bars (bar_at.x + 20, bar_at.y + 10, bar.cols - 40, 80);
  auto first_showing = [] (const cv::Rect &r) { return (r.br ().x - 640 + 44) / 45 * 45; };
  EXPECT_GE (qr_first, 0);
  EXPECT_LE (qr_first, first_showing (qr_marks));
  EXPECT_GE (bar_first, 0);
  EXPECT_LE (bar_first, first_showing (bars));
  // Everything pasted is covered (in slide µm).
  auto covered = [&] (const cv::Rect &canvas_px) {
    cv::Mat m = cv::Mat::zeros (c.rgb.size (), CV_8U);
    for (const auto &[cls, r] : found_um)
      cv::rectangle (m,
                     cv::Rect (cv::Point ((int)std::floor ((r.x - c.x0_um) / c.um_per_px),
                                          (int)std::floor ((r.y - c.y0_um) / c.um_per_px)),
                               cv::Point ((int)std::ceil ((r.br ().x - c.x0_um) / c.um_per_px),
                                          (int)std::ceil ((r.br ().y - c.y0_um) / c.um_per_px))),
                     cv::Scalar (255), cv::FILLED);
    return cv::countNonZero (m (canvas_px)) == canvas_px.area ();
  };
  EXPECT_TRUE (covered (qr_marks));
  EXPECT_TRUE (covered (bars));
  EXPECT_TRUE (covered (cv::Rect (1100, 420, 300, 26)));
}
