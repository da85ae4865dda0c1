// Collaborative control end to end: a real livemicrod, 2 and 20 concurrent
// clients, the events WebSocket, autofocus on the virtual microscope,
// stills, annotations and the audit log.
#include "cdp.h"
#include "daemon_process.h"
#include "events_client.h"
#include "sim/sim_microscope.h"

#include <livemicro/hw/microscope.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <thread>

using livemicro::test::Daemon;
using livemicro::test::EventsClient;
using livemicro::test::HttpReply;

namespace {

const char *kConfig = R"({
  "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 400},
  "control": {"idle_timeout_ms": 30000, "max_commands_per_s": 20},
  "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})";

// A short idle time, for the lapse test only (a loaded machine can take
// longer than that between the steps of the other tests).
const char *kConfigShortLease = R"({
  "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 400},
  "control": {"idle_timeout_ms": 1500, "max_commands_per_s": 20},
  "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})";

class ControlApi : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }

  struct Session {
    std::string id, token, role;
  };
  Session session (Daemon &d, const std::string &user, const std::string &role)
  {
    HttpReply r = d.create_session (user, role);
    EXPECT_EQ (r.status, 201) << r.body;
    return {r.str ("id"), r.str ("token"), role};
  }
  static HttpReply control (Daemon &d, const Session &s, const std::string &body)
  {
    return d.request ("POST", "/api/v1/microscopes/demo/control", body, s.token);
  }
  static HttpReply cmd (Daemon &d, const Session &s, const std::string &lease, const std::string &command)
  {
    return d.request ("POST", "/api/v1/microscopes/demo/commands",
                      "{\"lease\":\"" + lease + "\"," + command + "}", s.token);
  }
  static JsonObject *stage_of (const HttpReply &r)
  {
    return json_object_get_object_member (r.object (), "stage");
  }
  static size_t audit_rows (Daemon &d)
  {
    HttpReply a = d.request ("GET", "/api/v1/audit?limit=10000");
    return json_array_get_length (json_object_get_array_member (a.object (), "audit"));
  }
  // The command's outcome once it is no longer pending (or "" when it still
  // is after `seconds`); each answer must be 200 for this op.
  static std::string outcome (Daemon &d, const Session &s, const HttpReply &accepted, const std::string &op,
                              double seconds)
  {
    const std::string path = "/api/v1/microscopes/demo/commands/"
                             + std::to_string (json_object_get_int_member (accepted.object (), "command"));
    gint64 deadline = g_get_monotonic_time () + (gint64)(seconds * 1e6);
    while (g_get_monotonic_time () < deadline) {
      HttpReply r = d.request ("GET", path, "", s.token);
      EXPECT_EQ (r.status, 200) << r.body;
      EXPECT_EQ (r.str ("op"), op);
      if (r.status != 200 || r.str ("status") != "pending")
        return r.str ("status");
      g_usleep (20000);
    }
    return "";
  }
  // Polls the microscope until `done` holds.
  static bool until (Daemon &d, const std::function<bool (JsonObject *)> &done, double seconds)
  {
    gint64 deadline = g_get_monotonic_time () + (gint64)(seconds * 1e6);
    while (g_get_monotonic_time () < deadline) {
      HttpReply r = d.request ("GET", "/api/v1/microscopes/demo");
      if (r.object () && done (r.object ()))
        return true;
      g_usleep (20000);
    }
    return false;
  }
};

} // namespace

TEST_F (ControlApi, OnlyTheLeaseHolderMovesTheStageAndAStaleLeaseIsRefused)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  Session owner = session (d, "olga", "owner"), cons = session (d, "carl", "consultant");
  HttpReply got = control (d, owner, R"({"action": "request"})");
  ASSERT_EQ (got.status, 200) << got.body;
  std::string lease = got.str ("lease");
  gint64 epoch = json_object_get_int_member (got.object (), "epoch");
  EXPECT_GT (json_object_get_int_member (got.object (), "expires_in_ms"), 0);
  HttpReply queued = control (d, cons, R"({"action": "request"})");
  EXPECT_EQ (queued.status, 202) << queued.body;
  EXPECT_EQ (json_object_get_int_member (queued.object (), "queue_position"), 1);

  HttpReply before = d.request ("GET", "/api/v1/microscopes/demo");
  double x0 = json_object_get_double_member (stage_of (before), "x_um");
  EXPECT_EQ (cmd (d, cons, lease, R"("move_by": {"dx_um": 50, "dy_um": 0})").status, 409)
      << "the owner's lease id is no good in another session's hands";
  EXPECT_EQ (cmd (d, cons, "", R"("move_by": {"dx_um": 50, "dy_um": 0})").status, 409);
  EXPECT_EQ (cmd (d, owner, lease, R"("move_by": {"dx_um": 50, "dy_um": 0})").status, 202);
  EXPECT_TRUE (until (
      d,
      [&] (JsonObject *m) {
        return std::abs (json_object_get_double_member (json_object_get_object_member (m, "stage"), "x_um")
                         - (x0 + 50))
               < 0.6;
      },
      3))
      << "the holder's command moved the stage";
  HttpReply now = d.request ("GET", "/api/v1/microscopes/demo");
  JsonObject *controller = json_object_get_object_member (now.object (), "controller");
  EXPECT_STREQ (json_object_get_string_member (controller, "user"), "olga");
  EXPECT_EQ (json_array_get_length (json_object_get_array_member (now.object (), "queue")), 1u);

  // Release: the consultant drives, with a new lease and a higher epoch.
  EXPECT_EQ (control (d, owner, R"({"action": "release"})").status, 200);
  HttpReply theirs = control (d, cons, R"({"action": "request"})");
  ASSERT_EQ (theirs.status, 200) << theirs.body;
  EXPECT_GT (json_object_get_int_member (theirs.object (), "epoch"), epoch);
  EXPECT_EQ (cmd (d, owner, lease, R"("move_by": {"dx_um": 50, "dy_um": 0})").status, 409)
      << "a late command from the previous driver never moves the stage";
  EXPECT_EQ (cmd (d, cons, theirs.str ("lease"), R"("move_by": {"dx_um": -50, "dy_um": 0})").status, 202);
}

