// livemicrod end to end: a real daemon process on 127.0.0.1, real clients
// (libsoup, rtspsrc, headless Chromium), SQLite on disk.
#include "daemon_process.h"

#include <gtest/gtest.h>

#include <csignal>
#include <thread>

using livemicro::test::Daemon;
using livemicro::test::HttpReply;
using livemicro::test::process_usage;
using livemicro::test::RtspPlayer;
using livemicro::test::settled_usage;

namespace {

class Livemicrod : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }
};

const char *kTwoMicroscopes = R"({
  "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 500},
  "microscopes": [
    {"id": "left", "name": "Left", "uri": "sim://synthetic?seed=1"},
    {"id": "right", "name": "Right", "uri": "sim://synthetic?seed=2"}
  ]})";

const char *kSmall = R"({
  "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 500},
  "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})";

} // namespace

TEST_F (Livemicrod, SessionLifecycleThroughTheApi)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply created = d.create_session ("alice", "owner");
  ASSERT_EQ (created.status, 201) << created.body;
  std::string id = created.str ("id"), token = created.str ("token");
  EXPECT_EQ (id.size (), 32u);
  EXPECT_GE (token.size (), 22u) << "at least 128 bits";
  EXPECT_EQ (created.str ("role"), "owner");
  EXPECT_EQ (created.str ("rtsp_url"), "rtsp://127.0.0.1:" + std::to_string (d.rtsp_port ()) + "/s/" + id);
  EXPECT_EQ (created.str ("viewer_url"),
             "http://127.0.0.1:" + std::to_string (d.http_port ()) + "/view/" + id + "#token=" + token);

  HttpReply list = d.request ("GET", "/api/v1/sessions");
  ASSERT_EQ (list.status, 200);
  EXPECT_NE (list.body.find (id), std::string::npos);
  EXPECT_EQ (list.body.find (token), std::string::npos) << "tokens are never listed";
  // The session sees itself with its own token.
  HttpReply self = d.request ("GET", "/api/v1/sessions/" + id, "", token);
  EXPECT_EQ (self.status, 200);
  HttpReply scope = d.request ("GET", "/api/v1/microscopes/demo", "", token);
  ASSERT_EQ (scope.status, 200) << scope.body;
  JsonObject *m = scope.object ();
  EXPECT_TRUE (json_object_has_member (m, "stage"));
  EXPECT_TRUE (json_object_has_member (m, "objective"));
  EXPECT_TRUE (json_object_has_member (m, "moving"));
  EXPECT_TRUE (json_object_has_member (m, "controller"));
  EXPECT_FALSE (json_object_has_member (m, "uri")) << "only the admin sees slide paths";

  HttpReply del = d.request ("DELETE", "/api/v1/sessions/" + id);
  EXPECT_EQ (del.status, 204);
  EXPECT_EQ (d.request ("GET", "/api/v1/sessions/" + id).status, 404);
  EXPECT_EQ (d.request ("GET", "/api/v1/sessions/" + id, "", token).status, 401)
      << "an ended session's token is dead";
  EXPECT_EQ (d.request ("GET", "/healthz", "", "").status, 200);
}

TEST_F (Livemicrod, OnlyConfiguredUsersJoinAndOnlyInTheirRoles)
{
  Daemon d (R"({"video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 500},
                "microscopes": [{"id": "demo", "uri": "sim://synthetic"}],
                "users": [{"name": "alice", "roles": ["owner", "consultant"]}]})");
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply stranger = d.create_session ("mallory", "consultant");
  EXPECT_EQ (stranger.status, 422) << stranger.body;
  EXPECT_NE (stranger.body.find ("'mallory' is not configured on this node"), std::string::npos)
      << stranger.body;
  HttpReply wrong_role = d.create_session ("alice", "trainee");
  EXPECT_EQ (wrong_role.status, 422) << wrong_role.body;
  EXPECT_NE (wrong_role.body.find ("may not take the role 'trainee'"), std::string::npos) << wrong_role.body;
  EXPECT_EQ (d.create_session ("alice", "consultant").status, 201);
  HttpReply list = d.request ("GET", "/api/v1/sessions");
  EXPECT_EQ (list.body.find ("mallory"), std::string::npos) << "a refused session is not made";
}

