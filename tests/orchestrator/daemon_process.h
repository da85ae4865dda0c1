// Test and benchmark helpers: a real livemicrod process on 127.0.0.1 with
// free ports and its own state directory, an HTTP client (libsoup) and an
// RTSP client (rtspsrc).
#pragma once

#include "testutil.h"
#include "../../orchestrator/common/h264.h"

#include <gio/gio.h>
#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <execinfo.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace livemicro::test {

// In a child before exec: a test that crashes takes its daemons and etcd
// members with it instead of leaving them running.
inline void
die_with_parent (gpointer)
{
  prctl (PR_SET_PDEATHSIG, SIGTERM);
}

// A test process that aborts or crashes writes its backtrace to stderr
// before it dies (the libraries and offsets; names where exported): in CI
// it is otherwise only "killed by signal 6".  Installed once per process.
inline void
write_backtrace_and_die (int sig)
{
  static const char kHeader[] = "\n*** the test process got a fatal signal; its backtrace:\n";
  void *frames[64];
  const int n = backtrace (frames, 64);
  if (write (STDERR_FILENO, kHeader, sizeof kHeader - 1) > 0)
    backtrace_symbols_fd (frames, n, STDERR_FILENO);
  std::signal (sig, SIG_DFL);
  std::raise (sig);
}

inline const bool kBacktraceOnFatalSignal = [] {
  void *warm[1];
  backtrace (warm, 1); // loads libgcc now, not inside the handler
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL})
    std::signal (sig, write_backtrace_and_die);
  return true;
}();

inline std::string
livemicrod_path ()
{
  const char *p = std::getenv ("LIVEMICROD");
  return p ? p : "livemicrod";
}

struct HttpReply {
  int status = 0;
  std::string body;
  std::string content_type, location; // response headers
  JsonNode *json = nullptr;           // parsed body, owned
  HttpReply () = default;
  HttpReply (const HttpReply &) = delete;
  HttpReply (HttpReply &&o) noexcept
      : status (o.status), body (std::move (o.body)), content_type (std::move (o.content_type)),
        location (std::move (o.location)), json (o.json)
  {
    o.json = nullptr;
  }
  HttpReply &operator= (HttpReply &&o) noexcept
  {
    if (this != &o) {
      if (json)
        json_node_unref (json);
      status = o.status;
      body = std::move (o.body);
      content_type = std::move (o.content_type);
      location = std::move (o.location);
      json = o.json;
      o.json = nullptr;
    }
    return *this;
  }
  ~HttpReply ()
  {
    if (json)
      json_node_unref (json);
  }
  JsonObject *object () const
  {
    return json && JSON_NODE_HOLDS_OBJECT (json) ? json_node_get_object (json) : nullptr;
  }
  std::string str (const char *member) const
  {
    JsonObject *o = object ();
    return o ? json_object_get_string_member_with_default (o, member, "") : "";
  }
  int64_t integer (const char *member) const
  {
    JsonObject *o = object ();
    return o ? json_object_get_int_member_with_default (o, member, 0) : 0;
  }
};

// One HTTP request (libsoup) to `url`, with a bearer token when given; a
// self-signed certificate (the tests') is accepted.
inline HttpReply
http_request (const std::string &method, const std::string &url, const std::string &body = "",
              const std::string &token = "", const std::string &content_type = "application/json")
{
  HttpReply r;
  g_autoptr (SoupSession) session = soup_session_new_with_options ("timeout", 20, nullptr);
  g_autoptr (SoupMessage) msg = soup_message_new (method.c_str (), url.c_str ());
  if (url.rfind ("https:", 0) == 0)
    g_signal_connect (msg, "accept-certificate",
                      G_CALLBACK (+[] (SoupMessage *, GTlsCertificate *, GTlsCertificateFlags,
                                       gpointer) -> gboolean { return TRUE; }),
                      nullptr);
  if (!token.empty ())
    soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization",
                                  ("Bearer " + token).c_str ());
  if (!body.empty ()) {
    g_autoptr (GBytes) b = g_bytes_new (body.data (), body.size ());
    soup_message_set_request_body_from_bytes (msg, content_type.c_str (), b);
  }
  g_autoptr (GError) error = nullptr;
  g_autoptr (GBytes) out = soup_session_send_and_read (session, msg, nullptr, &error);
  if (!out)
    return r;
  r.status = (int)soup_message_get_status (msg);
  SoupMessageHeaders *h = soup_message_get_response_headers (msg);
  const char *type = soup_message_headers_get_one (h, "Content-Type");
  const char *location = soup_message_headers_get_one (h, "Location");
  r.content_type = type ? type : "";
  r.location = location ? location : "";
  gsize len = 0;
  const char *data = static_cast<const char *> (g_bytes_get_data (out, &len));
  r.body.assign (data ? data : "", len);
  g_autoptr (JsonParser) p = json_parser_new ();
  if (!r.body.empty () && json_parser_load_from_data (p, r.body.c_str (), (gssize)r.body.size (), nullptr))
    r.json = json_node_copy (json_parser_get_root (p));
  return r;
}

