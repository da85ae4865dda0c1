// livemicroctl — the LiveMicro command line.
//
//   livemicroctl [--server URL] [--token T] [--json] session|microscope ...
//       sessions and microscopes through livemicrod's HTTP API
//   livemicroctl ground-truth [--seed N] [--region X,Y,W,H] [-o FILE]
//       writes the generated slide's ground truth (label, tissue sections,
//       nuclei with positions, sizes and shapes) as JSON; region in slide µm.
//   livemicroctl analyze IMAGE... [--um-per-px X] [--region X,Y,W,H]
//       [--stain macenko] [--tta 2|4|8] [--json [--nuclei] | --geojson FILE]
//       the tumorfeatures analysis on still images (PNG, JPEG, TIFF, or a
//       region of a whole-slide image through OpenSlide): a summary per image,
//       JSON Lines, or GeoJSON detections QuPath imports.
#include "api_commands.h"
#include "common/qupath_geojson.h"
#include "sim/file_slides.h"
#include "sim/synthetic_slide.h"

#include <livemicro/analysis/nuclei.h>
#include <livemicro/analysis/nuclei_model.h>
#include <livemicro/analysis/report.h>
#include <livemicro/hw/error.h>

#include <json-glib/json-glib.h>

#include <glib.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

namespace {

int
usage (FILE *to)
{
  std::fprintf (to, "usage: livemicroctl <command> [options]\n\n"
                    "commands:\n"
                    "  session create|list|show|delete ...   (see livemicroctl session --help)\n"
                    "  microscope list|show ...\n"
                    "  control, command, command-status, annotate, annotations, still, record,\n"
                    "  audit, cluster\n"
                    "      (see livemicroctl session --help; docs/cli.md walks through them)\n"
                    "  ground-truth [--seed N] [--region X,Y,W,H] [-o FILE]\n"
                    "      ground truth of sim://synthetic as JSON (region in slide µm;\n"
                    "      default the whole slide, which lists ~10^6 nuclei)\n"
                    "  analyze IMAGE... [--um-per-px X] [--region X,Y,W,H] [--stain macenko]\n"
                    "          [--tta 2|4|8] [--json [--nuclei] | --geojson FILE]\n"
                    "      H&E nuclei analysis of still images (PNG, JPEG, TIFF, whole-slide\n"
                    "      images through OpenSlide); --geojson writes QuPath detections\n");
  return to == stdout ? 0 : 2;
}

int
ground_truth (int argc, char **argv)
{
  gint64 seed = (gint64)livemicro::hw::sim::SyntheticSlide::kDefaultSeed;
  g_autofree char *region = nullptr;
  g_autofree char *output = nullptr;
  GOptionEntry entries[]
      = {{"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Slide seed (as in sim://synthetic?seed=N)", "N"},
         {"region", 0, 0, G_OPTION_ARG_STRING, &region, "Only nuclei in this rectangle, slide µm", "X,Y,W,H"},
         {"output", 'o', 0, G_OPTION_ARG_FILENAME, &output, "Write to FILE instead of stdout", "FILE"},
         {nullptr}};
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- ground truth of the generated slide");
  g_option_context_add_main_entries (ctx, entries, nullptr);
  g_autoptr (GError) error = nullptr;
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    std::fprintf (stderr, "livemicroctl ground-truth: %s\n", error->message);
    return 2;
  }
  if (seed < 0) {
    std::fprintf (stderr, "livemicroctl ground-truth: --seed must be >= 0\n");
    return 2;
  }
  std::optional<cv::Rect2d> rect;
  if (region) {
    double x, y, w, h;
    char tail;
    if (std::sscanf (region, "%lf,%lf,%lf,%lf%c", &x, &y, &w, &h, &tail) != 4 || w <= 0 || h <= 0) {
      std::fprintf (stderr,
                    "livemicroctl ground-truth: --region '%s' is not X,Y,W,H in µm "
                    "with W, H > 0\n",
                    region);
      return 2;
    }
    rect = cv::Rect2d (x, y, w, h);
  }
  livemicro::hw::sim::SyntheticSlide slide ((uint64_t)seed);
  if (output) {
    std::ofstream f (output);
    if (!f) {
      std::fprintf (stderr, "livemicroctl ground-truth: cannot write '%s'\n", output);
      return 1;
    }
    slide.write_ground_truth (f, rect);
    if (!f.good ()) {
      std::fprintf (stderr, "livemicroctl ground-truth: write to '%s' failed\n", output);
      return 1;
    }
  } else {
    slide.write_ground_truth (std::cout, rect);
  }
  return 0;
}

