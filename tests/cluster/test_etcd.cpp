// The edge cloud's store: EtcdClient and ClusterMember against real etcd
// members started by the test (Debian's etcd-server) on 127.0.0.1.
#include "etcd_cluster.h"

#include "cluster_member.h"
#include "etcd_client.h"

#include <gtest/gtest.h>

#include <algorithm>

using namespace livemicro::cluster;
using livemicro::test::EtcdCluster;
using livemicro::test::eventually;
using livemicro::test::TcpRelay;

namespace {

#define NEED_ETCD()                                                                                          \
  if (!livemicro::test::etcd_available ())                                                                   \
  GTEST_SKIP () << "etcd is not installed (scripts/install-deps.sh installs etcd-server)"

ClusterConfig
node_config (const std::vector<std::string> &etcd, const std::string &name, const std::string &site = "lab")
{
  ClusterConfig c;
  c.etcd = etcd;
  c.node = name;
  c.site = site;
  c.http_url = "http://127.0.0.1:1/" + name;
  c.prefix = "/test/";
  return c;
}

} // namespace

TEST (EtcdClient, KeysTransactionsAndLeases)
{
  NEED_ETCD ();
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  EtcdClient c (etcd.endpoints ());

  // Keys are plain strings here, whatever bytes they hold.
  const std::string odd = std::string ("a\0b/é", 6);
  c.put ("/k/1", "one");
  c.put ("/k/2", odd);
  c.put ("/l/1", "other");
  ASSERT_TRUE (c.get ("/k/2"));
  EXPECT_EQ (c.get ("/k/2")->value, odd);
  EXPECT_FALSE (c.get ("/k/3"));
  auto listed = c.list ("/k/");
  ASSERT_EQ (listed.size (), 2u);
  EXPECT_EQ (listed[0].key, "/k/1");
  EXPECT_EQ (listed[0].value, "one");

  // Compare-and-swap: create only if absent.
  auto first = c.txn ({{"/own", Compare::Target::kCreateRevision, 0}}, {{Op::Kind::kPut, "/own", "A"}},
                      {{Op::Kind::kRange, "/own"}});
  EXPECT_TRUE (first.succeeded);
  auto second = c.txn ({{"/own", Compare::Target::kCreateRevision, 0}}, {{Op::Kind::kPut, "/own", "B"}},
                       {{Op::Kind::kRange, "/own"}});
  EXPECT_FALSE (second.succeeded);
  ASSERT_EQ (second.ranged.size (), 1u);
  EXPECT_EQ (second.ranged[0].value, "A");
  EXPECT_EQ (second.ranged[0].mod_revision, first.revision);
  Compare by_value{"/own", Compare::Target::kValue};
  by_value.value = "A";
  EXPECT_TRUE (c.txn ({by_value}, {{Op::Kind::kPut, "/own", "C"}}).succeeded);
  EXPECT_FALSE (c.txn ({by_value}, {{Op::Kind::kPut, "/own", "D"}}).succeeded);
  EXPECT_EQ (c.get ("/own")->value, "C");

  // A key under a lease goes with it.
  auto lease = c.grant (2);
  EXPECT_GE (lease.ttl_s, 2);
  c.put ("/leased", "x", lease.id);
  EXPECT_EQ (c.get ("/leased")->lease, lease.id);
  EXPECT_GT (c.keepalive (lease.id), 0);
  c.revoke (lease.id);
  EXPECT_FALSE (c.get ("/leased"));
  EXPECT_EQ (c.keepalive (lease.id), 0) << "a revoked lease cannot be renewed";

  EXPECT_EQ (c.remove ("/k/", true), 2);
  EXPECT_TRUE (c.list ("/k/").empty ());
}

TEST (EtcdClient, UnreachableIsAClearErrorAndTheNextMemberIsTried)
{
  NEED_ETCD ();
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  const std::string dead = "http://127.0.0.1:" + std::to_string (livemicro::test::free_tcp_port ());
  {
    EtcdClient c ({dead});
    try {
      c.put ("/x", "y");
      FAIL () << "a put to nowhere succeeded";
    } catch (const EtcdError &e) {
      EXPECT_NE (std::string (e.what ()).find ("cannot reach etcd at " + dead), std::string::npos)
          << e.what ();
    }
    auto st = c.status ();
    ASSERT_EQ (st.size (), 1u);
    EXPECT_FALSE (st[0].healthy);
  }
  EtcdClient c ({dead, etcd.endpoint (0)});
  c.put ("/x", "y");
  EXPECT_EQ (c.get ("/x")->value, "y");
  auto st = c.status ();
  ASSERT_EQ (st.size (), 2u);
  EXPECT_FALSE (st[0].healthy);
  EXPECT_TRUE (st[1].healthy);
  EXPECT_FALSE (st[1].version.empty ());
}

