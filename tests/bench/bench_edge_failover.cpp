// bench-edge-failover: how long a pathologist's browser goes without video
// when the node serving it dies, and what each serving node of a site adds.
//
// Real etcd members and livemicrod processes on 127.0.0.1; a home node A
// (site "lab", one virtual microscope, 640x360 at 15 fps) and serving nodes
// at site "far" with no microscope of their own.
//
// Part 1, failover (3 etcd members, A, B, C): one consultant session placed
// at "far"; headless Chromium plays it from its node.  The node serving the
// page is killed (SIGKILL: no goodbye, its lease lapses by itself); the gap
// runs from the kill until the page decodes frames again on the other node
// of its site (polled every 100 ms through the DevTools protocol, so ±0.1
// s).  The killed node is started again and the next kill waits until the
// page knows it again.  --kills N (20).
//
// Part 2, serving nodes (1 etcd member): for 1, 2 and 3 serving nodes, V
// RTSP viewers (--viewers, 24) each with its own session asked for site
// "far" (placed by load), played by rtspsrc in this process for 10 s: the
// CPU of each serving node (daemon) and of A (daemon + worker), viewers
// per node, CPU per viewer on a serving node and on A, what A sends to the
// serving nodes (livemicro_relay_out_bytes_total) per viewer, and the
// viewers that kept >= 95 % of 15 fps.  All nodes share this machine's two
// cores, so the viewer capacity of a node is read as CPU per viewer (what
// one core would hold), not as a count: the 2-core machine hides the gain
// in capacity itself (three nodes here are three processes on the same two
// cores).  --runs N (3); medians.
//
//   meson test -C build --benchmark --suite bench edge-failover -v
//   build/tests/bench/bench-edge-failover [--kills N=20] [--viewers V=24] [--runs N=3]
//       [--json FILE=bench-edge-failover.json]
#include "../orchestrator/cdp.h"
#include "bench_cluster.h"
#include "bench_util.h"

#include <cstdio>
#include <cstdlib>
#include <map>

using livemicro::test::ChromiumPage;
using livemicro::test::Daemon;
using livemicro::test::EtcdCluster;
using livemicro::test::HttpReply;
using livemicro::test::RtspPlayer;

