#include "grbl.h"
#include "replies.h"

#include <livemicro/hw/error.h>

#include <cmath>
#include <cstdio>

namespace livemicro::hw::serial {

namespace {

bool
starts_with (const std::string &s, const char *prefix)
{
  return s.rfind (prefix, 0) == 0;
}

std::string
fmt (double v)
{
  char b[64];
  std::snprintf (b, sizeof b, "%.4f", v);
  return b;
}

} // namespace

std::string
GrblController::error_meaning (int code)
{
  switch (code) {
  case 1:
    return "expected command letter";
  case 2:
    return "bad number format";
  case 3:
    return "invalid $ statement";
  case 8:
    return "command not valid unless idle";
  case 9:
    return "G-code locked out during alarm or jog state";
  case 10:
    return "soft limits need homing enabled";
  case 15:
    return "jog target exceeds machine travel";
  case 20:
    return "unsupported or invalid G-code command";
  case 22:
    return "feed rate not set";
  case 33:
    return "invalid target";
  default:
    return "see the GRBL error codes";
  }
}

std::string
GrblController::alarm_meaning (int code)
{
  switch (code) {
  case 1:
    return "hard limit triggered, position lost: home again";
  case 2:
    return "soft limit: the target exceeds machine travel, position retained";
  case 3:
    return "reset while in motion, position lost: home again";
  case 4:
  case 5:
    return "probe fail";
  case 6:
    return "homing fail: reset during the homing cycle";
  case 7:
    return "homing fail: safety door opened";
  case 8:
    return "homing fail: could not clear the limit switch";
  case 9:
    return "homing fail: limit switch not found";
  default:
    return "see the GRBL alarm codes";
  }
}

GrblController::GrblController (ControllerConfig config, GrblOptions options)
    : MotionController (std::move (config)), options_ (options)
{}

GrblController::~GrblController ()
{
  shutdown ();
}

void
GrblController::reset_protocol ()
{
  awaiting_ = false;
  status_sent_ = 0;
  last_status_ = 0;
  run_state_ = "Idle";
  hold_ = Hold::kNone;
  active_group_ = -1;
  move_ok_at_ = 0;
  status_request_of_last_report_ = 0;
  alarm_ = false;
  unlock_due_ = false;
}

// Polls '?' until a status report comes (an Arduino-based GRBL resets when
// the port opens and ignores input for a second or two); returns it.
std::string
GrblController::handshake_status (int64_t deadline)
{
  int64_t next_query = 0;
  for (;;) {
    int64_t now = now_us ();
    if (now >= next_query) {
      send ("?");
      next_query = now + 500000;
    }
    int left_ms = (int)((std::min (deadline, next_query) - now) / 1000);
    try {
      std::string line = wait_line (std::max (1, left_ms), "a status report");
      if (starts_with (line, "<"))
        return line;
    } catch (const Error &) {
      if (now_us () >= deadline)
        throw;
    }
  }
}

void
GrblController::handshake ()
{
  int64_t deadline = now_us () + (int64_t)(config ().reply_timeout_ms + 2000) * 1000;
  std::string status = handshake_status (deadline);
  parse_status (status, now_us ());
  auto command = [&] (const std::string &line, int timeout_ms) {
    send (line + "\n");
    for (;;) {
      std::string r = wait_line (timeout_ms, "the reply to '" + line + "'");
      if (r == "ok")
        return;
      if (starts_with (r, "error:") || starts_with (r, "ALARM:"))
        throw Error (ErrorKind::kDevice, who () + " refused '" + line + "': " + r);
    }
  };
  if (alarm_ && options_.home_on_connect) {
    command ("$H", 120000); // ok comes when the homing cycle is done
    alarm_ = false;
    parse_status (handshake_status (now_us () + (int64_t)config ().reply_timeout_ms * 1000), now_us ());
  }
  if (alarm_) {
    set_problem ("in alarm (homing required: '$H', or home=1 in the URI)");
  } else {
    command ("G21 G90", config ().reply_timeout_ms);
    set_problem ("");
  }
}

void
GrblController::parse_status (const std::string &line, int64_t now)
{
  std::optional<grbl::StatusReport> report = grbl::parse_status_report (line);
  if (!report)
    return;
  run_state_ = report->state;
  if (report->wco)
    for (int k = 0; k < report->wco->count; k++)
      wco_[k] = report->wco->v[k];
  double mpos[3] = {0, 0, 0};
  if (report->mpos) {
    for (int k = 0; k < report->mpos->count; k++)
      mpos[k] = report->mpos->v[k];
  } else if (report->wpos) {
    for (int k = 0; k < report->wpos->count; k++)
      mpos[k] = report->wpos->v[k];
    for (int k = 0; k < 3; k++)
      mpos[k] += wco_[k];
  }
  if (report->mpos || report->wpos)
    set_position (mpos);

  bool was_alarm = alarm_;
  alarm_ = starts_with (run_state_, "Alarm");
  if (alarm_ && !was_alarm && active_group_ >= 0) {
    set_moving (active_group_, false);
    active_group_ = -1;
  }
  if (!alarm_ && was_alarm)
    set_problem ("");
  bool running = starts_with (run_state_, "Run") || starts_with (run_state_, "Jog")
                 || starts_with (run_state_, "Home") || starts_with (run_state_, "Hold:1");
  // The move is over when a report requested after its ok says so.
  if (active_group_ >= 0 && move_ok_at_ && status_request_of_last_report_ >= move_ok_at_ && !running
      && hold_ == Hold::kNone) {
    set_moving (active_group_, false);
    active_group_ = -1;
    move_ok_at_ = 0;
  }
  (void)now;
}

void
GrblController::on_line (const std::string &line)
{
  int64_t now = now_us ();
  grbl::Reply reply = grbl::classify_reply (line);
  switch (reply.kind) {
  case grbl::ReplyKind::kStatus:
    status_request_of_last_report_ = status_sent_;
    status_sent_ = 0;
    last_status_ = now;
    parse_status (line, now);
    return;
  case grbl::ReplyKind::kOk:
  case grbl::ReplyKind::kError:
    if (!awaiting_)
      return; // e.g. an ok flushed by a reset
    awaiting_ = false;
    if (reply.kind == grbl::ReplyKind::kOk) {
      if (awaiting_kind_ == Kind::kMove)
        move_ok_at_ = now;
      else if (awaiting_kind_ == Kind::kUnlock)
        set_problem ("");
      return;
    }
    refuse (protocol () + " refused '" + awaiting_text_ + "': " + line + " (" + error_meaning (reply.code)
            + ")");
    if (awaiting_kind_ == Kind::kMove && active_group_ >= 0) {
      set_moving (active_group_, false);
      active_group_ = -1;
    }
    return;
  case grbl::ReplyKind::kAlarm:
    alarm_ = true;
    if (active_group_ >= 0) {
      set_moving (active_group_, false);
      active_group_ = -1;
    }
    refuse (who () + " raised " + line + " (" + alarm_meaning (reply.code) + ")");
    if (reply.code == 2) {
      unlock_due_ = true; // position retained: safe to unlock
    } else {
      set_problem ("alarm " + std::to_string (reply.code) + " (" + alarm_meaning (reply.code) + ")");
    }
    return;
  case grbl::ReplyKind::kBanner:
    // Banner: after our soft reset (the stop), or the controller restarted.
    awaiting_ = false;
    if (active_group_ >= 0)
      set_moving (active_group_, false);
    active_group_ = -1;
    move_ok_at_ = 0;
    status_sent_ = 0;
    if (hold_ != Hold::kResetting) {
      // Not ours: settings and modal state are back to defaults.
      hold_ = Hold::kNone;
      send ("G21 G90\n");
      awaiting_ = true;
      awaiting_text_ = "G21 G90";
      awaiting_kind_ = Kind::kOther;
      awaiting_since_ = now;
      awaiting_timeout_ms_ = config ().reply_timeout_ms;
    }
    hold_ = Hold::kNone;
    return;
  case grbl::ReplyKind::kHomingLock:
    alarm_ = true;
    set_problem ("in alarm (homing required: '$H', or home=1 in the URI)");
    return;
  case grbl::ReplyKind::kOther:
    return;
  }
}

void
GrblController::send_line (const std::string &line, Kind kind, int group, int timeout_ms)
{
  send (line + "\n");
  awaiting_ = true;
  awaiting_text_ = line;
  awaiting_kind_ = kind;
  awaiting_group_ = group;
  awaiting_since_ = now_us ();
  awaiting_timeout_ms_ = timeout_ms;
}

void
GrblController::service (int64_t now)
{
  const int64_t timeout = (int64_t)config ().reply_timeout_ms * 1000;
  if (awaiting_ && now - awaiting_since_ > (int64_t)awaiting_timeout_ms_ * 1000) {
    fail ("no reply to '" + awaiting_text_ + "' within " + std::to_string (awaiting_timeout_ms_) + " ms");
    return;
  }
  if (status_sent_ && now - status_sent_ > timeout) {
    fail ("no status report within " + std::to_string (config ().reply_timeout_ms) + " ms");
    return;
  }

  // Stop first: feed hold now, whatever else is in flight.
  if (take_stop ()) {
    bool in_motion = active_group_ >= 0 || !starts_with (run_state_, "Idle");
    send ("!");
    if (in_motion && !alarm_) {
      hold_ = Hold::kHolding;
      hold_since_ = now;
    }
    if (!status_sent_) {
      send ("?");
      status_sent_ = now;
    }
  }
  if (hold_ == Hold::kHolding) {
    if (starts_with (run_state_, "Hold:0") || starts_with (run_state_, "Idle")) {
      send ("\x18"); // soft reset: flushes the rest of the move, keeps the
                     // position
      hold_ = Hold::kResetting;
      hold_since_ = now;
      awaiting_ = false;
    } else if (now - hold_since_ > 10 * timeout) {
      fail ("the feed hold did not complete");
      return;
    }
  } else if (hold_ == Hold::kResetting && now - hold_since_ > timeout) {
    fail ("no banner after the soft reset");
    return;
  }

  if (!awaiting_ && hold_ == Hold::kNone && unlock_due_) {
    unlock_due_ = false;
    send_line ("$X", Kind::kUnlock, -1, config ().reply_timeout_ms);
  }
  if (!awaiting_ && hold_ == Hold::kNone && !alarm_ && active_group_ < 0) {
    for (int group : {kGroupXY, kGroupZ}) {
      PendingMove m;
      if (!take_move (group, m))
        continue;
      double feed = std::max (1e-3, m.speed * 60.0); // units/min
      std::string line = group == kGroupXY ? "G53 G1 X" + fmt (m.a) + " Y" + fmt (m.b) + " F" + fmt (feed)
                                           : "G53 G1 Z" + fmt (m.a) + " F" + fmt (feed);
      active_group_ = group;
      move_ok_at_ = 0;
      set_moving (group, true);
      send_line (line, Kind::kMove, group, config ().reply_timeout_ms);
      break;
    }
  }
  bool busy = active_group_ >= 0 || hold_ != Hold::kNone;
  int64_t interval = (int64_t)(busy ? config ().poll_ms : config ().idle_poll_ms) * 1000;
  if (!status_sent_ && now - last_status_ >= interval) {
    send ("?");
    status_sent_ = now;
  }
}

int64_t
GrblController::next_wakeup (int64_t now) const
{
  bool busy = active_group_ >= 0 || hold_ != Hold::kNone || awaiting_;
  return now + (busy ? 20000 : 100000);
}

} // namespace livemicro::hw::serial
