// Placing an analysis result on the frames that come after it, in slide
// coordinates, and the nuclear density map of the overlay.  Plain C++ (no
// GObject): featureoverlay is the glue between these and the metas.
//
// A result is computed on one frame and drawn on later ones (the analysis
// takes 0.2-4.5 s on a loaded node).  Between the two the stage may have
// moved, the objective or the focus changed: the outlines are mapped through
// the slide (shift by the stage delta, rescale with µm/px), and nothing is
// placed when the two frames do not show the same plane at the same
// sampling, or when the result is too old.
#pragma once

#include <opencv2/core.hpp>

#include <cmath>
#include <cstddef>
#include <vector>

namespace livemicro::analysis {

// Where a frame shows the slide (StageMeta's geometry).  Frame coordinates
// are continuous pixels, pixel i spanning [i, i+1): frame point
// (width_px / 2, height_px / 2) shows slide point (x_um, y_um).
struct FieldOfView {
  double x_um = NAN, y_um = NAN; // slide point at the frame centre
  double z_um = NAN;             // focus drive; NaN = unknown
  int objective = 0;             // magnification; 0 = unknown
  double um_per_px = 0;
  double width_px = 0, height_px = 0;
  bool moving = false; // stage or focus moving during the exposure

  bool placed () const
  {
    return std::isfinite (x_um) && std::isfinite (y_um) && um_per_px > 0 && width_px > 0 && height_px > 0;
  }
  cv::Point2d to_slide_um (cv::Point2d px) const;
  cv::Point2d to_frame_px (cv::Point2d um) const;
};

// Why a result is not placed on a frame (kNone: it is).
enum class Unplaced {
  kNone,
  kNoStage,      // the frame drawn on has no StageMeta
  kUnknownField, // where the analysed frame was is not known
  kMoving,       // stage or focus moving during either exposure
  kObjective,    // another objective
  kUmPerPx,      // another pixel size
  kFocus,        // focus moved beyond the tolerance
  kStale,        // older than the maximum age, or of unknown age
  kOutside,      // the analysed field is not in view any more
};

// A short token ("objective", "um-per-px", ...; "" for kNone) and a phrase
// for a viewer ("objective changed", ...).
const char *unplaced_token (Unplaced why);
const char *unplaced_text (Unplaced why);

struct PlacementLimits {
  double max_age_s = 10.0;
  double focus_tolerance_um = 0.0;    // 0 = depth_of_field_um of the objective
  double um_per_px_tolerance = 0.005; // relative
};

// How analysed-frame pixels land on the frame drawn on:
// p_now = scale · p_analysed + offset (continuous pixel coordinates).
struct Placement {
  Unplaced why = Unplaced::kNone;
  double scale = 1.0;
  cv::Point2d offset{0.0, 0.0};
  // The analysed frame's rectangle on the frame drawn on (may extend past
  // it), and the share of the frame drawn on that it covers.
  cv::Rect2d field_px;
  double coverage = 0.0;
  double focus_tolerance_um = 0.0; // what was applied (0 when not checked)

  bool ok () const { return why == Unplaced::kNone; }
  cv::Point2d map (cv::Point2d p) const { return p * scale + offset; }
};

// A result drawn on the very frame it was computed on (only rescaled when
// the frame was scaled since).
Placement same_frame (cv::Size2d analysed_px, cv::Size2d frame_px);

// A result computed on `analysed` drawn on `now`, age_s later (NaN or
// negative: unknown).  Checks, in this order: both fields known, neither
// moving, same objective (when both are known), same µm/px, focus within the
// tolerance, age, and that some of the analysed field is in view.
Placement place_result (const FieldOfView &analysed, const FieldOfView &now, double age_s,
                        const PlacementLimits &limits);

// A typical numerical aperture for a magnification (plan achromats: 4x 0.10,
// 10x 0.25, 20x 0.40, 40x 0.65, 60x 0.85, 100x 1.25 oil; interpolated in
// log magnification between them); 0 (unknown) gives 0.65.
double typical_numerical_aperture (int magnification);
// Depth of field, µm: λ/NA² + e/(M·NA) with λ = 0.55 µm and e/M the pixel on
// the specimen (as hw/autofocus sizes its steps): 40x ≈ 1.7, 20x ≈ 4.7,
// 10x ≈ 12.8, 4x ≈ 80.
double depth_of_field_um (int magnification, double um_per_px);

// Edges of the analysed frame an outline runs along (it was cut by the frame
// there): bit 0 left, 1 top, 2 right, 3 bottom.  `margin_px`: how close to
// the edge a point must be (one working pixel of the analysis).
unsigned cut_edges (const float *xy, std::size_t n_points, cv::Size2d analysed_px, double margin_px);
// Edges of the analysed field that lie inside the frame drawn on (same bits):
// an outline cut there would show a straight cut across a whole nucleus.
unsigned edges_in_view (const Placement &p, cv::Size2d frame_px);

// Nuclei per mm² of observed area around each pixel of a frame: counts in
// cells of `cell_px`, smoothed with a Gaussian of σ = window_um, divided by
// the observed area under the same window (normalised convolution).  So the
// density does not fall at the frame's edges or at the edge of `observed_px`
// (the part of the frame the analysis saw), only where the nuclei do (the
// tissue ends).  CV_32F, frame size; NaN outside `observed_px`.
cv::Mat nuclear_density_per_mm2 (const std::vector<cv::Point2d> &centroids_px, const cv::Rect2d &observed_px,
                                 cv::Size frame_px, double um_per_px, double window_um = 25.0,
                                 int cell_px = 16);

} // namespace livemicro::analysis
