// livemicro::hw — travel limits, as plain data (no OpenCV, no GObject), so
// the orchestrator's wire codec and the daemon use the hardware layer's own
// types.  soft_limits() (microscope.h) computes them for an objective.
#pragma once

namespace livemicro::hw {

struct AxisLimits {
  double min_um = 0.0;
  double max_um = 0.0;
  bool contains (double v) const { return v >= min_um && v <= max_um; }
};

// Limits for remote control with the current objective: the field of view
// stays on the slide (x, y shrink by half the frame), and the focus stops
// 100 µm short of the objective touching the slide (high-magnification
// objectives have short working distances).
struct SoftLimits {
  AxisLimits x, y, z;
};

} // namespace livemicro::hw
