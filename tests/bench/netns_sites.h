// The sites of bench-edge-vs-cloud as Linux network namespaces on this
// machine (root only), and the processes run in them.  docs/evaluation.md
// draws the topology:
//
//   home ─┐ LAN 1 Gbit/s                           ┌─ cloud  (data centre, 1 Gbit/s)
//         ├─ site ═════ WAN (profile) ═════ inet ─┤
//   edge ─┘          wan0            wan1          └─ path   (pathologist's access link, 100 Mbit/s)
//
// Rates are tc tbf on both ends of each link.  The WAN is a pair of TUN
// devices joined by `edge-vs-cloud-helper wan`, which adds the profile's
// one-way delay and loss in user space (this kernel has no sch_netem; with
// it, netem on wan0/wan1 would do the same).  Every name starts with a
// prefix unique to the run; the destructor (and Sites::emergency_cleanup
// from a signal) kills what was started and deletes the namespaces, which
// takes the veths, TUN devices and qdiscs with them.
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace livemicro::bench {

struct WanProfile {
  std::string name;
  double rtt_ms = 0, rate_mbit = 0, loss_pct = 0; // loss in each direction
};

class Sites {
public:
  // The namespaces, by role.
  static constexpr const char *kRoles[] = {"home", "edge", "site", "inet", "cloud", "path"};

  Sites (std::string prefix, std::string helper) : prefix_ (std::move (prefix)), helper_ (std::move (helper))
  {
    std::lock_guard<std::mutex> lock (registry_mutex ());
    registry () = this;
  }
  ~Sites ()
  {
    cleanup ();
    std::lock_guard<std::mutex> lock (registry_mutex ());
    registry () = nullptr;
  }

  std::string ns (const std::string &role) const { return prefix_ + "-" + role; }
  static std::string address (const std::string &role)
  {
    if (role == "home")
      return "10.77.1.2";
    if (role == "edge")
      return "10.77.2.2";
    if (role == "cloud")
      return "10.77.3.2";
    return "10.77.4.2"; // path
  }

  // Makes the namespaces, links, addresses, routes and the WAN emulator;
  // throws with the failing command's message.
  void create ()
  {
    for (const char *r : kRoles) {
      run ("ip netns add " + ns (r));
      {
        std::lock_guard<std::mutex> lock (registry_mutex ());
        created_.push_back (ns (r));
      }
      run ("ip -n " + ns (r) + " link set lo up");
    }
    for (const char *router : {"site", "inet"})
      for (const char *key :
           {"net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"})
        run ("ip netns exec " + ns (router) + " sysctl -q -w " + key);
    veth ("site", "to-home", "10.77.1.1", "home", "lan", "10.77.1.2", 1000);
    veth ("site", "to-edge", "10.77.2.1", "edge", "lan", "10.77.2.2", 1000);
    veth ("inet", "to-cloud", "10.77.3.1", "cloud", "dc", "10.77.3.2", 1000);
    veth ("inet", "to-path", "10.77.4.1", "path", "access", "10.77.4.2", 100);
    run ("ip -n " + ns ("home") + " route add default via 10.77.1.1");
    run ("ip -n " + ns ("edge") + " route add default via 10.77.2.1");
    run ("ip -n " + ns ("cloud") + " route add default via 10.77.3.1");
    run ("ip -n " + ns ("path") + " route add default via 10.77.4.1");
    start_wan ();
    run ("ip -n " + ns ("site") + " addr add 10.77.9.1 peer 10.77.9.2 dev wan0");
    run ("ip -n " + ns ("inet") + " addr add 10.77.9.2 peer 10.77.9.1 dev wan1");
    run ("ip -n " + ns ("site") + " link set wan0 up");
    run ("ip -n " + ns ("inet") + " link set wan1 up");
    run ("ip -n " + ns ("site") + " route add default dev wan0");
    run ("ip -n " + ns ("inet") + " route add 10.77.1.0/24 dev wan1");
    run ("ip -n " + ns ("inet") + " route add 10.77.2.0/24 dev wan1");
  }

  // Whether this kernel has sch_netem (tried on the pathologist's loopback).
  // The WAN uses the user-space emulator either way, so that every run of
  // the benchmark emulates the same way.
  bool kernel_has_netem () const
  {
    int status = 1;
    g_autofree char *out = nullptr;
    g_autofree char *err = nullptr;
    g_spawn_command_line_sync (("tc -n " + ns ("path") + " qdisc add dev lo root netem delay 1ms").c_str (),
                               &out, &err, &status, nullptr);
    const bool ok = g_spawn_check_wait_status (status, nullptr);
    if (ok)
      g_spawn_command_line_sync (("tc -n " + ns ("path") + " qdisc del dev lo root").c_str (), nullptr,
                                 nullptr, nullptr, nullptr);
    return ok;
  }

  // Rate by tbf on both WAN devices; delay and loss by the emulator.
  void set_wan (const WanProfile &p)
  {
    const double queue_ms = std::max (50.0, p.rtt_ms);
    shape ("site", "wan0", p.rate_mbit, queue_ms);
    shape ("inet", "wan1", p.rate_mbit, queue_ms);
    const std::string line = std::to_string (p.rtt_ms / 2) + " " + std::to_string (p.loss_pct) + "\n";
    g_output_stream_write_all (g_subprocess_get_stdin_pipe (wan_), line.data (), line.size (), nullptr,
                               nullptr, nullptr);
  }

  // Bytes the WAN carried so far (IP packets, both directions).
  double wan_bytes ()
  {
    g_output_stream_write_all (g_subprocess_get_stdin_pipe (wan_), "stats\n", 6, nullptr, nullptr, nullptr);
    g_autofree char *line = g_data_input_stream_read_line (wan_out_, nullptr, nullptr, nullptr);
    unsigned long long a = 0, b = 0;
    if (!line || std::sscanf (line, "bytes %llu %llu", &a, &b) != 2)
      return -1;
    return (double)(a + b);
  }

  // Starts argv in a namespace (stdout and stderr to `log`; stdin and stdout
  // as pipes when `pipes`).  Killed by cleanup() or with this process.
  GSubprocess *spawn (const std::string &role, const std::vector<std::string> &argv, const std::string &log,
                      bool pipes = false)
  {
    g_autoptr (GSubprocessLauncher) l = g_subprocess_launcher_new (
        pipes ? (GSubprocessFlags)(G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE)
              : G_SUBPROCESS_FLAGS_STDERR_MERGE);
    if (pipes)
      g_subprocess_launcher_set_stderr_file_path (l, log.c_str ());
    else
      g_subprocess_launcher_set_stdout_file_path (l, log.c_str ());
    g_subprocess_launcher_set_child_setup (
        l, [] (gpointer) { prctl (PR_SET_PDEATHSIG, SIGKILL); }, nullptr, nullptr);
    std::vector<const char *> args = {"ip", "netns", "exec", nullptr};
    const std::string name = ns (role);
    args[3] = name.c_str ();
    for (const auto &a : argv)
      args.push_back (a.c_str ());
    args.push_back (nullptr);
    g_autoptr (GError) error = nullptr;
    GSubprocess *p = g_subprocess_launcher_spawnv (l, args.data (), &error);
    if (!p)
      throw std::runtime_error ("cannot start " + argv[0] + ": " + error->message);
    std::lock_guard<std::mutex> lock (registry_mutex ());
    processes_.push_back (p);
    pids_[p] = std::atoi (g_subprocess_get_identifier (p));
    return p;
  }

  // SIGTERM, then SIGKILL after 5 s; forgets the process.
  void stop (GSubprocess *p)
  {
    if (!p)
      return;
    g_subprocess_send_signal (p, SIGTERM);
    gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
    while (g_subprocess_get_identifier (p) && g_get_monotonic_time () < deadline)
      g_usleep (20000);
    g_subprocess_force_exit (p);
    g_subprocess_wait (p, nullptr, nullptr);
    std::lock_guard<std::mutex> lock (registry_mutex ());
    for (auto it = processes_.begin (); it != processes_.end (); ++it)
      if (*it == p) {
        processes_.erase (it);
        pids_.erase (p);
        g_object_unref (p);
        break;
      }
  }

  // Everything started, anything else still in the namespaces (a node's
  // workers), then the namespaces.  Safe to call twice.
  void cleanup ()
  {
    std::vector<GSubprocess *> ps;
    {
      std::lock_guard<std::mutex> lock (registry_mutex ());
      ps = processes_;
    }
    for (auto it = ps.rbegin (); it != ps.rend (); ++it)
      stop (*it);
    wan_ = nullptr;
    g_clear_object (&wan_out_);
    std::vector<std::string> names;
    {
      std::lock_guard<std::mutex> lock (registry_mutex ());
      names.swap (created_);
    }
    remove_namespaces (names);
  }

  // From the signal thread, while the main thread may be anywhere: SIGKILL
  // to every process started, then as cleanup().  No GObject is touched.
  static void emergency_cleanup ()
  {
    std::vector<std::string> names;
    {
      std::lock_guard<std::mutex> lock (registry_mutex ());
      if (!registry ())
        return;
      for (const auto &[p, pid] : registry ()->pids_)
        ::kill (pid, SIGKILL);
      names.swap (registry ()->created_);
    }
    remove_namespaces (names);
  }

  // Runs a command (no shell) and throws with its output when it fails.
  static void run (const std::string &command)
  {
    g_autofree char *out = nullptr;
    g_autofree char *err = nullptr;
    int status = 0;
    g_autoptr (GError) error = nullptr;
    if (!g_spawn_command_line_sync (command.c_str (), &out, &err, &status, &error)
        || !g_spawn_check_wait_status (status, nullptr))
      throw std::runtime_error (command + ": " + (error ? error->message : err ? err : ""));
  }

private:
  static Sites *&registry ()
  {
    static Sites *s = nullptr;
    return s;
  }
  static std::mutex &registry_mutex ()
  {
    static std::mutex m;
    return m;
  }

  static void remove_namespaces (const std::vector<std::string> &names)
  {
    for (const auto &n : names) {
      g_autofree char *out = nullptr;
      g_spawn_command_line_sync (("ip netns pids " + n).c_str (), &out, nullptr, nullptr, nullptr);
      std::istringstream pids (out ? out : "");
      for (int pid; pids >> pid;)
        if (pid != getpid ())
          ::kill (pid, SIGKILL);
      g_spawn_command_line_sync (("ip netns del " + n).c_str (), nullptr, nullptr, nullptr, nullptr);
    }
  }

  void veth (const char *a, const char *a_dev, const char *a_ip, const char *b, const char *b_dev,
             const char *b_ip, double rate_mbit)
  {
    run ("ip -n " + ns (a) + " link add name " + a_dev + " type veth peer name " + b_dev + " netns "
         + ns (b));
    run ("ip -n " + ns (a) + " addr add " + a_ip + "/24 dev " + a_dev);
    run ("ip -n " + ns (b) + " addr add " + b_ip + "/24 dev " + b_dev);
    run ("ip -n " + ns (a) + " link set " + a_dev + " up");
    run ("ip -n " + ns (b) + " link set " + b_dev + " up");
    shape (a, a_dev, rate_mbit, 20);
    shape (b, b_dev, rate_mbit, 20);
  }

  void shape (const std::string &role, const std::string &dev, double rate_mbit, double queue_ms)
  {
    const long burst = std::max (32768L, (long)(rate_mbit * 1e6 / 8 / 250));
    run ("tc -n " + ns (role) + " qdisc replace dev " + dev + " root tbf rate "
         + std::to_string ((long)(rate_mbit * 1000)) + "kbit burst " + std::to_string (burst) + " latency "
         + std::to_string ((long)queue_ms) + "ms");
  }

  void start_wan ()
  {
    wan_ = spawn ("site", {helper_, "wan", ns ("inet")}, log_dir_ + "/wan.log", true);
    wan_out_ = g_data_input_stream_new (g_subprocess_get_stdout_pipe (wan_));
    g_autofree char *line = g_data_input_stream_read_line (wan_out_, nullptr, nullptr, nullptr);
    if (!line || std::string (line) != "ready")
      throw std::runtime_error ("the WAN emulator did not start (see wan.log)");
  }

public:
  std::string log_dir_ = "/tmp";

private:
  std::string prefix_, helper_;
  std::vector<std::string> created_;
  std::vector<GSubprocess *> processes_;
  std::map<GSubprocess *, int> pids_;
  GSubprocess *wan_ = nullptr;
  GDataInputStream *wan_out_ = nullptr;
};

} // namespace livemicro::bench
