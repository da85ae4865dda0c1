// livemicrod's configuration: a JSON file (documented in docs/orchestrator.md), or the
// built-in demo.  Unknown keys and wrong types are errors that name the key.
#pragma once

#include "../cluster/cluster_config.h"

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace livemicro::orchestrator {

class ConfigError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

struct ObjectiveConfig {
  int magnification = 0;
  double um_per_px = 0;
  double numerical_aperture = 0; // 0: not given
};

struct MicroscopeConfig {
  std::string id;
  std::string name;
  std::string uri; // microscopesrc URI (given, or composed from the parts)
  std::string capture_template = "capture";
  // A microscope composed of parts (instead of "uri"): a camera URI, serial
  // stage/focus URIs and the objectives; `uri` is then their compose: URI.
  std::string camera, stage, focus;
  std::vector<ObjectiveConfig> objectives;
  int objective = 0; // selected at start; 0 = the first
};

// compose:?camera=…&stage=…&focus=…&objectives=MAG:UM_PER_PX[:NA],…[&objective=MAG]
// with each part percent-encoded (its '&', '%', '#' and '+').
std::string compose_uri (const MicroscopeConfig &m);

struct UserConfig {
  std::string name;
  std::vector<std::string> roles; // roles this user may take
};

struct VideoConfig {
  int width = 1280, height = 720, framerate = 30;
  int bitrate_kbps = 2500;
  int keyframe_interval = 30; // frames
};

struct ControlConfig {
  int idle_timeout_ms = 30000; // a lease lapses after this without commands or renewals
  int max_commands_per_s = 20; // per session; more get 429 (stop is exempt)
};

// Recordings of views (docs/orchestrator.md#recording): fragmented MP4
// segments and their stage track, one directory per recording.
struct RecordingsConfig {
  std::string directory; // empty: <state_dir>/recordings
  int segment_s = 60;    // a new segment file at the first keyframe after this many seconds
};

// Cross-origin access to WHEP (docs/security.md#cross-origin-whep): the
// origins ("https://player.example:8443", exactly as browsers send them, or
// "*") whose pages may POST offers and DELETE resources.  Empty: none, only
// pages served by the daemon itself (same origin, no CORS needed).
struct CorsConfig {
  std::vector<std::string> allowed_origins;
  bool allows (const std::string &origin) const;
};

// gst-rtsp-server's threads for RTSP connections (GstRTSPThreadPool
// max-threads): every connection is served by one of at most
// `client_threads` threads, whatever the number of players; 0 = all of them
// on the daemon's main loop.  A thread per connection (-1) is not offered.
struct RtspConfig {
  static constexpr int kMaxClientThreads = 64;
  int client_threads = 2;
};

struct Config {
  std::string listen_address = "127.0.0.1";
  std::string public_host; // host in rtsp_url/viewer_url; default listen address
  int http_port = 8080;
  int rtsp_port = 8554;
  std::string state_dir;                // empty: a fresh temporary directory
  std::string admin_token;              // or $LIVEMICRO_ADMIN_TOKEN
  std::string tls_certificate, tls_key; // PEM files: HTTPS and RTSPS
  std::string pipelines_dir;            // templates; default: the installed ones
  std::string web_dir;                  // the viewer page; default: the installed one
  std::string profiles_file;            // privacy view profiles (privacymask)
  size_t max_body_bytes = 64 * 1024;
  VideoConfig video;
  ControlConfig control;
  RecordingsConfig recordings;
  CorsConfig cors;
  RtspConfig rtsp;
  std::vector<MicroscopeConfig> microscopes;
  std::vector<UserConfig> users;             // empty: any user name may join
  livemicro::cluster::ClusterConfig cluster; // no etcd endpoints: a node on its own

  // --cluster etcd=URL,… and --node-name; throw ConfigError.
  void set_cluster_endpoints (const std::string &arg);
  void set_node_name (const std::string &name);

  const MicroscopeConfig *microscope (const std::string &id) const;
  // The demo: one virtual microscope "demo" on sim://synthetic.
  static Config demo ();
  // Reads and parses a configuration file.  Throws ConfigError (and only
  // that) naming the file and the key: "config 'PATH': microscopes[0].id: …".
  // `in_cluster`: the command line joins an edge cloud (--cluster), where a
  // node may have no microscope of its own.
  static Config load (const std::string &path, bool in_cluster = false);
  // Parses the JSON text of a configuration; `source` names it in errors.
  static Config parse (const std::string &json, const std::string &source, bool in_cluster = false);
};

// The roles a session can have, most privileged first.
const std::vector<std::string> &known_roles ();
bool is_known_role (const std::string &role);

} // namespace livemicro::orchestrator
