// Camera backends: pixel conversion and demosaicing on synthetic mosaics,
// Aravis' fake GenICam camera (in-process Fake_1 and the GigE Vision fake on
// 127.0.0.1, unplugged and plugged back), V4L2 (a real device when the
// machine has one), and compositions with a GRBL stage emulator.
#include "camera/pixels.h"
#include "camera/v4l2_camera.h"
#include "emulator.h"
#include "hw_error.h"
#include "fake_gv_camera.h"

#include <livemicro/hw/error.h>
#include <livemicro/hw/microscope.h>
#include <livemicro/hw/uri.h>

#include <gtest/gtest.h>
#include <linux/videodev2.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <glob.h>

using namespace livemicro::hw;
using livemicro::test::contains;
using livemicro::test::Emulator;
using livemicro::test::error_of;
using livemicro::test::eventually;
using livemicro::test::FakeGvCamera;

namespace {

// A colour image (left third red, middle green, right blue) sampled
// through a Bayer filter whose top-left 2x2 is `pattern` ("RGGB" …).
cv::Mat
mosaic (const std::string &pattern, cv::Size size, cv::Mat *truth = nullptr)
{
  cv::Mat rgb (size, CV_8UC3, cv::Scalar (0, 0, 0));
  rgb.colRange (0, size.width / 3).setTo (cv::Scalar (200, 20, 20));
  rgb.colRange (size.width / 3, 2 * size.width / 3).setTo (cv::Scalar (20, 200, 20));
  rgb.colRange (2 * size.width / 3, size.width).setTo (cv::Scalar (20, 20, 200));
  cv::Mat raw (size, CV_8UC1);
  for (int y = 0; y < size.height; y++)
    for (int x = 0; x < size.width; x++) {
      char c = pattern[(y % 2) * 2 + (x % 2)];
      int ch = c == 'R' ? 0 : c == 'G' ? 1 : 2;
      raw.at<uint8_t> (y, x) = rgb.at<cv::Vec3b> (y, x)[ch];
    }
  if (truth)
    *truth = rgb;
  return raw;
}

void
fill_bayer_rg (ArvBuffer *buffer, void *fake, guint32, guint32, ArvPixelFormat format)
{
  size_t size = 0;
  auto *data = static_cast<uint8_t *> (const_cast<void *> (arv_buffer_get_data (buffer, &size)));
  guint32 w = 0, h = 0;
  arv_fake_camera_read_register (static_cast<ArvFakeCamera *> (fake), ARV_FAKE_CAMERA_REGISTER_WIDTH, &w);
  arv_fake_camera_read_register (static_cast<ArvFakeCamera *> (fake), ARV_FAKE_CAMERA_REGISTER_HEIGHT, &h);
  // The buffer holds the camera's payload (w×h bytes for 8-bit Bayer); its
  // received size is set only after the pattern is drawn.
  (void)size;
  if (format != ARV_PIXEL_FORMAT_BAYER_RG_8 || w == 0 || !data)
    return;
  cv::Mat raw = mosaic ("RGGB", cv::Size ((int)w, (int)h));
  std::memcpy (data, raw.data, (size_t)(w * h));
}

cv::Vec3d
mean_of (const cv::Mat &rgb, cv::Rect r)
{
  cv::Scalar m = cv::mean (rgb (r));
  return {m[0], m[1], m[2]};
}

} // namespace

TEST (Pixels, DemosaicsEveryBayerOrderToTheRightColours)
{
  const struct {
    const char *genicam, *pattern;
  } cases[] = {{"BayerRG8", "RGGB"}, {"BayerBG8", "BGGR"}, {"BayerGB8", "GBRG"}, {"BayerGR8", "GRBG"}};
  for (auto c : cases) {
    camera::PixelLayout l;
    ASSERT_TRUE (camera::layout_of_genicam (c.genicam, l)) << c.genicam;
    for (bool edge : {false, true}) {
      cv::Mat truth, rgb;
      cv::Mat raw = mosaic (c.pattern, cv::Size (96, 32), &truth);
      camera::to_rgb (raw, l, edge, rgb);
      ASSERT_EQ (rgb.size (), raw.size ());
      // Away from the colour edges the colours come back.
      cv::Vec3d red = mean_of (rgb, {4, 4, 24, 24}), green = mean_of (rgb, {36, 4, 24, 24}),
                blue = mean_of (rgb, {68, 4, 24, 24});
      EXPECT_GT (red[0], 150) << c.genicam;
      EXPECT_LT (red[2], 60) << c.genicam;
      EXPECT_GT (green[1], 150) << c.genicam;
      EXPECT_GT (blue[2], 150) << c.genicam;
      EXPECT_LT (blue[0], 60) << c.genicam;
    }
  }
}