TEST_F (ControlApi, TwentyClientsQueueByRoleAndOnlyTheHolderIsObeyed)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  std::vector<Session> all;
  all.push_back (session (d, "owner", "owner"));
  for (int i = 0; i < 19; i++)
    all.push_back (session (d, "u" + std::to_string (i), i % 2 ? "consultant" : "trainee"));
  size_t rows_before = audit_rows (d);
  std::atomic<int> requests{0};
  // Everyone asks at once (the trainees first, to check priorities reorder them).
  std::vector<std::thread> threads;
  std::map<std::string, HttpReply> replies;
  std::mutex mutex;
  for (int k = 19; k >= 0; k--)
    threads.emplace_back ([&, k] {
      HttpReply r = control (d, all[k], R"({"action": "request"})");
      requests++;
      std::lock_guard<std::mutex> lock (mutex);
      replies.emplace (all[k].id, std::move (r));
    });
  for (auto &t : threads)
    t.join ();
  threads.clear ();
  int granted = 0;
  std::string lease, holder;
  for (auto &[id, r] : replies)
    if (r.status == 200) {
      granted++;
      lease = r.str ("lease");
      holder = id;
    }
  EXPECT_EQ (granted, 1);
  HttpReply m = d.request ("GET", "/api/v1/microscopes/demo");
  JsonArray *queue = json_object_get_array_member (m.object (), "queue");
  ASSERT_EQ (json_array_get_length (queue), 19u);
  // Owner first (unless it holds), then consultants, then trainees.
  int last = 4;
  for (guint i = 0; i < json_array_get_length (queue); i++) {
    std::string role = json_object_get_string_member (json_array_get_object_element (queue, i), "role");
    int p = role == "owner" ? 3 : role == "consultant" ? 2 : 1;
    EXPECT_LE (p, last) << "queue position " << i << " is " << role;
    last = p;
  }
  // Everyone fires commands with whatever lease they believe in: only the
  // holder's are accepted.
  std::atomic<int> accepted{0}, refused_wrong_lease{0}, other{0};
  for (auto &s : all)
    threads.emplace_back ([&, s] {
      for (int i = 0; i < 3; i++) {
        HttpReply r = cmd (d, s, lease, R"("move_by": {"dx_um": 1, "dy_um": 0})");
        requests++;
        if (r.status == 202)
          accepted++;
        else if (r.status == 409)
          refused_wrong_lease++;
        else
          other++;
      }
    });
  for (auto &t : threads)
    t.join ();
  EXPECT_EQ (accepted, 3);
  EXPECT_EQ (refused_wrong_lease, 19 * 3);
  EXPECT_EQ (other, 0);
  // Exactly one audit row per request.
  EXPECT_EQ (audit_rows (d) - rows_before, (size_t)requests.load ());
  // Handing over follows the queue.
  std::string first_waiting
      = json_object_get_string_member (json_array_get_object_element (queue, 0), "session");
  for (auto &s : all)
    if (s.id == holder)
      control (d, s, R"({"action": "release"})");
  HttpReply after = d.request ("GET", "/api/v1/microscopes/demo");
  EXPECT_STREQ (json_object_get_string_member (json_object_get_object_member (after.object (), "controller"),
                                               "session"),
                first_waiting.c_str ());
}

