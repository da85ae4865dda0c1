#include "slide_map.h"

#include <livemicro/hw/image_codec.h>

#include <glib.h>
#include <opencv2/imgproc.hpp>

#include <cmath>

namespace livemicro::orchestrator {

std::optional<SlideMapImage>
decode_overview (const SlideOverview &o, int64_t now_unix_us)
{
  gsize len = 0;
  g_autofree guchar *png = g_base64_decode (o.png_base64.c_str (), &len);
  if (!png || len == 0)
    return std::nullopt;
  if (o.width == 0 || o.height == 0 || o.width > (uint32_t)hw::kMaxImageSidePx
      || o.height > (uint32_t)hw::kMaxImageSidePx || !(o.width_um > 0) || !(o.height_um > 0))
    return std::nullopt;
  // Of the size stated, or not decoded at all.
  hw::DecodedImage image = hw::decode_png (png, len, cv::Size ((int)o.width, (int)o.height));
  if (image.rgb.empty ())
    return std::nullopt;
  SlideMapImage m;
  m.rgb = std::move (image.rgb);
  m.geometry = o;
  m.geometry.png_base64.clear ();
  m.updated_unix_us = now_unix_us;
  return m;
}

std::vector<unsigned char>
masked_png (const SlideMapImage &map, const std::vector<std::vector<cv::Point2d>> &masked_um, bool coarse)
{
  const SlideOverview &g = map.geometry;
  cv::Mat out = map.rgb.clone ();
  if (coarse && g.width_um / out.cols < kCoarseUmPerPx) {
    cv::Size small (std::max (1, (int)std::ceil (g.width_um / kCoarseUmPerPx)),
                    std::max (1, (int)std::ceil (g.height_um / kCoarseUmPerPx)));
    cv::resize (out, out, small, 0, 0, cv::INTER_AREA);
  }
  const double sx = out.cols / g.width_um, sy = out.rows / g.height_um;
  const cv::Scalar kMask (96, 96, 104);
  for (const auto &poly : masked_um) {
    std::vector<cv::Point> px;
    for (const cv::Point2d &p : poly)
      px.emplace_back ((int)std::lround ((p.x - g.x_um) * sx), (int)std::lround ((p.y - g.y_um) * sy));
    if (px.size () < 3)
      continue;
    // Filled, and its edge drawn 3 px wide: every pixel the polygon touches.
    cv::fillPoly (out, std::vector<std::vector<cv::Point>>{px}, kMask);
    cv::polylines (out, std::vector<std::vector<cv::Point>>{px}, true, kMask, 3);
  }
  return hw::encode_png (out);
}

} // namespace livemicro::orchestrator