namespace {

using livemicro::bench::join;
using livemicro::bench::kHomeNode;

const char *kServing = R"({"microscopes": []})";

HttpReply
far_session (const Daemon &a, const std::string &user)
{
  return a.request ("POST", "/api/v1/sessions",
                    R"({"user":")" + user + R"(","role":"consultant","microscope":"scope-a","site":"far"})");
}

// ---- part 1

struct Failover {
  std::vector<double> gaps_s;
  int failed = 0;
  int same_site = 0; // frames again from the other node of the page's site (else the home node)
};

Failover
failovers (int kills)
{
  Failover out;
  EtcdCluster etcd (3);
  if (!etcd.start ()) {
    std::fprintf (stderr, "etcd did not start\n");
    out.failed = kills;
    return out;
  }
  Daemon a (kHomeNode), b (kServing), c (kServing);
  join (a, etcd, "node-a", "lab");
  join (b, etcd, "node-b", "far");
  join (c, etcd, "node-c", "far");
  if (!a.start () || !b.start () || !c.start () || !livemicro::bench::wait_for_cluster ({&a, &b, &c}, 1)) {
    std::fprintf (stderr, "the nodes did not start: %s %s %s\n", a.error ().c_str (), b.error ().c_str (),
                  c.error ().c_str ());
    out.failed = kills;
    return out;
  }
  HttpReply s = far_session (a, "pat");
  if (s.status != 201) {
    std::fprintf (stderr, "session: %d %s\n", s.status, s.body.c_str ());
    out.failed = kills;
    return out;
  }
  ChromiumPage page (s.str ("viewer_url"));
  if (!page.connected () || !page.wait_true ("window.livemicro && window.livemicro.framesDecoded > 5", 60)) {
    std::fprintf (stderr, "the page did not play\n");
    out.failed = kills;
    return out;
  }
  for (int k = 0; k < kills; k++) {
    const std::string port = page.evaluate ("location.port");
    Daemon &serving = port == "\"" + std::to_string (b.http_port ()) + "\"" ? b : c;
    Daemon &other = &serving == &b ? c : b;
    const std::string killed_port = std::to_string (serving.http_port ());
    const gint64 killed = g_get_monotonic_time ();
    serving.kill ();
    const bool again = page.wait_true (
        "location.port !== '" + killed_port + "' && window.livemicro.framesDecoded > 0", 30);
    const bool same_site
        = page.evaluate ("location.port") == "\"" + std::to_string (other.http_port ()) + "\"";
    const double gap = double (g_get_monotonic_time () - killed) / G_USEC_PER_SEC;
    if (again)
      out.gaps_s.push_back (gap);
    else
      out.failed++;
    if (!again)
      std::fprintf (stderr, "the page: %s\n",
                    page.evaluate ("JSON.stringify({at: location.href, nodes: window.livemicro.nodes, "
                                   "conn: document.getElementById('conn').textContent, "
                                   "frames: window.livemicro.framesDecoded})")
                        .c_str ());
    out.same_site += again && same_site;
    std::printf ("kill %2d: %s, %s %.2f s%s\n", k + 1, &serving == &b ? "node-b" : "node-c",
                 again ? "frames again after" : "NO frames again within", gap,
                 again && !same_site ? " (from the home node)" : "");
    std::fflush (stdout);
    // Back, and known to the page at its new address, before the next kill;
    // the page plays from a node of its site again.
    const bool back = serving.start ()
                      && page.wait_true ("window.livemicro.nodes.some((n) => n.url.endsWith(':"
                                             + std::to_string (serving.http_port ()) + "'))",
                                         20);
    if (back && !same_site) {
      // It went on at the home node: send it back to its site (as the
      // kill before this one left it) so every kill starts alike.
      page.evaluate ("location.replace('http://127.0.0.1:" + std::to_string (serving.http_port ())
                     + "' + location.pathname + location.hash)");
    }
    if (!back || !page.wait_true ("window.livemicro.framesDecoded > 5", 20)) {
      std::fprintf (stderr, "the killed node did not come back: %s\n", serving.error ().c_str ());
      out.failed += kills - k - 1;
      break;
    }
  }
  return out;
}

// ---- part 2

struct Spread {
  int serving_nodes = 0, viewers = 0, held = 0, failed = 0;
  double relay_bytes_s = 0;              // A → all serving nodes
  double home_cpu_pct = 0;               // A: daemon + worker
  std::vector<double> node_cpu_pct;      // each serving node's daemon
  std::vector<int> node_viewers;         // viewers each serves
  double serving_cpu_per_viewer_pct = 0; // over all serving nodes
};

Spread
spread (int serving_nodes, int viewers, double seconds)
{
  Spread out;
  out.serving_nodes = serving_nodes;
  out.viewers = viewers;
  EtcdCluster etcd (1);
  if (!etcd.start ()) {
    out.failed = viewers;
    return out;
  }
  Daemon a (kHomeNode);
  join (a, etcd, "node-a", "lab");
  std::vector<std::unique_ptr<Daemon>> nodes;
  for (int i = 0; i < serving_nodes; i++) {
    nodes.push_back (std::make_unique<Daemon> (kServing));
    join (*nodes.back (), etcd, "serving-" + std::to_string (i + 1), "far");
  }
  bool up = a.start ();
  std::vector<const Daemon *> all = {&a};
  for (auto &n : nodes) {
    up = up && n->start ();
    all.push_back (n.get ());
  }
  if (!up || !livemicro::bench::wait_for_cluster (all, 1)) {
    out.failed = viewers;
    return out;
  }
  std::map<int, int> by_port; // RTSP port → serving node index
  for (int i = 0; i < serving_nodes; i++)
    by_port[nodes[i]->rtsp_port ()] = i;
  out.node_viewers.assign (serving_nodes, 0);
  std::vector<std::unique_ptr<RtspPlayer>> players;
  for (int v = 0; v < viewers; v++) {
    HttpReply s = far_session (a, "viewer-" + std::to_string (v));
    const std::string url = s.str ("rtsp_url");
    const size_t colon = url.find (':', 7), slash = url.find ('/', 7);
    const int port = colon != std::string::npos && slash != std::string::npos
                         ? std::atoi (url.substr (colon + 1, slash - colon - 1).c_str ())
                         : 0;
    if (s.status != 201 || !by_port.count (port)) {
      std::fprintf (stderr, "session %d: %d %s\n", v, s.status, s.body.c_str ());
      out.failed++;
      continue;
    }
    out.node_viewers[by_port[port]]++;
    players.push_back (std::make_unique<RtspPlayer> (url, s.str ("id"), s.str ("token"), "tcp", false));
    if (!players.back ()->wait_frames (1, 30)) {
      std::fprintf (stderr, "viewer %d at %s: %s\n", v, url.c_str (), players.back ()->error ().c_str ());
      out.failed++;
    }
  }
  const int worker = a.worker_pid ("scope-a");
  auto relay_bytes = [&] {
    return a.metric (R"(livemicro_relay_out_bytes_total{microscope="scope-a",profile="consultant"})");
  };
  std::vector<int> frames0;
  for (auto &p : players)
    frames0.push_back (p->frames ());
  const double bytes0 = relay_bytes ();
  const double a0 = livemicro::bench::cpu_seconds (a.pid ()) + livemicro::bench::cpu_seconds (worker);
  std::vector<double> n0;
  for (auto &n : nodes)
    n0.push_back (livemicro::bench::cpu_seconds (n->pid ()));
  const gint64 t0 = g_get_monotonic_time ();
  g_usleep ((gulong)(seconds * 1e6));
  const double dt = (g_get_monotonic_time () - t0) / 1e6;
  out.relay_bytes_s = (relay_bytes () - bytes0) / dt;
  out.home_cpu_pct
      = 100 * (livemicro::bench::cpu_seconds (a.pid ()) + livemicro::bench::cpu_seconds (worker) - a0) / dt;
  double serving_cpu = 0;
  for (size_t i = 0; i < nodes.size (); i++) {
    out.node_cpu_pct.push_back (100 * (livemicro::bench::cpu_seconds (nodes[i]->pid ()) - n0[i]) / dt);
    serving_cpu += out.node_cpu_pct.back ();
  }
  for (size_t i = 0; i < players.size (); i++)
    out.held += (players[i]->frames () - frames0[i]) / dt >= 0.95 * 15;
  const int served = viewers - out.failed;
  out.serving_cpu_per_viewer_pct = served > 0 ? serving_cpu / served : 0;
  return out;
}

} // namespace

