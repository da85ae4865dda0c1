// Prior ProScan II/III controllers, standard mode (ProScan III manual,
// section 4 "Software commands"; ASCII, every command and reply ends in CR,
// 9600 baud by default).
//
// What the driver sends:
//   COMP 0        at connect: standard mode (reply 0)
//   RES,s RES,z   at connect: µm per position unit of the stage and focus
//                 (E,… for RES,z means no focus drive is fitted)
//   P             position "x,y,z" (immediate reply), polled
//   $             motion status, a number: bit 0 X, bit 1 Y, bit 2 Z moving
//   G,x,y         stage move to absolute x,y; V,z focus move to absolute z.
//                 A move is answered with R when it ends, or E,n at once
//                 when refused
//   SMS,n SMZ,n   stage/focus maximum speed, percent of the stage's maximum
//   I             stop all axes with deceleration (reply R)
// Replies come in the order of the commands, so an E,n is attributed to the
// oldest command that has not been answered yet; a move that gets no
// immediate reply is taken as accepted once a later command is answered.
#pragma once

#include "motion_controller.h"

#include <deque>

namespace livemicro::hw::serial {

struct ProScanOptions {
  double max_speed_um_s = 10000.0;      // stage speed at SMS,100
  double focus_max_speed_um_s = 1000.0; // focus speed at SMZ,100
};

class ProScanController : public MotionController {
public:
  ProScanController (ControllerConfig config, ProScanOptions options);
  ~ProScanController () override;
  std::string protocol () const override { return "ProScan"; }
  double reported_um_per_unit (int axis) const override;
  bool has_focus () const override { return has_focus_; }
  const ProScanOptions &options () const { return options_; }

  static std::string error_meaning (int code);

protected:
  void handshake () override;
  void on_line (const std::string &line) override;
  void service (int64_t now_us) override;
  void reset_protocol () override;
  int64_t next_wakeup (int64_t now_us) const override;

private:
  enum class Kind { kPosition, kStatus, kSetting, kMove, kStop };
  struct Sent {
    std::string text;
    Kind kind;
    int group;
    int64_t at;
  };
  void send_command (const std::string &text, Kind kind, int group = -1);
  void move_done ();
  std::string ask (const std::string &command);

  ProScanOptions options_;
  double res_stage_ = 1.0, res_focus_ = 1.0;
  bool has_focus_ = true;
  std::deque<Sent> sent_;
  int active_group_ = -1;
  bool active_accepted_ = false;
  int64_t accepted_at_ = 0;
  int64_t last_poll_ = 0;
  int last_speed_pct_[2] = {-1, -1};
};

} // namespace livemicro::hw::serial
