// livemicro::privacy — masks in slide coordinates, rasterised into frames.
//
// Plain C++ on cv::Mat, no GObject: the privacymask element is thin glue.
#pragma once

#include "livemicro/privacy/profiles.h"

#include <livemicro/hw/frame_record.h>
#include <opencv2/core.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace livemicro::privacy {

// Where a frame lies on the slide: its hw::FrameRecord (the StageMeta's
// stage_x_um, stage_y_um, um_per_px, frame_width and frame_height).
// Pixel (px, py) — centres at +0.5 — shows slide point
//   x = stage_x_um + (px + 0.5 − frame_width / 2) · um_per_px   (same for y).
//
// Whether the record places the frame: finite, µm per pixel > 0, a size.
bool places_frame (const hw::FrameRecord &frame);
// Continuous pixel-index coordinates: pixel i covers [i − 0.5, i + 0.5].
cv::Point2d to_frame (const hw::FrameRecord &frame, const cv::Point2d &slide_um);
cv::Point2d to_slide (const hw::FrameRecord &frame, const cv::Point2d &frame_px);

enum class MaskMethod { kFill, kPixelate, kBlur };
const char *mask_method_name (MaskMethod m);

// A polygon in frame pixel-index coordinates to be masked, grown by
// `margin_px` on every side.  Every pixel whose square footprint comes within
// margin_px of the polygon is masked (conservative rasterisation).
struct FramePolygon {
  std::vector<cv::Point2d> points;
};

// Builds the 8-bit mask (255 = hide) of `polygons` grown by margin_px, for a
// frame of `size`; returns the bounding box of what was set (empty: nothing).
cv::Rect rasterise (const std::vector<FramePolygon> &polygons, double margin_px, cv::Size size,
                    cv::Mat &mask);

// Hides the masked pixels of one image plane (any depth-8 channels count):
// fill with `fill` (per channel), or pixelate/blur the masked area and copy it
// in.  `roi` is rasterise()'s bounding box (in this plane's pixels).
void apply_mask (cv::Mat &plane, const cv::Mat &mask, const cv::Rect &roi, MaskMethod method,
                 const cv::Scalar &fill, int block_px);

// A region found in a frame and remembered in slide coordinates.
struct RememberedRegion {
  RegionClass region_class = RegionClass::kText;
  cv::Rect2d rect_um;
  uint64_t first_frame = 0; // frame count of the element when first seen
  uint64_t hits = 1;        // times it was detected
};

// Regions found so far; overlapping regions of one class merge.
class RegionMemory {
public:
  // Adds a region; returns true when the memory changed shape (a new region
  // or a merge that grew one), false when it was already covered.
  bool remember (RegionClass c, const cv::Rect2d &rect_um, uint64_t frame);
  const std::vector<RememberedRegion> &regions () const { return regions_; }
  void clear () { regions_.clear (); }
  // JSON array [{"class":..., "x_um":..., "y_um":..., "width_um":...,
  // "height_um":..., "first_frame":..., "hits":...}, ...]
  std::string to_json () const;

private:
  std::vector<RememberedRegion> regions_;
};

} // namespace livemicro::privacy
