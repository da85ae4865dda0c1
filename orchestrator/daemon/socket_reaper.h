// libsoup 3.2's listener keeps the reference g_socket_accept () gave it on
// every connection it accepts (its listen_watch never drops it), so each
// HTTP or WebSocket connection leaves its closed GSocket behind: ~350 bytes
// per connection, a node's RSS growing with its request count (valgrind:
// "definitely lost ... g_socket_accept").  The reaper takes its own
// reference on each accepted socket and, once the socket is closed and only
// its own and the leaked reference remain, drops both.  Only for the
// libsoup versions known to leak; elsewhere it does nothing.
#pragma once

#include <gio/gio.h>

#include <vector>

namespace livemicro::orchestrator {

class LeakedSocketReaper {
public:
  LeakedSocketReaper ();
  ~LeakedSocketReaper ();
  LeakedSocketReaper (const LeakedSocketReaper &) = delete;
  LeakedSocketReaper &operator= (const LeakedSocketReaper &) = delete;

  // A socket a request came in on (once per socket; later calls are no-ops).
  void track (GSocket *socket);
  // Frees the closed sockets libsoup is done with; returns how many.
  int sweep ();
  size_t tracked () const { return sockets_.size (); }
  // Whether the running libsoup leaks accepted sockets.
  static bool libsoup_leaks ();

private:
  bool active_;
  std::vector<GSocket *> sockets_;
};

} // namespace livemicro::orchestrator
