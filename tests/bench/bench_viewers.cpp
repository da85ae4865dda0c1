// Viewers per node against the honest baseline, run on purpose:
//   meson test -C build --benchmark --suite bench viewers -v
//   build/tests/bench/bench-viewers [--runs N=3] [--max-viewers N=240] [--seconds S=5] [--keep-going]
//       [--clients light|rtspsrc] [--servers both|livemicrod|baseline] [--json FILE=bench-viewers.json]
//
// Each run ramps RTSP viewers over the four view profiles (owner,
// consultant, guest, trainee; 1280x720 at 30 fps, the demo microscope
// sim://synthetic) against two servers on this machine, one after the other
// (the order alternates between runs):
//   - livemicrod: each viewer its own session (POST /api/v1/sessions), so
//     its own mount, Digest credentials and RTSP session;
//   - the baseline: a bare gst-rtsp-server (this program, re-run as
//     `bench-viewers baseline-server` in its own process) with ONE shared
//     factory per profile, fed by the same pipeline from the same templates
//     (pipelines/capture.pipeline → tee → views/<profile>.pipeline with
//     encoders/h264.pipeline): capture, analysis, masks and overlays, and one
//     encoder per profile, whose access units go to each factory's appsrc.
// A step holds when every viewer received ≥ 95 % of 30 frames per second
// over the measured seconds; the ramp stops at the first step that fails
// (with --keep-going it measures every step up to --max-viewers).
// The clients are all in this process and count frames without
// depayloading or decoding (an RTP packet with the marker bit ends one);
// their own CPU is reported (it shares the two cores with the servers).
// With --clients light (the default) the first viewer of each profile is an
// rtspsrc player over TCP and the others the load generator of
// rtsp_load_client.h (the same RTSP sessions over TCP, one thread for all);
// with --clients rtspsrc every viewer is an rtspsrc player, as before.
// Reported per step: the slowest and the median viewer's fps, the CPU of the
// server processes (daemon, worker; baseline) and of the clients, the
// server's threads, and the worker's CPU by thread name: its view branches
// (each branch's streaming thread, "in:src": mask, overlay, conversion,
// encoder), the analysis ("tumorfeatures") and the capture ("scope:src").
// Prints each run and the median of the runs, with the load average.
// Targets (issue 12): ≥ 150 viewers; livemicrod within 10 % of the
// baseline's viewer count.
#include "bench_util.h"
#include "daemon_process.h"
#include "rtsp_load_client.h"
#include "shared_feed.h"

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/rtsp-server/rtsp-server.h>
#include <gst/video/video.h>
#include <glib-unix.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <mutex>
#include <vector>

using livemicro::bench::feed_factory;
using livemicro::bench::view_producer;
using livemicro::bench::ViewFeed;
using livemicro::test::Daemon;
using livemicro::test::HttpReply;
using livemicro::test::process_usage;

