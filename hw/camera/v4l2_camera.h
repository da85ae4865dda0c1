// V4L2 capture devices (UVC webcams, the Raspberry Pi camera through its
// V4L2 driver as on OpenFlexure microscopes) by direct V4L2 ioctls with
// memory-mapped streaming (no GStreamer inside hw/):
//   v4l2:///dev/videoN[?width=…&height=…&format=YUYV|MJPG|RGB3|BGR3|GREY|
//                       RGGB|BGGR|GBRG|GRBG&frame_rate=…&exposure_us=…&gain=…]
// Without width/height the device's current size is used; without format
// the first of YUYV, RGB3, BGR3, MJPG, GREY, Bayer the device offers.
// Unplugging (ENODEV/EIO from the driver, or no frame within the timeout)
// makes grab() throw Error(kDevice) and reopens the path in the background.
#pragma once

#include <livemicro/hw/microscope.h>
#include <livemicro/hw/uri.h>

#include <memory>

namespace livemicro::hw::camera {

class V4l2Camera : public Camera {
public:
  static std::unique_ptr<V4l2Camera> open (const MicroscopeUri &uri);
  ~V4l2Camera () override;

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
  explicit V4l2Camera (std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A FourCC (e.g. V4L2_PIX_FMT_YUYV) frame → RGB; false for formats it does
// not convert.  Exposed for unit tests.
bool v4l2_to_rgb (uint32_t fourcc, const uint8_t *data, size_t bytes, int width, int height,
                  int bytes_per_line, cv::Mat &rgb);

} // namespace livemicro::hw::camera
