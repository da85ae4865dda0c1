// Stage and FocusDrive on a serial motion controller (grbl://, proscan://),
// with the µm ↔ controller-unit calibration and travel limits of the URI:
//   slide µm = offset_um + units × um_per_unit   (per axis; a negative
//   um_per_unit flips the axis).  Limits are checked before anything is sent.
#pragma once

#include "motion_controller.h"

#include <livemicro/hw/microscope.h>
#include <livemicro/hw/uri.h>

#include <memory>

namespace livemicro::hw::serial {

struct AxisCalibration {
  double um_per_unit = 1.0;
  double offset_um = 0.0;
  AxisLimits limits;
  double to_units (double um) const { return (um - offset_um) / um_per_unit; }
  double to_um (double units) const { return offset_um + units * um_per_unit; }
};

// The URI keys every controller takes (documented in docs/hardware.md).
bool is_controller_scheme (const std::string &scheme);

// Opens grbl:///dev/… or proscan:///dev/… and starts its I/O thread.
std::shared_ptr<MotionController> open_controller (const MicroscopeUri &uri);

std::unique_ptr<Stage> make_stage (std::shared_ptr<MotionController> controller, const MicroscopeUri &uri);
std::unique_ptr<FocusDrive> make_focus (std::shared_ptr<MotionController> controller,
                                        const MicroscopeUri &uri);

DeviceStatus controller_status (const MotionController &controller, const std::string &part);

} // namespace livemicro::hw::serial
