// A controller emulator (tests/hw/emulators/*.py) run by a test: started on
// a fresh pseudo-terminal published as a symlink, controlled through its
// stdin, its events (PTY, RX <command>, DOWN, OK …) read from its stdout.
#pragma once

#include "testutil.h"

#include <gio/gio.h>

#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace livemicro::test {

inline std::string
emulators_dir ()
{
  const char *e = std::getenv ("LIVEMICRO_EMULATORS");
  return e ? e : "tests/hw/emulators";
}

class Emulator {
public:
  Emulator (const std::string &script, const std::vector<std::string> &args = {})
  {
    link_ = dir_.file ("tty" + script.substr (0, script.find ('_')));
    std::vector<std::string> argv
        = {"/usr/bin/python3", "-u", emulators_dir () + "/" + script, "--link", link_};
    argv.insert (argv.end (), args.begin (), args.end ());
    std::vector<const char *> cargv;
    for (auto &a : argv)
      cargv.push_back (a.c_str ());
    cargv.push_back (nullptr);
    GError *error = nullptr;
    proc_ = g_subprocess_newv (
        cargv.data (), (GSubprocessFlags)(G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE),
        &error);
    if (!proc_) {
      failure_ = error->message;
      g_error_free (error);
      return;
    }
    GInputStream *out = g_subprocess_get_stdout_pipe (proc_);
    reader_ = std::thread ([this, out] {
      GDataInputStream *in = g_data_input_stream_new (out);
      for (;;) {
        gsize len = 0;
        char *line = g_data_input_stream_read_line (in, &len, nullptr, nullptr);
        if (!line)
          break;
        std::lock_guard<std::mutex> l (mutex_);
        events_.push_back (line);
        g_free (line);
        cv_.notify_all ();
      }
      g_object_unref (in);
    });
    wait_event ("PTY ", 10);
  }
  ~Emulator ()
  {
    if (!proc_)
      return;
    control ("quit");
    gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
    while (g_subprocess_get_identifier (proc_) && g_get_monotonic_time () < deadline)
      g_usleep (10000);
    if (g_subprocess_get_identifier (proc_))
      g_subprocess_force_exit (proc_);
    g_subprocess_wait (proc_, nullptr, nullptr);
    if (reader_.joinable ())
      reader_.join ();
    g_object_unref (proc_);
  }
  bool ok () const { return proc_ && failure_.empty (); }
  const std::string &link () const { return link_; }
  const std::string &dir () const { return dir_.path (); }

  void control (const std::string &command)
  {
    GOutputStream *in = g_subprocess_get_stdin_pipe (proc_);
    std::string line = command + "\n";
    g_output_stream_write_all (in, line.data (), line.size (), nullptr, nullptr, nullptr);
    g_output_stream_flush (in, nullptr, nullptr);
  }
  // Index of the next event: wait_event/events_since from here on.
  size_t mark ()
  {
    std::lock_guard<std::mutex> l (mutex_);
    return events_.size ();
  }
  // Waits for an event starting with `prefix` at or after index `from`.
  bool wait_event (const std::string &prefix, double timeout_s, size_t from = 0, std::string *found = nullptr)
  {
    std::unique_lock<std::mutex> l (mutex_);
    auto deadline
        = std::chrono::steady_clock::now () + std::chrono::milliseconds ((int64_t)(timeout_s * 1000));
    for (;;) {
      for (size_t i = from; i < events_.size (); i++)
        if (events_[i].rfind (prefix, 0) == 0) {
          if (found)
            *found = events_[i];
          return true;
        }
      if (cv_.wait_until (l, deadline) == std::cv_status::timeout)
        return false;
    }
  }
  std::vector<std::string> events_since (size_t from)
  {
    std::lock_guard<std::mutex> l (mutex_);
    return std::vector<std::string> (events_.begin () + (long)std::min (from, events_.size ()),
                                     events_.end ());
  }
  // Received commands (RX lines) since `from` that start with `prefix`.
  std::vector<std::string> received (size_t from, const std::string &prefix = "")
  {
    std::vector<std::string> out;
    for (auto &e : events_since (from))
      if (e.rfind ("RX " + prefix, 0) == 0)
        out.push_back (e.substr (3));
    return out;
  }

private:
  TempDir dir_;
  std::string link_, failure_;
  GSubprocess *proc_ = nullptr;
  std::thread reader_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::string> events_;
};

// Polls `cond` every 10 ms until it holds or `timeout_s` passes.
template <typename Cond>
bool
eventually (Cond cond, double timeout_s)
{
  gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
  while (!cond ()) {
    if (g_get_monotonic_time () > deadline)
      return false;
    g_usleep (10000);
  }
  return true;
}

} // namespace livemicro::test