TEST_F (ControlApi, AnIdleLeaseLapsesToTheNextInLine)
{
  Daemon d (kConfigShortLease);
  ASSERT_TRUE (d.start ()) << d.error ();
  Session a = session (d, "a", "consultant"), b = session (d, "b", "trainee");
  HttpReply la = control (d, a, R"({"action": "request"})");
  ASSERT_EQ (la.status, 200);
  ASSERT_EQ (control (d, b, R"({"action": "request"})").status, 202);
  g_usleep (800000);
  EXPECT_EQ (control (d, a, "{\"action\": \"renew\", \"lease\": \"" + la.str ("lease") + "\"}").status, 200);
  g_usleep (800000);
  HttpReply still_a = d.request ("GET", "/api/v1/microscopes/demo");
  EXPECT_STREQ (
      json_object_get_string_member (json_object_get_object_member (still_a.object (), "controller"), "user"),
      "a");
  EXPECT_TRUE (until (
      d,
      [] (JsonObject *m) {
        JsonNode *c = json_object_get_member (m, "controller");
        return c && JSON_NODE_HOLDS_OBJECT (c)
               && std::string (json_object_get_string_member (json_node_get_object (c), "user")) == "b";
      },
      2.5))
      << "1.5 s idle hands control to the next";
  EXPECT_EQ (control (d, a, "{\"action\": \"renew\", \"lease\": \"" + la.str ("lease") + "\"}").status, 409);
}

TEST_F (ControlApi, OwnerGrantsAndRevokesGuestsCannotDrive)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  Session owner = session (d, "o", "owner"), t = session (d, "t", "trainee"), g = session (d, "g", "guest");
  EXPECT_EQ (control (d, g, R"({"action": "request"})").status, 403);
  EXPECT_EQ (control (d, t, "{\"action\": \"grant\", \"session\": \"" + owner.id + "\"}").status, 403);
  HttpReply granted = control (d, owner, "{\"action\": \"grant\", \"session\": \"" + t.id + "\"}");
  ASSERT_EQ (granted.status, 200) << granted.body;
  HttpReply mine = control (d, t, R"({"action": "request"})");
  EXPECT_EQ (mine.str ("lease"), granted.str ("lease")) << "the grantee learns its lease by asking";
  EXPECT_EQ (d.request ("POST", "/api/v1/microscopes/demo/control", R"({"action": "revoke"})").status, 200)
      << "the admin revokes";
  EXPECT_EQ (cmd (d, t, mine.str ("lease"), R"("focus_by": {"dz_um": 1})").status, 409);
}

TEST_F (ControlApi, LimitsAndRateLimitsHoldAndStopIsObeyedUnderAFlood)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  Session o = session (d, "o", "owner");
  std::string lease = control (d, o, R"({"action": "request"})").str ("lease");
  HttpReply far = cmd (d, o, lease, R"("move": {"x_um": 10, "y_um": 12000})");
  EXPECT_EQ (far.status, 422);
  EXPECT_NE (far.str ("error").find ("soft travel limit"), std::string::npos) << far.body;
  EXPECT_EQ (cmd (d, o, lease, R"("focus": {"z_um": 1990})").status, 202)
      << "10x has room up to the drive's end";
  EXPECT_EQ (cmd (d, o, lease, R"("objective": 40)").status, 202);
  ASSERT_TRUE (until (
      d, [] (JsonObject *m) { return json_object_get_int_member (m, "objective") == 40; }, 3));
  HttpReply crash = cmd (d, o, lease, R"("focus": {"z_um": 1800})");
  EXPECT_EQ (crash.status, 422) << "40x: the focus stops 100 µm short of the slide";
  EXPECT_NE (crash.str ("error").find ("1500"), std::string::npos) << crash.body;
  EXPECT_EQ (cmd (d, o, lease, R"("objective": 60)").status, 422);
  EXPECT_EQ (cmd (d, o, lease, R"("move_by": {"dx_um": "far"})").status, 422);
  EXPECT_EQ (cmd (d, o, lease, R"("teleport": {})").status, 422);
  EXPECT_EQ (d.request ("POST", "/api/v1/microscopes/demo/commands",
                        "{\"lease\":\"" + lease + "\",\"move_by\":{\"dx_um\":1,\"dy_um\":0},\"stop\":{}}",
                        o.token)
                 .status,
             422)
      << "one command per request";

  // A flood: the bucket empties, 429s follow; a stop still goes through and
  // the stage stands still afterwards.
  g_usleep (1100000);
  int ok = 0, limited = 0;
  for (int i = 0; i < 60; i++) {
    int s = cmd (d, o, lease, R"("move_by": {"dx_um": 200, "dy_um": 0})").status;
    ok += s == 202;
    limited += s == 429;
  }
  EXPECT_GE (limited, 20);
  EXPECT_LE (ok, 40);
  HttpReply stop = cmd (d, o, lease, R"("stop": {})");
  ASSERT_EQ (stop.status, 202) << stop.body;
  // Once the stop is done, the state read is the one after it.
  ASSERT_EQ (outcome (d, o, stop, "stop", 5), "done");
  ASSERT_TRUE (until (
      d, [] (JsonObject *m) { return !json_object_get_boolean_member (m, "moving"); }, 2));
  HttpReply a = d.request ("GET", "/api/v1/microscopes/demo");
  g_usleep (500000);
  HttpReply b = d.request ("GET", "/api/v1/microscopes/demo");
  EXPECT_DOUBLE_EQ (json_object_get_double_member (stage_of (a), "x_um"),
                    json_object_get_double_member (stage_of (b), "x_um"))
      << "nothing queued before the stop moves the stage after it";
}

