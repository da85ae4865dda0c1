// The virtual microscope: motion over time, travel limits, objectives, focus
// blur, image shift with the stage, and URI handling.
#include "sim/sim_microscope.h"
#include "testutil.h"

#include <livemicro/hw/microscope.h>
#include <livemicro/hw/uri.h>

#include <gtest/gtest.h>

#include <memory>

using namespace livemicro::hw;
using livemicro::test::laplacian_variance;

namespace {

struct ManualClock {
  int64_t now_us = 1000000;
  sim::MonotonicClock fn ()
  {
    return [this] { return now_us; };
  }
};

std::unique_ptr<sim::SimMicroscope>
open_sim (const std::string &uri)
{
  auto m = open_microscope (uri);
  auto *s = dynamic_cast<sim::SimMicroscope *> (m.get ());
  EXPECT_NE (s, nullptr);
  m.release ();
  return std::unique_ptr<sim::SimMicroscope> (s);
}

std::string
error_text (const std::function<void ()> &fn)
{
  try {
    fn ();
  } catch (const Error &e) {
    return e.what ();
  }
  return "(no error)";
}

} // namespace

TEST (SimMicroscope, MoveTakesTimeAtTheSetSpeedAndReportsPositionWhileMoving)
{
  auto m = open_sim ("sim://synthetic?stage_speed_um_s=1000");
  ManualClock clock;
  m->set_clock (clock.fn ());
  StageState s0 = m->stage ().state ();
  EXPECT_FALSE (s0.moving);
  m->stage ().move_to (s0.x_um + 3000, s0.y_um + 4000); // 5000 µm at 1000 µm/s
  StageState s1 = m->stage ().state ();
  EXPECT_TRUE (s1.moving);
  EXPECT_DOUBLE_EQ (s1.x_um, s0.x_um);
  clock.now_us += 2500000; // half way
  StageState s2 = m->stage ().state ();
  EXPECT_TRUE (s2.moving);
  EXPECT_NEAR (s2.x_um, s0.x_um + 1500, 1e-6);
  EXPECT_NEAR (s2.y_um, s0.y_um + 2000, 1e-6);
  clock.now_us += 2600000;
  StageState s3 = m->stage ().state ();
  EXPECT_FALSE (s3.moving);
  EXPECT_DOUBLE_EQ (s3.x_um, s0.x_um + 3000);
  EXPECT_DOUBLE_EQ (s3.y_um, s0.y_um + 4000);
}

TEST (SimMicroscope, StopHaltsWhereTheStageIs)
{
  auto m = open_sim ("sim://synthetic?stage_speed_um_s=1000");
  ManualClock clock;
  m->set_clock (clock.fn ());
  StageState s0 = m->stage ().state ();
  m->stage ().move_to (s0.x_um + 1000, s0.y_um);
  clock.now_us += 300000;
  m->stage ().stop ();
  clock.now_us += 5000000;
  StageState s = m->stage ().state ();
  EXPECT_FALSE (s.moving);
  EXPECT_NEAR (s.x_um, s0.x_um + 300, 1e-6);
}

TEST (SimMicroscope, FocusMovesAtItsSpeed)
{
  auto m = open_sim ("sim://synthetic?focus_speed_um_s=100");
  ManualClock clock;
  m->set_clock (clock.fn ());
  double z0 = m->focus ().state ().z_um;
  m->focus ().move_to (z0 + 50);
  clock.now_us += 250000;
  EXPECT_TRUE (m->focus ().state ().moving);
  EXPECT_NEAR (m->focus ().state ().z_um, z0 + 25, 1e-6);
  clock.now_us += 300000;
  EXPECT_FALSE (m->focus ().state ().moving);
  EXPECT_DOUBLE_EQ (m->focus ().state ().z_um, z0 + 50);
}

