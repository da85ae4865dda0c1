// What the edge-cloud benchmarks share: etcd on the machine, the home node
// with its one virtual microscope, nodes joining through etcd, and waiting
// until every node sees the whole edge cloud.
#pragma once

#include "../orchestrator/daemon_process.h"
#include "etcd_cluster.h"

#include <cstdio>
#include <string>
#include <vector>

namespace livemicro::bench {

// The home node's configuration: one virtual microscope, "scope-a", sent at
// 640x360, 15 fps, 800 kbit/s.
inline const char *const kHomeNode
    = R"({"video": {"width": 640, "height": 360, "framerate": 15, "bitrate_kbps": 800},
  "microscopes": [{"id": "scope-a", "uri": "sim://synthetic"}]})";

// Whether etcd is installed; says SKIP when it is not (main then returns
// 77, meson's "skipped").
inline bool
etcd_or_skip ()
{
  if (livemicro::test::etcd_available ())
    return true;
  std::printf ("SKIP: etcd is not installed (scripts/install-deps.sh installs etcd-server)\n");
  return false;
}

// `d`, when started, joins the edge cloud of `etcd` as `name` at `site`.
inline void
join (livemicro::test::Daemon &d, const livemicro::test::EtcdCluster &etcd, const std::string &name,
      const std::string &site)
{
  d.extra_args = {"--cluster", etcd.cluster_arg (), "--node-name", name, "--site", site};
}

// Whether every one of `nodes` sees them all and `microscopes` microscopes
// with a home in its view of the edge cloud (GET /api/v1/cluster) within
// `timeout_s`: what placing a session needs.
inline bool
wait_for_cluster (const std::vector<const livemicro::test::Daemon *> &nodes, int microscopes,
                  double timeout_s = 10)
{
  auto sees_all = [&] (const livemicro::test::Daemon &d) {
    livemicro::test::HttpReply r = d.request ("GET", "/api/v1/cluster");
    JsonObject *o = r.object ();
    auto length = [o] (const char *name) {
      return o && json_object_has_member (o, name) && JSON_NODE_HOLDS_ARRAY (json_object_get_member (o, name))
                 ? (int)json_array_get_length (json_object_get_array_member (o, name))
                 : -1;
    };
    return length ("nodes") == (int)nodes.size () && length ("microscopes") == microscopes;
  };
  return livemicro::test::eventually (
      [&] {
        for (const livemicro::test::Daemon *d : nodes)
          if (!sees_all (*d))
            return false;
        return true;
      },
      timeout_s);
}

} // namespace livemicro::bench