TEST (ClusterMember, JoinsOwnsItsMicroscopesAndSeesTheOthers)
{
  NEED_ETCD ();
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  auto a = std::make_unique<ClusterMember> (node_config (etcd.endpoints (), "a", "site-a"),
                                            std::vector<std::string>{"m1"});
  a->start ();
  ASSERT_TRUE (a->wait_joined (5000)) << a->view ().error;
  ASSERT_TRUE (eventually ([&] { return a->fence ("m1").has_value (); }, 3));
  ClusterMember b (node_config (etcd.endpoints (), "b", "site-b"), {"m1", "m2"});
  b.start ();
  ASSERT_TRUE (b.wait_joined (5000)) << b.view ().error;
  ASSERT_TRUE (eventually ([&] { return b.fence ("m2").has_value () && b.view ().nodes.size () == 2; }, 3));
  EXPECT_FALSE (b.fence ("m1")) << "m1 is a's";
  EXPECT_NE (b.view ().error.find ("microscope 'm1' is homed on node 'a'"), std::string::npos)
      << b.view ().error;

  // Another process with a's name does not join while a lives.
  ClusterMember twin (node_config (etcd.endpoints (), "a"), {});
  twin.start ();
  EXPECT_FALSE (twin.wait_joined (1500));
  EXPECT_NE (twin.view ().error.find ("registered by another live process"), std::string::npos);
  twin.stop ();

  auto view = b.view ();
  auto na = std::find_if (view.nodes.begin (), view.nodes.end (),
                          [] (const NodeInfo &n) { return n.name == "a"; });
  ASSERT_NE (na, view.nodes.end ());
  EXPECT_EQ (na->site, "site-a");
  EXPECT_EQ (na->microscopes, std::vector<std::string>{"m1"});
  ASSERT_EQ (view.homes.size (), 2u);

  // a leaves (revokes its lease): at once, not after the TTL.
  const gint64 left = g_get_monotonic_time ();
  a.reset ();
  ASSERT_TRUE (eventually ([&] { return b.view ().nodes.size () == 1; }, 3));
  EXPECT_LT ((g_get_monotonic_time () - left) / 1000, 1500) << "ms until b saw a leave";
}

