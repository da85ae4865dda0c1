// Real livemicrod processes joining an edge cloud through real etcd members
// started by the test, all on 127.0.0.1: membership, microscope homes,
// fencing of stage commands when a node is cut off from etcd, the cluster
// audit log, livemicroctl cluster status, an etcd member lost, and a
// serving node that dies under a browser (headless Chromium) and RTSP players.
#include "../orchestrator/cdp.h"
#include "../orchestrator/daemon_process.h"
#include "../orchestrator/events_client.h"
#include "../orchestrator/webrtc_client.h"
#include "etcd_client.h"
#include "etcd_cluster.h"

#include <gtest/gtest.h>

#include <cmath>

using livemicro::test::Daemon;
using livemicro::test::EtcdCluster;
using livemicro::test::eventually;
using livemicro::test::HttpReply;
using livemicro::test::TcpRelay;

namespace {

std::string
small_config (const std::string &microscope)
{
  return R"({"video": {"width": 320, "height": 240, "framerate": 15, "bitrate_kbps": 300},
  "control": {"idle_timeout_ms": 30000, "max_commands_per_s": 1000},
  "microscopes": [{"id": ")"
         + microscope + R"(", "uri": "sim://synthetic"}]})";
}

JsonArray *
array (const HttpReply &r, const char *name)
{
  return r.object () && json_object_has_member (r.object (), name)
             ? json_object_get_array_member (r.object (), name)
             : nullptr;
}

int
count_nodes (const Daemon &d)
{
  HttpReply r = d.request ("GET", "/api/v1/cluster");
  JsonArray *a = array (r, "nodes");
  return a ? (int)json_array_get_length (a) : -1;
}

std::string
home_of (const Daemon &d, const std::string &microscope)
{
  HttpReply r = d.request ("GET", "/api/v1/cluster");
  JsonArray *a = array (r, "microscopes");
  for (guint i = 0; a && i < json_array_get_length (a); i++) {
    JsonObject *m = json_array_get_object_element (a, i);
    if (json_object_get_string_member (m, "id") == microscope)
      return json_object_get_string_member (m, "home");
  }
  return "";
}

struct Driver {
  std::string token, lease;
  std::string session = "";
  int64_t epoch = 0;
};

Driver
take_control (const Daemon &d, const std::string &microscope)
{
  HttpReply s = d.create_session ("pat", "owner", microscope);
  EXPECT_EQ (s.status, 201) << s.body;
  Driver drv{s.str ("token"), "", s.str ("id")};
  HttpReply c = d.request ("POST", "/api/v1/microscopes/" + microscope + "/control",
                           R"({"action":"request"})", drv.token);
  EXPECT_EQ (c.status, 200) << c.body;
  drv.lease = c.str ("lease");
  drv.epoch = c.integer ("epoch");
  return drv;
}

HttpReply
move (const Daemon &d, const std::string &microscope, const Driver &drv, double x_um)
{
  return d.request ("POST", "/api/v1/microscopes/" + microscope + "/commands",
                    "{\"lease\":\"" + drv.lease + "\",\"move_by\":{\"dx_um\":" + std::to_string (x_um)
                        + ",\"dy_um\":0}}",
                    drv.token);
}

// A WHEP player at `serving` of a session whose view `home` relays there
// (consultant view of scope-a): answered by `serving`, the media flowing
// from it; it ends with its session, which this ends.
void
whep_plays_from_serving_node (const Daemon &home, const Daemon &serving, const std::string &id,
                              const std::string &token)
{
  const char *webrtc = R"(livemicro_viewers{microscope="scope-a",profile="consultant",transport="webrtc"})";
  livemicro::test::WebRtcClient whep (livemicro::test::WebRtcClient::Whep{}, serving.http_port (), id, token);
  ASSERT_EQ (whep.whep_status (), 201) << whep.whep_answer ();
  EXPECT_TRUE (whep.wait_frames (10, 40)) << whep.frames () << " frames decoded";
  EXPECT_EQ (serving.metric (webrtc), 1) << serving.metrics ();
  EXPECT_EQ (home.metric (R"(livemicro_relay_out_callers{microscope="scope-a",profile="consultant"})"), 1);
  EXPECT_EQ (home.metric (webrtc), 0) << "the media flows from the serving node, not the home";
  EXPECT_EQ (serving.request ("DELETE", "/api/v1/sessions/" + id).status, 204);
  EXPECT_TRUE (eventually ([&] { return serving.metric (webrtc) <= 0; }, 5))
      << "the WHEP peer ended with its session";
}

} // namespace