namespace an = livemicro::analysis;

bool
parse_rect (const char *text, cv::Rect &r)
{
  int x, y, w, h;
  char tail;
  if (std::sscanf (text, "%d,%d,%d,%d%c", &x, &y, &w, &h, &tail) != 4 || x < 0 || y < 0 || w <= 0 || h <= 0)
    return false;
  r = cv::Rect (x, y, w, h);
  return true;
}

// QuPath (0.4+) GeoJSON: one detection per nucleus, polygon in image pixels
// (level 0, region offset added), QuPath's measurement names for what the
// analysis measures (QuPath computes centroids itself).  The id is named by
// the image and the nucleus' place in it: the same analysis of the same
// image gives the same ids.  Nucleus and Mitotic candidate are not QuPath
// standard classes: their colours are ours.
bool
write_geojson (const std::string &path, const std::string &image, const an::Result &r, cv::Point offset,
               std::string &error)
{
  namespace qp = livemicro::orchestrator::qupath;
  g_autofree char *image_name = g_path_get_basename (image.c_str ());
  std::vector<qp::PathObject> objects;
  for (const an::Nucleus &n : r.nuclei) {
    qp::PathObject o;
    const double x = n.x_px + offset.x, y = n.y_px + offset.y;
    char where[64];
    g_snprintf (where, sizeof where, "%.1f,%.1f", x, y);
    o.id = qp::name_uuid (std::string ("nucleus/") + image_name + "/" + where);
    o.object_type = "detection";
    o.shape = qp::Shape::kPolygon;
    for (const cv::Point2f &p : n.contour)
      o.points_px.push_back ({p.x + offset.x, p.y + offset.y});
    o.classification = n.mitotic_candidate ? qp::PathClass{"Mitotic candidate", {255, 0, 255}}
                                           : qp::PathClass{"Nucleus", {40, 200, 60}};
    o.measurements = {{qp::measurement::kNucleusArea, n.area_um2},
                      {qp::measurement::kNucleusPerimeter, n.perimeter_um},
                      {qp::measurement::kNucleusCircularity, n.circularity},
                      {qp::measurement::kNucleusSolidity, n.solidity},
                      {qp::measurement::kNucleusHematoxylinOdMean, n.mean_h_od}};
    objects.push_back (std::move (o));
  }
  const std::string text = qp::feature_collection (objects);
  g_autoptr (GError) err = nullptr;
  if (!g_file_set_contents (path.c_str (), text.data (), (gssize)text.size (), &err)) {
    error = err->message;
    return false;
  }
  return true;
}

std::string
geojson_path_for (const std::string &base, const std::string &image, bool several)
{
  if (!several)
    return base;
  g_autofree char *name = g_path_get_basename (image.c_str ());
  std::string stem = name;
  if (auto dot = stem.rfind ('.'); dot != std::string::npos)
    stem.resize (dot);
  std::string b = base;
  if (g_str_has_suffix (b.c_str (), ".geojson"))
    b.resize (b.size () - 8);
  return b + "-" + stem + ".geojson";
}

// What `livemicroctl analyze` was asked for.
struct AnalyzeOptions {
  double um_per_px = 0; // 0: from the file
  bool json = false, nuclei = false;
  std::string geojson; // empty: no GeoJSON
  std::optional<cv::Rect> region;
  an::Params params;
};

