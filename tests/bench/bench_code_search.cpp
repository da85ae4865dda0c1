// Benchmark: what the guest view's code search costs on the rectangle that
// first shows a code — Detector::screen () of a rectangle of a 1080p frame
// around one QR code or barcode on paper, on tissue, the way the
// incremental detector hands it over.  Run on purpose:
//   meson test -C build --benchmark --suite bench -v code-search
//   build/tests/bench/bench-code-search [--runs N=3] [--calls N=30] [--json FILE=bench-code-search.json]
//
// It uses only the public Detector API, so the same file built against
// another commit's liblivemicro-privacy.a compares the two (see
// docs/benchmarks.md).  Per run: the median wall time of `calls` calls;
// reported: the median over runs.  Pinned to CPU 0, OpenCV single-threaded.
#include "bench_util.h"
#include "printed_codes.h"

#include <livemicro/privacy/detect.h>

#include <json-glib/json-glib.h>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using livemicro::bench::median;
using livemicro::privacy::Detector;
using livemicro::privacy::RegionClass;
using Clock = std::chrono::steady_clock;
using livemicro::test::ean13_symbol;
using livemicro::test::qr_symbol;

// An H&E-like 1080p frame: purple nuclei on pink.
cv::Mat
tissue ()
{
  cv::Mat f (1080, 1920, CV_8UC3, cv::Scalar (225, 160, 200));
  cv::RNG rng (3);
  for (int k = 0; k < 1500; k++)
    cv::circle (f, {rng.uniform (0, 1920), rng.uniform (0, 1080)}, rng.uniform (4, 9),
                cv::Scalar (110, 50, 150), cv::FILLED);
  return f;
}

struct Case {
  std::string name;
  cv::Mat code;
  std::vector<double> run_ms; // per run: median ms per call
  size_t found = 0;
};

} // namespace

int
main (int argc, char **argv)
{
  int runs = 3, calls = 30;
  std::string json_path = "bench-code-search.json";
  if (auto status = livemicro::bench::parse_options (
          argc, argv, "bench-code-search [--runs N=3] [--calls N=30] [--json FILE=bench-code-search.json]",
          {{"--runs", &runs, 1}, {"--calls", &calls, 1}}, {{"--json", &json_path}}))
    return *status;
  const bool pinned = livemicro::bench::pin_to_first_cpu ();
  cv::setNumThreads (0);
  double load_start[3] = {0, 0, 0}, load_end[3] = {0, 0, 0};
  getloadavg (load_start, 3);

  std::vector<Case> cases = {{"QR code, 160 px (4.3 px modules)", qr_symbol (160)},
                             {"QR code, 240 px (6.5 px modules)", qr_symbol (240)},
                             {"EAN-13 barcode, 2 px modules", ean13_symbol (2, 80)},
                             {"EAN-13 barcode, 3 px modules", ean13_symbol (3, 120)}};
  const std::vector<RegionClass> codes = {RegionClass::kQr, RegionClass::kBarcode};
  const double work = Detector::work_scale ({1920, 1080});
  for (int r = 0; r < runs; r++)
    for (Case &c : cases) { // interleaved: the cases see the same noise
      cv::Mat f = tissue ();
      const cv::Rect at (600, 300, c.code.cols, c.code.rows);
      f (cv::Rect (at.x - 24, at.y - 24, at.width + 48, at.height + 48)).setTo (cv::Scalar (250, 250, 248));
      c.code.copyTo (f (at));
      // What the incremental detector analyses around new area: the code
      // and 48 detection pixels (96 frame pixels) of context, aligned to 2.
      const cv::Rect rect
          = cv::Rect (at.x - 96, at.y - 96, at.width + 192, at.height + 192) & cv::Rect (0, 0, 1920, 1080);
      Detector d;
      std::vector<double> ms;
      for (int k = 0; k < calls; k++) {
        const auto t0 = Clock::now ();
        auto found = d.screen (f (rect), codes, true, 1.0, work, rect.tl (), rect, nullptr, f.size ());
        ms.push_back (std::chrono::duration<double, std::milli> (Clock::now () - t0).count ());
        c.found = found.size ();
      }
      c.run_ms.push_back (median (ms));
    }
  getloadavg (load_end, 3);

  std::printf ("Detector::screen of the rectangle around one code (QR + barcode search), 1080p frame, %s, "
               "median of %d runs x %d calls; load average %.2f %.2f %.2f -> %.2f %.2f %.2f\n",
               pinned ? "pinned to CPU 0" : "NOT pinned", runs, calls, load_start[0], load_start[1],
               load_start[2], load_end[0], load_end[1], load_end[2]);
  std::printf ("%-36s %10s %8s   %s\n", "code", "ms/call", "found", "per run");
  for (const Case &c : cases) {
    std::string per_run;
    for (double v : c.run_ms)
      per_run += (per_run.empty () ? "" : ", ") + std::to_string (v).substr (0, 5);
    std::printf ("%-36s %10.2f %8zu   %s\n", c.name.c_str (), median (c.run_ms), c.found, per_run.c_str ());
  }

  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "benchmark");
  json_builder_add_string_value (b, "Detector::screen of the rectangle around one code, 1080p");
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, "meson test -C build --benchmark --suite bench -v code-search");
  json_builder_set_member_name (b, "pinned_one_cpu");
  json_builder_add_boolean_value (b, pinned);
  livemicro::bench::add_load_average (b, load_start, load_end);
  json_builder_set_member_name (b, "results");
  json_builder_begin_array (b);
  for (const Case &c : cases) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "code");
    json_builder_add_string_value (b, c.name.c_str ());
    json_builder_set_member_name (b, "ms_per_call_median");
    json_builder_add_double_value (b, median (c.run_ms));
    json_builder_set_member_name (b, "found");
    json_builder_add_int_value (b, (gint64)c.found);
    json_builder_set_member_name (b, "runs_ms");
    json_builder_begin_array (b);
    for (double v : c.run_ms)
      json_builder_add_double_value (b, v);
    json_builder_end_array (b);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  return livemicro::bench::write_json (b, json_path) ? 0 : 1;
}
