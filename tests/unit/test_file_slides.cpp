// Slides from files: plain images through libpng, libjpeg and libtiff,
// whole-slide images through OpenSlide, and the errors a bad file gets.
#include "sim/file_slides.h"
#include "sim/sim_microscope.h"
#include "testutil.h"

#include <livemicro/hw/error.h>
#include <livemicro/hw/microscope.h>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <atomic>
#include <fstream>
#include <thread>

using namespace livemicro::hw;
using livemicro::test::TempDir;

namespace {

std::string
error_text (const std::function<void ()> &fn, ErrorKind *kind = nullptr)
{
  try {
    fn ();
  } catch (const Error &e) {
    if (kind)
      *kind = e.kind ();
    return e.what ();
  }
  return "(no error)";
}

void
write_bytes (const std::string &path, const std::string &bytes)
{
  std::ofstream f (path, std::ios::binary);
  f << bytes;
}

std::string
copy_prefix (const std::string &from, const std::string &to, size_t n)
{
  std::ifstream in (from, std::ios::binary);
  std::string data (n, '\0');
  in.read (data.data (), (std::streamsize)n);
  data.resize ((size_t)in.gcount ());
  write_bytes (to, data);
  return to;
}

} // namespace

TEST (FileSlides, MissingFileNamesThePath)
{
  ErrorKind kind;
  std::string e = error_text ([] { open_microscope ("sim:///nonexistent/slide.svs"); }, &kind);
  EXPECT_EQ (kind, ErrorKind::kNotFound);
  EXPECT_NE (e.find ("/nonexistent/slide.svs"), std::string::npos) << e;
  EXPECT_NE (e.find ("does not exist"), std::string::npos) << e;
}

TEST (FileSlides, GarbageFileIsCorruptNotACrash)
{
  TempDir dir;
  std::string path = dir.file ("broken.png");
  write_bytes (path, "\x89PNG\r\n\x1a\n this is not really a PNG file at all");
  ErrorKind kind;
  std::string e = error_text ([&] { open_microscope ("sim://" + path + "?mpp=0.25"); }, &kind);
  EXPECT_EQ (kind, ErrorKind::kCorrupt);
  EXPECT_NE (e.find (path), std::string::npos) << e;
  EXPECT_NE (e.find ("cannot read slide"), std::string::npos) << e;
  // Bytes that are no image at all name the readers they were offered to.
  std::string text = dir.file ("notes.svs");
  write_bytes (text, "a slide scanner's notes, not a slide");
  e = error_text ([&] { open_microscope ("sim://" + text + "?mpp=0.25"); }, &kind);
  EXPECT_EQ (kind, ErrorKind::kCorrupt);
  EXPECT_EQ (e, "cannot read slide '" + text
                    + "': not an image OpenSlide, libpng, libjpeg or libtiff can decode");
}

// A JPEG that breaks off is refused, not shown with a grey lower part.
TEST (FileSlides, TruncatedJpegIsCorruptNotGrey)
{
  TempDir dir;
  std::vector<uchar> jpeg;
  cv::imencode (".jpg", cv::Mat (120, 160, CV_8UC3, cv::Scalar (40, 60, 200)), jpeg);
  std::string whole = dir.file ("tile.jpg"), cut = dir.file ("cut.jpg");
  write_bytes (whole, std::string (jpeg.begin (), jpeg.end ()));
  write_bytes (cut, std::string (jpeg.begin (), jpeg.end () - 200));
  EXPECT_DOUBLE_EQ (sim::open_slide_file (whole, 0.5)->size_um ().width, 80.0);
  ErrorKind kind;
  std::string e = error_text ([&] { sim::open_slide_file (cut, 0.5); }, &kind);
  EXPECT_EQ (kind, ErrorKind::kCorrupt);
  EXPECT_EQ (e, "cannot read slide '" + cut + "': damaged JPEG (libjpeg: Premature end of JPEG file)");
}

