// i420convert against videoconvert: packed RGB through OpenCV gives
// videoconvert's BT.601 values (exactly the colour, channel order and range
// on flat colours; within a level on smooth gradients, also into planes laid
// out with padding); everything else goes through GstVideoConverter and is
// videoconvert's output byte for byte; I420 passes through; the caps say
// how the colours were made; the frame's StageMeta goes along.
#include <livemicro/stagemeta.h>

#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

struct Converted {
  std::vector<std::vector<uint8_t>> planes; // Y, U, V without padding
  std::string caps;
};

// A frame of `format` at w x h whose pixel (x, y) has components
// fill(x, y, component) (R, G, B for RGB formats; the planes' own for others).
template <typename Fill>
GstBuffer *
frame_of (const GstVideoInfo &info, Fill fill)
{
  GstBuffer *b = gst_buffer_new_allocate (nullptr, GST_VIDEO_INFO_SIZE (&info), nullptr);
  GstVideoFrame f;
  gst_video_frame_map (&f, &info, b, GST_MAP_WRITE);
  for (guint c = 0; c < GST_VIDEO_INFO_N_COMPONENTS (&info); c++) {
    guint8 *data = (guint8 *)GST_VIDEO_FRAME_COMP_DATA (&f, c);
    const int stride = GST_VIDEO_FRAME_COMP_STRIDE (&f, c), ps = GST_VIDEO_FRAME_COMP_PSTRIDE (&f, c);
    for (int y = 0; y < GST_VIDEO_FRAME_COMP_HEIGHT (&f, c); y++)
      for (int x = 0; x < GST_VIDEO_FRAME_COMP_WIDTH (&f, c); x++)
        data[y * stride + x * ps] = fill (x, y, c);
  }
  gst_video_frame_unmap (&f);
  return b;
}

Converted
convert (const std::string &launch, const GstVideoInfo &in, GstBuffer *buf)
{
  GstHarness *h = gst_harness_new_parse (launch.c_str ());
  GstCaps *caps = gst_video_info_to_caps (&in);
  gst_harness_set_src_caps (h, caps);
  Converted out;
  GstBuffer *o = gst_harness_push_and_pull (h, buf);
  if (!o) {
    gst_harness_teardown (h);
    return out;
  }
  GstCaps *oc = gst_pad_get_current_caps (h->sinkpad);
  gchar *s = gst_caps_to_string (oc);
  out.caps = s;
  g_free (s);
  GstVideoInfo oi;
  gst_video_info_from_caps (&oi, oc);
  gst_caps_unref (oc);
  GstVideoFrame f;
  EXPECT_TRUE (gst_video_frame_map (&f, &oi, o, GST_MAP_READ));
  for (int p = 0; p < 3; p++) {
    std::vector<uint8_t> plane;
    const int w = GST_VIDEO_FRAME_COMP_WIDTH (&f, p), hh = GST_VIDEO_FRAME_COMP_HEIGHT (&f, p);
    for (int y = 0; y < hh; y++) {
      const guint8 *row
          = (const guint8 *)GST_VIDEO_FRAME_PLANE_DATA (&f, p) + y * GST_VIDEO_FRAME_PLANE_STRIDE (&f, p);
      plane.insert (plane.end (), row, row + w);
    }
    out.planes.push_back (std::move (plane));
  }
  gst_video_frame_unmap (&f);
  gst_buffer_unref (o);
  gst_harness_teardown (h);
  return out;
}

// Both ways on the same frame: ours, and videoconvert's to BT.601.
std::pair<Converted, Converted>
both (const GstVideoInfo &in, GstBuffer *buf, const char *reference_caps = "colorimetry=bt601")
{
  Converted ours = convert ("i420convert", in, gst_buffer_ref (buf));
  Converted ref = convert (std::string ("videoconvert ! capsfilter caps=\"video/x-raw,format=I420,")
                               + reference_caps + "\"",
                           in, buf);
  return {ours, ref};
}

int
max_difference (const std::vector<uint8_t> &a, const std::vector<uint8_t> &b)
{
  if (a.size () != b.size ())
    return 256;
  int m = 0;
  for (size_t i = 0; i < a.size (); i++)
    m = std::max (m, std::abs (int (a[i]) - int (b[i])));
  return m;
}

GstVideoInfo
info_of (GstVideoFormat format, int w, int h)
{
  GstVideoInfo i;
  gst_video_info_set_format (&i, format, w, h);
  return i;
}

