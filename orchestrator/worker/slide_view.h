// What the worker tells the pages about the slide beyond the video (plain
// C++ over OpenCV, no GObject): the nuclei of the latest analysis in slide
// µm, and a low-resolution map of the whole slide stitched from the frames
// captured, placed by their StageMeta, over the slide's macro image where
// the microscope has one.
#pragma once

#include "common/worker_protocol.h"

#include <livemicro/featuresmeta.h>

#include <opencv2/core.hpp>

#include <mutex>
#include <optional>

namespace livemicro::orchestrator {

// The analysed field of a FeaturesMeta with nuclei in slide coordinates:
// each nucleus' own slide position places the frame (pixel x spans
// [x, x+1), the frame's centre is at the stage position), outlines are
// simplified to `tolerance_um` and at most `max_nuclei` are kept.  Nothing
// when the meta has no nuclei or they have no slide position.
std::optional<AnalysedField> analysed_field (const LivemicroFeaturesMeta &meta, double tolerance_um = 0.25,
                                             size_t max_nuclei = 4000);

// The slide map.  Thread-safe: frames are pasted from the streaming thread,
// the map is read from the main loop.
class SlideMap {
public:
  // Covers `area_um` with at most `max_side_px` pixels on its longer side.
  SlideMap (const cv::Rect2d &area_um, int max_side_px);
  // The slide's own macro image of `area_um` (it replaces what is there).
  void set_macro (const cv::Mat &rgb, const cv::Rect2d &area_um);
  // Pastes an RGB frame whose centre is at (x_um, y_um), at `um_per_px`.
  // False when it falls outside the map, or on the spot (within a map pixel)
  // and scale of the last one: a still stage changes nothing on the map.
  bool paste (const cv::Mat &rgb, double x_um, double y_um, double um_per_px);
  // The map when it changed since the last call (PNG, base64), else nothing.
  std::optional<SlideOverview> take_if_changed ();
  cv::Rect2d area_um () const { return area_um_; }
  double um_per_px () const { return um_per_px_; }

private:
  cv::Rect2d area_um_;
  double um_per_px_;
  std::mutex mutex_;
  cv::Mat rgb_;
  bool macro_ = false, changed_ = true;
  cv::Point last_at_{-1, -1};
  double last_um_per_px_ = 0;
};

} // namespace livemicro::orchestrator
