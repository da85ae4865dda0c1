// WorkerLink against a stand-in worker process (fake_worker.cpp): what a
// worker said before it exited reaches the daemon before its end does.
#include "worker_link.h"

#include <gtest/gtest.h>

#include <variant>

using namespace livemicro::orchestrator;

namespace {

struct Heard {
  std::vector<std::string> order; // "warning", "failed: ...", "down: ..."
  bool down () const { return !order.empty () && order.back ().rfind ("down: ", 0) == 0; }
};

// Starts a WorkerLink on the fake worker and runs the main loop until the
// worker is reported down (or timeout_s passed); stops the link.
Heard
run_until_down (double timeout_s)
{
  Heard heard;
  WorkerLink::Callbacks cb;
  cb.frame = [] (const wire::FrameHeader &, const uint8_t *, size_t) {};
  cb.started = [] {};
  cb.event = [&] (const WorkerEvent &e) {
    if (std::holds_alternative<event::Warning> (e))
      heard.order.push_back ("warning");
    else if (auto *f = std::get_if<event::Failed> (&e))
      heard.order.push_back ("failed: " + f->message);
  };
  cb.down = [&] (const std::string &why) { heard.order.push_back ("down: " + why); };
  auto link = std::make_unique<WorkerLink> ("fake", FAKE_WORKER_PATH, cb);
  link->start ();
  gint64 until = g_get_monotonic_time () + gint64 (timeout_s * G_USEC_PER_SEC);
  guint tick = g_timeout_add (
      50, [] (gpointer) -> gboolean { return G_SOURCE_CONTINUE; }, nullptr);
  while (!heard.down () && g_get_monotonic_time () < until)
    g_main_context_iteration (nullptr, TRUE);
  g_source_remove (tick);
  link->stop ();
  return heard;
}

} // namespace

// The worker writes its reason and exits at once; the exit is often reaped
// before its last messages are decoded.  The daemon must still hear every
// message, then the end — otherwise a microscope whose slide is missing is
// reported as "exited with status 0" instead of why.
TEST (WorkerLink, EverythingAWorkerSaidArrivesBeforeItsExit)
{
  const int kWarnings = 300;
  g_setenv ("FAKE_WORKER_WARNINGS", std::to_string (kWarnings).c_str (), TRUE);
  g_unsetenv ("FAKE_WORKER_CHILD");
  for (int round = 0; round < 5; round++) {
    Heard heard = run_until_down (10);
    ASSERT_EQ (heard.order.size (), size_t (kWarnings + 2)) << "round " << round;
    EXPECT_EQ (heard.order[kWarnings], "failed: cannot open /no/such/slide.svs");
    EXPECT_EQ (heard.order.back (), "down: exited with status 0");
  }
}

// A child the worker left behind keeps the socket open after the worker
// exited: the end is reported all the same, after a short wait for the
// worker's last words (not when the child goes, 5 s later).
TEST (WorkerLink, AWorkersExitIsReportedEvenWhileAChildHoldsItsSocket)
{
  g_setenv ("FAKE_WORKER_WARNINGS", "3", TRUE);
  g_setenv ("FAKE_WORKER_CHILD", "1", TRUE);
  gint64 t0 = g_get_monotonic_time ();
  Heard heard = run_until_down (4);
  double took_s = (g_get_monotonic_time () - t0) / 1e6;
  g_unsetenv ("FAKE_WORKER_CHILD");
  ASSERT_TRUE (heard.down ()) << "no end reported within 4 s";
  EXPECT_LT (took_s, 4.0);
  ASSERT_EQ (heard.order.size (), 5u);
  EXPECT_EQ (heard.order[3], "failed: cannot open /no/such/slide.svs");
}
