// Supervision of one media worker process (livemicro-worker) and the
// socket to it.  Frames arrive on a reader thread; events, start and exit
// are delivered on the daemon's main context.  A worker that exits or
// crashes is started again at once (backing off to 1 s if it keeps failing
// before it starts), so a microscope's media is back within about a second
// (tests/orchestrator/test_faults.cpp measures it).
#pragma once

#include "common/background.h"
#include "common/wire.h"
#include "common/worker_protocol.h"

#include <gio/gio.h>
#include <glib.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

namespace livemicro::orchestrator {

class WorkerLink {
public:
  struct Callbacks {
    // Reader thread: one encoded access unit of a view.
    using Frame = std::function<void (const wire::FrameHeader &, const uint8_t *, size_t)>;
    Frame frame;
    // Main context: an event of the worker (state, features, stats, ...).
    std::function<void (const WorkerEvent &)> event;
    // Main context: the capture pipeline runs; (re)create the views now.
    std::function<void ()> started;
    // Main context: the worker is gone (exit status or reason).
    std::function<void (const std::string &)> down;
  };

  WorkerLink (std::string name, std::string worker_path, Callbacks callbacks);
  ~WorkerLink ();
  WorkerLink (const WorkerLink &) = delete;
  WorkerLink &operator= (const WorkerLink &) = delete;

  // The capture description sent to every (re)started worker.
  void set_capture (std::string description) { capture_ = std::move (description); }
  void start ();
  void stop ();
  // Sends a JSON command; false when no worker is up.
  bool command (const std::string &json);
  bool running () const;
  int pid () const;
  int restarts () const { return restarts_; }

private:
  struct Incarnation;
  void spawn ();
  void read_messages (std::weak_ptr<Incarnation> inc, int fd, const Callbacks::Frame &frame_cb);
  void post_event (std::weak_ptr<Incarnation> inc, std::optional<WorkerEvent> e, bool end = false);
  void on_event (Incarnation &inc, std::optional<WorkerEvent> e);
  void watch_exit (GSubprocess *proc, const std::shared_ptr<Incarnation> &inc);
  void end_if_done (const std::shared_ptr<Incarnation> &inc);
  void on_exit (std::shared_ptr<Incarnation> inc, const std::string &why);

  std::string name_, worker_path_, capture_;
  Callbacks callbacks_;
  std::shared_ptr<Incarnation> current_;
  bool stopping_ = false;
  int restarts_ = 0;
  int failures_in_a_row_ = 0;
  guint restart_source_ = 0;
  // Decodes the events and unpacks the fields of nuclei, in order, off the
  // reader thread (which must hand frames on at once) and off the main
  // loop.  Outlives the readers (reaper_ joins them first).
  Background decoder_;
  Background reaper_; // ends the incarnations that exited
};

} // namespace livemicro::orchestrator
