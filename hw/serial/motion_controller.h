// A motorised stage/focus controller on a serial port, driven by ONE I/O
// thread that owns the port: commands from any thread are queued to it, and
// it polls the controller's status so the position is known while moving.
//
// What every protocol (grbl.cpp, proscan.cpp) gets from this base:
// - connection: the first connect happens in start() (a missing port or a
//   device that does not answer is an error for the caller); afterwards a
//   device that goes away (hang-up, I/O error, no reply within the reply
//   timeout) is reported offline and reopened every `reconnect_ms` — the
//   same path, so a udev symlink (/dev/serial/by-id/…) finds the device on
//   whatever ttyUSBn it comes back as;
// - moves: one pending target per axis group (XY stage, Z focus).  A move is
//   sent when the controller has finished the previous one; newer targets
//   replace a target not sent yet (the latest wins, nothing piles up);
// - stop: never dropped.  It bypasses the queue, clears pending targets and,
//   when the controller is offline, is latched and sent first on reconnect.
#pragma once

#include <livemicro/hw/microscope.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace livemicro::hw::serial {

class SerialPort;

constexpr int kGroupXY = 0; // the stage: axes X and Y
constexpr int kGroupZ = 1;  // the focus drive: axis Z

struct ControllerConfig {
  std::string uri;  // as configured, for messages
  std::string path; // serial device
  int baud = 115200;
  int poll_ms = 100;           // status polls while moving
  int idle_poll_ms = 500;      // status polls while idle (alarms, silence)
  int reply_timeout_ms = 2000; // a reply later than this: the device hangs
  int reconnect_ms = 500;      // retry interval while offline
};

struct ControllerSnapshot {
  bool online = false;
  bool position_known = false;
  double pos[3] = {0, 0, 0}; // controller units, X Y Z
  double target[3] = {0, 0, 0};
  bool moving[2] = {false, false}; // per group
  std::string problem;             // offline reason or alarm; empty when fine
  uint64_t refusals = 0;
  std::string last_refusal;
};

class MotionController {
public:
  explicit MotionController (ControllerConfig config);
  virtual ~MotionController ();
  MotionController (const MotionController &) = delete;
  MotionController &operator= (const MotionController &) = delete;

  // Opens the port and talks to the controller, then starts the I/O thread.
  // Throws Error(kNotFound/kDevice/kUnsupported) naming the port.
  void start ();
  // Stops the I/O thread and closes the port.  Subclasses call it first in
  // their destructor (the thread calls their virtuals).
  void shutdown ();

  // Queues a move of `group` to (a, b) in controller units (b unused for Z)
  // at `speed` units/s.  Throws Error(kDevice) while offline or in alarm.
  void move (int group, double a, double b, double speed_units_per_s);
  // Halts every axis (one motion system: stopping the stage stops the focus).
  void stop ();
  ControllerSnapshot snapshot () const;
  const ControllerConfig &config () const { return config_; }

  virtual std::string protocol () const = 0; // "GRBL", "ProScan"
  // µm per controller unit the controller itself reports, 0 when unknown.
  virtual double reported_um_per_unit (int axis) const { return 0.0; }
  virtual bool has_focus () const { return true; }

protected:
  struct PendingMove {
    double a = 0, b = 0, speed = 0;
  };

  // --- called on the I/O thread (handshake also from start()), port open
  // Brings a freshly opened controller to a known state; throws Error.
  virtual void handshake () = 0;
  virtual void on_line (const std::string &line) = 0;
  // Sends what is due (stop, next move, status poll); may throw Error.
  virtual void service (int64_t now_us) = 0;
  // Forgets everything in flight (after a disconnect).
  virtual void reset_protocol () = 0;
  // When service() next needs to run, at the latest.
  virtual int64_t next_wakeup (int64_t now_us) const = 0;

  // --- helpers for subclasses (I/O thread)
  void send (const std::string &bytes);
  // Next complete line within the timeout (handshake only); throws Error.
  std::string wait_line (int timeout_ms, const std::string &waiting_for);
  bool take_stop ();
  bool take_move (int group, PendingMove &m);
  bool has_pending_move (int group) const;
  void set_position (const double pos[3]);
  void set_moving (int group, bool moving);
  void set_problem (const std::string &problem);
  void refuse (const std::string &sentence);
  // The device misbehaves: drop the connection (and reconnect).
  void fail (const std::string &why);
  static int64_t now_us ();
  std::string who () const; // "GRBL controller on /dev/ttyUSB0"

private:
  void run ();
  void connect ();
  void disconnect (const std::string &why);
  void wake ();
  void drain_lines ();

  ControllerConfig config_;
  std::unique_ptr<SerialPort> port_;
  std::string rx_;
  std::string drop_reason_;
  int wake_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> quit_{false};
  bool started_ = false;

  mutable std::mutex mutex_; // everything below
  ControllerSnapshot snap_;
  bool stop_requested_ = false;
  bool pending_valid_[2] = {false, false};
  // A group is "moving" from the moment a move is queued until the
  // controller has finished it: moving = sent and running, or pending.
  bool sent_moving_[2] = {false, false};
  void drop_pending_locked ();
  PendingMove pending_[2];
};

} // namespace livemicro::hw::serial