TEST_F (Livemicrod, BadInputOnEveryRouteGetsTheRightStatusAndAJsonError)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply owner = d.create_session ("olga", "owner");
  ASSERT_EQ (owner.status, 201);
  HttpReply trainee = d.create_session ("tom", "owner");
  ASSERT_EQ (trainee.status, 201);
  std::string owner_token = owner.str ("token"), other_id = trainee.str ("id");
  std::string big (200 * 1024, 'x');
  struct Case {
    const char *method;
    std::string path, body, token;
    int status;
  };
  const std::string admin = Daemon::kAdminToken;
  std::vector<Case> cases = {
      {"GET", "/api/v1/sessions", "", "", 401},
      {"GET", "/api/v1/sessions", "", "not-a-token", 401},
      {"GET", "/api/v1/microscopes", "", "", 401},
      {"GET", "/api/v1/microscopes/demo", "", "wrong", 401},
      {"DELETE", "/api/v1/sessions/" + other_id, "", "", 401},
      {"POST", "/api/v1/sessions", "{bad json", admin, 400},
      {"POST", "/api/v1/sessions", "[1, 2]", admin, 400},
      {"POST", "/api/v1/sessions", "", admin, 400},
      {"POST", "/api/v1/sessions", big, admin, 413},
      {"POST", "/api/v1/sessions", R"({"user": 7, "role": "owner"})", admin, 422},
      {"POST", "/api/v1/sessions", R"({"user": "a", "role": ["owner"]})", admin, 422},
      {"POST", "/api/v1/sessions", R"({"user": "a"})", admin, 422},
      {"POST", "/api/v1/sessions", R"({"user": "a", "role": "king"})", admin, 422},
      {"POST", "/api/v1/sessions", R"({"user": "a", "role": "owner", "microscope": "nope"})", admin, 422},
      {"POST", "/api/v1/sessions", R"({"user": "", "role": "owner"})", admin, 422},
      {"POST", "/api/v1/sessions", R"({"user": "a", "role": "owner", "extra": 1})", admin, 422},
      // An owner may not create another owner; sessions other than the owner may not create any.
      {"POST", "/api/v1/sessions", R"({"user": "b", "role": "owner"})", owner_token, 403},
      {"GET", "/api/v1/sessions/0123456789abcdef0123456789abcdef", "", admin, 404},
      {"DELETE", "/api/v1/sessions/0123456789abcdef0123456789abcdef", "", admin, 404},
      {"GET", "/api/v1/microscopes/nope", "", admin, 404},
      {"GET", "/api/v1/nothing", "", admin, 404},
      {"GET", "/nothing", "", "", 404},
      {"PUT", "/api/v1/sessions", "{}", admin, 405},
      {"POST", "/api/v1/microscopes", "{}", admin, 405},
      {"PATCH", "/api/v1/sessions/" + other_id, "{}", admin, 405},
  };
  for (const Case &c : cases) {
    HttpReply r = d.request (c.method, c.path, c.body, c.token);
    EXPECT_EQ (r.status, c.status) << c.method << " " << c.path << " " << c.body.substr (0, 60) << " → "
                                   << r.body;
    EXPECT_FALSE (r.str ("error").empty ()) << c.method << " " << c.path << ": " << r.body;
  }
  // Nothing above changed anything: still exactly the two sessions.
  HttpReply list = d.request ("GET", "/api/v1/sessions");
  EXPECT_EQ (json_array_get_length (json_object_get_array_member (list.object (), "sessions")), 2u);
}

