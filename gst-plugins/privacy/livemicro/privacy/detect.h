// livemicro::privacy — finding what must be hidden in a frame: printed text
// (and printed text on a paper label), QR codes and 1D barcodes.
//
// Detectors run on a downscaled grey copy of the frame: OpenCV's QR detector
// (Debian's 4.6 has no QUIRC: it finds symbols without decoding them, which
// is all a mask needs) and opencv-contrib's cv::barcode::BarcodeDetector
// fail on very large modules, and the text detector looks for ink strokes of
// a few pixels.  What they miss at one scale is looked for at a second one.
//
// Two ways to run them:
// - detect(): every detector on the whole frame (the exhaustive path; ~35 ms
//   per 1080p frame on one core, most of it OpenCV's QR search, which works
//   on at least 512 px whatever it is given);
// - screen(): the same text analysis at the same resolution on a rectangle of
//   the frame, restricted to where there is ink, and codes only on
//   print-like candidates (dark marks next to bright, neutral paper,
//   two-toned, large enough to be a code), told by their structure: a QR
//   code has three finder patterns (dark:light:dark:light:dark 1:1:3:1:1
//   along a row, a column and both diagonals) at the corners of a right
//   isosceles triangle, as OpenCV's search requires too; a barcode has
//   edges of one orientation and many bars, crossed alike by parallel lines
//   through its middle.  The candidate is masked.  OpenCV's detectors, which
//   rescale every candidate to 512 px (~10–15 ms a call on a 2 GHz core),
//   are left to detect().  What the text analysis finds (neutral ink: text,
//   and codes printed in black) is found by both; screen() misses, in
//   exchange for its cost, a code in coloured or grey ink that has no paper
//   around it, or that shows fewer than three finder patterns or no parallel
//   bars (OpenCV's detectors cannot find those either).
#pragma once

#include "livemicro/privacy/profiles.h"

#include <opencv2/core.hpp>

#include <memory>
#include <vector>

namespace livemicro::privacy {

// What screen() looked at.
struct ScreenStats {
  int candidates = 0;   // print-like candidates for the code detectors
  int qr_runs = 0;      // candidates with three finder patterns, checked for a QR symbol's layout
  int barcode_runs = 0; // candidates with parallel edges, checked for a barcode's bars
  int cut = 0;          // candidates reaching the edge, looked at again
};

// A code candidate that reaches the edge of the pixels screen () was given,
// in frame pixels, and the sides where it does.
struct CutCandidate {
  cv::Rect rect;
  bool left = false, top = false, right = false, bottom = false;
};

struct Detection {
  RegionClass region_class = RegionClass::kText;
  std::vector<cv::Point2d> quad_px; // corners in frame pixel-index coordinates
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

  // The cheap path on a rectangle of a frame.  `pixels` shows frame pixels
  // [origin, origin + pixels.size () / pixels_scale) scaled by pixels_scale
  // (≤ 1); the detectors work at `work_scale` (≤ pixels_scale; use
  // work_scale () of the whole frame so that a rectangle is analysed as the
  // whole frame would be).  Code detectors run only for candidates that
  // touch `core` (frame pixels): the rest of the rectangle is context.
  // `frame` is the whole frame's size (empty: `pixels` shows all of it): a
  // candidate cut by the frame's edge gets no QR check (it needs the whole
  // symbol's three finder patterns; its ink is masked as text).  With `cut`, candidates that
  // reach an edge of `pixels` inside the frame (a code that may go on
  // beyond it) are listed there instead of searched: the caller looks at
  // them again with more around them.  When `pixels` are finer than the
  // working scale, a candidate that is not two-toned at the working size
  // (barcode bars of one working pixel straddling two) is checked for
  // a barcode in `pixels` themselves.
  // Detections are returned in frame pixels.  Throws as detect () does.
  std::vector<Detection> screen (const cv::Mat &pixels, const std::vector<RegionClass> &classes, bool colour,
                                 double pixels_scale, double work_scale, cv::Point origin,
                                 const cv::Rect &core, ScreenStats *stats = nullptr, cv::Size frame = {},
                                 std::vector<CutCandidate> *cut = nullptr);

  // The scale the detectors work at for a frame of `size` (≤ 1): callers
  // that must convert the frame first can convert a copy of this size.
  static double work_scale (cv::Size size);

  // `pixels` scaled by `scale` (< 1; each side rounded, at least 1 pixel)
  // as the detectors shrink a frame: by whole
  // factors, averages of whole blocks (OpenCV's area path); by other
  // factors of 2/3 or more (a 1280-wide frame to 960: 3/4), bilinear
  // samples, at a sixth of the cost of OpenCV's area path for such factors
  // (1.1 against 6.4 ms for a 720p RGB frame): a stroke 2 pixels wide comes
  // out at least as dark as the area average leaves it (a 1-pixel stroke,
  // which is not ink at these scales either way, within 10 %); below 2/3,
  // the area average.
  static void shrink (const cv::Mat &pixels, cv::Mat &out, double scale);

  // Test hook: when set, detect() throws (LIVEMICRO_PRIVACY_INJECT_FAULT=detect
  // in the element), so the fail-closed path is exercised for real.
  void set_inject_fault (bool on) { inject_fault_ = on; }

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool inject_fault_ = false;
};

} // namespace livemicro::privacy
