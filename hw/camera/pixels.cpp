#include "pixels.h"

#include <opencv2/imgproc.hpp>

namespace livemicro::hw::camera {

bool
layout_of_genicam (const std::string &name, PixelLayout &out)
{
  PixelLayout l;
  auto bits_of = [] (const std::string &digits, int &bits) {
    if (digits == "8" || digits == "10" || digits == "12" || digits == "16") {
      bits = std::stoi (digits);
      return true;
    }
    return false;
  };
  if (name.rfind ("Mono", 0) == 0) {
    l.kind = PixelLayout::kMono;
    if (!bits_of (name.substr (4), l.bits))
      return false;
  } else if (name == "RGB8" || name == "RGB8Packed") {
    l.kind = PixelLayout::kRGB;
  } else if (name == "BGR8" || name == "BGR8Packed") {
    l.kind = PixelLayout::kBGR;
  } else if (name.rfind ("Bayer", 0) == 0 && name.size () >= 8) {
    std::string p = name.substr (5, 2);
    l.kind = PixelLayout::kBayer;
    if (p == "RG")
      l.bayer = Bayer::kRG;
    else if (p == "BG")
      l.bayer = Bayer::kBG;
    else if (p == "GB")
      l.bayer = Bayer::kGB;
    else if (p == "GR")
      l.bayer = Bayer::kGR;
    else
      return false;
    if (!bits_of (name.substr (7), l.bits))
      return false;
  } else {
    return false;
  }
  out = l;
  return true;
}

namespace {

// OpenCV names a Bayer pattern by the second row's second and third pixels,
// so GenICam's RG (R at the top-left) is OpenCV's BG, and so on.
int
cv_code (Bayer b, bool edge_aware)
{
  switch (b) {
  case Bayer::kRG:
    return edge_aware ? cv::COLOR_BayerBG2RGB_EA : cv::COLOR_BayerBG2RGB;
  case Bayer::kBG:
    return edge_aware ? cv::COLOR_BayerRG2RGB_EA : cv::COLOR_BayerRG2RGB;
  case Bayer::kGB:
    return edge_aware ? cv::COLOR_BayerGR2RGB_EA : cv::COLOR_BayerGR2RGB;
  case Bayer::kGR:
    return edge_aware ? cv::COLOR_BayerGB2RGB_EA : cv::COLOR_BayerGB2RGB;
  default:
    return -1;
  }
}

} // namespace

void
to_rgb (const cv::Mat &raw, const PixelLayout &layout, bool edge_aware, cv::Mat &rgb)
{
  cv::Mat eight;
  const cv::Mat *src = &raw;
  if (raw.depth () == CV_16U) {
    // Significant bits to 8: scale by 2^(8 - bits).
    raw.convertTo (eight, CV_8U, 1.0 / double (1 << (layout.bits - 8)));
    src = &eight;
  }
  switch (layout.kind) {
  case PixelLayout::kMono:
    cv::cvtColor (*src, rgb, cv::COLOR_GRAY2RGB);
    break;
  case PixelLayout::kRGB:
    src->copyTo (rgb);
    break;
  case PixelLayout::kBGR:
    cv::cvtColor (*src, rgb, cv::COLOR_BGR2RGB);
    break;
  case PixelLayout::kBayer:
    cv::cvtColor (*src, rgb, cv_code (layout.bayer, edge_aware));
    break;
  }
}

} // namespace livemicro::hw::camera