TEST (FileSlides, ImageWithoutCalibrationAsksForMpp)
{
  TempDir dir;
  std::string path = dir.file ("tile.png");
  cv::imwrite (path, cv::Mat (100, 120, CV_8UC3, cv::Scalar (200, 100, 200)));
  std::string e = error_text ([&] { open_microscope ("sim://" + path); });
  EXPECT_NE (e.find ("?mpp="), std::string::npos) << e;
  EXPECT_NE (e.find (path), std::string::npos) << e;
}

TEST (FileSlides, PlainImageRendersItsPixelsAtItsScale)
{
  TempDir dir;
  std::string path = dir.file ("gradient.png");
  cv::Mat bgr (300, 400, CV_8UC3);
  for (int j = 0; j < bgr.rows; j++)
    for (int i = 0; i < bgr.cols; i++)
      bgr.at<cv::Vec3b> (j, i) = cv::Vec3b ((uchar)(i / 2), (uchar)j % 256, (uchar)((i + j) % 256));
  cv::imwrite (path, bgr);
  auto slide = sim::open_slide_file (path, 0.5);
  EXPECT_DOUBLE_EQ (slide->size_um ().width, 200.0);
  EXPECT_DOUBLE_EQ (slide->size_um ().height, 150.0);
  cv::Mat rgb, expected;
  slide->render (0.5, cv::Rect (10, 20, 100, 80), rgb);
  cv::cvtColor (bgr (cv::Rect (10, 20, 100, 80)), expected, cv::COLOR_BGR2RGB);
  EXPECT_EQ (cv::norm (rgb, expected, cv::NORM_INF), 0.0);
  // The stage travels over the image and no further.
  auto m = open_microscope ("sim://" + path + "?mpp=0.5");
  EXPECT_DOUBLE_EQ (m->stage ().x_limits ().max_um, 200.0);
  EXPECT_DOUBLE_EQ (m->stage ().y_limits ().max_um, 150.0);
}

// The slide map's macro image comes from the slide the microscope has open:
// the whole slide at most max_side_px on its longer side, the same pixels
// whether the capture is grabbing meanwhile or not.
TEST (FileSlides, OverviewIsTheWholeOpenSlideAtMostMaxSidePixels)
{
  TempDir dir;
  std::string path = dir.file ("halves.png");
  cv::Mat bgr (300, 400, CV_8UC3, cv::Scalar (200, 40, 40));          // blue left half
  bgr (cv::Rect (200, 0, 200, 300)).setTo (cv::Scalar (40, 40, 200)); // red right half
  cv::imwrite (path, bgr);
  auto m = open_microscope ("sim://" + path + "?mpp=0.5");
  std::optional<SlideOverview> alone = m->overview (100);
  ASSERT_TRUE (alone.has_value ());
  EXPECT_EQ (alone->rgb.size (), cv::Size (100, 75));
  EXPECT_EQ (alone->rgb.type (), CV_8UC3);
  EXPECT_DOUBLE_EQ (alone->area_um.width, 200.0);
  EXPECT_DOUBLE_EQ (alone->area_um.height, 150.0);
  // RGB, and each half where it is on the slide.
  cv::Vec3b left = alone->rgb.at<cv::Vec3b> (37, 20), right = alone->rgb.at<cv::Vec3b> (37, 80);
  EXPECT_GT (left[2], 150);
  EXPECT_LT (left[0], 80);
  EXPECT_GT (right[0], 150);
  EXPECT_LT (right[2], 80);

  m->camera ().configure ({320, 240});
  std::atomic<bool> done{false};
  std::thread capture ([&] {
    cv::Mat frame;
    while (!done)
      m->camera ().grab (frame);
  });
  std::optional<SlideOverview> beside = m->overview (100);
  done = true;
  capture.join ();
  ASSERT_TRUE (beside.has_value ());
  EXPECT_EQ (cv::norm (alone->rgb, beside->rgb, cv::NORM_INF), 0.0);
}

