// Slide-coordinate masks: mapping, conservative rasterisation, hiding.
#include "livemicro/privacy/mask.h"

#include <json-glib/json-glib.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace livemicro::privacy {

bool
places_frame (const hw::FrameRecord &f)
{
  return std::isfinite (f.stage_x_um) && std::isfinite (f.stage_y_um) && std::isfinite (f.um_per_px)
         && f.um_per_px > 0 && f.frame_width > 0 && f.frame_height > 0;
}

cv::Point2d
to_frame (const hw::FrameRecord &f, const cv::Point2d &p)
{
  return {(p.x - f.stage_x_um) / f.um_per_px + f.frame_width / 2.0 - 0.5,
          (p.y - f.stage_y_um) / f.um_per_px + f.frame_height / 2.0 - 0.5};
}

cv::Point2d
to_slide (const hw::FrameRecord &f, const cv::Point2d &p)
{
  return {f.stage_x_um + (p.x + 0.5 - f.frame_width / 2.0) * f.um_per_px,
          f.stage_y_um + (p.y + 0.5 - f.frame_height / 2.0) * f.um_per_px};
}

const char *
mask_method_name (MaskMethod m)
{
  switch (m) {
  case MaskMethod::kFill:
    return "fill";
  case MaskMethod::kPixelate:
    return "pixelate";
  case MaskMethod::kBlur:
    return "blur";
  }
  return "?";
}

namespace {

// Sutherland–Hodgman against an axis-aligned box: keeps fixed-point
// coordinates small whatever the zoom, and is exact for any polygon.
std::vector<cv::Point2d>
clip (const std::vector<cv::Point2d> &poly, const cv::Rect2d &box)
{
  std::vector<cv::Point2d> out = poly, in;
  const double x0 = box.x, x1 = box.x + box.width, y0 = box.y, y1 = box.y + box.height;
  for (int side = 0; side < 4 && !out.empty (); side++) {
    in.swap (out);
    out.clear ();
    auto inside = [&] (const cv::Point2d &p) {
      switch (side) {
      case 0:
        return p.x >= x0;
      case 1:
        return p.x <= x1;
      case 2:
        return p.y >= y0;
      default:
        return p.y <= y1;
      }
    };
    auto cross = [&] (const cv::Point2d &a, const cv::Point2d &b) {
      double t;
      switch (side) {
      case 0:
        t = (x0 - a.x) / (b.x - a.x);
        break;
      case 1:
        t = (x1 - a.x) / (b.x - a.x);
        break;
      case 2:
        t = (y0 - a.y) / (b.y - a.y);
        break;
      default:
        t = (y1 - a.y) / (b.y - a.y);
        break;
      }
      return a + t * (b - a);
    };
    for (size_t i = 0; i < in.size (); i++) {
      const cv::Point2d &a = in[i], &b = in[(i + 1) % in.size ()];
      bool ia = inside (a), ib = inside (b);
      if (ia)
        out.push_back (a);
      if (ia != ib)
        out.push_back (cross (a, b));
    }
  }
  return out;
}

constexpr int kShift = 8; // fixed-point bits for cv::fillPoly
constexpr double kOne = 1 << kShift;

cv::Point
fixed (const cv::Point2d &p)
{
  return {(int)std::lround (p.x * kOne), (int)std::lround (p.y * kOne)};
}

} // namespace

