// A stand-in for livemicro-worker that speaks the wire protocol and exits
// at once, for WorkerLink's tests: it writes FAKE_WORKER_WARNINGS warning
// events, then the failure it is "dying of", then exits with status 0 — the
// way the real worker ends when its capture cannot open.
#include "common/wire.h"
#include "common/worker_protocol.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>

using namespace livemicro::orchestrator;

int
main (int argc, char **argv)
{
  int fd = -1;
  for (int i = 1; i + 1 < argc; i++)
    if (std::strcmp (argv[i], "--fd") == 0)
      fd = std::atoi (argv[i + 1]);
  if (fd < 0)
    return 2;
  const char *n = std::getenv ("FAKE_WORKER_WARNINGS");
  int warnings = n ? std::atoi (n) : 0;
  const char *child = std::getenv ("FAKE_WORKER_CHILD");
  if (child && std::strcmp (child, "1") == 0 && fork () == 0) {
    // Holds only the worker's socket: the test runner's output is let go,
    // so it does not wait for this child.
    for (int std_fd : {0, 1, 2})
      if (std_fd != fd)
        close (std_fd);
    sleep (5);
    _exit (0);
  }
  wire::Writer out (fd);
  for (int i = 0; i < warnings; i++)
    out.send_json (wire::Type::kEvent, encode (event::Warning{"fake", "warning " + std::to_string (i)}));
  out.send_json (wire::Type::kEvent, encode (event::Failed{"cannot open /no/such/slide.svs"}));
  return 0;
}
