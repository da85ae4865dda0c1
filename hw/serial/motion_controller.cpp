#include "motion_controller.h"

#include "serial_port.h"

#include <livemicro/hw/error.h>

#include <glib.h>

#include <cerrno>
#include <cmath>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace livemicro::hw::serial {

MotionController::MotionController (ControllerConfig config) : config_ (std::move (config))
{
  wake_fd_ = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
}

MotionController::~MotionController ()
{
  shutdown ();
  if (wake_fd_ >= 0)
    ::close (wake_fd_);
}

int64_t
MotionController::now_us ()
{
  return g_get_monotonic_time ();
}

std::string
MotionController::who () const
{
  return protocol () + " controller on " + config_.path;
}

void
MotionController::start ()
{
  connect (); // throws: the caller learns at once that the device is missing
  started_ = true;
  thread_ = std::thread ([this] { run (); });
}

void
MotionController::shutdown ()
{
  quit_ = true;
  wake ();
  if (thread_.joinable ())
    thread_.join ();
  port_.reset ();
}

void
MotionController::wake ()
{
  uint64_t one = 1;
  if (wake_fd_ >= 0 && ::write (wake_fd_, &one, sizeof one) < 0) {
    // The counter is saturated: the thread is awake anyway.
  }
}

void
MotionController::move (int group, double a, double b, double speed)
{
  {
    std::lock_guard<std::mutex> l (mutex_);
    if (!snap_.online)
      throw Error (ErrorKind::kDevice, who () + " is offline (" + snap_.problem + "): the "
                                           + (group == kGroupXY ? "stage" : "focus") + " did not move");
    if (!snap_.problem.empty ())
      throw Error (ErrorKind::kDevice, who () + ": " + snap_.problem + "; the "
                                           + (group == kGroupXY ? "stage" : "focus") + " did not move");
    pending_[group] = {a, b, speed};
    pending_valid_[group] = true;
    snap_.moving[group] = true;
    if (group == kGroupXY) {
      snap_.target[0] = a;
      snap_.target[1] = b;
    } else {
      snap_.target[2] = a;
    }
  }
  wake ();
}

void
MotionController::drop_pending_locked ()
{
  for (int g = 0; g < 2; g++) {
    pending_valid_[g] = false;
    snap_.moving[g] = sent_moving_[g];
  }
}

void
MotionController::stop ()
{
  {
    std::lock_guard<std::mutex> l (mutex_);
    stop_requested_ = true;
    drop_pending_locked ();
  }
  wake ();
}

ControllerSnapshot
MotionController::snapshot () const
{
  std::lock_guard<std::mutex> l (mutex_);
  return snap_;
}

bool
MotionController::take_stop ()
{
  std::lock_guard<std::mutex> l (mutex_);
  bool s = stop_requested_;
  stop_requested_ = false;
  if (s) {
    drop_pending_locked ();
    for (int k = 0; k < 3; k++)
      snap_.target[k] = snap_.pos[k];
  }
  return s;
}

bool
MotionController::take_move (int group, PendingMove &m)
{
  std::lock_guard<std::mutex> l (mutex_);
  if (!pending_valid_[group])
    return false;
  m = pending_[group];
  pending_valid_[group] = false;
  snap_.moving[group] = sent_moving_[group];
  return true;
}

bool
MotionController::has_pending_move (int group) const
{
  std::lock_guard<std::mutex> l (mutex_);
  return pending_valid_[group];
}

void
MotionController::set_position (const double pos[3])
{
  std::lock_guard<std::mutex> l (mutex_);
  bool first = !snap_.position_known;
  for (int k = 0; k < 3; k++) {
    snap_.pos[k] = pos[k];
    if (first)
      snap_.target[k] = pos[k];
  }
  snap_.position_known = true;
}

void
MotionController::set_moving (int group, bool moving)
{
  std::lock_guard<std::mutex> l (mutex_);
  sent_moving_[group] = moving;
  snap_.moving[group] = moving || pending_valid_[group];
}

void
MotionController::set_problem (const std::string &problem)
{
  std::lock_guard<std::mutex> l (mutex_);
  if (problem != snap_.problem && !problem.empty ())
    g_warning ("%s: %s", who ().c_str (), problem.c_str ());
  snap_.problem = problem;
  if (!problem.empty ())
    drop_pending_locked ();
}

void
MotionController::refuse (const std::string &sentence)
{
  std::lock_guard<std::mutex> l (mutex_);
  snap_.refusals++;
  snap_.last_refusal = sentence;
}

void
MotionController::fail (const std::string &why)
{
  if (drop_reason_.empty ())
    drop_reason_ = why;
}