// A command's end is heard after the state it left: a client that learns a
// stop is done and then reads the microscope sees the stage stopped where
// it stays (not a position sampled while it still glided).
TEST_F (ControlApi, AfterAStopIsDoneTheMicroscopeReadsStoppedWhereItStays)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  Session o = session (d, "o", "owner");
  std::string lease = control (d, o, R"({"action": "request"})").str ("lease");
  for (int round = 0; round < 4; round++) {
    const char *jog = round % 2 ? R"("jog": {"vx_um_s": -400, "vy_um_s": 0})"
                                : R"("jog": {"vx_um_s": 400, "vy_um_s": 0})";
    ASSERT_EQ (cmd (d, o, lease, jog).status, 202);
    ASSERT_TRUE (until (
        d, [] (JsonObject *m) { return json_object_get_boolean_member (m, "moving"); }, 3))
        << "round " << round;
    HttpReply stop = cmd (d, o, lease, R"("stop": {})");
    ASSERT_EQ (stop.status, 202) << stop.body;
    ASSERT_EQ (outcome (d, o, stop, "stop", 5), "done");
    HttpReply a = d.request ("GET", "/api/v1/microscopes/demo");
    EXPECT_FALSE (json_object_get_boolean_member (a.object (), "moving")) << "round " << round;
    g_usleep (300000);
    HttpReply b = d.request ("GET", "/api/v1/microscopes/demo");
    EXPECT_DOUBLE_EQ (json_object_get_double_member (stage_of (a), "x_um"),
                      json_object_get_double_member (stage_of (b), "x_um"))
        << "round " << round;
  }
}

TEST_F (ControlApi, EventsCarryPositionWhileMovingControlPresenceAndCommandResults)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  Session o = session (d, "o", "owner");
  EventsClient ev (d.http_port (), "demo", o.token);
  ASSERT_TRUE (ev.connected ());
  ASSERT_TRUE (ev.wait_for (
      "welcome", [] (JsonObject *) { return true; }, 5));
  EXPECT_TRUE (ev.wait_for (
      "presence",
      [] (JsonObject *m) {
        JsonArray *a = json_object_get_array_member (m, "data");
        return a && json_array_get_length (a) == 1;
      },
      5));
  std::string lease = control (d, o, R"({"action": "request"})").str ("lease");
  EXPECT_TRUE (ev.wait_for (
      "control",
      [] (JsonObject *m) {
        JsonObject *data = json_object_get_object_member (m, "data");
        JsonNode *c = json_object_get_member (data, "controller");
        return c && JSON_NODE_HOLDS_OBJECT (c);
      },
      5));
  // A slow, long move: a jog at 500 µm/s renewed for ~2 s, as the page does
  // while a key is held; the worker reports the position at 10 Hz meanwhile.
  HttpReply j = cmd (d, o, lease, R"("jog": {"vx_um_s": 500, "vy_um_s": 0})");
  ASSERT_EQ (j.status, 202) << j.body;
  gint64 id = json_object_get_int_member (j.object (), "command");
  EXPECT_TRUE (ev.wait_for (
      "command",
      [id] (JsonObject *m) {
        JsonObject *data = json_object_get_object_member (m, "data");
        return json_object_get_int_member (data, "id") == id
               && std::string (json_object_get_string_member (data, "status")) == "done";
      },
      5));
  for (int i = 0; i < 6; i++) {
    g_usleep (300000);
    EXPECT_EQ (cmd (d, o, lease, R"("jog": {"vx_um_s": 500, "vy_um_s": 0})").status, 202);
  }
  g_usleep (1200000); // the jog's dead-man time stops it
  std::vector<gint64> moving_at;
  for (const auto &e : ev.events ())
    if (e.type == "state" && e.json.find ("\"moving\":true") != std::string::npos)
      moving_at.push_back (e.at_us);
  ASSERT_GE (moving_at.size (), 4u);
  double span_s = (moving_at.back () - moving_at.front ()) / 1e6;
  // The worker reports at 10 Hz while moving; a loaded machine delays some
  // reports, so this asks for half of it (the rate itself is a benchmark's).
  EXPECT_GE ((moving_at.size () - 1) / span_s, 5.0) << "position updates while moving";
  ASSERT_TRUE (until (
      d, [] (JsonObject *m) { return !json_object_get_boolean_member (m, "moving"); }, 2))
      << "a jog without renewal stops by itself";
}