namespace {

const char *const kProfiles[] = {"owner", "consultant", "guest", "trainee"};
constexpr int kFps = 30;

const char *kConfig = R"({
  "video": {"width": 1280, "height": 720, "framerate": 30, "bitrate_kbps": 2500, "keyframe_interval": 30},
  "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})";

// ---- the baseline server (its own process; shared_feed.h) ----

// `bench-viewers baseline-server`: prints "PORT N" once it serves, runs
// until its standard input closes.
int
serve_baseline (int client_threads)
{
  std::vector<std::unique_ptr<ViewFeed>> feeds;
  GstElement *producer = view_producer (PIPELINES_DIR, {std::begin (kProfiles), std::end (kProfiles)}, feeds);
  if (!producer)
    return 1;
  GstRTSPServer *server = gst_rtsp_server_new ();
  gst_rtsp_server_set_address (server, "127.0.0.1");
  gst_rtsp_server_set_service (server, "0");
  gst_rtsp_server_set_backlog (server, 1024);
  GstRTSPThreadPool *pool = gst_rtsp_server_get_thread_pool (server);
  gst_rtsp_thread_pool_set_max_threads (pool, client_threads);
  g_object_unref (pool);
  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points (server);
  for (size_t i = 0; i < feeds.size (); i++)
    gst_rtsp_mount_points_add_factory (mounts, (std::string ("/") + kProfiles[i]).c_str (),
                                       feed_factory (feeds[i].get ()));
  g_object_unref (mounts);
  // A player joining the shared media starts at a keyframe asked for now
  // (as livemicrod does).
  static std::vector<std::unique_ptr<ViewFeed>> *all = &feeds;
  g_signal_connect (server, "client-connected", G_CALLBACK (+[] (GstRTSPServer *, GstRTSPClient *c) {
                      g_signal_connect (
                          c, "play-request", G_CALLBACK (+[] (GstRTSPClient *, GstRTSPContext *ctx) {
                            for (size_t i = 0; i < all->size (); i++)
                              if (ctx->uri && g_str_has_prefix (ctx->uri->abspath + 1, kProfiles[i]))
                                (*all)[i]->keyframe ();
                          }),
                          nullptr);
                    }),
                    nullptr);
  gst_rtsp_server_attach (server, nullptr);
  gst_element_set_state (producer, GST_STATE_PLAYING);
  GMainLoop *loop = g_main_loop_new (nullptr, FALSE);
  g_unix_fd_add (
      0, (GIOCondition)(G_IO_IN | G_IO_HUP | G_IO_ERR),
      [] (gint fd, GIOCondition, gpointer l) -> gboolean {
        char buf[64];
        if (read (fd, buf, sizeof buf) <= 0) {
          g_main_loop_quit (static_cast<GMainLoop *> (l));
          return G_SOURCE_REMOVE;
        }
        return G_SOURCE_CONTINUE;
      },
      loop);
  std::printf ("PORT %d\n", gst_rtsp_server_get_bound_port (server));
  std::fflush (stdout);
  g_main_loop_run (loop);
  gst_element_set_state (producer, GST_STATE_NULL);
  gst_object_unref (producer);
  g_object_unref (server);
  return 0;
}

// ---- the clients (this process) ----

// A player that counts frames: rtspsrc over TCP into a fakesink, an RTP
// packet with the marker bit being the last of a frame.
class RtspsrcViewer {
public:
  RtspsrcViewer (const std::string &url, const std::string &user, const std::string &pw)
  {
    std::string desc = "rtspsrc latency=0 protocols=tcp location=\"" + url + "\""
                       + (user.empty () ? "" : " user-id=\"" + user + "\" user-pw=\"" + pw + "\"")
                       + " ! fakesink name=sink sync=false async=false";
    pipeline_ = gst_parse_launch (desc.c_str (), nullptr);
    GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline_), "sink");
    GstPad *pad = gst_element_get_static_pad (sink, "sink");
    gst_pad_add_probe (
        pad, (GstPadProbeType)(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST),
        [] (GstPad *, GstPadProbeInfo *info, gpointer d) {
          auto *self = static_cast<RtspsrcViewer *> (d);
          auto count = [self] (GstBuffer *b) {
            guint8 second = 0;
            if (gst_buffer_extract (b, 1, &second, 1) == 1 && (second & 0x80))
              self->frames_++;
          };
          if (info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST) {
            GstBufferList *l = GST_PAD_PROBE_INFO_BUFFER_LIST (info);
            for (guint i = 0; i < gst_buffer_list_length (l); i++)
              count (gst_buffer_list_get (l, i));
          } else {
            count (GST_PAD_PROBE_INFO_BUFFER (info));
          }
          return GST_PAD_PROBE_OK;
        },
        this, nullptr);
    gst_object_unref (pad);
    gst_object_unref (sink);
    gst_element_set_state (pipeline_, GST_STATE_PLAYING);
  }
  ~RtspsrcViewer ()
  {
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    gst_object_unref (pipeline_);
  }
  int frames () const { return frames_; }

private:
  GstElement *pipeline_;
  std::atomic<int> frames_{0};
};