class EdgeCloud : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }
  void SetUp () override
  {
    if (!livemicro::test::etcd_available ())
      GTEST_SKIP () << "etcd is not installed (scripts/install-deps.sh installs etcd-server)";
  }
};

TEST_F (EdgeCloud, NodesJoinOwnTheirMicroscopesAndListEachOther)
{
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  Daemon a (small_config ("scope-a")), b (small_config ("scope-b"));
  a.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", "node-a", "--site", "north"};
  b.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", "node-b", "--site", "south"};
  ASSERT_TRUE (a.start ()) << a.error ();
  ASSERT_TRUE (b.start ()) << b.error ();
  // (A node registers, then takes its microscopes: the others may read the
  // first before the second.)
  ASSERT_TRUE (eventually (
      [&] {
        return count_nodes (a) == 2 && count_nodes (b) == 2 && home_of (b, "scope-a") == "node-a"
               && home_of (a, "scope-b") == "node-b";
      },
      5))
      << "homes seen: scope-a on '" << home_of (b, "scope-a") << "', scope-b on '" << home_of (a, "scope-b")
      << "'";

  // Sessions see nothing of the cluster; the admin does.
  Driver drv = take_control (a, "scope-a");
  EXPECT_EQ (a.request ("GET", "/api/v1/cluster", "", drv.token).status, 403);

  // A keyframe of a view is the admin's (the nodes') to ask; bad asks change nothing.
  const std::string kf = "/api/v1/microscopes/scope-a/keyframe";
  EXPECT_EQ (a.request ("POST", kf, R"({"profile": "owner"})", drv.token).status, 403);
  EXPECT_EQ (a.request ("POST", kf, R"({"profile": 3})").status, 422);
  EXPECT_EQ (a.request ("POST", kf, R"({"profile": "owner", "x": 1})").status, 422);
  EXPECT_EQ (a.request ("POST", kf, "{not json").status, 400);
  EXPECT_EQ (a.request ("POST", kf, R"({"profile": "no-such-view"})").status, 404);
  EXPECT_EQ (a.request ("POST", kf, R"({"profile": "owner"})").status, 202);

  // Commands pass the fence and land in the cluster's audit log.
  HttpReply m = move (a, "scope-a", drv, 10);
  EXPECT_EQ (m.status, 202) << m.body;

  // livemicroctl shows the same.
  g_autofree char *ctl
      = g_find_program_in_path (g_getenv ("LIVEMICROCTL") ? g_getenv ("LIVEMICROCTL") : "livemicroctl");
  ASSERT_TRUE (ctl);
  const char *argv[]
      = {ctl, "--server", nullptr, "--token", Daemon::kAdminToken, "cluster", "status", nullptr};
  const std::string url = "http://127.0.0.1:" + std::to_string (b.http_port ());
  argv[2] = url.c_str ();
  g_autofree char *out = nullptr;
  gint status = -1;
  ASSERT_TRUE (g_spawn_sync (nullptr, (char **)argv, nullptr, G_SPAWN_DEFAULT, nullptr, nullptr, &out,
                             nullptr, &status, nullptr));
  EXPECT_EQ (status, 0) << out;
  const std::string text = out ? out : "";
  for (const char *want :
       {"node node-b (site south): joined", "node-a", "north", "scope-a", "scope-b", "healthy"})
    EXPECT_NE (text.find (want), std::string::npos) << want << " missing in:\n" << text;

  // A node that leaves is gone for the others at once (its lease revoked).
  b.stop ();
  EXPECT_TRUE (eventually ([&] { return count_nodes (a) == 1; }, 2)) << "node-b still listed";
  EXPECT_EQ (home_of (a, "scope-b"), "");
}