TEST_F (ControlApi, AJoggingDriversDroppedConnectionStopsTheMotion)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  Session o = session (d, "o", "owner");
  auto ev = std::make_unique<EventsClient> (d.http_port (), "demo", o.token);
  ASSERT_TRUE (ev->wait_for (
      "welcome", [] (JsonObject *) { return true; }, 5));
  std::string lease = control (d, o, R"({"action": "request"})").str ("lease");
  // Keep jogging (renewing within the dead-man time), then drop the socket.
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ (cmd (d, o, lease, R"("jog": {"vx_um_s": 300, "vy_um_s": 0})").status, 202);
    g_usleep (250000);
  }
  ASSERT_TRUE (until (
      d, [] (JsonObject *m) { return json_object_get_boolean_member (m, "moving"); }, 1));
  ASSERT_EQ (cmd (d, o, lease, R"("jog": {"vx_um_s": 300, "vy_um_s": 0})").status, 202);
  gint64 dropped = g_get_monotonic_time ();
  ev.reset ();
  ASSERT_TRUE (until (
      d, [] (JsonObject *m) { return !json_object_get_boolean_member (m, "moving"); }, 2));
  EXPECT_LT (g_get_monotonic_time () - dropped, 600000) << "stopped by the drop, not only the dead-man";
  HttpReply audit = d.request ("GET", "/api/v1/audit");
  EXPECT_NE (audit.body.find ("connection dropped"), std::string::npos);
}

TEST_F (ControlApi, AutofocusEndsWithinOneMicronOfBestFocusWithinTwoSeconds)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  Session o = session (d, "o", "owner");
  EventsClient ev (d.http_port (), "demo", o.token);
  std::string lease = control (d, o, R"({"action": "request"})").str ("lease");
  ASSERT_EQ (cmd (d, o, lease, R"("objective": 40)").status, 202);
  ASSERT_EQ (cmd (d, o, lease, R"("move_by": {"dx_um": 1500, "dy_um": -700})").status, 202);
  ASSERT_EQ (cmd (d, o, lease, R"("focus_by": {"dz_um": 6})").status, 202);
  ASSERT_TRUE (until (
      d,
      [] (JsonObject *m) {
        return json_object_get_int_member (m, "objective") == 40
               && !json_object_get_boolean_member (m, "moving");
      },
      3));
  g_usleep (200000);
  gint64 t0 = g_get_monotonic_time ();
  HttpReply af = cmd (d, o, lease, R"("autofocus": {})");
  ASSERT_EQ (af.status, 202) << af.body;
  gint64 id = json_object_get_int_member (af.object (), "command");
  EventsClient::Event done;
  ASSERT_TRUE (ev.wait_for (
      "command",
      [id] (JsonObject *m) {
        JsonObject *data = json_object_get_object_member (m, "data");
        return json_object_get_int_member (data, "id") == id
               && std::string (json_object_get_string_member (data, "status")) != "accepted";
      },
      10, &done))
      << "no result for the autofocus";
  double seconds = (done.at_us - t0) / 1e6;
  if (g_getenv ("LIVEMICRO_AF_DEBUG"))
    std::fprintf (stderr, "%s\n", d.log ().c_str ());
  EXPECT_NE (done.json.find ("\"done\""), std::string::npos) << done.json;
  EXPECT_LE (seconds, 2.0) << done.json;
  // The truth: the same virtual microscope's focal surface at that spot
  // (state events come at 10 Hz: let the last one arrive).
  g_usleep (300000);
  HttpReply m = d.request ("GET", "/api/v1/microscopes/demo");
  double x = json_object_get_double_member (stage_of (m), "x_um"),
         y = json_object_get_double_member (stage_of (m), "y_um");
  double z = json_object_get_double_member (stage_of (m), "z_um");
  auto scope = livemicro::hw::open_microscope ("sim://synthetic");
  double truth = dynamic_cast<livemicro::hw::sim::SimMicroscope &> (*scope).focus_at (x, y);
  EXPECT_NEAR (z, truth, 1.0) << done.json;
}

