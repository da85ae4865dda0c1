// Benchmark: tumorfeatures' nuclei analysis, the learned nucleus model and
// the classical method, against the scikit-image pipeline (rgb2hed -> Otsu
// -> distance watershed -> regionprops), in the same run.  Run on purpose:
//   meson test -C build --benchmark --suite bench -v analysis
//   build/tests/bench/bench-analysis [--repeats N=3] [--json FILE=bench-analysis.json]
//       [--testdata DIR=$LIVEMICRO_TESTDATA] [--folds DIR=tests/bench/nuclei-folds]
//       [--model FILE=$LIVEMICRO_NUCLEI_MODEL] [--only looo|thresholds|kidney|speed|rebuild]
//       [--tta 1|2|4|8]
//   (without --only: every section but thresholds and rebuild; --tta: the
//   model's test-time augmentation copies, Params::model_tta_copies, in the
//   looo, speed and rebuild sections)
//
// 0. Leave one organ out on the eleven annotated MoNuSeg tiles of five
//    organs: each tile is segmented by the model trained without its organ
//    (tests/bench/nuclei-folds/nuclei-without-<organ>.onnx, made by
//    scripts/train-nuclei --folds), by the classical method and by
//    scikit-image; detection F1 (centroids within 2 µm), object F1 at IoU
//    0.5, AJI and count error at the tile's own resolution.
//    --only thresholds: the model's two thresholds chosen per fold on the
//    fold's *training* organs only (grid of foreground x marker
//    thresholds), then scored on the held-out organ beside the defaults.
// 1. Accuracy on the MoNuSeg tile (359 annotated nuclei, 0.252 µm/px):
//    detection F1 (centroids within 2 µm, one-to-one, closest pairs first),
//    count error, pixel Dice; both methods scored by the same code.
// 2. Speed at 1920x1080 on one core (this process and the Python baseline
//    pinned to CPU 0, OpenCV single-threaded): frames of the virtual
//    microscope at 40x and 20x, and a real-tissue frame tiled from MoNuSeg;
//    medians over repeats; the ratio is against scikit-image on the same
//    PNG frames.  Only the analysis is timed (frames decoded beforehand).
// 3. --only rebuild: what the first analysis costs once the working memory
//    was given back (Analyzer::release_memory, what an inactive
//    tumorfeatures does), against one with it kept: a 1280x720 frame of the
//    virtual microscope's default 10x (1 µm/px, the model enlarges it to its
//    0.5 µm/px), the model, --repeats pairs of (kept, rebuilt: released
//    and malloc_trim, as the element does) in turn;
//    the analysing thread's CPU time (what load does not change) and the
//    wall time, medians, and what the release itself takes.
#include "bench_util.h"
#include "accuracy.h"
#include "monuseg.h"
#include "sim/synthetic_slide.h"

#include <livemicro/analysis/nuclei.h>
#include <livemicro/analysis/nuclei_model.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sched.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string>
#include <vector>

using namespace livemicro;
using Clock = std::chrono::steady_clock;

namespace {

using livemicro::bench::median;

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
  double ours_fps = 0, full_fps = 0, skimage_fps = 0, model_fps = 0;
  std::vector<double> ours_runs, full_runs, skimage_runs, model_runs;
  // Frames per second of this thread's CPU time: what one idle core would
  // do, whatever else runs on the machine (OpenCV is single-threaded here).
  std::vector<double> ours_cpu_runs, model_cpu_runs;
  double ours_cpu_fps = 0, model_cpu_fps = 0;
  double ms_per_frame = 0;
};

// One method on one held-out tile.
struct FoldScore {
  double det_f1 = 0, obj_f1 = 0, aji = 0, count_error = 0; // count error signed
  int truth = 0, predicted = 0, det_matched = 0;
  bench::SegmentationScores seg; // with where the errors come from
  bool ok = false;
};

struct FoldRow {
  std::string stem, organ;
  FoldScore model, classical, skimage;
};

FoldScore
fold_score (const bench::AnnotatedTile &t, const std::vector<cv::Point2d> &pred, const cv::Mat &pred_labels)
{
  FoldScore f;
  auto truth = bench::label_centroids (t.labels);
  bench::Scores d = bench::score (truth, pred, 2.0 / t.um_per_px, cv::Mat (), cv::Mat ());
  bench::SegmentationScores s = bench::segmentation_scores (t.labels, pred_labels);
  f.det_f1 = d.f1;
  f.obj_f1 = s.object_f1;
  f.aji = s.aji;
  f.truth = d.truth;
  f.predicted = d.predicted;
  f.count_error = d.truth ? (double)(d.predicted - d.truth) / d.truth : 0;
  f.det_matched = d.matched;
  f.seg = s;
  f.ok = true;
  return f;
}

// The model's thresholds chosen on training organs only: for each fold
// model, every (foreground, marker) threshold pair of a small grid scored on
// the tiles of the four organs it was trained on (mean detection F1 + AJI);
// the best pair then scored on the held-out organ, beside the defaults.
struct ThresholdChoice {
  std::string organ;
  double fg = 0, marker = 0, train_det_f1 = 0, train_aji = 0;
  FoldScore held_out_chosen, held_out_default; // means over the organ's tiles
};

FoldScore
mean_score (const std::vector<FoldScore> &v)
{
  FoldScore m;
  for (const auto &f : v) {
    m.det_f1 += f.det_f1 / v.size ();
    m.aji += f.aji / v.size ();
    m.obj_f1 += f.obj_f1 / v.size ();
    m.count_error += std::abs (f.count_error) / v.size (); // mean |count error| of the tiles
  }
  m.ok = !v.empty ();
  return m;
}

// The centroids of what the analysis found, in pixels of the analysed image.
std::vector<cv::Point2d>
centroids_of (const analysis::Result &r)
{
  std::vector<cv::Point2d> pred;
  for (const auto &n : r.nuclei)
    pred.emplace_back (n.x_px, n.y_px);
  return pred;
}

// tumorfeatures' analysis with `p` (and `model`, when given, in place of
// p.model_path) on an annotated tile, scored against its annotations.
FoldScore
analyze_tile (const bench::AnnotatedTile &t, analysis::Params p,
              const std::shared_ptr<analysis::NucleusModel> &model = nullptr)
{
  p.want_labels = true;
  analysis::Analyzer a (p);
  if (model)
    a.set_model (model);
  analysis::Result r = a.analyze (t.bgr, t.um_per_px, {2, 1, 0});
  return fold_score (t, centroids_of (r), bench::predicted_labels (r, t.bgr.size ()));
}