// Long: one story of a microscope configured on two nodes, from the first
// home through a partition to the second home and the first one's return.
TEST_F (EdgeCloud, AMicroscopeHasOneHomeAndAPartitionedNodeCannotMoveIt)
{
  EtcdCluster etcd (3);
  ASSERT_TRUE (etcd.start ());
  // node-a reaches etcd through relays the test can cut (a network partition).
  std::vector<std::unique_ptr<TcpRelay>> relays;
  std::string through = "etcd=";
  for (auto &e : etcd.endpoints ()) {
    relays.push_back (std::make_unique<TcpRelay> (std::stoi (e.substr (e.rfind (':') + 1))));
    through += (relays.size () > 1 ? "," : "") + relays.back ()->url ();
  }
  Daemon a (small_config ("shared")), b (small_config ("shared"));
  a.extra_args = {"--cluster", through, "--node-name", "node-a"};
  b.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", "node-b"};
  ASSERT_TRUE (a.start ()) << a.error ();
  ASSERT_TRUE (eventually ([&] { return home_of (a, "shared") == "node-a"; }, 5));
  ASSERT_TRUE (b.start ()) << b.error ();

  // Both have the microscope configured; only its home drives it and says
  // who may.
  Driver on_a = take_control (a, "shared");
  HttpReply made_on_b = b.create_session ("pat", "owner", "shared");
  ASSERT_EQ (made_on_b.status, 201) << made_on_b.body;
  Driver on_b{made_on_b.str ("token"), ""};
  EXPECT_EQ (move (a, "shared", on_a, 5).status, 202);
  auto refused_on_b = [] (const HttpReply &refused) {
    EXPECT_EQ (refused.status, 503) << refused.body;
    EXPECT_NE (refused.body.find ("does not hold microscope 'shared'"), std::string::npos) << refused.body;
  };
  refused_on_b (move (b, "shared", on_a, 5));
  refused_on_b (
      b.request ("POST", "/api/v1/microscopes/shared/control", R"({"action":"request"})", on_b.token));
  HttpReply cl = b.request ("GET", "/api/v1/cluster");
  EXPECT_NE (cl.str ("error").find ("microscope 'shared' is homed on node 'node-a'"), std::string::npos)
      << cl.body;

  HttpReply note
      = a.request ("POST", "/api/v1/microscopes/shared/annotations",
                   R"({"kind": "point", "points_um": [[10, 20]], "label": "made on node-a"})", on_a.token);
  ASSERT_EQ (note.status, 201) << note.body;

  // An etcd member dies: nothing visible.
  etcd.kill (2);
  for (int i = 0; i < 10; i++) {
    EXPECT_EQ (move (a, "shared", on_a, 1).status, 202) << "command " << i << " after losing an etcd member";
    g_usleep (200000);
  }

  // node-a is cut off from etcd: within the TTL (2 s) it refuses to move the
  // stage, and its ownership lapses in etcd.
  const gint64 cut = g_get_monotonic_time ();
  for (auto &r : relays)
    r->cut ();
  ASSERT_TRUE (eventually ([&] { return move (a, "shared", on_a, 1).status == 503; }, 4));
  const double refused_after_ms = (g_get_monotonic_time () - cut) / 1000.0;
  EXPECT_LE (refused_after_ms, 2000 + 300) << "node-a moved the stage after its lease could have lapsed";
  EXPECT_TRUE (eventually ([&] { return home_of (b, "shared") != "node-a"; }, 4));
  // The owner may still stop the stage it is attached to.
  HttpReply stop = a.request ("POST", "/api/v1/microscopes/shared/commands",
                              "{\"lease\":\"" + on_a.lease + "\",\"stop\":{}}", on_a.token);
  EXPECT_EQ (stop.status, 202) << stop.body;

  // b is configured with the same microscope and takes the free home: the
  // cluster never has two drivers.  The control came with the microscope:
  // the lease node-a granted drives the stage through node-b, with its
  // epoch, and others queue behind it.  Then a comes back and stays refused.
  EXPECT_TRUE (eventually ([&] { return home_of (b, "shared") == "node-b"; }, 4));
  EXPECT_TRUE (eventually ([&] { return move (b, "shared", on_a, 1).status == 202; }, 3));
  HttpReply scope = b.request ("GET", "/api/v1/microscopes/shared", "", on_b.token);
  JsonObject *m = scope.object ();
  ASSERT_TRUE (m && json_object_has_member (m, "controller")
               && !JSON_NODE_HOLDS_NULL (json_object_get_member (m, "controller")))
      << scope.body;
  JsonObject *controller = json_object_get_object_member (m, "controller");
  EXPECT_EQ (std::string (json_object_get_string_member (controller, "session")), on_a.session) << scope.body;
  EXPECT_EQ (json_object_get_int_member (controller, "epoch"), on_a.epoch) << scope.body;
  HttpReply queued
      = b.request ("POST", "/api/v1/microscopes/shared/control", R"({"action":"request"})", on_b.token);
  EXPECT_EQ (queued.status, 202) << queued.body;
  EXPECT_EQ (queued.str ("result"), "queued") << queued.body;
  HttpReply released
      = b.request ("POST", "/api/v1/microscopes/shared/control", R"({"action":"release"})", on_a.token);
  EXPECT_EQ (released.status, 200) << released.body;
  HttpReply granted
      = b.request ("POST", "/api/v1/microscopes/shared/control", R"({"action":"request"})", on_b.token);
  ASSERT_EQ (granted.status, 200) << granted.body;
  on_b.lease = granted.str ("lease");
  EXPECT_EQ (granted.integer ("epoch"), on_a.epoch + 1) << granted.body;
  EXPECT_EQ (move (b, "shared", on_b, 1).status, 202);
  // The microscope's annotations came with it.
  HttpReply notes = b.request ("GET", "/api/v1/microscopes/shared/annotations", "", on_b.token);
  EXPECT_NE (notes.body.find ("made on node-a"), std::string::npos) << notes.body;
  for (auto &r : relays)
    r->restore ();
  ASSERT_TRUE (eventually ([&] { return count_nodes (a) == 2; }, 6));
  EXPECT_EQ (move (a, "shared", on_a, 1).status, 503);

  // The cluster's audit log holds the accepted moves from both nodes under
  // their fencing tokens, in etcd's order.
  livemicro::cluster::EtcdClient observer ({etcd.endpoint (0), etcd.endpoint (1)});
  auto rows = observer.list ("/livemicro/audit/");
  int from_a = 0, from_b = 0;
  for (auto &kv : rows) {
    from_a += kv.key.find ("/audit/node-a/") != std::string::npos;
    from_b += kv.key.find ("/audit/node-b/") != std::string::npos;
  }
  EXPECT_GE (from_a, 11);
  EXPECT_GE (from_b, 1);
}

