// Benchmark: what live video does while tumorfeatures analyses it, per
// method, on ONE core.  A live source pushes 1920x1080 frames at 30 fps
// (40x, 0.252 µm/px: real tissue tiled from MoNuSeg when the shared test
// data is there, else the generated slide) through
//   tumorfeatures method=M wait-for-result=false analysis-nice=10 ! fakesink sync=true
// as livemicrod's capture pipeline runs it; the whole process is pinned to
// CPU 0 and OpenCV runs single-threaded.  Reported: frames out per second at
// the sink, how late they reach it (sink arrival − PTS: the delay analysis
// adds), and analysed frames per second (the rest are skipped, not delayed).
//   meson test -C build --benchmark --suite bench -v tumorfeatures-live
//   build/tests/bench/bench-tumorfeatures-live [--seconds S=10] [--json FILE=bench-tumorfeatures-live.json]
#include "bench_util.h"
#include "sim/synthetic_slide.h"

#include <livemicro/featuresmeta.h>

#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sched.h>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

struct Run {
  std::string method;
  int pushed = 0, out = 0;
  double out_fps = 0, analysed_fps = 0;
  guint64 analysed = 0, skipped = 0;
  double delay_p50_ms = 0, delay_p99_ms = 0, delay_max_ms = 0;
};

struct Probe {
  std::mutex m;
  GstElement *pipeline = nullptr;
  GstClockTime from = GST_CLOCK_TIME_NONE; // frames before this PTS: warm-up, not counted
  std::vector<double> delays_ms, arrivals_s;
  guint64 first_analysed = 0, last_analysed = 0, last_skipped = 0;
  double first_analysed_s = -1, last_analysed_s = 0;
};

GstPadProbeReturn
on_buffer (GstPad *, GstPadProbeInfo *info, gpointer data)
{
  auto *p = static_cast<Probe *> (data);
  GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER (info);
  GstClock *clock = gst_element_get_clock (p->pipeline);
  if (!clock)
    return GST_PAD_PROBE_OK;
  GstClockTime now = gst_clock_get_time (clock) - gst_element_get_base_time (p->pipeline);
  gst_object_unref (clock);
  std::lock_guard<std::mutex> lock (p->m);
  if (!GST_CLOCK_TIME_IS_VALID (p->from) || !GST_BUFFER_PTS_IS_VALID (buf) || GST_BUFFER_PTS (buf) < p->from)
    return GST_PAD_PROBE_OK;
  p->delays_ms.push_back (((double)now - (double)GST_BUFFER_PTS (buf)) / 1e6);
  p->arrivals_s.push_back (now / 1e9);
  if (LivemicroFeaturesMeta *m = livemicro_buffer_get_features_meta (buf)) {
    if (p->first_analysed_s < 0) {
      p->first_analysed = m->frames_analysed;
      p->first_analysed_s = now / 1e9;
    }
    p->last_analysed = m->frames_analysed;
    p->last_analysed_s = now / 1e9;
    p->last_skipped = m->frames_skipped;
  }
  return GST_PAD_PROBE_OK;
}

