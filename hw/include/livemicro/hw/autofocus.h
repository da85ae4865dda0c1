// Autofocus: a coarse-to-fine search for the sharpest focus position, on a
// sharpness metric of live frames.  Plain C++: the caller says how to move
// the focus and measure a frame, so it runs on the virtual microscope in a
// unit test and on any backend in the media worker.
#pragma once

#include <opencv2/core.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace livemicro::hw {

// Variance of the Laplacian of the grey image, on the central region
// (fraction `centre` of each side): high when in focus.
double focus_sharpness (const cv::Mat &rgb_or_grey, double centre = 0.6);

struct AutofocusPlan {
  double range_um = 0; // coarse search: z ± range
  double coarse_step_um = 0;
  double fine_step_um = 0;
  // A plan sized by the objective's depth of field: λ/NA² + pixel/(M·NA).
  static AutofocusPlan for_objective (double numerical_aperture, double um_per_px);
};

struct AutofocusResult {
  bool ok = false;
  double best_z_um = 0;
  double best_sharpness = 0;
  int measurements = 0;
  std::string error;
  std::vector<std::pair<double, double>> samples; // (z, sharpness)
};

// measure(z) moves the focus to z, waits for a frame taken there, and returns
// its sharpness; std::nullopt aborts (stop, device error).  z stays within
// [z_min, z_max].
AutofocusResult autofocus (double start_z_um, double z_min_um, double z_max_um, const AutofocusPlan &plan,
                           const std::function<std::optional<double> (double)> &measure);

} // namespace livemicro::hw