TEST_F (EdgeCloud, ASessionMadeOnAnyNodeDrivesTheStageThroughItsHome)
{
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  Daemon a (small_config ("scope-a"));
  a.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", "node-a"};
  // node-c has no microscope of its own.
  Daemon c (R"({"cluster": {"etcd": [")" + etcd.endpoint (0) + R"("], "node": "node-c", "site": "far"},
                "microscopes": []})");
  ASSERT_TRUE (a.start ()) << a.error ();
  ASSERT_TRUE (c.start ()) << c.error ();
  ASSERT_TRUE (eventually (
      [&] { return home_of (c, "scope-a") == "node-a" && count_nodes (c) == 2 && count_nodes (a) == 2; }, 5));

  // The admin asks node-c for a session on scope-a: node-a makes it.
  HttpReply s = c.create_session ("pat", "owner", "scope-a");
  ASSERT_EQ (s.status, 201) << s.body;
  const std::string id = s.str ("id"), token = s.str ("token");
  EXPECT_EQ (c.request ("GET", "/api/v1/sessions/" + id).status, 200) << "the admin, at once";
  EXPECT_NE (s.str ("viewer_url").find (":" + std::to_string (c.http_port ()) + "/view/"), std::string::npos)
      << "its viewers are at the site of the node asked first, which serves the view: " << s.body;
  // Its token works on every node.
  EXPECT_EQ (c.request ("GET", "/api/v1/sessions/" + id, "", token).status, 200);
  EXPECT_EQ (a.request ("GET", "/api/v1/sessions/" + id, "", token).status, 200);
  EXPECT_EQ (c.request ("GET", "/api/v1/sessions/" + id, "", "not-a-token-of-anyone").status, 401);

  // Through node-c it takes control and moves node-a's stage.
  HttpReply lease
      = c.request ("POST", "/api/v1/microscopes/scope-a/control", R"({"action":"request"})", token);
  ASSERT_EQ (lease.status, 200) << lease.body;
  Driver drv{token, lease.str ("lease")};
  auto stage_x = [&] (const Daemon &d) {
    HttpReply m = d.request ("GET", "/api/v1/microscopes/scope-a", "", token);
    JsonObject *st = m.object () && json_object_has_member (m.object (), "stage")
                         ? json_object_get_object_member (m.object (), "stage")
                         : nullptr;
    return st ? json_object_get_double_member (st, "x_um") : NAN;
  };
  ASSERT_TRUE (eventually ([&] { return !std::isnan (stage_x (a)); }, 10));
  const double x0 = stage_x (a);
  // An events client of node-c gets node-a's events of the microscope.
  livemicro::test::EventsClient events (c.http_port (), "scope-a", token);
  ASSERT_TRUE (events.connected ());
  EXPECT_TRUE (events.wait_for (
      "welcome", [] (JsonObject *) { return true; }, 10))
      << "relayed from node-a";
  HttpReply moved = move (c, "scope-a", drv, 250);
  ASSERT_EQ (moved.status, 202) << moved.body;
  EXPECT_TRUE (eventually ([&] { return std::fabs (stage_x (a) - (x0 + 250)) < 1; }, 10))
      << "x " << stage_x (a) << " after moving by 250 from " << x0;
  EXPECT_NEAR (stage_x (c), stage_x (a), 1) << "node-c answers what node-a says";
  EXPECT_TRUE (events.wait_for (
      "command", [] (JsonObject *o) { return json_object_has_member (o, "data"); }, 10))
      << "the move's result reached the events client at node-c";

  // Node-a audited it, with the session that asked.
  HttpReply audit = a.request ("GET", "/api/v1/audit?limit=1000");
  EXPECT_NE (audit.body.find ("\"session\":\"" + id + "\""), std::string::npos);
  EXPECT_NE (audit.body.find ("move_by 250"), std::string::npos) << audit.body;

  // Ended through node-c: no node accepts the token any more.
  HttpReply ended = c.request ("DELETE", "/api/v1/sessions/" + id);
  EXPECT_EQ (ended.status, 204) << ended.body;
  EXPECT_TRUE (eventually (
      [&] {
        return c.request ("GET", "/api/v1/sessions/" + id, "", token).status == 401
               && a.request ("GET", "/api/v1/sessions/" + id, "", token).status == 401;
      },
      3));
}