class Daemon {
public:
  static constexpr const char *kAdminToken = "test-admin-token-0123456789abcdef";
  // More command-line options for the next start() (e.g. --cluster).
  std::vector<std::string> extra_args;

  // `config_json` empty: --demo.  `state_dir` empty: a fresh one.
  explicit Daemon (const std::string &config_json = "", std::string state_dir = "")
      : config_json_ (config_json), state_dir_ (state_dir.empty () ? dir_.file ("state") : state_dir)
  {}
  ~Daemon () { stop (); }

  // Starts and waits until it serves and (wait_online) every microscope is up.
  bool start (double timeout_s = 30, bool wait_online = true)
  {
    std::vector<std::string> args
        = {livemicrod_path (), "--http-port", "0", "--rtsp-port", "0", "--state-dir", state_dir_};
    args.insert (args.end (), extra_args.begin (), extra_args.end ());
    if (config_json_.empty ()) {
      args.push_back ("--demo");
    } else {
      std::string path = dir_.file ("config.json");
      std::ofstream (path) << config_json_;
      args.push_back ("--config");
      args.push_back (path);
    }
    log_ = dir_.file ("livemicrod-" + std::to_string (++starts_) + ".log");
    g_autoptr (GSubprocessLauncher) l = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDERR_MERGE);
    g_subprocess_launcher_setenv (l, "LIVEMICRO_ADMIN_TOKEN", kAdminToken, TRUE);
    g_subprocess_launcher_set_stdout_file_path (l, log_.c_str ());
    g_subprocess_launcher_set_child_setup (l, die_with_parent, nullptr, nullptr);
    std::vector<const char *> argv;
    for (auto &a : args)
      argv.push_back (a.c_str ());
    argv.push_back (nullptr);
    g_autoptr (GError) error = nullptr;
    proc_ = g_subprocess_launcher_spawnv (l, argv.data (), &error);
    if (!proc_) {
      last_error_ = error->message;
      return false;
    }
    gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
    while (g_get_monotonic_time () < deadline) {
      std::string text = log ();
      auto at = text.find ("livemicrod: HTTP ");
      if (at != std::string::npos && text.find ('\n', at) != std::string::npos) {
        https_ = text.find ("HTTP https://") != std::string::npos;
        http_port_ = port_after (text, https_ ? "HTTP https://127.0.0.1:" : "HTTP http://127.0.0.1:");
        rtsp_port_ = port_after (text, https_ ? "RTSP rtsps://127.0.0.1:" : "RTSP rtsp://127.0.0.1:");
        return http_port_ > 0 && rtsp_port_ > 0 && (!wait_online || this->wait_online (deadline));
      }
      if (g_subprocess_get_identifier (proc_) == nullptr) {
        last_error_ = "livemicrod exited: " + text;
        return false;
      }
      g_usleep (20000);
    }
    last_error_ = "livemicrod did not start: " + log ();
    return false;
  }

  void stop ()
  {
    if (!proc_)
      return;
    g_subprocess_send_signal (proc_, SIGTERM);
    // GSubprocess reaps the child on GLib's worker thread: poll for that.
    gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
    while (g_subprocess_get_identifier (proc_) && g_get_monotonic_time () < deadline)
      g_usleep (20000);
    if (g_subprocess_get_identifier (proc_))
      g_subprocess_force_exit (proc_);
    g_subprocess_wait (proc_, nullptr, nullptr);
    g_clear_object (&proc_);
  }

  // Dies at once, as a crashed or powered-off machine would: nothing is
  // handed over (in an edge cloud its lease lapses by itself).
  void kill ()
  {
    if (!proc_)
      return;
    g_subprocess_force_exit (proc_);
    g_subprocess_wait (proc_, nullptr, nullptr);
    g_clear_object (&proc_);
  }

  std::string log () const
  {
    std::ifstream f (log_);
    std::stringstream s;
    s << f.rdbuf ();
    return s.str ();
  }

  HttpReply request (const std::string &method, const std::string &path, const std::string &body = "",
                     const std::string &token = kAdminToken,
                     const std::string &content_type = "application/json") const
  {
    return http_request (method,
                         std::string (https_ ? "https" : "http")
                             + "://127.0.0.1:" + std::to_string (http_port_) + path,
                         body, token, content_type);
  }

  // POST /api/v1/sessions; returns the reply (201 expected).
  HttpReply create_session (const std::string &user, const std::string &role,
                            const std::string &microscope = "demo",
                            const std::string &token = kAdminToken) const
  {
    return request (
        "POST", "/api/v1/sessions",
        "{\"user\":\"" + user + "\",\"role\":\"" + role + "\",\"microscope\":\"" + microscope + "\"}", token);
  }

  std::string metrics () const { return request ("GET", "/metrics", "", "").body; }
  // The value of one Prometheus sample line, or -1.
  double metric (const std::string &name_and_labels) const
  {
    std::istringstream in (metrics ());
    std::string line;
    while (std::getline (in, line))
      if (line.rfind (name_and_labels + " ", 0) == 0)
        return std::atof (line.c_str () + name_and_labels.size () + 1);
    return -1;
  }

  // Polls a metric until `want` holds (the worker reports once a second).
  bool until_metric (const std::string &name_and_labels, const std::function<bool (double)> &want,
                     double seconds = 10) const
  {
    gint64 deadline = g_get_monotonic_time () + (gint64)(seconds * 1e6);
    while (g_get_monotonic_time () < deadline) {
      if (want (metric (name_and_labels)))
        return true;
      g_usleep (50000);
    }
    return false;
  }
  // The process id of a microscope's media worker, as the admin sees it (0: none).
  int worker_pid (const std::string &microscope = "demo") const
  {
    HttpReply m = request ("GET", "/api/v1/microscopes/" + microscope);
    return m.object () ? (int)json_object_get_int_member_with_default (m.object (), "worker_pid", 0) : 0;
  }

  // Waits until a microscope's worker has rendered its slide map's macro
  // image (the overview says "macro": true; a one-time job of about a second
  // of CPU that benchmarks keep out of what they sample); the seconds it
  // took, or -1 after timeout_s.
  double wait_macro_image (const std::string &microscope = "demo", double timeout_s = 120) const
  {
    const gint64 t0 = g_get_monotonic_time ();
    while ((g_get_monotonic_time () - t0) / 1e6 < timeout_s) {
      HttpReply o = request ("GET", "/api/v1/microscopes/" + microscope + "/overview");
      if (o.status == 200 && o.object ()
          && json_object_get_boolean_member_with_default (o.object (), "macro", FALSE))
        return (g_get_monotonic_time () - t0) / 1e6;
      g_usleep (G_USEC_PER_SEC / 4);
    }
    return -1;
  }

  int http_port () const { return http_port_; }
  int rtsp_port () const { return rtsp_port_; }
  // The daemon's process id (0 when it is not running).
  int pid () const
  {
    const char *id = proc_ ? g_subprocess_get_identifier (proc_) : nullptr;
    return id ? std::atoi (id) : 0;
  }
  bool running () const { return pid () != 0; }
  const std::string &state_dir () const { return state_dir_; }
  const std::string &error () const { return last_error_; }

