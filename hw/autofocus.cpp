#include <livemicro/hw/autofocus.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace livemicro::hw {

double
focus_sharpness (const cv::Mat &img, double centre)
{
  if (img.empty ())
    return 0;
  cv::Rect roi ((int)(img.cols * (1 - centre) / 2), (int)(img.rows * (1 - centre) / 2),
                std::max (1, (int)(img.cols * centre)), std::max (1, (int)(img.rows * centre)));
  cv::Mat grey;
  if (img.channels () == 3)
    cv::cvtColor (img (roi), grey, cv::COLOR_RGB2GRAY);
  else if (img.channels () == 4)
    cv::cvtColor (img (roi), grey, cv::COLOR_RGBA2GRAY);
  else
    grey = img (roi);
  cv::Mat lap;
  cv::Laplacian (grey, lap, CV_32F);
  cv::Scalar mean, stddev;
  cv::meanStdDev (lap, mean, stddev);
  return stddev[0] * stddev[0];
}

AutofocusPlan
AutofocusPlan::for_objective (double na, double um_per_px)
{
  // Depth of field (µm) with λ = 0.55 µm and the camera's sampling; at
  // 40x/0.65 about 1.7 µm, at 10x/0.25 about 13 µm, at 4x/0.10 about 80 µm.
  na = std::clamp (na, 0.02, 0.95);
  double dof = 0.55 / (na * na) + um_per_px / na;
  AutofocusPlan p;
  p.coarse_step_um = 2.0 * dof;
  p.range_um = 6 * p.coarse_step_um;
  p.fine_step_um = dof / 2.0;
  return p;
}

namespace {

// Vertex of the parabola through three (z, s) points, when it is a maximum
// inside [z0, z2].
std::optional<double>
parabola_peak (double z0, double s0, double z1, double s1, double z2, double s2)
{
  double d = (z0 - z1) * (z0 - z2) * (z1 - z2);
  if (std::abs (d) < 1e-12)
    return std::nullopt;
  double a = (z2 * (s1 - s0) + z1 * (s0 - s2) + z0 * (s2 - s1)) / d;
  double b = (z2 * z2 * (s0 - s1) + z1 * z1 * (s2 - s0) + z0 * z0 * (s1 - s2)) / d;
  if (a >= 0)
    return std::nullopt;
  double z = -b / (2 * a);
  if (z < std::min (z0, z2) || z > std::max (z0, z2))
    return std::nullopt;
  return z;
}

} // namespace

AutofocusResult
autofocus (double start_z, double z_min, double z_max, const AutofocusPlan &plan,
           const std::function<std::optional<double> (double)> &measure)
{
  AutofocusResult r;
  auto probe = [&] (double z) -> std::optional<double> {
    z = std::clamp (z, z_min, z_max);
    auto s = measure (z);
    if (s) {
      r.samples.emplace_back (z, *s);
      r.measurements++;
    }
    return s;
  };
  // Coarse: scan the window; if the sharpest is at an edge, slide the window
  // that way (at most twice) — the focus may be further than the range.
  double centre = start_z, best_z = start_z, best_s = -1;
  for (int shift = 0; shift < 3; shift++) {
    int n = (int)std::round (plan.range_um / plan.coarse_step_um);
    int best_k = 0;
    for (int k = -n; k <= n; k++) {
      double z = centre + k * plan.coarse_step_um;
      if (z < z_min || z > z_max)
        continue;
      auto s = probe (z);
      if (!s) {
        r.error = "autofocus stopped";
        return r;
      }
      if (*s > best_s) {
        best_s = *s;
        best_z = z;
        best_k = k;
      }
    }
    if (best_k != -n && best_k != n)
      break;
    centre = best_z + best_k / std::max (1, std::abs (best_k)) * plan.range_um;
  }
  // Fine: around the coarse best, then a parabola through the best three.
  std::vector<std::pair<double, double>> fine;
  for (double z = best_z - plan.coarse_step_um; z <= best_z + plan.coarse_step_um + 1e-9;
       z += plan.fine_step_um) {
    auto s = probe (z);
    if (!s) {
      r.error = "autofocus stopped";
      return r;
    }
    fine.emplace_back (std::clamp (z, z_min, z_max), *s);
  }
  auto top = std::max_element (fine.begin (), fine.end (),
                               [] (const auto &a, const auto &b) { return a.second < b.second; });
  double z_best = top->first;
  if (top != fine.begin () && std::next (top) != fine.end ()) {
    auto prev = std::prev (top), next = std::next (top);
    if (auto peak
        = parabola_peak (prev->first, prev->second, top->first, top->second, next->first, next->second))
      z_best = *peak;
  }
  // Finish at the best position, with a measurement there.
  auto s = probe (z_best);
  if (!s) {
    r.error = "autofocus stopped";
    return r;
  }
  r.ok = true;
  r.best_z_um = z_best;
  r.best_sharpness = *s;
  return r;
}

} // namespace livemicro::hw