// The users one node's configuration lists are the edge cloud's: a session
// on a microscope whose home lists none is checked against them.
TEST_F (EdgeCloud, UsersConfiguredOnOneNodeCountOnEveryNode)
{
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  Daemon a (small_config ("scope-a")); // lists no users
  a.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", "node-a"};
  Daemon c (R"({"cluster": {"etcd": [")" + etcd.endpoint (0) + R"("], "node": "node-c"}, "microscopes": [],
                "users": [{"name": "ana", "roles": ["owner", "consultant"]}]})");
  ASSERT_TRUE (a.start ()) << a.error ();
  ASSERT_TRUE (c.start ()) << c.error ();
  livemicro::cluster::EtcdClient observer (etcd.endpoints ());
  ASSERT_TRUE (eventually ([&] { return observer.get ("/livemicro/users/ana").has_value (); }, 5));
  ASSERT_TRUE (eventually ([&] { return home_of (c, "scope-a") == "node-a"; }, 5));

  // Asked of node-a itself, which lists nobody.
  HttpReply stranger;
  ASSERT_TRUE (eventually (
      [&] {
        stranger = a.create_session ("bob", "consultant", "scope-a");
        return stranger.status == 422;
      },
      3))
      << stranger.status << " " << stranger.body;
  EXPECT_NE (stranger.body.find ("'bob' is not configured on this edge cloud"), std::string::npos)
      << stranger.body;
  HttpReply wrong_role = c.create_session ("ana", "trainee", "scope-a");
  EXPECT_EQ (wrong_role.status, 422) << wrong_role.body;
  EXPECT_EQ (a.create_session ("ana", "consultant", "scope-a").status, 201);
  EXPECT_EQ (c.create_session ("ana", "owner", "scope-a").status, 201);
}

