// livemicrod — the LiveMicro edge daemon.  See docs/orchestrator.md for
// the configuration file, the HTTP API and the media design.
#include "node.h"
#include "http_api.h"

#include <config.h>

#include <glib-unix.h>
#include <gst/gst.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <sys/resource.h>

using namespace livemicro::orchestrator;

namespace {

std::string
exe_dir ()
{
  g_autofree char *exe = g_file_read_link ("/proc/self/exe", nullptr);
  if (!exe)
    return "";
  g_autofree char *dir = g_path_get_dirname (exe);
  return dir;
}

// Uninstalled (run from the build tree) the templates and the page come from
// the source tree; installed, from the data directory.
Paths
resolve_paths (const Config &c)
{
  Paths p;
  const bool uninstalled = exe_dir () == LIVEMICRO_BUILD_ORCHESTRATOR_DIR;
  p.worker = g_getenv ("LIVEMICRO_WORKER") ? g_getenv ("LIVEMICRO_WORKER")
             : uninstalled ? std::string (LIVEMICRO_BUILD_ORCHESTRATOR_DIR "/livemicro-worker")
                           : std::string (LIVEMICRO_INSTALLED_WORKER);
  p.pipelines = !c.pipelines_dir.empty () ? c.pipelines_dir
                : uninstalled             ? std::string (LIVEMICRO_SOURCE_DIR "/pipelines")
                                          : std::string (LIVEMICRO_INSTALLED_DATA "/pipelines");
  p.web = !c.web_dir.empty () ? c.web_dir
          : uninstalled       ? std::string (LIVEMICRO_SOURCE_DIR "/orchestrator/web")
                              : std::string (LIVEMICRO_INSTALLED_DATA "/web");
  return p;
}

// Every viewer costs descriptors (its socket, RTP/RTCP ports, ICE sockets):
// use the hard limit, not the 1024 soft default.
void
raise_fd_limit ()
{
  rlimit r{};
  if (getrlimit (RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit (RLIMIT_NOFILE, &r);
  }
}

// The command line: a configuration file or --demo, and what overrides it.
struct Options {
  char *config_path = nullptr; // the strings GOptionContext allocates
  char *state_dir = nullptr;
  char *listen = nullptr;
  char *cluster = nullptr, *node_name = nullptr, *site = nullptr;
  gint http_port = -1, rtsp_port = -1;
  gboolean demo = FALSE;
  ~Options ()
  {
    g_free (config_path);
    g_free (state_dir);
    g_free (listen);
    g_free (cluster);
    g_free (node_name);
    g_free (site);
  }
};

// Parses the command line into `o`; false (after saying why) when it is wrong.
bool
parse_options (int &argc, char **&argv, Options &o)
{
  GOptionEntry entries[]
      = {{"config", 'c', 0, G_OPTION_ARG_FILENAME, &o.config_path,
          "Configuration file (JSON, see docs/orchestrator.md)", "FILE"},
         {"demo", 0, 0, G_OPTION_ARG_NONE, &o.demo,
          "No file: one virtual microscope 'demo' on sim://synthetic", nullptr},
         {"http-port", 0, 0, G_OPTION_ARG_INT, &o.http_port, "HTTP port (0: any free port)", "PORT"},
         {"rtsp-port", 0, 0, G_OPTION_ARG_INT, &o.rtsp_port, "RTSP port (0: any free port)", "PORT"},
         {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &o.state_dir, "Where sessions and the audit log live",
          "DIR"},
         {"listen", 0, 0, G_OPTION_ARG_STRING, &o.listen, "Address to listen on (default 127.0.0.1)", "ADDR"},
         {"cluster", 0, 0, G_OPTION_ARG_STRING, &o.cluster,
          "Join an edge cloud through these etcd members (docs/edge-cloud.md)", "etcd=URL[,URL...]"},
         {"node-name", 0, 0, G_OPTION_ARG_STRING, &o.node_name,
          "This node's name in the edge cloud (default: host name)", "NAME"},
         {"site", 0, 0, G_OPTION_ARG_STRING, &o.site, "This node's site or region label in the edge cloud",
          "LABEL"},
         {nullptr}};
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- LiveMicro edge daemon");
  g_option_context_add_main_entries (ctx, entries, nullptr);
  g_autoptr (GError) error = nullptr;
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    g_printerr ("livemicrod: %s\n", error->message);
    return false;
  }
  if (!o.demo && !o.config_path) {
    g_printerr ("livemicrod: give --config FILE or --demo (see --help)\n");
    return false;
  }
  if ((o.http_port != -1 && (o.http_port < 0 || o.http_port > 65535))
      || (o.rtsp_port != -1 && (o.rtsp_port < 0 || o.rtsp_port > 65535))) {
    g_printerr ("livemicrod: ports must be in [0, 65535]\n");
    return false;
  }
  return true;
}

// The configuration the options name, with their overrides; nullopt (after
// saying why) when it does not load.
std::optional<Config>
load_config (const Options &o)
{
  Config config;
  try {
    config = o.config_path ? Config::load (o.config_path, o.cluster != nullptr) : Config::demo ();
  } catch (const ConfigError &e) {
    g_printerr ("livemicrod: %s\n", e.what ());
    return std::nullopt;
  }
  try {
    if (o.cluster)
      config.set_cluster_endpoints (o.cluster);
    if (o.node_name)
      config.set_node_name (o.node_name);
  } catch (const ConfigError &e) {
    g_printerr ("livemicrod: %s\n", e.what ());
    return std::nullopt;
  }
  if (o.site)
    config.cluster.site = o.site;
  if (o.http_port >= 0)
    config.http_port = o.http_port;
  if (o.rtsp_port >= 0)
    config.rtsp_port = o.rtsp_port;
  if (o.state_dir)
    config.state_dir = o.state_dir;
  if (o.listen)
    config.listen_address = o.listen;
  return config;
}

// --demo: an owner session of the virtual microscope, and how to open it.
void
print_demo_session (Node &node)
{
  Principal admin;
  admin.admin = true;
  try {
    auto s = node.create_session (admin, "pathologist", "owner", "demo");
    std::printf ("\nLiveMicro demo: a virtual microscope over a generated H&E slide.\n"
                 "  Open the viewer (owner session):  %s\n"
                 "  Or play it over RTSP:             %s\n"
                 "      user %s, password %s\n"
                 "  e.g. gst-launch-1.0 rtspsrc location=%s user-id=%s user-pw=%s latency=0 "
                 "! decodebin ! autovideosink\n"
                 "  Admin token (API):                %s\n\n",
                 node.viewer_url (s.record, s.token).c_str (), node.rtsp_url (s.record).c_str (),
                 s.record.id.c_str (), s.token.c_str (), node.rtsp_url (s.record).c_str (),
                 s.record.id.c_str (), s.token.c_str (), node.admin_token ().c_str ());
  } catch (const Refusal &e) {
    g_printerr ("livemicrod: demo session: %s\n", e.message.c_str ());
  }
}

// Runs the loop until SIGINT or SIGTERM.
void
run_until_signalled ()
{
  GMainLoop *loop = g_main_loop_new (nullptr, FALSE);
  auto quit = [] (gpointer l) -> gboolean {
    g_main_loop_quit (static_cast<GMainLoop *> (l));
    return G_SOURCE_REMOVE;
  };
  g_unix_signal_add (SIGINT, quit, loop);
  g_unix_signal_add (SIGTERM, quit, loop);
  g_main_loop_run (loop);
  g_main_loop_unref (loop);
}

} // namespace