private:
  static int port_after (const std::string &text, const std::string &prefix)
  {
    auto at = text.find (prefix);
    return at == std::string::npos ? 0 : std::atoi (text.c_str () + at + prefix.size ());
  }
  bool wait_online (gint64 deadline)
  {
    while (g_get_monotonic_time () < deadline) {
      HttpReply r = request ("GET", "/healthz", "", "");
      if (r.status == 200 && r.body.find ("offline") == std::string::npos)
        return true;
      g_usleep (50000);
    }
    last_error_ = "microscopes did not come online: " + log ();
    return false;
  }

  TempDir dir_;
  std::string config_json_, state_dir_, log_, last_error_;
  GSubprocess *proc_ = nullptr;
  int http_port_ = 0, rtsp_port_ = 0, starts_ = 0;
  bool https_ = false;
};

// Takes the control lease with `owner_token`, moves the stage to (x, y) µm
// and waits until it is there and still.  Empty on success, else what went wrong.
inline std::string
move_stage (const Daemon &d, const std::string &owner_token, double x_um, double y_um,
            const std::string &microscope = "demo")
{
  const std::string base = "/api/v1/microscopes/" + microscope;
  HttpReply lease = d.request ("POST", base + "/control", R"({"action": "request"})", owner_token);
  if (lease.status != 200)
    return "control: " + lease.body;
  HttpReply moved = d.request ("POST", base + "/commands",
                               "{\"lease\":\"" + lease.str ("lease") + "\",\"move\":{\"x_um\":"
                                   + std::to_string (x_um) + ",\"y_um\":" + std::to_string (y_um) + "}}",
                               owner_token);
  if (moved.status != 202)
    return "move: " + moved.body;
  for (int i = 0; i < 300; i++, g_usleep (50000)) {
    HttpReply m = d.request ("GET", base);
    JsonObject *stage = m.object () ? json_object_get_object_member (m.object (), "stage") : nullptr;
    if (stage && std::abs (json_object_get_double_member (stage, "x_um") - x_um) < 1
        && std::abs (json_object_get_double_member (stage, "y_um") - y_um) < 1
        && !json_object_get_boolean_member (m.object (), "moving"))
      return "";
  }
  return "the stage did not reach the target within 15 s";
}

