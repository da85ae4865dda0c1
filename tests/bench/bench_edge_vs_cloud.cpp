// bench-edge-vs-cloud: the edge against the cloud under an emulated WAN
// (docs/evaluation.md).  Root only: it makes its own network namespaces
// (netns_sites.h) and deletes them again, also on a failure or a signal.
//
// Sites: the microscope site (home node with the virtual microscope and the
// etcd member; an edge node on its LAN), a cloud node and the pathologist
// behind the WAN.  This process is the pathologist: it moves itself into the
// pathologist's namespace before anything else.  Per WAN profile:
//   1. image processing: a lossless field (a MoNuSeg tile) from the home
//      node analysed by tumorfeatures on the edge node or on the cloud node,
//      the processed image sent to the pathologist: time to first processed
//      image;
//   2. video: a consultant view (analysis, privacy mask, overlay, H.264)
//      processed at the home node and served by the edge node through the
//      edge cloud's relay ("edge"), or a mezzanine of the raw field sent over
//      SRT to the cloud node and processed there ("cloud"): session start,
//      glass-to-glass p50/p95, WAN bytes per minute, frames lost;
//   3. control: a stage move sent to the serving node until the first frame
//      at the target reaches the pathologist (control-to-photon).
// Median of --runs runs (default 3); the load average is printed.
//
//   tests/bench/edge-vs-cloud [--quick] [--profiles metro,national] [--runs N]
//   bench-edge-vs-cloud [--quick (--profiles national --runs 1)]
//       [--profiles metro,national,intercontinental] [--runs N=3] [--seconds S=15]
//       [--placement edge|cloud (both)] [--json FILE=bench-edge-vs-cloud.json]
//   meson test -C build --benchmark --suite bench edge-vs-cloud -v
#include "../orchestrator/daemon_process.h"
#include "bench_util.h"
#include "etcd_cluster.h"
#include "field_wire.h"
#include "netns_sites.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <thread>

using livemicro::bench::Sites;
using livemicro::bench::WanProfile;
using livemicro::test::HttpReply;

namespace {

const char *kAdmin = livemicro::test::Daemon::kAdminToken;
constexpr int kWidth = 960, kHeight = 540, kFps = 15;
constexpr int kViewKbps = 1000;       // the view the pathologist gets, both placements
constexpr int kMezzanineKbps = 12000; // the cloud placement's raw video, home -> cloud

struct Options {
  std::vector<WanProfile> profiles
      = {{"metro", 10, 100, 0}, {"national", 40, 50, 0.1}, {"intercontinental", 150, 20, 0.5}};
  int runs = 3;
  double video_s = 15;
  int moves = 8;
  std::vector<std::string> placements = {"edge", "cloud"};
  std::string json = "bench-edge-vs-cloud.json", field, helper, pipelines, work;
};

// ---- HTTP and RTSP from the pathologist's site ------------------------------

HttpReply
http (const std::string &host, const std::string &method, const std::string &path,
      const std::string &body = "", const std::string &token = kAdmin)
{
  return livemicro::test::http_request (method, "http://" + host + ":8080" + path, body, token);
}

struct Frame {
  gint64 arrival_unix_us, capture_unix_us;
  double x_um, y_um;
};

// rtspsrc ! depay ! h264parse ! avdec_h264 ! fakesink: every decoded frame
// with its capture time and stage position (SEI), at the time it left the
// decoder.
class Player {
public:
  Player (const std::string &url, const std::string &user, const std::string &password)
  {
    const std::string desc
        = "rtspsrc latency=0 protocols=tcp location=\"" + url + "\""
          + (user.empty () ? "" : " user-id=\"" + user + "\" user-pw=\"" + password + "\"")
          + " ! rtph264depay name=depay ! video/x-h264,stream-format=byte-stream,alignment=au ! h264parse"
            " ! avdec_h264 ! fakesink name=sink sync=false signal-handoffs=true";
    pipeline_ = gst_parse_launch (desc.c_str (), nullptr);
    g_autoptr (GstElement) depay = gst_bin_get_by_name (GST_BIN (pipeline_), "depay");
    g_autoptr (GstPad) pad = gst_element_get_static_pad (depay, "src");
    gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, on_access_unit, this, nullptr);
    g_autoptr (GstElement) sink = gst_bin_get_by_name (GST_BIN (pipeline_), "sink");
    g_signal_connect (sink, "handoff", G_CALLBACK (on_frame), this);
    gst_element_set_state (pipeline_, GST_STATE_PLAYING);
  }
  ~Player ()
  {
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    gst_object_unref (pipeline_);
  }
  std::vector<Frame> frames () const
  {
    std::lock_guard<std::mutex> lock (mutex_);
    return frames_;
  }
  size_t count () const
  {
    std::lock_guard<std::mutex> lock (mutex_);
    return frames_.size ();
  }
  bool wait (const std::function<bool (const Frame &)> &want, double timeout_s, gint64 *at = nullptr) const
  {
    gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
    size_t seen = 0;
    while (g_get_monotonic_time () < deadline) {
      {
        std::lock_guard<std::mutex> lock (mutex_);
        for (; seen < frames_.size (); seen++)
          if (want (frames_[seen])) {
            if (at)
              *at = frames_[seen].arrival_unix_us;
            return true;
          }
      }
      g_usleep (2000);
    }
    return false;
  }

private:
  static GstPadProbeReturn on_access_unit (GstPad *, GstPadProbeInfo *info, gpointer data)
  {
    auto *self = static_cast<Player *> (data);
    GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
    GstMapInfo map;
    if (gst_buffer_map (b, &map, GST_MAP_READ)) {
      if (auto r = livemicro::orchestrator::h264::frame_record (map.data, map.size)) {
        std::lock_guard<std::mutex> lock (self->mutex_);
        self->pending_[GST_BUFFER_PTS (b)] = *r;
        while (self->pending_.size () > 64)
          self->pending_.erase (self->pending_.begin ());
      }
      gst_buffer_unmap (b, &map);
    }
    return GST_PAD_PROBE_OK;
  }
  static void on_frame (GstElement *, GstBuffer *b, GstPad *, gpointer data)
  {
    auto *self = static_cast<Player *> (data);
    const gint64 now = g_get_real_time ();
    std::lock_guard<std::mutex> lock (self->mutex_);
    auto it = self->pending_.find (GST_BUFFER_PTS (b));
    if (it == self->pending_.end ())
      return;
    self->frames_.push_back ({now, it->second.capture_unix_us, it->second.stage_x_um, it->second.stage_y_um});
    self->pending_.erase (it);
  }

