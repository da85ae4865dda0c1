// Test helpers for the edge cloud: a real etcd cluster of N members on
// 127.0.0.1 (Debian's etcd-server, started and stopped by the test), and a TCP
// relay the test can cut to partition one client from it.
#pragma once

#include "testutil.h"

#include <gio/gio.h>
#include <glib.h>
#include <libsoup/soup.h>

#include <atomic>
#include <csignal>
#include <sys/prctl.h>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace livemicro::test {

// A port that was free a moment ago.
inline int
free_tcp_port ()
{
  g_autoptr (GSocket) s
      = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, nullptr);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) a = g_inet_socket_address_new (lo, 0);
  if (!s || !g_socket_bind (s, a, FALSE, nullptr))
    return 0;
  g_autoptr (GSocketAddress) bound = g_socket_get_local_address (s, nullptr);
  return bound ? g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound)) : 0;
}

// Polls `cond` every 50 ms until it holds or `timeout_s` passed.
inline bool
eventually (const std::function<bool ()> &cond, double timeout_s)
{
  gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
  while (g_get_monotonic_time () < deadline) {
    if (cond ())
      return true;
    g_usleep (50000);
  }
  return cond ();
}

inline bool
etcd_available ()
{
  g_autofree char *p = g_find_program_in_path ("etcd");
  return p != nullptr;
}

class EtcdCluster {
public:
  explicit EtcdCluster (int members)
  {
    for (int i = 0; i < members; i++)
      members_.push_back ({"m" + std::to_string (i + 1), free_tcp_port (), free_tcp_port (), nullptr});
  }
  ~EtcdCluster ()
  {
    for (size_t i = 0; i < members_.size (); i++)
      kill (i);
  }

  // Starts every member; true once each answers /health.  A start that
  // fails (a port taken meanwhile by another process, a loaded machine)
  // prints the members' logs and is tried once more on fresh ports.
  bool start (double timeout_s = 20)
  {
    for (int attempt = 1; attempt <= 2; attempt++) {
      if (start_once (timeout_s))
        return true;
      for (size_t i = 0; i < members_.size (); i++) {
        kill (i);
        g_autofree char *log = nullptr;
        if (g_file_get_contents (log_of (members_[i]).c_str (), &log, nullptr, nullptr)) {
          std::string text (log);
          g_printerr ("etcd member %s did not start (attempt %d); its log ends:\n%s\n",
                      members_[i].name.c_str (), attempt,
                      text.substr (text.size () > 2000 ? text.size () - 2000 : 0).c_str ());
        }
        members_[i].client_port = free_tcp_port ();
        members_[i].peer_port = free_tcp_port ();
      }
      generation_++;
    }
    return false;
  }

  std::string endpoint (size_t i) const
  {
    return "http://127.0.0.1:" + std::to_string (members_[i].client_port);
  }
  std::vector<std::string> endpoints () const
  {
    std::vector<std::string> out;
    for (size_t i = 0; i < members_.size (); i++)
      out.push_back (endpoint (i));
    return out;
  }
  // "etcd=URL,URL,…" as livemicrod --cluster takes it.
  std::string cluster_arg () const
  {
    std::string s = "etcd=";
    for (size_t i = 0; i < members_.size (); i++)
      s += (i ? "," : "") + endpoint (i);
    return s;
  }

  // SIGKILL, as a crashed machine.
  void kill (size_t i)
  {
    auto &m = members_[i];
    if (!m.proc)
      return;
    g_subprocess_force_exit (m.proc);
    g_subprocess_wait (m.proc, nullptr, nullptr);
    g_clear_object (&m.proc);
  }

  bool healthy (size_t i) const
  {
    g_autoptr (SoupSession) s = soup_session_new_with_options ("timeout", 2, nullptr);
    g_autoptr (SoupMessage) msg = soup_message_new ("GET", (endpoint (i) + "/health").c_str ());
    g_autoptr (GBytes) body = soup_session_send_and_read (s, msg, nullptr, nullptr);
    if (!body || soup_message_get_status (msg) != 200)
      return false;
    gsize len = 0;
    const char *d = static_cast<const char *> (g_bytes_get_data (body, &len));
    return std::string (d, len).find ("\"true\"") != std::string::npos;
  }

private:
  struct Member {
    std::string name;
    int client_port, peer_port;
    GSubprocess *proc;
  };

  bool start_once (double timeout_s)
  {
    for (size_t i = 0; i < members_.size (); i++)
      if (!spawn (i))
        return false;
    gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
    for (size_t i = 0; i < members_.size (); i++)
      while (!healthy (i)) {
        if (g_get_monotonic_time () > deadline)
          return false;
        g_usleep (100000);
      }
    return true;
  }

  std::string log_of (const Member &m) const
  {
    return dir_.file ("etcd-" + m.name + "-" + std::to_string (generation_) + ".log");
  }

