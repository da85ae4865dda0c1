// Packed RGB video formats the analysis and overlay elements work on, and
// where R, G and B sit in a pixel.
#pragma once

#include <gst/video/video.h>

#include <array>

#define LIVEMICRO_RGB_FORMATS \
  "{ RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, ARGB, ABGR }"

namespace livemicro {

// Channel count and the indices of R, G, B; false for other formats.
inline bool
rgb_layout (GstVideoFormat f, int &channels, std::array<int, 3> &rgb)
{
  switch (f) {
    case GST_VIDEO_FORMAT_RGB: channels = 3; rgb = {0, 1, 2}; return true;
    case GST_VIDEO_FORMAT_BGR: channels = 3; rgb = {2, 1, 0}; return true;
    case GST_VIDEO_FORMAT_RGBx:
    case GST_VIDEO_FORMAT_RGBA: channels = 4; rgb = {0, 1, 2}; return true;
    case GST_VIDEO_FORMAT_BGRx:
    case GST_VIDEO_FORMAT_BGRA: channels = 4; rgb = {2, 1, 0}; return true;
    case GST_VIDEO_FORMAT_xRGB:
    case GST_VIDEO_FORMAT_ARGB: channels = 4; rgb = {1, 2, 3}; return true;
    case GST_VIDEO_FORMAT_xBGR:
    case GST_VIDEO_FORMAT_ABGR: channels = 4; rgb = {3, 2, 1}; return true;
    default: return false;
  }
}

}  // namespace livemicro