// main: the two parts, their table and JSON.  Long by nature: printing and
// JSON that read better in one place than split.
int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  int runs = 3, kills = 20, viewers = 24;
  std::string json_path = "bench-edge-failover.json";
  if (auto status = livemicro::bench::parse_options (
          argc, argv,
          "bench-edge-failover [--kills N=20] [--viewers V=24] [--runs N=3] [--json "
          "FILE=bench-edge-failover.json]",
          {{"--runs", &runs, 0}, {"--kills", &kills, 0}, {"--viewers", &viewers, 1}},
          {{"--json", &json_path}}))
    return *status;
  if (!livemicro::bench::etcd_or_skip ())
    return 77;
  double load_start[3] = {}, load_end[3] = {};
  getloadavg (load_start, 3);

  Failover f;
  if (kills > 0 && ChromiumPage::available ())
    f = failovers (kills);
  else if (kills > 0)
    std::printf ("failover part skipped: chromium is not installed\n");

  std::map<int, std::vector<Spread>> spreads;
  for (int run = 0; run < runs; run++)
    for (int n : {1, 2, 3}) {
      Spread s = spread (n, viewers, 10);
      std::printf ("run %d: %d serving node(s), %d viewers: held %d, A->nodes %.1f kB/s, A %.0f%%, serving "
                   "%.2f%%/viewer, %d failed\n",
                   run + 1, n, viewers, s.held, s.relay_bytes_s / 1000, s.home_cpu_pct,
                   s.serving_cpu_per_viewer_pct, s.failed);
      std::fflush (stdout);
      spreads[n].push_back (std::move (s));
    }
  getloadavg (load_end, 3);

  std::printf (
      "\nEdge cloud failover and serving nodes (load average %.2f at the start, %.2f at the end)\n\n",
      load_start[0], load_end[0]);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  auto num = [&b] (const char *k, double v) {
    json_builder_set_member_name (b, k);
    json_builder_add_double_value (b, v);
  };
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, "meson test -C build --benchmark --suite bench edge-failover -v");
  livemicro::bench::add_load_average (b, load_start, load_end);
  if (!f.gaps_s.empty () || f.failed) {
    const double p50 = livemicro::bench::percentile (f.gaps_s, 0.5),
                 p95 = livemicro::bench::percentile (f.gaps_s, 0.95);
    const double worst = f.gaps_s.empty () ? NAN : *std::max_element (f.gaps_s.begin (), f.gaps_s.end ());
    std::printf ("Failover of a browser viewer (kill the serving node -> frames again on another node of "
                 "its site), %zu kills:\n  p50 %.2f s, p95 %.2f s, worst %.2f s, %d without frames again, "
                 "%d from the other node of its site\n\n",
                 f.gaps_s.size () + f.failed, p50, p95, worst, f.failed, f.same_site);
    json_builder_set_member_name (b, "failover");
    json_builder_begin_object (b);
    num ("kills", (double)(f.gaps_s.size () + f.failed));
    num ("gap_p50_s", p50);
    num ("gap_p95_s", p95);
    num ("gap_worst_s", worst);
    num ("no_frames_again", f.failed);
    num ("from_the_same_site", f.same_site);
    json_builder_set_member_name (b, "gaps_s");
    json_builder_begin_array (b);
    for (double g : f.gaps_s)
      json_builder_add_double_value (b, g);
    json_builder_end_array (b);
    json_builder_end_object (b);
  }
  auto med = [&] (int n, auto field) { return livemicro::bench::median_of (spreads[n], field); };
  if (runs == 0) {
    json_builder_end_object (b);
    livemicro::bench::write_json (b, json_path);
    return f.failed > 0 ? 1 : 0;
  }
  std::map<int, double> total_cpu; // all serving nodes' CPU, % of a core
  std::printf (
      "%d RTSP viewers (640x360, 15 fps, consultant view) over 1-3 serving nodes, median of %d runs:\n",
      viewers, runs);
  std::printf ("%8s %6s %16s %14s %16s %16s %14s\n", "serving", "held", "A->nodes kB/s", "per viewer",
               "serving cpu %", "per node %", "A cpu %");
  json_builder_set_member_name (b, "serving_nodes");
  json_builder_begin_array (b);
  for (int n : {1, 2, 3}) {
    const double held = med (n, [] (const Spread &s) { return (double)s.held; });
    const double bytes = med (n, [] (const Spread &s) { return s.relay_bytes_s; });
    const double cpv = med (n, [] (const Spread &s) { return s.serving_cpu_per_viewer_pct; });
    const double home = med (n, [] (const Spread &s) { return s.home_cpu_pct; });
    const double failed = med (n, [] (const Spread &s) { return (double)s.failed; });
    total_cpu[n] = cpv * viewers;
    std::printf ("%8d %6.0f %16.1f %14.1f %16.2f %16.2f %14.1f%s\n", n, held, bytes / 1000,
                 bytes / 1000 / viewers, cpv * viewers, cpv * viewers / n, home,
                 failed > 0 ? "  (some failed)" : "");
    json_builder_begin_object (b);
    num ("serving_nodes", n);
    num ("viewers", viewers);
    num ("viewers_held_95pct_fps", held);
    num ("relay_bytes_per_s", bytes);
    num ("relay_bytes_per_s_per_viewer", bytes / viewers);
    num ("serving_cpu_pct_per_viewer", cpv);
    num ("home_cpu_pct", home);
    num ("home_cpu_pct_per_viewer", home / viewers);
    num ("serving_cpu_pct_total", cpv * viewers);
    num ("failed", failed);
    json_builder_set_member_name (b, "viewers_per_node_last_run");
    json_builder_begin_array (b);
    for (int v : spreads[n].back ().node_viewers)
      json_builder_add_int_value (b, v);
    json_builder_end_array (b);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  // The same viewers over 1, 2, 3 nodes: total = nodes x fixed + viewers x
  // marginal.  The slope over the node count is what a node costs before
  // its first viewer (the relay in, its timers, etcd); the rest is the
  // viewers'.  A node's capacity is one core's worth of viewers at that
  // cost, the same for the first node and every one added.
  const double fixed = (total_cpu[3] - total_cpu[1]) / 2;
  const double marginal = (total_cpu[1] - fixed) / viewers;
  const double per_core = marginal > 0 ? (100 - fixed) / marginal : NAN;
  std::printf ("\nA serving node costs %.2f %% of a core before its first viewer and %.3f %% per viewer: one "
               "core would hold %.0f viewers per node\n(each node added holds as many as the first; the home "
               "node sends one stream per view and serving node: \"A->nodes\").\n",
               fixed, marginal, per_core);
  num ("serving_node_fixed_cpu_pct", fixed);
  num ("serving_cpu_pct_per_viewer_marginal", marginal);
  num ("viewers_per_core_per_serving_node", per_core);
  json_builder_end_object (b);
  livemicro::bench::write_json (b, json_path);
  return f.failed > 0 ? 1 : 0;
}