int
main (int argc, char **argv)
{
  // A full disk or a closed socket is an error to handle, not a death.
  std::signal (SIGXFSZ, SIG_IGN);
  std::signal (SIGPIPE, SIG_IGN);
  raise_fd_limit ();
  gst_init (&argc, &argv);
  Options options;
  if (!parse_options (argc, argv, options))
    return 2;
  std::optional<Config> config = load_config (options);
  if (!config)
    return 2;

  auto node = std::make_unique<Node> (*config, resolve_paths (*config));
  std::unique_ptr<HttpApi> http;
  try {
    node->start ();
    http = std::make_unique<HttpApi> (*node);
    http->start ();
    node->join_cluster (3000);
  } catch (const std::exception &e) {
    g_printerr ("livemicrod: %s\n", e.what ());
    http.reset ();
    node.reset ();
    return 1;
  }
  std::string host = config->public_host.empty () ? config->listen_address : config->public_host;
  std::printf ("livemicrod: HTTP %s://%s:%d  RTSP %s://%s:%d\n", node->https () ? "https" : "http",
               host.c_str (), http->port (), node->rtsp ().tls () ? "rtsps" : "rtsp", host.c_str (),
               node->rtsp ().port ());
  if (options.demo)
    print_demo_session (*node);
  std::fflush (stdout);

  run_until_signalled ();
  http.reset ();
  node.reset ();
  return 0;
}