TEST_F (Livemicrod, SessionsSeeOnlyWhatTheirRoleAllows)
{
  Daemon d (kTwoMicroscopes);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply left_owner = d.create_session ("lena", "owner", "left");
  HttpReply right_owner = d.create_session ("rick", "owner", "right");
  ASSERT_EQ (left_owner.status, 201);
  ASSERT_EQ (right_owner.status, 201);
  std::string lt = left_owner.str ("token");
  // An owner lists only their microscope's sessions and sees only it.
  HttpReply list = d.request ("GET", "/api/v1/sessions", "", lt);
  EXPECT_NE (list.body.find (left_owner.str ("id")), std::string::npos);
  EXPECT_EQ (list.body.find (right_owner.str ("id")), std::string::npos);
  EXPECT_EQ (d.request ("GET", "/api/v1/sessions/" + right_owner.str ("id"), "", lt).status, 403);
  EXPECT_EQ (d.request ("DELETE", "/api/v1/sessions/" + right_owner.str ("id"), "", lt).status, 403);
  EXPECT_EQ (d.request ("GET", "/api/v1/microscopes/right", "", lt).status, 403);
  HttpReply scopes = d.request ("GET", "/api/v1/microscopes", "", lt);
  EXPECT_EQ (json_array_get_length (json_object_get_array_member (scopes.object (), "microscopes")), 1u);
  // An owner cannot invite to another microscope.
  EXPECT_EQ (d.create_session ("x", "guest", "right", lt).status, 403);
}

TEST_F (Livemicrod, RtspPlaysOnlyWithTheSessionsOwnCredentialsOverTcpAndUdp)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply a = d.create_session ("alice", "owner");
  HttpReply b = d.create_session ("bob", "owner");
  ASSERT_EQ (a.status, 201);
  ASSERT_EQ (b.status, 201);
  const std::string url = a.str ("rtsp_url"), id = a.str ("id"), token = a.str ("token");
  for (const char *proto : {"tcp", "udp"}) {
    RtspPlayer ok (url, id, token, proto);
    EXPECT_TRUE (ok.wait_frames (10, 15)) << proto << ": " << ok.error ();
  }
  RtspPlayer wrong (url, id, "wrong-password");
  EXPECT_FALSE (wrong.wait_frames (1, 10));
  EXPECT_NE (wrong.error ().find ("Unauthorized"), std::string::npos) << wrong.error ();
  RtspPlayer nobody (url, "", "");
  EXPECT_FALSE (nobody.wait_frames (1, 10));
  EXPECT_NE (nobody.error ().find ("Unauthorized"), std::string::npos) << nobody.error ();
  // Bob's valid credentials do not open Alice's mount.
  RtspPlayer other (url, b.str ("id"), b.str ("token"));
  EXPECT_FALSE (other.wait_frames (1, 10));
  EXPECT_FALSE (other.error ().empty ());
  EXPECT_EQ (other.frames (), 0);
}

// Every view's stream says when its frames were taken — a guest's too, whose
// profile strips the capture time from the StageMeta it sees: the worker
// takes it where the frame entered the capture tee.
TEST_F (Livemicrod, EveryViewCarriesItsFramesCaptureTimeEvenAGuests)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  for (const char *role : {"owner", "consultant", "guest"}) {
    HttpReply s = d.create_session (std::string ("u-") + role, role);
    ASSERT_EQ (s.status, 201) << role;
    RtspPlayer p (s.str ("rtsp_url"), s.str ("id"), s.str ("token"));
    ASSERT_TRUE (p.wait_frames (10, 15)) << role << ": " << p.error ();
    gint64 age_us = g_get_real_time () - p.last_capture_unix_us ();
    EXPECT_GE (age_us, 0) << role << ": a capture time in the future";
    EXPECT_LT (age_us, 2 * G_USEC_PER_SEC) << role << ": capture time " << p.last_capture_unix_us ();
  }
}

TEST_F (Livemicrod, EndingASessionStopsItsPlayers)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply a = d.create_session ("alice", "owner");
  RtspPlayer p (a.str ("rtsp_url"), a.str ("id"), a.str ("token"));
  ASSERT_TRUE (p.wait_frames (5, 15)) << p.error ();
  ASSERT_EQ (d.request ("DELETE", "/api/v1/sessions/" + a.str ("id")).status, 204);
  g_usleep (1500000);
  int frames = p.frames ();
  g_usleep (1000000);
  EXPECT_EQ (p.frames (), frames) << "frames still arrive after the session ended";
  RtspPlayer again (a.str ("rtsp_url"), a.str ("id"), a.str ("token"));
  EXPECT_FALSE (again.wait_frames (1, 10));
}

