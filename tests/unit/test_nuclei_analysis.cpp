// livemicro::analysis on frames of the virtual microscope, whose nuclei are
// known: counts, areas and positions against the generated slide's ground
// truth at every objective; quality flags for blank, off-tissue, defocused,
// coarse and DAB-stained input; stain vectors; the written grading rule.
#include "../bench/accuracy.h"
#include "sim/sim_microscope.h"
#include "sim/synthetic_slide.h"
#include "testutil.h"

#include <livemicro/analysis/nuclei.h>
#include <livemicro/hw/microscope.h>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <memory>

using namespace livemicro;
namespace an = livemicro::analysis;

namespace {

struct Shot {
  cv::Mat rgb;
  hw::CaptureInfo info;
  std::vector<hw::sim::Nucleus> truth;  // centroids inside the frame
};

class SimScope {
public:
  explicit SimScope (const std::string &uri = "sim://synthetic?prefetch=0")
  {
    scope_ = hw::open_microscope (uri);
    slide_ = std::make_unique<hw::sim::SyntheticSlide> ();
  }
  // A frame at `objective`, centred `dx_um`,`dy_um` from home, defocused by dz.
  Shot take (int objective, cv::Size size, double dx_um = 0, double dy_um = 0, double dz_um = 0)
  {
    auto *sim = dynamic_cast<hw::sim::SimMicroscope *> (scope_.get ());
    scope_->turret ().select (objective);
    cv::Point2d home = slide_->home_um ();
    scope_->stage ().set_speed_um_per_s (100000);
    scope_->stage ().move_to (home.x + dx_um, home.y + dy_um);
    scope_->focus ().set_speed_um_per_s (10000);
    scope_->focus ().move_to (sim->focus_at (home.x + dx_um, home.y + dy_um) + dz_um);
    for (int k = 0; k < 500 && (scope_->stage ().state ().moving || scope_->focus ().state ().moving); k++)
      g_usleep (2000);
    scope_->camera ().configure (size);
    Shot s;
    s.info = scope_->camera ().grab (s.rgb);
    double upp = s.info.um_per_px;
    cv::Rect2d region (s.info.stage_x_um - size.width / 2.0 * upp,
        s.info.stage_y_um - size.height / 2.0 * upp, size.width * upp, size.height * upp);
    s.truth = slide_->nuclei_in (region);
    return s;
  }
  const hw::sim::SyntheticSlide &slide () const { return *slide_; }

private:
  std::unique_ptr<hw::Microscope> scope_;
  std::unique_ptr<hw::sim::SyntheticSlide> slide_;
};

// Fraction of ground-truth nuclei with a detected centroid within max_um
// (one-to-one), and of detections that match one.
an::Result
analyse (const Shot &s, an::Params p = an::Params ())
{
  an::Analyzer a (p);
  return a.analyze (s.rgb, s.info.um_per_px);
}

std::vector<cv::Point2d>
truth_px (const Shot &s)
{
  std::vector<cv::Point2d> out;
  double upp = s.info.um_per_px;
  for (const auto &n : s.truth)
    out.emplace_back ((n.x_um - s.info.stage_x_um) / upp + s.rgb.cols / 2.0,
        (n.y_um - s.info.stage_y_um) / upp + s.rgb.rows / 2.0);
  return out;
}

}  // namespace

class NucleiOnSyntheticSlide : public ::testing::TestWithParam<int> {};

// Counts within 5 %, mean area within 10 %, centroids where the slide put
// them (F1 of a 2 µm match), at 10x, 20x and 40x.
TEST_P (NucleiOnSyntheticSlide, CountsAreasAndPositionsMatchTheGroundTruth)
{
  const int objective = GetParam ();
  SimScope scope;
  int truth_n = 0, found_n = 0, matched = 0, predicted = 0;
  double truth_area = 0, found_area = 0;
  // Several fields so that the figures are not one lucky frame.
  for (auto [dx, dy] : {std::pair {0.0, 0.0}, {700.0, 300.0}, {-600.0, 500.0}}) {
    Shot s = scope.take (objective, {800, 600}, dx, dy);
    an::Result r = analyse (s);
    if (const char *dump = g_getenv ("LIVEMICRO_DUMP")) {
      cv::Mat bgr;
      cv::cvtColor (s.rgb, bgr, cv::COLOR_RGB2BGR);
      cv::imwrite (std::string (dump) + "/sim" + std::to_string (objective) + "_" + std::to_string ((int) dx) + ".png", bgr);
    }
    ASSERT_EQ (r.summary.quality, an::Quality::kOk) << an::quality_name (r.summary.quality);
    EXPECT_DOUBLE_EQ (r.summary.um_per_px, s.info.um_per_px);
    truth_n += (int) s.truth.size ();
    found_n += r.summary.nuclei_count;
    for (const auto &n : s.truth)
      truth_area += n.area_um2 ();
    for (const auto &n : r.nuclei)
      found_area += n.area_um2;
    std::vector<cv::Point2d> pred;
    for (const auto &n : r.nuclei)
      pred.emplace_back (n.x_px, n.y_px);
    matched += bench::match_centroids (truth_px (s), pred, 2.0 / s.info.um_per_px);
    predicted += (int) pred.size ();
  }
  ASSERT_GT (truth_n, 100);
  double count_err = std::abs (found_n - truth_n) / (double) truth_n;
  double area_err = std::abs (found_area / found_n - truth_area / truth_n) / (truth_area / truth_n);
  double recall = (double) matched / truth_n, precision = (double) matched / predicted;
  RecordProperty ("count_error", std::to_string (count_err));
  std::printf ("%dx: truth %d found %d (err %.3f), mean area truth %.1f found %.1f (err %.3f), "
               "precision %.3f recall %.3f\n",
      objective, truth_n, found_n, count_err, truth_area / truth_n, found_area / found_n,
      area_err, precision, recall);
  EXPECT_LE (count_err, 0.05);
  EXPECT_LE (area_err, 0.10);
  EXPECT_GE (recall, 0.85);
  EXPECT_GE (precision, 0.85);
}

INSTANTIATE_TEST_SUITE_P (Objectives, NucleiOnSyntheticSlide, ::testing::Values (10, 20, 40),
    [] (const auto &info) { return std::to_string (info.param) + "x"; });
