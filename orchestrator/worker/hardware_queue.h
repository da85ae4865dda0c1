// The one hardware thread of a microscope: commands run in the order they
// came, `stop` jumps the queue (cancelling what waits and aborting what runs,
// such as an autofocus) and is never dropped.  A jog is continuous motion
// that stops by itself unless renewed within its dead-man time.
#pragma once

#include <gst/app/gstappsink.h>
#include <gst/gst.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace livemicro::orchestrator {

struct HwCommand {
  uint64_t id = 0;
  std::string op; // move, move_by, focus, focus_by, objective, jog, autofocus, stop
  double a = 0, b = 0;
  int objective = 0;
};

class HardwareQueue {
public:
  // Reports a command's end: status "done", "failed" or "cancelled".
  using Report = std::function<void (uint64_t id, const std::string &op, const std::string &status,
                                     const std::string &detail)>;

  // `scope` is the microscopesrc; `af_valve`/`af_sink` the autofocus tap
  // (GRAY8 frames of the capture, off unless an autofocus runs).
  HardwareQueue (GstElement *scope, GstElement *af_valve, GstAppSink *af_sink, Report report);
  ~HardwareQueue ();
  void push (HwCommand c);
  static constexpr int64_t kJogDeadManUs = 600000;

private:
  void run ();
  void execute (const HwCommand &c);
  void autofocus (const HwCommand &c);
  bool soft_limits (double lim[6]);
  void end_jog ();

  GstElement *scope_;
  GstElement *af_valve_;
  GstAppSink *af_sink_;
  Report report_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<HwCommand> queue_;
  std::atomic<bool> abort_{false};
  bool quit_ = false;
  int64_t jog_until_us_ = 0; // monotonic; 0 = not jogging
  double normal_speed_ = 0;
  std::thread thread_;
};

} // namespace livemicro::orchestrator