TEST_F (Livemicrod, SessionsAndTheirCredentialsSurviveARestart)
{
  livemicro::test::TempDir state;
  std::string id, token, url;
  {
    Daemon d (kSmall, state.path ());
    ASSERT_TRUE (d.start ()) << d.error ();
    HttpReply a = d.create_session ("alice", "owner");
    ASSERT_EQ (a.status, 201);
    id = a.str ("id");
    token = a.str ("token");
  }
  Daemon d (kSmall, state.path ());
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply self = d.request ("GET", "/api/v1/sessions/" + id, "", token);
  EXPECT_EQ (self.status, 200) << self.body;
  url = "rtsp://127.0.0.1:" + std::to_string (d.rtsp_port ()) + "/s/" + id;
  RtspPlayer p (url, id, token);
  EXPECT_TRUE (p.wait_frames (5, 15)) << p.error () << "\n" << d.log ();
  // The database keeps a hash, never the token.
  g_autofree char *db = nullptr;
  gsize len = 0;
  ASSERT_TRUE (g_file_get_contents ((state.path () + "/livemicro.db").c_str (), &db, &len, nullptr));
  EXPECT_EQ (std::string (db, len).find (token), std::string::npos);
}

TEST_F (Livemicrod, KillingOneMicroscopesWorkerLeavesTheOtherServingAndComesBackWithin2s)
{
  Daemon d (kTwoMicroscopes);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply l = d.create_session ("lena", "owner", "left");
  HttpReply r = d.create_session ("rick", "owner", "right");
  ASSERT_EQ (l.status, 201);
  ASSERT_EQ (r.status, 201);
  RtspPlayer left (l.str ("rtsp_url"), l.str ("id"), l.str ("token"), "tcp", false);
  RtspPlayer right (r.str ("rtsp_url"), r.str ("id"), r.str ("token"), "tcp", false);
  ASSERT_TRUE (left.wait_frames (10, 15)) << left.error ();
  ASSERT_TRUE (right.wait_frames (10, 15)) << right.error ();

  HttpReply scope = d.request ("GET", "/api/v1/microscopes/left");
  gint64 pid = json_object_get_int_member_with_default (scope.object (), "worker_pid", 0);
  ASSERT_GT (pid, 0);
  int right_before = right.frames (), left_before = left.frames ();
  gint64 killed = g_get_monotonic_time ();
  ASSERT_EQ (kill ((pid_t)pid, SIGKILL), 0);

  // The left one's return takes a new process (GStreamer, the slide, an
  // encoder): 2 s on an idle 2-core machine, longer in proportion when the
  // load average is over 2 (as test-faults allows its restarts).
  double load[1] = {0};
  getloadavg (load, 1);
  const gint64 allowed_us = (gint64)(2000000 * std::max (1.0, load[0] / 2));
  // The right microscope never stops: no gap over 0.5 s meanwhile.
  gint64 longest_gap = 0, last = g_get_monotonic_time ();
  int seen = right.frames ();
  gint64 left_back = 0;
  while (g_get_monotonic_time () - killed < allowed_us + 500000) {
    g_usleep (10000);
    if (right.frames () != seen) {
      seen = right.frames ();
      longest_gap = std::max (longest_gap, g_get_monotonic_time () - last);
      last = g_get_monotonic_time ();
    }
    // The left one: frames again after the kill (allow in-flight ones to land first).
    if (!left_back && left.frames () > left_before + 3 && left.last_frame_us () - killed > 100000)
      left_back = left.last_frame_us ();
  }
  EXPECT_GT (right.frames (), right_before + 45) << "right kept receiving ~30 fps";
  EXPECT_LT (longest_gap, 500000) << "right stalled " << longest_gap / 1000 << " ms";
  ASSERT_GT (left_back, 0) << "left did not serve again within " << (allowed_us + 500000) / 1000
                           << " ms at load " << load[0];
  EXPECT_LT (left_back - killed, allowed_us)
      << "left came back after " << (left_back - killed) / 1000 << " ms at load " << load[0];
  EXPECT_GE (d.metric ("livemicro_worker_restarts_total{microscope=\"left\"}"), 1);
  EXPECT_EQ (d.metric ("livemicro_worker_restarts_total{microscope=\"right\"}"), 0);
}

