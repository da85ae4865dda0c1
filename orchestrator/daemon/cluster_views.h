// The views a node relays for the edge cloud (docs/edge-cloud.md): a
// session's view is served by the node placed near its viewers.  When that
// is not the microscope's home node, the home node serves the view once to
// it over SRT (relay::RelayOut, one per microscope and profile, published in
// etcd) and the serving node pulls it once (relay::RelayIn into a local
// ViewStream) and fans it out to all its RTSP players of that view.  So
// the traffic between sites grows with the distinct views a site watches,
// not with its viewers.
//
// ClusterViews may touch: the node's cluster member (the sessions and relay
// endpoints etcd holds), its RTSP service and its hubs' views.  sync() runs
// on the main loop and makes what runs match what etcd says.
#pragma once

#include "cluster/cluster_member.h"
#include "relay/relay_in.h"
#include "relay/relay_out.h"
#include "view_stream.h"

#include <map>
#include <memory>
#include <set>
#include <string>

namespace livemicro::orchestrator {

class Node;

class ClusterViews {
public:
  ClusterViews (Node &node, relay::SrtLinkSettings link);
  ~ClusterViews ();
  ClusterViews (const ClusterViews &) = delete;
  ClusterViews &operator= (const ClusterViews &) = delete;

  // Starts and stops relays and mounts to match the edge cloud's sessions.
  void sync ();
  // A viewer of a session reached this node (+1) or left it (-1): its view is
  // served here while it has viewers here, wherever the session is placed
  // (a browser that failed over comes before etcd says its node is gone).
  void hold (const std::string &session_id, int delta);
  // The local view a session placed on this node plays (nullptr: none).
  std::shared_ptr<ViewStream> view_of_session (const std::string &session_id) const;
  // The views relayed to this node from their home nodes.
  std::vector<std::shared_ptr<ViewStream>> relayed_views () const;
  // Prometheus lines: relays out (callers, bytes) and in (connected, frames).
  std::string metrics () const;

private:
  // Home side: one RelayOut per microscope/profile some other node serves.
  struct Outgoing {
    std::unique_ptr<relay::RelayOut> relay;
    std::string microscope, profile;
  };
  // Serving side: one RelayIn per microscope/profile, its sessions mounted.
  struct Incoming {
    std::shared_ptr<ViewStream> view;
    std::unique_ptr<relay::RelayIn> relay;
    std::string microscope, profile, from; // from: host:port it pulls
    std::set<std::string> sessions;
  };
  // Home side: the sessions of microscopes homed here whose serving node
  // left the edge cloud are placed again (same site, else here).
  void replace_departed (std::vector<livemicro::cluster::ClusterSession> &sessions);
  void sync_outgoing (const std::vector<livemicro::cluster::ClusterSession> &sessions);
  void sync_incoming (const std::vector<livemicro::cluster::ClusterSession> &sessions);
  bool open_outgoing (const std::string &key, const livemicro::cluster::ClusterSession &s);
  void open_incoming (Incoming &in, const std::string &key, const SessionRecord &first);
  void ended_here (const std::string &key, const std::string &session_id);
  // Pulls the view from its home node's relay (wanted) or stops pulling it.
  void pull (Incoming &in, const std::string &key, bool wanted);
  // Asks the home node for a keyframe of a relayed view (a viewer joined it
  // here): from any thread; nobody waits for the answer.
  void ask_keyframe (const std::string &microscope, const std::string &profile);

  Node &node_;
  relay::SrtLinkSettings link_;
  std::map<std::string, Outgoing> outgoing_; // by microscope/profile
  std::map<std::string, Incoming> incoming_; // by microscope/profile
  std::map<std::string, int> held_;          // session → its viewers here
  uint32_t next_view_id_ = 1u << 24;         // apart from the hubs' view ids
  std::shared_ptr<bool> alive_ = std::make_shared<bool> (true);
};

} // namespace livemicro::orchestrator
