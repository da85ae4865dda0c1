// The virtual microscope: a motorised stage, focus drive and turret over a
// Slide, and a camera that renders what the objective sees.
//
// Optics (documented in docs/hardware.md):
//   camera pixel pitch 5.0 µm behind a 0.5x C-mount adapter, so µm/px at the
//   specimen = pitch / (magnification · adapter): 4x 2.5, 10x 1.0, 20x 0.5,
//   40x 0.25 µm/px (the usual whole-slide scanner scales);
//   objectives 4x/0.10, 10x/0.25, 20x/0.40, 40x/0.65 NA;
//   best focus z_f(x, y) is a tilted, curved, slightly rippled surface over
//   the slide; defocus blur is Gaussian with σ = ½·|z − z_f|·tan(asin NA),
//   converted to pixels;
//   illumination: brightness × (1 − vignetting·r²); additive sensor noise of
//   σ `noise` grey levels, drawn from a seeded bank per frame number.
#pragma once

#include "slide.h"
#include "tile_cache.h"

#include <livemicro/hw/microscope.h>

#include <functional>
#include <memory>
#include <mutex>

namespace livemicro::hw::sim {

struct SimOptions {
  uint64_t seed = 20190709;
  double pixel_pitch_um = 5.0;
  double adapter_magnification = 0.5;
  double stage_speed_um_per_s = 20000.0;
  double focus_speed_um_per_s = 500.0;
  double noise_sigma = 2.0; // grey levels
  double brightness = 1.0;  // 1 = nominal lamp
  double vignetting = 0.12; // relative fall-off at the frame corner
  size_t cache_bytes = size_t (384) << 20;
  int tile_px = 256;
  bool prefetch = true; // render tiles around the view on a worker
};

// Microseconds on a monotonic clock; tests substitute a manual one.
using MonotonicClock = std::function<int64_t ()>;

class SimMicroscope : public Microscope {
public:
  SimMicroscope (std::string uri, std::unique_ptr<Slide> slide, const SimOptions &options);
  ~SimMicroscope () override;

  std::string uri () const override { return uri_; }
  std::string description () const override;
  Camera &camera () override;
  Stage &stage () override;
  FocusDrive &focus () override;
  ObjectiveTurret &turret () override;
  MicroscopeState state () const override;
  void home () override;
  // Rendered from the slide this microscope has open (Slide::render is safe
  // beside the capture's).
  std::optional<SlideOverview> overview (int max_side_px) const override;

  const Slide &slide () const { return *slide_; }
  // Best-focus z at a slide point.
  double focus_at (double x_um, double y_um) const;
  // Gaussian σ in pixels that a defocus of dz_um produces with `objective`.
  static double defocus_sigma_px (double dz_um, const Objective &objective);
  TileCache::Stats cache_stats () const;
  void set_clock (MonotonicClock clock);

private:
  class Parts;
  std::string uri_;
  std::unique_ptr<Slide> slide_;
  std::unique_ptr<Parts> parts_;
};

} // namespace livemicro::hw::sim