TEST_F (Livemicrod, MetricsCountSessionsBranchesEncodersAndViewers)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply a = d.create_session ("a", "owner");
  HttpReply b = d.create_session ("b", "owner");
  ASSERT_EQ (b.status, 201);
  RtspPlayer p1 (a.str ("rtsp_url"), a.str ("id"), a.str ("token"), "tcp", false);
  RtspPlayer p2 (b.str ("rtsp_url"), b.str ("id"), b.str ("token"), "tcp", false);
  ASSERT_TRUE (p1.wait_frames (5, 15));
  ASSERT_TRUE (p2.wait_frames (5, 15));
  EXPECT_EQ (d.metric ("livemicro_sessions{microscope=\"demo\",role=\"owner\"}"), 2);
  EXPECT_EQ (d.metric ("livemicro_view_branches{microscope=\"demo\"}"), 1);
  EXPECT_EQ (d.metric ("livemicro_encoders{microscope=\"demo\"}"), 1);
  EXPECT_EQ (d.metric ("livemicro_viewers{microscope=\"demo\",profile=\"owner\",transport=\"rtsp\"}"), 2);
  // The worker reports fps once a second.
  double fps = 0;
  for (int i = 0; i < 50 && fps <= 20; i++, g_usleep (100000))
    fps = d.metric ("livemicro_view_fps{microscope=\"demo\",profile=\"owner\"}");
  EXPECT_GT (fps, 20);
}

TEST_F (Livemicrod, ChromiumDecodesWebRtcVideoOnTheViewerPage)
{
  const char *chromium = "/usr/bin/chromium";
  if (!g_file_test (chromium, G_FILE_TEST_IS_EXECUTABLE))
    GTEST_SKIP () << "Debian's chromium is not installed (scripts/install-deps.sh installs it)";
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply a = d.create_session ("alice", "owner");
  ASSERT_EQ (a.status, 201);
  livemicro::test::TempDir profile;
  std::vector<std::string> args
      = livemicro::test::headless_chromium_args (profile.path (), a.str ("viewer_url"));
  std::vector<const char *> argv;
  for (auto &s : args)
    argv.push_back (s.c_str ());
  argv.push_back (nullptr);
  g_autoptr (GError) error = nullptr;
  // Chromium's own log (console messages included), shown when the test fails.
  std::string browser_log = profile.file ("chromium.log");
  g_autoptr (GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDERR_MERGE);
  g_subprocess_launcher_set_stdout_file_path (launcher, browser_log.c_str ());
  args.insert (args.end () - 1, "--enable-logging=stderr");
  argv.clear ();
  for (auto &a : args)
    argv.push_back (a.c_str ());
  argv.push_back (nullptr);
  g_autoptr (GSubprocess) browser = g_subprocess_launcher_spawnv (launcher, argv.data (), &error);
  ASSERT_NE (browser, nullptr) << error->message;
  std::string last_stats;
  // The page reports what it decoded to the daemon.
  gint64 decoded = 0, latency_samples = 0;
  double p50 = -1, clock_rtt_ms = -1;
  gint64 deadline = g_get_monotonic_time () + 40 * G_USEC_PER_SEC;
  while (g_get_monotonic_time () < deadline && (decoded < 30 || latency_samples < 10)) {
    g_usleep (500000);
    HttpReply s = d.request ("GET", "/api/v1/sessions/" + a.str ("id"));
    JsonNode *stats = s.object () ? json_object_get_member (s.object (), "viewer_stats") : nullptr;
    last_stats = s.body;
    if (stats && JSON_NODE_HOLDS_OBJECT (stats)) {
      decoded = json_object_get_int_member_with_default (json_node_get_object (stats), "frames_decoded", 0);
      latency_samples
          = json_object_get_int_member_with_default (json_node_get_object (stats), "latency_samples", 0);
      JsonNode *l = json_object_get_member (json_node_get_object (stats), "latency_ms_p50");
      if (l && JSON_NODE_HOLDS_VALUE (l))
        p50 = json_node_get_double (l);
      JsonNode *rtt = json_object_get_member (json_node_get_object (stats), "clock_rtt_ms");
      if (rtt && JSON_NODE_HOLDS_VALUE (rtt))
        clock_rtt_ms = json_node_get_double (rtt);
    }
  }
  g_subprocess_force_exit (browser);
  g_subprocess_wait (browser, nullptr, nullptr);
  if (decoded < 30) {
    g_autofree char *log = nullptr;
    g_file_get_contents (browser_log.c_str (), &log, nullptr, nullptr);
    std::string text = log ? log : "";
    ADD_FAILURE () << "the page's last report: " << last_stats.substr (0, 600) << "\nChromium's log (tail):\n"
                   << text.substr (text.size () > 3000 ? text.size () - 3000 : 0) << "\nlivemicrod:\n"
                   << d.log ();
  }
  EXPECT_GE (decoded, 30) << "frames decoded by Chromium";
  // The page learns the server's clock from its pings: the figure is true
  // to half the best round trip (and the whole ms the ping carries), which
  // on a loaded machine can be more than this small view's latency.
  ASSERT_GE (clock_rtt_ms, 0) << "the page learnt the server's clock: " << last_stats.substr (0, 600);
  EXPECT_GE (latency_samples, 10) << "frames matched with their capture times: "
                                  << last_stats.substr (0, 600);
  EXPECT_GT (p50, -(clock_rtt_ms / 2 + 1))
      << "the page measured latency from the capture times: " << last_stats.substr (0, 600);
  EXPECT_LT (p50, 1000) << "glass-to-glass on one machine";
  EXPECT_EQ (d.metric ("livemicro_encoders{microscope=\"demo\"}"), 1) << "no encode per viewer";
}

