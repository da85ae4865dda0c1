// Benchmark: what privacymask costs per 1920x1080 frame.  Run on purpose:
//   meson test -C build --benchmark --suite bench -v
//   build/tests/bench/bench-privacy [--repeats N] [--frames N] [--json FILE]
//
// Frames of the generated slide (10x, the label edge in view, the stage
// moving) are pushed through `privacymask` with a GstHarness and, in the same
// run and interleaved, through `identity` (the baseline: the same buffer
// handling without any work).  The cost of masking is the difference of the
// two.  Buffers are prepared outside the timed section.  The process is
// pinned to one CPU and OpenCV runs single-threaded.  Medians over repeats.
#include "bench_util.h"
#include <livemicro/hw/microscope.h>
#include <livemicro/stagemeta.h>

#include <gst/check/gstharness.h>
#include <glib/gstdio.h>
#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <fstream>
#include <functional>
#include <sched.h>
#include <string>
#include <vector>

namespace hw = livemicro::hw;
using Clock = std::chrono::steady_clock;

namespace {

using livemicro::bench::median;
using livemicro::bench::percentile;

const int kW = 1920, kH = 1080;

struct Frame {
  cv::Mat rgb;
  hw::CaptureInfo info;
};

struct Result {
  std::string scenario, baseline;
  double ms = 0, p95_ms = 0, baseline_ms = 0, baseline_p95_ms = 0;
  std::vector<double> runs, baseline_runs;
};

// A sequence of frames panning across the label edge at 10x (1 µm/px).
std::vector<Frame>
pan_frames (int n)
{
  auto m = hw::open_microscope ("sim://synthetic?stage_speed_um_s=100000");
  m->camera ().configure ({kW, kH});
  m->turret ().select (10);
  std::vector<Frame> frames;
  for (int k = 0; k < n; k++) {
    m->stage ().move_to (19600 + 40 * k, 9000 + 15 * k);
    while (m->stage ().state ().moving)
      g_usleep (500);
    Frame f;
    f.info = m->camera ().grab (f.rgb);
    f.rgb = f.rgb.clone ();
    f.info.moving = true;
    frames.push_back (f);
  }
  return frames;
}

GstBuffer *
make_buffer (const Frame &f, const std::string &format, bool moving)
{
  cv::Mat data = f.rgb;
  if (format == "I420")
    cv::cvtColor (f.rgb, data, cv::COLOR_RGB2YUV_I420);
  const size_t size = data.total () * data.elemSize ();
  GstBuffer *buf = gst_buffer_new_allocate (nullptr, size, nullptr);
  gst_buffer_fill (buf, 0, data.data, size);
  LivemicroStageMeta *m = livemicro_buffer_add_stage_meta (buf);
  m->stage_x_um = f.info.stage_x_um;
  m->stage_y_um = f.info.stage_y_um;
  m->stage_z_um = f.info.stage_z_um;
  m->objective = (guint) f.info.objective;
  m->um_per_px = f.info.um_per_px;
  m->frame_width = kW;
  m->frame_height = kH;
  m->moving = moving;
  return buf;
}

std::vector<double> g_frame_ms;

// Mean ms per frame of `element` over `n` frames (frame k from `frames`,
// or always frame 0 for a still view).
double
run (const std::string &element, const std::string &format, const std::vector<Frame> &frames,
    int n, bool still)
{
  GstHarness *h = gst_harness_new_parse (element.c_str ());
  std::string caps = "video/x-raw,format=" + format + ",width=1920,height=1080,framerate=30/1";
  gst_harness_set_src_caps_str (h, caps.c_str ());
  // One warm-up frame (negotiation, allocations, detector set-up).
  gst_buffer_unref (gst_harness_push_and_pull (h, make_buffer (frames[0], format, !still)));
  g_frame_ms.clear ();
  double total = 0;
  for (int k = 0; k < n; k++) {
    GstBuffer *in = make_buffer (frames[still ? 0 : k % frames.size ()], format, !still);
    auto t0 = Clock::now ();
    GstBuffer *out = gst_harness_push_and_pull (h, in);
    double ms = std::chrono::duration<double, std::milli> (Clock::now () - t0).count ();
    gst_buffer_unref (out);
    g_frame_ms.push_back (ms);
    total += ms;
  }
  gst_harness_teardown (h);
  return total / n;
}

}  // namespace