// The viewers of one ramp.  With `players` (0 = all) the first `players`
// are rtspsrc players and the rest the load generator's viewers
// (rtsp_load_client.h): same sessions and packets on the server's side, a
// fraction of the clients' CPU.
class Viewers {
public:
  explicit Viewers (int players) : players_ (players) {}
  bool add (const std::string &url, const std::string &user, const std::string &pw, std::string &error)
  {
    if (players_ == 0 || (int)frames_.size () < players_) {
      auto *p = players_list_.emplace_back (std::make_unique<RtspsrcViewer> (url, user, pw)).get ();
      frames_.push_back ([p] { return p->frames (); });
      is_player_.push_back (true);
      return true;
    }
    if (!light_)
      light_ = std::make_unique<livemicro::bench::RtspLoadClients> ();
    int index = light_->add (url, user, pw, error);
    if (index < 0)
      return false;
    auto *l = light_.get ();
    frames_.push_back ([l, index] { return l->frames (index); });
    is_player_.push_back (false);
    return true;
  }
  size_t size () const { return frames_.size (); }
  int frames (size_t i) const { return frames_[i](); }
  bool is_player (size_t i) const { return is_player_[i]; }
  long long garbage_bytes () const { return light_ ? light_->garbage_bytes () : 0; }

private:
  int players_;
  std::vector<std::unique_ptr<RtspsrcViewer>> players_list_;
  std::unique_ptr<livemicro::bench::RtspLoadClients> light_;
  std::vector<std::function<int ()>> frames_;
  std::vector<bool> is_player_;
};

// A server under test: where its viewers connect and which processes serve.
class Server {
public:
  virtual ~Server () = default;
  virtual bool start (std::string &error) = 0;
  // The n-th viewer's URL and credentials (creating its session if needed).
  virtual bool viewer (int n, std::string &url, std::string &user, std::string &pw) = 0;
  virtual std::vector<int> pids () const = 0; // [0] is the RTSP server's process
  virtual std::string name () const = 0;
  // Frame counters of the media, by Prometheus sample name and labels (none
  // for the baseline).
  virtual std::map<std::string, double> frame_counters () const { return {}; }
};

class LivemicrodServer : public Server {
public:
  bool start (std::string &error) override
  {
    if (!d_.start ()) {
      error = d_.error ();
      return false;
    }
    return true;
  }
  bool viewer (int n, std::string &url, std::string &user, std::string &pw) override
  {
    HttpReply s = d_.create_session ("viewer" + std::to_string (n), kProfiles[n % 4]);
    if (s.status != 201)
      return false;
    url = s.str ("rtsp_url");
    user = s.str ("id");
    pw = s.str ("token");
    return true;
  }
  std::vector<int> pids () const override { return {d_.pid (), d_.worker_pid ()}; }
  std::string name () const override { return "livemicrod"; }
  std::map<std::string, double> frame_counters () const override
  {
    std::map<std::string, double> out;
    std::istringstream in (d_.metrics ());
    for (std::string line; std::getline (in, line);)
      for (const char *name : {"livemicro_capture_frames_total{", "livemicro_view_frames_total{",
                               "livemicro_view_dropped_frames_total{"})
        if (line.rfind (name, 0) == 0 && line.rfind (' ') != std::string::npos)
          out[line.substr (0, line.rfind (' '))] = std::atof (line.c_str () + line.rfind (' ') + 1);
    return out;
  }

private:
  Daemon d_{kConfig};
};