// What a process holds: open file descriptors, threads, resident memory.
struct ProcessUsage {
  int fds = -1, threads = -1;
  long rss_kb = -1;
  long peak_rss_kb = -1; // VmHWM: the most it was resident since it started
};

inline ProcessUsage
process_usage (int pid)
{
  ProcessUsage u;
  if (pid <= 0)
    return u;
  std::string dir = "/proc/" + std::to_string (pid);
  if (GDir *d = g_dir_open ((dir + "/fd").c_str (), 0, nullptr)) {
    u.fds = 0;
    while (g_dir_read_name (d))
      u.fds++;
    g_dir_close (d);
  }
  std::ifstream status (dir + "/status");
  std::string line;
  while (std::getline (status, line)) {
    if (line.rfind ("Threads:", 0) == 0)
      u.threads = std::atoi (line.c_str () + 8);
    else if (line.rfind ("VmRSS:", 0) == 0)
      u.rss_kb = std::atol (line.c_str () + 6);
    else if (line.rfind ("VmHWM:", 0) == 0)
      u.peak_rss_kb = std::atol (line.c_str () + 6);
  }
  return u;
}

// A process's usage once its resident size has settled: not fallen by 1 MB
// or more over 3 s (at most 60 s) — memory a process gives back after the
// fact (an analysis releasing its working set at low priority) is back.
inline ProcessUsage
settled_usage (int pid)
{
  ProcessUsage last = process_usage (pid);
  const gint64 deadline = g_get_monotonic_time () + 60 * G_USEC_PER_SEC;
  gint64 since = g_get_monotonic_time ();
  while (g_get_monotonic_time () < deadline && g_get_monotonic_time () - since < 3 * G_USEC_PER_SEC) {
    g_usleep (G_USEC_PER_SEC / 4);
    ProcessUsage u = process_usage (pid);
    if (u.rss_kb < last.rss_kb - 1024)
      since = g_get_monotonic_time ();
    last = u;
  }
  return last;
}