int
main (int argc, char **argv)
{
  int repeats = 5, frames = 60;
  std::string json_path = "bench-privacy.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp (argv[i], "--repeats"))
      repeats = std::max (1, std::atoi (argv[i + 1]));
    else if (!std::strcmp (argv[i], "--frames"))
      frames = std::max (1, std::atoi (argv[i + 1]));
    else if (!std::strcmp (argv[i], "--json"))
      json_path = argv[i + 1];
  }
  cpu_set_t one;
  CPU_ZERO (&one);
  CPU_SET (0, &one);
  bool pinned = sched_setaffinity (0, sizeof one, &one) == 0;
  cv::setNumThreads (0);
  gst_init (&argc, &argv);

  // Profiles that isolate one cost each.
  gchar *dir = g_dir_make_tmp ("bench-privacy-XXXXXX", nullptr);
  const std::string profiles = std::string (dir) + "/profiles.json";
  {
    std::ofstream p (profiles);
    p << R"({"regions": [{"name": "slide-label", "class": "label", "rect_um": [0, 0, 20000, 25000]})";
    // 50 more small polygons (hexagons) scattered over the view.
    for (int k = 0; k < 50; k++) {
      double cx = 19700 + 37.0 * k, cy = 8700 + 13.0 * (k % 40), r = 25;
      p << R"(, {"name": "spot)" << k << R"(", "class": "text", "polygon_um": [)";
      for (int j = 0; j < 6; j++)
        p << (j ? ", " : "") << "[" << cx + r * std::cos (j * M_PI / 3) << ", "
          << cy + r * std::sin (j * M_PI / 3) << "]";
      p << "]}";
    }
    p << R"(], "profiles": [
      {"name": "label-only", "regions": ["slide-label"], "detect": []},
      {"name": "many-regions", "regions": ["*"], "detect": []},
      {"name": "guest", "regions": ["*"], "detect": ["label", "qr", "barcode", "text"],
       "strip_metas": ["*"], "stage_meta": "geometry"},
      {"name": "consultant", "regions": ["slide-label"], "detect": ["label"]}]})";
  }
  const std::string loc = " profiles-location=" + profiles;
  std::vector<Frame> pan = pan_frames (8);

  std::vector<Result> results;
  auto bench = [&] (const std::string &name, const std::string &element, const std::string &format,
                   bool still) {
    Result r;
    r.scenario = name;
    r.baseline = "identity, " + format + ", same frames";
    std::vector<double> p95s, base_p95s;
    for (int k = 0; k < repeats; k++) {  // interleaved: same noise for both
      r.runs.push_back (run (element, format, pan, frames, still));
      p95s.push_back (percentile (g_frame_ms, 0.95));
      r.baseline_runs.push_back (run ("identity", format, pan, frames, still));
      base_p95s.push_back (percentile (g_frame_ms, 0.95));
    }
    r.ms = median (r.runs);
    r.p95_ms = median (p95s);
    r.baseline_ms = median (r.baseline_runs);
    r.baseline_p95_ms = median (base_p95s);
    std::printf ("%-58s %7.2f ms %7.2f ms  %7.2f ms %7.2f ms  %+7.2f ms\n", name.c_str (), r.ms,
        r.p95_ms, r.baseline_ms, r.baseline_p95_ms, r.ms - r.baseline_ms);
    std::fflush (stdout);
    results.push_back (r);
  };

  std::printf ("privacymask, 1920x1080, 10x across the label edge, %s, %d repeats x %d frames, "
               "medians\n",
      pinned ? "pinned to CPU 0" : "NOT pinned", repeats, frames);
  std::printf ("%-58s %10s %10s  %10s %10s  %10s\n", "scenario", "mean/frame", "p95 frame",
      "identity", "p95 frame", "cost");
  bench ("slide label mask (slide coordinates only), RGB, moving",
      "privacymask profile=label-only" + loc, "RGB", false);
  bench ("slide label mask (slide coordinates only), I420, moving",
      "privacymask profile=label-only" + loc, "I420", false);
  bench ("label + 50 polygons (slide coordinates only), RGB, moving",
      "privacymask profile=many-regions" + loc, "RGB", false);
  bench ("label mask, method=pixelate, RGB, moving",
      "privacymask profile=label-only method=pixelate" + loc, "RGB", false);
  bench ("consultant: label mask + label detection every frame, RGB",
      "privacymask profile=consultant" + loc, "RGB", false);
  bench ("guest: all detectors every frame (view moving), RGB",
      "privacymask profile=guest" + loc, "RGB", false);
  bench ("guest: still view, detection-interval=10 (amortised), RGB",
      "privacymask profile=guest detection-interval=10" + loc, "RGB", true);
  bench ("guest: all detectors every frame (view moving), I420",
      "privacymask profile=guest" + loc, "I420", false);

  g_remove (profiles.c_str ());
  g_rmdir (dir);
  g_free (dir);

  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "benchmark");
  json_builder_add_string_value (b, "privacymask cost per 1920x1080 frame");
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, "meson test -C build --benchmark --suite bench -v");
  json_builder_set_member_name (b, "pinned_one_cpu");
  json_builder_add_boolean_value (b, pinned);
  json_builder_set_member_name (b, "repeats");
  json_builder_add_int_value (b, repeats);
  json_builder_set_member_name (b, "frames");
  json_builder_add_int_value (b, frames);
  json_builder_set_member_name (b, "results");
  json_builder_begin_array (b);
  for (const auto &r : results) {
    json_builder_begin_object (b);
    const std::pair<const char *, double> fields[] = {{"mean_ms_per_frame", r.ms},
        {"p95_frame_ms", r.p95_ms}, {"baseline_mean_ms_per_frame", r.baseline_ms},
        {"baseline_p95_frame_ms", r.baseline_p95_ms}, {"cost_ms_per_frame", r.ms - r.baseline_ms}};
    json_builder_set_member_name (b, "scenario");
    json_builder_add_string_value (b, r.scenario.c_str ());
    json_builder_set_member_name (b, "baseline");
    json_builder_add_string_value (b, r.baseline.c_str ());
    for (const auto &[k, v] : fields) {
      json_builder_set_member_name (b, k);
      json_builder_add_double_value (b, v);
    }
    for (const auto &[k, list] : {std::pair<const char *, const std::vector<double> *> {"runs_ms", &r.runs},
             {"baseline_runs_ms", &r.baseline_runs}}) {
      json_builder_set_member_name (b, k);
      json_builder_begin_array (b);
      for (double v : *list)
        json_builder_add_double_value (b, v);
      json_builder_end_array (b);
    }
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  livemicro::bench::write_json (b, json_path);
  return 0;
}