void
add_once (std::vector<std::string> &v, const std::string &s)
{
  if (std::find (v.begin (), v.end (), s) == v.end ())
    v.push_back (s);
}

using TileSet = std::vector<std::pair<bench::MonusegTile, bench::AnnotatedTile>>;

// The model with these thresholds on the tiles of `organ` (held_out) or on
// those of the other organs: the mean of their scores.
FoldScore
thresholds_score (const TileSet &tiles, const std::shared_ptr<analysis::NucleusModel> &model,
                  const std::string &organ, double fg, double marker, bool held_out)
{
  std::vector<FoldScore> v;
  for (const auto &[tile, t] : tiles) {
    if ((tile.organ == organ) != held_out)
      continue;
    analysis::Params p;
    p.method = analysis::Method::kModel;
    p.fg_threshold = fg;
    p.marker_threshold = marker;
    v.push_back (analyze_tile (t, p, model));
  }
  return mean_score (v);
}

// The best pair of the grid on the fold's training organs, then that pair
// and the defaults on the held-out organ.
ThresholdChoice
choose_for_fold (const TileSet &tiles, const std::string &folds, const std::string &organ)
{
  const double fgs[] = {0.4, 0.5, 0.6}, markers[] = {0.3, 0.4, 0.5, 0.6};
  const analysis::Params defaults;
  std::shared_ptr<analysis::NucleusModel> model
      = analysis::NucleusModel::load (folds + "/nuclei-without-" + organ + ".onnx");
  ThresholdChoice c;
  c.organ = organ;
  double best = -1;
  for (double fg : fgs)
    for (double marker : markers) {
      FoldScore m = thresholds_score (tiles, model, organ, fg, marker, false);
      if (m.det_f1 + m.aji > best) {
        best = m.det_f1 + m.aji;
        c.fg = fg;
        c.marker = marker;
        c.train_det_f1 = m.det_f1;
        c.train_aji = m.aji;
      }
    }
  c.held_out_chosen = thresholds_score (tiles, model, organ, c.fg, c.marker, true);
  c.held_out_default
      = thresholds_score (tiles, model, organ, defaults.fg_threshold, defaults.marker_threshold, true);
  return c;
}

void
print_thresholds (const std::vector<ThresholdChoice> &out)
{
  const analysis::Params defaults;
  std::printf ("\nthe model's thresholds chosen on each fold's training organs (grid: foreground 0.4-0.6 x "
               "marker 0.3-0.6), scored on the held-out organ; defaults %.2f / %.2f\n",
               defaults.fg_threshold, defaults.marker_threshold);
  std::printf ("%-10s %5s %6s | %-20s | %-26s | %-26s\n", "held out", "fg", "marker", "training det F1, AJI",
               "held out, chosen: det AJI |cnt|", "held out, defaults");
  FoldScore mc, md;
  for (const auto &c : out) {
    std::printf ("%-10s %5.2f %6.2f | %6.3f %6.3f        | %6.3f %6.3f %5.1f%%      | %6.3f %6.3f %5.1f%%\n",
                 c.organ.c_str (), c.fg, c.marker, c.train_det_f1, c.train_aji, c.held_out_chosen.det_f1,
                 c.held_out_chosen.aji, 100 * c.held_out_chosen.count_error, c.held_out_default.det_f1,
                 c.held_out_default.aji, 100 * c.held_out_default.count_error);
    for (auto [m, f] :
         {std::pair<FoldScore *, const FoldScore *>{&mc, &c.held_out_chosen}, {&md, &c.held_out_default}}) {
      m->det_f1 += f->det_f1 / out.size ();
      m->aji += f->aji / out.size ();
      m->count_error += f->count_error / out.size ();
    }
  }
  if (!out.empty ())
    std::printf ("mean over organs: chosen det F1 %.3f, AJI %.3f, |count| %.1f %%; defaults det F1 %.3f, AJI "
                 "%.3f, |count| %.1f %%\n",
                 mc.det_f1, mc.aji, 100 * mc.count_error, md.det_f1, md.aji, 100 * md.count_error);
  std::fflush (stdout);
}

std::vector<ThresholdChoice>
choose_thresholds (const std::string &testdata, const std::string &folds)
{
  TileSet tiles;
  std::vector<std::string> organs;
  for (const auto &tile : bench::monuseg_tiles ()) {
    bench::AnnotatedTile t;
    std::string why;
    if (!bench::read_annotated_tile (testdata, tile.stem, t, why)) {
      std::printf ("thresholds: %s (set LIVEMICRO_TESTDATA): skipped\n", why.c_str ());
      return {};
    }
    tiles.emplace_back (tile, std::move (t));
    add_once (organs, tile.organ);
  }
  std::vector<ThresholdChoice> out;
  for (const auto &organ : organs)
    out.push_back (choose_for_fold (tiles, folds, organ));
  print_thresholds (out);
  return out;
}

// Where the errors come from, per organ and in all (sums over the tiles):
// detection misses and false detections, and the instance-level sources of
// bench::SegmentationScores, for the model and the classical method.
void
print_error_sources (const std::vector<FoldRow> &looo, const std::vector<std::string> &organs)
{
  std::printf ("\nwhere the errors come from (nuclei, summed over the held-out tiles; see accuracy.h)\n");
  std::printf ("%-18s %-10s %6s | %7s %7s | %7s %7s %7s %7s %7s\n", "organ", "method", "truth", "det FN",
               "det FP", "missed", "merged", "(preds)", "split+", "false");
  for (int k = 0; k < 2; k++) {
    std::vector<std::string> rows = organs;
    rows.push_back ("all");
    for (const auto &o : rows) {
      int t = 0, fn = 0, fp = 0, missed = 0, merged = 0, mp = 0, split = 0, fo = 0;
      for (const auto &r : looo) {
        const FoldScore &f = k == 0 ? r.model : r.classical;
        if (!f.ok || (o != "all" && r.organ != o))
          continue;
        t += f.truth;
        fn += f.truth - f.det_matched;
        fp += f.predicted - f.det_matched;
        missed += f.seg.missed;
        merged += f.seg.merged;
        mp += f.seg.merged_predictions;
        split += f.seg.split_extra;
        fo += f.seg.false_objects;
      }
      std::printf ("%-18s %-10s %6d | %7d %7d | %7d %7d %7d %7d %7d\n", o.c_str (),
                   k == 0 ? "model" : "classical", t, fn, fp, missed, merged, mp, split, fo);
    }
  }
}

