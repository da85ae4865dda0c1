// livemicro::hw::FrameRecord — where and how one frame was taken.
//
// The one type for a frame's record from the camera to every viewer: a
// Camera's grab() returns it, microscopesrc carries it through the pipeline
// as the public StageMeta (livemicro/stagemeta.h; converted in
// livemicro/frame_record_meta.h), the worker sends it to livemicrod beside
// each encoded access unit (orchestrator/common/wire.h), and every access
// unit carries it to players as an SEI message (orchestrator/common/h264.h).
// Plain data, no GObject and no OpenCV, so any of those layers can include it.
#pragma once

#include <cstdint>

namespace livemicro::hw {

struct FrameRecord {
  double stage_x_um = 0.0; // slide x at the frame centre (microscope.h's coordinates)
  double stage_y_um = 0.0; // slide y at the frame centre
  double stage_z_um = 0.0; // focus drive position
  int objective = 0;       // magnification (4, 10, 20, 40, ...)
  double um_per_px = 0.0;  // one frame pixel on the slide
  // The frame size these values refer to; 0 until the element that
  // produces the frame knows it (a camera leaves it 0).
  int frame_width = 0;
  int frame_height = 0;
  bool moving = false;         // the stage or the focus moved during the exposure
  int64_t capture_unix_us = 0; // wall clock of the exposure, µs since the Unix epoch; 0 = unknown
  uint64_t frame_number = 0;   // the camera's frame counter
};

} // namespace livemicro::hw
