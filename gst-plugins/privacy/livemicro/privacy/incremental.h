// livemicro::privacy — detection only where it can matter.
//
// A frame needs the detectors only where it shows slide area that has not
// been checked recently at this magnification and focus, and not where it is
// masked anyway (the slide label, regions found before).  IncrementalDetector
// remembers, in slide coordinates, which cells of the slide were checked and
// at which frame (cells of 4 × 4 detection pixels: 8 × 8 frame pixels at
// 1080p), and runs Detector::screen () on rectangles covering the cells still
// to check, each with context around it (48 detection pixels), so that a
// word or a code that straddles the edge of a rectangle is seen whole.
//
// Rules (for frames whose StageMeta follows the slide):
// - A cell is marked checked only when it lay entirely inside the frame and
//   inside an analysed rectangle.  A cell the frame shows only in part is
//   analysed again in every frame until it has been seen whole.
// - Area never checked is checked in the frame that first shows it: there is
//   no time budget, so no area is ever shown unchecked, and a frame costs
//   what it uncovers (a whole view after a jump, a strip while panning).
// - A checked cell is trusted for `recheck_frames` frames, then checked
//   again (1: every frame); while the stage pans the re-checks spread over
//   the frames, a still view is re-checked as a whole.
// - The record is kept per (µm per pixel, focus z, detection scale, region
//   classes): another objective, another focus (print out of focus may be
//   missed, and found once sharp) or a detector set with more classes starts
//   from nothing.  Up to 4 such layers and 512 tiles of 64 × 64 cells (8 MB)
//   are kept, least recently used dropped first (dropped means: checked
//   again).
#pragma once

#include "livemicro/privacy/detect.h"
#include "livemicro/privacy/mask.h"

#include <opencv2/core.hpp>

#include <cstdint>
#include <memory>
#include <vector>

namespace livemicro::privacy {

// A frame's pixels for the detectors, one rectangle at a time, so that a
// frame in another format is converted only where it is looked at.
class FrameSource {
public:
  virtual ~FrameSource () = default;
  // Frame size in pixels.
  virtual cv::Size size () const = 0;
  // 8-bit RGB (or 1-channel luma) pixels of `rect` (frame pixels, inside the
  // frame), scaled by scale ().
  virtual cv::Mat pixels (const cv::Rect &rect) = 0;
  // ≤ 1: pixels () returns copies scaled by this (e.g. 0.5 for 4:2:0 YUV
  // converted at chroma resolution).
  virtual double scale () const { return 1.0; }
  // False: pixels () returns luma only.
  virtual bool colour () const { return true; }
  // Rectangles passed to pixels () start at multiples of this.
  virtual int alignment () const { return 1; }
};

// A cv::Mat frame (8-bit, 3 channels RGB or 1 channel).
class MatSource : public FrameSource {
public:
  explicit MatSource (const cv::Mat &frame) : frame_ (frame) {}
  cv::Size size () const override { return frame_.size (); }
  cv::Mat pixels (const cv::Rect &rect) override { return frame_ (rect); }
  bool colour () const override { return frame_.channels () == 3; }

private:
  cv::Mat frame_;
};

// What one call looked at.
struct IncrementalStats {
  int cells_visible = 0;  // cells of the record the frame touches
  int cells_fresh = 0;    // checked within recheck_frames
  int cells_hidden = 0;   // masked anyway in this frame
  int cells_to_check = 0; // the rest: analysed in this frame
  int rects = 0;          // rectangles analysed
  double analysed_px = 0; // frame pixels given to the detectors, context included
  ScreenStats screen;
};

class IncrementalDetector {
public:
  IncrementalDetector ();
  ~IncrementalDetector ();
  IncrementalDetector (const IncrementalDetector &) = delete;
  IncrementalDetector &operator= (const IncrementalDetector &) = delete;

  // Looks for `classes` where frame `frame_number` (increasing; this
  // caller's own count) taken at `frame` shows slide area not checked within
  // the last `recheck_frames` frames at its µm per pixel, focus
  // (stage_z_um) and this class set, and not masked anyway: `hidden`
  // (8-bit, frame size, 255 = masked in this frame; may be empty) within
  // `hidden_roi`.  Detections are in frame pixels.  Throws as
  // Detector::screen () does, and std::range_error for a position beyond
  // ~10^9 cells; then nothing is marked checked.
  std::vector<Detection> detect (FrameSource &source, const hw::FrameRecord &frame,
                                 const std::vector<RegionClass> &classes, const cv::Mat &hidden,
                                 const cv::Rect &hidden_roi, uint64_t frame_number, unsigned recheck_frames,
                                 IncrementalStats *stats = nullptr);

  // Forgets every checked cell (new stream, new caps).
  void clear ();
  // Tiles of 64 × 64 cells held (memory: 16 KB each).
  size_t tiles () const;

  // Test hook, as Detector::set_inject_fault.
  void set_inject_fault (bool on);

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace livemicro::privacy