cv::Rect
rasterise (const std::vector<FramePolygon> &polygons, double margin_px, cv::Size size, cv::Mat &mask)
{
  mask.create (size, CV_8U);
  mask.setTo (0);
  // A pixel is hidden when its footprint (±0.5) comes within margin_px of the
  // polygon; another 0.5 px covers the rasteriser's rounding.
  const double grow = std::max (0.0, margin_px) + 1.0;
  const cv::Rect2d box (-grow - 2, -grow - 2, size.width + 2 * grow + 4, size.height + 2 * grow + 4);
  cv::Rect2d touched;
  bool any = false;
  for (const auto &poly : polygons) {
    if (poly.points.size () < 3)
      continue;
    std::vector<cv::Point2d> c = clip (poly.points, box);
    if (c.size () < 3)
      continue;
    // Minkowski sum with the square [−grow, grow]²: the polygon itself plus,
    // for every edge, the convex hull of its two end squares.
    std::vector<cv::Point> body;
    double bx0 = 1e300, by0 = 1e300, bx1 = -1e300, by1 = -1e300;
    for (const auto &p : c) {
      body.push_back (fixed (p));
      bx0 = std::min (bx0, p.x);
      by0 = std::min (by0, p.y);
      bx1 = std::max (bx1, p.x);
      by1 = std::max (by1, p.y);
    }
    const cv::Point *pts = body.data ();
    int n = (int)body.size ();
    cv::fillPoly (mask, &pts, &n, 1, cv::Scalar (255), cv::LINE_8, kShift);
    for (size_t i = 0; i < c.size (); i++) {
      const cv::Point2d &a = c[i], &b = c[(i + 1) % c.size ()];
      std::vector<cv::Point> corners, hull;
      for (const cv::Point2d &e : {a, b})
        for (double dx : {-grow, grow})
          for (double dy : {-grow, grow})
            corners.push_back (fixed (e + cv::Point2d (dx, dy)));
      cv::convexHull (corners, hull);
      cv::fillConvexPoly (mask, hull, cv::Scalar (255), cv::LINE_8, kShift);
    }
    cv::Rect2d r (bx0 - grow - 1, by0 - grow - 1, bx1 - bx0 + 2 * grow + 2, by1 - by0 + 2 * grow + 2);
    touched = any ? (touched | r) : r;
    any = true;
  }
  if (!any)
    return {};
  cv::Rect roi (cv::Point ((int)std::floor (touched.x), (int)std::floor (touched.y)),
                cv::Point ((int)std::ceil (touched.br ().x) + 1, (int)std::ceil (touched.br ().y) + 1));
  return roi & cv::Rect (cv::Point (0, 0), size);
}

void
apply_mask (cv::Mat &plane, const cv::Mat &mask, const cv::Rect &roi, MaskMethod method,
            const cv::Scalar &fill, int block_px)
{
  if (roi.empty ())
    return;
  cv::Mat region = plane (roi);
  cv::Mat m = mask (roi);
  if (method == MaskMethod::kFill) {
    region.setTo (fill, m);
    return;
  }
  const int b = std::max (2, block_px);
  cv::Size small (std::max (1, roi.width / b), std::max (1, roi.height / b));
  cv::Mat down, up;
  cv::resize (region, down, small, 0, 0, cv::INTER_AREA);
  if (method == MaskMethod::kBlur) {
    cv::GaussianBlur (down, down, cv::Size (5, 5), 0);
    cv::resize (down, up, roi.size (), 0, 0, cv::INTER_LINEAR);
  } else {
    cv::resize (down, up, roi.size (), 0, 0, cv::INTER_NEAREST);
  }
  up.copyTo (region, m);
}

bool
RegionMemory::remember (RegionClass c, const cv::Rect2d &rect_um, uint64_t frame)
{
  for (auto &e : regions_) {
    if (e.region_class != c)
      continue;
    double inter = (e.rect_um & rect_um).area ();
    if (inter >= 0.999 * rect_um.area ()) {
      e.hits++;
      return false;
    }
  }
  RememberedRegion n;
  n.region_class = c;
  n.rect_um = rect_um;
  n.first_frame = frame;
  // Merge with everything of the class it overlaps, until nothing overlaps.
  bool merged = true;
  while (merged) {
    merged = false;
    for (size_t i = 0; i < regions_.size (); i++) {
      const RememberedRegion &e = regions_[i];
      if (e.region_class == c && (e.rect_um & n.rect_um).area () > 0) {
        n.rect_um |= e.rect_um;
        n.first_frame = std::min (n.first_frame, e.first_frame);
        n.hits += e.hits;
        regions_.erase (regions_.begin () + (long)i);
        merged = true;
        break;
      }
    }
  }
  regions_.push_back (n);
  return true;
}

std::string
RegionMemory::to_json () const
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_array (b);
  for (const auto &r : regions_) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "class");
    json_builder_add_string_value (b, region_class_name (r.region_class));
    const std::pair<const char *, double> fields[] = {{"x_um", r.rect_um.x},
                                                      {"y_um", r.rect_um.y},
                                                      {"width_um", r.rect_um.width},
                                                      {"height_um", r.rect_um.height}};
    for (const auto &[k, v] : fields) {
      json_builder_set_member_name (b, k);
      json_builder_add_double_value (b, v);
    }
    json_builder_set_member_name (b, "first_frame");
    json_builder_add_int_value (b, (gint64)r.first_frame);
    json_builder_set_member_name (b, "hits");
    json_builder_add_int_value (b, (gint64)r.hits);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  g_autofree gchar *text = json_generator_to_data (gen, nullptr);
  return text;
}

} // namespace livemicro::privacy
