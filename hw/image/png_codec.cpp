// PNG through libpng.  libpng reports an error by longjmp to a setjmp: each
// libpng call runs in a function that holds no C++ object (nothing whose
// destructor the jump could skip) and keeps its state behind one pointer it
// never changes (locals changed after setjmp are indeterminate after the
// jump).  No C++ exception crosses libpng's C frames: the callbacks below
// catch theirs and report a libpng error instead.
#include "codecs.h"

#include <livemicro/hw/image_codec.h>

#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>

namespace livemicro::hw {

namespace {

// libpng's error text, kept for the message; its warnings (unknown chunks,
// bad ancillary CRCs, ...) are not errors and go nowhere.
struct PngError {
  char text[200] = "";
};

void
on_png_error (png_structp png, png_const_charp message)
{
  auto *error = static_cast<PngError *> (png_get_error_ptr (png));
  if (error->text[0] == '\0')
    std::snprintf (error->text, sizeof error->text, "%s", message);
  png_longjmp (png, 1);
}

void
on_png_warning (png_structp, png_const_charp)
{}

struct PngRead {
  PngError error;
  const uint8_t *data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  cv::Size expected_size;
  std::string size_problem;
  cv::Mat rgb;
  std::vector<png_bytep> rows;
};

void
on_png_read (png_structp png, png_bytep out, size_t n)
{
  auto *r = static_cast<PngRead *> (png_get_io_ptr (png));
  if (n > r->size - r->pos)
    png_error (png, "the data ends early");
  std::memcpy (out, r->data + r->pos, n);
  r->pos += n;
}

// Every libpng call of a decode (see the top of the file).  The transforms
// are cv::imread's for IMREAD_COLOR (OpenCV 4.6, grfmt_png.cpp) without its
// swap to BGR.  cv::Mat's allocations may throw; that exception leaves
// through this function's own frame, not libpng's.
bool
read_png (png_structp png, png_infop info, PngRead *r)
{
  if (setjmp (png_jmpbuf (png)))
    return false;
  png_set_read_fn (png, r, on_png_read);
  png_read_info (png, info);
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0;
  png_get_IHDR (png, info, &width, &height, &bit_depth, &color_type, nullptr, nullptr, nullptr);
  r->size_problem = image::size_problem ("PNG", width, height);
  if (r->size_problem.empty ())
    r->size_problem = image::size_unexpected ("PNG", width, height, r->expected_size);
  if (!r->size_problem.empty ())
    return false;
  png_set_strip_16 (png);
  png_set_strip_alpha (png);
  if (color_type == PNG_COLOR_TYPE_PALETTE)
    png_set_palette_to_rgb (png);
  if ((color_type & PNG_COLOR_MASK_COLOR) == 0 && bit_depth < 8)
    png_set_expand_gray_1_2_4_to_8 (png);
  if ((color_type & PNG_COLOR_MASK_COLOR) == 0)
    png_set_gray_to_rgb (png);
  png_set_interlace_handling (png);
  png_read_update_info (png, info);
  if (png_get_rowbytes (png, info) != size_t (width) * 3)
    png_error (png, "unexpected row size after conversion to 8-bit RGB");
  r->rgb.create ((int)height, (int)width, CV_8UC3);
  r->rows.resize (height);
  for (png_uint_32 y = 0; y < height; y++)
    r->rows[y] = r->rgb.ptr<png_byte> ((int)y);
  png_read_image (png, r->rows.data ());
  png_read_end (png, nullptr);
  return true;
}

struct PngWrite {
  PngError error;
  std::vector<uint8_t> bytes;
  bool out_of_memory = false;
};

void
on_png_write (png_structp png, png_bytep data, size_t n)
{
  auto *w = static_cast<PngWrite *> (png_get_io_ptr (png));
  try {
    w->bytes.insert (w->bytes.end (), data, data + n);
  } catch (const std::bad_alloc &) {
    w->out_of_memory = true;
  }
  if (w->out_of_memory)
    png_error (png, "out of memory");
}

void
on_png_flush (png_structp)
{}

// Every libpng call of an encode (see the top of the file).
bool
write_png (png_structp png, png_infop info, const cv::Mat *rgb, int level, PngWrite *w)
{
  if (setjmp (png_jmpbuf (png)))
    return false;
  png_set_write_fn (png, w, on_png_write, on_png_flush);
  // Each row minus its left neighbour, then zlib's run-length matching:
  // OpenCV's own choice for speed.  On a 1000x600 map of H&E it took about
  // as long as cv::imencode and made the same size, where libpng's adaptive
  // filters with zlib's default matching took twice as long for 0-6 % less.
  png_set_filter (png, PNG_FILTER_TYPE_BASE, PNG_FILTER_SUB);
  png_set_compression_strategy (png, Z_RLE);
  png_set_compression_level (png, level);
  png_set_IHDR (png, info, (png_uint_32)rgb->cols, (png_uint_32)rgb->rows, 8, PNG_COLOR_TYPE_RGB,
                PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info (png, info);
  for (int y = 0; y < rgb->rows; y++)
    png_write_row (png, rgb->ptr<png_byte> (y));
  png_write_end (png, info);
  return true;
}

// libpng's structures of one decode or encode, freed however it ends.
struct PngStructs {
  png_structp png = nullptr;
  png_infop info = nullptr;
  bool writing = false;
  ~PngStructs ()
  {
    if (writing)
      png_destroy_write_struct (&png, &info);
    else
      png_destroy_read_struct (&png, &info, nullptr);
  }
};

} // namespace

DecodedImage
decode_png (const uint8_t *data, size_t size, cv::Size expected_size)
{
  DecodedImage out;
  if (!data || size < 8 || png_sig_cmp (data, 0, 8) != 0) {
    out.error = "not a PNG image";
    return out;
  }
  out.format = ImageFormat::kPng;
  PngRead r;
  r.data = data;
  r.size = size;
  r.expected_size = expected_size;
  PngStructs s;
  s.png = png_create_read_struct (PNG_LIBPNG_VER_STRING, &r.error, on_png_error, on_png_warning);
  s.info = s.png ? png_create_info_struct (s.png) : nullptr;
  if (!s.info) {
    out.error = "cannot decode the PNG: out of memory";
    return out;
  }
  png_set_user_limits (s.png, kMaxImageSidePx, kMaxImageSidePx);
  if (read_png (s.png, s.info, &r))
    out.rgb = std::move (r.rgb);
  else if (!r.size_problem.empty ())
    out.error = "refused " + r.size_problem;
  else
    out.error = std::string ("cannot decode the PNG (libpng: ") + r.error.text + ")";
  return out;
}

std::vector<uint8_t>
encode_png (const cv::Mat &rgb, int compression_level)
{
  if (rgb.empty () || rgb.type () != CV_8UC3)
    return {};
  PngWrite w;
  PngStructs s;
  s.writing = true;
  s.png = png_create_write_struct (PNG_LIBPNG_VER_STRING, &w.error, on_png_error, on_png_warning);
  s.info = s.png ? png_create_info_struct (s.png) : nullptr;
  if (!s.info || !write_png (s.png, s.info, &rgb, std::clamp (compression_level, 0, 9), &w))
    return {};
  return std::move (w.bytes);
}

} // namespace livemicro::hw
