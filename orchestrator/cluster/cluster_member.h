// One livemicrod's membership of an edge cloud kept in etcd
// (docs/edge-cloud.md):
//
//   <prefix>nodes/<node>        this node's record (address, site, capacity,
//                               load, the microscopes homed here), under its lease
//   <prefix>homes/<microscope>  the name of the microscope's home node, under
//                               that node's lease: who alone may drive it
//   <prefix>audit/<node>/<n>    audit rows, kept (no lease)
//   <prefix>control/<microscope> who drives it (lease, epoch, queue), kept
//   <prefix>users/<name>        a user and the roles they may take, kept
//
// Its own thread re-registers after a lapse, takes the ownership of its
// microscopes and reads the others' records; a second one keeps the lease
// alive (every TTL/3), so slow reads never delay a renewal.
// The rest of the daemon asks it from the main loop: view() for status,
// fence() for the fencing token of a microscope it owns, commit_fenced() to
// write a row only while that token still holds in etcd.
#pragma once

#include "cluster_config.h"
#include "common/control_state.h"
#include "common/store.h"
#include "etcd_client.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace livemicro::cluster {

using orchestrator::AuditRecord;
using orchestrator::ControlState;
using orchestrator::SessionRecord;

struct NodeLoad {
  double cpu = 0; // the machine's busy fraction of all its cores, 0..1
  int viewers = 0, encoders = 0, sessions = 0;
};

struct NodeInfo {
  std::string name, site, http_url, rtsp_url;
  int capacity_viewers = 0;
  NodeLoad load;
  std::vector<std::string> microscopes; // homed here
  int64_t lease = 0;
};

// A node's record as kept in etcd (and shown by GET /api/v1/cluster).
std::string node_record_json (const NodeInfo &n);

// Who owns a microscope, as etcd holds it.
struct Home {
  std::string microscope, node;
  int64_t revision = 0; // the ownership key's mod revision
  int64_t lease = 0;
};

// A fencing token: this node's ownership of one microscope.  It holds while
// the ownership key's mod revision is still `revision` (a lapse and a
// re-acquisition make a new one) and the lease is alive by this node's clock.
struct Fence {
  std::string microscope;
  int64_t lease = 0, revision = 0;
};

struct ClusterView {
  bool joined = false; // registered under a live lease
  std::string node, site;
  int64_t lease = 0;
  std::string error; // why not joined, or a microscope it could not own
  std::vector<NodeInfo> nodes;
  std::vector<Home> homes;
  std::vector<MemberStatus> etcd;
};

// A session as the edge cloud keeps it: the record, and the node that
// serves its view (placed near its viewers; the home node when empty).
struct ClusterSession {
  SessionRecord record;
  std::string serving_node;
  std::string site;     // its viewers' site, where it is placed again after a failover
  int64_t revision = 0; // the key's mod revision as read (0: not read from etcd)
};

// Where a home node serves one view to other nodes (SRT, see
// orchestrator/relay/).
struct RelayEndpoint {
  std::string node, host;
  int port = 0;
};

// One row of the audit log as the edge cloud keeps it.
struct ClusterAuditRow {
  std::string node;           // the node that wrote it
  AuditRecord row;            // its id is the node's own (SQLite) id, 0 if none
  int64_t fence_revision = 0; // the fencing token it was written under, 0: none
  int64_t revision = 0;       // etcd's: the cluster-wide order
};

class ClusterMember {
public:
  ClusterMember (ClusterConfig config, std::vector<std::string> home_microscopes);
  ~ClusterMember (); // leaves: stops the thread and revokes the lease
  ClusterMember (const ClusterMember &) = delete;
  ClusterMember &operator= (const ClusterMember &) = delete;

  const ClusterConfig &config () const { return config_; }
  void start ();
  // Waits for the first registration; false when it did not happen in time
  // (the thread goes on trying).
  bool wait_joined (int timeout_ms);
  // Leaves now (revokes the lease) and stops the thread.
  void stop ();

  void set_load (const NodeLoad &load);
  ClusterView view () const;
  std::optional<Fence> fence (const std::string &microscope) const;

  // Writes `rows` to the cluster's audit log, and the microscope's control
  // when given, only if `fence` still holds (one etcd transaction).  False
  // when it no longer does (stale: another incarnation or node owns the
  // microscope now, or nobody does); throws EtcdError when etcd cannot be
  // reached.  Blocking (one round trip).
  bool commit_fenced (const Fence &fence, const std::vector<AuditRecord> &rows,
                      const ControlState *control = nullptr);
  // The microscope's control as its home node last wrote it (no lease: it
  // outlives the node), nullopt when none was written.  Blocking; throws
  // EtcdError.
  std::optional<ControlState> control (const std::string &microscope);
  // An audit row that needs no ownership (refusals, sessions); throws EtcdError.
  void commit (const AuditRecord &row);
  // The cluster's audit log in the order etcd applied the rows.
  std::vector<ClusterAuditRow> audit (int64_t after_revision = 0);