// ------------------------------------------------------------- the run

struct Options {
  int repeats = 3;
  std::string json_path = "bench-analysis.json";
  std::string testdata;
  std::string folds = NUCLEI_FOLDS_DIR;
  std::string model_path;
  std::string only;   // one section: looo, thresholds, kidney, speed or rebuild
  int tta_copies = 1; // the model's test-time augmentation (looo, speed, rebuild)

  // Whether a section that runs by default runs (thresholds and rebuild run
  // only when asked for by --only).
  bool runs (const char *section) const { return only.empty () || only == section; }
};

// Reads the command line into `o`: the status main returns at once when
// the benchmark is not to run (livemicro::bench::parse_options).
std::optional<int>
parse_options (int argc, char **argv, Options &o)
{
  o.testdata = g_getenv ("LIVEMICRO_TESTDATA") ? g_getenv ("LIVEMICRO_TESTDATA") : "";
  o.model_path = g_getenv ("LIVEMICRO_NUCLEI_MODEL") ? g_getenv ("LIVEMICRO_NUCLEI_MODEL") : "";
  auto status = livemicro::bench::parse_options (
      argc, argv,
      "bench-analysis [--repeats N=3] [--json FILE=bench-analysis.json] [--testdata DIR=$LIVEMICRO_TESTDATA] "
      "[--folds DIR=tests/bench/nuclei-folds] [--model FILE=$LIVEMICRO_NUCLEI_MODEL] "
      "[--only looo|thresholds|kidney|speed|rebuild] [--tta 1|2|4|8] (without --only: every section but "
      "thresholds and rebuild)",
      {{"--repeats", &o.repeats, 1}, {"--tta", &o.tta_copies, 1}},
      {{"--json", &o.json_path},
       {"--testdata", &o.testdata},
       {"--folds", &o.folds},
       {"--model", &o.model_path},
       {"--only", &o.only, "looo|thresholds|kidney|speed|rebuild"}});
  if (!status && !analysis::valid_augmentation_copies (o.tta_copies)) {
    std::fprintf (stderr, "--tta takes 1, 2, 4 or 8, not %d\n", o.tta_copies);
    return 2;
  }
  return status;
}

// What every section shares: the scikit-image script's command line (on
// CPU 0, one thread) and a folder for the PNG frames handed to it.
struct Baseline {
  std::string python;
  std::string dir;
};

// Runs the scikit-image script with `args`; its JSON answer, or nullptr
// with `status` and `out` saying why.
JsonObject *
run_skimage (const Baseline &base, const std::string &args, JsonParser *parser, int &status, std::string &out)
{
  out = run_capture (base.python + " " + args, status);
  return status == 0 ? parse_object (parser, out) : nullptr;
}

std::vector<cv::Point2d>
centroids_member (JsonObject *o)
{
  std::vector<cv::Point2d> pred;
  JsonArray *c = json_object_get_array_member (o, "centroids");
  for (guint k = 0; k < json_array_get_length (c); k++) {
    JsonArray *xy = json_array_get_array_element (c, k);
    pred.emplace_back (json_array_get_double_element (xy, 0), json_array_get_double_element (xy, 1));
  }
  return pred;
}

// ------------------------------------------------ leave one organ out

FoldRow
leave_out_tile (const bench::MonusegTile &tile, const bench::AnnotatedTile &t, const Options &opt,
                const Baseline &base)
{
  FoldRow row;
  row.stem = tile.stem;
  row.organ = tile.organ;
  analysis::Params classical;
  classical.method = analysis::Method::kClassical;
  row.classical = analyze_tile (t, classical);
  analysis::Params model;
  model.method = analysis::Method::kModel;
  model.model_path = opt.folds + "/nuclei-without-" + tile.organ + ".onnx";
  model.model_tta_copies = opt.tta_copies;
  try {
    row.model = analyze_tile (t, model);
  } catch (const std::exception &e) {
    std::printf ("leave-one-organ-out: %s\n  (make the fold models with scripts/train-nuclei --folds)\n",
                 e.what ());
  }
  const std::string png = base.dir + "/tile.png", labels = base.dir + "/skimage-labels.png";
  cv::imwrite (png, t.bgr);
  int status = 0;
  std::string out;
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonObject *o = run_skimage (base, "labels " + std::to_string (t.um_per_px) + " " + png + " " + labels,
                               parser, status, out);
  if (o)
    row.skimage = fold_score (t, centroids_member (o), cv::imread (labels, cv::IMREAD_UNCHANGED));
  else
    std::printf ("scikit-image baseline failed on %s (status %d): %s\n", tile.stem, status, out.c_str ());
  return row;
}

std::vector<FoldRow>
leave_one_organ_out (const Options &opt, const Baseline &base)
{
  std::vector<FoldRow> looo;
  for (const auto &tile : bench::monuseg_tiles ()) {
    bench::AnnotatedTile t;
    std::string why;
    if (!bench::read_annotated_tile (opt.testdata, tile.stem, t, why)) {
      std::printf ("leave-one-organ-out: %s (set LIVEMICRO_TESTDATA): skipped\n", why.c_str ());
      return {};
    }
    looo.push_back (leave_out_tile (tile, t, opt, base));
  }
  return looo;
}

struct Means {
  double det_f1 = 0, obj_f1 = 0, aji = 0, abs_count = 0, count = 0, worst_abs_count = 0;
  int n = 0;
};

const char *const kMethods[] = {"model", "classical", "scikit-image"};

const FoldScore &
pick (const FoldRow &r, int k)
{
  return k == 0 ? r.model : k == 1 ? r.classical : r.skimage;
}

Means
mean_of (const std::vector<const FoldScore *> &v)
{
  Means m;
  for (const FoldScore *f : v) {
    if (!f->ok)
      continue;
    m.det_f1 += f->det_f1;
    m.obj_f1 += f->obj_f1;
    m.aji += f->aji;
    m.abs_count += std::abs (f->count_error);
    m.count += f->count_error;
    m.worst_abs_count = std::max (m.worst_abs_count, std::abs (f->count_error));
    m.n++;
  }
  if (m.n)
    for (double *x : {&m.det_f1, &m.obj_f1, &m.aji, &m.abs_count, &m.count})
      *x /= m.n;
  return m;
}