// The command line of `analyze` into `o` (the images stay in argv); false
// after saying what is wrong.
bool
parse_analyze_options (int &argc, char **&argv, AnalyzeOptions &o)
{
  gdouble um_per_px = 0;
  gboolean json = FALSE, nuclei = FALSE;
  g_autofree char *geojson = nullptr;
  g_autofree char *region = nullptr;
  g_autofree char *stain = nullptr;
  gint tta = 1;
  GOptionEntry entries[]
      = {{"um-per-px", 0, 0, G_OPTION_ARG_DOUBLE, &um_per_px,
          "Pixel size on the slide (default: from the file: OpenSlide mpp or TIFF resolution)", "X"},
         {"region", 0, 0, G_OPTION_ARG_STRING, &region,
          "Analyse only this rectangle, full-resolution pixels (required for large slides)", "X,Y,W,H"},
         {"stain", 0, 0, G_OPTION_ARG_STRING, &stain, "Stain vectors: ruifrok-johnston (default) or macenko",
          "NAME"},
         {"tta", 0, 0, G_OPTION_ARG_INT, &tta,
          "Nucleus model: average its maps over N flipped/rotated copies of the image (1 = off, the default; "
          "2, 4 or 8; N times the model's time)",
          "N"},
         {"json", 0, 0, G_OPTION_ARG_NONE, &json, "One JSON object per image (JSON Lines)", nullptr},
         {"nuclei", 0, 0, G_OPTION_ARG_NONE, &nuclei, "With --json: add the per-nucleus array", nullptr},
         {"geojson", 0, 0, G_OPTION_ARG_FILENAME, &geojson,
          "Write the nuclei as QuPath detections (GeoJSON); with several images, one file each "
          "(FILE-<image>.geojson)",
          "FILE"},
         {nullptr}};
  g_autoptr (GOptionContext) ctx = g_option_context_new ("IMAGE... - analyse H&E still images");
  g_option_context_add_main_entries (ctx, entries, nullptr);
  g_autoptr (GError) error = nullptr;
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    std::fprintf (stderr, "livemicroctl analyze: %s\n", error->message);
    return false;
  }
  if (argc < 2) {
    std::fprintf (stderr, "livemicroctl analyze: no image given\n");
    return false;
  }
  if (um_per_px < 0 || um_per_px > 100) {
    std::fprintf (stderr, "livemicroctl analyze: --um-per-px %g is not in (0, 100]\n", um_per_px);
    return false;
  }
  if (json && geojson) {
    std::fprintf (stderr, "livemicroctl analyze: choose --json or --geojson, not both\n");
    return false;
  }
  cv::Rect rect;
  if (region && !parse_rect (region, rect)) {
    std::fprintf (stderr,
                  "livemicroctl analyze: --region '%s' is not X,Y,W,H in pixels "
                  "(X, Y >= 0, W, H > 0)\n",
                  region);
    return false;
  }
  if (stain && !std::strcmp (stain, "macenko"))
    o.params.stain = an::StainMethod::kMacenko;
  else if (stain && std::strcmp (stain, "ruifrok-johnston")) {
    std::fprintf (stderr, "livemicroctl analyze: --stain '%s' is not ruifrok-johnston or macenko\n", stain);
    return false;
  }
  if (!an::valid_augmentation_copies (tta)) {
    std::fprintf (stderr, "livemicroctl analyze: --tta %d is not 1, 2, 4 or 8\n", tta);
    return false;
  }
  o.params.model_tta_copies = tta;
  o.um_per_px = um_per_px;
  o.json = json;
  o.nuclei = nuclei;
  o.geojson = geojson ? geojson : "";
  if (region)
    o.region = rect;
  o.params.want_contours = nuclei || geojson;
  return true;
}

// The rectangle of the slide to analyse, full-resolution pixels; nullopt
// after saying why when it is outside the image or too large.
std::optional<cv::Rect>
analysed_rect (const std::string &path, const livemicro::hw::sim::Slide &slide, const AnalyzeOptions &o)
{
  constexpr int kMaxSide = 16384;
  const double upp = slide.native_um_per_px ();
  cv::Size full ((int)std::lround (slide.size_um ().width / upp),
                 (int)std::lround (slide.size_um ().height / upp));
  cv::Rect r = o.region ? *o.region : cv::Rect (0, 0, full.width, full.height);
  if ((r & cv::Rect (0, 0, full.width, full.height)) != r) {
    std::fprintf (stderr,
                  "livemicroctl analyze: %s: region %d,%d,%d,%d is outside the "
                  "image (%dx%d)\n",
                  path.c_str (), r.x, r.y, r.width, r.height, full.width, full.height);
    return std::nullopt;
  }
  if (r.width > kMaxSide || r.height > kMaxSide) {
    std::fprintf (stderr,
                  "livemicroctl analyze: %s is %dx%d pixels: give a --region of at "
                  "most %dx%d\n",
                  path.c_str (), r.width, r.height, kMaxSide, kMaxSide);
    return std::nullopt;
  }
  return r;
}

