// TIFF through libtiff: TIFFReadRGBAImageOriented reads the first image of
// any TIFF libtiff reads (strips or tiles; grey, palette, RGB, YCbCr, CMYK;
// 1 to 16 bits; compressed or not) as 8-bit RGBA.  Its errors and warnings
// go to handlers of this one file (TIFFOpenExt, libtiff >= 4.5), never to
// stderr nor to the process-wide handlers that OpenSlide shares.  libtiff
// reports errors by return value: no longjmp here.
#include "codecs.h"

#include <livemicro/hw/image_codec.h>

#include <tiffio.h>

#include <cstdarg>
#include <cstdio>
#include <memory>

namespace livemicro::hw::image {

namespace {

struct TiffMessages {
  char error[256] = "";
};

int
on_tiff_error (TIFF *, void *user_data, const char *module, const char *fmt, va_list ap)
{
  auto *m = static_cast<TiffMessages *> (user_data);
  if (m->error[0] == '\0')
    std::vsnprintf (m->error, sizeof m->error, fmt, ap);
  return 1; // handled: not passed on to the process-wide handler
}

int
on_tiff_warning (TIFF *, void *, const char *, const char *, va_list)
{
  return 1; // unknown tags and the like: the pixels are fine
}

struct TiffClose {
  void operator() (TIFF *tif) const { TIFFClose (tif); }
};

} // namespace

DecodedImage
decode_tiff_file (const std::string &path)
{
  DecodedImage out;
  out.format = ImageFormat::kTiff;
  TiffMessages m;
  TIFFOpenOptions *opts = TIFFOpenOptionsAlloc ();
  if (!opts) {
    out.error = "cannot decode the TIFF: out of memory";
    return out;
  }
  TIFFOpenOptionsSetErrorHandlerExtR (opts, on_tiff_error, &m);
  TIFFOpenOptionsSetWarningHandlerExtR (opts, on_tiff_warning, &m);
  // The file keeps its own copy of the handlers.
  std::unique_ptr<TIFF, TiffClose> tif (TIFFOpenExt (path.c_str (), "r", opts));
  TIFFOpenOptionsFree (opts);
  uint32_t width = 0, height = 0;
  if (tif) {
    TIFFGetField (tif.get (), TIFFTAG_IMAGEWIDTH, &width);
    TIFFGetField (tif.get (), TIFFTAG_IMAGELENGTH, &height);
    std::string refused = size_problem ("TIFF", width, height);
    if (!refused.empty ()) {
      out.error = "refused " + refused;
      return out;
    }
    std::unique_ptr<uint32_t[]> raster (new uint32_t[size_t (width) * height]);
    if (TIFFReadRGBAImageOriented (tif.get (), width, height, raster.get (), ORIENTATION_TOPLEFT, 1)) {
      out.rgb.create ((int)height, (int)width, CV_8UC3);
      for (uint32_t y = 0; y < height; y++) {
        const uint32_t *in = raster.get () + size_t (y) * width;
        uint8_t *px = out.rgb.ptr<uint8_t> ((int)y);
        for (uint32_t x = 0; x < width; x++, px += 3) {
          px[0] = (uint8_t)TIFFGetR (in[x]);
          px[1] = (uint8_t)TIFFGetG (in[x]);
          px[2] = (uint8_t)TIFFGetB (in[x]);
        }
      }
      return out;
    }
  }
  out.error
      = std::string ("cannot decode the TIFF (libtiff: ") + (m.error[0] ? m.error : "no image in it") + ")";
  return out;
}

} // namespace livemicro::hw::image