TEST (ClusterMember, FencingHoldsThroughAMemberLossAndFailsOnAPartition)
{
  NEED_ETCD ();
  EtcdCluster etcd (3);
  ASSERT_TRUE (etcd.start ());
  // a reaches each member through a relay the test can cut.
  std::vector<std::unique_ptr<TcpRelay>> relays;
  std::vector<std::string> through;
  for (auto &e : etcd.endpoints ()) {
    relays.push_back (std::make_unique<TcpRelay> (std::stoi (e.substr (e.rfind (':') + 1))));
    through.push_back (relays.back ()->url ());
  }
  ClusterMember a (node_config (through, "a"), {"m1"});
  a.start ();
  ASSERT_TRUE (a.wait_joined (5000)) << a.view ().error;
  ASSERT_TRUE (eventually ([&] { return a.fence ("m1").has_value (); }, 3));
  const Fence first = *a.fence ("m1");
  livemicro::orchestrator::AuditRecord row{0,    g_get_real_time (), "u",         "owner",   "s",
                                           "m1", "command",          "move 1, 2", "accepted"};
  EXPECT_TRUE (a.commit_fenced (first, {row}));

  // An etcd member dies: nothing changes for a (same lease, same token).
  etcd.kill (0);
  g_usleep (3 * G_USEC_PER_SEC);
  ASSERT_TRUE (a.fence ("m1"));
  EXPECT_EQ (a.fence ("m1")->revision, first.revision);
  EXPECT_TRUE (a.commit_fenced (first, {row}));

  // a is cut off from etcd: within the TTL it holds no token.
  EtcdClient observer ({etcd.endpoint (1), etcd.endpoint (2)});
  const gint64 cut_at = g_get_monotonic_time ();
  for (auto &r : relays)
    r->cut ();
  ASSERT_TRUE (eventually ([&] { return !a.fence ("m1"); }, 3));
  EXPECT_LE ((g_get_monotonic_time () - cut_at) / 1000, 2000 + 100) << "ms with a token after the cut";
  EXPECT_FALSE (a.commit_fenced (first, {row}));
  // etcd lets the ownership go with the lease.
  EXPECT_TRUE (eventually ([&] { return !observer.get ("/test/homes/m1"); }, 4));

  // Back: a new lease, a new token; the old one is refused by etcd itself.
  for (auto &r : relays)
    r->restore ();
  ASSERT_TRUE (eventually ([&] { return a.fence ("m1").has_value (); }, 6)) << a.view ().error;
  const Fence second = *a.fence ("m1");
  EXPECT_GT (second.revision, first.revision);
  EXPECT_NE (second.lease, first.lease);
  Op put{Op::Kind::kPut, "/test/audit/forged", "stale"};
  EXPECT_FALSE (
      observer.txn ({{"/test/homes/m1", Compare::Target::kModRevision, first.revision}}, {put}).succeeded)
      << "a transaction under the old token must fail in etcd, whoever sends it";
  EXPECT_FALSE (a.commit_fenced (first, {row}));
  row.detail = "move 3, 4";
  EXPECT_TRUE (a.commit_fenced (second, {row}));

  // The audit log reads back in etcd's order, with the token each row had.
  auto rows = a.audit ();
  ASSERT_EQ (rows.size (), 3u);
  EXPECT_TRUE (
      std::is_sorted (rows.begin (), rows.end (), [] (auto &x, auto &y) { return x.revision < y.revision; }));
  EXPECT_EQ (rows[0].fence_revision, first.revision);
  EXPECT_EQ (rows[2].fence_revision, second.revision);
  EXPECT_EQ (rows[2].row.detail, "move 3, 4");
  EXPECT_EQ (rows[2].node, "a");
}

// A microscope's control is kept with its audit row, under the fence, and
// read back whole; a node that lost the microscope cannot write it.
TEST (ClusterMember, ControlIsKeptUnderTheFenceAndReadBackWhole)
{
  NEED_ETCD ();
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  auto a = std::make_unique<ClusterMember> (node_config (etcd.endpoints (), "a"),
                                            std::vector<std::string>{"m1"});
  a->start ();
  ASSERT_TRUE (a->wait_joined (5000)) << a->view ().error;
  ASSERT_TRUE (eventually ([&] { return a->fence ("m1").has_value (); }, 3));
  EXPECT_FALSE (a->control ("m1")) << "nothing was written yet";

  livemicro::orchestrator::ControlState c;
  c.epoch = 7;
  c.holder = livemicro::orchestrator::Lease{"lease-7", 7, {"s1", "ana", "owner"}, 123, 456};
  c.queue = {{"s2", "bo", "consultant"}, {"s3", "cy", "trainee"}};
  livemicro::orchestrator::AuditRecord row{0,    g_get_real_time (), "ana",     "owner",          "s1",
                                           "m1", "control",          "request", "granted epoch 7"};
  const Fence first = *a->fence ("m1");
  ASSERT_TRUE (a->commit_fenced (first, {row}, &c));
  auto read = a->control ("m1");
  ASSERT_TRUE (read);
  EXPECT_EQ (read->epoch, 7u);
  ASSERT_TRUE (read->holder);
  EXPECT_EQ (read->holder->id, "lease-7");
  EXPECT_EQ (read->holder->epoch, 7u);
  EXPECT_EQ (read->holder->holder.session, "s1");
  EXPECT_EQ (read->holder->holder.role, "owner");
  ASSERT_EQ (read->queue.size (), 2u);
  EXPECT_EQ (read->queue[0].session, "s2");
  EXPECT_EQ (read->queue[1].role, "trainee");
  EXPECT_EQ (a->audit ().size (), 1u) << "the row went with it";

  // Another node takes the microscope: the old fence writes nothing.
  a.reset ();
  ClusterMember b (node_config (etcd.endpoints (), "b"), {"m1"});
  b.start ();
  ASSERT_TRUE (b.wait_joined (5000)) << b.view ().error;
  ASSERT_TRUE (eventually ([&] { return b.fence ("m1").has_value (); }, 5));
  c.epoch = 8;
  EXPECT_FALSE (b.commit_fenced (first, {row}, &c)) << "the old home's token is stale";
  auto kept = b.control ("m1");
  ASSERT_TRUE (kept) << "the control outlives its node";
  EXPECT_EQ (kept->epoch, 7u);
  EXPECT_EQ (kept->holder->id, "lease-7");

  // A value no node wrote is not adopted.
  EtcdClient observer (etcd.endpoints ());
  observer.put ("/test/control/m1", "{\"epoch\": 9, \"holder\": {\"lease\": \"\"}}");
  EXPECT_FALSE (b.control ("m1"));
}