TEST (Pixels, DeepPixelsAreScaledByTheirBitDepthAndNamesAreChecked)
{
  camera::PixelLayout l;
  ASSERT_TRUE (camera::layout_of_genicam ("Mono12", l));
  cv::Mat raw (4, 4, CV_16UC1, cv::Scalar (4095)), rgb;
  camera::to_rgb (raw, l, false, rgb);
  EXPECT_EQ (rgb.at<cv::Vec3b> (1, 1), cv::Vec3b (255, 255, 255));
  raw.setTo (1024);
  camera::to_rgb (raw, l, false, rgb);
  EXPECT_EQ (rgb.at<cv::Vec3b> (1, 1)[0], 64);
  EXPECT_FALSE (camera::layout_of_genicam ("Mono12Packed", l));
  EXPECT_FALSE (camera::layout_of_genicam ("YUV422_8", l));
  EXPECT_FALSE (camera::layout_of_genicam ("BayerXY8", l));
}

TEST (Pixels, V4l2FormatsConvert)
{
  // YUYV: Y U Y V for two pixels; BT.601 red is about Y=81 U=90 V=240.
  std::vector<uint8_t> yuyv;
  for (int i = 0; i < 8 * 2 / 2; i++)
    yuyv.insert (yuyv.end (), {81, 90, 81, 240});
  cv::Mat rgb;
  ASSERT_TRUE (camera::v4l2_to_rgb (V4L2_PIX_FMT_YUYV, yuyv.data (), yuyv.size (), 4, 4, 8, rgb));
  EXPECT_GT (rgb.at<cv::Vec3b> (2, 2)[0], 200);
  EXPECT_LT (rgb.at<cv::Vec3b> (2, 2)[1], 40);
  cv::Mat raw = mosaic ("GRBG", cv::Size (96, 32));
  ASSERT_TRUE (camera::v4l2_to_rgb (V4L2_PIX_FMT_SGRBG8, raw.data, raw.total (), 96, 32, 96, rgb));
  EXPECT_GT (mean_of (rgb, {68, 4, 24, 24})[2], 150);
  EXPECT_FALSE (camera::v4l2_to_rgb (V4L2_PIX_FMT_YUYV, yuyv.data (), 10, 4, 4, 8, rgb))
      << "a short frame must be refused";
}

// MJPEG frames decode into the caller's own pixels (a frame buffer it may
// have handed in), RGB; a frame of another size or no JPEG is refused, one
// whose tail was lost still shows what arrived.
TEST (Pixels, V4l2MjpegDecodesIntoTheCallersRgbPixels)
{
  cv::Mat bgr (48, 64, CV_8UC3, cv::Scalar (0, 0, 230));         // red
  bgr (cv::Rect (32, 0, 32, 48)).setTo (cv::Scalar (230, 0, 0)); // blue right half
  std::vector<uint8_t> jpeg;
  ASSERT_TRUE (cv::imencode (".jpg", bgr, jpeg, {cv::IMWRITE_JPEG_QUALITY, 95}));
  std::vector<uint8_t> frame_buffer (64 * 48 * 3);
  cv::Mat rgb (48, 64, CV_8UC3, frame_buffer.data ());
  ASSERT_TRUE (camera::v4l2_to_rgb (V4L2_PIX_FMT_MJPEG, jpeg.data (), jpeg.size (), 64, 48, 0, rgb));
  EXPECT_EQ (rgb.data, frame_buffer.data ());
  cv::Vec3b left = rgb.at<cv::Vec3b> (24, 8), right = rgb.at<cv::Vec3b> (24, 56);
  EXPECT_GT (left[0], 200);
  EXPECT_LT (left[2], 30);
  EXPECT_GT (right[2], 200);
  EXPECT_LT (right[0], 30);
  cv::Mat other;
  EXPECT_FALSE (camera::v4l2_to_rgb (V4L2_PIX_FMT_MJPEG, jpeg.data (), jpeg.size (), 32, 48, 0, other))
      << "another size than negotiated";
  std::vector<uint8_t> noise (jpeg.size (), 0x5a);
  EXPECT_FALSE (camera::v4l2_to_rgb (V4L2_PIX_FMT_MJPEG, noise.data (), noise.size (), 64, 48, 0, other));
  // Cut halfway through the scan data (after the start-of-scan marker).
  size_t sos = 0;
  for (size_t i = 0; i + 1 < jpeg.size (); i++)
    if (jpeg[i] == 0xff && jpeg[i + 1] == 0xda)
      sos = i;
  ASSERT_GT (sos, 0u);
  EXPECT_TRUE (
      camera::v4l2_to_rgb (V4L2_PIX_FMT_MJPEG, jpeg.data (), (sos + jpeg.size ()) / 2, 64, 48, 0, other))
      << "a frame that lost its tail";
}