TEST_F (Livemicrod, TlsServesTheApiOverHttpsAndPlayersOverRtsps)
{
  livemicro::test::TempDir dir;
  std::string cert = dir.file ("cert.pem"), key = dir.file ("key.pem");
  std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -keyout " + key
                    + " -out " + cert;
  int status = 0;
  if (!g_spawn_command_line_sync (cmd.c_str (), nullptr, nullptr, &status, nullptr) || status != 0)
    GTEST_SKIP () << "openssl is not available to make a test certificate";
  Daemon d (std::string (R"({"tls": {"certificate": ")") + cert + R"(", "key": ")" + key + R"("},
      "video": {"width": 320, "height": 240},
      "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})");
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply a = d.create_session ("alice", "owner");
  ASSERT_EQ (a.status, 201) << a.body;
  EXPECT_EQ (a.str ("rtsp_url").rfind ("rtsps://", 0), 0u) << a.str ("rtsp_url");
  EXPECT_EQ (a.str ("viewer_url").rfind ("https://", 0), 0u) << a.str ("viewer_url");
  RtspPlayer p (a.str ("rtsp_url"), a.str ("id"), a.str ("token"));
  EXPECT_TRUE (p.wait_frames (5, 15)) << p.error ();
  // A broken key pair is refused at start with the file named.
  std::ofstream (dir.file ("bad.pem")) << "not a key";
  Daemon bad (std::string (R"({"tls": {"certificate": ")") + cert + R"(", "key": ")" + dir.file ("bad.pem")
              + R"("}, "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})");
  EXPECT_FALSE (bad.start (10));
  EXPECT_NE (bad.error ().find (cert), std::string::npos) << bad.error ();
}

TEST_F (Livemicrod, BadConfigurationStopsTheDaemonWithTheKeyNamed)
{
  Daemon bad (R"({"microscopes": [{"id": "demo", "uri": "sim://synthetic", "colour": "red"}]})");
  EXPECT_FALSE (bad.start (10));
  EXPECT_NE (bad.error ().find ("colour: unknown key"), std::string::npos) << bad.error ();
}

TEST_F (Livemicrod, AMicroscopeWhoseSlideIsMissingIsOfflineWithTheReason)
{
  Daemon d (R"({"microscopes": [{"id": "demo", "uri": "sim:///no/such/slide.svs"},
      {"id": "good", "uri": "sim://synthetic", "name": "good"}], "video": {"width": 320, "height": 240}})");
  ASSERT_TRUE (d.start (20, false)) << d.error ();
  // The daemon serves the other microscope and says why this one is down.
  std::string error;
  for (int i = 0; i < 50 && error.empty (); i++, g_usleep (100000)) {
    HttpReply r = d.request ("GET", "/api/v1/microscopes/demo");
    ASSERT_EQ (r.status, 200);
    EXPECT_FALSE (json_object_get_boolean_member_with_default (r.object (), "online", TRUE));
    error = r.str ("error");
  }
  EXPECT_NE (error.find ("/no/such/slide.svs"), std::string::npos) << error;
  HttpReply s = d.create_session ("g", "owner", "good");
  ASSERT_EQ (s.status, 201);
  RtspPlayer p (s.str ("rtsp_url"), s.str ("id"), s.str ("token"));
  EXPECT_TRUE (p.wait_frames (5, 15)) << p.error ();
}

