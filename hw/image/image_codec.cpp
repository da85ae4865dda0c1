// Format detection and dispatch for livemicro/hw/image_codec.h; the
// decoders are in png_codec.cpp, jpeg_codec.cpp and tiff_codec.cpp.
#include "codecs.h"

#include <config.h>
#include <livemicro/hw/image_codec.h>

#include <glib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace livemicro::hw {

ImageFormat
image_format_of (const uint8_t *head, size_t size)
{
  auto starts_with
      = [&] (const char *magic, size_t n) { return size >= n && std::memcmp (head, magic, n) == 0; };
  if (starts_with ("\x89PNG\r\n\x1a\n", 8))
    return ImageFormat::kPng;
  if (starts_with ("\xff\xd8\xff", 3))
    return ImageFormat::kJpeg;
  // Classic TIFF (42) and BigTIFF (43), little- or big-endian.
  if (starts_with ("II*\0", 4) || starts_with ("MM\0*", 4) || starts_with ("II+\0", 4)
      || starts_with ("MM\0+", 4))
    return ImageFormat::kTiff;
  return ImageFormat::kUnknown;
}

DecodedImage
decode_image (const uint8_t *data, size_t size, const DecodeOptions &options)
{
  DecodedImage out;
  switch (image_format_of (data, size)) {
  case ImageFormat::kPng:
    return decode_png (data, size, options.expected_size);
  case ImageFormat::kJpeg:
    return image::decode_jpeg (data, size, options);
  case ImageFormat::kTiff:
    out.format = ImageFormat::kTiff;
    out.error = "a TIFF (TIFF images are read from files only)";
    return out;
  case ImageFormat::kUnknown:
    break;
  }
  out.error = "not a PNG, JPEG or TIFF image";
  return out;
}

DecodedImage
decode_image_file (const std::string &path)
{
  DecodedImage out;
  uint8_t head[8];
  size_t got = 0;
  if (FILE *f = std::fopen (path.c_str (), "rb")) {
    got = std::fread (head, 1, sizeof head, f);
    std::fclose (f);
  } else {
    out.error = std::string ("cannot open it: ") + g_strerror (errno);
    return out;
  }
  if (image_format_of (head, got) == ImageFormat::kTiff) {
#if HAVE_LIBTIFF
    return image::decode_tiff_file (path);
#else
    out.format = ImageFormat::kTiff;
    out.error = "a TIFF, and this build has no libtiff";
    return out;
#endif
  }
  g_autofree char *contents = nullptr;
  gsize size = 0;
  g_autoptr (GError) error = nullptr;
  if (!g_file_get_contents (path.c_str (), &contents, &size, &error)) {
    out.error = std::string ("cannot read it: ") + error->message;
    return out;
  }
  return decode_image (reinterpret_cast<const uint8_t *> (contents), size);
}

} // namespace livemicro::hw