  GstElement *pipeline_ = nullptr;
  mutable std::mutex mutex_;
  std::map<GstClockTime, livemicro::hw::FrameRecord> pending_;
  std::vector<Frame> frames_;
};

// ---- the nodes -------------------------------------------------------------

void
write_file (const std::string &path, const std::string &text)
{
  if (!g_file_set_contents (path.c_str (), text.c_str (), -1, nullptr))
    throw std::runtime_error ("cannot write " + path);
}

// The cloud placement's home node: the pipelines of the source tree, except
// that the capture runs no analysis and the consultant view is the camera's
// picture encoded at the mezzanine bitrate (no mask, no overlay): that is
// what the cloud node gets to process.
std::string
mezzanine_pipelines (const Options &o)
{
  const std::string dir = o.work + "/pipelines-mezzanine";
  Sites::run ("cp -r " + o.pipelines + " " + dir);
  write_file (dir + "/capture.pipeline",
              "microscopesrc name=scope microscope={uri}\n"
              "  ! video/x-raw,format=RGB,width={width},height={height},framerate={framerate}/1\n"
              "  ! tee name=capture allow-not-linked=true\n");
  write_file (dir + "/views/consultant.pipeline",
              "queue name=in leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0\n"
              "  ! {encoder}\n");
  return dir;
}

GSubprocess *
start_node (Sites &sites, const Options &o, const std::string &role, const std::string &site,
            const std::string &extra_config, int kbps)
{
  const std::string ip = Sites::address (role), dir = o.work + "/" + role;
  g_mkdir_with_parents (dir.c_str (), 0700);
  const std::string config
      = "{\"listen_address\": \"" + ip + "\", \"public_host\": \"" + ip
        + "\", \"http_port\": 8080, \"rtsp_port\": 8554, \"video\": {\"width\": " + std::to_string (kWidth)
        + ", \"height\": " + std::to_string (kHeight) + ", \"framerate\": " + std::to_string (kFps)
        + ", \"bitrate_kbps\": " + std::to_string (kbps)
        + "}"
        // In the file too: a node without microscopes is refused when only the
        // command line names the cluster (the file is checked first).  A lease
        // of 5 s: the cloud node renews it across the WAN (2 s lapsed under load).
        + ", \"cluster\": {\"etcd\": [\"http://10.77.1.2:2379\"], \"lease_ttl_s\": 5}" + extra_config + "}";
  write_file (dir + "/config.json", config);
  GSubprocess *p = sites.spawn (role,
                                {livemicro::test::livemicrod_path (), "--config", dir + "/config.json",
                                 "--state-dir", dir + "/state", "--cluster", "etcd=http://10.77.1.2:2379",
                                 "--node-name", "node-" + role, "--site", site},
                                dir + "/livemicrod.log");
  const bool up = livemicro::test::eventually (
      [&] {
        HttpReply r = http (ip, "GET", "/healthz", "", "");
        return r.status == 200 && r.body.find ("offline") == std::string::npos;
      },
      60);
  if (!up)
    throw std::runtime_error ("node-" + role + " did not start: see " + dir + "/livemicrod.log");
  return p;
}

