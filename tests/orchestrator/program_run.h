// Running a program to its end from a test (ffmpeg, ffprobe), bounded in time.
#pragma once

#include <gio/gio.h>

#include <string>
#include <thread>
#include <vector>

namespace livemicro::test {

struct ProgramRun {
  int status = -1;
  std::string out, err;
};

// Runs a program to its end (bounded by `timeout_s`: then it is killed).
inline ProgramRun
run (const std::vector<std::string> &args, double timeout_s)
{
  ProgramRun r;
  std::vector<const char *> argv;
  for (const auto &a : args)
    argv.push_back (a.c_str ());
  argv.push_back (nullptr);
  g_autoptr (GError) error = nullptr;
  g_autoptr (GSubprocess) p
      = g_subprocess_newv (argv.data (),
                           (GSubprocessFlags)(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE
                                              | G_SUBPROCESS_FLAGS_STDIN_INHERIT),
                           &error);
  if (!p) {
    r.err = error->message;
    return r;
  }
  std::thread killer ([&p, timeout_s] {
    gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
    while (g_get_monotonic_time () < deadline && g_subprocess_get_identifier (p))
      g_usleep (50000);
    if (g_subprocess_get_identifier (p))
      g_subprocess_force_exit (p);
  });
  g_autofree char *out = nullptr, *err = nullptr;
  g_subprocess_communicate_utf8 (p, nullptr, nullptr, &out, &err, nullptr);
  g_subprocess_wait (p, nullptr, nullptr);
  killer.join ();
  r.status = g_subprocess_get_if_exited (p) ? g_subprocess_get_exit_status (p) : -1;
  r.out = out ? out : "";
  r.err = err ? err : "";
  return r;
}

inline bool
have (const char *program)
{
  g_autofree char *p = g_find_program_in_path (program);
  return p != nullptr;
}

} // namespace livemicro::test
