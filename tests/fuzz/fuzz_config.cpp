// livemicrod's configuration file (orchestrator/daemon/config.cpp).
// Contract: Config::parse either returns a configuration that satisfies
// every rule of docs/orchestrator.md's table, or throws ConfigError — nothing else —
// whose message names the file ("config 'SOURCE': …").
#include "config.h"
#include "fuzz_util.h"

#include <glib.h>

#include <algorithm>
#include <set>

using livemicro::fuzz::text;
using namespace livemicro::orchestrator;

namespace {

const char kSource[] = "fuzz.json";

bool
valid_id (const std::string &id)
{
  return !id.empty () && id.size () <= 64 && std::all_of (id.begin (), id.end (), [] (char c) {
    return g_ascii_isalnum (c) || c == '-' || c == '_';
  });
}

// A lone surrogate escape ("\ud800") gives invalid UTF-8 from json-glib;
// such text must not get into the daemon (it is sent out again as JSON).
void
check_utf8 (const std::string &s, const char *what)
{
  FUZZ_CHECK (g_utf8_validate (s.data (), (gssize)s.size (), nullptr),
              std::string (what) + " is not UTF-8: " + s);
}

void
check (const Config &c)
{
  for (const std::string *s :
       {&c.listen_address, &c.public_host, &c.state_dir, &c.admin_token, &c.tls_certificate, &c.tls_key,
        &c.pipelines_dir, &c.web_dir, &c.profiles_file})
    check_utf8 (*s, "a setting");
  for (const MicroscopeConfig &m : c.microscopes)
    for (const std::string *s : {&m.name, &m.uri, &m.camera, &m.stage, &m.focus})
      check_utf8 (*s, "a microscope's text");
  for (const UserConfig &u : c.users)
    check_utf8 (u.name, "a user name");
  FUZZ_CHECK (c.http_port >= 0 && c.http_port <= 65535, std::to_string (c.http_port));
  FUZZ_CHECK (c.rtsp_port >= 0 && c.rtsp_port <= 65535, std::to_string (c.rtsp_port));
  FUZZ_CHECK (c.max_body_bytes >= 1024 && c.max_body_bytes <= (16u << 20), std::to_string (c.max_body_bytes));
  FUZZ_CHECK (c.tls_certificate.empty () == c.tls_key.empty (), "certificate without key");
  const VideoConfig &v = c.video;
  FUZZ_CHECK (v.width >= 64 && v.width <= 3840 && v.width % 2 == 0, std::to_string (v.width));
  FUZZ_CHECK (v.height >= 64 && v.height <= 2160 && v.height % 2 == 0, std::to_string (v.height));
  FUZZ_CHECK (v.framerate >= 1 && v.framerate <= 60, "framerate");
  FUZZ_CHECK (v.bitrate_kbps >= 100 && v.bitrate_kbps <= 50000, "bitrate");
  FUZZ_CHECK (v.keyframe_interval >= 1 && v.keyframe_interval <= 600, "keyframe_interval");
  FUZZ_CHECK (c.control.idle_timeout_ms >= 100 && c.control.idle_timeout_ms <= 3600000, "idle_timeout_ms");
  FUZZ_CHECK (c.control.max_commands_per_s >= 1 && c.control.max_commands_per_s <= 1000,
              "max_commands_per_s");
  FUZZ_CHECK (c.rtsp.client_threads >= 0 && c.rtsp.client_threads <= RtspConfig::kMaxClientThreads,
              "client_threads");

  FUZZ_CHECK (!c.microscopes.empty (), "no microscope");
  std::set<std::string> ids;
  for (const MicroscopeConfig &m : c.microscopes) {
    FUZZ_CHECK (valid_id (m.id), "id '" + m.id + "'");
    FUZZ_CHECK (ids.insert (m.id).second, "id '" + m.id + "' twice");
    FUZZ_CHECK (c.microscope (m.id) == &m, "microscope() finds another entry");
    FUZZ_CHECK (!m.uri.empty (), m.id + ": no uri");
    FUZZ_CHECK (valid_id (m.capture_template), "capture_template '" + m.capture_template + "'");
    bool parts = !m.camera.empty () || !m.stage.empty () || !m.focus.empty () || !m.objectives.empty ()
                 || m.objective != 0;
    if (parts) {
      FUZZ_CHECK (!m.camera.empty (), m.id + ": parts without a camera");
      FUZZ_CHECK (m.uri == compose_uri (m), m.id + ": uri " + m.uri);
    }
    std::set<int> mags;
    for (const ObjectiveConfig &o : m.objectives) {
      FUZZ_CHECK (o.magnification >= 1 && o.magnification <= 1000, std::to_string (o.magnification));
      FUZZ_CHECK (mags.insert (o.magnification).second, "magnification twice");
      FUZZ_CHECK (o.um_per_px >= 1e-6 && o.um_per_px <= 100, std::to_string (o.um_per_px));
      FUZZ_CHECK (o.numerical_aperture >= 0 && o.numerical_aperture <= 1.6,
                  std::to_string (o.numerical_aperture));
    }
    FUZZ_CHECK (m.objective == 0 || mags.count (m.objective),
                "objective " + std::to_string (m.objective) + " not in objectives");
  }
  for (const UserConfig &u : c.users) {
    FUZZ_CHECK (!u.name.empty (), "user without a name");
    for (const std::string &r : u.roles)
      FUZZ_CHECK (is_known_role (r), "role '" + r + "'");
  }
}

} // namespace

extern "C" int
LLVMFuzzerInitialize (int *, char ***)
{
  // A GLib critical (a json-glib precondition) is a bug of the caller.
  g_log_set_always_fatal (
      static_cast<GLogLevelFlags> (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING));
  return 0;
}

extern "C" int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  Config c;
  try {
    c = Config::parse (text (data, size), kSource);
  } catch (const ConfigError &e) {
    std::string msg = e.what ();
    FUZZ_CHECK (msg.rfind (std::string ("config '") + kSource + "': ", 0) == 0
                    && msg.size () > sizeof kSource + 12,
                "message '" + msg + "'");
    return 0;
  }
  check (c);
  return 0;
}
