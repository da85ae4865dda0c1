// GenICam cameras (GigE Vision, USB3 Vision) through libaravis 0.8:
//   aravis://DEVICE-ID[?pixel_format=…&exposure_us=…&gain=…&frame_rate=…
//                      &roi=X,Y,W,H&binning=N&demosaic=bilinear|edge
//                      &interface=Fake|GigEVision|USB3Vision&timeout_ms=…]
// DEVICE-ID is Aravis' id ("Basler-21234567", "Fake_1"), or a camera's IPv4
// address (GigE Vision, found by a unicast discovery).  Ids starting with
// "Fake_" are Aravis' built-in fake camera.  The camera is free-running:
// grab() returns its newest frame.  When frames stop (unplugged, powered
// off, network gone) grab() throws Error(kDevice) at once and a background
// thread reopens the camera with the same settings until it is back.
#pragma once

#include <livemicro/hw/microscope.h>
#include <livemicro/hw/uri.h>

#include <memory>

namespace livemicro::hw::camera {

class AravisCamera : public Camera {
public:
  // Opens and starts the camera; throws Error naming the device and what
  // is wrong (unknown id, unsupported pixel format, value outside the
  // camera's bounds).
  static std::unique_ptr<AravisCamera> open (const MicroscopeUri &uri);
  ~AravisCamera () override;

  cv::Size min_size () const override;
  cv::Size max_size () const override;
  void configure (cv::Size size) override;
  FrameRecord grab (cv::Mat &rgb) override;
  bool free_running () const override { return true; }
  double frame_rate () const override;

  std::string description () const;
  DeviceStatus status () const;

  class Impl;

private:
  explicit AravisCamera (std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

} // namespace livemicro::hw::camera