// The worker's memory (orchestrator/worker/heap_policy.h): what a viewer's
// branch and the analysis it drew used goes back to the system once the
// viewer has left — the branch torn down, the inactive analysis' working
// set dropped and trimmed, the slide map's start-up render trimmed — so an
// idle worker holds about what it held before. At 1280x720 the analysis
// alone works in ~250 MB, which the worker kept until it was given back.
TEST_F (Livemicrod, AWorkerGivesBackWhatItsViewerUsedOnceIdle)
{
  Daemon d (R"({"video": {"width": 1280, "height": 720, "framerate": 30, "bitrate_kbps": 2000},
               "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})");
  ASSERT_TRUE (d.start ()) << d.error ();
  const int worker = d.worker_pid ();
  ASSERT_GT (worker, 0);
  ASSERT_GE (d.wait_macro_image ("demo", 120), 0) << "no slide map macro image";
  const double idle_before_mb = settled_usage (worker).rss_kb / 1024.0;

  HttpReply s = d.create_session ("olga", "owner");
  ASSERT_EQ (s.status, 201) << s.body;
  {
    RtspPlayer p (s.str ("rtsp_url"), s.str ("id"), s.str ("token"), "tcp", false);
    ASSERT_TRUE (p.wait_frames (10, 20)) << p.error ();
    // The owner's overlay view draws the analysis: its working set is
    // allocated with the first analysed frame (nice 10: slow under load).
    double viewing_mb = 0;
    const gint64 deadline = g_get_monotonic_time () + 60 * G_USEC_PER_SEC;
    while (g_get_monotonic_time () < deadline && viewing_mb < idle_before_mb + 100) {
      g_usleep (G_USEC_PER_SEC / 4);
      viewing_mb = process_usage (worker).rss_kb / 1024.0;
    }
    ASSERT_GE (viewing_mb, idle_before_mb + 100) << "the analysis never ran: the worker grew from "
                                                 << idle_before_mb << " to only " << viewing_mb << " MB";
  }
  ASSERT_EQ (d.request ("DELETE", "/api/v1/sessions/" + s.str ("id")).status, 204);
  ASSERT_TRUE (d.until_metric (
      "livemicro_analysis_active{microscope=\"demo\"}", [] (double v) { return v == 0; }, 20));
  const double idle_after_mb = settled_usage (worker).rss_kb / 1024.0;
  EXPECT_LT (idle_after_mb, idle_before_mb + 60)
      << "idle, the worker held " << idle_before_mb << " MB before its viewer and " << idle_after_mb
      << " MB after";
}

TEST_F (Livemicrod, TenSessionsOverTwoProfilesRunTwoEncoders)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  std::vector<std::unique_ptr<RtspPlayer>> players;
  for (int i = 0; i < 10; i++) {
    HttpReply s = d.create_session ("u" + std::to_string (i), i % 2 ? "guest" : "consultant");
    ASSERT_EQ (s.status, 201) << s.body;
    players.push_back (
        std::make_unique<RtspPlayer> (s.str ("rtsp_url"), s.str ("id"), s.str ("token"), "tcp", false));
  }
  for (auto &p : players)
    EXPECT_TRUE (p->wait_frames (5, 20)) << p->error ();
  EXPECT_EQ (d.metric ("livemicro_view_branches{microscope=\"demo\"}"), 2);
  EXPECT_EQ (d.metric ("livemicro_encoders{microscope=\"demo\"}"), 2);
  EXPECT_EQ (d.metric ("livemicro_sessions{microscope=\"demo\",role=\"guest\"}"), 5);
  EXPECT_EQ (d.metric ("livemicro_viewers{microscope=\"demo\",profile=\"guest\",transport=\"rtsp\"}"), 5);
  EXPECT_EQ (d.metric ("livemicro_viewers{microscope=\"demo\",profile=\"consultant\",transport=\"rtsp\"}"),
             5);
}

