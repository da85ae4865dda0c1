// The control arbiter: one lease holder, a role-ordered queue, epochs,
// lapses, grants and revocations.
#include "control.h"

#include <gtest/gtest.h>

using namespace livemicro::orchestrator;

namespace {

std::optional<Reason>
refusal_of (const ControlArbiter::Outcome &o)
{
  return o.refused ? std::optional<Reason> (o.refused->reason) : std::nullopt;
}

struct Fixture {
  int64_t now = 1000000;
  int ids = 0;
  ControlArbiter arb{ControlArbiter::Options{5000000, nullptr}, 41, [this] { return now; },
                     [this] { return "lease-" + std::to_string (++ids); }};
};

Participant
who (const char *session, const char *role)
{
  return {session, std::string ("user-") + session, role};
}

} // namespace

TEST (ControlArbiter, OneDriverAQueueByRoleAndStrictlyIncreasingEpochs)
{
  Fixture f;
  auto a = f.arb.request (who ("t1", "trainee"));
  ASSERT_EQ (a.result, "granted");
  EXPECT_EQ (a.lease->epoch, 42u) << "continues from the stored epoch";
  auto c1 = f.arb.request (who ("c1", "consultant"));
  EXPECT_TRUE (c1.queued ());
  EXPECT_EQ (c1.queue_position, 1);
  auto t2 = f.arb.request (who ("t2", "trainee"));
  EXPECT_EQ (t2.queue_position, 2);
  auto o1 = f.arb.request (who ("o1", "owner"));
  EXPECT_EQ (o1.queue_position, 1) << "owners go before consultants and trainees";
  auto c2 = f.arb.request (who ("c2", "consultant"));
  EXPECT_EQ (c2.queue_position, 3) << "after the earlier consultant, before trainees";
  EXPECT_EQ (f.arb.request (who ("c2", "consultant")).queue_position, 3) << "asking again keeps the place";

  std::string first = a.lease->id;
  EXPECT_TRUE (f.arb.check ("t1", first));
  EXPECT_FALSE (f.arb.check ("c1", first)) << "a lease id is only good for its holder";
  EXPECT_EQ (f.arb.release (who ("t1", "trainee")).result, "released");
  EXPECT_FALSE (f.arb.check ("t1", first)) << "a stale lease is refused";
  ASSERT_TRUE (f.arb.holder ());
  EXPECT_EQ (f.arb.holder ()->holder.session, "o1");
  EXPECT_EQ (f.arb.holder ()->epoch, 43u);
  std::vector<std::string> order;
  while (f.arb.holder ()) {
    order.push_back (f.arb.holder ()->holder.session);
    f.arb.release (f.arb.holder ()->holder);
  }
  EXPECT_EQ (order, (std::vector<std::string>{"o1", "c1", "c2", "t2"}));
  EXPECT_EQ (f.arb.epoch (), 46u);
}

TEST (ControlArbiter, AnIdleLeaseLapsesToTheNextAndActivityKeepsItAlive)
{
  Fixture f;
  auto a = f.arb.request (who ("a", "consultant"));
  f.arb.request (who ("b", "consultant"));
  f.now += 4000000;
  EXPECT_TRUE (f.arb.check ("a", a.lease->id)) << "a command is activity";
  f.now += 4000000;
  EXPECT_EQ (f.arb.renew (who ("a", "consultant"), a.lease->id).result, "renewed");
  f.now += 4999999;
  EXPECT_FALSE (f.arb.tick ());
  f.now += 1;
  EXPECT_TRUE (f.arb.tick ()) << "5 s without commands or renewal";
  EXPECT_EQ (f.arb.holder ()->holder.session, "b");
  EXPECT_EQ (refusal_of (f.arb.renew (who ("a", "consultant"), a.lease->id)), Reason::kConflict);
  EXPECT_FALSE (f.arb.check ("a", a.lease->id));
}

