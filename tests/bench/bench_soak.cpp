// Soak: does a node give back what each session took?  1000 session cycles
// against a real livemicrod — each cycle creates a session (the four roles
// in turn), plays it over RTSP (TCP and UDP in turn), negotiates a WebRTC
// peer (webrtcbin in this process), opens an events socket, makes 10 more
// HTTP requests on a keep-alive client, and ends the session — then
// compares the daemon's and the worker's open descriptors, threads and
// resident memory with where they started.
//
//   meson test -C build --benchmark --suite bench soak -v
//   build/tests/bench/bench-soak [--cycles N=1000] [--clients rtsp,webrtc,events,http]
//       [--json FILE=bench-soak.json]
//
// Targets (issue 10): descriptors and threads back to their start value,
// RSS growth ≤ 10 MB.  "Start" is after 20 warm-up cycles (first-use
// allocations: thread pools, codec state, plugin caches); the cold value is
// printed too.
#include "bench_util.h"
#include "daemon_process.h"
#include "events_client.h"
#include "webrtc_client.h"

#include <cstring>
#include <optional>

using livemicro::test::Daemon;
using livemicro::test::EventsClient;
using livemicro::test::HttpReply;
using livemicro::test::process_usage;
using livemicro::test::ProcessUsage;
using livemicro::test::RtspPlayer;
using livemicro::test::WebRtcClient;

namespace {

const char *kConfig = R"({
  "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 400},
  "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})";

struct Sample {
  int cycle;
  ProcessUsage daemon, worker;
};

// Which clients each cycle runs (--clients rtsp,webrtc,events,http; all by
// default): leaving one out tells which kind of client a growth comes with.
struct Clients {
  bool rtsp = true, webrtc = true, events = true, http = true;
};

struct Failures {
  int session = 0, rtsp = 0, webrtc = 0, events = 0, http = 0, ended = 0;
  int total () const { return session + rtsp + webrtc + events + http + ended; }
};

// One session, start to end, with every kind of client.  With
// LIVEMICRO_SOAK_VERBOSE set, one line per cycle says how long each step took.
void
cycle (Daemon &d, int i, const Clients &c, SoupSession *keep_alive, Failures &f, int &http_requests)
{
  static const char *kRoles[] = {"owner", "consultant", "trainee", "guest"};
  const char *role = kRoles[i % 4];
  std::vector<std::pair<const char *, gint64>> steps;
  gint64 at = g_get_monotonic_time ();
  auto step = [&] (const char *name) {
    gint64 now = g_get_monotonic_time ();
    steps.emplace_back (name, now - at);
    at = now;
  };
  HttpReply s = d.create_session ("soak" + std::to_string (i), role);
  if (s.status != 201) {
    f.session++;
    return;
  }
  const std::string id = s.str ("id"), token = s.str ("token");
  {
    std::optional<RtspPlayer> player;
    std::optional<WebRtcClient> peer;
    std::optional<EventsClient> events;
    if (c.rtsp)
      player.emplace (s.str ("rtsp_url"), id, token, i % 2 ? "udp" : "tcp", false);
    if (c.webrtc)
      peer.emplace (d.http_port (), id, token);
    if (c.events)
      events.emplace (d.http_port (), "demo", token);
    step ("start");
    if (player) {
      f.rtsp += !player->wait_frames (3, 10);
      if (player->frames () < 3 && f.rtsp == 1) // the first time: what the daemon says
        std::fprintf (stderr, "cycle %d: RTSP player got %d frames in 10 s (error: '%s'); session: %s\n", i,
                      player->frames (), player->error ().c_str (),
                      d.request ("GET", "/api/v1/sessions/" + id).body.c_str ());
    }
    step ("rtsp");
    if (peer)
      f.webrtc += !peer->wait_packets (3, 10);
    step ("webrtc");
    if (events)
      f.events += !events->wait_for (
          "welcome", [] (JsonObject *) { return true; }, 5);
    step ("events");
    // Ten more requests on a client that keeps connections alive if it can.
    for (int k = 0; c.http && k < 10; k++) {
      std::string url = "http://127.0.0.1:" + std::to_string (d.http_port ())
                        + (k % 2 ? "/healthz" : "/api/v1/sessions/" + id);
      g_autoptr (SoupMessage) msg = soup_message_new ("GET", url.c_str ());
      soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization",
                                    ("Bearer " + token).c_str ());
      g_autoptr (GBytes) body = soup_session_send_and_read (keep_alive, msg, nullptr, nullptr);
      f.http += soup_message_get_status (msg) != 200;
      http_requests++;
    }
    step ("http");
    if (d.request ("DELETE", "/api/v1/sessions/" + id).status != 204)
      f.ended++;
    step ("delete");
    // The player hears about it (BYE → EOS, or its connection closing).
    if (player) {
      player->wait_frames (1000000, 5);
      f.ended += player->error ().empty ();
    }
    step ("told");
  }
  step ("close");
  if (g_getenv ("LIVEMICRO_SOAK_VERBOSE")) {
    std::string line;
    for (auto &[name, us] : steps)
      line += std::string (" ") + name + " " + std::to_string (us / 1000) + " ms";
    std::fprintf (stderr, "cycle %d (%s):%s\n", i, role, line.c_str ());
  }
}