class I420Convert : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }
};

} // namespace

TEST_F (I420Convert, FlatColoursInEveryPackedRgbOrderAreVideoconvertsBt601)
{
  const int colours[][3] = {{255, 0, 0}, {0, 255, 0},     {0, 0, 255},     {255, 255, 255},
                            {0, 0, 0},   {128, 128, 128}, {219, 112, 180}, {92, 56, 140}};
  for (GstVideoFormat fmt : {GST_VIDEO_FORMAT_RGB, GST_VIDEO_FORMAT_BGR, GST_VIDEO_FORMAT_RGBx,
                             GST_VIDEO_FORMAT_BGRx, GST_VIDEO_FORMAT_RGBA, GST_VIDEO_FORMAT_BGRA}) {
    for (const auto &c : colours) {
      GstVideoInfo in = info_of (fmt, 64, 48);
      GstBuffer *b = frame_of (in, [&] (int, int, int comp) {
        return comp < 3 ? c[comp] : 255; /* components are R, G, B, A */
      });
      auto [ours, ref] = both (in, b);
      ASSERT_EQ (ours.planes.size (), 3u) << gst_video_format_to_string (fmt);
      for (int p = 0; p < 3; p++)
        EXPECT_LE (max_difference (ours.planes[p], ref.planes[p]), 1)
            << gst_video_format_to_string (fmt) << " plane " << p << " colour " << c[0] << "," << c[1] << ","
            << c[2];
    }
  }
}

TEST_F (I420Convert, SmoothGradientsAreWithinALevelAlsoIntoPaddedPlanes)
{
  // 1282 wide: GStreamer's I420 rows are padded to 4 bytes there, so the
  // output is not laid out as OpenCV writes it.
  for (int w : {1280, 1282}) {
    GstVideoInfo in = info_of (GST_VIDEO_FORMAT_RGB, w, 720);
    GstBuffer *b = frame_of (in, [&] (int x, int y, int comp) {
      return comp == 0 ? x * 255 / w : comp == 1 ? y * 255 / 720 : (x + y) * 255 / (w + 720);
    });
    auto [ours, ref] = both (in, b);
    ASSERT_EQ (ours.planes.size (), 3u);
    EXPECT_LE (max_difference (ours.planes[0], ref.planes[0]), 1) << w;
    // Chroma: videoconvert filters, OpenCV takes the top-left pixel; on a
    // gradient of ≤ 1 level per pixel that is within two levels.
    EXPECT_LE (max_difference (ours.planes[1], ref.planes[1]), 2) << w;
    EXPECT_LE (max_difference (ours.planes[2], ref.planes[2]), 2) << w;
    EXPECT_NE (ours.caps.find ("colorimetry=(string)bt601"), std::string::npos) << ours.caps;
    EXPECT_NE (ours.caps.find ("chroma-site=(string)cosited"), std::string::npos) << ours.caps;
  }
}

TEST_F (I420Convert, OtherFormatsAndOddSizesAreVideoconvertsOutputExactly)
{
  struct Case {
    GstVideoFormat format;
    int w, h;
  } cases[] = {{GST_VIDEO_FORMAT_RGB, 321, 241},
               {GST_VIDEO_FORMAT_NV12, 320, 240},
               {GST_VIDEO_FORMAT_GRAY8, 322, 240},
               {GST_VIDEO_FORMAT_xRGB, 320, 240},
               {GST_VIDEO_FORMAT_YUY2, 320, 240}};
  for (const Case &c : cases) {
    GstVideoInfo in = info_of (c.format, c.w, c.h);
    GstBuffer *b = frame_of (in, [] (int x, int y, int comp) { return (x * 7 + y * 13 + comp * 50) & 255; });
    Converted ours = convert ("i420convert", in, gst_buffer_ref (b));
    // videoconvert to the caps i420convert chose: the same GstVideoConverter.
    std::string caps = ours.caps.substr (ours.caps.find (',') + 1);
    Converted ref = convert ("videoconvert ! capsfilter caps=\"video/x-raw," + caps + "\"", in, b);
    ASSERT_EQ (ours.planes.size (), 3u) << gst_video_format_to_string (c.format);
    for (int p = 0; p < 3; p++)
      EXPECT_EQ (ours.planes[p], ref.planes[p]) << gst_video_format_to_string (c.format) << " plane " << p;
  }
}