// An RTSP player: rtspsrc → depay → decode, counting decoded frames and
// reading the capture time each access unit carries (SEI).
class RtspPlayer {
public:
  RtspPlayer (const std::string &url, const std::string &user, const std::string &password,
              const char *protocols = "tcp", bool decode = true)
  {
    // rtsps: the tests' self-signed certificate.
    std::string tls = url.rfind ("rtsps:", 0) == 0 ? " tls-validation-flags=0" : "";
    std::string desc
        = "rtspsrc name=src latency=0" + tls + " protocols=" + std::string (protocols) + " location=\"" + url
          + "\"" + (user.empty () ? "" : " user-id=\"" + user + "\" user-pw=\"" + password + "\"")
          + " ! rtph264depay name=depay ! video/x-h264,stream-format=byte-stream,alignment=au ! h264parse ! "
          + (decode ? "avdec_h264 ! " : "") + "fakesink name=sink sync=false signal-handoffs=true";
    pipeline_ = gst_parse_launch (desc.c_str (), nullptr);
    GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline_), "sink");
    GstElement *depay = gst_bin_get_by_name (GST_BIN (pipeline_), "depay");
    GstPad *au_pad = gst_element_get_static_pad (depay, "src");
    gst_pad_add_probe (
        au_pad, GST_PAD_PROBE_TYPE_BUFFER,
        +[] (GstPad *, GstPadProbeInfo *info, gpointer d) {
          GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
          GstMapInfo map;
          if (gst_buffer_map (b, &map, GST_MAP_READ)) {
            if (auto fi = livemicro::orchestrator::h264::frame_record (map.data, map.size))
              static_cast<RtspPlayer *> (d)->last_capture_unix_us_ = fi->capture_unix_us;
            gst_buffer_unmap (b, &map);
          }
          return GST_PAD_PROBE_OK;
        },
        this, nullptr);
    gst_object_unref (au_pad);
    gst_object_unref (depay);
    g_signal_connect (sink, "handoff", G_CALLBACK (+[] (GstElement *, GstBuffer *, GstPad *, gpointer d) {
                        auto *self = static_cast<RtspPlayer *> (d);
                        self->frames_++;
                        self->last_frame_us_ = g_get_monotonic_time ();
                      }),
                      this);
    gst_object_unref (sink);
    gst_element_set_state (pipeline_, GST_STATE_PLAYING);
  }
  ~RtspPlayer ()
  {
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    gst_object_unref (pipeline_);
  }
  // Waits until `n` frames arrived or an error/EOS; false on error/timeout.
  bool wait_frames (int n, double timeout_s = 10)
  {
    GstBus *bus = gst_element_get_bus (pipeline_);
    gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
    bool ok = false;
    while (g_get_monotonic_time () < deadline) {
      if (frames_ >= n) {
        ok = true;
        break;
      }
      GstMessage *m = gst_bus_timed_pop_filtered (bus, 20 * GST_MSECOND,
                                                  (GstMessageType)(GST_MESSAGE_ERROR | GST_MESSAGE_EOS));
      if (m) {
        if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR) {
          GError *e = nullptr;
          gst_message_parse_error (m, &e, nullptr);
          error_ = e->message;
          g_error_free (e);
        } else {
          error_ = "EOS";
        }
        gst_message_unref (m);
        break;
      }
    }
    gst_object_unref (bus);
    return ok;
  }
  int frames () const { return frames_; }
  gint64 last_frame_us () const { return last_frame_us_; }
  // The capture time (µs since the epoch) in the last access unit's SEI.
  gint64 last_capture_unix_us () const { return last_capture_unix_us_; }
  const std::string &error () const { return error_; }
  GstElement *pipeline () const { return pipeline_; }

private:
  GstElement *pipeline_ = nullptr;
  std::atomic<int> frames_{0};
  std::atomic<gint64> last_frame_us_{0};
  std::atomic<gint64> last_capture_unix_us_{0};
  std::string error_;
};

} // namespace livemicro::test
