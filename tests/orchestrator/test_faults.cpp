// Faults a node lives through: its database locked by someone else or
// unwritable (a full disk), its media worker killed again and again, the
// daemon itself killed in the middle of commands.  Each test states what the
// user sees and checks that nothing that was answered is lost: no command
// reaches the stage without its audit row, no control epoch is issued twice.
#include "daemon_process.h"

#include <gtest/gtest.h>

#include <sqlite3.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <thread>

using livemicro::test::Daemon;
using livemicro::test::HttpReply;
using livemicro::test::RtspPlayer;

namespace {

const char *kSmall = R"({
  "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 400},
  "control": {"idle_timeout_ms": 30000, "max_commands_per_s": 1000},
  "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})";

class Faults : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }

  struct Session {
    std::string id, token;
  };
  static Session session (Daemon &d, const std::string &user, const std::string &role)
  {
    HttpReply r = d.create_session (user, role);
    EXPECT_EQ (r.status, 201) << r.body;
    return {r.str ("id"), r.str ("token")};
  }
  static HttpReply control (Daemon &d, const Session &s, const std::string &action)
  {
    return d.request ("POST", "/api/v1/microscopes/demo/control", "{\"action\":\"" + action + "\"}", s.token);
  }
  static HttpReply command (Daemon &d, const Session &s, const std::string &lease, const std::string &cmd)
  {
    return d.request ("POST", "/api/v1/microscopes/demo/commands",
                      "{\"lease\":\"" + lease + "\"," + cmd + "}", s.token);
  }
  static double stage_x (Daemon &d)
  {
    HttpReply r = d.request ("GET", "/api/v1/microscopes/demo");
    JsonObject *st = r.object () ? json_object_get_object_member (r.object (), "stage") : nullptr;
    return st ? json_object_get_double_member (st, "x_um") : NAN;
  }
  // Audit rows (admin view) whose detail or result contains `text`.
  static int audit_count (Daemon &d, const std::string &text)
  {
    HttpReply a = d.request ("GET", "/api/v1/audit?limit=10000");
    JsonArray *rows = a.object () ? json_object_get_array_member (a.object (), "audit") : nullptr;
    int n = 0;
    for (guint i = 0; rows && i < json_array_get_length (rows); i++) {
      JsonObject *r = json_array_get_object_element (rows, i);
      std::string line = std::string (json_object_get_string_member (r, "detail")) + " | "
                         + json_object_get_string_member (r, "result");
      n += line.find (text) != std::string::npos;
    }
    return n;
  }
  static bool wait_until (const std::function<bool ()> &done, double seconds)
  {
    gint64 deadline = g_get_monotonic_time () + (gint64)(seconds * 1e6);
    while (g_get_monotonic_time () < deadline) {
      if (done ())
        return true;
      g_usleep (50000);
    }
    return done ();
  }
};