TEST (ControlArbiter, OwnerGrantsAndRevokesGuestsAreBarred)
{
  Fixture f;
  EXPECT_EQ (refusal_of (f.arb.request (who ("g", "guest"))), Reason::kForbidden);
  EXPECT_EQ (refusal_of (f.arb.request (Participant{"", "admin", "admin"})), Reason::kForbidden);
  f.arb.request (who ("c", "consultant"));
  f.arb.request (who ("t", "trainee"));
  EXPECT_EQ (refusal_of (f.arb.grant (who ("c", "consultant"), who ("t", "trainee"))), Reason::kForbidden);
  auto g = f.arb.grant (who ("o", "owner"), who ("t", "trainee"));
  ASSERT_EQ (g.result, "granted");
  EXPECT_EQ (f.arb.holder ()->holder.session, "t");
  EXPECT_TRUE (f.arb.queue ().empty ()) << "the trainee left the queue; the consultant lost the lease";
  EXPECT_EQ (refusal_of (f.arb.revoke (who ("t", "trainee"))), Reason::kForbidden);
  EXPECT_EQ (f.arb.revoke (Participant{"", "admin", "admin"}).result, "revoked");
  EXPECT_FALSE (f.arb.holder ());
  EXPECT_EQ (refusal_of (f.arb.revoke (Participant{"", "admin", "admin"})), Reason::kConflict);
  EXPECT_EQ (refusal_of (f.arb.grant (Participant{"", "admin", "admin"}, who ("g", "guest"))),
             Reason::kInvalid);
  ControlArbiter open{ControlArbiter::Options{5000000, [] (const std::string &) { return true; }}, 0,
                      [] { return 0; }, [] { return "x"; }};
  EXPECT_EQ (open.request (who ("g", "guest")).result, "granted") << "a profile may allow guests";
  ControlArbiter strict{ControlArbiter::Options{5000000, [] (const std::string &r) { return r == "owner"; }},
                        0, [] { return 0; }, [] { return "x"; }};
  EXPECT_EQ (refusal_of (strict.request (who ("t", "trainee"))), Reason::kForbidden)
      << "a profile may bar trainees";
}

TEST (ControlArbiter, AGoneSessionLeavesTheQueueAndPassesItsLease)
{
  Fixture f;
  f.arb.request (who ("a", "owner"));
  f.arb.request (who ("b", "trainee"));
  f.arb.request (who ("c", "trainee"));
  EXPECT_TRUE (f.arb.forget ("b"));
  EXPECT_EQ (f.arb.queue ().size (), 1u);
  EXPECT_TRUE (f.arb.forget ("a"));
  EXPECT_EQ (f.arb.holder ()->holder.session, "c");
  EXPECT_FALSE (f.arb.forget ("zzz"));
  EXPECT_EQ (refusal_of (f.arb.release (who ("zzz", "owner"))), Reason::kConflict);
}

// What an edge cloud keeps and another arbiter (a restarted or new home
// node) takes back: the same lease goes on, with a fresh idle time, and the
// epochs continue; an older state is not taken.
TEST (ControlArbiter, ItsStateIsRestoredWholeAndNeverBackwards)
{
  Fixture kept;
  auto a = kept.arb.request (who ("a", "consultant"));
  kept.arb.request (who ("b", "owner"));
  kept.arb.request (who ("c", "trainee"));
  const ControlState state = kept.arb.state ();
  EXPECT_EQ (state.epoch, 42u);

  Fixture home;
  home.now = 900000000; // another process's clock
  ASSERT_TRUE (home.arb.restore (state));
  EXPECT_TRUE (home.arb.take_changed ());
  EXPECT_TRUE (home.arb.check ("a", a.lease->id)) << "the lease granted by the other arbiter";
  ASSERT_EQ (home.arb.queue ().size (), 2u);
  EXPECT_EQ (home.arb.queue ()[0].session, "b");
  EXPECT_EQ (home.arb.expires_in_us (), 5000000) << "its idle time starts afresh";
  home.now += 5000000;
  EXPECT_TRUE (home.arb.tick ());
  EXPECT_EQ (home.arb.holder ()->holder.session, "b");
  EXPECT_EQ (home.arb.holder ()->epoch, 43u) << "the epochs continue";

  ControlState older = state;
  older.epoch = 40;
  EXPECT_FALSE (home.arb.restore (older));
  EXPECT_EQ (home.arb.holder ()->holder.session, "b");
  EXPECT_EQ (home.arb.epoch (), 43u);
}