class BaselineServer : public Server {
public:
  explicit BaselineServer (std::string self) : self_ (std::move (self)) {}
  ~BaselineServer () override
  {
    if (!proc_)
      return;
    g_output_stream_close (g_subprocess_get_stdin_pipe (proc_), nullptr, nullptr); // it quits
    gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
    while (g_subprocess_get_identifier (proc_) && g_get_monotonic_time () < deadline)
      g_usleep (20000);
    if (g_subprocess_get_identifier (proc_))
      g_subprocess_force_exit (proc_);
    g_subprocess_wait (proc_, nullptr, nullptr);
    g_object_unref (proc_);
  }
  bool start (std::string &error) override
  {
    GError *e = nullptr;
    proc_ = g_subprocess_new (
        (GSubprocessFlags)(G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE), &e,
        self_.c_str (), "baseline-server", nullptr);
    if (!proc_) {
      error = e->message;
      g_error_free (e);
      return false;
    }
    g_autoptr (GDataInputStream) in = g_data_input_stream_new (g_subprocess_get_stdout_pipe (proc_));
    g_autofree char *line = g_data_input_stream_read_line (in, nullptr, nullptr, nullptr);
    if (!line || sscanf (line, "PORT %d", &port_) != 1) {
      error = "the baseline server did not start";
      return false;
    }
    return true;
  }
  bool viewer (int n, std::string &url, std::string &user, std::string &pw) override
  {
    url = "rtsp://127.0.0.1:" + std::to_string (port_) + "/" + kProfiles[n % 4];
    user.clear ();
    pw.clear ();
    return true;
  }
  std::vector<int> pids () const override
  {
    const char *id = proc_ ? g_subprocess_get_identifier (proc_) : nullptr;
    return {id ? atoi (id) : 0};
  }
  std::string name () const override { return "baseline"; }

private:
  std::string self_;
  GSubprocess *proc_ = nullptr;
  int port_ = 0;
};

struct Step {
  int viewers = 0;
  double slowest_fps = 0, median_fps = 0;
  double slowest_player_fps = 0; // of the rtspsrc players among them
  double fastest_fps = 0;        // above 30 fps: a client that miscounts
  double server_cpu_pct = 0;     // all its processes, % of one core
  double worker_cpu_pct = 0;     // livemicrod's worker alone (0 for the baseline)
  // The worker's view branches: their streaming threads (the leaky queue
  // "in" each starts: mask, overlay, conversion and encoder run there), how
  // many, and their CPU; -1: not known.
  int view_threads = -1;
  double views_cpu_pct = -1;
  std::string worker_threads; // its busiest thread names and their CPU
  double clients_cpu_pct = 0;
  int server_threads = 0; // the RTSP server's process
  bool ok = false;
  // livemicrod's own counters over the same seconds: frames captured, the
  // slowest view's frames received from the worker, frames the branches
  // dropped at their input (-1: not known).  The worker's counters (captured,
  // dropped) move once a second: over 5 s, one report more or less is ±6 fps.
  double captured_fps = -1, received_fps = -1, dropped_fps = -1;
  std::string dropped_most; // the labels of the branch that dropped most
};

struct Ramp {
  std::string server;
  int max_ok = 0;
  int threads_idle = 0; // the RTSP server's process before any viewer
  std::vector<Step> steps;
  std::string note;
};

// The media's frame rates between two readings of its counters.
void
media_rates (const std::map<std::string, double> &before, const std::map<std::string, double> &after,
             double dt, Step &s)
{
  if (before.empty () || after.empty ())
    return;
  double captured = 0, dropped = 0, received = 1e9, most = 0;
  for (const auto &[key, value] : after) {
    auto was = before.find (key);
    if (was == before.end ())
      continue;
    double rate = (value - was->second) / dt;
    if (key.rfind ("livemicro_capture_frames_total", 0) == 0)
      captured += rate;
    else if (key.rfind ("livemicro_view_frames_total", 0) == 0)
      received = std::min (received, rate);
    else {
      if (rate > 0 && rate > most) {
        most = rate;
        s.dropped_most = key.substr (key.find ('{'));
      }
      dropped += rate;
    }
  }
  s.captured_fps = captured;
  s.received_fps = received < 1e8 ? received : -1;
  s.dropped_fps = dropped;
}