// Waits for a line "ready" on a helper's stdout.
void
wait_ready (GSubprocess *p, const std::string &what)
{
  g_autoptr (GDataInputStream) in = g_data_input_stream_new (g_subprocess_get_stdout_pipe (p));
  g_filter_input_stream_set_close_base_stream (G_FILTER_INPUT_STREAM (in), FALSE);
  g_autofree char *line = g_data_input_stream_read_line (in, nullptr, nullptr, nullptr);
  if (!line || std::string (line) != "ready")
    throw std::runtime_error (what + " did not start");
}

} // namespace

namespace {

GSubprocess *
start_etcd (Sites &sites, const Options &o)
{
  const std::string data = o.work + "/etcd";
  GSubprocess *p = sites.spawn (
      "home",
      {"etcd", "--name", "m1", "--data-dir", data, "--listen-client-urls", "http://10.77.1.2:2379",
       "--advertise-client-urls", "http://10.77.1.2:2379", "--listen-peer-urls", "http://10.77.1.2:2380",
       "--initial-advertise-peer-urls", "http://10.77.1.2:2380", "--initial-cluster",
       "m1=http://10.77.1.2:2380", "--initial-cluster-state", "new"},
      o.work + "/etcd.log");
  auto healthy = [] {
    g_autoptr (SoupSession) s = soup_session_new_with_options ("timeout", 2, nullptr);
    g_autoptr (SoupMessage) m = soup_message_new ("GET", "http://10.77.1.2:2379/health");
    g_autoptr (GBytes) b = soup_session_send_and_read (s, m, nullptr, nullptr);
    return b && soup_message_get_status (m) == 200;
  };
  if (!livemicro::test::eventually (healthy, 30))
    throw std::runtime_error ("etcd did not start: see " + o.work + "/etcd.log");
  return p;
}

// ---- experiment 1: a field analysed at the edge or in the cloud --------------

struct FieldResult {
  double first_image_ms = -1; // the microscope starts sending -> the pathologist has the processed image
  double wan_bytes = 0;
  int nuclei = -1;
  size_t field_bytes = 0, image_bytes = 0;
};

// The pathologist's end: one processed image on port 9100.
class FieldReceiver {
public:
  FieldReceiver ()
  {
    socket_ = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, nullptr);
    g_autoptr (GInetAddress) any = g_inet_address_new_any (G_SOCKET_FAMILY_IPV4);
    g_autoptr (GSocketAddress) a = g_inet_socket_address_new (any, 9100);
    if (!g_socket_bind (socket_, a, TRUE, nullptr) || !g_socket_listen (socket_, nullptr))
      throw std::runtime_error ("cannot listen on port 9100");
    g_socket_set_timeout (socket_, 180);
  }
  ~FieldReceiver () { g_object_unref (socket_); }
  bool receive (livemicro::bench::field::Reply &reply)
  {
    g_autoptr (GSocket) s = g_socket_accept (socket_, nullptr, nullptr);
    if (!s)
      return false;
    g_socket_set_timeout (s, 180);
    g_autoptr (GSocketConnection) c = g_socket_connection_factory_create_connection (s);
    return livemicro::bench::field::read_reply (c, reply);
  }

private:
  GSocket *socket_ = nullptr;
};

FieldResult
send_field (Sites &sites, const Options &o, FieldReceiver &receiver, const std::string &analyser_role)
{
  FieldResult r;
  const double bytes0 = sites.wan_bytes ();
  GSubprocess *sender
      = sites.spawn ("home", {o.helper, "field-send", o.field, Sites::address (analyser_role), "9000"},
                     o.work + "/field-send.log");
  livemicro::bench::field::Reply reply;
  if (receiver.receive (reply)) {
    r.first_image_ms = (g_get_real_time () - reply.sent_unix_us) / 1000.0;
    r.nuclei = reply.nuclei;
    r.field_bytes = reply.field_bytes;
    r.image_bytes = reply.jpeg.size ();
  }
  g_subprocess_wait (sender, nullptr, nullptr);
  sites.stop (sender);
  r.wan_bytes = sites.wan_bytes () - bytes0;
  return r;
}

// ---- experiments 2 and 3: the live view -------------------------------------

struct VideoResult {
  double start_ms = -1, g2g_p50_ms = -1, g2g_p95_ms = -1, wan_bytes_per_min = -1;
  int frames = 0, frames_lost = 0;
  std::vector<double> control_ms; // one per stage move; -1: not seen within 5 s
};