TEST_F (ControlApi, StillsAreFullResolutionPngsAndAnnotationsExportAsGeoJson)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  Session o = session (d, "o", "owner");
  HttpReply still = d.request ("POST", "/api/v1/sessions/" + o.id + "/stills", "", o.token);
  ASSERT_EQ (still.status, 200) << still.body.substr (0, 200) << "\ndaemon log:\n" << d.log ();
  ASSERT_GT (still.body.size (), 24u);
  EXPECT_EQ (still.body.substr (1, 3), "PNG");
  auto be32 = [&] (size_t at) {
    const unsigned char *p = reinterpret_cast<const unsigned char *> (still.body.data ()) + at;
    return (p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
  };
  EXPECT_EQ (be32 (16), 320) << "the capture's full width";
  EXPECT_EQ (be32 (20), 240);
  EXPECT_EQ ((unsigned char)still.body[24], 8) << "8 bits per channel";
  EXPECT_TRUE (still.body[25] == 2 || still.body[25] == 6)
      << "colour (RGB or RGBA), not grey: type " << (int)still.body[25];
  // Annotations: bad shapes refused, good ones exported for QuPath.
  auto post = [&] (const std::string &body) {
    return d.request ("POST", "/api/v1/microscopes/demo/annotations", body, o.token);
  };
  EXPECT_EQ (post (R"({"kind": "region", "points_um": [[1, 2], [3, 4]]})").status, 422);
  EXPECT_EQ (post (R"({"kind": "blob", "points_um": [[1, 2]]})").status, 422);
  EXPECT_EQ (post (R"({"kind": "point", "points_um": [["a", 2]]})").status, 422);
  ASSERT_EQ (post (R"({"kind": "arrow", "label": "mitosis?", "points_um": [[47000, 12000], [47010, 12005]]})")
                 .status,
             201);
  ASSERT_EQ (
      post (R"({"kind": "region", "label": "tumour", "points_um": [[100, 200], [300, 200], [300, 400]]})")
          .status,
      201);
  HttpReply gj
      = d.request ("GET", "/api/v1/sessions/" + o.id + "/annotations.geojson?um_per_px=0.5", "", o.token);
  ASSERT_EQ (gj.status, 200);
  EXPECT_EQ (gj.str ("type"), "FeatureCollection");
  JsonArray *features = json_object_get_array_member (gj.object (), "features");
  ASSERT_EQ (json_array_get_length (features), 2u);
  JsonObject *region = json_array_get_object_element (features, 1);
  JsonObject *geom = json_object_get_object_member (region, "geometry");
  EXPECT_STREQ (json_object_get_string_member (geom, "type"), "Polygon");
  JsonArray *ring = json_array_get_array_element (json_object_get_array_member (geom, "coordinates"), 0);
  ASSERT_EQ (json_array_get_length (ring), 4u) << "closed ring";
  EXPECT_DOUBLE_EQ (json_array_get_double_element (json_array_get_array_element (ring, 0), 0), 200.0)
      << "100 µm at 0.5 µm/px";
  EXPECT_STREQ (
      json_object_get_string_member (json_object_get_object_member (region, "properties"), "objectType"),
      "annotation");
  HttpReply audit = d.request ("GET", "/api/v1/audit");
  EXPECT_NE (audit.body.find ("\"action\":\"still\""), std::string::npos);
}