void
MotionController::send (const std::string &bytes)
{
  if (!port_)
    throw Error (ErrorKind::kDevice, who () + " is not connected");
  port_->write_all (bytes);
}

std::string
MotionController::wait_line (int timeout_ms, const std::string &waiting_for)
{
  int64_t deadline = now_us () + (int64_t)timeout_ms * 1000;
  for (;;) {
    size_t eol = rx_.find_first_of ("\r\n");
    while (eol == 0) {
      rx_.erase (0, 1);
      eol = rx_.find_first_of ("\r\n");
    }
    if (eol != std::string::npos) {
      std::string line = rx_.substr (0, eol);
      rx_.erase (0, eol + 1);
      return line;
    }
    int64_t left = deadline - now_us ();
    if (left <= 0)
      throw Error (ErrorKind::kDevice, "no answer from " + who () + " (waiting for " + waiting_for + " for "
                                           + std::to_string (timeout_ms) + " ms): is it a " + protocol ()
                                           + " controller at " + std::to_string (config_.baud) + " baud?");
    struct pollfd p = {port_->fd (), POLLIN, 0};
    ::poll (&p, 1, (int)std::min<int64_t> (left / 1000 + 1, 100));
    std::string why;
    if (!port_->read_available (rx_, why))
      throw Error (ErrorKind::kDevice, who () + ": " + why);
  }
}

void
MotionController::connect ()
{
  port_.reset ();
  port_ = std::make_unique<SerialPort> (config_.path, config_.baud);
  rx_.clear ();
  drop_reason_.clear ();
  reset_protocol ();
  try {
    handshake ();
  } catch (...) {
    port_.reset ();
    throw;
  }
  std::lock_guard<std::mutex> l (mutex_);
  snap_.online = true;
  // An alarm found by the handshake stays; an old "gone" reason does not.
  if (snap_.problem.rfind ("offline:", 0) == 0)
    snap_.problem.clear ();
}

void
MotionController::disconnect (const std::string &why)
{
  port_.reset ();
  reset_protocol ();
  std::lock_guard<std::mutex> l (mutex_);
  if (snap_.online)
    g_warning ("%s is gone: %s; reconnecting", who ().c_str (), why.c_str ());
  snap_.online = false;
  snap_.problem = "offline: " + why;
  if (pending_valid_[0] || pending_valid_[1]) {
    snap_.refusals++;
    snap_.last_refusal = "a move was dropped: " + who () + " went away";
  }
  sent_moving_[0] = sent_moving_[1] = false;
  drop_pending_locked ();
}

void
MotionController::drain_lines ()
{
  for (;;) {
    size_t eol = rx_.find_first_of ("\r\n");
    if (eol == std::string::npos)
      return;
    std::string line = rx_.substr (0, eol);
    rx_.erase (0, eol + 1);
    if (!line.empty ())
      on_line (line);
    if (!drop_reason_.empty ())
      return;
  }
}

void
MotionController::run ()
{
  int64_t next_connect = 0;
  while (!quit_) {
    int64_t now = now_us ();
    if (!port_) {
      if (now >= next_connect) {
        try {
          connect ();
          g_message ("%s is back", who ().c_str ());
          continue;
        } catch (const Error &e) {
          std::lock_guard<std::mutex> l (mutex_);
          snap_.problem = std::string ("offline: ") + e.what ();
        }
        next_connect = now_us () + (int64_t)config_.reconnect_ms * 1000;
      }
      struct pollfd p = {wake_fd_, POLLIN, 0};
      ::poll (&p, 1, (int)std::max<int64_t> (1, (next_connect - now_us ()) / 1000));
      uint64_t v;
      while (::read (wake_fd_, &v, sizeof v) > 0) {
      }
      continue;
    }
    int timeout = (int)std::clamp<int64_t> ((next_wakeup (now) - now) / 1000, 0, 200);
    struct pollfd p[2] = {{port_->fd (), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    ::poll (p, 2, timeout);
    uint64_t v;
    while (::read (wake_fd_, &v, sizeof v) > 0) {
    }
    std::string why;
    if (!port_->read_available (rx_, why)) {
      disconnect (why);
      next_connect = now_us () + (int64_t)config_.reconnect_ms * 1000;
      continue;
    }
    drain_lines ();
    if (drop_reason_.empty ()) {
      try {
        service (now_us ());
      } catch (const Error &e) {
        fail (e.what ());
      }
    }
    if (!drop_reason_.empty ()) {
      disconnect (drop_reason_);
      next_connect = now_us () + (int64_t)config_.reconnect_ms * 1000;
    }
  }
}

} // namespace livemicro::hw::serial
