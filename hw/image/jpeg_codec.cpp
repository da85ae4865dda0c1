// JPEG through libjpeg (libjpeg62-turbo).  libjpeg reports a fatal error by
// calling error_exit, which must not return: ours longjmps back to the
// setjmp in read_jpeg, a function that holds no C++ object and keeps its
// state behind one pointer it never changes (as in png_codec.cpp).  Its
// warnings print nothing; the first that says the data is corrupt or ends
// early makes the image damaged (DamagedJpeg): when damage is refused, it
// longjmps out as an error does.
//
// Nothing fancy: no EXIF orientation, no colour profile, the decoder's
// default (accurate integer) IDCT and fancy upsampling, as cv::imdecode.
#include "codecs.h"

#include <livemicro/hw/image_codec.h>

// jpeglib.h needs size_t and FILE declared before it.
#include <cstddef>
#include <cstdio>
#include <jpeglib.h>
#include <jerror.h>

#include <csetjmp>
#include <string>

namespace livemicro::hw {

namespace image {

namespace {

struct JpegRead {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr err;
  std::jmp_buf jump;
  bool created = false;
  DecodeOptions options;
  char error[JMSG_LENGTH_MAX] = "";
  char damage[JMSG_LENGTH_MAX] = "";
  std::string refused;
  cv::Mat rgb;

  JpegRead () = default;
  JpegRead (const JpegRead &) = delete;
  JpegRead &operator= (const JpegRead &) = delete;
  ~JpegRead ()
  {
    if (created)
      jpeg_destroy_decompress (&cinfo);
  }
};

JpegRead *
state_of (j_common_ptr cinfo)
{
  return static_cast<JpegRead *> (cinfo->client_data);
}

void
on_jpeg_error (j_common_ptr cinfo)
{
  JpegRead *r = state_of (cinfo);
  (*cinfo->err->format_message) (cinfo, r->error);
  std::longjmp (r->jump, 1);
}

// Called for warnings (level -1) and trace messages (level >= 0).
void
on_jpeg_message (j_common_ptr cinfo, int level)
{
  if (level >= 0)
    return;
  cinfo->err->num_warnings++;
  switch (cinfo->err->msg_code) {
  case JWRN_BOGUS_PROGRESSION:
  case JWRN_EXTRANEOUS_DATA:
  case JWRN_HIT_MARKER:
  case JWRN_HUFF_BAD_CODE:
  case JWRN_JPEG_EOF:
  case JWRN_MUST_RESYNC:
  case JWRN_NOT_SEQUENTIAL:
  case JWRN_ARITH_BAD_CODE: {
    JpegRead *r = state_of (cinfo);
    if (r->damage[0] == '\0')
      (*cinfo->err->format_message) (cinfo, r->damage);
    if (r->options.damaged_jpeg == DamagedJpeg::kRefuse)
      std::longjmp (r->jump, 1); // no use decoding the rest
    break;
  }
  default: // e.g. an unknown JFIF revision or a bad ICC marker: the pixels are fine
    break;
  }
}

// Every libjpeg call of a decode (see the top of the file).  cv::Mat's
// allocation may throw; that exception leaves through this function's own
// frame, not libjpeg's.
bool
read_jpeg (const uint8_t *data, size_t size, JpegRead *r)
{
  if (setjmp (r->jump))
    return false;
  jpeg_create_decompress (&r->cinfo); // keeps err and client_data
  r->created = true;
  jpeg_mem_src (&r->cinfo, data, (unsigned long)size);
  jpeg_read_header (&r->cinfo, TRUE);
  r->refused = size_problem ("JPEG", r->cinfo.image_width, r->cinfo.image_height);
  if (r->refused.empty ())
    r->refused
        = size_unexpected ("JPEG", r->cinfo.image_width, r->cinfo.image_height, r->options.expected_size);
  if (!r->refused.empty ())
    return false;
  if (r->cinfo.jpeg_color_space == JCS_CMYK || r->cinfo.jpeg_color_space == JCS_YCCK) {
    r->refused = "a CMYK JPEG (not supported: convert it to RGB)";
    return false;
  }
  r->cinfo.out_color_space = JCS_RGB; // grey is expanded by libjpeg
  jpeg_start_decompress (&r->cinfo);
  r->rgb.create ((int)r->cinfo.output_height, (int)r->cinfo.output_width, CV_8UC3);
  while (r->cinfo.output_scanline < r->cinfo.output_height) {
    JSAMPROW row = r->rgb.ptr<JSAMPLE> ((int)r->cinfo.output_scanline);
    jpeg_read_scanlines (&r->cinfo, &row, 1);
  }
  jpeg_finish_decompress (&r->cinfo);
  return true;
}

} // namespace

DecodedImage
decode_jpeg (const uint8_t *data, size_t size, const DecodeOptions &options)
{
  DecodedImage out;
  out.format = ImageFormat::kJpeg;
  JpegRead r;
  r.cinfo.err = jpeg_std_error (&r.err);
  r.err.error_exit = on_jpeg_error;
  r.err.emit_message = on_jpeg_message;
  r.cinfo.client_data = &r;
  r.options = options;
  bool decoded = read_jpeg (data, size, &r);
  if (!r.refused.empty ())
    out.error = "refused " + r.refused;
  else if (r.damage[0] != '\0' && options.damaged_jpeg == DamagedJpeg::kRefuse)
    out.error = std::string ("damaged JPEG (libjpeg: ") + r.damage + ")";
  else if (!decoded)
    out.error = std::string ("cannot decode the JPEG (libjpeg: ") + r.error + ")";
  else
    out.rgb = std::move (r.rgb);
  return out;
}

} // namespace image

} // namespace livemicro::hw
