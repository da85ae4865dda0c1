// Benchmark: tumorfeatures' nuclei analysis against the scikit-image
// pipeline (rgb2hed -> Otsu -> distance watershed -> regionprops), in the
// same run.  Run on purpose:
//   meson test -C build --benchmark --suite bench -v
//   build/tests/bench/bench-analysis [--repeats N] [--json FILE] [--testdata DIR]
//
// 1. Accuracy on the MoNuSeg tile (359 annotated nuclei, 0.252 µm/px):
//    detection F1 (centroids within 2 µm, one-to-one, closest pairs first),
//    count error, pixel Dice; both methods scored by the same code.
// 2. Speed at 1920x1080 on one core (this process and the Python baseline
//    pinned to CPU 0, OpenCV single-threaded): frames of the virtual
//    microscope at 40x and 20x, and a real-tissue frame tiled from MoNuSeg;
//    medians over repeats; the ratio is against scikit-image on the same
//    PNG frames.  Only the analysis is timed (frames decoded beforehand).
#include "bench_util.h"
#include "accuracy.h"
#include "sim/synthetic_slide.h"

#include <livemicro/analysis/nuclei.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sched.h>
#include <string>
#include <vector>

using namespace livemicro;
using Clock = std::chrono::steady_clock;

namespace {

using livemicro::bench::median;
using livemicro::bench::percentile;

std::string
run_capture (const std::string &cmd, int &status)
{
  std::string out;
  FILE *p = popen (cmd.c_str (), "r");
  if (!p) {
    status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread (buf, 1, sizeof buf, p)) > 0)
    out.append (buf, n);
  status = pclose (p);
  return out;
}

JsonObject *
parse_object (JsonParser *parser, const std::string &text)
{
  if (!json_parser_load_from_data (parser, text.c_str (), -1, nullptr))
    return nullptr;
  JsonNode *root = json_parser_get_root (parser);
  return root && JSON_NODE_HOLDS_OBJECT (root) ? json_node_get_object (root) : nullptr;
}

struct AccuracyRow {
  std::string method;
  bench::Scores s;
};

struct SensitivityRow {
  std::string param;
  double value = 0, f1_low = 0, f1_high = 0, count_low = 0, count_high = 0;
};

struct SpeedRow {
  std::string scene;
  double ours_fps = 0, full_fps = 0, skimage_fps = 0;
  std::vector<double> ours_runs, full_runs, skimage_runs;
  double ms_per_frame = 0;
};

}  // namespace

