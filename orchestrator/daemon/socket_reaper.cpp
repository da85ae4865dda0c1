#include "socket_reaper.h"

#include <libsoup/soup.h>

namespace livemicro::orchestrator {

namespace {
const char kTracked[] = "livemicro-reaper";
}

bool
LeakedSocketReaper::libsoup_leaks ()
{
  // Checked on Debian 12's 3.2.3 (soup-listener.c: listen_watch keeps the
  // accepted socket's reference after handing it to the connection, which
  // takes its own).  Newer releases are left alone until checked.
  return soup_get_major_version () == 3 && soup_get_minor_version () <= 2;
}

LeakedSocketReaper::LeakedSocketReaper () : active_ (libsoup_leaks ()) {}

LeakedSocketReaper::~LeakedSocketReaper ()
{
  for (GSocket *s : sockets_)
    g_object_unref (s); // ours only: libsoup may still use the others
}

void
LeakedSocketReaper::track (GSocket *socket)
{
  if (!active_ || !socket || g_object_get_data (G_OBJECT (socket), kTracked))
    return;
  g_object_set_data (G_OBJECT (socket), kTracked, GINT_TO_POINTER (1));
  sockets_.push_back (G_SOCKET (g_object_ref (socket)));
}

int
LeakedSocketReaper::sweep ()
{
  int freed = 0;
  std::vector<GSocket *> keep;
  for (GSocket *s : sockets_) {
    const guint refs = g_atomic_int_get (&G_OBJECT (s)->ref_count);
    if (!g_socket_is_closed (s) || refs > 2) {
      keep.push_back (s); // still in use (a connection, a WebSocket stream)
      continue;
    }
    if (refs == 2) // ours and the one the listener leaked
      g_object_unref (s);
    g_object_unref (s);
    freed++;
  }
  sockets_.swap (keep);
  return freed;
}

} // namespace livemicro::orchestrator