TEST_F (EdgeCloud, AHomeNodeAwayLeavesItsMicroscopeOfflineAndEveryRestartKeepsSessionsAnnotationsAudit)
{
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  Daemon a (small_config ("scope-a"));
  a.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", "node-a"};
  Daemon c (R"({"cluster": {"etcd": [")" + etcd.endpoint (0)
            + R"("], "node": "node-c"}, "microscopes": []})");
  ASSERT_TRUE (a.start ()) << a.error ();
  ASSERT_TRUE (c.start ()) << c.error ();
  ASSERT_TRUE (eventually ([&] { return home_of (c, "scope-a") == "node-a"; }, 5));

  HttpReply s = c.create_session ("pat", "owner", "scope-a");
  ASSERT_EQ (s.status, 201) << s.body;
  const std::string id = s.str ("id"), token = s.str ("token");
  HttpReply note = c.request ("POST", "/api/v1/microscopes/scope-a/annotations",
                              R"({"kind": "point", "points_um": [[120, 340]], "label": "mitosis?"})", token);
  ASSERT_EQ (note.status, 201) << note.body;
  HttpReply lease
      = c.request ("POST", "/api/v1/microscopes/scope-a/control", R"({"action":"request"})", token);
  ASSERT_EQ (lease.status, 200) << lease.body;
  ASSERT_EQ (move (c, "scope-a", {token, lease.str ("lease")}, 40).status, 202);

  // node-a goes away: its microscope is offline for everyone, not unknown.
  a.stop ();
  HttpReply away;
  ASSERT_TRUE (eventually (
      [&] {
        away = c.request ("GET", "/api/v1/microscopes/scope-a", "", token);
        return away.status == 503;
      },
      4))
      << away.status << " " << away.body;
  EXPECT_NE (away.body.find ("home node 'node-a' is not in the edge cloud"), std::string::npos) << away.body;

  // Every node restarts: the session, its annotation, its control lease and
  // the audit are kept.
  c.stop ();
  ASSERT_TRUE (a.start ()) << a.error ();
  ASSERT_TRUE (c.start ()) << c.error ();
  ASSERT_TRUE (eventually ([&] { return home_of (c, "scope-a") == "node-a"; }, 5));
  EXPECT_EQ (c.request ("GET", "/api/v1/sessions/" + id, "", token).status, 200);
  HttpReply again;
  EXPECT_TRUE (eventually (
      [&] {
        again = move (c, "scope-a", {token, lease.str ("lease")}, 10);
        return again.status == 202;
      },
      10))
      << "the lease granted before the restarts drives the stage after them: " << again.status << " "
      << again.body;
  HttpReply notes = c.request ("GET", "/api/v1/microscopes/scope-a/annotations", "", token);
  EXPECT_EQ (notes.status, 200) << notes.body;
  EXPECT_NE (notes.body.find ("mitosis?"), std::string::npos) << notes.body;
  HttpReply audit = a.request ("GET", "/api/v1/audit?limit=1000");
  EXPECT_NE (audit.body.find ("move_by 40"), std::string::npos);
  livemicro::cluster::EtcdClient observer (etcd.endpoints ());
  bool in_etcd = false;
  for (auto &kv : observer.list ("/livemicro/audit/node-a/"))
    in_etcd = in_etcd || kv.value.find ("move_by 40") != std::string::npos;
  EXPECT_TRUE (in_etcd) << "the move's row is in the edge cloud's audit log";
}