// Glass to glass and frames lost over the frames captured in [from, to).
void
score_frames (const std::vector<Frame> &all, gint64 from, gint64 to, VideoResult &r)
{
  std::vector<double> g2g;
  std::set<gint64> captures;
  for (const auto &f : all)
    if (f.capture_unix_us >= from && f.capture_unix_us < to && captures.insert (f.capture_unix_us).second)
      g2g.push_back ((f.arrival_unix_us - f.capture_unix_us) / 1000.0);
  r.frames = (int)captures.size ();
  // The virtual microscope captures kFps frames a second, on a grid.
  r.frames_lost = std::max (0, (int)std::lround ((to - from) / 1e6 * kFps) - r.frames);
  // No frame in the window: no figure (-1, left out of the medians), not 0.
  r.g2g_p50_ms = g2g.empty () ? -1 : livemicro::bench::percentile (g2g, 0.5);
  r.g2g_p95_ms = g2g.empty () ? -1 : livemicro::bench::percentile (g2g, 0.95);
}

// Stage moves sent to the serving node; each until the first frame at its
// target reaches the pathologist.
void
control_to_photon (const std::string &serving, const std::string &owner, const Player &player, int moves,
                   VideoResult &r)
{
  const std::string base = "/api/v1/microscopes/scope-a";
  HttpReply lease = http (serving, "POST", base + "/control", R"({"action": "request"})", owner);
  HttpReply at = http (serving, "GET", base, "", owner);
  JsonObject *stage = at.object () ? json_object_get_object_member (at.object (), "stage") : nullptr;
  if (lease.status != 200 || !stage) {
    std::fprintf (stderr, "control: %d %s\n", lease.status, lease.body.c_str ());
    return;
  }
  const double x0 = json_object_get_double_member (stage, "x_um"),
               y0 = json_object_get_double_member (stage, "y_um");
  for (int i = 0; i < moves; i++) {
    const double x = x0 + (i % 2 == 0 ? 300 : 0);
    const gint64 t0 = g_get_real_time ();
    HttpReply moved = http (serving, "POST", base + "/commands",
                            "{\"lease\":\"" + lease.str ("lease") + "\",\"move\":{\"x_um\":"
                                + std::to_string (x) + ",\"y_um\":" + std::to_string (y0) + "}}",
                            owner);
    gint64 seen = 0;
    const bool ok
        = moved.status == 202
          && player.wait (
              [&] (const Frame &f) {
                return f.capture_unix_us > t0 && std::abs (f.x_um - x) < 1 && std::abs (f.y_um - y0) < 1;
              },
              5, &seen);
    r.control_ms.push_back (ok ? (seen - t0) / 1000.0 : -1);
    if (moved.status != 202)
      std::fprintf (stderr, "move: %d %s\n", moved.status, moved.body.c_str ());
    g_usleep (400000 + g_random_int_range (0, 70000)); // off the frame grid
  }
  http (serving, "POST", base + "/control",
        "{\"action\": \"release\", \"lease\": \"" + lease.str ("lease") + "\"}", owner);
}

