// PNG and JPEG from memory (hw/image/): the V4L2 camera's MJPEG frames and
// the worker's slide map PNG come from outside the process; libpng and
// libjpeg report errors by longjmp, which must leave nothing leaked or
// half-built behind.
// Contract: a decode gives either pixels (8-bit RGB, not empty) and no
// error, or an error and no pixels; decode_png agrees with decode_image on
// PNG input and refuses everything else; accepting damage makes a
// difference only to a JPEG refused as damaged, and an intact image gives
// the same pixels either way; pixels encoded as PNG decode to the same
// pixels.
#include "fuzz_util.h"

#include <livemicro/hw/image_codec.h>

using namespace livemicro::hw;

namespace {

void
check_shape (const DecodedImage &d, const char *what)
{
  FUZZ_CHECK (d.error.empty () != d.rgb.empty (), std::string (what) + ": error '" + d.error + "' beside "
                                                      + std::to_string (d.rgb.cols) + "x"
                                                      + std::to_string (d.rgb.rows) + " px");
  if (!d.rgb.empty ())
    FUZZ_CHECK (d.rgb.type () == CV_8UC3, std::string (what) + ": type " + std::to_string (d.rgb.type ()));
}

bool
same_pixels (const cv::Mat &a, const cv::Mat &b)
{
  return a.size () == b.size () && a.type () == b.type () && cv::norm (a, b, cv::NORM_INF) == 0;
}

} // namespace

extern "C" int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  DecodedImage strict = decode_image (data, size);
  check_shape (strict, "decode_image");
  // Damage accepted, at the size the strict decode gave or else the
  // corpus's 8x6: an expected size keeps a few bytes from decoding a bogus
  // 60000x8000 picture, as the V4L2 camera's frames do.
  cv::Size expected = strict.rgb.empty () ? cv::Size (8, 6) : strict.rgb.size ();
  DecodedImage lenient = decode_image (data, size, {DamagedJpeg::kAccept, expected});
  check_shape (lenient, "decode_image (kAccept)");
  if (!lenient.rgb.empty ())
    FUZZ_CHECK (lenient.rgb.size () == expected, "kAccept decoded another size than expected");
  if (!strict.rgb.empty ())
    FUZZ_CHECK (same_pixels (strict.rgb, lenient.rgb), "kAccept changed the pixels of an intact image");
  if (!lenient.rgb.empty () && strict.rgb.empty ())
    FUZZ_CHECK (strict.error.rfind ("damaged JPEG", 0) == 0,
                "kAccept decoded what kRefuse refused for another reason: " + strict.error);

  DecodedImage png = decode_png (data, size);
  check_shape (png, "decode_png");
  if (strict.format == ImageFormat::kPng)
    FUZZ_CHECK (png.error == strict.error && (png.rgb.empty () || same_pixels (png.rgb, strict.rgb)),
                "decode_png and decode_image disagree: '" + png.error + "' / '" + strict.error + "'");
  else
    FUZZ_CHECK (png.error == "not a PNG image", "decode_png took a non-PNG: " + png.error);

  if (!lenient.rgb.empty () && lenient.rgb.total () <= 256 * 256) {
    std::vector<uint8_t> again = encode_png (lenient.rgb);
    FUZZ_CHECK (!again.empty (), "encode_png failed");
    DecodedImage back = decode_png (again.data (), again.size ());
    FUZZ_CHECK (same_pixels (back.rgb, lenient.rgb), "PNG round trip changed the pixels: " + back.error);
  }
  return 0;
}