TEST (AravisFake, StreamsAtTheCameraSizeAndHonoursItsSettings)
{
  auto m = open_microscope ("aravis://Fake_1");
  EXPECT_EQ (m->camera ().min_size (), cv::Size (512, 512));
  EXPECT_EQ (m->camera ().max_size (), cv::Size (512, 512));
  EXPECT_TRUE (m->camera ().free_running ());
  EXPECT_NEAR (m->camera ().frame_rate (), 25, 0.01);
  cv::Mat rgb;
  FrameRecord a = m->camera ().grab (rgb);
  FrameRecord b = m->camera ().grab (rgb);
  EXPECT_EQ (rgb.size (), cv::Size (512, 512));
  EXPECT_GT (b.frame_number, a.frame_number);
  cv::Scalar mean, sd;
  cv::meanStdDev (rgb, mean, sd);
  EXPECT_GT (sd[0], 10) << "Aravis' ramp pattern has structure";
  EXPECT_TRUE (contains (m->description (), "GenICam camera Aravis Fake (Fake_1), 512x512"))
      << m->description ();
  EXPECT_EQ (m->devices ().size (), 1u);
  EXPECT_TRUE (m->devices ()[0].online);
  EXPECT_EQ (m->state ().objective.um_per_px, 1.0); // uncalibrated
  EXPECT_TRUE (contains (error_of ([&] { m->stage ().move_to (10, 10); }), "has no motorised stage"));
  EXPECT_TRUE (contains (error_of ([&] {
                           m->camera ().configure ({640, 480});
                         }),
                         "delivers only 512x512 frames, not 640x480"));

  auto roi = open_microscope ("aravis://"
                              "Fake_1?roi=100,50,640,480&pixel_format=BayerGR8&"
                              "exposure_us=2000&gain=2&frame_rate=50");
  EXPECT_EQ (roi->camera ().max_size (), cv::Size (640, 480));
  EXPECT_NEAR (roi->camera ().frame_rate (), 50, 0.01);
  roi->camera ().grab (rgb);
  EXPECT_EQ (rgb.size (), cv::Size (640, 480));
  EXPECT_TRUE (contains (roi->description (), "BayerGR8"));
}

TEST (AravisFake, BadSettingsAndUnknownDevicesAreClearErrors)
{
  ErrorKind kind;
  std::string e = error_of ([] { open_microscope ("aravis://Nope_7?interface=Fake"); }, &kind);
  EXPECT_EQ (kind, ErrorKind::kNotFound);
  EXPECT_TRUE (contains (e, "no GenICam camera 'Nope_7' on the Fake interface")) << e;
  e = error_of ([] { open_microscope ("aravis://Fake_1?exposure_us=99999999"); }, &kind);
  EXPECT_EQ (kind, ErrorKind::kOutOfRange);
  EXPECT_TRUE (contains (e, "exposure_us=1e+08 is outside the camera's [10, 1e+07] µs")
               || contains (e, "exposure_us=9.99"))
      << e;
  e = error_of ([] { open_microscope ("aravis://Fake_1?pixel_format=YUV422_8"); });
  EXPECT_TRUE (contains (e, "pixel_format=YUV422_8 is not supported")) << e;
  e = error_of ([] { open_microscope ("aravis://Fake_1?pixel_format=Mono12"); });
  EXPECT_TRUE (contains (e, "does not offer pixel_format=Mono12 (it offers: BayerBG8")) << e;
  e = error_of ([] { open_microscope ("aravis://Fake_1?roi=0,0,4000,10"); });
  EXPECT_TRUE (contains (e, "does not fit the sensor (2048x2048")) << e;
  e = error_of ([] { open_microscope ("aravis://Fake_1?gain=3&gian=2"); });
  EXPECT_TRUE (contains (e, "unknown parameter 'gian'")) << e;
  e = error_of ([] { open_microscope ("aravis://Fake_1?demosaic=fancy"); });
  EXPECT_TRUE (contains (e, "demosaic=fancy is not one of bilinear, edge")) << e;
}

