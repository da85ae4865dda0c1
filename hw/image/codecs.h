// The per-format decoders behind livemicro/hw/image_codec.h, one file each,
// so that a program that reads only PNG (livemicrod's slide map) links
// neither libjpeg nor libtiff.
#pragma once

#include <livemicro/hw/image_codec.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace livemicro::hw::image {

DecodedImage decode_jpeg (const uint8_t *data, size_t size, const DecodeOptions &options);
// Only when built with libtiff (HAVE_LIBTIFF).
DecodedImage decode_tiff_file (const std::string &path);

// Why a decoder refuses the size a header states ("an empty PNG (0x0 px)",
// "a PNG of 2000000x10 px: at most 1048576 px a side ..."); empty when it
// is fine.  Inline: each decoder's file stands alone.
inline std::string
size_problem (const char *format, int64_t width, int64_t height)
{
  std::string size = std::to_string (width) + "x" + std::to_string (height) + " px";
  if (width <= 0 || height <= 0)
    return std::string ("an empty ") + format + " (" + size + ")";
  if (width > kMaxImageSidePx || height > kMaxImageSidePx || width * height > kMaxImagePixels)
    return std::string ("a ") + format + " of " + size + ": at most " + std::to_string (kMaxImageSidePx)
           + " px a side and " + std::to_string (kMaxImagePixels) + " px in all";
  return "";
}

// Why a decoder refuses a header's size when the caller expected another
// ("a JPEG of 640x480 px where 1280x720 px were expected"); empty when it
// is the one expected or none was.
inline std::string
size_unexpected (const char *format, int64_t width, int64_t height, cv::Size expected)
{
  if (expected.empty () || (width == expected.width && height == expected.height))
    return "";
  return std::string ("a ") + format + " of " + std::to_string (width) + "x" + std::to_string (height)
         + " px where " + std::to_string (expected.width) + "x" + std::to_string (expected.height)
         + " px were expected";
}

} // namespace livemicro::hw::image
