// The one hardware thread of a microscope: commands run in the order they
// came, `stop` jumps the queue (cancelling what waits and aborting what runs,
// such as an autofocus) and is never dropped.  A jog is continuous motion
// that stops by itself unless renewed within its dead-man time.
//
// The thread commands the microscope object (livemicro::hw::Microscope)
// that the capture's microscopesrc has open, fetched through the element's
// "get-microscope" signal: a 2-D move is one Stage::move_to, an objective
// change reports the turret's own error, and a target is checked once
// against hw::soft_limits for the current objective and frame size.
#pragma once

#include "common/worker_protocol.h"

#include <livemicro/hw/microscope.h>

#include <gst/app/gstappsink.h>
#include <gst/gst.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace livemicro::orchestrator {

class HardwareQueue {
public:
  // Reports a command's end: status "done", "failed" or "cancelled".
  using Report = std::function<void (uint64_t id, const std::string &op, const std::string &status,
                                     const std::string &detail)>;

  // `scope` is the microscopesrc; `af_valve`/`af_sink` the autofocus tap
  // (GRAY8 frames of the capture, off unless an autofocus runs).
  HardwareQueue (GstElement *scope, GstElement *af_valve, GstAppSink *af_sink, Report report);
  ~HardwareQueue ();
  void push (command::Hardware c);
  static constexpr int64_t kJogDeadManUs = 600000;

  // The microscope's state for the daemon (any thread); nullopt while the
  // microscopesrc has no microscope open.  Limits once the caps are known.
  std::optional<MicroscopeStatus> status () const;

private:
  // What a command runs against: the open microscope and the soft limits
  // for its current objective and frame size (none before caps).
  struct Target {
    std::shared_ptr<hw::Microscope> scope;
    std::optional<hw::SoftLimits> limits;
  };
  std::optional<Target> target () const;

  void run ();
  void execute (const command::Hardware &c);
  void move (const command::Hardware &c, const Target &t);
  void focus (const command::Hardware &c, const Target &t);
  void jog (const command::Hardware &c, const Target &t);
  void autofocus (const command::Hardware &c, const Target &t);
  std::optional<double> sharpness_at (hw::FocusDrive &focus, double z_um);
  void stop_motion (hw::Microscope &scope);
  void end_jog (hw::Microscope &scope);
  void report (const command::Hardware &c, const std::string &status, const std::string &detail = "");

  GstElement *scope_element_;
  GstElement *af_valve_;
  GstAppSink *af_sink_;
  Report report_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<command::Hardware> queue_;
  std::atomic<bool> abort_{false};
  bool quit_ = false;
  int64_t jog_until_us_ = 0; // monotonic; 0 = not jogging
  double normal_speed_ = 0;  // the stage speed before a jog changed it
  bool autofocus_no_frame_ = false;
  std::thread thread_;
};

} // namespace livemicro::orchestrator