TEST (SimMicroscope, OutOfRangeMovesAreRefusedNamingValueAndRangeAndChangeNothing)
{
  auto m = open_sim ("sim://synthetic");
  StageState before = m->stage ().state ();
  std::string e = error_text ([&] { m->stage ().move_to (80000, 1000); });
  EXPECT_NE (e.find ("80000"), std::string::npos) << e;
  EXPECT_NE (e.find ("[0, 75000]"), std::string::npos) << e;
  e = error_text ([&] { m->stage ().move_to (1000, -5); });
  EXPECT_NE (e.find ("-5"), std::string::npos) << e;
  EXPECT_NE (e.find ("[0, 25000]"), std::string::npos) << e;
  e = error_text ([&] { m->focus ().move_to (2500); });
  EXPECT_NE (e.find ("[0, 2000]"), std::string::npos) << e;
  e = error_text ([&] { m->turret ().select (60); });
  EXPECT_NE (e.find ("60x"), std::string::npos) << e;
  EXPECT_NE (e.find ("4x, 10x, 20x, 40x"), std::string::npos) << e;
  StageState after = m->stage ().state ();
  EXPECT_EQ (before.x_um, after.x_um);
  EXPECT_EQ (before.y_um, after.y_um);
  EXPECT_FALSE (after.moving);
  EXPECT_EQ (m->turret ().current ().magnification, 10);
}

TEST (SimMicroscope, ObjectivesSetMicronsPerPixel)
{
  auto m = open_sim ("sim://synthetic");
  const std::pair<int, double> expected[] = {{4, 2.5}, {10, 1.0}, {20, 0.5}, {40, 0.25}};
  for (auto [mag, upp] : expected) {
    m->turret ().select (mag);
    EXPECT_DOUBLE_EQ (m->turret ().current ().um_per_px, upp);
    cv::Mat rgb;
    m->camera ().configure ({64, 48});
    FrameRecord info = m->camera ().grab (rgb);
    EXPECT_EQ (info.objective, mag);
    EXPECT_DOUBLE_EQ (info.um_per_px, upp);
  }
  // A different camera changes the scale as optics say: pitch / (mag · adapter).
  auto other = open_sim ("sim://synthetic?pixel_pitch_um=6.5&adapter=1");
  other->turret ().select (20);
  EXPECT_DOUBLE_EQ (other->turret ().current ().um_per_px, 6.5 / 20);
}

TEST (SimMicroscope, StageMoveShiftsTheImageByTheExpectedPixels)
{
  auto m = open_sim ("sim://synthetic?noise=0&vignetting=0");
  ManualClock clock;
  m->set_clock (clock.fn ());
  m->turret ().select (20); // 0.5 µm/px
  m->camera ().configure ({400, 300});
  cv::Mat a, b;
  FrameRecord ia = m->camera ().grab (a);
  StageState s = m->stage ().state ();
  m->stage ().move_to (s.x_um + 30.0, s.y_um - 20.0); // +60 px, −40 px
  clock.now_us += 10000000;
  FrameRecord ib = m->camera ().grab (b);
  EXPECT_NEAR (ib.stage_x_um - ia.stage_x_um, 30.0, 1e-9);
  EXPECT_NEAR (ib.stage_y_um - ia.stage_y_um, -20.0, 1e-9);
  // b(x, y) shows what a showed at (x + 60, y − 40).
  cv::Mat a_part = a (cv::Rect (60, 0, 340, 260));
  cv::Mat b_part = b (cv::Rect (0, 40, 340, 260));
  EXPECT_EQ (cv::norm (a_part, b_part, cv::NORM_INF), 0.0);
  EXPECT_GT (cv::norm (a (cv::Rect (0, 0, 340, 260)), b_part, cv::NORM_L1) / b_part.total (), 5.0);
}