// Another process holds the database (an operator's sqlite3 shell, a backup
// tool in the middle of a transaction).
class HeldDatabase {
public:
  explicit HeldDatabase (const std::string &path)
  {
    sqlite3_open (path.c_str (), &db_);
    sqlite3_busy_timeout (db_, 5000);
    ok_ = sqlite3_exec (db_, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  ~HeldDatabase () { release (); }
  bool ok () const { return ok_; }
  void release ()
  {
    if (db_) {
      sqlite3_exec (db_, "COMMIT", nullptr, nullptr, nullptr);
      sqlite3_close (db_);
      db_ = nullptr;
    }
  }

private:
  sqlite3 *db_ = nullptr;
  bool ok_ = false;
};

// The daemon's files cannot grow or be written past their first byte, as
// on a full disk: RLIMIT_FSIZE of the running daemon (writes fail with EFBIG;
// its log cannot be written either meanwhile).
class FullDisk {
public:
  explicit FullDisk (int pid) : pid_ (pid)
  {
    // The soft limit only: lowering the hard one could not be undone.
    ok_ = prlimit (pid_, RLIMIT_FSIZE, nullptr, &old_) == 0;
    rlimit one{1, old_.rlim_max};
    ok_ = ok_ && prlimit (pid_, RLIMIT_FSIZE, &one, nullptr) == 0;
  }
  ~FullDisk () { release (); }
  bool ok () const { return ok_; }
  void release ()
  {
    if (ok_)
      prlimit (pid_, RLIMIT_FSIZE, &old_, nullptr);
    ok_ = false;
  }

private:
  int pid_;
  rlimit old_{};
  bool ok_ = false;
};

} // namespace

// What the user sees: 503 "the state database cannot be written just now"
// within a fraction of a second for every move and every control change;
// the stage does not move; stop is still obeyed; when the database is free
// again everything works and the stop is in the audit log.
TEST_F (Faults, ALockedOrFullDatabaseRefusesActionsQuicklyAndNothingMoves)
{
  for (const char *fault : {"locked", "full"}) {
    SCOPED_TRACE (fault);
    Daemon d (kSmall);
    ASSERT_TRUE (d.start ()) << d.error ();
    Session owner = session (d, "olga", "owner");
    Session consultant = session (d, "carl", "consultant");
    HttpReply lease = control (d, owner, "request");
    ASSERT_EQ (lease.status, 200) << lease.body;
    const std::string l = lease.str ("lease");
    const gint64 epoch = json_object_get_int_member (lease.object (), "epoch");
    ASSERT_EQ (command (d, owner, l, R"("move": {"x_um": 1000, "y_um": 1000})").status, 202);
    ASSERT_TRUE (wait_until ([&] { return std::fabs (stage_x (d) - 1000) < 1; }, 10));
    const int accepted_rows = audit_count (d, "accepted as");

    std::unique_ptr<HeldDatabase> held;
    std::unique_ptr<FullDisk> full;
    if (std::string (fault) == "locked") {
      held = std::make_unique<HeldDatabase> (d.state_dir () + "/livemicro.db");
      ASSERT_TRUE (held->ok ());
    } else {
      full = std::make_unique<FullDisk> (d.pid ());
      ASSERT_TRUE (full->ok ()) << "prlimit: " << g_strerror (errno);
    }
    gint64 t0 = g_get_monotonic_time ();
    HttpReply moved = command (d, owner, l, R"("move_by": {"dx_um": 500, "dy_um": 0})");
    gint64 took_ms = (g_get_monotonic_time () - t0) / 1000;
    EXPECT_EQ (moved.status, 503) << moved.body;
    EXPECT_NE (moved.str ("error").find ("database"), std::string::npos) << moved.body;
    EXPECT_LT (took_ms, 1500) << "a held database must not stall the daemon";
    // Nor does control change hands.
    HttpReply released = control (d, owner, "release");
    EXPECT_EQ (released.status, 503) << released.body;
    HttpReply asked = control (d, consultant, "request");
    EXPECT_EQ (asked.status, 503) << asked.body;
    g_usleep (500000);
    EXPECT_NEAR (stage_x (d), 1000, 1) << "the stage moved without its audit row";
    HttpReply m = d.request ("GET", "/api/v1/microscopes/demo");
    EXPECT_EQ (json_object_get_int_member (m.object (), "epoch"), epoch);
    // Stop is always obeyed.
    ASSERT_EQ (command (d, owner, l, R"("jog": {"vx_um_s": 2000, "vy_um_s": 0})").status, 503);
    EXPECT_EQ (command (d, owner, "", R"("stop": {})").status, 202);
    // Other clients are served meanwhile.
    EXPECT_EQ (d.request ("GET", "/healthz", "", "").status, 200);

    if (held)
      held->release ();
    if (full)
      full->release ();
    // The stop's row is written once the database allows; work goes on.
    EXPECT_TRUE (wait_until ([&] { return audit_count (d, "(emergency stop)") == 1; }, 5));
    EXPECT_EQ (command (d, owner, l, R"("move_by": {"dx_um": 500, "dy_um": 0})").status, 202);
    EXPECT_TRUE (wait_until ([&] { return std::fabs (stage_x (d) - 1500) < 1; }, 10));
    // Exactly the accepted commands have rows: the move before, the stop,
    // the move after; none of the refused ones.
    EXPECT_EQ (audit_count (d, "accepted as"), accepted_rows + 2);
    EXPECT_TRUE (d.running ());
  }
}

// A lease granted is never granted again under the same epoch, whatever
// the database did meanwhile and however the daemon stopped.
TEST_F (Faults, EpochsAreNeverIssuedTwiceAcrossFaultsAndRestarts)
{
  livemicro::test::TempDir dir;
  const std::string state = dir.file ("state");
  std::vector<gint64> issued;
  {
    Daemon d (kSmall, state);
    ASSERT_TRUE (d.start ()) << d.error ();
    Session a = session (d, "ann", "owner");
    Session b = session (d, "bob", "consultant");
    for (int i = 0; i < 3; i++) {
      HttpReply g = control (d, a, "request");
      ASSERT_EQ (g.status, 200) << g.body;
      issued.push_back (json_object_get_int_member (g.object (), "epoch"));
      ASSERT_EQ (control (d, a, "release").status, 200);
    }
    {
      FullDisk full (d.pid ());
      ASSERT_TRUE (full.ok ());
      HttpReply g = control (d, b, "request");
      EXPECT_EQ (g.status, 503) << g.body;
      if (g.status == 200)
        issued.push_back (json_object_get_int_member (g.object (), "epoch"));
    }
    HttpReply g = control (d, b, "request");
    ASSERT_EQ (g.status, 200) << g.body;
    issued.push_back (json_object_get_int_member (g.object (), "epoch"));
    kill (d.pid (), SIGKILL); // no clean shutdown
    d.stop ();
  }
  Daemon again (kSmall, state);
  ASSERT_TRUE (again.start ()) << again.error ();
  HttpReply s = again.create_session ("cid", "owner");
  HttpReply g = again.request ("POST", "/api/v1/microscopes/demo/control", R"({"action":"request"})",
                               s.str ("token"));
  ASSERT_EQ (g.status, 200) << g.body;
  gint64 after = json_object_get_int_member (g.object (), "epoch");
  for (gint64 e : issued)
    EXPECT_GT (after, e) << "epoch " << after << " was issued before the restart";
}

// Killed in the middle of a stream of commands: every command that was
// answered 202 has its audit row after the restart; sessions and tokens
// are all there.
TEST_F (Faults, ADaemonKilledMidCommandLosesNoAnsweredCommand)
{
  livemicro::test::TempDir dir;
  const std::string state = dir.file ("state");
  std::atomic<int> accepted{0};
  Session owner;
  {
    Daemon d (kSmall, state);
    ASSERT_TRUE (d.start ()) << d.error ();
    owner = session (d, "olga", "owner");
    HttpReply lease = control (d, owner, "request");
    ASSERT_EQ (lease.status, 200);
    const std::string l = lease.str ("lease");
    std::atomic<bool> go{true};
    std::vector<std::thread> clients;
    for (int k = 0; k < 3; k++)
      clients.emplace_back ([&] {
        while (go) {
          HttpReply r = command (d, owner, l, R"("move_by": {"dx_um": 1, "dy_um": 0})");
          if (r.status == 202)
            accepted++;
          else if (r.status == 0)
            break; // the daemon is gone
        }
      });
    g_usleep (1500000);
    kill (d.pid (), SIGKILL);
    go = false;
    for (auto &t : clients)
      t.join ();
    d.stop ();
  }
  ASSERT_GT (accepted.load (), 10);
  Daemon again (kSmall, state);
  ASSERT_TRUE (again.start ()) << again.error ();
  // At least every answered command has its row (one more may have been
  // written just before the kill, its answer lost).
  int rows = audit_count (again, "accepted as");
  EXPECT_GE (rows, accepted.load ());
  EXPECT_LE (rows, accepted.load () + 3);
  // The session and its token survived.
  EXPECT_EQ (again.request ("GET", "/api/v1/sessions/" + owner.id, "", owner.token).status, 200);
}

// The media worker killed 20 times: each time the view is back for its
// RTSP player within a second (p95), and the daemon never goes down.
TEST_F (Faults, AKilledMediaWorkerIsBackWithinOneSecond)
{
  Daemon d (kSmall);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply s = d.create_session ("olga", "owner");
  ASSERT_EQ (s.status, 201);
  RtspPlayer p (s.str ("rtsp_url"), s.str ("id"), s.str ("token"), "tcp", false);
  ASSERT_TRUE (p.wait_frames (10, 15)) << p.error ();
  std::vector<double> gaps_ms;
  for (int k = 0; k < 20; k++) {
    HttpReply m = d.request ("GET", "/api/v1/microscopes/demo");
    gint64 pid = json_object_get_int_member_with_default (m.object (), "worker_pid", 0);
    ASSERT_GT (pid, 0);
    g_usleep (300000); // in-flight frames land
    gint64 killed = g_get_monotonic_time ();
    ASSERT_EQ (kill ((pid_t)pid, SIGKILL), 0);
    // Frames again: one whose arrival is after the kill and after the
    // frames already on their way.
    int before = p.frames ();
    gint64 back = 0;
    while (!back && g_get_monotonic_time () - killed < 15000000) {
      g_usleep (5000);
      if (p.frames () > before + 2 && p.last_frame_us () > killed + 50000)
        back = p.last_frame_us ();
    }
    ASSERT_GT (back, 0) << "kill " << k << ": no frame within 15 s\n" << d.log ();
    gaps_ms.push_back ((back - killed) / 1000.0);
  }
  std::sort (gaps_ms.begin (), gaps_ms.end ());
  double p95 = gaps_ms[(size_t)std::ceil (0.95 * gaps_ms.size ()) - 1];
  std::string all;
  for (double g : gaps_ms)
    all += std::to_string ((int)g) + " ";
  // The restart is CPU-bound (a new process, the capture opened, the view's
  // encoder built): on a 2-core machine with a load average L it takes
  // about L/2 times longer, and the bound says so rather than flake.
  double load[1] = {0};
  getloadavg (load, 1);
  const double allowed_ms = 1000 * std::max (1.0, load[0] / 2);
  std::printf ("worker restart gaps (ms, sorted): %s; p95 %.0f ms, allowed %.0f ms at load %.2f\n",
               all.c_str (), p95, allowed_ms, load[0]);
  EXPECT_LE (p95, allowed_ms) << "p95 " << p95 << " ms; all: " << all;
  EXPECT_TRUE (d.running ());
}