int
main (int argc, char **argv)
{
  int repeats = 5;
  std::string json_path = "bench-analysis.json";
  std::string testdata = g_getenv ("LIVEMICRO_TESTDATA") ? g_getenv ("LIVEMICRO_TESTDATA") : "";
  std::string script = SKIMAGE_SCRIPT;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp (argv[i], "--repeats"))
      repeats = std::max (1, std::atoi (argv[i + 1]));
    else if (!std::strcmp (argv[i], "--json"))
      json_path = argv[i + 1];
    else if (!std::strcmp (argv[i], "--testdata"))
      testdata = argv[i + 1];
  }
  cpu_set_t one;
  CPU_ZERO (&one);
  CPU_SET (0, &one);
  const bool pinned = sched_setaffinity (0, sizeof one, &one) == 0;
  cv::setNumThreads (0);
  const std::string python = "OMP_NUM_THREADS=1 taskset -c 0 /usr/bin/python3 " + script;
  g_autofree char *tmp = g_dir_make_tmp ("bench-analysis-XXXXXX", nullptr);
  const std::string dir = tmp;

  // ---------------------------------------------------------------- accuracy
  std::vector<AccuracyRow> accuracy;
  std::vector<SensitivityRow> sensitivity;
  const std::string mon = testdata + "/monuseg/TCGA-B0-5710-01Z-00-DX1";
  const double mon_upp = 0.252;
  cv::Mat mon_bgr = cv::imread (mon + ".png", cv::IMREAD_COLOR);
  cv::Mat mon_labels = cv::imread (mon + "_labels_derived.png", cv::IMREAD_UNCHANGED);
  if (mon_bgr.empty () || mon_labels.empty ()) {
    std::printf ("accuracy: MoNuSeg tile not found under '%s' (set LIVEMICRO_TESTDATA): skipped\n",
        testdata.c_str ());
  } else {
    auto truth = bench::label_centroids (mon_labels);
    cv::Mat truth_mask = mon_labels > 0;
    auto ours = [&] (const char *name, analysis::Params p) {
      p.want_labels = true;
      analysis::Analyzer a (p);
      analysis::Result r = a.analyze (mon_bgr, mon_upp, {2, 1, 0});
      std::vector<cv::Point2d> pred;
      for (const auto &n : r.nuclei)
        pred.emplace_back (n.x_px, n.y_px);
      accuracy.push_back ({name, bench::score (truth, pred, 2.0 / mon_upp, truth_mask,
                                     bench::predicted_mask (r, mon_bgr.size ()))});
    };
    ours ("tumorfeatures (defaults)", analysis::Params ());
    analysis::Params macenko;
    macenko.stain = analysis::StainMethod::kMacenko;
    ours ("tumorfeatures stain=macenko", macenko);
    {
      const std::string mask_path = dir + "/skimage-mask.png";
      int status = 0;
      std::string out = run_capture (python + " detect " + std::to_string (mon_upp) + " " +
                                          mon + ".png " + mask_path, status);
      g_autoptr (JsonParser) parser = json_parser_new ();
      JsonObject *o = status == 0 ? parse_object (parser, out) : nullptr;
      if (!o) {
        std::printf ("accuracy: the scikit-image baseline failed (status %d): %s\n", status,
            out.c_str ());
      } else {
        std::vector<cv::Point2d> pred;
        JsonArray *c = json_object_get_array_member (o, "centroids");
        for (guint k = 0; k < json_array_get_length (c); k++) {
          JsonArray *xy = json_array_get_array_element (c, k);
          pred.emplace_back (json_array_get_double_element (xy, 0),
              json_array_get_double_element (xy, 1));
        }
        cv::Mat mask = cv::imread (mask_path, cv::IMREAD_GRAYSCALE) > 0;
        accuracy.push_back ({"scikit-image pipeline (baseline)",
            bench::score (truth, pred, 2.0 / mon_upp, truth_mask, mask)});
      }
    }
    // Sensitivity: each default moved by ±25 % alone.  A method fitted to
    // this tile would fall off on either side; a flat row says the default
    // is not a knife edge.
    struct Knob {
      const char *name;
      double analysis::Params::*field;
    };
    const Knob knobs[] = {
        {"edge_fraction", &analysis::Params::edge_fraction},
        {"mean_contrast_fraction", &analysis::Params::mean_contrast_fraction},
        {"intensity_weight", &analysis::Params::intensity_weight},
        {"min_split_radius_um", &analysis::Params::min_split_radius_um},
        {"min_area_um2", &analysis::Params::min_area_um2},
        {"background_radius_um", &analysis::Params::background_radius_um},
        {"working_um_per_px", &analysis::Params::working_um_per_px},
        {"object_radius_um", &analysis::Params::object_radius_um},
    };
    for (const Knob &k : knobs) {
      SensitivityRow row;
      row.param = k.name;
      row.value = analysis::Params ().*k.field;
      for (double f : {0.75, 1.25}) {
        analysis::Params p;
        p.*k.field = row.value * f;
        p.want_labels = true;
        analysis::Analyzer a (p);
        analysis::Result r = a.analyze (mon_bgr, mon_upp, {2, 1, 0});
        std::vector<cv::Point2d> pred;
        for (const auto &n : r.nuclei)
          pred.emplace_back (n.x_px, n.y_px);
        bench::Scores sc = bench::score (truth, pred, 2.0 / mon_upp, truth_mask, cv::Mat ());
        (f < 1 ? row.f1_low : row.f1_high) = sc.f1;
        (f < 1 ? row.count_low : row.count_high) = sc.count_error;
      }
      sensitivity.push_back (row);
    }
    std::printf ("\naccuracy on MoNuSeg TCGA-B0-5710 (%d nuclei, 0.252 um/px; match within 2 um)\n",
        accuracy.empty () ? 0 : accuracy[0].s.truth);
    std::printf ("%-34s %6s %6s %6s %6s %6s %6s %10s %6s\n", "method", "truth", "pred", "match",
        "prec", "recall", "F1", "count err", "Dice");
    for (const auto &a : accuracy)
      std::printf ("%-34s %6d %6d %6d %6.3f %6.3f %6.3f %9.1f%% %6.3f\n", a.method.c_str (),
          a.s.truth, a.s.predicted, a.s.matched, a.s.precision, a.s.recall, a.s.f1,
          100 * a.s.count_error, a.s.dice);
    std::printf ("\nsensitivity: F1 (count error) with one default moved by -25 %% / +25 %%\n");
    for (const auto &r : sensitivity)
      std::printf ("%-24s %6.2f   %.3f (%4.1f%%)   %.3f (%4.1f%%)\n", r.param.c_str (), r.value,
          r.f1_low, 100 * r.count_low, r.f1_high, 100 * r.count_high);
  }

  // ------------------------------------------------------------------- speed
  struct Scene {
    std::string name;
    double upp;
    cv::Mat rgb;
  };
  std::vector<Scene> scenes;
  {
    hw::sim::SyntheticSlide slide;
    for (double upp : {0.25, 0.5}) {
      cv::Mat rgb;
      cv::Point2d h = slide.home_um ();
      slide.render (upp, cv::Rect ((int) (h.x / upp) - 960, (int) (h.y / upp) - 540, 1920, 1080), rgb);
      scenes.push_back ({upp == 0.25 ? "virtual microscope 40x (0.25 um/px)"
                                     : "virtual microscope 20x (0.5 um/px)",
          upp, rgb});
    }
  }
  if (!mon_bgr.empty ()) {
    // A 1920x1080 real-tissue frame: the tile mirrored to fill the frame.
    cv::Mat rgb, big;
    cv::cvtColor (mon_bgr, rgb, cv::COLOR_BGR2RGB);
    cv::copyMakeBorder (rgb, big, 0, 80, 0, 920, cv::BORDER_REFLECT);
    scenes.push_back ({"MoNuSeg tissue tiled (0.252 um/px)", mon_upp, big (cv::Rect (0, 0, 1920, 1080)).clone ()});
  }
  std::vector<SpeedRow> speed;
  const int frames_per_run = 3;
  std::printf ("\nspeed at 1920x1080, %s, %d repeats x %d frames, medians\n",
      pinned ? "one core (CPU 0)" : "NOT pinned", repeats, frames_per_run);
  std::printf ("%-38s %12s %12s %14s %9s\n", "frames", "ours fps", "ours full-res",
      "scikit-image", "ratio");
  for (const Scene &sc : scenes) {
    SpeedRow row;
    row.scene = sc.name;
    std::string png = dir + "/frame-" + std::to_string (speed.size ()) + ".png";
    cv::Mat bgr;
    cv::cvtColor (sc.rgb, bgr, cv::COLOR_RGB2BGR);
    cv::imwrite (png, bgr);
    analysis::Analyzer ours, full ([] {
      analysis::Params p;
      p.analysis_scale = 1.0;
      return p;
    } ());
    ours.analyze (sc.rgb, sc.upp);  // warm-up (allocations)
    full.analyze (sc.rgb, sc.upp);
    auto fps_of = [&] (analysis::Analyzer &a) {
      auto t0 = Clock::now ();
      for (int k = 0; k < frames_per_run; k++)
        a.analyze (sc.rgb, sc.upp);
      return frames_per_run / std::chrono::duration<double> (Clock::now () - t0).count ();
    };
    std::string frames_arg;
    for (int k = 0; k < frames_per_run; k++)
      frames_arg += " " + png;
    for (int rep = 0; rep < repeats; rep++) {  // interleaved: same noise for all
      row.ours_runs.push_back (fps_of (ours));
      row.full_runs.push_back (fps_of (full));
      int status = 0;
      std::string out = run_capture (python + " time 1 " + std::to_string (sc.upp) + frames_arg,
          status);
      g_autoptr (JsonParser) parser = json_parser_new ();
      JsonObject *o = status == 0 ? parse_object (parser, out) : nullptr;
      if (o)
        row.skimage_runs.push_back (
            json_array_get_double_element (json_object_get_array_member (o, "runs_fps"), 0));
      else
        std::printf ("scikit-image run failed (status %d): %s\n", status, out.c_str ());
    }
    row.ours_fps = median (row.ours_runs);
    row.full_fps = median (row.full_runs);
    row.skimage_fps = median (row.skimage_runs);
    row.ms_per_frame = 1000.0 / row.ours_fps;
    std::printf ("%-38s %12.1f %12.1f %14.2f %8.1fx\n", sc.name.c_str (), row.ours_fps,
        row.full_fps, row.skimage_fps, row.skimage_fps > 0 ? row.ours_fps / row.skimage_fps : 0);
    std::fflush (stdout);
    speed.push_back (row);
  }

  // -------------------------------------------------------------------- JSON
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "benchmark");
  json_builder_add_string_value (b, "tumorfeatures nuclei analysis vs scikit-image");
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, "meson test -C build --benchmark --suite bench -v analysis");
  json_builder_set_member_name (b, "pinned_one_cpu");
  json_builder_add_boolean_value (b, pinned);
  json_builder_set_member_name (b, "repeats");
  json_builder_add_int_value (b, repeats);
  json_builder_set_member_name (b, "accuracy");
  json_builder_begin_array (b);
  for (const auto &a : accuracy) {
    json_builder_begin_object (b);
    auto num = [&] (const char *k, double v) {
      json_builder_set_member_name (b, k);
      json_builder_add_double_value (b, v);
    };
    json_builder_set_member_name (b, "method");
    json_builder_add_string_value (b, a.method.c_str ());
    num ("truth", a.s.truth);
    num ("predicted", a.s.predicted);
    num ("matched", a.s.matched);
    num ("precision", a.s.precision);
    num ("recall", a.s.recall);
    num ("f1", a.s.f1);
    num ("count_error", a.s.count_error);
    num ("dice", a.s.dice);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "sensitivity");
  json_builder_begin_array (b);
  for (const auto &r : sensitivity) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "param");
    json_builder_add_string_value (b, r.param.c_str ());
    for (auto [k, v] : {std::pair<const char *, double> {"default", r.value}, {"f1_minus_25pct", r.f1_low},
             {"f1_plus_25pct", r.f1_high}, {"count_error_minus_25pct", r.count_low},
             {"count_error_plus_25pct", r.count_high}}) {
      json_builder_set_member_name (b, k);
      json_builder_add_double_value (b, v);
    }
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "speed_1920x1080");
  json_builder_begin_array (b);
  for (const auto &r : speed) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "frames");
    json_builder_add_string_value (b, r.scene.c_str ());
    auto num = [&] (const char *k, double v) {
      json_builder_set_member_name (b, k);
      json_builder_add_double_value (b, v);
    };
    num ("median_fps", r.ours_fps);
    num ("median_fps_full_resolution", r.full_fps);
    num ("skimage_median_fps", r.skimage_fps);
    num ("ratio", r.skimage_fps > 0 ? r.ours_fps / r.skimage_fps : 0);
    for (auto [k, v] : {std::pair<const char *, const std::vector<double> *> {"runs_fps", &r.ours_runs},
             {"runs_fps_full_resolution", &r.full_runs}, {"skimage_runs_fps", &r.skimage_runs}}) {
      json_builder_set_member_name (b, k);
      json_builder_begin_array (b);
      for (double x : *v)
        json_builder_add_double_value (b, x);
      json_builder_end_array (b);
    }
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  livemicro::bench::write_json (b, json_path);
  // Clean the temporary frames.
  if (GDir *d = g_dir_open (dir.c_str (), 0, nullptr)) {
    while (const char *n = g_dir_read_name (d))
      g_remove ((dir + "/" + n).c_str ());
    g_dir_close (d);
  }
  g_rmdir (dir.c_str ());
  return 0;
}