// GET /api/v1/microscopes/{id}/annotations.geojson: every session's
// annotations, in QuPath's GeoJSON, to each caller as its profile allows.
// Here the guest profile shows annotations (a profiles file), so what keeps
// patient data out of its export is the masked slide label alone.
// Long by nature: one story, the same export read by each profile in turn.
TEST_F (ControlApi, MicroscopeAnnotationsExportAsQuPathGeoJsonAsEachProfileMaysee)
{
  livemicro::test::TempDir dir;
  const std::string profiles = dir.file ("profiles.json");
  ASSERT_TRUE (g_file_set_contents (profiles.c_str (), R"({"version": 1,
    "regions": [{"name": "slide-label", "class": "label", "rect_um": [0, 0, 20000, 25000]}],
    "profiles": [
      {"name": "owner", "regions": [], "detect": [], "may_control": true, "overlays": ["*"]},
      {"name": "consultant", "regions": ["slide-label"], "detect": [], "may_control": true, "overlays": ["*"]},
      {"name": "trainee", "regions": ["slide-label"], "detect": [], "overlays": ["pointers"]},
      {"name": "guest", "regions": ["*"], "detect": [], "overlays": ["pointers", "annotations"]}]})",
                                    -1, nullptr));
  Daemon d (std::string (R"({
    "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 400},
    "profiles_file": ")")
            + profiles + R"(",
    "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})");
  ASSERT_TRUE (d.start ()) << d.error () << d.log ();
  Session o = session (d, "olga", "owner"), c = session (d, "carl", "consultant");
  Session g = session (d, "gus", "guest"), t = session (d, "tess", "trainee");
  auto annotate = [&] (const Session &s, const std::string &body) {
    HttpReply r = d.request ("POST", "/api/v1/microscopes/demo/annotations", body, s.token);
    EXPECT_EQ (r.status, 201) << r.body;
  };
  annotate (
      o,
      R"({"kind": "region", "label": "Tumor", "points_um": [[30000, 12000], [30400, 12000], [30400, 12300]]})");
  annotate (c, R"({"kind": "point", "label": "stroma", "points_um": [[30100, 12100]]})");
  annotate (
      c,
      R"({"kind": "region", "label": "label: name?", "points_um": [[1000, 1000], [5000, 1000], [5000, 3000]]})");
  auto features = [&] (const std::string &token, int status = 200) -> std::vector<JsonObject *> {
    static std::vector<HttpReply> keep; // the objects live as long as their reply
    keep.push_back (
        d.request ("GET", "/api/v1/microscopes/demo/annotations.geojson?um_per_px=0.5", "", token));
    EXPECT_EQ (keep.back ().status, status) << keep.back ().body;
    std::vector<JsonObject *> out;
    if (status != 200 || !keep.back ().object ())
      return out;
    EXPECT_EQ (keep.back ().str ("type"), "FeatureCollection");
    JsonArray *a = json_object_get_array_member (keep.back ().object (), "features");
    for (guint i = 0; a && i < json_array_get_length (a); i++)
      out.push_back (json_array_get_object_element (a, i));
    return out;
  };
  auto props = [] (JsonObject *f) { return json_object_get_object_member (f, "properties"); };
  // The admin and the owner: all three, every session's.
  ASSERT_EQ (features (Daemon::kAdminToken).size (), 3u);
  std::vector<JsonObject *> all = features (o.token);
  ASSERT_EQ (all.size (), 3u);
  // QuPath's conventions: a UUID id, objectType, a standard class with QuPath's colour.
  JsonObject *tumor = all[0];
  const std::string id = json_object_get_string_member (tumor, "id");
  EXPECT_TRUE (g_regex_match_simple ("^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
                                     id.c_str (), (GRegexCompileFlags)0, (GRegexMatchFlags)0))
      << id;
  EXPECT_STREQ (json_object_get_string_member (props (tumor), "objectType"), "annotation");
  EXPECT_STREQ (json_object_get_string_member (props (tumor), "name"), "Tumor");
  JsonObject *cls = json_object_get_object_member (props (tumor), "classification");
  EXPECT_STREQ (json_object_get_string_member (cls, "name"), "Tumor");
  JsonArray *color = json_object_get_array_member (cls, "color");
  ASSERT_EQ (json_array_get_length (color), 3u);
  EXPECT_EQ (json_array_get_int_element (color, 0), 200);
  EXPECT_EQ (json_array_get_int_element (color, 1), 0);
  EXPECT_EQ (json_array_get_int_element (color, 2), 0);
  JsonObject *stroma = json_object_get_object_member (props (all[1]), "classification");
  EXPECT_STREQ (json_object_get_string_member (stroma, "name"), "Stroma") << "case does not matter";
  EXPECT_EQ (json_array_get_int_element (json_object_get_array_member (stroma, "color"), 0), 150);
  EXPECT_FALSE (json_object_has_member (props (all[2]), "classification")) << "not a QuPath class";
  JsonArray *ring = json_array_get_array_element (
      json_object_get_array_member (json_object_get_object_member (tumor, "geometry"), "coordinates"), 0);
  EXPECT_DOUBLE_EQ (json_array_get_double_element (json_array_get_array_element (ring, 0), 0), 60000.0)
      << "30000 µm at 0.5 µm/px";
  EXPECT_STREQ (json_object_get_string_member (props (all[1]), "author"), "carl");
  // The same annotation keeps its id from one export to the next.
  EXPECT_EQ (json_object_get_string_member (features (o.token)[0], "id"), id);
  // The consultant and the guest: not what lies on the slide label they do not see.
  for (const Session *s : {&c, &g}) {
    std::vector<JsonObject *> seen = features (s->token);
    ASSERT_EQ (seen.size (), 2u) << s->role;
    for (JsonObject *f : seen)
      EXPECT_STRNE (json_object_get_string_member (props (f), "name"), "label: name?") << s->role;
  }
  // A profile that does not show annotations gets none, with the reason.
  features (t.token, 403);
  EXPECT_NE (d.request ("GET", "/api/v1/microscopes/demo/annotations.geojson", "", t.token)
                 .body.find ("trainee profile does not show annotations"),
             std::string::npos);
  // One session's export follows the same masks.
  HttpReply own = d.request ("GET", "/api/v1/sessions/" + c.id + "/annotations.geojson", "", c.token);
  ASSERT_EQ (own.status, 200);
  EXPECT_EQ (json_array_get_length (json_object_get_array_member (own.object (), "features")), 1u);
  HttpReply by_owner = d.request ("GET", "/api/v1/sessions/" + c.id + "/annotations.geojson", "", o.token);
  EXPECT_EQ (json_array_get_length (json_object_get_array_member (by_owner.object (), "features")), 2u);
  // Bad input: a clear 422 or 404.
  HttpReply bad
      = d.request ("GET", "/api/v1/microscopes/demo/annotations.geojson?um_per_px=abc", "", o.token);
  EXPECT_EQ (bad.status, 422);
  EXPECT_NE (bad.str ("error").find ("um_per_px 'abc'"), std::string::npos) << bad.body;
  EXPECT_EQ (
      d.request ("GET", "/api/v1/microscopes/nope/annotations.geojson", "", Daemon::kAdminToken).status, 404);
}