// The worker's CPU by thread name over `dt` seconds: its view branches'
// threads ("in:src") and its busiest names.
void
worker_threads (const std::map<std::string, livemicro::bench::ThreadGroup> &before,
                const std::map<std::string, livemicro::bench::ThreadGroup> &after, double dt, Step &s)
{
  std::vector<std::pair<double, std::string>> busiest;
  for (const auto &[name, g] : after) {
    auto was = before.find (name);
    const double pct = 100.0 * (g.seconds - (was == before.end () ? 0 : was->second.seconds)) / dt;
    if (name == "in:src") {
      s.view_threads = g.threads;
      s.views_cpu_pct = pct;
    }
    busiest.emplace_back (pct, name + (g.threads > 1 ? " x" + std::to_string (g.threads) : ""));
  }
  std::sort (busiest.rbegin (), busiest.rend ());
  for (size_t i = 0; i < busiest.size () && i < 5; i++) {
    char part[96];
    std::snprintf (part, sizeof part, "%s%s %.1f %%", i ? ", " : "", busiest[i].second.c_str (),
                   busiest[i].first);
    s.worker_threads += part;
  }
}

// One step: the viewers' frame rates, the servers' and clients' CPU and
// livemicrod's frame counters over `seconds`, printed.
Step
measure_step (Server &server, const Viewers &viewers, double seconds)
{
  const std::string name = server.name ();
  std::vector<int> pids = server.pids ();
  std::vector<double> cpu0;
  for (int pid : pids)
    cpu0.push_back (livemicro::bench::cpu_seconds (pid));
  const auto threads0 = pids.size () > 1 ? livemicro::bench::thread_cpu_seconds (pids[1])
                                         : std::map<std::string, livemicro::bench::ThreadGroup> ();
  double self0 = livemicro::bench::cpu_seconds (getpid ());
  std::map<std::string, double> counters0 = server.frame_counters ();
  std::vector<int> f0;
  for (size_t i = 0; i < viewers.size (); i++)
    f0.push_back (viewers.frames (i));
  gint64 t0 = g_get_monotonic_time ();
  g_usleep ((gulong)(seconds * 1e6));
  double dt = (g_get_monotonic_time () - t0) / 1e6;
  Step s;
  media_rates (counters0, server.frame_counters (), dt, s);
  s.viewers = (int)viewers.size ();
  std::vector<double> fps;
  s.slowest_player_fps = 1e9;
  for (size_t i = 0; i < viewers.size (); i++) {
    fps.push_back ((viewers.frames (i) - f0[i]) / dt);
    if (viewers.is_player (i))
      s.slowest_player_fps = std::min (s.slowest_player_fps, fps.back ());
  }
  if (g_getenv ("BENCH_DEBUG"))
    for (size_t i = 0; i < fps.size (); i++)
      std::printf ("    viewer %zu (%s): %.1f fps\n", i, kProfiles[i % 4], fps[i]);
  s.slowest_fps = *std::min_element (fps.begin (), fps.end ());
  s.median_fps = livemicro::bench::median (fps);
  s.fastest_fps = *std::max_element (fps.begin (), fps.end ());
  if (s.slowest_player_fps > 1e8)
    s.slowest_player_fps = 0;
  for (size_t i = 0; i < pids.size (); i++) {
    double pct = 100.0 * (livemicro::bench::cpu_seconds (pids[i]) - cpu0[i]) / dt;
    s.server_cpu_pct += pct;
    if (i == 1)
      s.worker_cpu_pct = pct;
  }
  s.clients_cpu_pct = 100.0 * (livemicro::bench::cpu_seconds (getpid ()) - self0) / dt;
  if (pids.size () > 1)
    worker_threads (threads0, livemicro::bench::thread_cpu_seconds (pids[1]), dt, s);
  s.server_threads = process_usage (pids[0]).threads;
  // Bytes the load generator could not parse: it counted wrong, the step
  // does not hold.  A viewer faster than the source got frames late from
  // before the measured seconds (its stream was catching up): said, and the
  // frame-rate rule still decides.
  bool counted_right = viewers.garbage_bytes () == 0;
  s.ok = s.slowest_fps >= 0.95 * kFps && counted_right;
  const char *note = !counted_right                ? " (the load generator read bytes it could not parse)"
                     : s.fastest_fps > 1.05 * kFps ? " (streams catching up: frames late from before)"
                                                   : "";
  std::printf ("  %-10s %4d viewers: slowest %5.1f fps (of the rtspsrc players %5.1f), median %5.1f, "
               "fastest %5.1f; server %6.1f %% of a core (worker %5.1f), clients %6.1f %%; server threads "
               "%4d %s%s\n",
               name.c_str (), s.viewers, s.slowest_fps, s.slowest_player_fps, s.median_fps, s.fastest_fps,
               s.server_cpu_pct, s.worker_cpu_pct, s.clients_cpu_pct, s.server_threads, s.ok ? "ok" : "FAILS",
               note);
  if (s.captured_fps >= 0)
    std::printf (
        "  %-10s      worker: captured %5.1f fps, slowest view received %5.1f fps, dropped %4.1f fps%s%s\n",
        "", s.captured_fps, s.received_fps, s.dropped_fps, s.dropped_most.empty () ? "" : ", most by ",
        s.dropped_most.c_str ());
  if (s.view_threads > 0)
    std::printf (
        "  %-10s      worker's views: %d branches, %5.1f %% of a core (%4.1f %% each); threads: %s\n", "",
        s.view_threads, s.views_cpu_pct, s.views_cpu_pct / s.view_threads, s.worker_threads.c_str ());
  std::fflush (stdout);
  return s;
}