// Every session of a view mounts the view's one factory: their players
// share one RTSP media (one appsrc and payloader in the daemon), a player
// costs the daemon no thread of its own (connections share
// rtsp.client_threads), and a player joining the playing media starts at a
// keyframe asked for then, not at the view's next regular one (10 s apart
// here).  Another session's credentials still do not open a mount.
TEST_F (Livemicrod, PlayersOfOneViewShareOneMediaWithoutAThreadEachAndStartAtOnce)
{
  Daemon d (R"({
    "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 500, "keyframe_interval": 300},
    "rtsp": {"client_threads": 2},
    "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})");
  ASSERT_TRUE (d.start ()) << d.error ();
  std::vector<HttpReply> sessions;
  std::vector<std::unique_ptr<RtspPlayer>> players;
  auto play = [&] (bool decode) {
    sessions.push_back (d.create_session ("u" + std::to_string (sessions.size ()), "owner"));
    EXPECT_EQ (sessions.back ().status, 201);
    players.push_back (std::make_unique<RtspPlayer> (sessions.back ().str ("rtsp_url"),
                                                     sessions.back ().str ("id"),
                                                     sessions.back ().str ("token"), "tcp", decode));
  };
  play (true);
  ASSERT_TRUE (players[0]->wait_frames (5, 15)) << players[0]->error ();
  g_usleep (500000);
  const int threads_with_one = process_usage (d.pid ()).threads;
  for (int i = 0; i < 12; i++)
    play (false);
  for (auto &p : players)
    EXPECT_TRUE (p->wait_frames (5, 20)) << p->error ();
  const int threads_with_13 = process_usage (d.pid ()).threads;
  EXPECT_LE (threads_with_13 - threads_with_one, 3)
      << threads_with_one << " threads with 1 player, " << threads_with_13 << " with 13";
  EXPECT_EQ (d.metric ("livemicro_viewers{microscope=\"demo\",profile=\"owner\",transport=\"rtsp\"}"), 13);
  // A late player decodes a frame long before the next regular keyframe.
  play (true);
  EXPECT_TRUE (players.back ()->wait_frames (1, 3))
      << "no decoded frame within 3 s: " << players.back ()->error ();
  // The first session's mount refuses the last session's valid credentials.
  RtspPlayer other (sessions[0].str ("rtsp_url"), sessions.back ().str ("id"),
                    sessions.back ().str ("token"));
  EXPECT_FALSE (other.wait_frames (1, 5));
  EXPECT_EQ (other.frames (), 0);
  // Ending one session stops its player only.
  ASSERT_EQ (d.request ("DELETE", "/api/v1/sessions/" + sessions[1].str ("id")).status, 204);
  g_usleep (1500000);
  int ended = players[1]->frames (), going = players[2]->frames ();
  g_usleep (1000000);
  EXPECT_EQ (players[1]->frames (), ended) << "frames still arrive after the session ended";
  EXPECT_GT (players[2]->frames (), going + 15) << "another session's player stalled";
}

// View branches come and go with their sessions (each role in turn, so each
// session builds a new branch while the last one is torn down): the capture
// never stops.  A branch once linked before it played made the capture source
// pause for good.
TEST_F (Livemicrod, ViewBranchesComeAndGoWithoutStoppingTheCapture)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  const char *roles[] = {"owner", "consultant", "trainee", "guest"};
  int served = 0;
  for (int i = 0; i < 24; i++) {
    HttpReply s = d.create_session ("u" + std::to_string (i), roles[i % 4]);
    ASSERT_EQ (s.status, 201) << s.body;
    {
      RtspPlayer p (s.str ("rtsp_url"), s.str ("id"), s.str ("token"), i % 2 ? "udp" : "tcp", false);
      served += p.wait_frames (3, 10);
      ASSERT_EQ (d.request ("DELETE", "/api/v1/sessions/" + s.str ("id")).status, 204);
    }
  }
  EXPECT_EQ (served, 24);
  EXPECT_EQ (d.metric ("livemicro_view_branches{microscope=\"demo\"}"), 0);
}
