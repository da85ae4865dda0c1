// livemicro::privacy — finding what must be hidden in a frame: printed text
// (and printed text on a paper label), QR codes and 1D barcodes.
//
// Detectors run on a downscaled grey copy of the frame: OpenCV's QR detector
// (Debian's 4.6 has no QUIRC: it finds symbols without decoding them, which
// is all a mask needs) and opencv-contrib's cv::barcode::BarcodeDetector
// fail on very large modules, and the text detector looks for ink strokes of
// a few pixels.  What they miss at one scale is looked for at a second one.
#pragma once

#include "livemicro/privacy/profiles.h"

#include <opencv2/core.hpp>

#include <memory>
#include <vector>

namespace livemicro::privacy {

struct Detection {
  RegionClass region_class = RegionClass::kText;
  std::vector<cv::Point2d> quad_px;  // corners in frame pixel-index coordinates
  cv::Rect2d bounds_px () const;
};

class Detector {
public:
  Detector ();
  ~Detector ();
  Detector (const Detector &) = delete;
  Detector &operator= (const Detector &) = delete;

  // Looks for the classes in `classes` in an 8-bit frame: 3 channels (RGB or
  // BGR; `colour` says the ink detector may use chroma) or 1 channel (luma).
  // Throws cv::Exception / std::exception when a detector fails.
  // `frame_scale` < 1 says `frame` is already a copy of the frame scaled by
  // that factor; detections are returned in the full frame's pixels.
  std::vector<Detection> detect (const cv::Mat &frame, const std::vector<RegionClass> &classes,
      bool colour = true, double frame_scale = 1.0);

  // The scale the detectors work at for a frame of `size` (≤ 1): callers
  // that must convert the frame first can convert a copy of this size.
  static double work_scale (cv::Size size);

  // Test hook: when set, detect() throws (LIVEMICRO_PRIVACY_INJECT_FAULT=detect
  // in the element), so the fail-closed path is exercised for real.
  void set_inject_fault (bool on) { inject_fault_ = on; }

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool inject_fault_ = false;
};

}  // namespace livemicro::privacy
