// Autofocus on the virtual microscope: from a defocused start it ends within
// 1 µm of the true best focus (known from the simulation) at 40x.
#include "sim/sim_microscope.h"

#include <livemicro/hw/autofocus.h>
#include <livemicro/hw/microscope.h>

#include <glib.h>
#include <gtest/gtest.h>

using namespace livemicro::hw;

namespace {

std::unique_ptr<sim::SimMicroscope>
open_sim (const std::string &uri)
{
  auto m = open_microscope (uri);
  return std::unique_ptr<sim::SimMicroscope> (dynamic_cast<sim::SimMicroscope *> (m.release ()));
}

} // namespace

TEST (Autofocus, SharpnessPeaksAtBestFocus)
{
  auto m = open_sim ("sim://synthetic?noise=2");
  m->turret ().select (40);
  m->camera ().configure ({640, 360});
  StageState s = m->stage ().state ();
  double best = m->focus_at (s.x_um, s.y_um);
  cv::Mat rgb;
  m->focus ().set_speed_um_per_s (10000);
  auto at = [&] (double z) {
    m->focus ().move_to (z);
    while (m->focus ().state ().moving)
      g_usleep (500);
    m->camera ().grab (rgb);
    return focus_sharpness (rgb);
  };
  double in_focus = at (best);
  EXPECT_GT (in_focus, at (best + 2) * 1.5);
  EXPECT_GT (in_focus, at (best - 2) * 1.5);
}

TEST (Autofocus, EndsWithinOneMicronOfBestFocusAt40x)
{
  auto m = open_sim ("sim://synthetic?noise=2&focus_speed_um_s=10000");
  m->turret ().select (40);
  m->camera ().configure ({640, 360});
  const Objective o = m->turret ().current ();
  AutofocusPlan plan = AutofocusPlan::for_objective (o.numerical_aperture, o.um_per_px);
  StageState st = m->stage ().state ();
  // Several places on the tissue and starting offsets, up to ±25 µm.
  const double offsets[] = {-25, -9, 4, 17};
  int i = 0;
  for (double dx : {0.0, 3000.0, -4000.0, 2000.0}) {
    m->stage ().set_speed_um_per_s (100000);
    m->stage ().move_to (st.x_um + dx, st.y_um);
    while (m->stage ().state ().moving)
      g_usleep (500);
    StageState here = m->stage ().state ();
    double truth = m->focus_at (here.x_um, here.y_um);
    cv::Mat rgb;
    auto measure = [&] (double z) -> std::optional<double> {
      m->focus ().move_to (z);
      while (m->focus ().state ().moving)
        g_usleep (200);
      m->camera ().grab (rgb);
      return focus_sharpness (rgb);
    };
    AutofocusResult r = autofocus (truth + offsets[i++], 0, 2000, plan, measure);
    ASSERT_TRUE (r.ok) << r.error;
    EXPECT_NEAR (r.best_z_um, truth, 1.0) << "at x+" << dx;
    EXPECT_LT (r.measurements, 40);
  }
}

TEST (Autofocus, StopsWhenTheMeasurementIsAborted)
{
  int calls = 0;
  AutofocusResult r = autofocus (1000, 0, 2000, AutofocusPlan::for_objective (0.65, 0.25),
                                 [&] (double) -> std::optional<double> {
                                   if (++calls > 3)
                                     return std::nullopt;
                                   return 1.0;
                                 });
  EXPECT_FALSE (r.ok);
  EXPECT_EQ (calls, 4);
}