// Adds viewers step by step; stops at the first step that fails unless
// `keep_going` (then max_ok is still the last step before the first failure,
// and the later steps give CPU and threads per viewer at larger counts).
Ramp
ramp (Server &server, const std::vector<int> &targets, double settle_s, double seconds, bool keep_going,
      int players)
{
  Ramp r;
  r.server = server.name ();
  std::string error;
  if (!server.start (error)) {
    r.note = "did not start: " + error;
    return r;
  }
  g_usleep (2 * G_USEC_PER_SEC);
  r.threads_idle = process_usage (server.pids ()[0]).threads;
  Viewers viewers (players);
  int failed_before = 0;
  for (int target : targets) {
    while ((int)viewers.size () < target) {
      std::string url, user, pw;
      if (!server.viewer ((int)viewers.size (), url, user, pw) || !viewers.add (url, user, pw, error)) {
        r.note = "could not add viewer " + std::to_string (viewers.size ()) + ": " + error;
        return r;
      }
    }
    g_usleep ((gulong)(settle_s * 1e6));
    Step s = measure_step (server, viewers, seconds);
    r.steps.push_back (s);
    if (!s.ok && !keep_going)
      break;
    if (s.ok && failed_before == 0)
      r.max_ok = target;
    failed_before += s.ok ? 0 : 1;
  }
  return r;
}

// Threads the RTSP server's process adds per viewer beyond the first step
// (where every profile already has its media): from the first step to the
// largest.
double
threads_per_viewer_of (const Ramp &r)
{
  if (r.steps.size () < 2)
    return 0;
  const Step &a = r.steps.front (), &b = r.steps.back ();
  return (double)(b.server_threads - a.server_threads) / (b.viewers - a.viewers);
}

// The largest step measured, for the per-viewer figures (CPU and threads
// per viewer are measured whether the step held or not).
const Step *
largest (const Ramp &r)
{
  return r.steps.empty () ? nullptr : &r.steps.back ();
}