TEST (AravisGigE, DemosaicsTheCamerasBayerFramesAndSurvivesUnplugging)
{
  FakeGvCamera gv (fill_bayer_rg);
  ASSERT_TRUE (gv.running ());
  auto m = open_microscope (std::string (FakeGvCamera::kUri)
                            + "?pixel_format=BayerRG8&roi=0,0,96,32&timeout_ms=600&reconnect_ms=200");
  cv::Mat rgb;
  m->camera ().grab (rgb);
  ASSERT_EQ (rgb.size (), cv::Size (96, 32));
  EXPECT_GT (mean_of (rgb, {4, 4, 24, 24})[0], 150);  // red third
  EXPECT_GT (mean_of (rgb, {36, 4, 24, 24})[1], 150); // green third
  EXPECT_GT (mean_of (rgb, {68, 4, 24, 24})[2], 150); // blue third

  gv.unplug ();
  ErrorKind kind = ErrorKind::kNotFound;
  std::string e;
  ASSERT_TRUE (eventually (
      [&] {
        e = error_of ([&] { m->camera ().grab (rgb); }, &kind);
        return e != "(no error)";
      },
      5));
  EXPECT_EQ (kind, ErrorKind::kDevice);
  EXPECT_TRUE (contains (e, "camera aravis://127.0.0.1")) << e;
  EXPECT_FALSE (m->devices ()[0].online);
  // While it is gone, grab fails at once (the element shows a slate).
  gint64 t0 = g_get_monotonic_time ();
  EXPECT_NE (error_of ([&] { m->camera ().grab (rgb); }), "(no error)");
  EXPECT_LT (g_get_monotonic_time () - t0, 100000);

  ASSERT_TRUE (gv.plug ());
  ASSERT_TRUE (eventually ([&] { return m->devices ()[0].online; }, 10)) << m->devices ()[0].problem;
  m->camera ().grab (rgb);
  EXPECT_GT (mean_of (rgb, {68, 4, 24, 24})[2], 150);
}

TEST (V4l2, CapturesFromARealDeviceWhenThereIsOne)
{
  glob_t g{};
  std::string device;
  if (glob ("/dev/video*", 0, nullptr, &g) == 0)
    for (size_t i = 0; i < g.gl_pathc && device.empty (); i++) {
      try {
        auto m = open_microscope (std::string ("v4l2://") + g.gl_pathv[i]);
        device = g.gl_pathv[i];
      } catch (const Error &) {
      }
    }
  globfree (&g);
  if (device.empty ())
    GTEST_SKIP () << "no V4L2 capture device (/dev/video*) on this machine; "
                     "the v4l2loopback "
                     "module is not available here either, so only the error "
                     "paths and the "
                     "format conversions are tested";
  auto m = open_microscope ("v4l2://" + device);
  cv::Mat rgb;
  m->camera ().grab (rgb);
  EXPECT_EQ (rgb.size (), m->camera ().max_size ());
}

TEST (V4l2, MissingOrWrongDevicesAreClearErrors)
{
  ErrorKind kind;
  std::string e = error_of ([] { open_microscope ("v4l2:///dev/video97"); }, &kind);
  EXPECT_EQ (kind, ErrorKind::kNotFound);
  EXPECT_TRUE (contains (e, "V4L2 device '/dev/video97' does not exist")) << e;
  e = error_of ([] { open_microscope ("v4l2:///dev/null"); });
  EXPECT_TRUE (contains (e, "is not a V4L2 device")) << e;
  e = error_of ([] { open_microscope ("v4l2:///dev/video0?format=H264"); });
  EXPECT_TRUE (contains (e, "format=H264 is not supported")) << e;
  e = error_of ([] { open_microscope ("v4l2:///dev/video0?width=640"); });
  EXPECT_TRUE (contains (e, "width and height go together")) << e;
  e = error_of ([] { open_microscope ("v4l2://video0"); });
  EXPECT_TRUE (contains (e, "three slashes")) << e;
}