// GET /api/v1/microscopes/{id}/commands/{command}: pending until the
// hardware thread reports the end, then done (or failed, with why).
TEST_F (ControlApi, ACommandsOutcomeCanBeAskedFor)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  Session o = session (d, "olga", "owner");
  HttpReply lease = control (d, o, R"({"action":"request"})");
  ASSERT_EQ (lease.status, 200) << lease.body;
  HttpReply accepted = cmd (d, o, lease.str ("lease"), R"("move": {"x_um": 30000, "y_um": 12000})");
  ASSERT_EQ (accepted.status, 202) << accepted.body;
  EXPECT_EQ (outcome (d, o, accepted, "move", 30), "done");
  // done: the hardware took the target (the stage gets there on its own time).
  EXPECT_TRUE (until (
      d,
      [] (JsonObject *m) {
        JsonObject *st = json_object_get_object_member (m, "stage");
        return std::abs (json_object_get_double_member (st, "x_um") - 30000) < 1.0
               && !json_object_get_boolean_member (m, "moving");
      },
      60));
  for (const char *id : {"999999", "abc", "-1", "1x"}) {
    HttpReply r = d.request ("GET", std::string ("/api/v1/microscopes/demo/commands/") + id, "", o.token);
    EXPECT_EQ (r.status, 404) << id;
    EXPECT_FALSE (r.str ("error").empty ()) << id;
  }
}

TEST_F (ControlApi, ChromiumDrivesTheViewerPageRequestControlArrowKeyStageMovesVideoChanges)
{
  if (!livemicro::test::ChromiumPage::available ())
    GTEST_SKIP () << "Debian's chromium is not installed (scripts/install-deps.sh installs it)";
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply s = d.create_session ("olga", "owner");
  ASSERT_EQ (s.status, 201);
  livemicro::test::ChromiumPage page (s.str ("viewer_url"));
  ASSERT_TRUE (page.connected ()) << "no DevTools connection to Chromium";
  ASSERT_TRUE (page.wait_true ("window.livemicro && window.livemicro.framesDecoded > 10", 30))
      << "the page shows video";
  // A checksum of what the video shows now.
  const std::string checksum = R"((() => {
      const v = document.getElementById('video');
      const c = document.createElement('canvas');
      c.width = 160; c.height = 120;
      const g = c.getContext('2d');
      g.drawImage(v, 0, 0, 160, 120);
      const d = g.getImageData(0, 0, 160, 120).data;
      let h = 0;
      for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) >>> 0;
      return h;
    })())";
  std::string before = page.evaluate (checksum);
  HttpReply m0 = d.request ("GET", "/api/v1/microscopes/demo");
  double x0 = json_object_get_double_member (stage_of (m0), "x_um");

  page.evaluate ("document.getElementById('request').click()");
  ASSERT_TRUE (page.wait_true ("window.livemicro.lease", 10)) << "the page got the lease";
  page.evaluate ("document.getElementById('stage').focus()");
  page.key ("rawKeyDown", "ArrowRight", 39);
  g_usleep (800000);
  page.key ("keyUp", "ArrowRight", 39);
  ASSERT_TRUE (until (
      d, [] (JsonObject *m) { return !json_object_get_boolean_member (m, "moving"); }, 3));
  HttpReply m1 = d.request ("GET", "/api/v1/microscopes/demo");
  double x1 = json_object_get_double_member (stage_of (m1), "x_um");
  EXPECT_GT (x1 - x0, 100) << "jogging right for 0.8 s at a field per second (320 µm/s at 10x)";
  g_usleep (500000);
  std::string after = page.evaluate (checksum);
  EXPECT_FALSE (before.empty ());
  EXPECT_NE (before, after) << "the video shows the new field";
  // The page says who drives; a refused command is shown with its reason.
  EXPECT_NE (page.evaluate ("document.getElementById('driver').textContent").find ("you"), std::string::npos);
  ASSERT_EQ (d.request ("POST", "/api/v1/microscopes/demo/control", R"({"action": "revoke"})").status, 200);
  g_usleep (300000);
  page.evaluate ("document.getElementById('stop').click()"); // the owner may always stop
  // A page that still believes it drives (the control event not there yet)
  // sends with its old lease: the 409 is told in words.
  page.evaluate ("window.livemicro.lease = 'stale'; window.livemicro.control = {controller: {session: '"
                 + s.str ("id")
                 + "'}, queue: []}; document.getElementById('autofocus').disabled = false; "
                   "document.getElementById('autofocus').click()");
  EXPECT_TRUE (page.wait_true ("document.getElementById('notice').textContent.includes('lease lapsed')", 5))
      << page.evaluate ("document.getElementById('notice').textContent");
}