// Per organ (its tiles' mean), and over organs (each organ once) and tiles;
// [k] is kMethods[k].
struct LoooMeans {
  std::vector<std::string> organs;
  std::vector<std::array<Means, 3>> organs_means;
  std::array<Means, 3> over_organs{}, over_tiles{};
};

LoooMeans
means_of (const std::vector<FoldRow> &looo)
{
  LoooMeans s;
  for (const auto &r : looo)
    add_once (s.organs, r.organ);
  for (const auto &o : s.organs) {
    std::array<Means, 3> m;
    for (int k = 0; k < 3; k++) {
      std::vector<const FoldScore *> v;
      for (const auto &r : looo)
        if (r.organ == o)
          v.push_back (&pick (r, k));
      m[k] = mean_of (v);
    }
    s.organs_means.push_back (m);
  }
  for (int k = 0; k < 3; k++) {
    std::vector<const FoldScore *> tiles;
    for (const auto &r : looo)
      tiles.push_back (&pick (r, k));
    s.over_tiles[k] = mean_of (tiles);
    Means &m = s.over_organs[k];
    for (const auto &om : s.organs_means)
      if (om[k].n) {
        m.det_f1 += om[k].det_f1;
        m.obj_f1 += om[k].obj_f1;
        m.aji += om[k].aji;
        m.abs_count += om[k].abs_count;
        m.count += om[k].count;
        m.n++;
      }
    if (m.n)
      for (double *x : {&m.det_f1, &m.obj_f1, &m.aji, &m.abs_count, &m.count})
        *x /= m.n;
    m.worst_abs_count = s.over_tiles[k].worst_abs_count;
  }
  return s;
}

void
print_tta (int copies)
{
  std::printf ("\nthe model's test-time augmentation: %d cop%s\n", copies, copies == 1 ? "y (off)" : "ies");
}

void
print_looo_tiles (const std::vector<FoldRow> &looo, const std::string &folds)
{
  std::printf ("\nleave one organ out: each tile segmented by the model trained without its "
               "organ (%s)\n",
               folds.c_str ());
  std::printf ("%-24s %-9s %6s | %-30s | %-30s | %-30s\n", "tile", "organ", "truth",
               "model: detF1 objF1 AJI count", "classical: detF1 objF1 AJI cnt",
               "scikit-image: detF1 objF1 AJI cnt");
  for (const auto &r : looo) {
    std::printf ("%-24s %-9s %6d", r.stem.c_str (), r.organ.c_str (), r.classical.truth);
    for (int k = 0; k < 3; k++) {
      const FoldScore &f = pick (r, k);
      if (f.ok)
        std::printf (" | %5.3f %5.3f %5.3f %+6.1f%%     ", f.det_f1, f.obj_f1, f.aji, 100 * f.count_error);
      else
        std::printf (" | %-30s", "(not run)");
    }
    std::printf ("\n");
  }
}

void
print_means_line (const char *name, int tiles, const std::array<Means, 3> &m)
{
  std::printf ("%-24s %-8d  %6.3f %6.3f %6.3f   %6.3f %6.3f %6.3f   %6.3f %6.3f %6.3f   "
               "%+6.1f%% %+6.1f%% %+6.1f%%\n",
               name, tiles, m[0].det_f1, m[1].det_f1, m[2].det_f1, m[0].obj_f1, m[1].obj_f1, m[2].obj_f1,
               m[0].aji, m[1].aji, m[2].aji, 100 * m[0].count, 100 * m[1].count, 100 * m[2].count);
}

void
print_looo_means (const LoooMeans &s, int tiles)
{
  std::printf ("\nper organ (mean of its tiles)     detection F1        object F1@0.5       AJI"
               "                 count error (mean signed)\n");
  std::printf ("%-24s %-8s  %6s %6s %6s   %6s %6s %6s   %6s %6s %6s   %7s %7s %7s\n", "organ", "tiles",
               "model", "class", "skim", "model", "class", "skim", "model", "class", "skim", "model", "class",
               "skim");
  for (size_t k = 0; k < s.organs.size (); k++)
    print_means_line (s.organs[k].c_str (), s.organs_means[k][1].n, s.organs_means[k]);
  print_means_line ("mean over organs", (int)s.organs.size (), s.over_organs);
  print_means_line ("mean over tiles", tiles, s.over_tiles);
  std::printf ("mean |count error| over organs: model %.1f %%, classical %.1f %%, scikit-image "
               "%.1f %%; worst tile: model %.1f %%, classical %.1f %%, scikit-image %.1f %%\n",
               100 * s.over_organs[0].abs_count, 100 * s.over_organs[1].abs_count,
               100 * s.over_organs[2].abs_count, 100 * s.over_tiles[0].worst_abs_count,
               100 * s.over_tiles[1].worst_abs_count, 100 * s.over_tiles[2].worst_abs_count);
}

void
print_looo_targets (const Means &m)
{
  std::printf ("targets for the model on held-out organs: detection F1 >= 0.85: %s (%.3f); "
               "AJI >= 0.62: %s (%.3f); mean |count error| <= 10 %%: %s (%.1f %%); no tile "
               "beyond 20 %%: %s (worst %.1f %%)\n",
               m.det_f1 >= 0.85 ? "met" : "MISSED", m.det_f1, m.aji >= 0.62 ? "met" : "MISSED", m.aji,
               m.abs_count <= 0.10 ? "met" : "MISSED", 100 * m.abs_count,
               m.worst_abs_count <= 0.20 ? "met" : "MISSED", 100 * m.worst_abs_count);
}

// ---------------------------------------------------------------- accuracy

// The kidney tile the accuracy table and the speed table's real-tissue
// frame come from (empty images when the test data is not there).
struct KidneyTile {
  std::string path; // without ".png"
  double upp = 0.252;
  cv::Mat bgr, labels;
};

KidneyTile
read_kidney_tile (const std::string &testdata)
{
  KidneyTile k;
  k.path = testdata + "/monuseg/TCGA-B0-5710-01Z-00-DX1";
  k.bgr = cv::imread (k.path + ".png", cv::IMREAD_COLOR);
  k.labels = cv::imread (k.path + "_labels_derived.png", cv::IMREAD_UNCHANGED);
  return k;
}

