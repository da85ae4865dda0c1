// PNG, JPEG and TIFF over libpng, libjpeg and libtiff
// (livemicro/hw/image_codec.h): the pixels cv::imread gives (in RGB), the
// slide map's PNG round trip, and bad files that give an error, not a crash
// nor a line on stderr.  The test links OpenCV's imgcodecs to compare with.
#include "testutil.h"

#include <livemicro/hw/image_codec.h>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <png.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <unistd.h>

using namespace livemicro::hw;
using livemicro::test::TempDir;

namespace {

std::string
read_bytes (const std::string &path)
{
  std::ifstream f (path, std::ios::binary);
  return std::string (std::istreambuf_iterator<char> (f), {});
}

void
write_bytes (const std::string &path, const std::string &bytes)
{
  std::ofstream f (path, std::ios::binary);
  f << bytes;
}

const uint8_t *
bytes_of (const std::string &s)
{
  return reinterpret_cast<const uint8_t *> (s.data ());
}

// What cv::imread (IMREAD_COLOR) gives, in RGB.
cv::Mat
imread_rgb (const std::string &path)
{
  cv::Mat bgr = cv::imread (path, cv::IMREAD_COLOR), rgb;
  if (!bgr.empty ())
    cv::cvtColor (bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

// A picture no channel swap, flip or transpose leaves unchanged: red top
// left, green top right, blue bottom left, gradients elsewhere.
cv::Mat
asymmetric_rgb (int width, int height)
{
  cv::Mat rgb (height, width, CV_8UC3);
  for (int y = 0; y < height; y++)
    for (int x = 0; x < width; x++)
      rgb.at<cv::Vec3b> (y, x)
          = cv::Vec3b ((uchar)(x * 255 / width), (uchar)(y * 255 / height), (uchar)((x + 3 * y) % 256));
  rgb.at<cv::Vec3b> (0, 0) = {255, 0, 0};
  rgb.at<cv::Vec3b> (0, width - 1) = {0, 255, 0};
  rgb.at<cv::Vec3b> (height - 1, 0) = {0, 0, 255};
  return rgb;
}

// The same picture in OpenCV's BGR order, for cv::imwrite and cv::imencode.
cv::Mat
asymmetric_bgr (int width, int height)
{
  cv::Mat bgr;
  cv::cvtColor (asymmetric_rgb (width, height), bgr, cv::COLOR_RGB2BGR);
  return bgr;
}

// `bgr` as cv::imencode writes it (".png", ".jpg").
std::string
encoded (const char *ext, const cv::Mat &bgr)
{
  std::vector<uint8_t> bytes;
  EXPECT_TRUE (cv::imencode (ext, bgr, bytes));
  return std::string (bytes.begin (), bytes.end ());
}

double
max_difference (const cv::Mat &a, const cv::Mat &b)
{
  if (a.size () != b.size () || a.type () != b.type ())
    return 1e9;
  return cv::norm (a, b, cv::NORM_INF);
}

// The file decodes, as `format`, to exactly the pixels cv::imread gives;
// from memory too (PNG, JPEG).
void
expect_decodes_as_imread (const std::string &path, ImageFormat format)
{
  SCOPED_TRACE (path);
  cv::Mat expected = imread_rgb (path);
  ASSERT_FALSE (expected.empty ());
  DecodedImage file = decode_image_file (path);
  ASSERT_EQ (file.error, "");
  EXPECT_EQ (file.format, format);
  EXPECT_EQ (max_difference (file.rgb, expected), 0.0);
  if (format != ImageFormat::kTiff) {
    std::string bytes = read_bytes (path);
    EXPECT_EQ (max_difference (decode_image (bytes_of (bytes), bytes.size ()).rgb, expected), 0.0);
  }
}

// Everything written to fd 2 while alive.
class StderrCapture {
public:
  StderrCapture ()
  {
    std::fflush (stderr);
    saved_ = dup (2);
    file_ = std::tmpfile ();
    dup2 (fileno (file_), 2);
  }
  ~StderrCapture ()
  {
    if (saved_ >= 0)
      text ();
    std::fclose (file_);
  }
  std::string text ()
  {
    if (saved_ >= 0) {
      std::fflush (stderr);
      dup2 (saved_, 2);
      close (saved_);
      saved_ = -1;
    }
    std::string out;
    std::rewind (file_);
    char buf[4096];
    size_t n;
    while ((n = std::fread (buf, 1, sizeof buf, file_)) > 0)
      out.append (buf, n);
    return out;
  }

private:
  int saved_ = -1;
  FILE *file_ = nullptr;
};

// PNG's chunk CRC (ISO 3309), bit by bit.
uint32_t
crc32_of (const std::string &bytes)
{
  uint32_t crc = 0xffffffffu;
  for (unsigned char b : bytes) {
    crc ^= b;
    for (int k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return crc ^ 0xffffffffu;
}

// A PNG that cv::imwrite cannot make, through libpng's simplified API:
// `format` PNG_FORMAT_RGBA_COLORMAP (a palette, with one transparent
// colour) or PNG_FORMAT_GA (grey and alpha).
std::string
libpng_png (const cv::Mat &pixels, png_uint_32 format)
{
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = (png_uint_32)pixels.cols;
  image.height = (png_uint_32)pixels.rows;
  image.format = format;
  image.colormap_entries = 4;
  const uint8_t colormap[] = {255, 0, 0, 255, 0, 200, 0, 255, 10, 20, 250, 255, 90, 90, 90, 0};
  png_alloc_size_t size = 0;
  EXPECT_TRUE (
      png_image_write_to_memory (&image, nullptr, &size, 0, pixels.data, (png_int_32)pixels.step, colormap));
  std::string png (size, '\0');
  EXPECT_TRUE (png_image_write_to_memory (&image, png.data (), &size, 0, pixels.data, (png_int_32)pixels.step,
                                          colormap));
  png.resize (size);
  return png;
}

void
append_png_bytes (png_structp png, png_bytep data, size_t n)
{
  static_cast<std::string *> (png_get_io_ptr (png))->append (reinterpret_cast<char *> (data), n);
}

// An interlaced (Adam7) RGB PNG, which neither cv::imwrite nor libpng's
// simplified API makes.  A libpng error aborts the test (no setjmp).
std::string
interlaced_png (const cv::Mat &rgb)
{
  std::string out;
  png_structp png = png_create_write_struct (PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct (png);
  png_set_write_fn (png, &out, append_png_bytes, nullptr);
  png_set_IHDR (png, info, (png_uint_32)rgb.cols, (png_uint_32)rgb.rows, 8, PNG_COLOR_TYPE_RGB,
                PNG_INTERLACE_ADAM7, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info (png, info);
  std::vector<png_bytep> rows;
  for (int y = 0; y < rgb.rows; y++)
    rows.push_back (const_cast<png_bytep> (rgb.ptr<png_byte> (y)));
  png_write_image (png, rows.data ());
  png_write_end (png, info);
  png_destroy_write_struct (&png, &info);
  return out;
}

} // namespace

TEST (ImageCodec, PngRoundTripKeepsEveryPixelInRgbOrder)
{
  cv::Mat rgb = asymmetric_rgb (173, 91);
  std::vector<uint8_t> png = encode_png (rgb);
  ASSERT_FALSE (png.empty ());
  DecodedImage back = decode_png (png.data (), png.size ());
  ASSERT_EQ (back.error, "");
  EXPECT_EQ (back.format, ImageFormat::kPng);
  EXPECT_EQ (back.rgb.type (), CV_8UC3);
  EXPECT_EQ (max_difference (back.rgb, rgb), 0.0);
  // Another decoder reads the file as the same picture: red top left.
  cv::Mat bgr = cv::imdecode (png, cv::IMREAD_COLOR);
  ASSERT_FALSE (bgr.empty ());
  EXPECT_EQ (bgr.at<cv::Vec3b> (0, 0), cv::Vec3b (0, 0, 255));
  EXPECT_EQ (bgr.at<cv::Vec3b> (90, 0), cv::Vec3b (255, 0, 0));
  // Any compression level, a view into a larger image, a single pixel.
  for (int level : {0, 1, 9}) {
    std::vector<uint8_t> p = encode_png (rgb (cv::Rect (5, 7, 100, 50)), level);
    DecodedImage d = decode_image (p.data (), p.size ());
    EXPECT_EQ (max_difference (d.rgb, rgb (cv::Rect (5, 7, 100, 50))), 0.0) << "level " << level;
  }
  std::vector<uint8_t> one = encode_png (cv::Mat (1, 1, CV_8UC3, cv::Scalar (1, 2, 3)));
  EXPECT_EQ (decode_png (one.data (), one.size ()).rgb.at<cv::Vec3b> (0, 0), cv::Vec3b (1, 2, 3));
  // Nothing to encode.
  EXPECT_TRUE (encode_png (cv::Mat ()).empty ());
  EXPECT_TRUE (encode_png (cv::Mat (4, 4, CV_8UC1)).empty ());
}

TEST (ImageCodec, PngOfEveryKindDecodesAsImreadReadsIt)
{
  TempDir dir;
  cv::Mat bgr = asymmetric_bgr (64, 48);
  cv::Mat bgra, grey, bgr16, grey16;
  cv::cvtColor (bgr, bgra, cv::COLOR_BGR2BGRA);
  for (int y = 0; y < bgra.rows; y++)
    for (int x = 0; x < bgra.cols; x++)
      bgra.at<cv::Vec4b> (y, x)[3] = (uchar)(x * 4); // alpha is dropped, not applied
  cv::cvtColor (bgr, grey, cv::COLOR_BGR2GRAY);
  bgr.convertTo (bgr16, CV_16UC3, 257.0);
  bgr16 += cv::Scalar (0, 77, 200); // low bytes that must not round up
  grey.convertTo (grey16, CV_16UC1, 256.0);
  cv::Mat indices (20, 30, CV_8UC1);
  for (int y = 0; y < indices.rows; y++)
    for (int x = 0; x < indices.cols; x++)
      indices.at<uchar> (y, x) = (uchar)((x / 8 + y / 5) % 4);
  write_bytes (dir.file ("palette.png"), libpng_png (indices, PNG_FORMAT_RGBA_COLORMAP));
  cv::Mat grey_alpha;
  cv::merge (std::vector<cv::Mat>{grey, 255 - grey}, grey_alpha);
  write_bytes (dir.file ("grey-alpha.png"), libpng_png (grey_alpha, PNG_FORMAT_GA));
  write_bytes (dir.file ("interlaced.png"), interlaced_png (asymmetric_rgb (64, 48)));
  ASSERT_TRUE (cv::imwrite (dir.file ("rgb.png"), bgr));
  ASSERT_TRUE (cv::imwrite (dir.file ("rgba.png"), bgra));
  ASSERT_TRUE (cv::imwrite (dir.file ("grey.png"), grey));
  ASSERT_TRUE (cv::imwrite (dir.file ("rgb16.png"), bgr16));
  ASSERT_TRUE (cv::imwrite (dir.file ("grey16.png"), grey16));
  ASSERT_TRUE (cv::imwrite (dir.file ("bilevel.png"), grey > 128, {cv::IMWRITE_PNG_BILEVEL, 1}));
  for (const char *name : {"rgb.png", "rgba.png", "grey.png", "rgb16.png", "grey16.png", "bilevel.png",
                           "palette.png", "grey-alpha.png", "interlaced.png"})
    expect_decodes_as_imread (dir.file (name), ImageFormat::kPng);
  // Spot checks that do not lean on imread: the palette's second colour,
  // grey as three equal channels.
  DecodedImage palette = decode_image_file (dir.file ("palette.png"));
  EXPECT_EQ (palette.rgb.at<cv::Vec3b> (0, 8), cv::Vec3b (0, 200, 0));
  EXPECT_EQ (max_difference (decode_image_file (dir.file ("interlaced.png")).rgb, asymmetric_rgb (64, 48)),
             0.0);
  DecodedImage g = decode_image_file (dir.file ("grey.png"));
  cv::Vec3b p = g.rgb.at<cv::Vec3b> (10, 10);
  EXPECT_EQ (p[0], grey.at<uchar> (10, 10));
  EXPECT_EQ (p[1], p[0]);
  EXPECT_EQ (p[2], p[0]);
}

TEST (ImageCodec, JpegDecodesAsImdecodeDoesFromFileAndMemory)
{
  TempDir dir;
  cv::Mat bgr = asymmetric_bgr (160, 120), grey;
  cv::GaussianBlur (bgr, bgr, cv::Size (5, 5), 1.5); // JPEG-friendly, as a slide is
  cv::cvtColor (bgr, grey, cv::COLOR_BGR2GRAY);
  struct Case {
    const char *name;
    cv::Mat image;
    std::vector<int> params;
  } cases[] = {
      {"colour.jpg", bgr, {cv::IMWRITE_JPEG_QUALITY, 90}},
      {"grey.jpg", grey, {cv::IMWRITE_JPEG_QUALITY, 80}},
      {"progressive.jpg", bgr, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}},
      {"restart-markers.jpg", bgr, {cv::IMWRITE_JPEG_RST_INTERVAL, 4, cv::IMWRITE_JPEG_OPTIMIZE, 1}},
  };
  for (const Case &c : cases) {
    SCOPED_TRACE (c.name);
    std::vector<uint8_t> jpeg;
    ASSERT_TRUE (cv::imencode (".jpg", c.image, jpeg, c.params));
    write_bytes (dir.file (c.name), std::string (jpeg.begin (), jpeg.end ()));
    cv::Mat expected;
    cv::cvtColor (cv::imdecode (jpeg, cv::IMREAD_COLOR), expected, cv::COLOR_BGR2RGB);
    DecodedImage memory = decode_image (jpeg.data (), jpeg.size ());
    ASSERT_EQ (memory.error, "");
    EXPECT_EQ (memory.format, ImageFormat::kJpeg);
    EXPECT_LE (max_difference (memory.rgb, expected), 2.0);
    DecodedImage file = decode_image_file (dir.file (c.name));
    ASSERT_EQ (file.error, "");
    EXPECT_EQ (max_difference (file.rgb, memory.rgb), 0.0);
  }
  // Red stays red.
  std::vector<uint8_t> red;
  cv::imencode (".jpg", cv::Mat (16, 16, CV_8UC3, cv::Scalar (0, 0, 255)), red);
  cv::Vec3b px = decode_image (red.data (), red.size ()).rgb.at<cv::Vec3b> (8, 8);
  EXPECT_GT (px[0], 240);
  EXPECT_LT (px[2], 15);
}

TEST (ImageCodec, TiffDecodesAsImreadReadsIt)
{
  TempDir dir;
  cv::Mat bgr = asymmetric_bgr (90, 70), grey;
  cv::cvtColor (bgr, grey, cv::COLOR_BGR2GRAY);
  ASSERT_TRUE (cv::imwrite (dir.file ("lzw.tif"), bgr)); // OpenCV's default: LZW
  ASSERT_TRUE (cv::imwrite (dir.file ("plain.tiff"), bgr, {cv::IMWRITE_TIFF_COMPRESSION, 1}));
  ASSERT_TRUE (cv::imwrite (dir.file ("grey.tif"), grey));
  ASSERT_TRUE (cv::imwrite (dir.file ("rgba.tif"), [&] {
    cv::Mat bgra;
    cv::cvtColor (bgr, bgra, cv::COLOR_BGR2BGRA);
    return bgra;
  }()));
  for (const char *name : {"lzw.tif", "plain.tiff", "grey.tif", "rgba.tif"})
    expect_decodes_as_imread (dir.file (name), ImageFormat::kTiff);
  EXPECT_EQ (decode_image_file (dir.file ("lzw.tif")).rgb.at<cv::Vec3b> (0, 0), cv::Vec3b (255, 0, 0));
  // Only files: a TIFF in memory is refused by name.
  std::string bytes = read_bytes (dir.file ("lzw.tif"));
  DecodedImage memory = decode_image (bytes_of (bytes), bytes.size ());
  EXPECT_EQ (memory.format, ImageFormat::kTiff);
  EXPECT_TRUE (memory.rgb.empty ());
  EXPECT_NE (memory.error.find ("TIFF"), std::string::npos) << memory.error;
}

TEST (ImageCodec, FormatComesFromTheBytesNotTheName)
{
  TempDir dir;
  cv::Mat bgr = asymmetric_bgr (40, 30);
  write_bytes (dir.file ("really-a-png.jpg"), encoded (".png", bgr));
  DecodedImage d = decode_image_file (dir.file ("really-a-png.jpg"));
  EXPECT_EQ (d.format, ImageFormat::kPng);
  EXPECT_EQ (max_difference (d.rgb, asymmetric_rgb (40, 30)), 0.0);
  cv::imwrite (dir.file ("tiff-named.png.tmp.tif"), bgr);
  std::rename (dir.file ("tiff-named.png.tmp.tif").c_str (), dir.file ("tiff-named.png").c_str ());
  EXPECT_EQ (decode_image_file (dir.file ("tiff-named.png")).format, ImageFormat::kTiff);
  // A PNG given where only PNG is expected, and a JPEG there.
  std::string jpeg = encoded (".jpg", bgr);
  DecodedImage j = decode_png (bytes_of (jpeg), jpeg.size ());
  EXPECT_TRUE (j.rgb.empty ());
  EXPECT_EQ (j.error, "not a PNG image");
}

// Truncated and corrupt files of each format, and random bytes: an error
// that names the format, no pixels, nothing on stderr.
TEST (ImageCodec, BadFilesGiveAnErrorNotACrashNorStderr)
{
  TempDir dir;
  cv::Mat bgr = asymmetric_bgr (200, 150);
  const std::string png = encoded (".png", bgr), jpeg = encoded (".jpg", bgr);
  cv::imwrite (dir.file ("good.tif"), bgr);
  const std::string tiff = read_bytes (dir.file ("good.tif"));
  std::string flipped_png = png, flipped_jpeg = jpeg;
  for (size_t i = png.size () / 2; i < png.size () / 2 + 16; i++)
    flipped_png[i] = char (~flipped_png[i]); // IDAT's CRC no longer matches
  for (size_t i = jpeg.size () / 2; i < jpeg.size () / 2 + 64; i++)
    flipped_jpeg[i] = char (0xff - i); // markers in the middle of the scan
  std::mt19937 random (1);
  std::string noise (5000, '\0');
  for (char &c : noise)
    c = char (random ());
  struct Case {
    const char *name, *says;
    std::string bytes;
  } cases[] = {
      {"cut.png", "PNG", png.substr (0, png.size () / 2)},
      {"no-iend.png", "PNG", png.substr (0, png.size () - 12)},
      {"header-only.png", "PNG", png.substr (0, 20)},
      {"flipped.png", "PNG", flipped_png},
      {"cut.jpg", "JPEG", jpeg.substr (0, jpeg.size () / 2)},
      {"header-only.jpg", "JPEG", jpeg.substr (0, 100)},
      {"flipped.jpg", "JPEG", flipped_jpeg},
      {"cut.tif", "TIFF", tiff.substr (0, tiff.size () / 2)},
      {"header-only.tif", "TIFF", tiff.substr (0, 8)},
      {"noise.bin", "not a PNG, JPEG or TIFF", noise},
      {"noise-as.png", "PNG", png.substr (0, 8) + noise},
      {"noise-as.jpg", "JPEG", jpeg.substr (0, 3) + noise},
      {"noise-as.tif", "TIFF", tiff.substr (0, 4) + noise},
      {"empty.png", "not a PNG, JPEG or TIFF", ""},
  };
  StderrCapture stderr_capture;
  for (const Case &c : cases) {
    write_bytes (dir.file (c.name), c.bytes);
    DecodedImage file = decode_image_file (dir.file (c.name));
    EXPECT_TRUE (file.rgb.empty ()) << c.name;
    EXPECT_NE (file.error.find (c.says), std::string::npos) << c.name << ": " << file.error;
    if (std::string (c.says) != "TIFF") {
      DecodedImage memory = decode_image (bytes_of (c.bytes), c.bytes.size ());
      EXPECT_TRUE (memory.rgb.empty ()) << c.name;
      EXPECT_EQ (memory.error, file.error) << c.name;
    }
  }
  // Any cut of a PNG fails; every corruption anywhere either fails or still
  // gives a picture of the size, and never crashes.
  for (size_t n = 0; n < png.size (); n += 97)
    EXPECT_FALSE (decode_image (bytes_of (png), n).error.empty ()) << "PNG cut at " << n;
  for (const std::string *good : {&png, &jpeg, &tiff}) {
    for (int trial = 0; trial < 150; trial++) {
      std::string bad = *good;
      for (int k = 0; k < 4; k++)
        bad[8 + random () % (bad.size () - 8)] = char (random ());
      bad.resize (bad.size () - random () % 64);
      write_bytes (dir.file ("mutant"), bad);
      DecodedImage d = decode_image_file (dir.file ("mutant"));
      EXPECT_TRUE (d.error.empty () == !d.rgb.empty ());
      if (!d.rgb.empty ()) {
        EXPECT_EQ (d.rgb.type (), CV_8UC3);
      }
    }
  }
  EXPECT_EQ (stderr_capture.text (), "");
  // The error says what is wrong.
  EXPECT_NE (decode_image_file (dir.file ("cut.png")).error.find ("ends early"), std::string::npos);
  EXPECT_NE (decode_image_file (dir.file ("cut.jpg")).error.find ("Premature end of JPEG file"),
             std::string::npos);
  EXPECT_EQ (decode_image_file (dir.file ("missing.png")).error, "cannot open it: No such file or directory");
}

// A camera's MJPEG frame with a lost tail still shows what arrived; a file
// with one is refused.
TEST (ImageCodec, DamagedJpegIsRefusedUnlessAccepted)
{
  cv::Mat bgr = asymmetric_bgr (320, 240);
  std::vector<uint8_t> jpeg;
  cv::imencode (".jpg", bgr, jpeg);
  DecodedImage whole = decode_image (jpeg.data (), jpeg.size ());
  ASSERT_EQ (whole.error, "");
  jpeg.resize (jpeg.size () * 2 / 3);
  StderrCapture stderr_capture;
  DecodedImage refused = decode_image (jpeg.data (), jpeg.size ());
  EXPECT_TRUE (refused.rgb.empty ());
  EXPECT_NE (refused.error.find ("damaged JPEG"), std::string::npos) << refused.error;
  DecodedImage accepted = decode_image (jpeg.data (), jpeg.size (), {DamagedJpeg::kAccept});
  EXPECT_EQ (accepted.error, "");
  ASSERT_EQ (accepted.rgb.size (), cv::Size (320, 240));
  cv::Rect top (0, 0, 320, 64);
  EXPECT_EQ (max_difference (accepted.rgb (top), whole.rgb (top)), 0.0) << "the top arrived";
  EXPECT_EQ (stderr_capture.text (), "");
}

// Headers that state sizes no slide has (2^40 and 3.6 10^9 px) are refused
// before the decoder allocates the pixels.
TEST (ImageCodec, ImpossibleSizesAreRefusedBeforeAllocating)
{
  std::vector<uint8_t> png = encode_png (cv::Mat (1, 1, CV_8UC3, cv::Scalar (0, 0, 0)));
  std::string big (png.begin (), png.end ());
  auto put_be = [] (std::string &s, size_t at, uint32_t v, int n) {
    for (int i = 0; i < n; i++)
      s[at + i] = char (v >> (8 * (n - 1 - i)));
  };
  put_be (big, 16, 1u << 20, 4); // IHDR width
  put_be (big, 20, 1u << 20, 4); // IHDR height
  put_be (big, 29, crc32_of (big.substr (12, 17)), 4);
  DecodedImage p = decode_image (bytes_of (big), big.size ());
  EXPECT_TRUE (p.rgb.empty ());
  EXPECT_NE (p.error.find ("refused a PNG of 1048576x1048576 px"), std::string::npos) << p.error;

  std::vector<uint8_t> buf;
  cv::imencode (".jpg", cv::Mat (8, 8, CV_8UC3, cv::Scalar (0, 0, 0)), buf);
  std::string jpeg (buf.begin (), buf.end ());
  size_t sof = jpeg.find ("\xff\xc0");
  ASSERT_NE (sof, std::string::npos);
  put_be (jpeg, sof + 5, 60000, 2); // height (libjpeg's own limit: 65500)
  put_be (jpeg, sof + 7, 60000, 2); // width
  DecodedImage j = decode_image (bytes_of (jpeg), jpeg.size ());
  EXPECT_TRUE (j.rgb.empty ());
  EXPECT_NE (j.error.find ("refused a JPEG of 60000x60000 px"), std::string::npos) << j.error;
  // A caller that knows the size (a camera frame, the slide map) has any
  // other refused before decoding.
  DecodedImage framed = decode_image (buf.data (), buf.size (), {DamagedJpeg::kAccept, cv::Size (16, 8)});
  EXPECT_EQ (framed.error, "refused a JPEG of 8x8 px where 16x8 px were expected");
  std::vector<uint8_t> map = encode_png (cv::Mat (6, 10, CV_8UC3, cv::Scalar (1, 2, 3)));
  EXPECT_EQ (decode_png (map.data (), map.size (), cv::Size (10, 6)).rgb.size (), cv::Size (10, 6));
  EXPECT_EQ (decode_png (map.data (), map.size (), cv::Size (6, 10)).error,
             "refused a PNG of 10x6 px where 6x10 px were expected");
}