TEST_F (EdgeCloud, ViewersAtAnotherSitePlayFromTheirSitesNodeWhichPullsEachViewOnce)
{
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  Daemon a (small_config ("scope-a"));
  a.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", "node-a", "--site", "lab"};
  Daemon c (R"({"cluster": {"etcd": [")" + etcd.endpoint (0) + R"("], "node": "node-c", "site": "far"},
                "microscopes": []})");
  ASSERT_TRUE (a.start ()) << a.error ();
  ASSERT_TRUE (c.start ()) << c.error ();
  ASSERT_TRUE (eventually ([&] { return home_of (c, "scope-a") == "node-a" && count_nodes (a) == 2; }, 5));

  // Sessions asked of node-c (site "far"): node-a makes them, node-c serves
  // their view.  One asked of node-a with no site stays on node-a.
  const std::string c_rtsp = "rtsp://127.0.0.1:" + std::to_string (c.rtsp_port ()) + "/s/";
  const int kViewers = 20;
  std::vector<std::pair<std::string, std::string>> far; // id, token
  for (int i = 0; i < kViewers; i++) {
    HttpReply s = c.create_session ("consultant-" + std::to_string (i), "consultant", "scope-a");
    ASSERT_EQ (s.status, 201) << s.body;
    ASSERT_EQ (s.str ("rtsp_url"), c_rtsp + s.str ("id")) << "served near its viewers: " << s.body;
    far.emplace_back (s.str ("id"), s.str ("token"));
  }
  HttpReply near = a.create_session ("local", "consultant", "scope-a");
  ASSERT_EQ (near.status, 201) << near.body;
  EXPECT_EQ (near.str ("rtsp_url").find ("127.0.0.1:" + std::to_string (a.rtsp_port ())), 7u) << near.body;

  // Every far viewer plays from node-c, with the capture time of node-a's frames.
  std::vector<std::unique_ptr<livemicro::test::RtspPlayer>> players;
  for (auto &[id, token] : far)
    players.push_back (std::make_unique<livemicro::test::RtspPlayer> (c_rtsp + id, id, token, "tcp", false));
  for (size_t i = 0; i < players.size (); i++)
    ASSERT_TRUE (players[i]->wait_frames (10, 60)) << "viewer " << i << ": " << players[i]->error ();
  const int64_t lag_us = g_get_real_time () - players[0]->last_capture_unix_us ();
  EXPECT_GT (players[0]->last_capture_unix_us (), 0) << "the capture-time SEI crossed the relay";
  EXPECT_LT (lag_us, 3 * G_USEC_PER_SEC) << "frames are live";

  // node-a sends that view once, to node-c, however many watch it there.
  EXPECT_EQ (a.metric (R"(livemicro_relay_out_callers{microscope="scope-a",profile="consultant"})"), 1);
  EXPECT_EQ (c.metric (R"(livemicro_relay_in_connected{microscope="scope-a",profile="consultant"})"), 1);
  const double sent0
      = a.metric (R"(livemicro_relay_out_bytes_total{microscope="scope-a",profile="consultant"})");
  g_usleep (2 * G_USEC_PER_SEC);
  const double sent
      = a.metric (R"(livemicro_relay_out_bytes_total{microscope="scope-a",profile="consultant"})") - sent0;
  const double received0
      = c.metric (R"(livemicro_relay_in_bytes_total{microscope="scope-a",profile="consultant"})");
  EXPECT_GT (sent, 0);
  RecordProperty ("relay_bytes_per_s_for_20_viewers", std::to_string (sent / 2));
  (void)received0;

  // A WHEP player of a far session is answered by node-c from the same
  // relayed view (node-a still sends it once), and ends with its session.
  whep_plays_from_serving_node (a, c, far[0].first, far[0].second);
  far.erase (far.begin ());
  players.erase (players.begin ());

  // The last far session ends: node-c drops its mounts and the relay.
  for (auto &[id, token] : far)
    EXPECT_EQ (c.request ("DELETE", "/api/v1/sessions/" + id).status, 204);
  players.clear ();
  EXPECT_TRUE (eventually (
      [&] {
        return a.metric (R"(livemicro_relay_out_callers{microscope="scope-a",profile="consultant"})") <= 0;
      },
      5))
      << a.metrics ();
}

