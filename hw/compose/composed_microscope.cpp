#include "composed_microscope.h"
#include "compose_spec.h"

#include "config.h"

#if HAVE_ARAVIS
#include "camera/aravis_camera.h"
#endif
#include "camera/v4l2_camera.h"
#include "serial/controller_parts.h"

#include <livemicro/hw/error.h>

#include <livemicro/hw/text.h>

#include <cmath>
#include <functional>
#include <mutex>

namespace livemicro::hw::compose {

namespace {

// A part that is not motorised: it stays where it is and says so.
class FixedStage : public Stage {
public:
  explicit FixedStage (std::string scope) : scope_ (std::move (scope)) {}
  AxisLimits x_limits () const override { return {0, 0}; }
  AxisLimits y_limits () const override { return {0, 0}; }
  double speed_um_per_s () const override { return 1.0; }
  void set_speed_um_per_s (double) override {}
  void move_to (double, double) override
  {
    throw Error (ErrorKind::kUnsupported, "microscope '" + scope_
                                              + "' has no motorised stage (give stage=grbl:///dev/… or "
                                                "proscan:///dev/… in a compose: URI)");
  }
  void stop () override {}
  StageState state () const override { return {}; }

private:
  std::string scope_;
};

class FixedFocus : public FocusDrive {
public:
  explicit FixedFocus (std::string scope) : scope_ (std::move (scope)) {}
  AxisLimits z_limits () const override { return {0, 0}; }
  double speed_um_per_s () const override { return 1.0; }
  void set_speed_um_per_s (double) override {}
  void move_to (double) override
  {
    throw Error (ErrorKind::kUnsupported, "microscope '" + scope_
                                              + "' has no motorised focus (give focus=grbl:///dev/… or "
                                                "proscan:///dev/… in a compose: URI)");
  }
  void stop () override {}
  FocusState state () const override { return {}; }

private:
  std::string scope_;
};

class Turret : public ObjectiveTurret {
public:
  Turret (std::vector<Objective> objectives, int selected) : objectives_ (std::move (objectives))
  {
    current_ = objectives_.front ();
    for (auto &o : objectives_)
      if (o.magnification == selected)
        current_ = o;
  }
  std::vector<Objective> objectives () const override { return objectives_; }
  void select (int magnification) override
  {
    for (const auto &o : objectives_)
      if (o.magnification == magnification) {
        std::lock_guard<std::mutex> l (mutex_);
        current_ = o;
        return;
      }
    std::string list;
    for (const auto &o : objectives_)
      list += (list.empty () ? "" : ", ") + std::to_string (o.magnification) + "x";
    throw Error (ErrorKind::kOutOfRange, "objective " + std::to_string (magnification)
                                             + "x is not mounted (available: " + list + ")");
  }
  Objective current () const override
  {
    std::lock_guard<std::mutex> l (mutex_);
    return current_;
  }

private:
  std::vector<Objective> objectives_;
  mutable std::mutex mutex_;
  Objective current_;
};

struct CameraPart {
  std::unique_ptr<Camera> camera;
  std::function<DeviceStatus ()> status;
  std::string description;
};

CameraPart
open_camera (const std::string &text)
{
  MicroscopeUri uri (text);
  CameraPart p;
  if (uri.scheme () == "aravis") {
#if HAVE_ARAVIS
    auto c = camera::AravisCamera::open (uri);
    auto *raw = c.get ();
    p.status = [raw] { return raw->status (); };
    p.description = raw->description ();
    p.camera = std::move (c);
#else
    throw Error (ErrorKind::kUnsupported, "camera URI '" + text
                                              + "': this build has no Aravis "
                                                "(install libaravis-dev and libusb-1.0-0-dev, then "
                                                "meson setup --reconfigure)");
#endif
  } else if (uri.scheme () == "v4l2") {
    auto c = camera::V4l2Camera::open (uri);
    auto *raw = c.get ();
    p.status = [raw] { return raw->status (); };
    p.description = raw->description ();
    p.camera = std::move (c);
  } else {
    throw Error (ErrorKind::kUnsupported, "camera URI '" + text + "': unknown scheme '" + uri.scheme ()
                                              + "' (supported: aravis, v4l2)");
  }
  return p;
}

class Composed : public Microscope, public Camera {
public:
  Composed (std::string uri, CameraPart camera, std::unique_ptr<Stage> stage,
            std::unique_ptr<FocusDrive> focus, std::vector<Objective> objectives, int selected,
            std::vector<std::pair<std::string, std::shared_ptr<serial::MotionController>>> controllers,
            std::string description)
      : uri_ (std::move (uri)), camera_ (std::move (camera)), stage_ (std::move (stage)),
        focus_ (std::move (focus)), turret_ (std::move (objectives), selected),
        controllers_ (std::move (controllers)), description_ (std::move (description))
  {}
  ~Composed () override
  {
    // The camera first (its threads), then the parts it reads.
    camera_.camera.reset ();
    stage_.reset ();
    focus_.reset ();
    for (auto &c : controllers_)
      c.second->shutdown ();
  }

