#include "control.h"

#include <algorithm>

namespace livemicro::orchestrator {

ControlArbiter::ControlArbiter (Options options, uint64_t last_epoch, std::function<int64_t ()> now_us,
                                std::function<std::string ()> new_id)
    : options_ (options), epoch_ (last_epoch), now_ (std::move (now_us)), new_id_ (std::move (new_id))
{}

int
ControlArbiter::priority (const std::string &role)
{
  if (role == "owner")
    return 3;
  if (role == "consultant")
    return 2;
  if (role == "trainee")
    return 1;
  return 0;
}

bool
ControlArbiter::may_drive (const Participant &p, std::string &why) const
{
  if (p.admin ()) {
    why = "the admin grants control but does not drive; use a session";
    return false;
  }
  bool allowed = options_.may_control ? options_.may_control (p.role) : p.role != "guest";
  if (!allowed) {
    why = "the " + p.role + " profile may not control this microscope";
    return false;
  }
  return true;
}

int64_t
ControlArbiter::expires_in_us () const
{
  if (!holder_)
    return 0;
  return std::max<int64_t> (0, holder_->last_active_us + options_.idle_timeout_us - now_ ());
}

int
ControlArbiter::position_of (const std::string &session) const
{
  for (size_t i = 0; i < queue_.size (); i++)
    if (queue_[i].session == session)
      return (int)i + 1;
  return 0;
}

void
ControlArbiter::give_to (const Participant &p)
{
  Lease l;
  l.id = new_id_ ();
  l.epoch = ++epoch_;
  l.holder = p;
  l.granted_us = l.last_active_us = now_ ();
  holder_ = l;
  queue_.erase (std::remove_if (queue_.begin (), queue_.end (),
                                [&] (const Participant &q) { return q.session == p.session; }),
                queue_.end ());
  changed_ = true;
}

void
ControlArbiter::pass_on ()
{
  holder_.reset ();
  changed_ = true;
  if (!queue_.empty ())
    give_to (queue_.front ());
}

namespace {

ControlArbiter::Outcome
refusal (Reason reason, std::string why)
{
  ControlArbiter::Outcome o;
  o.result = "refused";
  o.refused = Refusal{reason, std::move (why)};
  return o;
}

ControlArbiter::Outcome
done (const char *result)
{
  ControlArbiter::Outcome o;
  o.result = result;
  return o;
}

} // namespace

ControlArbiter::Outcome
ControlArbiter::request (const Participant &p)
{
  tick ();
  Outcome o;
  std::string why;
  if (!may_drive (p, why))
    return refusal (Reason::kForbidden, why);
  if (holder_ && holder_->holder.session == p.session) {
    holder_->last_active_us = now_ ();
    o.result = "granted";
    o.lease = holder_;
    return o;
  }
  if (!holder_) {
    give_to (p);
    o.result = "granted";
    o.lease = holder_;
    return o;
  }
  if (!position_of (p.session)) {
    // Behind everyone of a higher or equal role, ahead of lower roles.
    auto at = std::find_if (queue_.begin (), queue_.end (),
                            [&] (const Participant &q) { return priority (q.role) < priority (p.role); });
    queue_.insert (at, p);
    changed_ = true;
  }
  o.result = "queued";
  o.queue_position = position_of (p.session);
  return o;
}

ControlArbiter::Outcome
ControlArbiter::release (const Participant &p)
{
  tick ();
  if (holder_ && holder_->holder.session == p.session) {
    pass_on ();
    return done ("released");
  }
  if (position_of (p.session)) {
    queue_.erase (queue_.begin () + (position_of (p.session) - 1));
    changed_ = true;
    return done ("left_queue");
  }
  return refusal (Reason::kConflict, "this session neither holds control nor waits for it");
}

ControlArbiter::Outcome
ControlArbiter::renew (const Participant &p, const std::string &lease_id)
{
  tick ();
  if (!holder_ || holder_->holder.session != p.session || holder_->id != lease_id)
    return refusal (Reason::kConflict,
                    "not the current lease (it lapsed, was revoked, or is another session's)");
  holder_->last_active_us = now_ ();
  Outcome o;
  o.result = "renewed";
  o.lease = holder_;
  return o;
}

ControlArbiter::Outcome
ControlArbiter::grant (const Participant &by, const Participant &to)
{
  tick ();
  if (!by.admin () && by.role != "owner")
    return refusal (Reason::kForbidden, "only the owner or the admin can grant control");
  std::string why;
  if (!may_drive (to, why))
    return refusal (Reason::kInvalid, why);
  give_to (to);
  Outcome o;
  o.result = "granted";
  o.lease = holder_;
  return o;
}

ControlArbiter::Outcome
ControlArbiter::revoke (const Participant &by)
{
  tick ();
  if (!by.admin () && by.role != "owner")
    return refusal (Reason::kForbidden, "only the owner or the admin can revoke control");
  if (!holder_)
    return refusal (Reason::kConflict, "nobody holds control");
  pass_on ();
  return done ("revoked");
}

bool
ControlArbiter::check (const std::string &session, const std::string &lease_id)
{
  tick ();
  if (!holder_ || holder_->holder.session != session || holder_->id != lease_id)
    return false;
  holder_->last_active_us = now_ ();
  return true;
}

bool
ControlArbiter::tick ()
{
  if (holder_ && now_ () - holder_->last_active_us >= options_.idle_timeout_us) {
    pass_on ();
    return true;
  }
  return false;
}

ControlState
ControlArbiter::state () const
{
  return {epoch_, holder_, queue_};
}

bool
ControlArbiter::restore (const ControlState &s)
{
  if (s.epoch < epoch_)
    return false;
  epoch_ = s.epoch;
  holder_ = s.holder;
  if (holder_)
    holder_->granted_us = holder_->last_active_us = now_ ();
  queue_ = s.queue;
  changed_ = true;
  return true;
}

bool
ControlArbiter::forget (const std::string &session)
{
  bool changed = false;
  if (int pos = position_of (session)) {
    queue_.erase (queue_.begin () + (pos - 1));
    changed = changed_ = true;
  }
  if (holder_ && holder_->holder.session == session) {
    pass_on ();
    changed = true;
  }
  return changed;
}

} // namespace livemicro::orchestrator