void
add_ramp_json (JsonBuilder *b, const Ramp &r)
{
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "server");
  json_builder_add_string_value (b, r.server.c_str ());
  json_builder_set_member_name (b, "max_viewers");
  json_builder_add_int_value (b, r.max_ok);
  json_builder_set_member_name (b, "threads_without_viewers");
  json_builder_add_int_value (b, r.threads_idle);
  if (!r.note.empty ()) {
    json_builder_set_member_name (b, "note");
    json_builder_add_string_value (b, r.note.c_str ());
  }
  json_builder_set_member_name (b, "steps");
  json_builder_begin_array (b);
  for (const Step &s : r.steps) {
    json_builder_begin_object (b);
    auto num = [b] (const char *k, double v) {
      json_builder_set_member_name (b, k);
      json_builder_add_double_value (b, v);
    };
    num ("viewers", s.viewers);
    num ("slowest_fps", s.slowest_fps);
    num ("median_fps", s.median_fps);
    num ("slowest_rtspsrc_player_fps", s.slowest_player_fps);
    num ("fastest_fps", s.fastest_fps);
    num ("captured_fps", s.captured_fps);
    num ("slowest_view_received_fps", s.received_fps);
    num ("dropped_fps", s.dropped_fps);
    num ("server_cpu_pct", s.server_cpu_pct);
    num ("worker_cpu_pct", s.worker_cpu_pct);
    num ("view_branches", s.view_threads);
    num ("views_cpu_pct", s.views_cpu_pct);
    num ("clients_cpu_pct", s.clients_cpu_pct);
    num ("server_threads", s.server_threads);
    json_builder_set_member_name (b, "ok");
    json_builder_add_boolean_value (b, s.ok);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
}

} // namespace

