// bench-edge-cloud: what a viewer at another site costs the microscope's
// home node and the link between the sites.
//
// One etcd member, a home node A (site "lab", one virtual microscope) and a
// serving node C (site "far", none of its own), real livemicrod processes on
// 127.0.0.1.  For 1, 5 and 20 RTSP viewers at C (each its own consultant
// session asked of C, so placed on C; rtspsrc players in this process):
//   - session start at the remote node: POST /api/v1/sessions on C until the
//     viewer's first frame from C (p50/p95 over every viewer of the run);
//   - bytes/s node A sends to node C (livemicro_relay_out_bytes_total), per
//     viewer, against what one stream per viewer would send (N × the bytes/s
//     of one stream, the same relay measured with one viewer);
//   - CPU of A (daemon + worker) and of C, % of one core.
// Three runs; medians.  The machine's load average is printed: on a 2-core
// machine doing other work, CPU figures move; the bytes do not.
//
//   meson test -C build --benchmark --suite bench edge-cloud -v
//   build/tests/bench/bench-edge-cloud [--runs N=3] [--json FILE=bench-edge-cloud.json]
#include "bench_cluster.h"
#include "bench_util.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>

using livemicro::test::Daemon;
using livemicro::test::EtcdCluster;
using livemicro::test::HttpReply;
using livemicro::test::RtspPlayer;

namespace {

double
metric_of (const Daemon &d, const char *name)
{
  return d.metric (std::string (name) + R"({microscope="scope-a",profile="consultant"})");
}

struct Step {
  int viewers = 0;
  std::vector<double> start_ms; // every viewer of this step
  double relay_bytes_s = 0;     // A → C
  double a_cpu_pct = 0, c_cpu_pct = 0;
  int failed = 0;
};

Step
measure (const Daemon &a, const Daemon &c, int viewers, double seconds)
{
  Step s;
  s.viewers = viewers;
  const std::string rtsp = "rtsp://127.0.0.1:" + std::to_string (c.rtsp_port ()) + "/s/";
  std::vector<std::string> ids;
  std::vector<std::unique_ptr<RtspPlayer>> players;
  for (int i = 0; i < viewers; i++) {
    const gint64 t0 = g_get_monotonic_time ();
    HttpReply r = c.create_session ("viewer-" + std::to_string (i), "consultant", "scope-a");
    if (r.status != 201 || r.str ("rtsp_url") != rtsp + r.str ("id")) {
      std::fprintf (stderr, "session %d: %d %s\n", i, r.status, r.body.c_str ());
      s.failed++;
      continue;
    }
    ids.push_back (r.str ("id"));
    players.push_back (
        std::make_unique<RtspPlayer> (rtsp + r.str ("id"), r.str ("id"), r.str ("token"), "tcp", false));
    if (players.back ()->wait_frames (1, 30))
      s.start_ms.push_back ((g_get_monotonic_time () - t0) / 1000.0);
    else
      s.failed++;
  }
  const int a_worker = a.worker_pid ("scope-a");
  const double bytes0 = metric_of (a, "livemicro_relay_out_bytes_total");
  const double a0 = livemicro::bench::cpu_seconds (a.pid ()) + livemicro::bench::cpu_seconds (a_worker);
  const double c0 = livemicro::bench::cpu_seconds (c.pid ());
  const gint64 t0 = g_get_monotonic_time ();
  g_usleep ((gulong)(seconds * 1e6));
  const double dt = (g_get_monotonic_time () - t0) / 1e6;
  s.relay_bytes_s = (metric_of (a, "livemicro_relay_out_bytes_total") - bytes0) / dt;
  s.a_cpu_pct
      = 100 * (livemicro::bench::cpu_seconds (a.pid ()) + livemicro::bench::cpu_seconds (a_worker) - a0) / dt;
  s.c_cpu_pct = 100 * (livemicro::bench::cpu_seconds (c.pid ()) - c0) / dt;
  players.clear ();
  for (const auto &id : ids)
    c.request ("DELETE", "/api/v1/sessions/" + id);
  // The relay goes with the last far session.
  for (int i = 0; i < 100 && metric_of (a, "livemicro_relay_out_callers") > 0; i++)
    g_usleep (100000);
  return s;
}

} // namespace