TEST (FileSlides, TiffResolutionTagsGiveMicronsPerPixel)
{
  TempDir dir;
  std::string path = dir.file ("calibrated.tif");
  // 40 000 px per cm = 0.25 µm/px.
  cv::imwrite (path, cv::Mat (64, 80, CV_8UC3, cv::Scalar (180, 120, 200)),
               {cv::IMWRITE_TIFF_RESUNIT, 3, cv::IMWRITE_TIFF_XDPI, 40000, cv::IMWRITE_TIFF_YDPI, 40000});
  auto m = open_microscope ("sim://" + path);
  auto *sim = dynamic_cast<sim::SimMicroscope *> (m.get ());
  ASSERT_NE (sim, nullptr);
  EXPECT_DOUBLE_EQ (sim->slide ().native_um_per_px (), 0.25);
  EXPECT_DOUBLE_EQ (m->stage ().x_limits ().max_um, 20.0);
  // ?mpp= overrides the tags.
  auto o = open_microscope ("sim://" + path + "?mpp=0.5");
  EXPECT_DOUBLE_EQ (o->stage ().x_limits ().max_um, 40.0);
}

TEST (FileSlides, MonusegTileRendersItsOwnPixels)
{
  LIVEMICRO_REQUIRE_TESTDATA (data);
  // The MoNuSeg TIFF carries no resolution tags: its 0.252 µm/px is given.
  auto slide = sim::open_slide_file (data + "/monuseg/TCGA-B0-5710-01Z-00-DX1.tif", 0.252);
  EXPECT_NEAR (slide->size_um ().width, 252.0, 1e-9);
  cv::Mat rgb, png = cv::imread (data + "/monuseg/TCGA-B0-5710-01Z-00-DX1.png");
  ASSERT_FALSE (png.empty ());
  cv::cvtColor (png, png, cv::COLOR_BGR2RGB);
  slide->render (0.252, cv::Rect (300, 400, 200, 100), rgb);
  EXPECT_EQ (cv::norm (rgb, png (cv::Rect (300, 400, 200, 100)), cv::NORM_INF), 0.0);
}

TEST (FileSlides, OpenSlidePyramidLevelsAgreeWithEachOther)
{
  LIVEMICRO_REQUIRE_TESTDATA (data);
  std::string path = data + "/wsi/TCGA-B0-5710_pyramid_DERIVED.tif";
  auto slide = sim::open_slide_file (path, 0);
  EXPECT_NE (slide->description ().find ("generic-tiff"), std::string::npos) << slide->description ();
  double mpp = slide->native_um_per_px ();
  EXPECT_NEAR (mpp, 0.252, 0.002);
  // Level 1 (2x) read through OpenSlide vs. level 0 area-downsampled.
  cv::Mat coarse, fine, fine_small;
  slide->render (mpp * 2, cv::Rect (100, 100, 200, 200), coarse);
  slide->render (mpp, cv::Rect (200, 200, 400, 400), fine);
  cv::resize (fine, fine_small, cv::Size (200, 200), 0, 0, cv::INTER_AREA);
  EXPECT_GT (cv::PSNR (coarse, fine_small), 24.0);
}

TEST (FileSlides, AperioSvsOpensWithItsCalibration)
{
  LIVEMICRO_REQUIRE_TESTDATA (data);
  auto slide = sim::open_slide_file (data + "/wsi/openslide_small_CMU-1_16x16.svs", 0);
  EXPECT_NEAR (slide->native_um_per_px (), 0.499, 1e-3);
  EXPECT_NE (slide->description ().find ("aperio"), std::string::npos) << slide->description ();
}

TEST (FileSlides, TruncatedSlideIsCorruptNotACrash)
{
  LIVEMICRO_REQUIRE_TESTDATA (data);
  TempDir dir;
  std::string src = data + "/wsi/TCGA-B0-5710_pyramid_DERIVED.tif";
  std::string cut = copy_prefix (src, dir.file ("cut.tif"), 4000);
  ErrorKind kind;
  std::string e = error_text ([&] { open_microscope ("sim://" + cut); }, &kind);
  EXPECT_EQ (kind, ErrorKind::kCorrupt) << e;
  EXPECT_NE (e.find (cut), std::string::npos) << e;
}