// Users: the first node to bring a name decides its roles; a value no node
// wrote (not JSON, roles of the wrong type) is not a user.
TEST (ClusterMember, UsersAreBroughtOnceAndBadValuesAreNoUsers)
{
  NEED_ETCD ();
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  EtcdClient observer (etcd.endpoints ());
  observer.put ("/test/users/mallory", "not json");
  observer.put ("/test/users/trudy", R"({"name": "trudy", "roles": "owner"})");
  ClusterConfig ca = node_config (etcd.endpoints (), "a");
  ca.users = {{"ana", {"owner", "consultant"}}};
  ClusterMember a (ca, {});
  a.start ();
  ASSERT_TRUE (a.wait_joined (5000)) << a.view ().error;
  ASSERT_TRUE (eventually ([&] { return a.users ().count ("ana") == 1; }, 3));
  ClusterConfig cb = node_config (etcd.endpoints (), "b");
  cb.users = {{"ana", {"trainee"}}, {"bo", {"guest"}}};
  ClusterMember b (cb, {});
  b.start ();
  ASSERT_TRUE (b.wait_joined (5000)) << b.view ().error;
  ASSERT_TRUE (eventually ([&] { return a.users ().count ("bo") == 1; }, 3));
  const auto users = a.users ();
  EXPECT_EQ (users.at ("ana"), (std::vector<std::string>{"owner", "consultant"})) << "the first node's roles";
  EXPECT_EQ (users.at ("bo"), (std::vector<std::string>{"guest"}));
  EXPECT_EQ (users.count ("mallory"), 0u);
  EXPECT_EQ (users.count ("trudy"), 0u);
  EXPECT_EQ (users.size (), 2u);
}

TEST (ClusterMember, ASessionIsPlacedAgainOnlyFromTheRecordItRead)
{
  NEED_ETCD ();
  EtcdCluster etcd (1);
  ASSERT_TRUE (etcd.start ());
  ClusterMember home (node_config (etcd.endpoints (), "home", "lab"), {"m1"});
  home.start ();
  ASSERT_TRUE (home.wait_joined (5000)) << home.view ().error;
  livemicro::orchestrator::SessionRecord s{"s1", "pat", "consultant", "m1", "ab12", "cd34", 1};
  home.put_session (s, "edge-1", "far");
  auto read = home.session ("s1");
  ASSERT_TRUE (read);
  EXPECT_EQ (read->serving_node, "edge-1");
  EXPECT_EQ (read->site, "far");
  EXPECT_GT (read->revision, 0);

  // Two deciders read the same record: the first move wins, the second is
  // refused and changes nothing.
  livemicro::cluster::ClusterSession stale = *read;
  EXPECT_TRUE (home.move_session (*read, "edge-2"));
  EXPECT_FALSE (home.move_session (stale, "edge-3"));
  livemicro::cluster::EtcdClient observer (etcd.endpoints ());
  auto kv = observer.get ("/test/sessions/s1");
  ASSERT_TRUE (kv);
  EXPECT_NE (kv->value.find ("\"edge-2\""), std::string::npos) << kv->value;
  EXPECT_NE (kv->value.find ("\"far\""), std::string::npos) << "the viewers' site is kept: " << kv->value;
  EXPECT_EQ (kv->value.find ("edge-3"), std::string::npos) << kv->value;
  EXPECT_NE (kv->value.find ("cd34"), std::string::npos) << "the digest hash is kept";
}