TEST (Compose, ACameraAndAGrblStageAndFocusMakeOneMicroscope)
{
  Emulator emu ("grbl_emulator.py");
  std::string grbl = "grbl://" + emu.link () + "?poll_ms=30%26speed_um_s=5000";
  auto m = open_microscope ("compose:?camera=aravis://Fake_1&stage=" + grbl + "&focus=" + grbl
                            + "&objectives=10:0.69,40:0.17:0.65&objective=40");
  EXPECT_TRUE (contains (m->description (), "stage GRBL on " + emu.link () + " (also focus)"))
      << m->description ();
  EXPECT_TRUE (contains (m->description (), "objectives 10x (0.69 µm/px), 40x (0.17 µm/px)"));
  auto devices = m->devices ();
  ASSERT_EQ (devices.size (), 2u);
  EXPECT_EQ (devices[1].part, "stage+focus");
  EXPECT_EQ (m->turret ().current ().magnification, 40);
  m->stage ().move_to (12000, 11000);
  m->focus ().move_to (1500);
  ASSERT_TRUE (eventually (
      [&] {
        auto s = m->state ();
        return !s.stage.moving && !s.focus.moving && std::abs (s.stage.x_um - 12000) < 1
               && std::abs (s.focus.z_um - 1500) < 1;
      },
      5));
  cv::Mat rgb;
  FrameRecord info = m->camera ().grab (rgb);
  EXPECT_NEAR (info.stage_x_um, 12000, 1);
  EXPECT_NEAR (info.stage_y_um, 11000, 1);
  EXPECT_NEAR (info.stage_z_um, 1500, 1);
  EXPECT_EQ (info.objective, 40);
  EXPECT_DOUBLE_EQ (info.um_per_px, 0.17);
  m->turret ().select (10);
  EXPECT_DOUBLE_EQ (m->camera ().grab (rgb).um_per_px, 0.69);
  EXPECT_TRUE (contains (error_of ([&] { m->turret ().select (20); }),
                         "objective 20x is not mounted (available: 10x, 40x)"));
}

TEST (Compose, BadCompositionsAreClearErrors)
{
  EXPECT_TRUE (
      contains (error_of ([] { open_microscope ("compose:?stage=grbl:///dev/ttyUSB0"); }), "has no camera="));
  EXPECT_TRUE (
      contains (error_of ([] { open_microscope ("compose:?camera=aravis://Fake_1&objectives=10x"); }),
                "objective '10x' is not MAGNIFICATION:UM_PER_PX"));
  EXPECT_TRUE (
      contains (error_of ([] { open_microscope ("compose:?camera=aravis://Fake_1&objectives=10:1,10:2"); }),
                "objective 10x is listed twice"));
  EXPECT_TRUE (contains (
      error_of ([] { open_microscope ("compose:?camera=aravis://Fake_1&objectives=10:1&objective=4"); }),
      "objective=4 is not in objectives"));
  EXPECT_TRUE (contains (
      error_of ([] { open_microscope ("compose:?camera=aravis://Fake_1&stage=grbl:///dev/ttyNOPE3"); }),
      "serial port '/dev/ttyNOPE3' does not exist"));
  EXPECT_TRUE (
      contains (error_of ([] { open_microscope ("compose:?camera=aravis://Fake_1&stage=sim://synthetic"); }),
                "stage URI 'sim://synthetic': unknown scheme 'sim'"));
  EXPECT_TRUE (contains (error_of ([] { open_microscope ("compose:?camera=aravis://Fake_1&lens=1"); }),
                         "unknown parameter 'lens'"));
  EXPECT_TRUE (contains (error_of ([] { open_microscope ("grbl:///dev/ttyUSB0"); }),
                         "is a stage controller, not a microscope"));
  Emulator emu ("grbl_emulator.py");
  EXPECT_TRUE (contains (error_of ([&] {
                           open_microscope ("compose:?camera=aravis://Fake_1&stage=grbl://" + emu.link ()
                                            + "&focus=grbl://" + emu.link () + "?baud=9600");
                         }),
                         "with different parameters"))
      << "";
}
