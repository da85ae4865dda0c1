// The view relay between nodes (docs/edge-cloud-relay.md): what one hop
// home node → serving node adds to a frame's delay, and the bytes it puts
// on the link per view.
//
//   meson test -C build --benchmark --suite bench relay -v
//   build/tests/bench/bench-relay [--runs N=3] [--seconds S=6] [--json FILE (no JSON without it)]
//
// In one process on 127.0.0.1: a home ViewStream fed by x264 (1280x720 at
// 30 fps, 2500 kbit/s, videotestsrc snow so the encoder stays at its
// bitrate) with LiveMicro's SEI; a RelayOut (srtsink, AES-256); a RelayIn
// (srtsrc) into a serving ViewStream.  Side by side, per frame: the
// baseline, a viewer of the home ViewStream (the frame as local viewers get
// it), and a viewer of the serving ViewStream.  The hop's added delay is
// serving arrival − home arrival of the same capture time (read from the
// SEI at both viewers).  For each SRT latency setting, N runs of S seconds;
// prints each run and the median of the runs, with the load average.
#include "bench_util.h"
#include "relay_fixtures.h"
#include "relay_in.h"
#include "relay_out.h"

#include <cstring>
#include <fstream>
#include <map>

using namespace livemicro::orchestrator;
using namespace livemicro::orchestrator::relay;
using namespace livemicro::test;
using livemicro::bench::median;
using livemicro::bench::percentile;

namespace {

std::string
load_average ()
{
  std::ifstream f ("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

struct RunResult {
  double hop_p50_ms = 0, hop_p95_ms = 0, home_p50_ms = 0;
  double link_kbps = 0, link_per_encoded = 0;
  size_t frames = 0;
  uint64_t missing = 0;
};

RunResult
run_once (int latency_ms, int seconds)
{
  auto home = std::make_shared<ViewStream> (1, "m1", "owner", "m1/owner");
  auto serving = std::make_shared<ViewStream> (2, "m1", "owner", "m1/owner");
  HomeFeed feed (home, 1280, 720, 30, "snow", 2500);
  SrtLinkSettings link;
  link.passphrase = "bench relay passphrase 0123456789";
  link.key_bytes = 32;
  link.latency_ms = latency_ms;
  const uint16_t port = free_udp_port ();
  RelayOut out (home, "127.0.0.1", port, link);
  RelayIn in (serving, "127.0.0.1", port, link);
  std::string error;
  if (!out.start (error) || !in.start (error)) {
    std::fprintf (stderr, "relay: %s\n", error.c_str ());
    std::exit (1);
  }
  LocalViewer at_home (home), at_serving (serving);
  wait_until ([&] { return at_serving.decoded () >= 30; }, 20000);
  const size_t skip_home = at_home.arrivals ().size (), skip_serving = at_serving.arrivals ().size ();
  const uint64_t sent0 = out.stats ().bytes_sent, encoded0 = home->bytes ();
  g_usleep ((gulong)seconds * 1000000);
  const uint64_t sent = out.stats ().bytes_sent - sent0, encoded = home->bytes () - encoded0;

  std::map<int64_t, int64_t> home_arrival;
  std::vector<double> home_ms;
  auto ha = at_home.arrivals ();
  for (size_t k = skip_home; k < ha.size (); k++) {
    home_arrival[ha[k].capture_unix_us] = ha[k].arrival_unix_us;
    home_ms.push_back ((ha[k].arrival_unix_us - ha[k].capture_unix_us) / 1000.0);
  }
  RunResult r;
  std::vector<double> hop_ms;
  auto sa = at_serving.arrivals ();
  for (size_t k = skip_serving; k < sa.size (); k++) {
    auto it = home_arrival.find (sa[k].capture_unix_us);
    if (it == home_arrival.end ()) {
      r.missing++;
      continue;
    }
    hop_ms.push_back ((sa[k].arrival_unix_us - it->second) / 1000.0);
  }
  r.frames = hop_ms.size ();
  r.hop_p50_ms = median (hop_ms);
  r.hop_p95_ms = percentile (hop_ms, 0.95);
  r.home_p50_ms = median (home_ms);
  r.link_kbps = sent * 8.0 / 1000.0 / seconds;
  r.link_per_encoded = encoded ? (double)sent / (double)encoded : 0;
  return r;
}

} // namespace

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  int runs = 3, seconds = 6;
  std::string json_path;
  if (auto status = livemicro::bench::parse_options (
          argc, argv, "bench-relay [--runs N=3] [--seconds S=6] [--json FILE (no JSON without it)]",
          {{"--runs", &runs, 1}, {"--seconds", &seconds, 1}}, {{"--json", &json_path}}))
    return *status;
  const std::string load_before = load_average ();
  g_autoptr (JsonBuilder) jb = json_builder_new ();
  json_builder_begin_object (jb);
  json_builder_set_member_name (jb, "load_average_before");
  json_builder_add_string_value (jb, load_before.c_str ());
  json_builder_set_member_name (jb, "settings");
  json_builder_begin_array (jb);
  std::printf ("load average %s; %d runs of %d s per setting; 1280x720 30 fps 2500 kbit/s\n",
               load_before.c_str (), runs, seconds);
  std::printf ("%-12s %4s %8s %8s %9s %9s %10s %8s\n", "srt latency", "run", "frames", "home p50", "hop p50",
               "hop p95", "link kbit/s", "link/enc");
  for (int latency_ms : {120, 40}) {
    std::vector<double> p50, p95, home50, kbps, ratio;
    for (int run = 1; run <= runs; run++) {
      RunResult r = run_once (latency_ms, seconds);
      std::printf ("%9d ms %4d %8zu %8.1f %9.1f %9.1f %10.0f %8.3f\n", latency_ms, run, r.frames,
                   r.home_p50_ms, r.hop_p50_ms, r.hop_p95_ms, r.link_kbps, r.link_per_encoded);
      p50.push_back (r.hop_p50_ms);
      p95.push_back (r.hop_p95_ms);
      home50.push_back (r.home_p50_ms);
      kbps.push_back (r.link_kbps);
      ratio.push_back (r.link_per_encoded);
    }
    std::printf ("%9d ms %4s %8s %8.1f %9.1f %9.1f %10.0f %8.3f\n", latency_ms, "med", "", median (home50),
                 median (p50), median (p95), median (kbps), median (ratio));
    json_builder_begin_object (jb);
    for (auto [k, v] : {std::pair<const char *, double>{"srt_latency_ms", latency_ms},
                        {"hop_p50_ms_median", median (p50)},
                        {"hop_p95_ms_median", median (p95)},
                        {"home_viewer_p50_ms_median", median (home50)},
                        {"link_kbps_median", median (kbps)},
                        {"link_bytes_per_encoded_byte_median", median (ratio)}}) {
      json_builder_set_member_name (jb, k);
      json_builder_add_double_value (jb, v);
    }
    json_builder_end_object (jb);
  }
  json_builder_end_array (jb);
  const std::string load_after = load_average ();
  std::printf ("load average after: %s\n", load_after.c_str ());
  json_builder_set_member_name (jb, "load_average_after");
  json_builder_add_string_value (jb, load_after.c_str ());
  json_builder_end_object (jb);
  if (!json_path.empty ())
    livemicro::bench::write_json (jb, json_path);
  return 0;
}