// Long by nature: one live pipeline built, run for `seconds` and measured in the
// order its figures are reported.
Run
run_live (const std::string &method, const cv::Mat &rgb, double upp, double seconds)
{
  Run r;
  r.method = method;
  const std::string desc
      = "appsrc name=src is-live=true do-timestamp=true format=time caps=video/x-raw,format=RGB,width="
        + std::to_string (rgb.cols) + ",height=" + std::to_string (rgb.rows)
        + ",framerate=30/1 ! tumorfeatures method=" + method + " um-per-px=" + std::to_string (upp)
        + " wait-for-result=false analysis-nice=10 ! fakesink name=sink sync=true";
  GError *err = nullptr;
  GstElement *pipeline = gst_parse_launch (desc.c_str (), &err);
  if (err) {
    std::fprintf (stderr, "cannot build '%s': %s\n", desc.c_str (), err->message);
    g_error_free (err);
    if (pipeline)
      gst_object_unref (pipeline);
    return r;
  }
  Probe probe;
  probe.pipeline = pipeline;
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  GstPad *pad = gst_element_get_static_pad (sink, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, on_buffer, &probe, nullptr);
  gst_object_unref (pad);
  gst_object_unref (sink);
  GstElement *src = gst_bin_get_by_name (GST_BIN (pipeline), "src");
  // The sink completes the state change on the first buffer (the pipeline
  // then fixes its base time): push one, wait for PLAYING, then pace the
  // frames on the pipeline clock; appsrc stamps each with the running time
  // at which it was pushed (do-timestamp), as a camera source does.
  const size_t bytes = rgb.total () * rgb.elemSize ();
  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  gst_app_src_push_buffer (GST_APP_SRC (src), gst_buffer_new_memdup (rgb.data, bytes));
  gst_element_get_state (pipeline, nullptr, nullptr, 30 * GST_SECOND);
  GstClock *clock = gst_element_get_clock (pipeline);
  const GstClockTime base = gst_element_get_base_time (pipeline);
  const GstClockTime t0 = gst_clock_get_time (clock) - base + GST_SECOND / 2;
  {
    std::lock_guard<std::mutex> lock (probe.m);
    probe.from = t0;
  }
  const int frames = (int)(seconds * 30);
  for (int k = 0; k < frames; k++) {
    GstClockID id
        = gst_clock_new_single_shot_id (clock, base + t0 + gst_util_uint64_scale (k, GST_SECOND, 30));
    gst_clock_id_wait (id, nullptr); // a camera delivers at 30 fps
    gst_clock_id_unref (id);
    GstBuffer *buf = gst_buffer_new_memdup (rgb.data, bytes);
    GST_BUFFER_DURATION (buf) = GST_SECOND / 30;
    if (gst_app_src_push_buffer (GST_APP_SRC (src), buf) != GST_FLOW_OK)
      break;
    r.pushed++;
  }
  gst_app_src_end_of_stream (GST_APP_SRC (src));
  GstBus *bus = gst_element_get_bus (pipeline);
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, 30 * GST_SECOND,
                                                (GstMessageType)(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
  if (msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
    GError *e = nullptr;
    gst_message_parse_error (msg, &e, nullptr);
    std::fprintf (stderr, "%s: %s\n", method.c_str (), e->message);
    g_error_free (e);
  }
  if (msg)
    gst_message_unref (msg);
  gst_object_unref (bus);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (clock);
  gst_object_unref (src);
  gst_object_unref (pipeline);

  std::lock_guard<std::mutex> lock (probe.m);
  r.out = (int)probe.arrivals_s.size ();
  if (r.out > 1)
    r.out_fps = (r.out - 1) / (probe.arrivals_s.back () - probe.arrivals_s.front ());
  double span = probe.last_analysed_s - probe.first_analysed_s;
  r.analysed = probe.last_analysed;
  r.skipped = probe.last_skipped;
  r.analysed_fps = span > 0 ? (probe.last_analysed - probe.first_analysed) / span : 0;
  r.delay_p50_ms = livemicro::bench::percentile (probe.delays_ms, 0.5);
  r.delay_p99_ms = livemicro::bench::percentile (probe.delays_ms, 0.99);
  r.delay_max_ms = livemicro::bench::percentile (probe.delays_ms, 1.0);
  return r;
}

} // namespace