// One session of the placement from the pathologist: create, play, measure,
// end.  `serving` is "edge" or "cloud".
VideoResult
watch (Sites &sites, const Options &o, const std::string &serving, const std::string &owner, int run)
{
  VideoResult r;
  const std::string ip = Sites::address (serving);
  gint64 t0 = 0;
  HttpReply s;
  // Placed on the serving node, or (its lease lapsed just then) elsewhere:
  // then ended and asked again, the clock restarted.
  for (int attempt = 0; attempt < 5; attempt++, g_usleep (3 * G_USEC_PER_SEC)) {
    t0 = g_get_real_time ();
    s = http (ip, "POST", "/api/v1/sessions",
              "{\"user\":\"pathologist-" + std::to_string (run)
                  + "\",\"role\":\"consultant\",\"microscope\":\"scope-a\",\"site\":\"" + serving
                  + "-site\"}");
    if (s.status == 201 && s.str ("rtsp_url").rfind ("rtsp://" + ip + ":", 0) == 0)
      break;
    std::fprintf (stderr, "session not placed on node-%s: %d %s\n", serving.c_str (), s.status,
                  s.body.c_str ());
    if (s.status == 201)
      http (ip, "DELETE", "/api/v1/sessions/" + s.str ("id"));
    s.status = 0;
  }
  if (s.status != 201)
    return r;
  GSubprocess *processor = nullptr;
  std::unique_ptr<Player> player;
  if (serving == "edge") {
    player = std::make_unique<Player> (s.str ("rtsp_url"), s.str ("id"), s.str ("token"));
  } else {
    // The cloud node pulls the mezzanine (its RTSP mount answers once it knows the session).
    livemicro::test::eventually (
        [&] {
          std::string m = http (ip, "GET", "/metrics", "", "").body;
          return m.find ("livemicro_relay_in_connected{microscope=\"scope-a\",profile=\"consultant\"} 1")
                 != std::string::npos;
        },
        20);
    processor = sites.spawn ("cloud",
                             {"env", "GST_DEBUG=2", o.helper, "cloud-process", s.str ("rtsp_url"),
                              s.str ("id"), s.str ("token"), "8600", std::to_string (kViewKbps)},
                             o.work + "/cloud-process-" + std::to_string (run) + ".log", true);
    wait_ready (processor, "cloud-process");
    player = std::make_unique<Player> ("rtsp://" + ip + ":8600/view", "", "");
  }
  gint64 first = 0;
  if (player->wait ([] (const Frame &) { return true; }, 30, &first)) {
    r.start_ms = (first - t0) / 1000.0;
    g_usleep (2000000); // past the start
    const double bytes0 = sites.wan_bytes ();
    const gint64 from = g_get_real_time ();
    g_usleep ((gulong)(o.video_s * 1e6));
    const gint64 to = g_get_real_time ();
    r.wan_bytes_per_min = (sites.wan_bytes () - bytes0) * 60e6 / (to - from);
    g_usleep (2500000); // the window's last frames reach the pathologist
    score_frames (player->frames (), from, to, r);
    if (r.frames == 0) // a failed session: its bytes are not a viewer's
      r.wan_bytes_per_min = -1;
    control_to_photon (ip, owner, *player, o.moves, r);
  } else {
    std::fprintf (stderr, "no frame within 30 s at the pathologist (%s)\n", serving.c_str ());
  }
  player.reset ();
  sites.stop (processor);
  http (ip, "DELETE", "/api/v1/sessions/" + s.str ("id"));
  g_usleep (1500000); // the relay goes with the session
  return r;
}

} // namespace

