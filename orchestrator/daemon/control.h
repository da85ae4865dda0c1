// Who drives a microscope: one holder of a renewable control lease, and a
// queue ordered by role (owner > consultant > trainee > others), first come
// first served within a role.  Every lease has a random
// id and a strictly increasing epoch; a command is accepted only with the
// current lease of the session that holds it, so a late command from an
// earlier driver never moves the stage.  Which roles may drive at all comes
// from their view profiles (may_control).  A lease lapses after an idle time
// without commands or renewals and passes to the next in the queue.
// Plain C++ with an injectable clock: the daemon calls it on its main loop.
#pragma once

#include "common/control_state.h"
#include "refusal.h"

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace livemicro::orchestrator {

class ControlArbiter {
public:
  struct Options {
    int64_t idle_timeout_us = 30 * 1000000LL;
    // Whether a role may drive at all (from its view profile's may_control);
    // unset: every role but guest.
    std::function<bool (const std::string &role)> may_control;
  };
  struct Outcome {
    std::string result; // granted, queued, released, renewed, revoked, left_queue, refused
    std::optional<Refusal> refused;
    std::optional<Lease> lease; // the caller's lease (granted, renewed)
    int queue_position = 0;     // 1-based, when queued
    bool queued () const { return queue_position > 0; }
  };

  ControlArbiter (Options options, uint64_t last_epoch, std::function<int64_t ()> now_us,
                  std::function<std::string ()> new_id);

  Outcome request (const Participant &p);
  Outcome release (const Participant &p);
  Outcome renew (const Participant &p, const std::string &lease_id);
  Outcome grant (const Participant &by, const Participant &to);
  Outcome revoke (const Participant &by);
  // Whether `lease_id` is the current lease and `session` holds it; a valid
  // check counts as activity.
  bool check (const std::string &session, const std::string &lease_id);
  // Hands a lapsed lease over; true when control changed.
  bool tick ();
  // The session is gone (ended or disconnected): out of the queue, and its
  // lease passes on.  True when control changed.
  bool forget (const std::string &session);

  const std::optional<Lease> &holder () const { return holder_; }
  const std::vector<Participant> &queue () const { return queue_; }
  uint64_t epoch () const { return epoch_; }
  int64_t expires_in_us () const;
  // Changes since the last call (grants, lapses, queue moves), for events.
  bool take_changed ()
  {
    bool c = changed_;
    changed_ = false;
    return c;
  }

  static int priority (const std::string &role);

  // The state as values, and back: a restored holder's idle time starts
  // now.  A state older than this arbiter's (a lower epoch) is not taken:
  // false.
  ControlState state () const;
  bool restore (const ControlState &s);

private:
  bool may_drive (const Participant &p, std::string &why) const;
  void give_to (const Participant &p);
  void pass_on ();
  int position_of (const std::string &session) const;

  Options options_;
  uint64_t epoch_;
  std::function<int64_t ()> now_;
  std::function<std::string ()> new_id_;
  std::optional<Lease> holder_;
  std::vector<Participant> queue_;
  bool changed_ = false;
};

} // namespace livemicro::orchestrator
