// A microscope made of parts: a camera (aravis://, v4l2://), optionally an
// XY stage and a focus drive on serial controllers (grbl://, proscan://),
// and the mounted objectives with their µm-per-pixel calibration.
//
//   compose:?camera=URI[&stage=URI][&focus=URI][&objectives=MAG:UM_PER_PX[:NA],…]
//           [&objective=MAG]
//
// Nested URIs are query values: percent-encode their own '&' (%26), '%'
// (%25) and '#' (%23); '?', '/', ':' and '=' may stay as they are.  A stage
// and focus on one controller (GRBL X/Y/Z) are written with the same URI
// and share one connection and I/O thread.  Without stage/focus the
// microscope reports a fixed position and refuses moves with a clear error.
// A bare camera URI (microscope=aravis://Fake_1) is a composition with that
// camera alone and one uncalibrated objective (1x, 1 µm/px).
#pragma once

#include <livemicro/hw/microscope.h>
#include <livemicro/hw/uri.h>

#include <memory>

namespace livemicro::hw::compose {

bool is_camera_scheme (const std::string &scheme);

std::unique_ptr<Microscope> open_composed (const MicroscopeUri &uri);
std::unique_ptr<Microscope> open_camera_only (const MicroscopeUri &uri);

} // namespace livemicro::hw::compose