  bool spawn (size_t i)
  {
    auto &m = members_[i];
    std::string initial;
    for (auto &o : members_)
      initial += (initial.empty () ? "" : ",") + o.name + "=http://127.0.0.1:" + std::to_string (o.peer_port);
    const std::string client = "http://127.0.0.1:" + std::to_string (m.client_port);
    const std::string peer = "http://127.0.0.1:" + std::to_string (m.peer_port);
    const std::string data = dir_.file ("data-" + m.name + "-" + std::to_string (generation_));
    const std::string log = log_of (m);
    g_autoptr (GSubprocessLauncher) l = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDERR_MERGE);
    g_subprocess_launcher_set_stdout_file_path (l, log.c_str ());
    // A test that crashes takes its etcd members with it.
    g_subprocess_launcher_set_child_setup (
        l, [] (gpointer) { prctl (PR_SET_PDEATHSIG, SIGKILL); }, nullptr, nullptr);
    const char *argv[] = {"etcd", "--name", m.name.c_str (), "--data-dir", data.c_str (),
                          "--listen-client-urls", client.c_str (), "--advertise-client-urls", client.c_str (),
                          "--listen-peer-urls", peer.c_str (), "--initial-advertise-peer-urls", peer.c_str (),
                          "--initial-cluster", initial.c_str (), "--initial-cluster-state", "new",
                          // Loopback: short heartbeats so a lost member is seen fast.
                          "--heartbeat-interval", "50", "--election-timeout", "500", nullptr};
    m.proc = g_subprocess_launcher_spawnv (l, argv, nullptr);
    return m.proc != nullptr;
  }

  TempDir dir_;
  std::vector<Member> members_;
  int generation_ = 0; // starts tried
};

// A TCP relay 127.0.0.1:port() → 127.0.0.1:target.  cut() closes every
// connection and refuses new ones (a partition); restore() lets them through.
class TcpRelay {
public:
  explicit TcpRelay (int target_port) : target_ (target_port)
  {
    listener_ = g_socket_listener_new ();
    port_ = g_socket_listener_add_any_inet_port (listener_, nullptr, nullptr);
    thread_ = std::thread ([this] { accept_loop (); });
  }
  ~TcpRelay ()
  {
    stopping_ = true;
    cut ();
    g_socket_listener_close (listener_);
    g_cancellable_cancel (cancel_);
    thread_.join ();
    for (auto &t : pumps_)
      t.join ();
    for (auto *c : held_)
      g_object_unref (c);
    g_object_unref (listener_);
    g_object_unref (cancel_);
  }
  int port () const { return port_; }
  std::string url () const { return "http://127.0.0.1:" + std::to_string (port_); }

  void cut ()
  {
    std::lock_guard<std::mutex> lock (mutex_);
    open_ = false;
    for (GSocket *s : sockets_)
      g_socket_shutdown (s, TRUE, TRUE, nullptr);
  }
  void restore ()
  {
    std::lock_guard<std::mutex> lock (mutex_);
    open_ = true;
  }

private:
  void accept_loop ()
  {
    while (!stopping_) {
      GSocketConnection *in = g_socket_listener_accept (listener_, nullptr, cancel_, nullptr);
      if (!in)
        continue;
      bool open;
      {
        std::lock_guard<std::mutex> lock (mutex_);
        open = open_;
      }
      if (!open) {
        g_io_stream_close (G_IO_STREAM (in), nullptr, nullptr);
        g_object_unref (in);
        continue;
      }
      g_autoptr (GSocketClient) c = g_socket_client_new ();
      GSocketConnection *out = g_socket_client_connect_to_host (
          c, ("127.0.0.1:" + std::to_string (target_)).c_str (), 0, nullptr, nullptr);
      if (!out) {
        g_object_unref (in);
        continue;
      }
      std::lock_guard<std::mutex> lock (mutex_);
      sockets_.push_back (g_socket_connection_get_socket (in));
      sockets_.push_back (g_socket_connection_get_socket (out));
      pumps_.emplace_back ([in, out] { pump (in, out); });
      pumps_.emplace_back ([in, out] { pump (out, in); });
      held_.push_back (in);
      held_.push_back (out);
    }
  }

  static void pump (GSocketConnection *from, GSocketConnection *to)
  {
    GSocket *a = g_socket_connection_get_socket (from);
    GSocket *b = g_socket_connection_get_socket (to);
    char buf[16384];
    for (;;) {
      gssize n = g_socket_receive (a, buf, sizeof buf, nullptr, nullptr);
      if (n <= 0)
        break;
      if (g_socket_send (b, buf, n, nullptr, nullptr) != n)
        break;
    }
    g_socket_shutdown (b, FALSE, TRUE, nullptr);
  }

  int target_, port_ = 0;
  GSocketListener *listener_ = nullptr;
  GCancellable *cancel_ = g_cancellable_new ();
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  bool open_ = true;
  std::vector<GSocket *> sockets_;
  std::vector<GSocketConnection *> held_;
  std::vector<std::thread> pumps_;
  std::thread thread_;
};

} // namespace livemicro::test
