// Benchmark: a view branch's conversion of RGB to I420 before its encoder —
// livemicro's i420convert against videoconvert, on one core, for the frame
// sizes and formats the views use.  Run on purpose:
//   meson test -C build --benchmark --suite bench -v convert
//   build/tests/bench/bench-convert [--runs N=3] [--frames N=150] [--json FILE=bench-convert.json]
//
// Each run converts the same frame `frames` times through each element in
// turn (interleaved, so both see the same noise); the table gives the
// median over runs of each run's median ms per frame and the ratio
// videoconvert / i420convert of those medians.  Pinned to CPU 0.
#include "bench_util.h"

#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <json-glib/json-glib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sched.h>
#include <string>
#include <vector>

namespace {

using livemicro::bench::median;
using Clock = std::chrono::steady_clock;

struct Case {
  GstVideoFormat format;
  int width, height;
};

struct Result {
  Case c;
  std::vector<double> ours_ms, videoconvert_ms; // per run: median ms per frame
};

// An H&E-like frame: pink and purple blotches on a pale background, so that
// no converter meets a flat or synthetic pattern.
GstBuffer *
frame_of (const GstVideoInfo &info)
{
  GstBuffer *b = gst_buffer_new_allocate (nullptr, GST_VIDEO_INFO_SIZE (&info), nullptr);
  GstVideoFrame f;
  gst_video_frame_map (&f, &info, b, GST_MAP_WRITE);
  srand (7);
  for (guint c = 0; c < GST_VIDEO_INFO_N_COMPONENTS (&info); c++) {
    guint8 *data = (guint8 *)GST_VIDEO_FRAME_COMP_DATA (&f, c);
    const int stride = GST_VIDEO_FRAME_COMP_STRIDE (&f, c), ps = GST_VIDEO_FRAME_COMP_PSTRIDE (&f, c);
    const int base[] = {220, 150, 200, 255};
    for (int y = 0; y < GST_VIDEO_FRAME_COMP_HEIGHT (&f, c); y++)
      for (int x = 0; x < GST_VIDEO_FRAME_COMP_WIDTH (&f, c); x++) {
        const bool nucleus = ((x / 23) * 7 + (y / 19) * 5) % 11 == 0;
        data[y * stride + x * ps] = (guint8)(base[c] - (nucleus ? 90 : 0) - rand () % 24);
      }
  }
  gst_video_frame_unmap (&f);
  return b;
}

// Median ms per frame of `element` converting `frame` to I420, `frames` times.
double
ms_per_frame (const char *element, const GstVideoInfo &info, GstBuffer *frame, int frames)
{
  std::string launch = std::string (element) + " ! capsfilter caps=video/x-raw,format=I420";
  GstHarness *h = gst_harness_new_parse (launch.c_str ());
  gst_harness_set_src_caps (h, gst_video_info_to_caps (&info));
  std::vector<double> ms;
  for (int i = 0; i < frames + 5; i++) {
    auto t0 = Clock::now ();
    GstBuffer *out = gst_harness_push_and_pull (h, gst_buffer_ref (frame));
    double t = std::chrono::duration<double, std::milli> (Clock::now () - t0).count ();
    if (!out) {
      std::fprintf (stderr, "%s produced no frame\n", element);
      std::exit (1);
    }
    gst_buffer_unref (out);
    if (i >= 5) // the first frames set up the conversion
      ms.push_back (t);
  }
  gst_harness_teardown (h);
  return median (ms);
}

} // namespace

int
main (int argc, char **argv)
{
  int runs = 3, frames = 150;
  std::string json_path = "bench-convert.json";
  if (auto status = livemicro::bench::parse_options (
          argc, argv, "bench-convert [--runs N=3] [--frames N=150] [--json FILE=bench-convert.json]",
          {{"--runs", &runs, 1}, {"--frames", &frames, 1}}, {{"--json", &json_path}}))
    return *status;
  cpu_set_t one;
  CPU_ZERO (&one);
  CPU_SET (0, &one);
  const bool pinned = sched_setaffinity (0, sizeof one, &one) == 0;
  gst_init (&argc, &argv);
  GstPluginFeature *feature = gst_registry_lookup_feature (gst_registry_get (), "i420convert");
  if (feature)
    gst_object_unref (feature);
  else {
    std::fprintf (stderr, "the livemicro plugin (i420convert) is not on GST_PLUGIN_PATH\n");
    return 1;
  }
  double load_start[3], load_end[3];
  getloadavg (load_start, 3);

  std::vector<Result> results;
  for (Case c : {Case{GST_VIDEO_FORMAT_RGB, 1280, 720}, Case{GST_VIDEO_FORMAT_RGB, 1920, 1080},
                 Case{GST_VIDEO_FORMAT_BGRx, 1280, 720}})
    results.push_back ({c, {}, {}});
  for (int run = 0; run < runs; run++)
    for (Result &r : results) {
      GstVideoInfo info;
      gst_video_info_set_format (&info, r.c.format, r.c.width, r.c.height);
      GstBuffer *frame = frame_of (info);
      r.ours_ms.push_back (ms_per_frame ("i420convert", info, frame, frames));
      r.videoconvert_ms.push_back (ms_per_frame ("videoconvert", info, frame, frames));
      gst_buffer_unref (frame);
    }
  getloadavg (load_end, 3);

  std::printf ("RGB -> I420 before a view's encoder, one core (%s), %d runs x %d frames, load average "
               "%.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end\n",
               pinned ? "pinned to CPU 0" : "NOT pinned", runs, frames, load_start[0], load_start[1],
               load_start[2], load_end[0], load_end[1], load_end[2]);
  std::printf ("%-18s %16s %16s %22s   runs (i420convert / videoconvert)\n", "input", "i420convert ms",
               "videoconvert ms", "videoconvert/i420conv.");
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "benchmark");
  json_builder_add_string_value (b, "RGB to I420 before the encoder: i420convert vs videoconvert, one core");
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, "meson test -C build --benchmark --suite bench -v convert");
  json_builder_set_member_name (b, "pinned_one_cpu");
  json_builder_add_boolean_value (b, pinned);
  json_builder_set_member_name (b, "results");
  json_builder_begin_array (b);
  for (const Result &r : results) {
    const double ours = median (r.ours_ms), theirs = median (r.videoconvert_ms);
    std::string input = std::string (gst_video_format_to_string (r.c.format)) + " "
                        + std::to_string (r.c.width) + "x" + std::to_string (r.c.height);
    std::string per_run;
    for (size_t i = 0; i < r.ours_ms.size (); i++) {
      char s[48];
      std::snprintf (s, sizeof s, "%s%.2f/%.2f", i ? ", " : "", r.ours_ms[i], r.videoconvert_ms[i]);
      per_run += s;
    }
    std::printf ("%-18s %16.2f %16.2f %21.2fx   %s\n", input.c_str (), ours, theirs, theirs / ours,
                 per_run.c_str ());
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "input");
    json_builder_add_string_value (b, input.c_str ());
    json_builder_set_member_name (b, "i420convert_ms");
    json_builder_add_double_value (b, ours);
    json_builder_set_member_name (b, "videoconvert_ms");
    json_builder_add_double_value (b, theirs);
    json_builder_set_member_name (b, "videoconvert_over_i420convert");
    json_builder_add_double_value (b, theirs / ours);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  livemicro::bench::add_load_average (b, load_start, load_end);
  json_builder_end_object (b);
  livemicro::bench::write_json (b, json_path);
  return 0;
}
