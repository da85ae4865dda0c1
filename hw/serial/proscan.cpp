#include "proscan.h"
#include "replies.h"

#include <livemicro/hw/error.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace livemicro::hw::serial {

namespace {

std::string
fmt_units (double v)
{
  char b[64];
  std::snprintf (b, sizeof b, "%.0f", std::round (v));
  return b;
}

} // namespace

std::string
ProScanController::error_meaning (int code)
{
  static const char *const names[] = {"",
                                      "NO STAGE",
                                      "NOT IDLE",
                                      "NO DRIVE",
                                      "STRING PARSE",
                                      "COMMAND NOT FOUND",
                                      "INVALID SHUTTER",
                                      "NO FOCUS",
                                      "VALUE OUT OF RANGE",
                                      "INVALID WHEEL",
                                      "ARG1 OUT OF RANGE",
                                      "ARG2 OUT OF RANGE",
                                      "ARG3 OUT OF RANGE",
                                      "ARG4 OUT OF RANGE",
                                      "ARG5 OUT OF RANGE",
                                      "ARG6 OUT OF RANGE",
                                      "INCORRECT STATE",
                                      "WHEEL NOT FITTED",
                                      "QUEUE FULL"};
  if (code > 0 && code < (int)(sizeof names / sizeof names[0]))
    return names[code];
  return "see the ProScan error codes";
}

ProScanController::ProScanController (ControllerConfig config, ProScanOptions options)
    : MotionController (std::move (config)), options_ (options)
{}

ProScanController::~ProScanController ()
{
  shutdown ();
}

double
ProScanController::reported_um_per_unit (int axis) const
{
  return axis == 2 ? res_focus_ : res_stage_;
}

void
ProScanController::reset_protocol ()
{
  sent_.clear ();
  active_group_ = -1;
  active_accepted_ = false;
  last_poll_ = 0;
  last_speed_pct_[0] = last_speed_pct_[1] = -1;
}

// Handshake only: one command, its one-line answer (stray R lines skipped).
std::string
ProScanController::ask (const std::string &command)
{
  send (command + "\r");
  for (;;) {
    std::string r = wait_line (config ().reply_timeout_ms, "the reply to '" + command + "'");
    if (r != "R")
      return r;
  }
}

void
ProScanController::handshake ()
{
  std::string r = ask ("COMP 0");
  if (r != "0")
    throw Error (ErrorKind::kDevice, who () + " answered '" + r
                                         + "' to 'COMP 0' (expected 0): "
                                           "is it a Prior ProScan at "
                                         + std::to_string (config ().baud) + " baud?");
  r = ask ("RES,s");
  std::optional<double> res = proscan::parse_resolution (r);
  if (!res)
    throw Error (ErrorKind::kDevice,
                 who () + " reports no stage resolution ('RES,s' → '" + r + "'): is a stage connected?");
  res_stage_ = *res;
  r = ask ("RES,z");
  res = proscan::parse_resolution (r);
  has_focus_ = res.has_value ();
  if (has_focus_)
    res_focus_ = *res;
  r = ask ("P");
  std::optional<Axes> p = parse_axes (r);
  if (!p)
    throw Error (ErrorKind::kDevice, who () + " answered '" + r + "' to 'P' (expected x,y,z)");
  double pos[3] = {0, 0, 0};
  for (int k = 0; k < p->count; k++)
    pos[k] = p->v[k];
  set_position (pos);
  set_problem ("");
}

void
ProScanController::send_command (const std::string &text, Kind kind, int group)
{
  send (text + "\r");
  sent_.push_back ({text, kind, group, now_us ()});
}

void
ProScanController::move_done ()
{
  if (active_group_ >= 0)
    set_moving (active_group_, false);
  active_group_ = -1;
  active_accepted_ = false;
}