std::vector<AccuracyRow>
accuracy_rows (const KidneyTile &k, const Baseline &base)
{
  std::vector<AccuracyRow> accuracy;
  auto truth = bench::label_centroids (k.labels);
  cv::Mat truth_mask = k.labels > 0;
  auto ours = [&] (const char *name, analysis::Params p) {
    p.want_labels = true;
    analysis::Analyzer a (p);
    analysis::Result r = a.analyze (k.bgr, k.upp, {2, 1, 0});
    accuracy.push_back ({name, bench::score (truth, centroids_of (r), 2.0 / k.upp, truth_mask,
                                             bench::predicted_mask (r, k.bgr.size ()))});
  };
  analysis::Params classical;
  classical.method = analysis::Method::kClassical;
  ours ("tumorfeatures classical", classical);
  analysis::Params macenko = classical;
  macenko.stain = analysis::StainMethod::kMacenko;
  ours ("tumorfeatures classical macenko", macenko);
  const std::string mask_path = base.dir + "/skimage-mask.png";
  int status = 0;
  std::string out;
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonObject *o = run_skimage (base, "detect " + std::to_string (k.upp) + " " + k.path + ".png " + mask_path,
                               parser, status, out);
  if (!o) {
    std::printf ("accuracy: the scikit-image baseline failed (status %d): %s\n", status, out.c_str ());
  } else {
    cv::Mat mask = cv::imread (mask_path, cv::IMREAD_GRAYSCALE) > 0;
    accuracy.push_back ({"scikit-image pipeline (baseline)",
                         bench::score (truth, centroids_member (o), 2.0 / k.upp, truth_mask, mask)});
  }
  return accuracy;
}

// Sensitivity: each default moved by ±25 % alone.  A method fitted to this
// tile would fall off on either side; a flat row says the default is not a
// knife edge.
std::vector<SensitivityRow>
sensitivity_rows (const KidneyTile &k)
{
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
  auto truth = bench::label_centroids (k.labels);
  cv::Mat truth_mask = k.labels > 0;
  std::vector<SensitivityRow> sensitivity;
  for (const Knob &knob : knobs) {
    SensitivityRow row;
    row.param = knob.name;
    row.value = analysis::Params ().*knob.field;
    for (double f : {0.75, 1.25}) {
      analysis::Params p;
      p.method = analysis::Method::kClassical;
      p.*knob.field = row.value * f;
      p.want_labels = true;
      analysis::Analyzer a (p);
      analysis::Result r = a.analyze (k.bgr, k.upp, {2, 1, 0});
      bench::Scores sc = bench::score (truth, centroids_of (r), 2.0 / k.upp, truth_mask, cv::Mat ());
      (f < 1 ? row.f1_low : row.f1_high) = sc.f1;
      (f < 1 ? row.count_low : row.count_high) = sc.count_error;
    }
    sensitivity.push_back (row);
  }
  return sensitivity;
}

void
print_accuracy (const std::vector<AccuracyRow> &accuracy, const std::vector<SensitivityRow> &sensitivity)
{
  std::printf ("\naccuracy on MoNuSeg TCGA-B0-5710 (%d nuclei, 0.252 um/px; match within 2 um)\n",
               accuracy.empty () ? 0 : accuracy[0].s.truth);
  std::printf ("%-34s %6s %6s %6s %6s %6s %6s %10s %6s\n", "method", "truth", "pred", "match", "prec",
               "recall", "F1", "count err", "Dice");
  for (const auto &a : accuracy)
    std::printf ("%-34s %6d %6d %6d %6.3f %6.3f %6.3f %9.1f%% %6.3f\n", a.method.c_str (), a.s.truth,
                 a.s.predicted, a.s.matched, a.s.precision, a.s.recall, a.s.f1, 100 * a.s.count_error,
                 a.s.dice);
  std::printf ("\nsensitivity of the classical method: F1 (count error) with one default moved by -25 %% / "
               "+25 %%\n");
  for (const auto &r : sensitivity)
    std::printf ("%-24s %6.2f   %.3f (%4.1f%%)   %.3f (%4.1f%%)\n", r.param.c_str (), r.value, r.f1_low,
                 100 * r.count_low, r.f1_high, 100 * r.count_high);
}

// ------------------------------------------------------------------- speed

struct Scene {
  std::string name;
  double upp;
  cv::Mat rgb;
};

std::vector<Scene>
speed_scenes (const KidneyTile &k)
{
  std::vector<Scene> scenes;
  hw::sim::SyntheticSlide slide;
  for (double upp : {0.25, 0.5}) {
    cv::Mat rgb;
    cv::Point2d h = slide.home_um ();
    slide.render (upp, cv::Rect ((int)(h.x / upp) - 960, (int)(h.y / upp) - 540, 1920, 1080), rgb);
    scenes.push_back (
        {upp == 0.25 ? "virtual microscope 40x (0.25 um/px)" : "virtual microscope 20x (0.5 um/px)", upp,
         rgb});
  }
  if (!k.bgr.empty ()) {
    // A 1920x1080 real-tissue frame: the tile mirrored to fill the frame.
    cv::Mat rgb, big;
    cv::cvtColor (k.bgr, rgb, cv::COLOR_BGR2RGB);
    cv::copyMakeBorder (rgb, big, 0, 80, 0, 920, cv::BORDER_REFLECT);
    scenes.push_back (
        {"MoNuSeg tissue tiled (0.252 um/px)", k.upp, big (cv::Rect (0, 0, 1920, 1080)).clone ()});
  }
  return scenes;
}

const int kFramesPerRun = 3;

void
print_speed_header (bool pinned, int repeats, const double load[3])
{
  std::printf ("\nspeed at 1920x1080, %s, %d repeats x %d frames, medians\n",
               pinned ? "one core (CPU 0)" : "NOT pinned", repeats, kFramesPerRun);
  std::printf ("load average before: %.2f %.2f %.2f (1, 5, 15 min; %ld CPUs)\n", load[0], load[1], load[2],
               sysconf (_SC_NPROCESSORS_ONLN));
  std::printf ("analysed frames per second (each: median of %d runs of %d frames); ratios = method "
               "fps / scikit-image fps on the same frames\n",
               repeats, kFramesPerRun);
  std::printf ("(the last two columns: frames per second of CPU time of the analysing thread, "
               "i.e. what one otherwise idle core does)\n");
  std::printf ("%-38s %10s %12s %12s %14s %9s %9s %9s %9s\n", "frames", "model", "classical", "class. full",
               "scikit-image", "model/sk", "class/sk", "model@cpu", "class@cpu");
}