namespace {

struct Placement {
  std::vector<FieldResult> field;
  std::vector<VideoResult> video;
};
using Results = std::map<std::string, std::map<std::string, Placement>>; // profile -> placement

template <typename T, typename F>
double
median_of (const std::vector<T> &v, F field)
{
  std::vector<double> x;
  for (const auto &e : v)
    if (field (e) >= 0)
      x.push_back (field (e));
  return x.empty () ? -1 : livemicro::bench::median (x);
}

// Every stage move of every run; the ones never seen are counted apart.
std::vector<double>
control_samples (const Placement &p, int &missed)
{
  std::vector<double> all;
  missed = 0;
  for (const auto &v : p.video)
    for (double ms : v.control_ms)
      ms < 0 ? (void)missed++ : all.push_back (ms);
  return all;
}

void
print_run (const std::string &profile, const std::string &placement, int run, const VideoResult &v)
{
  std::vector<double> c;
  for (double ms : v.control_ms)
    if (ms >= 0)
      c.push_back (ms);
  std::printf (
      "  %s/%s run %d: start %.0f ms, g2g p50 %.0f p95 %.0f ms, WAN %.2f MB/min, %d frames (%d lost), "
      "control p50 %.0f p95 %.0f ms (%zu/%zu seen)\n",
      profile.c_str (), placement.c_str (), run + 1, v.start_ms, v.g2g_p50_ms, v.g2g_p95_ms,
      v.wan_bytes_per_min / 1e6, v.frames, v.frames_lost, livemicro::bench::percentile (c, 0.5),
      livemicro::bench::percentile (c, 0.95), c.size (), v.control_ms.size ());
  std::fflush (stdout);
}

// One placement: its nodes up, every profile's runs, its nodes down.
void
run_placement (Sites &sites, const Options &o, const std::string &placement, FieldReceiver &receiver,
               Results &results)
{
  const bool cloud = placement == "cloud";
  const std::string extra = cloud ? ", \"pipelines_dir\": \"" + mezzanine_pipelines (o) + "\"" : "";
  GSubprocess *home = start_node (sites, o, "home", "lab",
                                  extra + R"(, "microscopes": [{"id": "scope-a", "uri": "sim://synthetic"}])",
                                  cloud ? kMezzanineKbps : kViewKbps);
  GSubprocess *serving
      = start_node (sites, o, placement, placement + "-site", R"(, "microscopes": [])", kViewKbps);
  // The serving node knows the home node (it answers for its microscope).
  if (!livemicro::test::eventually (
          [&] {
            return http (Sites::address (placement), "GET", "/api/v1/microscopes/scope-a").status == 200;
          },
          30))
    throw std::runtime_error ("node-" + placement + " does not see scope-a's home node");
  // A node that joined across the WAN lost its first lease after one TTL and
  // joined again (seen in every run, docs/evaluation.md): past that first.
  g_usleep (8 * G_USEC_PER_SEC);
  HttpReply owner = http (Sites::address ("home"), "POST", "/api/v1/sessions",
                          R"({"user":"owner","role":"owner","microscope":"scope-a","site":"lab"})");
  for (const auto &p : o.profiles) {
    sites.set_wan (p);
    g_usleep (1000000);
    for (int run = 0; run < o.runs; run++) {
      if (placement == o.placements.front ()) // experiment 1 needs no node: interleaved here, once
        for (const char *where : {"edge", "cloud"}) {
          FieldResult f = send_field (sites, o, receiver, where);
          std::printf ("  %s/%s run %d: first processed image %.0f ms (field %zu B, image %zu B, %d nuclei, "
                       "WAN %.0f kB)\n",
                       p.name.c_str (), where, run + 1, f.first_image_ms, f.field_bytes, f.image_bytes,
                       f.nuclei, f.wan_bytes / 1e3);
          results[p.name][where].field.push_back (f);
        }
      VideoResult v = watch (sites, o, placement, owner.str ("token"), run);
      print_run (p.name, placement, run, v);
      results[p.name][placement].video.push_back (std::move (v));
    }
  }
  sites.stop (serving);
  sites.stop (home);
}

void
num (JsonBuilder *b, const char *key, double v)
{
  json_builder_set_member_name (b, key);
  json_builder_add_double_value (b, v);
}

// Medians of one placement under one profile, printed as a row and written.
void
report_placement (JsonBuilder *b, const WanProfile &p, const std::string &placement, const Placement &r,
                  const Options &o)
{
  const double first = median_of (r.field, [] (const FieldResult &f) { return f.first_image_ms; });
  const double field_wan = median_of (r.field, [] (const FieldResult &f) { return f.wan_bytes; });
  const double start = median_of (r.video, [] (const VideoResult &v) { return v.start_ms; });
  const double p50 = median_of (r.video, [] (const VideoResult &v) { return v.g2g_p50_ms; });
  const double p95 = median_of (r.video, [] (const VideoResult &v) { return v.g2g_p95_ms; });
  const double wan = median_of (r.video, [] (const VideoResult &v) { return v.wan_bytes_per_min; });
  const double lost = median_of (r.video, [] (const VideoResult &v) { return (double)v.frames_lost; });
  const double frames = median_of (r.video, [] (const VideoResult &v) { return (double)v.frames; });
  int missed = 0;
  const std::vector<double> control = control_samples (r, missed);
  const double c50 = livemicro::bench::percentile (control, 0.5),
               c95 = livemicro::bench::percentile (control, 0.95);
  std::printf ("%-17s %-6s %10.0f %10.0f %9.0f %9.0f %9.0f %9.0f %12.2f %7.0f/%-4.0f %6.0f\n",
               p.name.c_str (), placement.c_str (), first, start, p50, p95, c50, c95, wan / 1e6, lost,
               o.video_s * kFps, field_wan / 1e3);
  json_builder_set_member_name (b, placement.c_str ());
  json_builder_begin_object (b);
  num (b, "first_processed_image_ms", first);
  num (b, "field_wan_bytes", field_wan);
  num (b, "session_start_ms", start);
  num (b, "g2g_p50_ms", p50);
  num (b, "g2g_p95_ms", p95);
  num (b, "control_to_photon_p50_ms", c50);
  num (b, "control_to_photon_p95_ms", c95);
  num (b, "control_moves", (double)control.size ());
  num (b, "control_moves_not_seen", missed);
  num (b, "wan_bytes_per_min_per_viewer", wan);
  num (b, "frames_lost", lost);
  num (b, "frames_in_window", frames);
  json_builder_set_member_name (b, "runs");
  json_builder_begin_array (b);
  for (size_t i = 0; i < std::max (r.field.size (), r.video.size ()); i++) {
    json_builder_begin_object (b);
    if (i < r.field.size ())
      num (b, "first_processed_image_ms", r.field[i].first_image_ms), num (b, "nuclei", r.field[i].nuclei);
    if (i < r.video.size ()) {
      const VideoResult &v = r.video[i];
      num (b, "session_start_ms", v.start_ms), num (b, "g2g_p50_ms", v.g2g_p50_ms),
          num (b, "g2g_p95_ms", v.g2g_p95_ms);
      num (b, "wan_bytes_per_min", v.wan_bytes_per_min), num (b, "frames_lost", v.frames_lost);
      json_builder_set_member_name (b, "control_to_photon_ms");
      json_builder_begin_array (b);
      for (double ms : v.control_ms)
        json_builder_add_double_value (b, ms);
      json_builder_end_array (b);
    }
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
}

void
report (const Options &o, const Results &results, bool netem, const double load_start[3],
        const double load_end[3])
{
  std::printf (
      "\nEdge versus cloud under an emulated WAN: median of %d runs (load average %.2f at the start, %.2f "
      "at the end, 2 cores)\n%dx%d at %d fps; view %d kbit/s; the cloud gets a %d kbit/s mezzanine\n"
      "WAN: delay and loss by a user-space TUN relay (kernel sch_netem: %s), rate by tc tbf\n\n",
      o.runs, load_start[0], load_end[0], kWidth, kHeight, kFps, kViewKbps, kMezzanineKbps,
      netem ? "present, not used" : "absent");
  std::printf ("%-17s %-6s %10s %10s %9s %9s %9s %9s %12s %12s %6s\n", "WAN", "placed", "1st image", "start",
               "g2g p50", "g2g p95", "ctl p50", "ctl p95", "WAN MB/min", "lost/captured", "fld kB");
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (
      b, "tests/bench/edge-vs-cloud (meson test -C build --benchmark --suite bench edge-vs-cloud -v)");
  json_builder_set_member_name (b, "wan_emulation");
  json_builder_add_string_value (
      b, "delay and loss: user-space TUN relay (edge-vs-cloud-helper wan); rate: tc tbf");
  json_builder_set_member_name (b, "kernel_has_netem");
  json_builder_add_boolean_value (b, netem);
  livemicro::bench::add_load_average (b, load_start, load_end);
  num (b, "runs", o.runs), num (b, "width", kWidth), num (b, "height", kHeight), num (b, "fps", kFps);
  num (b, "view_kbps", kViewKbps), num (b, "mezzanine_kbps", kMezzanineKbps),
      num (b, "video_window_s", o.video_s);
  json_builder_set_member_name (b, "profiles");
  json_builder_begin_array (b);
  for (const auto &p : o.profiles) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "name");
    json_builder_add_string_value (b, p.name.c_str ());
    num (b, "rtt_ms", p.rtt_ms), num (b, "rate_mbit", p.rate_mbit), num (b, "loss_pct", p.loss_pct);
    for (const char *placement : {"edge", "cloud"})
      if (results.count (p.name) && results.at (p.name).count (placement))
        report_placement (b, p, placement, results.at (p.name).at (placement), o);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  std::printf (
      "\n1st image: the home node starts sending the lossless field -> the pathologist has the processed "
      "image (experiment 1).\nstart: POST /api/v1/sessions at the serving node -> first decoded frame. ctl: "
      "a stage move sent to the serving node -> first frame at the target decoded (all runs' moves).\n"
      "WAN MB/min: both directions of the WAN during the video window, one viewer. lost/captured: frames "
      "captured in the window that never reached the pathologist.\n");
  for (const auto &p : o.profiles) {
    if (!results.count (p.name))
      continue;
    const auto &r = results.at (p.name);
    auto ratio = [&] (auto field, const auto &pick) {
      const double e = r.count ("edge") ? median_of (pick (r.at ("edge")), field) : -1;
      const double c = r.count ("cloud") ? median_of (pick (r.at ("cloud")), field) : -1;
      return e > 0 && c > 0 ? c / e : -1.0;
    };
    std::printf (
        "%s: cloud / edge time to first processed image x%.1f; cloud / edge WAN bytes per minute of video "
        "x%.1f\n",
        p.name.c_str (),
        ratio ([] (const FieldResult &f) { return f.first_image_ms; },
               [] (const Placement &x) { return x.field; }),
        ratio ([] (const VideoResult &v) { return v.wan_bytes_per_min; },
               [] (const Placement &x) { return x.video; }));
  }
  livemicro::bench::write_json (b, o.json);
}

// Reads the command line into `o`: the status main returns at once when
// the benchmark is not to run (livemicro::bench::parse_options).
std::optional<int>
parse_options (int argc, char **argv, Options &o)
{
  std::string only, placement;
  int runs = 0; // not given
  bool quick = false;
  if (auto status = livemicro::bench::parse_options (
          argc, argv,
          "bench-edge-vs-cloud [--quick (--profiles national --runs 1)] "
          "[--profiles metro,national,intercontinental] [--runs N=3] [--seconds S=15] "
          "[--placement edge|cloud (both)] [--json FILE=bench-edge-vs-cloud.json]",
          {{"--runs", &runs, 1}},
          {{"--json", &o.json},
           {"--profiles", &only, "metro|national|intercontinental", true},
           {"--placement", &placement, "edge|cloud"}},
          {{"--seconds", &o.video_s, 3}}, {{"--quick", &quick}}))
    return status;
  if (quick && only.empty ())
    only = "national";
  o.runs = runs ? runs : quick ? 1 : o.runs;
  if (!placement.empty ())
    o.placements = {placement};
  if (const char *env = g_getenv ("LIVEMICRO_EVAL_PROFILES"))
    only = env;
  if (!only.empty ()) {
    std::vector<WanProfile> kept;
    for (const auto &p : o.profiles)
      if (("," + only + ",").find ("," + p.name + ",") != std::string::npos)
        kept.push_back (p);
    o.profiles = kept;
  }
  g_autofree char *self = g_file_read_link ("/proc/self/exe", nullptr);
  g_autofree char *dir = g_path_get_dirname (self);
  o.helper = std::string (dir) + "/edge-vs-cloud-helper";
  o.pipelines = PIPELINES_DIR;
  const char *testdata = g_getenv ("LIVEMICRO_TESTDATA");
  o.field = std::string (testdata ? testdata : "") + "/monuseg/TCGA-B0-5710-01Z-00-DX1.png";
  return std::nullopt;
}

// The field of experiment 1: the MoNuSeg tile (1000x1000, 0.252 um/px,
// lossless PNG), else a 1000x1000 field of the virtual microscope at 40x.
double
prepare_field (Options &o)
{
  if (g_file_test (o.field.c_str (), G_FILE_TEST_EXISTS))
    return 0.252;
  o.field = o.work + "/field.png";
  Sites::run ("gst-launch-1.0 -q microscopesrc objective=40 num-buffers=1 is-live=false"
              " ! video/x-raw,format=RGB,width=1000,height=1000 ! pngenc ! filesink location="
              + o.field);
  return 0.25;
}

void
block_signals (sigset_t &set)
{
  sigemptyset (&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT})
    sigaddset (&set, s);
  pthread_sigmask (SIG_BLOCK, &set, nullptr);
}