// Long by nature: a benchmark read top to bottom (its options, the measured runs, the
// table and the JSON in the order they are printed); its steps are the functions above.
int
main (int argc, char **argv)
{
  double seconds = 10;
  std::string json_path = "bench-tumorfeatures-live.json";
  if (auto status = livemicro::bench::parse_options (
          argc, argv, "bench-tumorfeatures-live [--seconds S=10] [--json FILE=bench-tumorfeatures-live.json]",
          {}, {{"--json", &json_path}}, {{"--seconds", &seconds, 2}}))
    return *status;
  cpu_set_t one;
  CPU_ZERO (&one);
  CPU_SET (0, &one);
  const bool pinned = sched_setaffinity (0, sizeof one, &one) == 0;
  cv::setNumThreads (0);
  gst_init (&argc, &argv);

  const double upp = 0.252;
  cv::Mat rgb;
  std::string scene;
  const char *td = g_getenv ("LIVEMICRO_TESTDATA");
  cv::Mat tile = td ? cv::imread (std::string (td) + "/monuseg/TCGA-B0-5710-01Z-00-DX1.png") : cv::Mat ();
  if (!tile.empty ()) {
    cv::Mat big;
    cv::cvtColor (tile, tile, cv::COLOR_BGR2RGB);
    cv::copyMakeBorder (tile, big, 0, 80, 0, 920, cv::BORDER_REFLECT);
    rgb = big (cv::Rect (0, 0, 1920, 1080)).clone ();
    scene = "MoNuSeg TCGA-B0-5710 tiled to 1920x1080";
  } else {
    livemicro::hw::sim::SyntheticSlide slide;
    cv::Point2d h = slide.home_um ();
    slide.render (upp, cv::Rect ((int)(h.x / upp) - 960, (int)(h.y / upp) - 540, 1920, 1080), rgb);
    scene = "generated slide 1920x1080";
  }
  double load[3] = {-1, -1, -1};
  if (getloadavg (load, 3) < 0)
    load[0] = load[1] = load[2] = -1;
  std::printf ("live 30 fps, %s at 0.252 um/px, %.0f s per method, %s; load average %.2f %.2f %.2f\n",
               scene.c_str (), seconds, pinned ? "one core (CPU 0)" : "NOT pinned", load[0], load[1],
               load[2]);
  std::printf ("%-10s %7s %7s %8s %10s %9s %13s %13s %13s\n", "method", "pushed", "out", "out fps",
               "analysed/s", "skipped", "delay p50 ms", "delay p99 ms", "delay max ms");
  std::vector<Run> runs;
  for (const char *m : {"classical", "model"}) {
    Run r = run_live (m, rgb, upp, seconds);
    std::printf ("%-10s %7d %7d %8.1f %10.1f %9llu %13.1f %13.1f %13.1f\n", r.method.c_str (), r.pushed,
                 r.out, r.out_fps, r.analysed_fps, (unsigned long long)r.skipped, r.delay_p50_ms,
                 r.delay_p99_ms, r.delay_max_ms);
    std::fflush (stdout);
    runs.push_back (r);
  }
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "benchmark");
  json_builder_add_string_value (b, "tumorfeatures in a live 30 fps 1080p pipeline on one core");
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, "meson test -C build --benchmark --suite bench -v tumorfeatures-live");
  json_builder_set_member_name (b, "scene");
  json_builder_add_string_value (b, scene.c_str ());
  json_builder_set_member_name (b, "pinned_one_cpu");
  json_builder_add_boolean_value (b, pinned);
  json_builder_set_member_name (b, "load_average");
  json_builder_begin_array (b);
  for (double l : load)
    json_builder_add_double_value (b, l);
  json_builder_end_array (b);
  json_builder_set_member_name (b, "runs");
  json_builder_begin_array (b);
  for (const Run &r : runs) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "method");
    json_builder_add_string_value (b, r.method.c_str ());
    for (auto [k, v] : {std::pair<const char *, double>{"frames_pushed", (double)r.pushed},
                        {"frames_out", (double)r.out},
                        {"out_fps", r.out_fps},
                        {"analysed_fps", r.analysed_fps},
                        {"frames_analysed", (double)r.analysed},
                        {"frames_skipped", (double)r.skipped},
                        {"delay_p50_ms", r.delay_p50_ms},
                        {"delay_p99_ms", r.delay_p99_ms},
                        {"delay_max_ms", r.delay_max_ms}}) {
      json_builder_set_member_name (b, k);
      json_builder_add_double_value (b, v);
    }
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  livemicro::bench::write_json (b, json_path);
  return 0;
}
