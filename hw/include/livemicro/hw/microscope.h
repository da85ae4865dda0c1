// livemicro::hw — the microscope hardware abstraction.
//
// A microscope is a composition of a camera, an XY stage, a focus drive and an
// objective turret.  Backends are chosen by URI in open_microscope():
//   sim://synthetic[?seed=N&...]     generated H&E slide with ground truth
//   sim:///path/to/slide.svs         any slide OpenSlide opens
//   sim:///path/to/image.png?mpp=X   a plain image through OpenCV
//   aravis://DEVICE-ID[?...]         a GenICam camera (hw/camera/aravis_camera.h)
//   v4l2:///dev/videoN[?...]         a V4L2/UVC camera (hw/camera/v4l2_camera.h)
//   compose:?camera=URI&stage=URI&focus=URI&objectives=MAG:UM_PER_PX,...
//                                    a microscope made of parts, with serial
//                                    stage/focus controllers grbl:// and
//                                    proscan:// (hw/compose/, hw/serial/)
//
// Coordinates: stage x/y are micrometres (µm) of the slide point under the
// optical axis (the centre of the camera frame), measured from the slide's
// top-left corner, x along the long side; image x grows with stage x, image y
// with stage y.  Focus z is µm of the focus drive.  All members are
// thread-safe: the camera is read from a streaming thread while another
// thread commands the stage.
#pragma once

#include <livemicro/hw/error.h>
#include <livemicro/hw/frame_record.h>
#include <livemicro/hw/limits.h>

#include <opencv2/core.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace livemicro::hw {

struct StageState {
  double x_um = 0.0;
  double y_um = 0.0;
  double target_x_um = 0.0;
  double target_y_um = 0.0;
  bool moving = false;
};

class Stage {
public:
  virtual ~Stage () = default;
  virtual AxisLimits x_limits () const = 0;
  virtual AxisLimits y_limits () const = 0;
  virtual double speed_um_per_s () const = 0;
  virtual void set_speed_um_per_s (double speed) = 0;
  // Starts a move and returns at once; the position is reported while moving.
  // Throws Error(kOutOfRange) naming the limit, and then nothing moves.
  virtual void move_to (double x_um, double y_um) = 0;
  virtual void stop () = 0;
  virtual StageState state () const = 0;
};

struct FocusState {
  double z_um = 0.0;
  double target_z_um = 0.0;
  bool moving = false;
};

class FocusDrive {
public:
  virtual ~FocusDrive () = default;
  virtual AxisLimits z_limits () const = 0;
  virtual double speed_um_per_s () const = 0;
  virtual void set_speed_um_per_s (double speed) = 0;
  virtual void move_to (double z_um) = 0;
  virtual void stop () = 0;
  virtual FocusState state () const = 0;
};

struct Objective {
  int magnification = 0; // 4, 10, 20, 40 ...
  double numerical_aperture = 0.0;
  double um_per_px = 0.0;           // at the camera, for this objective
  double working_distance_um = 0.0; // objective front lens to focal plane; 0 = unknown
};

class ObjectiveTurret {
public:
  virtual ~ObjectiveTurret () = default;
  virtual std::vector<Objective> objectives () const = 0;
  // Throws Error(kOutOfRange) listing the mounted magnifications.
  virtual void select (int magnification) = 0;
  virtual Objective current () const = 0;
};

class Camera {
public:
  virtual ~Camera () = default;
  // Largest frame the camera delivers; the sim camera renders any size up to
  // this, a real camera may only offer its sensor size (min == max).
  virtual cv::Size min_size () const = 0;
  virtual cv::Size max_size () const = 0;
  // Sets the frame size for the next grabs; throws kUnsupported.
  virtual void configure (cv::Size size) = 0;
  // Takes one RGB (8 bit, 3 channels) frame into `rgb`, which is (re)allocated
  // only when its size or type differs.  Throws Error on device faults:
  // Error(kDevice) while the camera is gone (a real backend reconnects by
  // itself and grabs again once it is back).  The record says where and
  // when (frame_width/height stay 0: the element that makes the frame knows).
  virtual FrameRecord grab (cv::Mat &rgb) = 0;
  // TRUE when the camera exposes at its own rate and grab() waits for the
  // next frame (a real camera); FALSE when grab() renders on demand (sim).
  virtual bool free_running () const { return false; }
  // The camera's frame rate when it is fixed by the device (frames/s), else 0.
  virtual double frame_rate () const { return 0.0; }
};

// Health of one device of a microscope (camera, stage or focus controller).
struct DeviceStatus {
  std::string part;         // "camera", "stage", "focus"
  std::string device;       // its URI, e.g. grbl:///dev/ttyUSB0
  bool online = true;       // connected and answering
  std::string problem;      // why it is offline, or an alarm; empty when fine
  uint64_t refusals = 0;    // commands the device refused so far
  std::string last_refusal; // the last of them, as a sentence
};

struct MicroscopeState {
  StageState stage;
  FocusState focus;
  Objective objective;
  AxisLimits x_limits, y_limits, z_limits;
  double focal_plane_z_um = 0.0; // nominal focus of the slide surface; 0 = unknown
};

// The soft limits (limits.h) of the current objective for a frame of this size.
SoftLimits soft_limits (const MicroscopeState &state, int frame_width, int frame_height);

// The whole slide at low resolution, as a macro camera shows it.
struct SlideOverview {
  cv::Mat rgb; // CV_8UC3
  cv::Rect2d area_um;
};

// A microscope as one object: the parts plus a consistent snapshot.
class Microscope {
public:
  virtual ~Microscope () = default;
  virtual std::string uri () const = 0;
  virtual std::string description () const = 0;
  virtual Camera &camera () = 0;
  virtual Stage &stage () = 0;
  virtual FocusDrive &focus () = 0;
  virtual ObjectiveTurret &turret () = 0;
  virtual MicroscopeState state () const = 0;
  // The position a session starts from (sim: centre of the tissue, in focus).
  virtual void home () = 0;
  // Health of each real device; empty for a virtual microscope.
  virtual std::vector<DeviceStatus> devices () const { return {}; }
  // For a microscope that knows its slide (the virtual one): the whole slide
  // rendered with at most `max_side_px` pixels on the longer side, and the
  // slide µm it covers, from the slide it has open (seconds of CPU for a
  // large slide; safe beside the capture).  Nothing for real hardware, whose
  // slide is only seen through the objective.
  virtual std::optional<SlideOverview> overview (int /*max_side_px*/) const { return std::nullopt; }
};

// Opens a microscope by URI.  Throws Error with a message that names the URI
// and what is wrong (unknown scheme, missing or unreadable slide, bad query).
std::unique_ptr<Microscope> open_microscope (const std::string &uri);

} // namespace livemicro::hw
