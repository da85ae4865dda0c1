// How a livemicrod joins an edge cloud (docs/edge-cloud.md): the "cluster"
// section of its configuration, or --cluster etcd=URL,… on its command line.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace livemicro::cluster {

struct ClusterConfig {
  std::vector<std::string> etcd;      // endpoints (http://host:port); empty: a single node, no cluster
  std::string node;                   // unique and stable across restarts; default: the host name
  std::string site;                   // region/site label, for placing views near their viewers
  std::string http_url, rtsp_url;     // how viewers and other nodes reach this node (set at start)
  int lease_ttl_s = 2;                // a node silent this long has left
  int capacity_viewers = 0;           // what the operator says it serves; 0: not stated
  std::string prefix = "/livemicro/"; // every key of this edge cloud starts with it
  // The users this node's configuration lists (name → the roles each may
  // take): a node brings those the edge cloud does not have yet.
  std::map<std::string, std::vector<std::string>> users;

  bool enabled () const { return !etcd.empty (); }
};

} // namespace livemicro::cluster
