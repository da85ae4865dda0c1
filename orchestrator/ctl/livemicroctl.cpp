// livemicroctl — the LiveMicro command line.
//
//   livemicroctl [--server URL] [--token T] [--json] session|microscope ...
//       sessions and microscopes through livemicrod's HTTP API
//   livemicroctl ground-truth [--seed N] [--region X,Y,W,H] [-o FILE]
//       writes the generated slide's ground truth (label, tissue sections,
//       nuclei with positions, sizes and shapes) as JSON; region in slide µm.
#include "api_commands.h"
#include "sim/synthetic_slide.h"

#include <glib.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>

namespace {

int
usage (FILE *to)
{
  std::fprintf (to,
      "usage: livemicroctl <command> [options]\n\n"
      "commands:\n"
      "  session create|list|show|delete ...   (see livemicroctl session --help)\n"
      "  microscope list|show ...\n"
      "  control, command, still, annotations, audit  (see livemicroctl session --help)\n"
      "  ground-truth [--seed N] [--region X,Y,W,H] [-o FILE]\n"
      "      ground truth of sim://synthetic as JSON (region in slide µm;\n"
      "      default the whole slide, which lists ~10^6 nuclei)\n");
  return to == stdout ? 0 : 2;
}

int
ground_truth (int argc, char **argv)
{
  gint64 seed = (gint64) livemicro::hw::sim::SyntheticSlide::kDefaultSeed;
  g_autofree char *region = nullptr;
  g_autofree char *output = nullptr;
  GOptionEntry entries[] = {
      {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Slide seed (as in sim://synthetic?seed=N)", "N"},
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
      std::fprintf (stderr, "livemicroctl ground-truth: --region '%s' is not X,Y,W,H in µm "
                            "with W, H > 0\n", region);
      return 2;
    }
    rect = cv::Rect2d (x, y, w, h);
  }
  livemicro::hw::sim::SyntheticSlide slide ((uint64_t) seed);
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

}  // namespace

int
main (int argc, char **argv)
{
  if (argc < 2)
    return usage (stderr);
  if (!std::strcmp (argv[1], "--help") || !std::strcmp (argv[1], "-h") ||
      !std::strcmp (argv[1], "help"))
    return usage (stdout);
  if (!std::strcmp (argv[1], "ground-truth"))
    return ground_truth (argc - 1, argv + 1);
  // API commands: options may come before the noun (--server, --token, --json).
  for (int i = 1; i < argc; i++)
    if (!std::strcmp (argv[i], "session") || !std::strcmp (argv[i], "microscope") ||
        !std::strcmp (argv[i], "control") || !std::strcmp (argv[i], "command") ||
        !std::strcmp (argv[i], "still") || !std::strcmp (argv[i], "annotations") ||
        !std::strcmp (argv[i], "audit"))
      return livemicroctl_api (argc - 1, argv + 1);
  std::fprintf (stderr, "livemicroctl: unknown command '%s'\n\n", argv[1]);
  return usage (stderr);
}
