#include "livemicro/analysis/overlay.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <utility>

namespace livemicro::analysis {

cv::Point2d
FieldOfView::to_slide_um (cv::Point2d px) const
{
  return {x_um + (px.x - width_px / 2.0) * um_per_px, y_um + (px.y - height_px / 2.0) * um_per_px};
}

cv::Point2d
FieldOfView::to_frame_px (cv::Point2d um) const
{
  return {(um.x - x_um) / um_per_px + width_px / 2.0, (um.y - y_um) / um_per_px + height_px / 2.0};
}

const char *
unplaced_token (Unplaced why)
{
  switch (why) {
  case Unplaced::kNone:
    return "";
  case Unplaced::kNoStage:
    return "no-stage";
  case Unplaced::kUnknownField:
    return "unknown-field";
  case Unplaced::kMoving:
    return "moving";
  case Unplaced::kObjective:
    return "objective";
  case Unplaced::kUmPerPx:
    return "um-per-px";
  case Unplaced::kFocus:
    return "focus";
  case Unplaced::kStale:
    return "stale";
  case Unplaced::kOutside:
    return "outside";
  }
  return "unknown";
}

const char *
unplaced_text (Unplaced why)
{
  switch (why) {
  case Unplaced::kNone:
    return "";
  case Unplaced::kNoStage:
    return "frames carry no stage position";
  case Unplaced::kUnknownField:
    return "analysed field unknown";
  case Unplaced::kMoving:
    return "stage moving";
  case Unplaced::kObjective:
    return "objective changed";
  case Unplaced::kUmPerPx:
    return "pixel size changed";
  case Unplaced::kFocus:
    return "focus changed";
  case Unplaced::kStale:
    return "result too old";
  case Unplaced::kOutside:
    return "new field";
  }
  return "";
}

Placement
same_frame (cv::Size2d analysed_px, cv::Size2d frame_px)
{
  if (analysed_px.width <= 0 || analysed_px.height <= 0)
    analysed_px = frame_px; // size unknown: the frame's own
  Placement p;
  p.scale = analysed_px.width > 0 ? frame_px.width / analysed_px.width : 1.0;
  // A non-uniform rescale (no nuclei survive it) still gets both axes right
  // for the rectangle.
  const double sy = analysed_px.height > 0 ? frame_px.height / analysed_px.height : 1.0;
  p.field_px = cv::Rect2d (0, 0, analysed_px.width * p.scale, analysed_px.height * sy);
  p.coverage = 1.0;
  return p;
}

Placement
place_result (const FieldOfView &a, const FieldOfView &now, double age_s, const PlacementLimits &limits)
{
  Placement p;
  auto fail = [&p] (Unplaced why) {
    p.why = why;
    return p;
  };
  if (!now.placed ())
    return fail (Unplaced::kNoStage);
  if (!a.placed () || !std::isfinite (a.z_um) || !std::isfinite (now.z_um))
    return fail (Unplaced::kUnknownField);
  if (a.moving || now.moving)
    return fail (Unplaced::kMoving);
  if (a.objective > 0 && now.objective > 0 && a.objective != now.objective)
    return fail (Unplaced::kObjective);
  if (std::abs (a.um_per_px - now.um_per_px) > limits.um_per_px_tolerance * now.um_per_px)
    return fail (Unplaced::kUmPerPx);
  const int objective = now.objective > 0 ? now.objective : a.objective;
  p.focus_tolerance_um = limits.focus_tolerance_um > 0 ? limits.focus_tolerance_um
                                                       : depth_of_field_um (objective, now.um_per_px);
  if (std::abs (a.z_um - now.z_um) > p.focus_tolerance_um)
    return fail (Unplaced::kFocus);
  if (!(age_s >= 0) || age_s > limits.max_age_s)
    return fail (Unplaced::kStale);

  // now px = (slide point − now centre) / now µm/px + now half size, with
  // slide point = a centre + (a px − a half size) · a µm/px.
  p.scale = a.um_per_px / now.um_per_px;
  p.offset = cv::Point2d (
      (a.x_um - a.width_px / 2.0 * a.um_per_px - now.x_um) / now.um_per_px + now.width_px / 2.0,
      (a.y_um - a.height_px / 2.0 * a.um_per_px - now.y_um) / now.um_per_px + now.height_px / 2.0);
  p.field_px = cv::Rect2d (p.offset.x, p.offset.y, a.width_px * p.scale, a.height_px * p.scale);
  const cv::Rect2d seen = p.field_px & cv::Rect2d (0, 0, now.width_px, now.height_px);
  p.coverage = seen.area () / (now.width_px * now.height_px);
  if (seen.width <= 0 || seen.height <= 0)
    return fail (Unplaced::kOutside);
  return p;
}

double
typical_numerical_aperture (int magnification)
{
  static const std::array<std::pair<double, double>, 6> kTable = {{
      {4, 0.10},
      {10, 0.25},
      {20, 0.40},
      {40, 0.65},
      {60, 0.85},
      {100, 1.25},
  }};
  if (magnification <= 0)
    return 0.65;
  const double m = magnification;
  if (m <= kTable.front ().first)
    return std::max (0.02, kTable.front ().second * m / kTable.front ().first);
  if (m >= kTable.back ().first)
    return kTable.back ().second;
  for (size_t k = 1; k < kTable.size (); k++) {
    if (m > kTable[k].first)
      continue;
    const auto [m0, na0] = kTable[k - 1];
    const auto [m1, na1] = kTable[k];
    const double t = std::log (m / m0) / std::log (m1 / m0);
    return na0 + t * (na1 - na0);
  }
  return kTable.back ().second;
}

double
depth_of_field_um (int magnification, double um_per_px)
{
  const double na = typical_numerical_aperture (magnification);
  return 0.55 / (na * na) + std::max (0.0, um_per_px) / na;
}

unsigned
cut_edges (const float *xy, std::size_t n, cv::Size2d size, double margin)
{
  unsigned edges = 0;
  for (std::size_t k = 0; k < n; k++) {
    const double x = xy[2 * k], y = xy[2 * k + 1];
    edges |= (x <= margin ? 1u : 0u) | (y <= margin ? 2u : 0u) | (x >= size.width - margin ? 4u : 0u)
             | (y >= size.height - margin ? 8u : 0u);
  }
  return edges;
}

unsigned
edges_in_view (const Placement &p, cv::Size2d frame)
{
  const cv::Rect2d &f = p.field_px;
  unsigned edges = 0;
  // More than half a pixel inside the frame drawn on.
  if (f.x > 0.5 && f.x < frame.width)
    edges |= 1u;
  if (f.y > 0.5 && f.y < frame.height)
    edges |= 2u;
  if (f.x + f.width < frame.width - 0.5 && f.x + f.width > 0)
    edges |= 4u;
  if (f.y + f.height < frame.height - 0.5 && f.y + f.height > 0)
    edges |= 8u;
  return edges;
}

cv::Mat
nuclear_density_per_mm2 (const std::vector<cv::Point2d> &centroids, const cv::Rect2d &observed_px,
                         cv::Size frame, double um_per_px, double window_um, int cell)
{
  cv::Mat out (frame, CV_32F, cv::Scalar (NAN));
  const cv::Rect2d seen = observed_px & cv::Rect2d (0, 0, frame.width, frame.height);
  if (frame.empty () || seen.width <= 0 || seen.height <= 0 || um_per_px <= 0 || cell <= 0)
    return out;
  const int gw = (frame.width + cell - 1) / cell;
  const int gh = (frame.height + cell - 1) / cell;
  // Counts, and the observed share of each cell (frame cells past the frame's
  // edge are partly outside it: that part was not observed either).
  cv::Mat count (gh, gw, CV_32F, cv::Scalar (0)), area (gh, gw, CV_32F);
  for (int j = 0; j < gh; j++)
    for (int i = 0; i < gw; i++) {
      const cv::Rect2d c = cv::Rect2d (i * cell, j * cell, cell, cell) & seen;
      area.at<float> (j, i) = c.width > 0 && c.height > 0 ? (float)(c.area () / (cell * cell)) : 0.0f;
    }
  // Each nucleus is shared between the four nearest cell centres (bilinear):
  // binned whole into 16 px cells, a regular lattice of nuclei aliases into
  // a ±15 % ripple of the density.
  for (const cv::Point2d &pt : centroids) {
    if (!seen.contains (pt))
      continue;
    const double fx = pt.x / cell - 0.5, fy = pt.y / cell - 0.5;
    const int i0 = (int)std::floor (fx), j0 = (int)std::floor (fy);
    const double wx = fx - i0, wy = fy - j0;
    for (int dj = 0; dj < 2; dj++)
      for (int di = 0; di < 2; di++) {
        const int i = std::clamp (i0 + di, 0, gw - 1), j = std::clamp (j0 + dj, 0, gh - 1);
        count.at<float> (j, i) += (float)((di ? wx : 1 - wx) * (dj ? wy : 1 - wy));
      }
  }
  const double sigma_cells = std::max (1.0, window_um / (um_per_px * cell));
  cv::GaussianBlur (count, count, cv::Size (), sigma_cells, sigma_cells, cv::BORDER_CONSTANT);
  cv::GaussianBlur (area, area, cv::Size (), sigma_cells, sigma_cells, cv::BORDER_CONSTANT);
  const double cell_mm2 = (cell * um_per_px) * (cell * um_per_px) * 1e-6;
  cv::Mat density (gh, gw, CV_32F);
  for (int j = 0; j < gh; j++)
    for (int i = 0; i < gw; i++) {
      const float a = area.at<float> (j, i);
      // Under a twentieth of the window observed: too little to say.
      density.at<float> (j, i) = a > 0.05f ? (float)(count.at<float> (j, i) / (a * cell_mm2)) : 0.0f;
    }
  cv::Mat up;
  cv::resize (density, up, cv::Size (gw * cell, gh * cell), 0, 0, cv::INTER_LINEAR);
  // Pixel centres inside the observed rectangle get a value.
  const int x0 = std::max (0, (int)std::ceil (seen.x - 0.5));
  const int y0 = std::max (0, (int)std::ceil (seen.y - 0.5));
  const int x1 = std::min (frame.width, (int)std::ceil (seen.x + seen.width - 0.5));
  const int y1 = std::min (frame.height, (int)std::ceil (seen.y + seen.height - 0.5));
  if (x1 > x0 && y1 > y0) {
    const cv::Rect r (x0, y0, x1 - x0, y1 - y0);
    up (r).copyTo (out (r));
  }
  return out;
}

} // namespace livemicro::analysis