  // --- Microscope
  std::string uri () const override { return uri_; }
  std::string description () const override { return description_; }
  Camera &camera () override { return *this; }
  Stage &stage () override { return *stage_; }
  FocusDrive &focus () override { return *focus_; }
  ObjectiveTurret &turret () override { return turret_; }
  MicroscopeState state () const override
  {
    MicroscopeState s;
    s.stage = stage_->state ();
    s.focus = focus_->state ();
    s.objective = turret_.current ();
    s.x_limits = stage_->x_limits ();
    s.y_limits = stage_->y_limits ();
    s.z_limits = focus_->z_limits ();
    return s;
  }
  void home () override {} // a real stage starts where it is
  std::vector<DeviceStatus> devices () const override
  {
    std::vector<DeviceStatus> d = {camera_.status ()};
    for (auto &c : controllers_)
      d.push_back (serial::controller_status (*c.second, c.first));
    return d;
  }

  // --- Camera: the camera's frame plus where the stage was
  cv::Size min_size () const override { return camera_.camera->min_size (); }
  cv::Size max_size () const override { return camera_.camera->max_size (); }
  void configure (cv::Size size) override { camera_.camera->configure (size); }
  bool free_running () const override { return camera_.camera->free_running (); }
  double frame_rate () const override { return camera_.camera->frame_rate (); }
  FrameRecord grab (cv::Mat &rgb) override
  {
    FrameRecord info = camera_.camera->grab (rgb);
    StageState st = stage_->state ();
    FocusState fs = focus_->state ();
    Objective o = turret_.current ();
    info.stage_x_um = st.x_um;
    info.stage_y_um = st.y_um;
    info.stage_z_um = fs.z_um;
    info.objective = o.magnification;
    info.um_per_px = o.um_per_px;
    info.moving = st.moving || fs.moving;
    return info;
  }

private:
  std::string uri_;
  CameraPart camera_;
  std::unique_ptr<Stage> stage_;
  std::unique_ptr<FocusDrive> focus_;
  Turret turret_;
  std::vector<std::pair<std::string, std::shared_ptr<serial::MotionController>>> controllers_;
  std::string description_;
};

std::unique_ptr<Microscope>
build (const std::string &text, const std::string &camera_uri, const std::string &stage_uri,
       const std::string &focus_uri, std::vector<Objective> objectives, int selected)
{
  // Controllers first (fast to fail on a missing port), then the camera.
  std::vector<std::pair<std::string, std::shared_ptr<serial::MotionController>>> controllers;
  std::unique_ptr<Stage> stage;
  std::unique_ptr<FocusDrive> focus;
  std::string parts;
  if (!stage_uri.empty ()) {
    MicroscopeUri su (stage_uri);
    if (!serial::is_controller_scheme (su.scheme ()))
      throw Error (ErrorKind::kUnsupported, "stage URI '" + stage_uri + "': unknown scheme '" + su.scheme ()
                                                + "' (supported: grbl, proscan)");
    auto c = serial::open_controller (su);
    stage = serial::make_stage (c, su);
    bool shared = false;
    if (!focus_uri.empty ()) {
      MicroscopeUri fu (focus_uri);
      if (fu.scheme () == su.scheme () && fu.path () == su.path ()) {
        if (focus_uri != stage_uri)
          throw Error (ErrorKind::kUnsupported,
                       "stage and focus name the same controller " + su.path ()
                           + " with different parameters: give the same URI for both");
        focus = serial::make_focus (c, fu);
        shared = true;
      }
    }
    controllers.push_back ({shared ? "stage+focus" : "stage", c});
    parts += "; stage " + c->protocol () + " on " + su.path () + (shared ? " (also focus)" : "");
  }
  if (!focus_uri.empty () && !focus) {
    MicroscopeUri fu (focus_uri);
    if (!serial::is_controller_scheme (fu.scheme ()))
      throw Error (ErrorKind::kUnsupported, "focus URI '" + focus_uri + "': unknown scheme '" + fu.scheme ()
                                                + "' (supported: grbl, proscan)");
    auto c = serial::open_controller (fu);
    focus = serial::make_focus (c, fu);
    controllers.push_back ({"focus", c});
    parts += "; focus " + c->protocol () + " on " + fu.path ();
  }
  if (!stage)
    stage = std::make_unique<FixedStage> (text);
  if (!focus)
    focus = std::make_unique<FixedFocus> (text);
  CameraPart cam = open_camera (camera_uri);
  std::string description = cam.description + parts + "; objectives " + objectives_text (objectives);
  return std::make_unique<Composed> (text, std::move (cam), std::move (stage), std::move (focus),
                                     std::move (objectives), selected, std::move (controllers), description);
}

} // namespace

bool
is_camera_scheme (const std::string &scheme)
{
  return scheme == "aravis" || scheme == "v4l2";
}

std::unique_ptr<Microscope>
open_composed (const MicroscopeUri &uri)
{
  ComposeSpec spec = parse_compose (uri);
  return build (uri.text (), spec.camera, spec.stage, spec.focus, spec.objectives, spec.selected);
}

std::unique_ptr<Microscope>
open_camera_only (const MicroscopeUri &uri)
{
  Objective uncalibrated;
  uncalibrated.magnification = 1;
  uncalibrated.um_per_px = 1.0;
  return build (uri.text (), uri.text (), "", "", {uncalibrated}, 1);
}

} // namespace livemicro::hw::compose