double
thread_cpu_s ()
{
  timespec ts;
  clock_gettime (CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// Frames per second of one run of kFramesPerRun frames; per second of this
// thread's CPU time into `cpu_runs` when given.
double
frames_per_s (analysis::Analyzer &a, const Scene &sc, std::vector<double> *cpu_runs = nullptr)
{
  auto t0 = Clock::now ();
  double c0 = thread_cpu_s ();
  for (int k = 0; k < kFramesPerRun; k++)
    a.analyze (sc.rgb, sc.upp);
  if (cpu_runs)
    cpu_runs->push_back (kFramesPerRun / (thread_cpu_s () - c0));
  return kFramesPerRun / std::chrono::duration<double> (Clock::now () - t0).count ();
}

SpeedRow
time_scene (const Scene &sc, const std::string &png, const Options &opt, const Baseline &base)
{
  SpeedRow row;
  row.scene = sc.name;
  cv::Mat bgr;
  cv::cvtColor (sc.rgb, bgr, cv::COLOR_RGB2BGR);
  cv::imwrite (png, bgr);
  analysis::Params classical;
  classical.method = analysis::Method::kClassical;
  analysis::Params classical_full = classical;
  classical_full.analysis_scale = 1.0;
  analysis::Params model = classical;
  model.method = analysis::Method::kModel;
  model.model_path = opt.model_path;
  model.model_tta_copies = opt.tta_copies;
  analysis::Analyzer ours (classical), full (classical_full), learned (model);
  ours.analyze (sc.rgb, sc.upp); // warm-up (allocations)
  full.analyze (sc.rgb, sc.upp);
  learned.analyze (sc.rgb, sc.upp);
  std::string frames_arg;
  for (int k = 0; k < kFramesPerRun; k++)
    frames_arg += " " + png;
  for (int rep = 0; rep < opt.repeats; rep++) { // interleaved: same noise for all
    row.ours_runs.push_back (frames_per_s (ours, sc, &row.ours_cpu_runs));
    row.full_runs.push_back (frames_per_s (full, sc));
    row.model_runs.push_back (frames_per_s (learned, sc, &row.model_cpu_runs));
    int status = 0;
    std::string out;
    g_autoptr (JsonParser) parser = json_parser_new ();
    JsonObject *o = run_skimage (base, "time 1 " + std::to_string (sc.upp) + frames_arg, parser, status, out);
    if (o)
      row.skimage_runs.push_back (
          json_array_get_double_element (json_object_get_array_member (o, "runs_fps"), 0));
    else
      std::printf ("scikit-image run failed (status %d): %s\n", status, out.c_str ());
  }
  row.ours_fps = median (row.ours_runs);
  row.full_fps = median (row.full_runs);
  row.skimage_fps = median (row.skimage_runs);
  row.model_fps = median (row.model_runs);
  row.ours_cpu_fps = median (row.ours_cpu_runs);
  row.model_cpu_fps = median (row.model_cpu_runs);
  row.ms_per_frame = 1000.0 / row.ours_fps;
  return row;
}

void
print_speed_row (const SpeedRow &row)
{
  std::printf ("%-38s %10.1f %12.1f %12.1f %14.2f %8.1fx %8.1fx %9.1f %9.1f\n", row.scene.c_str (),
               row.model_fps, row.ours_fps, row.full_fps, row.skimage_fps,
               row.skimage_fps > 0 ? row.model_fps / row.skimage_fps : 0,
               row.skimage_fps > 0 ? row.ours_fps / row.skimage_fps : 0, row.model_cpu_fps, row.ours_cpu_fps);
  std::fflush (stdout);
}

// -------------------------------------------------------------------- JSON

// ----------------------------------------------------------------- rebuild

struct RebuildRuns {
  std::vector<double> kept_cpu_ms, kept_wall_ms, rebuilt_cpu_ms, rebuilt_wall_ms, release_wall_ms;
};

// One analysis of `rgb`: its thread CPU and wall ms into `cpu`, `wall`.
void
time_analysis (analysis::Analyzer &a, const cv::Mat &rgb, double upp, std::vector<double> &cpu,
               std::vector<double> &wall)
{
  const auto t0 = Clock::now ();
  const double c0 = thread_cpu_s ();
  a.analyze (rgb, upp);
  cpu.push_back ((thread_cpu_s () - c0) * 1000);
  wall.push_back (std::chrono::duration<double, std::milli> (Clock::now () - t0).count ());
}

RebuildRuns
time_rebuild (const Options &opt)
{
  RebuildRuns r;
  hw::sim::SyntheticSlide slide;
  const double upp = 1.0;
  const cv::Point2d h = slide.home_um ();
  cv::Mat rgb;
  slide.render (upp, cv::Rect ((int)(h.x / upp) - 640, (int)(h.y / upp) - 360, 1280, 720), rgb);
  analysis::Params p;
  p.method = analysis::Method::kModel;
  p.model_path = opt.model_path;
  p.model_tta_copies = opt.tta_copies;
  analysis::Analyzer a (p);
  a.analyze (rgb, upp); // first use: allocated
  for (int k = 0; k < opt.repeats; k++) {
    time_analysis (a, rgb, upp, r.kept_cpu_ms, r.kept_wall_ms);
    const auto t0 = Clock::now ();
    a.release_memory ();
#ifdef __GLIBC__
    malloc_trim (0); // as tumorfeatures does: the pages go back, the next analysis faults them in anew
#endif
    r.release_wall_ms.push_back (std::chrono::duration<double, std::milli> (Clock::now () - t0).count ());
    time_analysis (a, rgb, upp, r.rebuilt_cpu_ms, r.rebuilt_wall_ms);
  }
  return r;
}

void
print_rebuild (const RebuildRuns &r, int repeats)
{
  double load[3] = {-1, -1, -1};
  getloadavg (load, 3);
  std::printf ("\nfirst analysis after the working memory was given back: 1280x720 at 1 um/px (10x), the "
               "model, %d pairs in turn, medians; load average %.2f %.2f %.2f\n",
               repeats, load[0], load[1], load[2]);
  std::printf ("%-28s %14s %14s\n", "analysis", "thread CPU ms", "wall ms");
  std::printf ("%-28s %14.0f %14.0f\n", "working memory kept", median (r.kept_cpu_ms),
               median (r.kept_wall_ms));
  std::printf ("%-28s %14.0f %14.0f\n", "after release + malloc_trim", median (r.rebuilt_cpu_ms),
               median (r.rebuilt_wall_ms));
  std::printf ("%-28s %14s %14.0f\n", "release_memory () + trim", "", median (r.release_wall_ms));
}

struct Results {
  bool pinned = false;
  RebuildRuns rebuild;
  std::vector<FoldRow> looo;
  LoooMeans looo_means;
  std::vector<ThresholdChoice> thresholds;
  std::vector<AccuracyRow> accuracy;
  std::vector<SensitivityRow> sensitivity;
  double load[3] = {0, 0, 0}; // before the speed section
  std::vector<SpeedRow> speed;
};

void
add_number (JsonBuilder *b, const char *key, double v)
{
  json_builder_set_member_name (b, key);
  json_builder_add_double_value (b, v);
}

void
add_accuracy_json (JsonBuilder *b, const std::vector<AccuracyRow> &accuracy)
{
  json_builder_set_member_name (b, "accuracy");
  json_builder_begin_array (b);
  for (const auto &a : accuracy) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "method");
    json_builder_add_string_value (b, a.method.c_str ());
    add_number (b, "truth", a.s.truth);
    add_number (b, "predicted", a.s.predicted);
    add_number (b, "matched", a.s.matched);
    add_number (b, "precision", a.s.precision);
    add_number (b, "recall", a.s.recall);
    add_number (b, "f1", a.s.f1);
    add_number (b, "count_error", a.s.count_error);
    add_number (b, "dice", a.s.dice);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
}

void
add_sensitivity_json (JsonBuilder *b, const std::vector<SensitivityRow> &sensitivity)
{
  json_builder_set_member_name (b, "sensitivity");
  json_builder_begin_array (b);
  for (const auto &r : sensitivity) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "param");
    json_builder_add_string_value (b, r.param.c_str ());
    add_number (b, "default", r.value);
    add_number (b, "f1_minus_25pct", r.f1_low);
    add_number (b, "f1_plus_25pct", r.f1_high);
    add_number (b, "count_error_minus_25pct", r.count_low);
    add_number (b, "count_error_plus_25pct", r.count_high);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
}

