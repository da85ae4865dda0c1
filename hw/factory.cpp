// open_microscope(): the one place that maps a URI scheme to a backend.
#include <livemicro/hw/microscope.h>
#include <livemicro/hw/uri.h>

#include "compose/composed_microscope.h"
#include "serial/controller_parts.h"
#include "sim/file_slides.h"
#include "sim/sim_microscope.h"
#include "sim/synthetic_slide.h"

namespace livemicro::hw {

namespace {

std::unique_ptr<sim::Slide> open_sim_slide (const MicroscopeUri &uri, uint64_t seed);

std::unique_ptr<Microscope>
open_sim (const MicroscopeUri &uri)
{
  sim::SimOptions o;
  uri.check_keys ({"seed", "mpp", "pixel_pitch_um", "adapter", "noise", "light", "vignetting",
                   "stage_speed_um_s", "focus_speed_um_s", "cache_mb", "prefetch"});
  o.seed = (uint64_t)uri.get_int ("seed", (int64_t)sim::SyntheticSlide::kDefaultSeed, 0, INT64_MAX);
  o.pixel_pitch_um = uri.get_double ("pixel_pitch_um", o.pixel_pitch_um, 0.5, 50);
  o.adapter_magnification = uri.get_double ("adapter", o.adapter_magnification, 0.1, 4);
  o.noise_sigma = uri.get_double ("noise", o.noise_sigma, 0, 50);
  o.brightness = uri.get_double ("light", o.brightness, 0.05, 4);
  o.vignetting = uri.get_double ("vignetting", o.vignetting, 0, 0.9);
  o.stage_speed_um_per_s = uri.get_double ("stage_speed_um_s", o.stage_speed_um_per_s, 1, 100000);
  o.focus_speed_um_per_s = uri.get_double ("focus_speed_um_s", o.focus_speed_um_per_s, 1, 10000);
  o.cache_bytes = (size_t)uri.get_int ("cache_mb", (int64_t)(o.cache_bytes >> 20), 16, 16384) << 20;

  o.prefetch = uri.get_int ("prefetch", 1, 0, 1) != 0;
  return std::make_unique<sim::SimMicroscope> (uri.text (), open_sim_slide (uri, o.seed), o);
}

std::unique_ptr<sim::Slide>
open_sim_slide (const MicroscopeUri &uri, uint64_t seed)
{
  std::unique_ptr<sim::Slide> slide;
  if (uri.host () == "synthetic" && (uri.path ().empty () || uri.path () == "/")) {
    if (uri.has ("mpp"))
      throw Error (ErrorKind::kUnsupported,
                   "microscope URI '" + uri.text ()
                       + "': mpp applies to slide files, the synthetic slide has its own scale");
    slide = std::make_unique<sim::SyntheticSlide> (seed);
  } else if (uri.host ().empty () && !uri.path ().empty ()) {
    slide = sim::open_slide_file (uri.path (), uri.get_double ("mpp", 0, 1e-3, 1000));
  } else {
    throw Error (ErrorKind::kUnsupported,
                 "microscope URI '" + uri.text ()
                     + "' names no slide: use sim://synthetic or sim:///absolute/path/to/slide");
  }
  return slide;
}

} // namespace

SoftLimits
soft_limits (const MicroscopeState &st, int frame_width, int frame_height)
{
  SoftLimits l{st.x_limits, st.y_limits, st.z_limits};
  const double half_w = frame_width * st.objective.um_per_px / 2;
  const double half_h = frame_height * st.objective.um_per_px / 2;
  if (l.x.max_um - l.x.min_um > 2 * half_w) {
    l.x.min_um += half_w;
    l.x.max_um -= half_w;
  }
  if (l.y.max_um - l.y.min_um > 2 * half_h) {
    l.y.min_um += half_h;
    l.y.max_um -= half_h;
  }
  if (st.objective.working_distance_um > 0 && st.focal_plane_z_um > 0) {
    // Raising z brings the slide towards the objective.
    double contact = st.focal_plane_z_um + st.objective.working_distance_um;
    l.z.max_um = std::max (l.z.min_um, std::min (l.z.max_um, contact - 100.0));
  }
  return l;
}

std::unique_ptr<Microscope>
open_microscope (const std::string &text)
{
  MicroscopeUri uri (text);
  if (uri.scheme () == "sim")
    return open_sim (uri);
  if (uri.scheme () == "compose")
    return compose::open_composed (uri);
  if (compose::is_camera_scheme (uri.scheme ()))
    return compose::open_camera_only (uri);
  if (serial::is_controller_scheme (uri.scheme ()))
    throw Error (ErrorKind::kUnsupported,
                 "'" + text
                     + "' is a stage controller, not a "
                       "microscope: a microscope needs a camera, e.g. compose:?camera=aravis://Fake_1&stage="
                     + text);
  throw Error (ErrorKind::kUnsupported, "unknown microscope URI scheme '" + uri.scheme () + "' in '" + text
                                            + "' (supported: sim, aravis, v4l2, compose)");
}

} // namespace livemicro::hw
