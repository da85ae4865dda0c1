#include "controller_parts.h"

#include "grbl.h"
#include "proscan.h"
#include "serial_port.h"

#include <livemicro/hw/error.h>

#include <livemicro/hw/text.h>

#include <cmath>
#include <sstream>

namespace livemicro::hw::serial {

namespace {

AxisCalibration
read_axis (const MicroscopeUri &uri, char axis, const MotionController &c, double min_default,
           double max_default)
{
  std::string a (1, axis);
  AxisCalibration cal;
  double reported = c.reported_um_per_unit (axis == 'x' ? 0 : axis == 'y' ? 1 : 2);
  cal.um_per_unit = uri.get_double (a + "_um_per_unit", reported > 0 ? reported : 1.0, -1e6, 1e6);
  if (cal.um_per_unit == 0)
    throw Error (ErrorKind::kOutOfRange,
                 "microscope URI '" + uri.text () + "': " + a + "_um_per_unit must not be 0");
  cal.offset_um = uri.get_double (a + "_offset_um", 0.0, -1e7, 1e7);
  cal.limits.min_um = uri.get_double (a + "_min_um", min_default, -1e7, 1e7);
  cal.limits.max_um = uri.get_double (a + "_max_um", max_default, -1e7, 1e7);
  if (cal.limits.min_um >= cal.limits.max_um)
    throw Error (ErrorKind::kOutOfRange,
                 "microscope URI '" + uri.text () + "': " + a + "_min_um must be below " + a + "_max_um");
  return cal;
}

std::string
range_text (const AxisLimits &l)
{
  return "[" + num (l.min_um) + ", " + num (l.max_um) + "] µm";
}

class ControllerStage : public Stage {
public:
  ControllerStage (std::shared_ptr<MotionController> c, AxisCalibration x, AxisCalibration y, double speed)
      : c_ (std::move (c)), x_ (x), y_ (y), speed_ (speed)
  {}
  AxisLimits x_limits () const override { return x_.limits; }
  AxisLimits y_limits () const override { return y_.limits; }
  double speed_um_per_s () const override
  {
    std::lock_guard<std::mutex> l (mutex_);
    return speed_;
  }
  void set_speed_um_per_s (double speed) override
  {
    if (!(speed > 0 && speed <= 100000))
      throw Error (ErrorKind::kOutOfRange,
                   "stage speed " + num (speed) + " µm/s is outside (0, 100000] µm/s");
    std::lock_guard<std::mutex> l (mutex_);
    speed_ = speed;
  }
  void move_to (double x_um, double y_um) override
  {
    if (!std::isfinite (x_um) || !x_.limits.contains (x_um))
      throw Error (ErrorKind::kOutOfRange,
                   "stage x " + num (x_um) + " µm is outside the travel range " + range_text (x_.limits));
    if (!std::isfinite (y_um) || !y_.limits.contains (y_um))
      throw Error (ErrorKind::kOutOfRange,
                   "stage y " + num (y_um) + " µm is outside the travel range " + range_text (y_.limits));
    double speed_units = speed_um_per_s () / std::max (std::abs (x_.um_per_unit), std::abs (y_.um_per_unit));
    c_->move (kGroupXY, x_.to_units (x_um), y_.to_units (y_um), speed_units);
  }
  void stop () override { c_->stop (); }
  StageState state () const override
  {
    ControllerSnapshot s = c_->snapshot ();
    StageState st;
    st.x_um = x_.to_um (s.pos[0]);
    st.y_um = y_.to_um (s.pos[1]);
    st.target_x_um = x_.to_um (s.target[0]);
    st.target_y_um = y_.to_um (s.target[1]);
    st.moving = s.moving[kGroupXY];
    return st;
  }

private:
  std::shared_ptr<MotionController> c_;
  AxisCalibration x_, y_;
  mutable std::mutex mutex_;
  double speed_;
};

class ControllerFocus : public FocusDrive {
public:
  ControllerFocus (std::shared_ptr<MotionController> c, AxisCalibration z, double speed)
      : c_ (std::move (c)), z_ (z), speed_ (speed)
  {}
  AxisLimits z_limits () const override { return z_.limits; }
  double speed_um_per_s () const override
  {
    std::lock_guard<std::mutex> l (mutex_);
    return speed_;
  }
  void set_speed_um_per_s (double speed) override
  {
    if (!(speed > 0 && speed <= 10000))
      throw Error (ErrorKind::kOutOfRange, "focus speed " + num (speed) + " µm/s is outside (0, 10000] µm/s");
    std::lock_guard<std::mutex> l (mutex_);
    speed_ = speed;
  }
  void move_to (double z_um) override
  {
    if (!std::isfinite (z_um) || !z_.limits.contains (z_um))
      throw Error (ErrorKind::kOutOfRange,
                   "focus z " + num (z_um) + " µm is outside the focus range " + range_text (z_.limits));
    c_->move (kGroupZ, z_.to_units (z_um), 0, speed_um_per_s () / std::abs (z_.um_per_unit));
  }
  void stop () override { c_->stop (); }
  FocusState state () const override
  {
    ControllerSnapshot s = c_->snapshot ();
    FocusState f;
    f.z_um = z_.to_um (s.pos[2]);
    f.target_z_um = z_.to_um (s.target[2]);
    f.moving = s.moving[kGroupZ];
    return f;
  }

private:
  std::shared_ptr<MotionController> c_;
  AxisCalibration z_;
  mutable std::mutex mutex_;
  double speed_;
};

const std::initializer_list<const char *> kCommonKeys
    = {"baud",          "poll_ms",        "timeout_ms",
       "reconnect_ms",  "x_um_per_unit",  "y_um_per_unit",
       "z_um_per_unit", "x_offset_um",    "y_offset_um",
       "z_offset_um",   "x_min_um",       "x_max_um",
       "y_min_um",      "y_max_um",       "z_min_um",
       "z_max_um",      "speed_um_s",     "focus_speed_um_s",
       "home",          "max_speed_um_s", "focus_max_speed_um_s"};

} // namespace

bool
is_controller_scheme (const std::string &scheme)
{
  return scheme == "grbl" || scheme == "proscan";
}

std::shared_ptr<MotionController>
open_controller (const MicroscopeUri &uri)
{
  uri.check_keys (kCommonKeys);
  bool grbl = uri.scheme () == "grbl";
  if (!grbl && uri.scheme () != "proscan")
    throw Error (ErrorKind::kUnsupported, "'" + uri.text ()
                                              + "' is not a stage controller "
                                                "URI (grbl:///dev/ttyUSB0 or proscan:///dev/ttyUSB0)");
  if (!uri.host ().empty () || uri.path ().size () < 2)
    throw Error (ErrorKind::kUnsupported, "controller URI '" + uri.text ()
                                              + "' names no "
                                                "serial port: write "
                                              + uri.scheme () + ":///dev/ttyUSB0 (three slashes)");
  if (grbl && (uri.has ("max_speed_um_s") || uri.has ("focus_max_speed_um_s")))
    throw Error (ErrorKind::kUnsupported,
                 "controller URI '" + uri.text ()
                     + "': max_speed_um_s and focus_max_speed_um_s apply to proscan:");
  if (!grbl && uri.has ("home"))
    throw Error (ErrorKind::kUnsupported, "controller URI '" + uri.text () + "': home applies to grbl:");
  ControllerConfig c;
  c.uri = uri.text ();
  c.path = uri.path ();
  c.baud = (int)uri.get_int ("baud", grbl ? 115200 : 9600, 300, 4000000);
  if (!SerialPort::valid_baud (c.baud))
    throw Error (ErrorKind::kOutOfRange, "controller URI '" + uri.text ()
                                             + "': baud=" + std::to_string (c.baud)
                                             + " is not one of 9600, 19200, 38400, 57600, 115200, 230400, "
                                               "460800, 500000, 921600, 1000000");
  c.poll_ms = (int)uri.get_int ("poll_ms", 100, 10, 5000);
  c.idle_poll_ms = std::max (c.poll_ms, 500);
  c.reply_timeout_ms = (int)uri.get_int ("timeout_ms", 2000, 50, 60000);
  c.reconnect_ms = (int)uri.get_int ("reconnect_ms", 500, 50, 60000);
  std::shared_ptr<MotionController> controller;
  if (grbl) {
    GrblOptions o;
    o.home_on_connect = uri.get_int ("home", 0, 0, 1) != 0;
    controller = std::make_shared<GrblController> (c, o);
  } else {
    ProScanOptions o;
    o.max_speed_um_s = uri.get_double ("max_speed_um_s", o.max_speed_um_s, 1, 1e6);
    o.focus_max_speed_um_s = uri.get_double ("focus_max_speed_um_s", o.focus_max_speed_um_s, 1, 1e6);
    controller = std::make_shared<ProScanController> (c, o);
  }
  controller->start ();
  return controller;
}

std::unique_ptr<Stage>
make_stage (std::shared_ptr<MotionController> c, const MicroscopeUri &uri)
{
  AxisCalibration x = read_axis (uri, 'x', *c, 0, 75000);
  AxisCalibration y = read_axis (uri, 'y', *c, 0, 25000);
  double speed = uri.get_double ("speed_um_s", 2000, 1, 100000);
  return std::make_unique<ControllerStage> (std::move (c), x, y, speed);
}

std::unique_ptr<FocusDrive>
make_focus (std::shared_ptr<MotionController> c, const MicroscopeUri &uri)
{
  if (!c->has_focus ())
    throw Error (ErrorKind::kUnsupported,
                 c->protocol () + " controller on " + c->config ().path + " has no focus drive fitted");
  AxisCalibration z = read_axis (uri, 'z', *c, 0, 5000);
  double speed = uri.get_double ("focus_speed_um_s", 200, 1, 10000);
  return std::make_unique<ControllerFocus> (std::move (c), z, speed);
}

DeviceStatus
controller_status (const MotionController &c, const std::string &part)
{
  ControllerSnapshot s = c.snapshot ();
  DeviceStatus d;
  d.part = part;
  d.device = c.config ().uri;
  d.online = s.online;
  d.problem = s.problem.empty () ? ""
                                 : c.protocol () + " controller on " + c.config ().path
                                       + (s.online ? ": " : " is ") + s.problem;
  d.refusals = s.refusals;
  d.last_refusal = s.last_refusal;
  return d;
}

} // namespace livemicro::hw::serial
