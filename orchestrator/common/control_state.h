// Who drives a microscope, as plain values: the holder of its control lease
// and the queue.  The daemon's ControlArbiter (daemon/control.h) decides with
// them; an edge cloud keeps them in etcd (cluster/cluster_member.h) so a
// lease outlives its home node's restarts and moves.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace livemicro::orchestrator {

struct Participant {
  std::string session, user, role; // session empty: the admin
  bool admin () const { return session.empty (); }
};

struct Lease {
  std::string id;
  uint64_t epoch = 0;
  Participant holder;
  // Monotonic times of this process; not kept anywhere (a restored lease
  // starts its idle time afresh).
  int64_t granted_us = 0, last_active_us = 0;
};

// A microscope's control at one moment: the last epoch given, the lease (if
// anyone holds it) and who waits, in order.
struct ControlState {
  uint64_t epoch = 0;
  std::optional<Lease> holder;
  std::vector<Participant> queue;
};

} // namespace livemicro::orchestrator