void
add_fold_score_json (JsonBuilder *b, const FoldScore &f)
{
  json_builder_begin_object (b);
  add_number (b, "detection_f1", f.det_f1);
  add_number (b, "object_f1_iou50", f.obj_f1);
  add_number (b, "aji", f.aji);
  add_number (b, "count_error", f.count_error);
  add_number (b, "truth", f.truth);
  add_number (b, "predicted", f.predicted);
  add_number (b, "detection_matched", f.det_matched);
  add_number (b, "missed", f.seg.missed);
  add_number (b, "merged", f.seg.merged);
  add_number (b, "merged_predictions", f.seg.merged_predictions);
  add_number (b, "split_extra", f.seg.split_extra);
  add_number (b, "false_objects", f.seg.false_objects);
  json_builder_end_object (b);
}

void
add_means_json (JsonBuilder *b, const char *name, const std::array<Means, 3> &m)
{
  json_builder_set_member_name (b, name);
  json_builder_begin_object (b);
  for (int k = 0; k < 3; k++) {
    json_builder_set_member_name (b, kMethods[k]);
    json_builder_begin_object (b);
    add_number (b, "detection_f1", m[k].det_f1);
    add_number (b, "object_f1_iou50", m[k].obj_f1);
    add_number (b, "aji", m[k].aji);
    add_number (b, "mean_count_error", m[k].count);
    add_number (b, "mean_abs_count_error", m[k].abs_count);
    add_number (b, "worst_abs_count_error", m[k].worst_abs_count);
    json_builder_end_object (b);
  }
  json_builder_end_object (b);
}

void
add_looo_json (JsonBuilder *b, const std::vector<FoldRow> &looo, const LoooMeans &s, const std::string &folds)
{
  json_builder_set_member_name (b, "leave_one_organ_out");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "folds_dir");
  json_builder_add_string_value (b, folds.c_str ());
  json_builder_set_member_name (b, "tiles");
  json_builder_begin_array (b);
  for (const auto &r : looo) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "tile");
    json_builder_add_string_value (b, r.stem.c_str ());
    json_builder_set_member_name (b, "organ");
    json_builder_add_string_value (b, r.organ.c_str ());
    for (int k = 0; k < 3; k++) {
      json_builder_set_member_name (b, kMethods[k]);
      if (pick (r, k).ok)
        add_fold_score_json (b, pick (r, k));
      else
        json_builder_add_null_value (b);
    }
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "organs");
  json_builder_begin_object (b);
  for (size_t k = 0; k < s.organs.size (); k++)
    add_means_json (b, s.organs[k].c_str (), s.organs_means[k]);
  json_builder_end_object (b);
  add_means_json (b, "mean_over_organs", s.over_organs);
  add_means_json (b, "mean_over_tiles", s.over_tiles);
  json_builder_end_object (b);
}

void
add_thresholds_json (JsonBuilder *b, const std::vector<ThresholdChoice> &thresholds)
{
  json_builder_set_member_name (b, "thresholds_chosen_on_training_organs");
  json_builder_begin_array (b);
  for (const auto &c : thresholds) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "held_out_organ");
    json_builder_add_string_value (b, c.organ.c_str ());
    add_number (b, "fg_threshold", c.fg);
    add_number (b, "marker_threshold", c.marker);
    add_number (b, "training_detection_f1", c.train_det_f1);
    add_number (b, "training_aji", c.train_aji);
    add_number (b, "held_out_detection_f1", c.held_out_chosen.det_f1);
    add_number (b, "held_out_aji", c.held_out_chosen.aji);
    add_number (b, "held_out_mean_abs_count_error", c.held_out_chosen.count_error);
    add_number (b, "held_out_detection_f1_defaults", c.held_out_default.det_f1);
    add_number (b, "held_out_aji_defaults", c.held_out_default.aji);
    add_number (b, "held_out_mean_abs_count_error_defaults", c.held_out_default.count_error);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
}