// A downstream that asks for other colours gets them (GstVideoConverter's,
// as videoconvert would make them), not BT.601 or the input's labelled
// otherwise: RGB asked as BT.709, NV12 in BT.709 asked as BT.601.
TEST_F (I420Convert, OtherColorimetryAskedForIsVideoconvertsExactly)
{
  struct Case {
    GstVideoFormat format;
    const char *in_colorimetry, *asked;
  } cases[] = {{GST_VIDEO_FORMAT_RGB, nullptr, "bt709"}, {GST_VIDEO_FORMAT_NV12, "bt709", "bt601"}};
  for (const Case &c : cases) {
    GstVideoInfo in = info_of (c.format, 320, 240);
    if (c.in_colorimetry)
      gst_video_colorimetry_from_string (&in.colorimetry, c.in_colorimetry);
    GstBuffer *b = frame_of (in, [] (int x, int y, int comp) { return (x * 3 + y * 5 + comp * 70) & 255; });
    const std::string asked = std::string ("colorimetry=") + c.asked;
    Converted ours
        = convert ("i420convert ! capsfilter caps=\"video/x-raw," + asked + "\"", in, gst_buffer_ref (b));
    // videoconvert to the caps i420convert chose: the same GstVideoConverter.
    std::string caps = ours.caps.substr (ours.caps.find (',') + 1);
    Converted ref = convert ("videoconvert ! capsfilter caps=\"video/x-raw," + caps + "\"", in, b);
    ASSERT_EQ (ours.planes.size (), 3u) << gst_video_format_to_string (c.format);
    EXPECT_NE (ours.caps.find (std::string ("colorimetry=(string)") + c.asked), std::string::npos)
        << ours.caps;
    for (int p = 0; p < 3; p++)
      EXPECT_EQ (ours.planes[p], ref.planes[p])
          << gst_video_format_to_string (c.format) << " plane " << p << "\n"
          << ours.caps << "\n"
          << ref.caps;
  }
}

TEST_F (I420Convert, I420PassesThroughUntouched)
{
  GstVideoInfo in = info_of (GST_VIDEO_FORMAT_I420, 320, 240);
  GstBuffer *b = frame_of (in, [] (int x, int y, int comp) { return (x + y + comp) & 255; });
  GstHarness *h = gst_harness_new_parse ("i420convert");
  gst_harness_set_src_caps (h, gst_video_info_to_caps (&in));
  GstBuffer *o = gst_harness_push_and_pull (h, gst_buffer_ref (b));
  ASSERT_NE (o, nullptr);
  EXPECT_EQ (o, b) << "the same buffer, not a copy";
  gst_buffer_unref (o);
  gst_buffer_unref (b);
  gst_harness_teardown (h);
}

TEST_F (I420Convert, ScalingIsRefusedNotDoneWrong)
{
  GstHarness *h = gst_harness_new_parse ("i420convert ! capsfilter caps=video/x-raw,width=160,height=120");
  GstVideoInfo in = info_of (GST_VIDEO_FORMAT_RGB, 320, 240);
  gst_harness_set_src_caps (h, gst_video_info_to_caps (&in));
  GstBuffer *b = frame_of (in, [] (int, int, int) { return 0; });
  EXPECT_NE (gst_harness_push (h, b), GST_FLOW_OK);
  gst_harness_teardown (h);
}

// What the recordings' stage track and the overlay read after the encoder's
// input: the frame's place on the slide survives the conversion.
TEST_F (I420Convert, TheFramesStageMetaGoesAlong)
{
  GstVideoInfo in = info_of (GST_VIDEO_FORMAT_RGB, 320, 240);
  GstBuffer *b = frame_of (in, [] (int x, int, int) { return x & 255; });
  LivemicroStageMeta *m = livemicro_buffer_add_stage_meta (b);
  m->stage_x_um = 1234.5;
  m->objective = 40;
  GstHarness *h = gst_harness_new_parse ("i420convert");
  gst_harness_set_src_caps (h, gst_video_info_to_caps (&in));
  GstBuffer *o = gst_harness_push_and_pull (h, b);
  ASSERT_NE (o, nullptr);
  LivemicroStageMeta *out = livemicro_buffer_get_stage_meta (o);
  ASSERT_NE (out, nullptr) << "StageMeta dropped by the conversion";
  EXPECT_EQ (out->stage_x_um, 1234.5);
  EXPECT_EQ (out->objective, 40);
  gst_buffer_unref (o);
  gst_harness_teardown (h);
}