void
enter_namespace (const std::string &name)
{
  const int fd = open (("/run/netns/" + name).c_str (), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns (fd, CLONE_NEWNET) < 0)
    throw std::runtime_error ("cannot enter " + name);
  close (fd);
}

} // namespace

int
main (int argc, char **argv)
{
  Options o;
  if (auto status = parse_options (argc, argv, o))
    return *status;
  if (geteuid () != 0 || !g_find_program_in_path ("ip") || !g_find_program_in_path ("tc")
      || !livemicro::test::etcd_available ()) {
    std::printf ("SKIP: needs root, ip, tc and etcd (it makes network namespaces)\n");
    return 77;
  }
  sigset_t signals;
  block_signals (signals); // every thread from here on inherits it
  std::thread ([signals] {
    int sig = 0;
    sigwait (&signals, &sig);
    std::fprintf (stderr, "\nedge-vs-cloud: signal %d, removing the namespaces\n", sig);
    Sites::emergency_cleanup ();
    _exit (128 + sig);
  }).detach ();
  const char *prefix = g_getenv ("LIVEMICRO_EVAL_PREFIX");
  g_setenv ("LIVEMICRO_ADMIN_TOKEN", kAdmin, TRUE); // every node of the edge cloud shares it
  g_autofree char *work = g_dir_make_tmp ("edge-vs-cloud-XXXXXX", nullptr);
  o.work = work;
  int status = 0;
  try {
    Sites sites (prefix ? prefix : "lmev" + std::to_string (getpid ()), o.helper);
    sites.log_dir_ = o.work;
    std::printf ("namespaces %s*, logs in %s\n", sites.ns ("").c_str (), o.work.c_str ());
    sites.create ();
    const bool netem = sites.kernel_has_netem ();
    sites.set_wan (o.profiles.at (0));
    enter_namespace (sites.ns ("path")); // the pathologist, from here on
    gst_init (&argc, &argv);
    double load_start[3] = {}, load_end[3] = {};
    getloadavg (load_start, 3);
    const std::string um_per_px = std::to_string (prepare_field (o));
    for (const char *role : {"edge", "cloud"})
      wait_ready (
          sites.spawn (role, {o.helper, "field-analyse", "9000", Sites::address ("path"), "9100", um_per_px},
                       o.work + "/field-analyse-" + role + ".log", true),
          std::string ("field-analyse on ") + role);
    FieldReceiver receiver;
    start_etcd (sites, o);
    Results results;
    for (const auto &placement : o.placements)
      run_placement (sites, o, placement, receiver, results);
    getloadavg (load_end, 3);
    report (o, results, netem, load_start, load_end);
  } catch (const std::exception &e) {
    std::fprintf (stderr, "edge-vs-cloud: %s (logs in %s)\n", e.what (), o.work.c_str ());
    status = 1;
  }
  if (status == 0 && !g_getenv ("LIVEMICRO_EVAL_KEEP_LOGS"))
    Sites::run ("rm -rf " + o.work);
  return status;
}
