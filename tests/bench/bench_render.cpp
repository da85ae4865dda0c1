// Benchmark: the virtual microscope renders 1920x1080 frames from its tile
// cache on one core.  Run on purpose:
//   meson test -C build --benchmark --suite bench -v
//   build/tests/bench/bench-render [--repeats N=5] [--frames N=120] [--json FILE=bench-render.json]
//
// Each scenario is measured against a baseline in the same run: the cached
// camera path vs. rendering every frame from the slide model (no cache), and
// the element path (microscopesrc ! fakesink) in RGB and I420.  The process is
// pinned to one CPU and OpenCV runs single-threaded.  Medians over repeats.
#include "bench_util.h"
#include "sim/sim_microscope.h"

#include <livemicro/hw/microscope.h>

#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <opencv2/core/utility.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <sched.h>
#include <string>
#include <thread>
#include <vector>

using namespace livemicro::hw;
using Clock = std::chrono::steady_clock;

namespace {

using livemicro::bench::median;
using livemicro::bench::percentile;

struct Result {
  std::string scenario, baseline;
  double fps = 0, baseline_fps = 0;
  double p95_ms = 0, baseline_p95_ms = 0; // 95th percentile frame times
  std::vector<double> runs, baseline_runs;
};

// Frame times of the last measure() call, for percentiles.
std::vector<double> g_frame_ms;

// Frames per second of `frame(k)` over `frames` calls.
double
measure (int frames, const std::function<void (int)> &frame)
{
  g_frame_ms.clear ();
  auto t0 = Clock::now ();
  for (int k = 0; k < frames; k++) {
    auto a = Clock::now ();
    frame (k);
    g_frame_ms.push_back (std::chrono::duration<double, std::milli> (Clock::now () - a).count ());
  }
  double s = std::chrono::duration<double> (Clock::now () - t0).count ();
  return frames / s;
}

struct Scope {
  std::unique_ptr<sim::SimMicroscope> m;
  explicit Scope (const std::string &uri)
  {
    auto p = open_microscope (uri);
    m.reset (dynamic_cast<sim::SimMicroscope *> (p.release ()));
    m->camera ().configure ({1920, 1080});
  }
};

// A manual clock so that motion advances exactly one frame interval (60 fps)
// per rendered frame, whatever the machine's speed.
struct FrameClock {
  int64_t now = 0;
  sim::MonotonicClock fn ()
  {
    return [this] { return now; };
  }
};

double
camera_fps (int objective, double pan_fov_per_s, double defocus_um, int frames, bool prefetch = false,
            bool paced = false)
{
  Scope s (std::string ("sim://synthetic?stage_speed_um_s=100000&prefetch=") + (prefetch ? "1" : "0"));
  FrameClock clock;
  s.m->set_clock (clock.fn ());
  s.m->turret ().select (objective);
  StageState st = s.m->stage ().state ();
  double z = s.m->focus_at (st.x_um, st.y_um) + defocus_um;
  s.m->focus ().set_speed_um_per_s (10000);
  s.m->focus ().move_to (z);
  clock.now += 1000000;
  const double fov_um = 1920 * s.m->turret ().current ().um_per_px;
  const double speed_um_s = pan_fov_per_s * fov_um;
  cv::Mat rgb;
  // Warm the cache at the start position, as a viewer would have.
  s.m->camera ().grab (rgb);
  if (speed_um_s > 0) {
    // A continuous jog: the stage glides towards a far target at the pan
    // speed, as when a user holds an arrow key.
    s.m->stage ().set_speed_um_per_s (speed_um_s);
    double far = st.x_um + 2.0 * speed_um_s * frames / 60.0;
    s.m->stage ().move_to (std::min (far, s.m->stage ().x_limits ().max_um), st.y_um);
  }
  return measure (frames, [&] (int) {
    auto frame_start = Clock::now ();
    clock.now += 1000000 / 60;
    s.m->camera ().grab (rgb);
    if (paced) // a live camera: one frame per 16.7 ms slot
      std::this_thread::sleep_until (frame_start + std::chrono::microseconds (16667));
  });
}

double
uncached_fps (int objective, int frames)
{
  Scope s ("sim://synthetic");
  s.m->turret ().select (objective);
  double upp = s.m->turret ().current ().um_per_px;
  StageState st = s.m->stage ().state ();
  cv::Rect r ((int)(st.x_um / upp - 960), (int)(st.y_um / upp - 540), 1920, 1080);
  cv::Mat rgb;
  return measure (frames, [&] (int) { s.m->slide ().render (upp, r, rgb); });
}

double
element_fps (const char *format, int frames)
{
  g_frame_ms.clear (); // no per-frame times through a pipeline
  std::string desc = "microscopesrc is-live=false num-buffers=" + std::to_string (frames)
                     + " ! video/x-raw,format=" + format
                     + ",width=1920,height=1080,framerate=60/1 ! fakesink sync=false";
  GstElement *p = gst_parse_launch (desc.c_str (), nullptr);
  // Preroll first (opens the slide, renders the first tiles).
  gst_element_set_state (p, GST_STATE_PAUSED);
  gst_element_get_state (p, nullptr, nullptr, GST_CLOCK_TIME_NONE);
  auto t0 = Clock::now ();
  gst_element_set_state (p, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus (p);
  GstMessage *m = gst_bus_timed_pop_filtered (bus, GST_CLOCK_TIME_NONE,
                                              (GstMessageType)(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
  double s = std::chrono::duration<double> (Clock::now () - t0).count ();
  gst_message_unref (m);
  gst_object_unref (bus);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (p);
  return (frames - 1) / s;
}

} // namespace

// Long by nature: a benchmark read top to bottom (its options, the measured runs, the
// table and the JSON in the order they are printed); its steps are the functions above.
int
main (int argc, char **argv)
{
  int repeats = 5, frames = 120;
  std::string json_path = "bench-render.json";
  if (auto status = livemicro::bench::parse_options (
          argc, argv, "bench-render [--repeats N=5] [--frames N=120] [--json FILE=bench-render.json]",
          {{"--repeats", &repeats, 1}, {"--frames", &frames, 1}}, {{"--json", &json_path}}))
    return *status;
  cpu_set_t one, all;
  sched_getaffinity (0, sizeof all, &all);
  CPU_ZERO (&one);
  CPU_SET (0, &one);
  bool pinned = sched_setaffinity (0, sizeof one, &one) == 0;
  cv::setNumThreads (0);
  gst_init (&argc, &argv);

  std::vector<Result> results;
  auto run = [&] (const std::string &name, const std::string &baseline, const std::function<double ()> &a,
                  const std::function<double ()> &b) {
    Result r;
    r.scenario = name;
    r.baseline = baseline;
    std::vector<double> p95s, base_p95s;
    for (int k = 0; k < repeats; k++) { // interleaved: same noise for both
      r.runs.push_back (a ());
      p95s.push_back (percentile (g_frame_ms, 0.95));
      r.baseline_runs.push_back (b ());
      base_p95s.push_back (percentile (g_frame_ms, 0.95));
    }
    r.fps = median (r.runs);
    r.p95_ms = median (p95s);
    r.baseline_fps = median (r.baseline_runs);
    r.baseline_p95_ms = median (base_p95s);
    std::printf ("%-46s %7.1f fps %6.1f ms  %-30s %7.1f fps %6.1f ms  x%.2f\n", name.c_str (), r.fps,
                 r.p95_ms, baseline.c_str (), r.baseline_fps, r.baseline_p95_ms, r.fps / r.baseline_fps);
    std::fflush (stdout);
    results.push_back (r);
  };

  std::printf ("virtual microscope, 1920x1080 RGB, %s, %d repeats x %d frames, medians\n",
               pinned ? "pinned to CPU 0" : "NOT pinned", repeats, frames);
  std::printf ("%-46s %11s %9s  %-30s %11s %9s  %s\n", "scenario", "median", "p95 frame",
               "baseline (same run)", "median", "p95 frame", "fps ratio");
  const int few = std::max (5, frames / 12);
  for (int obj : {4, 10, 20, 40}) {
    std::string o = std::to_string (obj) + "x";
    run (
        "camera " + o + " still, in focus", "render every frame, no cache",
        [&] { return camera_fps (obj, 0, 0, frames); }, [&] { return uncached_fps (obj, few); });
  }
  for (int obj : {10, 40}) {
    std::string o = std::to_string (obj) + "x";
    run (
        "camera " + o + " panning 1 field/s", "camera " + o + " still",
        [&] { return camera_fps (obj, 1.0, 0, frames); }, [&] { return camera_fps (obj, 0, 0, frames); });
    run (
        "camera " + o + " panning 3 fields/s", "camera " + o + " still",
        [&] { return camera_fps (obj, 3.0, 0, frames); }, [&] { return camera_fps (obj, 0, 0, frames); });
  }
  // Live pacing (a frame every 16.7 ms) with the prefetch worker free to use
  // the second core, against the same paced run on one core without it: the
  // figure that matters here is the p95 frame time (stalls), not the fps.
  sched_setaffinity (0, sizeof all, &all);
  for (int obj : {10, 40})
    run (
        "camera " + std::to_string (obj) + "x 3 fields/s, paced 60 fps, prefetch",
        "same, no prefetch, one core", [&] { return camera_fps (obj, 3.0, 0, frames, true, true); },
        [&] {
          sched_setaffinity (0, sizeof one, &one);
          double fps = camera_fps (obj, 3.0, 0, frames, false, true);
          sched_setaffinity (0, sizeof all, &all);
          return fps;
        });
  sched_setaffinity (0, sizeof one, &one);
  run (
      "camera 40x defocused 2 um (sigma 3.4 px)", "camera 40x still, in focus",
      [&] { return camera_fps (40, 0, 2.0, frames); }, [&] { return camera_fps (40, 0, 0, frames); });
  run (
      "camera 40x defocused 10 um (sigma 17 px)", "camera 40x still, in focus",
      [&] { return camera_fps (40, 0, 10.0, frames); }, [&] { return camera_fps (40, 0, 0, frames); });
  run (
      "microscopesrc ! fakesink, I420", "microscopesrc ! fakesink, RGB",
      [&] { return element_fps ("I420", frames); }, [&] { return element_fps ("RGB", frames); });

  // A microscope's start, as a restarted media worker pays it: the
  // synthetic slide built (its fields on threads of their own) and the first
  // frame of a 320x240 stream, on both cores against the same on one.
  // Starts per second; the p95 column is one start's time.
  auto opens_per_s = [&] (bool both_cores) {
    sched_setaffinity (0, sizeof (both_cores ? all : one), both_cores ? &all : &one);
    double per_s = measure (3, [] (int) {
      auto scope = open_microscope ("sim://synthetic");
      scope->camera ().configure ({320, 240});
      cv::Mat rgb;
      scope->camera ().grab (rgb);
    });
    sched_setaffinity (0, sizeof one, &one);
    return per_s;
  };
  run (
      "open sim://synthetic + first 320x240 frame, 2 cores", "the same, one core",
      [&] { return opens_per_s (true); }, [&] { return opens_per_s (false); });

  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "benchmark");
  json_builder_add_string_value (b, "virtual microscope render, 1920x1080");
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
    json_builder_set_member_name (b, "scenario");
    json_builder_add_string_value (b, r.scenario.c_str ());
    json_builder_set_member_name (b, "median_fps");
    json_builder_add_double_value (b, r.fps);
    json_builder_set_member_name (b, "p95_frame_ms");
    json_builder_add_double_value (b, r.p95_ms);
    json_builder_set_member_name (b, "baseline");
    json_builder_add_string_value (b, r.baseline.c_str ());
    json_builder_set_member_name (b, "baseline_p95_frame_ms");
    json_builder_add_double_value (b, r.baseline_p95_ms);
    json_builder_set_member_name (b, "baseline_median_fps");
    json_builder_add_double_value (b, r.baseline_fps);
    json_builder_set_member_name (b, "ratio");
    json_builder_add_double_value (b, r.fps / r.baseline_fps);
    json_builder_set_member_name (b, "runs_fps");
    json_builder_begin_array (b);
    for (double v : r.runs)
      json_builder_add_double_value (b, v);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "baseline_runs_fps");
    json_builder_begin_array (b);
    for (double v : r.baseline_runs)
      json_builder_add_double_value (b, v);
    json_builder_end_array (b);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  livemicro::bench::write_json (b, json_path);
  return 0;
}