// main: the runs, their table and JSON.  Long by nature: printing and JSON
// that read better in one place than split.
int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  int runs = 3;
  std::string json_path = "bench-edge-cloud.json";
  if (auto status = livemicro::bench::parse_options (
          argc, argv, "bench-edge-cloud [--runs N=3] [--json FILE=bench-edge-cloud.json]",
          {{"--runs", &runs, 1}}, {{"--json", &json_path}}))
    return *status;
  if (!livemicro::bench::etcd_or_skip ())
    return 77;
  double load_start[3] = {}, load_end[3] = {};
  getloadavg (load_start, 3);
  const std::vector<int> steps = {1, 5, 20};
  std::map<int, std::vector<Step>> results;
  for (int run = 0; run < runs; run++) {
    EtcdCluster etcd (1);
    if (!etcd.start ()) {
      std::fprintf (stderr, "etcd did not start\n");
      return 1;
    }
    Daemon a (livemicro::bench::kHomeNode);
    livemicro::bench::join (a, etcd, "node-a", "lab");
    Daemon c (R"({"cluster": {"etcd": [")" + etcd.endpoint (0) + R"("], "node": "node-c", "site": "far"},
                  "microscopes": []})");
    if (!a.start () || !c.start ()) {
      std::fprintf (stderr, "a node did not start: %s %s\n", a.error ().c_str (), c.error ().c_str ());
      return 1;
    }
    // Both nodes see each other and scope-a's home (placement reads the
    // site from A's view).
    if (!livemicro::bench::wait_for_cluster ({&a, &c}, 1)) {
      std::fprintf (stderr, "the nodes do not see each other\n");
      return 1;
    }
    for (int n : steps) {
      Step s = measure (a, c, n, 5);
      std::printf (
          "run %d: %2d viewers at C: start p50 %.0f ms p95 %.0f ms, A->C %.1f kB/s, A %.0f%% C %.0f%%, "
          "%d failed\n",
          run + 1, n, livemicro::bench::percentile (s.start_ms, 0.5),
          livemicro::bench::percentile (s.start_ms, 0.95), s.relay_bytes_s / 1000, s.a_cpu_pct, s.c_cpu_pct,
          s.failed);
      std::fflush (stdout);
      results[n].push_back (std::move (s));
    }
  }
  getloadavg (load_end, 3);

  auto med = [&] (int n, auto field) { return livemicro::bench::median_of (results[n], field); };
  const double one_stream = med (1, [] (const Step &s) { return s.relay_bytes_s; });
  std::printf (
      "\nEdge cloud: viewers at a remote site (node C) of a microscope homed on node A, median of %d runs\n"
      "(load average %.2f at the start, %.2f at the end; 640x360 at 15 fps, 800 kbit/s)\n\n",
      runs, load_start[0], load_end[0]);
  std::printf ("%8s %14s %14s %16s %9s %9s %12s %12s\n", "viewers", "A->C kB/s", "per viewer",
               "one per viewer", "A cpu %", "C cpu %", "start p50", "start p95");
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, "meson test -C build --benchmark --suite bench edge-cloud -v");
  json_builder_set_member_name (b, "load_average");
  json_builder_begin_array (b);
  json_builder_add_double_value (b, load_start[0]);
  json_builder_add_double_value (b, load_end[0]);
  json_builder_end_array (b);
  json_builder_set_member_name (b, "steps");
  json_builder_begin_array (b);
  for (int n : steps) {
    const double bytes = med (n, [] (const Step &s) { return s.relay_bytes_s; });
    const double a_cpu = med (n, [] (const Step &s) { return s.a_cpu_pct; });
    const double c_cpu = med (n, [] (const Step &s) { return s.c_cpu_pct; });
    std::vector<double> starts;
    int failed = 0;
    for (const auto &s : results[n]) {
      starts.insert (starts.end (), s.start_ms.begin (), s.start_ms.end ());
      failed += s.failed;
    }
    const double p50 = livemicro::bench::percentile (starts, 0.5),
                 p95 = livemicro::bench::percentile (starts, 0.95);
    std::printf ("%8d %14.1f %14.1f %16.1f %9.0f %9.0f %9.0f ms %9.0f ms%s\n", n, bytes / 1000,
                 bytes / 1000 / n, one_stream * n / 1000, a_cpu, c_cpu, p50, p95,
                 failed ? "  (some failed)" : "");
    json_builder_begin_object (b);
    auto num = [&b] (const char *k, double v) {
      json_builder_set_member_name (b, k);
      json_builder_add_double_value (b, v);
    };
    num ("viewers", n);
    num ("relay_bytes_per_s", bytes);
    num ("one_stream_per_viewer_bytes_per_s", one_stream * n);
    num ("home_cpu_pct", a_cpu);
    num ("serving_cpu_pct", c_cpu);
    num ("session_start_p50_ms", p50);
    num ("session_start_p95_ms", p95);
    num ("failed", failed);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  std::printf ("\n\"one per viewer\": what the link would carry with a stream per viewer (N x the 1-viewer "
               "figure).\n");
  livemicro::bench::write_json (b, json_path);
  return 0;
}