  // Sessions of the whole edge cloud, kept in etcd so that any node
  // authenticates any session (<prefix>sessions/<id>, and
  // <prefix>tokens/<sha256> → id).  Both blocking; throw EtcdError.
  void put_session (const SessionRecord &s, const std::string &serving_node, const std::string &site = "");
  // Places a session's view on another node, if its record is still the one
  // read (`s.revision`): false when someone changed it meanwhile.  Blocking;
  // throws EtcdError.
  bool move_session (const ClusterSession &s, const std::string &serving_node);
  void remove_session (const SessionRecord &s);
  // By its token's hash: from the last read of the sessions, else asked of
  // etcd (a session created a moment ago on another node).
  std::optional<SessionRecord> session_by_token_sha256 (const std::string &sha256);
  // By id: from the last read, else asked of etcd.
  std::optional<ClusterSession> session (const std::string &id);
  // Every session, as last read.
  std::vector<ClusterSession> sessions () const;

  // Annotations of the whole edge cloud (<prefix>annotations/<microscope>/<id>,
  // no lease): they stay with the microscope whichever node is its home.
  // Ids come from one counter (<prefix>annotation_ids), so they are unique
  // in the edge cloud.  All blocking; throw EtcdError.
  int64_t put_annotation (const orchestrator::AnnotationRecord &a); // its new id
  std::vector<orchestrator::AnnotationRecord> annotations (const std::string &microscope);
  bool delete_annotation (const std::string &microscope, int64_t id); // false: none such

  // The view relays this node serves as a home node (<prefix>relays/<microscope>/<profile>,
  // under its lease), and where another node's are.  publish/withdraw block; throw EtcdError.
  void publish_relay (const std::string &microscope, const std::string &profile, const RelayEndpoint &at);
  void withdraw_relay (const std::string &microscope, const std::string &profile);
  // From the last read, else asked of etcd (one published a moment ago).
  std::optional<RelayEndpoint> relay (const std::string &microscope, const std::string &profile);
  // A session read a moment ago (session()) joins the last read at once.
  void remember (const ClusterSession &s);
  // The node that is a microscope's home now (not this one's own check: see
  // fence()), and a node's record.
  std::optional<std::string> home_of (const std::string &microscope) const;
  // The node a microscope was last homed on, kept while that node is away
  // (<prefix>microscopes/<id>, no lease): its microscope is offline, not unknown.
  std::optional<std::string> last_home_of (const std::string &microscope) const;
  std::optional<NodeInfo> node (const std::string &name) const;
  // The edge cloud's users (name → roles), as last read: those every node
  // brought from its configuration, the first node to bring a name
  // deciding its roles.  Empty: no node lists users (anyone may join).
  std::map<std::string, std::vector<std::string>> users () const;

private:
  void bring_users (EtcdClient &etcd);
  void run ();
  void keep_lease ();
  void renew (EtcdClient &etcd, int64_t lease);
  void join (EtcdClient &etcd);
  void acquire_homes (EtcdClient &etcd);
  void publish (EtcdClient &etcd);
  void read_cluster (EtcdClient &etcd);
  std::string audit_key ();
  std::string key (const std::string &kind, const std::string &name) const;

  ClusterConfig config_;
  std::vector<std::string> home_microscopes_;
  std::unique_ptr<EtcdClient> caller_etcd_; // for the main loop's calls
  std::mutex caller_mutex_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  ClusterView view_;
  NodeLoad load_;
  std::map<std::string, Fence> fences_;                   // microscopes owned now
  std::map<std::string, ClusterSession> sessions_;        // by id, as last read
  std::map<std::string, RelayEndpoint> relays_;           // microscope/profile → where, as last read
  std::map<std::string, std::string> last_homes_;         // microscope → node, as last read
  std::map<std::string, std::vector<std::string>> users_; // name → roles, as last read
  bool users_brought_ = false;                            // since the last join
  int64_t lease_ = 0;
  int64_t lease_valid_until_us_ = 0; // monotonic; conservative (from the renewal's send time)
  int64_t audit_seq_ = 0;

  std::atomic<bool> stopping_{false};
  std::mutex wake_mutex_;
  std::condition_variable wake_;
  std::thread thread_;
  std::thread renewer_; // keep_lease ()
};

} // namespace livemicro::cluster