void
ProScanController::on_line (const std::string &line)
{
  if (line == "R") {
    // End of a move (or the stop's acknowledgement).
    if (!sent_.empty () && sent_.front ().kind == Kind::kMove) {
      sent_.pop_front ();
      move_done ();
    } else if (!sent_.empty () && sent_.front ().kind == Kind::kStop) {
      sent_.pop_front ();
      move_done ();
    } else if (active_group_ >= 0 && active_accepted_) {
      move_done ();
    }
    return;
  }
  // Moves at the head got no immediate reply: this answer belongs to a
  // later command, so they were accepted.
  auto accept_moves = [&] {
    while (!sent_.empty () && sent_.front ().kind == Kind::kMove) {
      sent_.pop_front ();
      active_accepted_ = true;
      accepted_at_ = now_us ();
    }
  };
  if (proscan::is_error (line)) {
    int code = proscan::error_code (line);
    if (sent_.empty ())
      return;
    Sent s = sent_.front ();
    sent_.pop_front ();
    refuse (protocol () + " refused '" + s.text + "': " + line + " (" + error_meaning (code) + ")");
    if (s.kind == Kind::kMove)
      move_done ();
    return;
  }
  accept_moves ();
  if (sent_.empty ())
    return; // unexpected: ignore
  Sent s = sent_.front ();
  sent_.pop_front ();
  if (s.kind == Kind::kPosition) {
    if (std::optional<Axes> p = parse_axes (line)) {
      double pos[3] = {0, 0, 0};
      for (int k = 0; k < p->count; k++)
        pos[k] = p->v[k];
      set_position (pos);
    } else {
      fail ("answered '" + line + "' to 'P'");
    }
  } else if (s.kind == Kind::kStatus) {
    std::optional<int> bits = proscan::motion_bits (line);
    if (!bits) {
      fail ("answered '" + line + "' to '$'");
      return;
    }
    bool xy = *bits & 3, z = *bits & 4;
    // The move is over when a status asked after it was accepted says so.
    if (active_group_ >= 0 && active_accepted_ && s.at >= accepted_at_) {
      bool still = active_group_ == kGroupXY ? xy : z;
      if (!still)
        move_done ();
    }
  }
}

void
ProScanController::service (int64_t now)
{
  const int64_t timeout = (int64_t)config ().reply_timeout_ms * 1000;
  for (const auto &s : sent_)
    if (s.kind != Kind::kMove && now - s.at > timeout) {
      fail ("no reply to '" + s.text + "' within " + std::to_string (config ().reply_timeout_ms) + " ms");
      return;
    }
  if (take_stop ()) {
    send_command ("I", Kind::kStop);
    return;
  }
  bool stop_in_flight
      = std::any_of (sent_.begin (), sent_.end (), [] (const Sent &s) { return s.kind == Kind::kStop; });
  if (!stop_in_flight && active_group_ < 0) {
    for (int group : {kGroupXY, kGroupZ}) {
      PendingMove m;
      if (!take_move (group, m))
        continue;
      double max = group == kGroupXY ? options_.max_speed_um_s : options_.focus_max_speed_um_s;
      double res = group == kGroupXY ? res_stage_ : res_focus_;
      int pct = (int)std::clamp (std::lround (100.0 * m.speed * res / max), 1L, 100L);
      if (pct != last_speed_pct_[group]) {
        send_command ((group == kGroupXY ? "SMS," : "SMZ,") + std::to_string (pct), Kind::kSetting);
        last_speed_pct_[group] = pct;
      }
      active_group_ = group;
      active_accepted_ = false;
      set_moving (group, true);
      send_command (group == kGroupXY ? "G," + fmt_units (m.a) + "," + fmt_units (m.b)
                                      : "V," + fmt_units (m.a),
                    Kind::kMove, group);
      send_command ("$", Kind::kStatus); // resolves the move's acceptance
      break;
    }
  }
  bool polling = std::any_of (sent_.begin (), sent_.end (), [] (const Sent &s) {
    return s.kind == Kind::kPosition || s.kind == Kind::kStatus;
  });
  int64_t interval = (int64_t)(active_group_ >= 0 ? config ().poll_ms : config ().idle_poll_ms) * 1000;
  if (!polling && now - last_poll_ >= interval) {
    send_command ("P", Kind::kPosition);
    send_command ("$", Kind::kStatus);
    last_poll_ = now;
  }
}

int64_t
ProScanController::next_wakeup (int64_t now) const
{
  return now + (active_group_ >= 0 || !sent_.empty () ? 20000 : 100000);
}

} // namespace livemicro::hw::serial
