#include "file_slides.h"

#include <livemicro/hw/text.h>
#include <config.h>
#include <livemicro/hw/error.h>
#include <livemicro/hw/image_codec.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <opencv2/imgproc.hpp>
#if HAVE_OPENSLIDE
#include <openslide.h>
#endif
#if HAVE_LIBTIFF
#include <tiffio.h>
#endif

#include <cerrno>
#include <cmath>
#include <sstream>
#include <vector>

namespace livemicro::hw::sim {

namespace {

// Maps output pixels of region r at `upp` onto `src` sampled at `src_upp`
// whose pixel (0, 0) is the slide's pixel (src_x0, src_y0) at src_upp.
void
resample (const cv::Mat &src, double src_upp, double src_x0, double src_y0, double upp, const cv::Rect &r,
          cv::Mat &out)
{
  out.create (r.size (), CV_8UC3);
  double s = upp / src_upp;
  cv::Matx23d m (s, 0, (r.x + 0.5) * s - 0.5 - src_x0, 0, s, (r.y + 0.5) * s - 0.5 - src_y0);
  cv::warpAffine (src, out, m, r.size (), cv::WARP_INVERSE_MAP | cv::INTER_LINEAR, cv::BORDER_CONSTANT,
                  cv::Scalar (kNoSlideRgb[0], kNoSlideRgb[1], kNoSlideRgb[2]));
}

// µm per pixel from TIFF resolution tags, 0 when absent.
double
tiff_um_per_px (const std::string &path)
{
#if HAVE_LIBTIFF
  TIFFSetWarningHandler (nullptr);
  TIFFSetErrorHandler (nullptr);
  TIFF *tif = TIFFOpen (path.c_str (), "r");
  if (!tif)
    return 0;
  float xres = 0;
  uint16_t unit = RESUNIT_INCH;
  double mpp = 0;
  if (TIFFGetField (tif, TIFFTAG_XRESOLUTION, &xres) && xres > 0) {
    TIFFGetFieldDefaulted (tif, TIFFTAG_RESOLUTIONUNIT, &unit);
    if (unit == RESUNIT_CENTIMETER)
      mpp = 10000.0 / xres;
    else if (unit == RESUNIT_INCH)
      mpp = 25400.0 / xres;
  }
  TIFFClose (tif);
  // Screen-resolution defaults (72/96 dpi) are not microscope calibrations.
  return mpp > 0 && mpp < 100 ? mpp : 0;
#else
  return 0;
#endif
}

// A plain image held in memory with a 2× pyramid.
class ImageSlide : public Slide {
public:
  ImageSlide (const std::string &path, cv::Mat rgb, double mpp) : path_ (path), mpp_ (mpp)
  {
    levels_.push_back (std::move (rgb));
    while (levels_.back ().cols > 512 && levels_.back ().rows > 512) {
      cv::Mat half;
      cv::resize (levels_.back (), half, cv::Size (), 0.5, 0.5, cv::INTER_AREA);
      levels_.push_back (std::move (half));
    }
  }
  std::string description () const override
  {
    return "image " + path_ + " (" + std::to_string (levels_[0].cols) + "x" + std::to_string (levels_[0].rows)
           + " px, " + num (mpp_) + " µm/px)";
  }
  cv::Size2d size_um () const override { return {levels_[0].cols * mpp_, levels_[0].rows * mpp_}; }
  double native_um_per_px () const override { return mpp_; }
  void render (double upp, const cv::Rect &r, cv::Mat &out) const override
  {
    size_t k = 0;
    while (k + 1 < levels_.size () && mpp_ * std::ldexp (1.0, int (k + 1)) <= upp)
      k++;
    // Level k holds the slide at (level_0 size / 2^k); its pixel size in µm
    // follows from the actual (rounded) dimensions.
    double level_upp = size_um ().width / levels_[k].cols;
    resample (levels_[k], level_upp, 0, 0, upp, r, out);
  }

private:
  std::string path_;
  double mpp_;
  std::vector<cv::Mat> levels_;
};

#if HAVE_OPENSLIDE
class OpenSlideSlide : public Slide {
public:
  OpenSlideSlide (const std::string &path, openslide_t *osr, double mpp)
      : path_ (path), osr_ (osr), mpp_ (mpp)
  {
    openslide_get_level0_dimensions (osr_, &width_px_, &height_px_);
    const char *vendor = openslide_get_property_value (osr_, OPENSLIDE_PROPERTY_NAME_VENDOR);
    vendor_ = vendor ? vendor : "unknown";
  }
  ~OpenSlideSlide () override { openslide_close (osr_); }
  std::string description () const override
  {
    return "whole-slide image " + path_ + " (" + vendor_ + ", " + std::to_string (width_px_) + "x"
           + std::to_string (height_px_) + " px, " + std::to_string (openslide_get_level_count (osr_))
           + " levels, " + num (mpp_) + " µm/px)";
  }
  cv::Size2d size_um () const override { return {width_px_ * mpp_, height_px_ * mpp_}; }
  double native_um_per_px () const override { return mpp_; }
  void render (double upp, const cv::Rect &r, cv::Mat &out) const override
  {
    int32_t level = openslide_get_best_level_for_downsample (osr_, upp / mpp_);
    if (level < 0)
      level = 0;
    double ds = openslide_get_level_downsample (osr_, level);
    double level_upp = mpp_ * ds;
    double s = upp / level_upp;
    // Source window in level pixels, with a margin for interpolation.
    int64_t sx0 = (int64_t)std::floor ((r.x + 0.5) * s - 0.5) - 1;
    int64_t sy0 = (int64_t)std::floor ((r.y + 0.5) * s - 0.5) - 1;
    int64_t sx1 = (int64_t)std::ceil ((r.x + r.width - 0.5) * s - 0.5) + 2;
    int64_t sy1 = (int64_t)std::ceil ((r.y + r.height - 0.5) * s - 0.5) + 2;
    int64_t sw = sx1 - sx0, sh = sy1 - sy0;
    std::vector<uint32_t> argb (size_t (sw) * size_t (sh));
    openslide_read_region (osr_, argb.data (), (int64_t)std::floor (sx0 * ds), (int64_t)std::floor (sy0 * ds),
                           level, sw, sh);
    if (const char *err = openslide_get_error (osr_))
      throw Error (ErrorKind::kCorrupt, "cannot read slide '" + path_ + "': " + err);
    cv::Mat src ((int)sh, (int)sw, CV_8UC3);
    for (int64_t j = 0; j < sh; j++) {
      cv::Vec3b *row = src.ptr<cv::Vec3b> ((int)j);
      const uint32_t *in = argb.data () + j * sw;
      for (int64_t i = 0; i < sw; i++) {
        uint32_t p = in[i];
        uint32_t a = p >> 24;
        // Premultiplied ARGB over the empty light path.
        auto over = [a] (uint32_t c, uint8_t bg) {
          return (uint8_t)std::min<uint32_t> (255, c + (bg * (255 - a)) / 255);
        };
        row[i] = cv::Vec3b (over ((p >> 16) & 0xff, kNoSlideRgb[0]), over ((p >> 8) & 0xff, kNoSlideRgb[1]),
                            over (p & 0xff, kNoSlideRgb[2]));
      }
    }
    resample (src, level_upp, (double)sx0, (double)sy0, upp, r, out);
  }

private:
  std::string path_;
  openslide_t *osr_;
  double mpp_;
  int64_t width_px_ = 0, height_px_ = 0;
  std::string vendor_;
};

double
openslide_um_per_px (openslide_t *osr)
{
  if (const char *v = openslide_get_property_value (osr, OPENSLIDE_PROPERTY_NAME_MPP_X)) {
    double mpp = g_ascii_strtod (v, nullptr);
    if (mpp > 0)
      return mpp;
  }
  const char *xres = openslide_get_property_value (osr, "tiff.XResolution");
  const char *unit = openslide_get_property_value (osr, "tiff.ResolutionUnit");
  if (xres && unit) {
    double r = g_ascii_strtod (xres, nullptr);
    if (r > 0 && g_str_equal (unit, "centimeter"))
      return 10000.0 / r;
    if (r > 0 && g_str_equal (unit, "inch"))
      return 25400.0 / r;
  }
  return 0;
}
#endif

} // namespace

std::unique_ptr<Slide>
open_slide_file (const std::string &path, double mpp_override)
{
  if (!g_file_test (path.c_str (), G_FILE_TEST_EXISTS))
    throw Error (ErrorKind::kNotFound, "slide '" + path + "' does not exist");
  if (!g_file_test (path.c_str (), G_FILE_TEST_IS_REGULAR))
    throw Error (ErrorKind::kUnsupported, "slide '" + path + "' is not a file");
  if (g_access (path.c_str (), R_OK) != 0)
    throw Error (ErrorKind::kCorrupt, "cannot read slide '" + path + "': " + g_strerror (errno));

  std::string openslide_problem;
#if HAVE_OPENSLIDE
  if (openslide_detect_vendor (path.c_str ())) {
    openslide_t *osr = openslide_open (path.c_str ());
    const char *err = osr ? openslide_get_error (osr) : "not readable";
    if (osr && !err) {
      double mpp = mpp_override > 0 ? mpp_override : openslide_um_per_px (osr);
      if (mpp <= 0) {
        openslide_close (osr);
        throw Error (ErrorKind::kCorrupt, "slide '" + path
                                              + "' has no µm/px calibration (no openslide.mpp-x "
                                                "nor TIFF resolution): add ?mpp=<µm per pixel> to the URI");
      }
      auto slide = std::make_unique<OpenSlideSlide> (path, osr, mpp);
      // Read one pixel now so a truncated file fails here, not mid-stream.
      cv::Mat probe;
      slide->render (mpp, cv::Rect (0, 0, 1, 1), probe);
      return slide;
    }
    openslide_problem = std::string ("OpenSlide: ") + err;
    if (osr)
      openslide_close (osr);
  }
#endif
  DecodedImage image = decode_image_file (path);
  if (!image.error.empty ()) {
    // Bytes that are no image at all: the readers they were offered to.
    std::string why = image.format == ImageFormat::kUnknown
                          ? "not an image OpenSlide, libpng, libjpeg or libtiff can decode"
                          : image.error;
    if (!openslide_problem.empty ())
      why = openslide_problem + "; " + why;
    throw Error (ErrorKind::kCorrupt, "cannot read slide '" + path + "': " + why);
  }
  double mpp = mpp_override;
  if (mpp <= 0 && image.format == ImageFormat::kTiff)
    mpp = tiff_um_per_px (path);
  if (mpp <= 0)
    throw Error (ErrorKind::kCorrupt, "image '" + path
                                          + "' has no µm/px calibration: add ?mpp=<µm per "
                                            "pixel> to the URI (e.g. sim://"
                                          + path + "?mpp=0.25)");
  return std::make_unique<ImageSlide> (path, std::move (image.rgb), mpp);
}

} // namespace livemicro::hw::sim