TEST_F (EdgeCloud, ABrowserWhoseServingNodeDiesPlaysAgainFromAnotherNodeOfItsSite)
{
  if (!livemicro::test::ChromiumPage::available ())
    GTEST_SKIP () << "chromium is not installed (scripts/install-deps.sh installs it)";
  EtcdCluster etcd (3);
  ASSERT_TRUE (etcd.start ());
  Daemon a (small_config ("scope-a"));
  a.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", "node-a", "--site", "lab"};
  Daemon b (R"({"microscopes": []})"), c (R"({"microscopes": []})");
  b.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", "node-b", "--site", "far"};
  c.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", "node-c", "--site", "far"};
  ASSERT_TRUE (a.start ()) << a.error ();
  ASSERT_TRUE (b.start ()) << b.error ();
  ASSERT_TRUE (c.start ()) << c.error ();
  ASSERT_TRUE (eventually ([&] { return count_nodes (a) == 3 && home_of (b, "scope-a") == "node-a"; }, 6));

  // A consultant far away: the view is served by node-b or node-c.
  HttpReply s = a.request ("POST", "/api/v1/sessions",
                           R"({"user":"pat","role":"consultant","microscope":"scope-a","site":"far"})");
  ASSERT_EQ (s.status, 201) << s.body;
  const std::string id = s.str ("id"), token = s.str ("token"), url = s.str ("viewer_url");
  const bool on_b = url.find (":" + std::to_string (b.http_port ()) + "/") != std::string::npos;
  ASSERT_TRUE (on_b || url.find (":" + std::to_string (c.http_port ()) + "/") != std::string::npos) << url;
  Daemon &serving = on_b ? b : c, &other = on_b ? c : b;

  livemicro::test::ChromiumPage page (url);
  ASSERT_TRUE (page.connected ());
  ASSERT_TRUE (page.wait_true ("window.livemicro && window.livemicro.framesDecoded > 5", 40))
      << "the page plays from its serving node";
  EXPECT_TRUE (page.wait_true ("window.livemicro.nodes.length === 3", 5)) << "it knows where to go on";
  EXPECT_EQ (page.evaluate ("window.livemicro.session && window.livemicro.session.microscope"), "\"scope-a\"")
      << "its events come from the home node";

  // An RTSP player is served by whichever node of the edge cloud it reaches.
  {
    livemicro::test::RtspPlayer reached (
        "rtsp://127.0.0.1:" + std::to_string (other.rtsp_port ()) + "/s/" + id, id, token, "tcp", false);
    EXPECT_TRUE (reached.wait_frames (5, 30))
        << "a player at the node the session is not placed on: " << reached.error ();
  }

  // The serving node dies (no goodbye: its lease lapses by itself).
  const int64_t killed = g_get_monotonic_time ();
  serving.kill ();
  const std::string other_port = std::to_string (other.http_port ());
  ASSERT_TRUE (
      page.wait_true ("location.port === '" + other_port + "' && window.livemicro.framesDecoded > 5", 30))
      << "the page plays again from the other node of its site: "
      << page.evaluate ("JSON.stringify({at: location.href, nodes: window.livemicro.nodes, "
                        "conn: document.getElementById('conn').textContent, "
                        "frames: window.livemicro.framesDecoded})");
  const double gap_s = double (g_get_monotonic_time () - killed) / G_USEC_PER_SEC;
  RecordProperty ("failover_gap_s", std::to_string (gap_s));
  // The figure itself (3 s p95) is the benchmark's; here it must not hang.
  EXPECT_LT (gap_s, 15) << "kill to frames again";
  EXPECT_EQ (page.evaluate ("window.livemicro.session && window.livemicro.session.id"), "\"" + id + "\"");

  // The home node places the session again once the node's lease lapsed: the
  // API points RTSP players at the new node, which plays it.
  std::string rtsp_url;
  EXPECT_TRUE (eventually (
      [&] {
        rtsp_url = a.request ("GET", "/api/v1/sessions/" + id).str ("rtsp_url");
        return rtsp_url.find (":" + std::to_string (other.rtsp_port ()) + "/") != std::string::npos;
      },
      10))
      << rtsp_url;
  livemicro::test::RtspPlayer player (rtsp_url, id, token, "tcp", false);
  EXPECT_TRUE (player.wait_frames (5, 30)) << player.error ();
}

TEST_F (EdgeCloud, ANodeThatJoinsBringsTheAnnotationsItKeptAlone)
{
  livemicro::test::TempDir state;
  const std::string dir = state.file ("state");
  std::string token;
  {
    Daemon alone (small_config ("scope-a"), dir);
    ASSERT_TRUE (alone.start ()) << alone.error ();
    HttpReply s = alone.create_session ("pat", "owner", "scope-a");
    ASSERT_EQ (s.status, 201) << s.body;
    HttpReply note = alone.request (
        "POST", "/api/v1/microscopes/scope-a/annotations",
        R"({"kind": "point", "points_um": [[1, 2]], "label": "before the cloud"})", s.str ("token"));
    ASSERT_EQ (note.status, 201) << note.body;
  }
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  Daemon a (small_config ("scope-a"), dir);
  a.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", "node-a"};
  ASSERT_TRUE (a.start ()) << a.error ();
  livemicro::cluster::EtcdClient observer (etcd.endpoints ());
  EXPECT_TRUE (eventually (
      [&] {
        for (const auto &kv : observer.list ("/livemicro/annotations/scope-a/"))
          if (kv.value.find ("before the cloud") != std::string::npos)
            return true;
        return false;
      },
      5))
      << "kept in etcd once the node joined";
  HttpReply s = a.create_session ("pat", "owner", "scope-a");
  HttpReply notes = a.request ("GET", "/api/v1/microscopes/scope-a/annotations", "", s.str ("token"));
  EXPECT_NE (notes.body.find ("before the cloud"), std::string::npos) << notes.body;
  // Once: a restart does not bring them again.
  a.stop ();
  ASSERT_TRUE (a.start ()) << a.error ();
  g_usleep (1500000);
  EXPECT_EQ (observer.list ("/livemicro/annotations/scope-a/").size (), 1u);
}