std::string
usage_line (const ProcessUsage &u)
{
  char line[128];
  std::snprintf (line, sizeof line, "%6d %7d %9.1f", u.fds, u.threads, u.rss_kb / 1024.0);
  return line;
}

} // namespace

// Long by nature: a benchmark read top to bottom (its options, the measured runs, the
// table and the JSON in the order they are printed); its steps are the functions above.
int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  int cycles = 1000, warmup = 20;
  std::string json_path = "bench-soak.json";
  Clients clients;
  std::string clients_text = "rtsp,webrtc,events,http";
  if (auto status = livemicro::bench::parse_options (
          argc, argv,
          "bench-soak [--cycles N=1000] [--clients rtsp,webrtc,events,http] [--json FILE=bench-soak.json]",
          {{"--cycles", &cycles, 1}},
          {{"--json", &json_path}, {"--clients", &clients_text, "rtsp|webrtc|events|http", true}}))
    return *status;
  const std::string l = "," + clients_text + ",";
  clients = {l.find (",rtsp,") != l.npos, l.find (",webrtc,") != l.npos, l.find (",events,") != l.npos,
             l.find (",http,") != l.npos};
  Daemon d (kConfig);
  if (!d.start ()) {
    std::fprintf (stderr, "livemicrod did not start: %s\n", d.error ().c_str ());
    return 1;
  }
  g_autoptr (SoupSession) keep_alive = soup_session_new_with_options ("timeout", 20, nullptr);
  Failures warm_failures, f;
  int http_requests = 0;
  const ProcessUsage cold_daemon = process_usage (d.pid ()), cold_worker = process_usage (d.worker_pid ());
  for (int i = 0; i < warmup && d.running (); i++)
    cycle (d, i, clients, keep_alive, warm_failures, http_requests);
  if (!d.running ()) {
    std::fprintf (stderr, "livemicrod died during the warm-up:\n%s\n", d.log ().c_str ());
    return 1;
  }
  g_usleep (2000000);
  std::vector<Sample> samples;
  samples.push_back ({0, process_usage (d.pid ()), process_usage (d.worker_pid ())});
  double load_start[3] = {0, 0, 0};
  getloadavg (load_start, 3);
  std::printf ("soak: %d session cycles with clients %s (RTSP tcp/udp in turn, WebRTC, events, 10 "
               "keep-alive requests), load average %.2f at start\n",
               cycles, clients_text.c_str (), load_start[0]);
  std::printf ("%8s | %-24s | %-24s\n", "", "livemicrod", "livemicro-worker");
  std::printf ("%8s | %6s %7s %9s | %6s %7s %9s\n", "cycle", "fds", "threads", "RSS MB", "fds", "threads",
               "RSS MB");
  std::printf ("%8s | %s | %s\n", "cold", usage_line (cold_daemon).c_str (),
               usage_line (cold_worker).c_str ());
  std::printf ("%8s | %s | %s\n", "start", usage_line (samples[0].daemon).c_str (),
               usage_line (samples[0].worker).c_str ());
  std::fflush (stdout);
  gint64 t0 = g_get_monotonic_time ();
  for (int i = 1; i <= cycles; i++) {
    cycle (d, warmup + i, clients, keep_alive, f, http_requests);
    if (!d.running ()) {
      std::fprintf (stderr, "livemicrod died in cycle %d:\n%s\n", i, d.log ().c_str ());
      return 1;
    }
    if (i % 250 == 0 || i == cycles) {
      g_usleep (2000000); // teardown on other threads finishes
      samples.push_back ({i, process_usage (d.pid ()), process_usage (d.worker_pid ())});
      std::printf ("%8d | %s | %s   (%.0f s)\n", i, usage_line (samples.back ().daemon).c_str (),
                   usage_line (samples.back ().worker).c_str (), (g_get_monotonic_time () - t0) / 1e6);
      std::fflush (stdout);
    }
  }
  double load_end[3] = {0, 0, 0};
  getloadavg (load_end, 3);
  const Sample &a = samples.front (), &z = samples.back ();
  const bool fds_back = z.daemon.fds <= a.daemon.fds && z.worker.fds <= a.worker.fds;
  const bool threads_back = z.daemon.threads <= a.daemon.threads && z.worker.threads <= a.worker.threads;
  const double rss_growth_mb = std::max (z.daemon.rss_kb - a.daemon.rss_kb, 0L) / 1024.0;
  const double worker_rss_growth_mb = std::max (z.worker.rss_kb - a.worker.rss_kb, 0L) / 1024.0;
  std::printf ("\nfailures: session %d, rtsp %d, webrtc %d, events %d, http %d (of %d requests), "
               "players not told of the end %d\n",
               f.session, f.rtsp, f.webrtc, f.events, f.http, http_requests, f.ended);
  std::printf ("fds back to start: %s; threads back to start: %s; RSS growth daemon %.1f MB, worker %.1f MB "
               "(target ≤ 10 MB); load average %.2f at the end\n",
               fds_back ? "yes" : "NO", threads_back ? "yes" : "NO", rss_growth_mb, worker_rss_growth_mb,
               load_end[0]);

  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, "meson test -C build --benchmark --suite bench soak -v");
  json_builder_set_member_name (b, "cycles");
  json_builder_add_int_value (b, cycles);
  json_builder_set_member_name (b, "clients");
  json_builder_add_string_value (b, clients_text.c_str ());
  json_builder_set_member_name (b, "load_average");
  json_builder_begin_array (b);
  json_builder_add_double_value (b, load_start[0]);
  json_builder_add_double_value (b, load_end[0]);
  json_builder_end_array (b);
  json_builder_set_member_name (b, "samples");
  json_builder_begin_array (b);
  for (const Sample &s : samples) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "cycle");
    json_builder_add_int_value (b, s.cycle);
    for (auto [name, u] :
         {std::pair<const char *, const ProcessUsage *>{"daemon", &s.daemon}, {"worker", &s.worker}}) {
      json_builder_set_member_name (b, name);
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "fds");
      json_builder_add_int_value (b, u->fds);
      json_builder_set_member_name (b, "threads");
      json_builder_add_int_value (b, u->threads);
      json_builder_set_member_name (b, "rss_kb");
      json_builder_add_int_value (b, u->rss_kb);
      json_builder_end_object (b);
    }
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "failures");
  json_builder_add_int_value (b, f.total ());
  json_builder_set_member_name (b, "http_requests");
  json_builder_add_int_value (b, http_requests);
  json_builder_set_member_name (b, "fds_back");
  json_builder_add_boolean_value (b, fds_back);
  json_builder_set_member_name (b, "threads_back");
  json_builder_add_boolean_value (b, threads_back);
  json_builder_set_member_name (b, "daemon_rss_growth_mb");
  json_builder_add_double_value (b, rss_growth_mb);
  json_builder_set_member_name (b, "worker_rss_growth_mb");
  json_builder_add_double_value (b, worker_rss_growth_mb);
  json_builder_end_object (b);
  livemicro::bench::write_json (b, json_path);
  return fds_back && threads_back && rss_growth_mb <= 10 && f.total () == 0 ? 0 : 1;
}
