#include "slide_view.h"

#include <livemicro/hw/image_codec.h>

#include <glib.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace livemicro::orchestrator {

namespace {

double
rounded (double v, double step)
{
  return std::round (v / step) * step;
}

} // namespace

std::optional<AnalysedField>
analysed_field (const LivemicroFeaturesMeta &m, double tolerance_um, size_t max_nuclei)
{
  if (m.n_nuclei == 0 || !m.nuclei || !(m.um_per_px > 0) || m.frame_width == 0)
    return std::nullopt;
  const LivemicroNucleus &first = m.nuclei[0];
  if (!std::isfinite (first.x_um) || !std::isfinite (first.y_um))
    return std::nullopt;
  const double upp = m.um_per_px, half_w = m.frame_width / 2.0, half_h = m.frame_height / 2.0;
  AnalysedField f;
  f.analysed_pts = m.analysed_pts;
  f.um_per_px = upp;
  f.x_um = first.x_um - (first.x_px - half_w) * upp;
  f.y_um = first.y_um - (first.y_px - half_h) * upp;
  f.width_um = m.frame_width * upp;
  f.height_um = m.frame_height * upp;
  const double epsilon_px = std::max (0.5, tolerance_um / upp);
  std::vector<cv::Point2f> contour, simple;
  for (guint i = 0; i < m.n_nuclei && f.nuclei.size () < max_nuclei; i++) {
    const LivemicroNucleus &n = m.nuclei[i];
    NucleusOutline o;
    o.x_um = rounded (f.x_um + (n.x_px - half_w) * upp, 0.01);
    o.y_um = rounded (f.y_um + (n.y_px - half_h) * upp, 0.01);
    o.area_um2 = rounded (n.area_um2, 0.1);
    o.mitotic_candidate = n.mitotic_candidate;
    contour.clear ();
    for (guint k = 0; k < n.n_contour; k++)
      contour.emplace_back (n.contour[2 * k], n.contour[2 * k + 1]);
    simple.clear ();
    if (contour.size () >= 3)
      cv::approxPolyDP (contour, simple, epsilon_px, true);
    for (const cv::Point2f &p : simple) {
      o.outline_um.push_back (rounded (f.x_um + (p.x - half_w) * upp, 0.01));
      o.outline_um.push_back (rounded (f.y_um + (p.y - half_h) * upp, 0.01));
    }
    f.nuclei.push_back (std::move (o));
  }
  return f;
}

SlideMap::SlideMap (const cv::Rect2d &area_um, int max_side_px) : area_um_ (area_um)
{
  um_per_px_ = std::max (area_um.width, area_um.height) / std::max (16, max_side_px);
  rgb_
      = cv::Mat (std::max (1, (int)std::ceil (area_um.height / um_per_px_)),
                 std::max (1, (int)std::ceil (area_um.width / um_per_px_)), CV_8UC3, cv::Scalar (48, 48, 48));
}

void
SlideMap::set_macro (const cv::Mat &rgb, const cv::Rect2d &area_um)
{
  cv::Rect dst ((int)std::round ((area_um.x - area_um_.x) / um_per_px_),
                (int)std::round ((area_um.y - area_um_.y) / um_per_px_),
                std::max (1, (int)std::round (area_um.width / um_per_px_)),
                std::max (1, (int)std::round (area_um.height / um_per_px_)));
  cv::Mat scaled;
  cv::resize (rgb, scaled, dst.size (), 0, 0, cv::INTER_AREA);
  cv::Rect inside = dst & cv::Rect (0, 0, rgb_.cols, rgb_.rows);
  if (inside.empty ())
    return;
  std::lock_guard<std::mutex> lock (mutex_);
  scaled (cv::Rect (inside.x - dst.x, inside.y - dst.y, inside.width, inside.height)).copyTo (rgb_ (inside));
  macro_ = changed_ = true;
}

bool
SlideMap::paste (const cv::Mat &rgb, double x_um, double y_um, double um_per_px)
{
  if (rgb.empty () || !(um_per_px > 0) || !std::isfinite (x_um) || !std::isfinite (y_um))
    return false;
  const double w_um = rgb.cols * um_per_px, h_um = rgb.rows * um_per_px;
  cv::Rect dst ((int)std::round ((x_um - w_um / 2 - area_um_.x) / um_per_px_),
                (int)std::round ((y_um - h_um / 2 - area_um_.y) / um_per_px_),
                std::max (1, (int)std::round (w_um / um_per_px_)),
                std::max (1, (int)std::round (h_um / um_per_px_)));
  cv::Rect inside = dst & cv::Rect (0, 0, rgb_.cols, rgb_.rows);
  if (inside.empty ())
    return false;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    if (dst.tl () == last_at_ && um_per_px == last_um_per_px_)
      return false;
    last_at_ = dst.tl ();
    last_um_per_px_ = um_per_px;
  }
  cv::Mat scaled;
  cv::resize (rgb, scaled, dst.size (), 0, 0, cv::INTER_AREA);
  std::lock_guard<std::mutex> lock (mutex_);
  scaled (cv::Rect (inside.x - dst.x, inside.y - dst.y, inside.width, inside.height)).copyTo (rgb_ (inside));
  changed_ = true;
  return true;
}

std::optional<SlideOverview>
SlideMap::take_if_changed ()
{
  cv::Mat copy;
  SlideOverview o;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    if (!changed_)
      return std::nullopt;
    changed_ = false;
    copy = rgb_.clone ();
    o.macro = macro_;
  }
  std::vector<uint8_t> png = hw::encode_png (copy);
  g_autofree char *b64 = g_base64_encode (png.data (), png.size ());
  o.png_base64 = b64;
  o.x_um = area_um_.x;
  o.y_um = area_um_.y;
  o.width_um = copy.cols * um_per_px_;
  o.height_um = copy.rows * um_per_px_;
  o.width = (uint32_t)copy.cols;
  o.height = (uint32_t)copy.rows;
  return o;
}

} // namespace livemicro::orchestrator
