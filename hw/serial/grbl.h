// GRBL 1.1 (G-code motion controllers of DIY and OpenFlexure-style stages).
//
// What the driver sends (https://github.com/gnea/grbl/wiki):
//   ?                      status report, polled: <Idle|MPos:x,y,z|…>,
//                          <Run|…>, <Hold:0|…>, <Alarm|…>, <Home|…>
//   G21 G90                at connect (millimetres, absolute)
//   $H                     homing cycle, at connect when home=1
//   G53 G1 X… Y… F…        a stage move in machine coordinates (Z for focus)
//   !                      feed hold: the stop.  Once the status says
//                          Hold:0 (decelerated, position kept) the driver
//                          sends Ctrl-X (soft reset) to discard the rest of
//                          the move; GRBL keeps its position because it was
//                          not moving, and answers with its banner.
//   $X                     unlock after ALARM:2 (soft limit: GRBL says the
//                          position is retained)
// Replies handled: ok, error:N, ALARM:N, [MSG:…], the "Grbl 1.1x" banner.
// Lines are sent one at a time, the next after the previous one's ok/error.
#pragma once

#include "motion_controller.h"

namespace livemicro::hw::serial {

struct GrblOptions {
  bool home_on_connect = false; // $H when connected (if homing is needed)
};

class GrblController : public MotionController {
public:
  GrblController (ControllerConfig config, GrblOptions options);
  ~GrblController () override;
  std::string protocol () const override { return "GRBL"; }
  double reported_um_per_unit (int) const override { return 1000.0; } // G21: mm

  static std::string error_meaning (int code);
  static std::string alarm_meaning (int code);

protected:
  void handshake () override;
  void on_line (const std::string &line) override;
  void service (int64_t now_us) override;
  void reset_protocol () override;
  int64_t next_wakeup (int64_t now_us) const override;

private:
  enum class Kind { kOther, kMove, kHome, kUnlock };
  enum class Hold { kNone, kHolding, kResetting };
  void send_line (const std::string &line, Kind kind, int group, int timeout_ms);
  void parse_status (const std::string &line, int64_t now);
  std::string handshake_status (int64_t deadline_us);

  GrblOptions options_;
  // in flight
  bool awaiting_ = false;
  std::string awaiting_text_;
  Kind awaiting_kind_ = Kind::kOther;
  int awaiting_group_ = -1;
  int64_t awaiting_since_ = 0;
  int awaiting_timeout_ms_ = 0;
  int64_t status_sent_ = 0; // 0: no status request outstanding
  int64_t last_status_ = 0;
  std::string run_state_ = "Idle";
  Hold hold_ = Hold::kNone;
  int64_t hold_since_ = 0;
  int active_group_ = -1;  // group whose move runs
  int64_t move_ok_at_ = 0; // when the move's ok arrived (0: not yet)
  int64_t status_request_of_last_report_ = 0;
  bool alarm_ = false;
  bool unlock_due_ = false;
  double wco_[3] = {0, 0, 0};
};

} // namespace livemicro::hw::serial