// One line per image, or one JSON object (--json).
void
print_result (const std::string &path, const an::Result &result, const AnalyzeOptions &o)
{
  const an::Summary &s = result.summary;
  if (o.json) {
    an::ReportContext rc;
    rc.image = path;
    rc.frames_analysed = 1;
    rc.nuclei = o.nuclei;
    std::printf ("%s\n", an::report_json (result, rc).c_str ());
  } else if (s.quality == an::Quality::kOk) {
    std::printf ("%s: %d nuclei, %.0f per mm² of tissue (tissue %.0f %%), mean area %.1f µm² "
                 "(CV %.2f), circularity %.2f, H/E %.2f, pleomorphism %s, mitotic candidates %d, "
                 "grade cue %s (image-derived, not a diagnosis)\n",
                 path.c_str (), s.nuclei_count, s.nuclei_per_mm2, s.tissue_fraction * 100, s.mean_area_um2,
                 s.cv_area, s.mean_circularity, s.he_ratio,
                 s.pleomorphism ? std::to_string (s.pleomorphism).c_str () : "-", s.mitotic_candidates,
                 s.grade_cue.empty () ? "-" : s.grade_cue.c_str ());
  } else {
    std::printf ("%s: quality %s (tissue %.0f %%): no nuclear measurements\n", path.c_str (),
                 an::quality_name (s.quality), s.tissue_fraction * 100);
  }
}

// Opens, analyses and reports one image; false after saying why it failed.
bool
analyze_image (const std::string &path, const AnalyzeOptions &o, bool several)
{
  std::unique_ptr<livemicro::hw::sim::Slide> slide;
  try {
    slide = livemicro::hw::sim::open_slide_file (path, o.um_per_px);
  } catch (const std::exception &e) {
    std::string why = e.what ();
    if (o.um_per_px <= 0 && why.find ("calibration") != std::string::npos)
      why = "'" + path + "' does not say its pixel size: give --um-per-px X";
    std::fprintf (stderr, "livemicroctl analyze: %s\n", why.c_str ());
    return false;
  }
  std::optional<cv::Rect> r = analysed_rect (path, *slide, o);
  if (!r)
    return false;
  const double upp = slide->native_um_per_px ();
  cv::Mat rgb;
  an::Result result;
  try {
    slide->render (upp, *r, rgb);
    an::Analyzer analyzer (o.params);
    result = analyzer.analyze (rgb, upp);
  } catch (const std::exception &e) {
    std::fprintf (stderr, "livemicroctl analyze: %s: %s\n", path.c_str (), e.what ());
    return false;
  }
  print_result (path, result, o);
  bool ok = true;
  if (!o.geojson.empty ()) {
    std::string out = geojson_path_for (o.geojson, path, several), why;
    if (!write_geojson (out, path, result, r->tl (), why)) {
      std::fprintf (stderr, "livemicroctl analyze: cannot write '%s': %s\n", out.c_str (), why.c_str ());
      ok = false;
    } else if (!o.json) {
      std::fprintf (stderr, "wrote %zu detections to %s\n", result.nuclei.size (), out.c_str ());
    }
  }
  std::fflush (stdout);
  return ok;
}

int
analyze (int argc, char **argv)
{
  AnalyzeOptions o;
  if (!parse_analyze_options (argc, argv, o))
    return 2;
  int failures = 0;
  for (int i = 1; i < argc; i++)
    failures += analyze_image (argv[i], o, argc > 2) ? 0 : 1;
  return failures ? 1 : 0;
}

} // namespace

int
main (int argc, char **argv)
{
  if (argc < 2)
    return usage (stderr);
  if (!std::strcmp (argv[1], "--help") || !std::strcmp (argv[1], "-h") || !std::strcmp (argv[1], "help"))
    return usage (stdout);
  if (!std::strcmp (argv[1], "ground-truth"))
    return ground_truth (argc - 1, argv + 1);
  if (!std::strcmp (argv[1], "analyze"))
    return analyze (argc - 1, argv + 1);
  // API commands: options may come before the noun (--server, --token, --json).
  for (int i = 1; i < argc; i++)
    if (!std::strcmp (argv[i], "session") || !std::strcmp (argv[i], "microscope")
        || !std::strcmp (argv[i], "control") || !std::strcmp (argv[i], "command")
        || !std::strcmp (argv[i], "still") || !std::strcmp (argv[i], "annotations")
        || !std::strcmp (argv[i], "audit") || !std::strcmp (argv[i], "annotate")
        || !std::strcmp (argv[i], "command-status") || !std::strcmp (argv[i], "cluster")
        || !std::strcmp (argv[i], "record"))
      return livemicroctl_api (argc - 1, argv + 1);
  std::fprintf (stderr, "livemicroctl: unknown command '%s'\n\n", argv[1]);
  return usage (stderr);
}