void
add_runs_json (JsonBuilder *b, const char *key, const std::vector<double> &runs)
{
  json_builder_set_member_name (b, key);
  json_builder_begin_array (b);
  for (double x : runs)
    json_builder_add_double_value (b, x);
  json_builder_end_array (b);
}

void
add_speed_json (JsonBuilder *b, const std::vector<SpeedRow> &speed)
{
  json_builder_set_member_name (b, "speed_1920x1080");
  json_builder_begin_array (b);
  for (const auto &r : speed) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "frames");
    json_builder_add_string_value (b, r.scene.c_str ());
    add_number (b, "model_median_fps", r.model_fps);
    add_number (b, "model_median_fps_cpu_time", r.model_cpu_fps);
    add_number (b, "median_fps_cpu_time", r.ours_cpu_fps);
    add_number (b, "median_fps", r.ours_fps);
    add_number (b, "median_fps_full_resolution", r.full_fps);
    add_number (b, "skimage_median_fps", r.skimage_fps);
    add_number (b, "ratio", r.skimage_fps > 0 ? r.ours_fps / r.skimage_fps : 0);
    add_runs_json (b, "model_runs_fps", r.model_runs);
    add_runs_json (b, "runs_fps", r.ours_runs);
    add_runs_json (b, "runs_fps_full_resolution", r.full_runs);
    add_runs_json (b, "skimage_runs_fps", r.skimage_runs);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
}

void
add_rebuild_json (JsonBuilder *b, const RebuildRuns &r)
{
  if (r.kept_cpu_ms.empty ())
    return;
  json_builder_set_member_name (b, "rebuild");
  json_builder_begin_object (b);
  add_runs_json (b, "kept_cpu_ms", r.kept_cpu_ms);
  add_runs_json (b, "kept_wall_ms", r.kept_wall_ms);
  add_runs_json (b, "rebuilt_cpu_ms", r.rebuilt_cpu_ms);
  add_runs_json (b, "rebuilt_wall_ms", r.rebuilt_wall_ms);
  add_runs_json (b, "release_wall_ms", r.release_wall_ms);
  json_builder_end_object (b);
}

void
write_results (const Results &res, const Options &opt)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "benchmark");
  json_builder_add_string_value (b, "tumorfeatures nuclei analysis vs scikit-image");
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, "meson test -C build --benchmark --suite bench -v analysis");
  json_builder_set_member_name (b, "pinned_one_cpu");
  json_builder_add_boolean_value (b, res.pinned);
  json_builder_set_member_name (b, "repeats");
  json_builder_add_int_value (b, opt.repeats);
  json_builder_set_member_name (b, "model_tta_copies");
  json_builder_add_int_value (b, opt.tta_copies);
  add_accuracy_json (b, res.accuracy);
  add_sensitivity_json (b, res.sensitivity);
  add_runs_json (b, "load_average_before_speed", std::vector<double> (res.load, res.load + 3));
  add_looo_json (b, res.looo, res.looo_means, opt.folds);
  add_thresholds_json (b, res.thresholds);
  add_speed_json (b, res.speed);
  add_rebuild_json (b, res.rebuild);
  json_builder_end_object (b);
  livemicro::bench::write_json (b, opt.json_path);
}

// This process on CPU 0 alone.
bool
pin_to_one_cpu ()
{
  cpu_set_t one;
  CPU_ZERO (&one);
  CPU_SET (0, &one);
  return sched_setaffinity (0, sizeof one, &one) == 0;
}

void
remove_dir (const std::string &dir)
{
  if (GDir *d = g_dir_open (dir.c_str (), 0, nullptr)) {
    while (const char *n = g_dir_read_name (d))
      g_remove ((dir + "/" + n).c_str ());
    g_dir_close (d);
  }
  g_rmdir (dir.c_str ());
}

} // namespace

int
main (int argc, char **argv)
{
  Options opt;
  if (auto status = parse_options (argc, argv, opt))
    return *status;
  Results res;
  res.pinned = pin_to_one_cpu ();
  cv::setNumThreads (0);
  g_autofree char *tmp = g_dir_make_tmp ("bench-analysis-XXXXXX", nullptr);
  const Baseline base{std::string ("OMP_NUM_THREADS=1 taskset -c 0 /usr/bin/python3 ") + SKIMAGE_SCRIPT, tmp};

  if (opt.runs ("looo"))
    res.looo = leave_one_organ_out (opt, base);
  res.looo_means = means_of (res.looo);
  if (!res.looo.empty ()) {
    print_tta (opt.tta_copies);
    print_looo_tiles (res.looo, opt.folds);
    print_looo_means (res.looo_means, (int)res.looo.size ());
    print_error_sources (res.looo, res.looo_means.organs);
    print_looo_targets (res.looo_means.over_organs[0]);
    std::fflush (stdout);
  }

  if (opt.only == "thresholds")
    res.thresholds = choose_thresholds (opt.testdata, opt.folds);

  const KidneyTile kidney = read_kidney_tile (opt.testdata);
  if (!opt.runs ("kidney")) {
    // skipped
  } else if (kidney.bgr.empty () || kidney.labels.empty ()) {
    std::printf ("accuracy: MoNuSeg tile not found under '%s' (set LIVEMICRO_TESTDATA): skipped\n",
                 opt.testdata.c_str ());
  } else {
    res.accuracy = accuracy_rows (kidney, base);
    res.sensitivity = sensitivity_rows (kidney);
    print_accuracy (res.accuracy, res.sensitivity);
  }

  if (getloadavg (res.load, 3) < 0)
    res.load[0] = res.load[1] = res.load[2] = -1;
  if (opt.runs ("speed")) {
    print_tta (opt.tta_copies);
    print_speed_header (res.pinned, opt.repeats, res.load);
    const std::vector<Scene> scenes = speed_scenes (kidney);
    for (size_t k = 0; k < scenes.size (); k++) {
      res.speed.push_back (
          time_scene (scenes[k], base.dir + "/frame-" + std::to_string (k) + ".png", opt, base));
      print_speed_row (res.speed.back ());
    }
  }

  if (opt.only == "rebuild") {
    res.rebuild = time_rebuild (opt);
    print_rebuild (res.rebuild, opt.repeats);
  }

  write_results (res, opt);
  remove_dir (base.dir);
  return 0;
}