TEST (SimMicroscope, DefocusLowersSharpnessMonotonically)
{
  for (int mag : {10, 40}) {
    // Optics alone: no sensor noise, no (dithered) vignetting.
    auto m = open_sim ("sim://synthetic?noise=0&vignetting=0");
    m->turret ().select (mag);
    m->camera ().configure ({480, 360});
    StageState s = m->stage ().state ();
    double best = m->focus_at (s.x_um, s.y_um);
    double previous = 1e300;
    double steps_um[] = {0, 0.5, 1, 2, 4, 8, 16, 32, 64};
    for (double dz : steps_um) {
      // Depth of field grows ~8x from 40x/0.65 to 10x/0.25.
      double scaled = mag == 40 ? dz : dz * 8;
      m->focus ().set_speed_um_per_s (10000);
      m->focus ().move_to (best + scaled);
      while (m->focus ().state ().moving)
        g_usleep (1000);
      cv::Mat rgb;
      m->camera ().grab (rgb);
      double sharp = laplacian_variance (rgb);
      EXPECT_LT (sharp, previous) << mag << "x, dz=" << scaled;
      previous = sharp;
    }
  }
}

TEST (SimMicroscope, FocalSurfaceIsTiltedSoFocusMustFollowTheStage)
{
  auto m = open_sim ("sim://synthetic");
  double a = m->focus_at (30000, 12500), b = m->focus_at (65000, 12500);
  EXPECT_GT (std::abs (a - b), 3.0) << "35 mm apart should need refocusing at 40x";
  EXPECT_LT (std::abs (a - b), 40.0);
  // Home starts in focus.
  StageState s = m->stage ().state ();
  EXPECT_NEAR (m->focus ().state ().z_um, m->focus_at (s.x_um, s.y_um), 1e-9);
}

TEST (SimMicroscope, SameSeedSameFramesIncludingNoise)
{
  auto a = open_sim ("sim://synthetic?seed=5&noise=4");
  auto b = open_sim ("sim://synthetic?seed=5&noise=4");
  a->camera ().configure ({200, 150});
  b->camera ().configure ({200, 150});
  for (int k = 0; k < 3; k++) {
    cv::Mat fa, fb;
    a->camera ().grab (fa);
    b->camera ().grab (fb);
    EXPECT_EQ (cv::norm (fa, fb, cv::NORM_INF), 0.0) << "frame " << k;
  }
  // Noise differs from frame to frame.
  cv::Mat f1, f2;
  a->camera ().grab (f1);
  a->camera ().grab (f2);
  EXPECT_GT (cv::norm (f1, f2, cv::NORM_L1), 0.0);
}

TEST (MicroscopeUri, BadUrisAreRefusedWithAMessageNamingTheProblem)
{
  EXPECT_NE (error_text ([] { open_microscope ("foo://bar"); }).find ("unknown microscope URI scheme 'foo'"),
             std::string::npos);
  EXPECT_NE (error_text ([] { open_microscope ("not a uri"); }).find ("not a microscope URI"),
             std::string::npos);
  std::string e = error_text ([] { open_microscope ("sim://synthetic?noise=-3"); });
  EXPECT_NE (e.find ("noise=-3"), std::string::npos) << e;
  EXPECT_NE (e.find ("[0, 50]"), std::string::npos) << e;
  e = error_text ([] { open_microscope ("sim://synthetic?sed=3"); });
  EXPECT_NE (e.find ("unknown parameter 'sed'"), std::string::npos) << e;
  e = error_text ([] { open_microscope ("sim://synthetic?seed=abc"); });
  EXPECT_NE (e.find ("seed=abc"), std::string::npos) << e;
  e = error_text ([] { open_microscope ("sim://relative/slide.svs"); });
  EXPECT_NE (e.find ("sim:///absolute/path"), std::string::npos) << e;
}

TEST (MicroscopeUri, ParsesQueryAndPercentEncodedPaths)
{
  MicroscopeUri u ("sim:///data/my%20slide.svs?mpp=0.5");
  EXPECT_EQ (u.scheme (), "sim");
  EXPECT_EQ (u.path (), "/data/my slide.svs");
  EXPECT_DOUBLE_EQ (u.get_double ("mpp", 0, 0, 10), 0.5);
  EXPECT_EQ (u.get_int ("missing", 7, 0, 10), 7);
}