// main: the ramps of each run, their table and the medians.  Long by nature:
// ~90 lines of printing and JSON that read better in one place than split.
int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  if (argc > 1 && !strcmp (argv[1], "baseline-server"))
    return serve_baseline (2);
  int runs = 3, max_viewers = 240;
  bool keep_going = false;
  std::string clients = "light", servers = "both";
  double seconds = 5, settle = 3;
  std::string json_path = "bench-viewers.json";
  if (auto status = livemicro::bench::parse_options (
          argc, argv,
          "bench-viewers [--runs N=3] [--max-viewers N=240] [--seconds S=5] [--keep-going] "
          "[--clients light|rtspsrc] [--servers both|livemicrod|baseline] [--json FILE=bench-viewers.json]",
          {{"--runs", &runs, 1}, {"--max-viewers", &max_viewers, 4}},
          {{"--json", &json_path},
           {"--clients", &clients, "light|rtspsrc"},
           {"--servers", &servers, "both|livemicrod|baseline"}},
          {{"--seconds", &seconds, 1}}, {{"--keep-going", &keep_going}}))
    return *status;
  // light: one rtspsrc player per profile, the rest the load generator.
  const int players = clients == "light" ? 4 : 0;
  std::vector<int> targets;
  for (int t : {4, 40, 80, 120, 150, 180, 210, 240, 300, 360, 420, 480, 540, 600})
    if (t <= max_viewers)
      targets.push_back (t);
  g_autofree char *self = g_file_read_link ("/proc/self/exe", nullptr);
  double load_start[3] = {0, 0, 0}, load_end[3] = {0, 0, 0};
  getloadavg (load_start, 3);
  std::printf (
      "viewers per node: 1280x720@30, 4 view profiles, RTSP over TCP, a step holds when every viewer "
      "gets >= 95 %% of %d fps over %.0f s; clients: %s; %d runs; load average %.2f %.2f %.2f at the start\n",
      kFps, seconds,
      players ? "one rtspsrc player per profile, the rest the load generator" : "all rtspsrc players", runs,
      load_start[0], load_start[1], load_start[2]);
  std::vector<std::pair<Ramp, Ramp>> done; // livemicrod, baseline
  for (int k = 0; k < runs; k++) {
    std::printf ("run %d\n", k + 1);
    Ramp ours, base;
    auto run_ours = [&] {
      if (servers == "baseline")
        return;
      LivemicrodServer s;
      ours = ramp (s, targets, settle, seconds, keep_going, players);
    };
    auto run_base = [&] {
      if (servers == "livemicrod")
        return;
      BaselineServer s (self);
      base = ramp (s, targets, settle, seconds, keep_going, players);
    };
    if (k % 2 == 0) {
      run_ours ();
      run_base ();
    } else {
      run_base ();
      run_ours ();
    }
    done.push_back ({ours, base});
  }
  getloadavg (load_end, 3);

  // Per viewer, at each server's largest step: the RTSP server process's CPU
  // (livemicrod: the daemon alone; the baseline: its one process, pipeline
  // included), and the threads it adds per viewer after the first step.
  std::printf ("\n%-4s %10s %10s %7s %8s %13s %13s %13s %13s %13s\n", "run", "livemicrod", "baseline",
               "ratio", "viewers", "daemon %/v", "base srv %/v", "clients %/v", "daemon thr/v", "base thr/v");
  std::vector<double> lm, bl, ratio, daemon_per_viewer, threads_per_viewer, base_threads_per_viewer;
  for (size_t k = 0; k < done.size (); k++) {
    const Ramp &o = done[k].first, &b = done[k].second;
    const Step *s = largest (o), *t = largest (b);
    double r = b.max_ok ? (double)o.max_ok / b.max_ok : 0;
    double dpv = s ? (s->server_cpu_pct - s->worker_cpu_pct) / s->viewers : 0;
    double tpv = threads_per_viewer_of (o), btpv = threads_per_viewer_of (b);
    lm.push_back (o.max_ok);
    bl.push_back (b.max_ok);
    ratio.push_back (r);
    daemon_per_viewer.push_back (dpv);
    threads_per_viewer.push_back (tpv);
    base_threads_per_viewer.push_back (btpv);
    std::printf ("%-4zu %10d %10d %7.2f %8d %13.2f %13.2f %13.2f %13.3f %13.3f\n", k + 1, o.max_ok, b.max_ok,
                 r, s ? s->viewers : 0, dpv, t ? t->server_cpu_pct / t->viewers : 0,
                 s ? s->clients_cpu_pct / s->viewers : 0, tpv, btpv);
  }
  using livemicro::bench::median;
  std::printf ("%-4s %10.0f %10.0f %7.2f %8s %13.2f %13s %13s %13.3f %13.3f\n", "med", median (lm),
               median (bl), median (ratio), "", median (daemon_per_viewer), "", "",
               median (threads_per_viewer), median (base_threads_per_viewer));
  std::printf ("median of %d runs: livemicrod held %.0f viewers (target >= 150: %s), the baseline %.0f; "
               "livemicrod / baseline %.2f (target >= 0.90: %s); load average %.2f %.2f %.2f at the end\n",
               runs, median (lm), median (lm) >= 150 ? "met" : "NOT met", median (bl), median (ratio),
               median (ratio) >= 0.9 ? "met" : "NOT met", load_end[0], load_end[1], load_end[2]);

  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, "meson test -C build --benchmark --suite bench viewers -v");
  json_builder_set_member_name (b, "clients");
  json_builder_add_string_value (b, clients.c_str ());
  json_builder_set_member_name (b, "runs");
  json_builder_begin_array (b);
  for (auto &[o, base] : done) {
    json_builder_begin_array (b);
    add_ramp_json (b, o);
    add_ramp_json (b, base);
    json_builder_end_array (b);
  }
  json_builder_end_array (b);
  auto num = [&b] (const char *k, double v) {
    json_builder_set_member_name (b, k);
    json_builder_add_double_value (b, v);
  };
  json_builder_set_member_name (b, "median");
  json_builder_begin_object (b);
  num ("livemicrod_max_viewers", median (lm));
  num ("baseline_max_viewers", median (bl));
  num ("livemicrod_over_baseline", median (ratio));
  num ("daemon_cpu_pct_per_viewer", median (daemon_per_viewer));
  num ("daemon_threads_per_viewer", median (threads_per_viewer));
  num ("baseline_threads_per_viewer", median (base_threads_per_viewer));
  json_builder_end_object (b);
  livemicro::bench::add_load_average (b, load_start, load_end);
  json_builder_end_object (b);
  livemicro::bench::write_json (b, json_path);
  return 0;
}
