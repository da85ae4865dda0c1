#include "v4l2_camera.h"

#include "device_link.h"
#include "pixels.h"

#include <livemicro/hw/error.h>
#include <livemicro/hw/image_codec.h>

#include <glib.h>
#include <opencv2/imgproc.hpp>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <mutex>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace livemicro::hw::camera {

namespace {

std::string
fourcc_text (uint32_t f)
{
  char s[5] = {char (f & 0xff), char ((f >> 8) & 0xff), char ((f >> 16) & 0xff), char ((f >> 24) & 0xff), 0};
  return s;
}

int
xioctl (int fd, unsigned long req, void *arg)
{
  int r;
  do
    r = ioctl (fd, req, arg);
  while (r < 0 && errno == EINTR);
  return r;
}

const uint32_t kPreferred[]
    = {V4L2_PIX_FMT_YUYV,   V4L2_PIX_FMT_RGB24,  V4L2_PIX_FMT_BGR24,  V4L2_PIX_FMT_MJPEG, V4L2_PIX_FMT_GREY,
       V4L2_PIX_FMT_SRGGB8, V4L2_PIX_FMT_SBGGR8, V4L2_PIX_FMT_SGBRG8, V4L2_PIX_FMT_SGRBG8};

bool
convertible (uint32_t f)
{
  for (uint32_t p : kPreferred)
    if (p == f)
      return true;
  return false;
}

struct Settings {
  std::string uri, path;
  int width = 0, height = 0;
  uint32_t format = 0;
  double frame_rate = 0;
  double exposure_us = -1;
  int gain = -1;
  int timeout_ms = 2000, reconnect_ms = 1000;
};

} // namespace

bool
v4l2_to_rgb (uint32_t fourcc, const uint8_t *data, size_t bytes, int w, int h, int bpl, cv::Mat &rgb)
{
  if (rgb.size () != cv::Size (w, h) || rgb.type () != CV_8UC3)
    rgb.create (h, w, CV_8UC3);
  auto need = [&] (size_t per_line) { return bytes >= (size_t)bpl * (h - 1) + per_line * w; };
  switch (fourcc) {
  case V4L2_PIX_FMT_YUYV:
    if (!need (2))
      return false;
    cv::cvtColor (cv::Mat (h, w, CV_8UC2, const_cast<uint8_t *> (data), bpl), rgb, cv::COLOR_YUV2RGB_YUYV);
    return true;
  case V4L2_PIX_FMT_RGB24:
    if (!need (3))
      return false;
    cv::Mat (h, w, CV_8UC3, const_cast<uint8_t *> (data), bpl).copyTo (rgb);
    return true;
  case V4L2_PIX_FMT_BGR24:
    if (!need (3))
      return false;
    cv::cvtColor (cv::Mat (h, w, CV_8UC3, const_cast<uint8_t *> (data), bpl), rgb, cv::COLOR_BGR2RGB);
    return true;
  case V4L2_PIX_FMT_GREY:
    if (!need (1))
      return false;
    cv::cvtColor (cv::Mat (h, w, CV_8UC1, const_cast<uint8_t *> (data), bpl), rgb, cv::COLOR_GRAY2RGB);
    return true;
  case V4L2_PIX_FMT_MJPEG: {
    // A frame libjpeg got through with damage (a lost USB packet) is still
    // shown, as a webcam's own viewer would.
    DecodedImage jpeg = decode_image (data, bytes, {DamagedJpeg::kAccept, cv::Size (w, h)});
    if (jpeg.format != ImageFormat::kJpeg || jpeg.rgb.empty ())
      return false;
    jpeg.rgb.copyTo (rgb); // into rgb's own pixels, which the caller may own
    return true;
  }
  case V4L2_PIX_FMT_SRGGB8:
  case V4L2_PIX_FMT_SBGGR8:
  case V4L2_PIX_FMT_SGBRG8:
  case V4L2_PIX_FMT_SGRBG8: {
    if (!need (1))
      return false;
    PixelLayout l;
    l.kind = PixelLayout::kBayer;
    l.bayer = fourcc == V4L2_PIX_FMT_SRGGB8   ? Bayer::kRG
              : fourcc == V4L2_PIX_FMT_SBGGR8 ? Bayer::kBG
              : fourcc == V4L2_PIX_FMT_SGBRG8 ? Bayer::kGB
                                              : Bayer::kGR;
    to_rgb (cv::Mat (h, w, CV_8UC1, const_cast<uint8_t *> (data), bpl), l, false, rgb);
    return true;
  }
  default:
    return false;
  }
}

class V4l2Camera::Impl {
public:
  explicit Impl (Settings s) : s_ (std::move (s)), link_ (s_.uri, s_.reconnect_ms) {}
  ~Impl ()
  {
    link_.stop ();
    close ();
  }

  void connect ()
  {
    const std::string who = "V4L2 device '" + s_.path + "'";
    int fd = ::open (s_.path.c_str (), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      if (e == ENOENT || e == ENODEV || e == ENXIO)
        throw Error (ErrorKind::kNotFound, who + " does not exist");
      throw Error (ErrorKind::kDevice, "cannot open " + who + ": " + std::strerror (e));
    }
    try {
      setup (fd, who);
    } catch (...) {
      unmap ();
      ::close (fd);
      throw;
    }
    {
      std::lock_guard<std::mutex> l (mutex_);
      fd_ = fd;
    }
    link_.set_online ();
  }

  // Checks the device, then its format, frame rate and controls, then its
  // buffers and streaming.
  void setup (int fd, const std::string &who)
  {
    check_capabilities (fd, who);
    setup_format (fd, who);
    setup_rate_and_controls (fd, who);
    start_streaming (fd, who);
  }

  void check_capabilities (int fd, const std::string &who)
  {
    v4l2_capability cap{};
    if (xioctl (fd, VIDIOC_QUERYCAP, &cap) < 0)
      throw Error (ErrorKind::kUnsupported,
                   who + " is not a V4L2 device (VIDIOC_QUERYCAP: " + std::strerror (errno) + ")");
    uint32_t caps = cap.capabilities & V4L2_CAP_DEVICE_CAPS ? cap.device_caps : cap.capabilities;
    if (!(caps & V4L2_CAP_VIDEO_CAPTURE))
      throw Error (ErrorKind::kUnsupported,
                   who + " (" + (const char *)cap.card + ") is not a video capture device");
    if (!(caps & V4L2_CAP_STREAMING))
      throw Error (ErrorKind::kUnsupported, who + " does not support streaming I/O");
    card_ = (const char *)cap.card;
  }

  // The pixel format asked for, else the current one if convertible, else
  // the first preferred one offered; the size asked for, exactly.
  void setup_format (int fd, const std::string &who)
  {
    std::vector<uint32_t> offered;
    for (v4l2_fmtdesc d{0, V4L2_BUF_TYPE_VIDEO_CAPTURE}; xioctl (fd, VIDIOC_ENUM_FMT, &d) == 0; d.index++)
      offered.push_back (d.pixelformat);
    auto list = [&] {
      std::string s;
      for (uint32_t f : offered)
        s += (s.empty () ? "" : ", ") + fourcc_text (f);
      return s;
    };
    v4l2_format fmt{};
    fmt.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    if (xioctl (fd, VIDIOC_G_FMT, &fmt) < 0)
      throw Error (ErrorKind::kDevice, who + ": VIDIOC_G_FMT: " + std::strerror (errno));
    uint32_t want = s_.format;
    if (want) {
      if (std::find (offered.begin (), offered.end (), want) == offered.end ())
        throw Error (ErrorKind::kUnsupported,
                     who + " does not offer format=" + fourcc_text (want) + " (it offers: " + list () + ")");
    } else if (convertible (fmt.fmt.pix.pixelformat)) {
      want = fmt.fmt.pix.pixelformat;
    } else {
      for (uint32_t p : kPreferred)
        if (std::find (offered.begin (), offered.end (), p) != offered.end ()) {
          want = p;
          break;
        }
      if (!want)
        throw Error (ErrorKind::kUnsupported,
                     who + " offers no format LiveMicro converts (it offers: " + list () + ")");
    }
    fmt.fmt.pix.pixelformat = want;
    if (s_.width > 0) {
      fmt.fmt.pix.width = (uint32_t)s_.width;
      fmt.fmt.pix.height = (uint32_t)s_.height;
    }
    fmt.fmt.pix.field = V4L2_FIELD_NONE;
    if (xioctl (fd, VIDIOC_S_FMT, &fmt) < 0)
      throw Error (ErrorKind::kUnsupported,
                   who + ": VIDIOC_S_FMT " + fourcc_text (want) + ": " + std::strerror (errno));
    if (fmt.fmt.pix.pixelformat != want
        || (s_.width > 0 && ((int)fmt.fmt.pix.width != s_.width || (int)fmt.fmt.pix.height != s_.height)))
      throw Error (ErrorKind::kUnsupported, who + " cannot deliver " + std::to_string (s_.width) + "x"
                                                + std::to_string (s_.height) + " " + fourcc_text (want)
                                                + " (nearest: " + std::to_string (fmt.fmt.pix.width) + "x"
                                                + std::to_string (fmt.fmt.pix.height) + " "
                                                + fourcc_text (fmt.fmt.pix.pixelformat) + ")");
    fourcc_ = want;
    size_ = cv::Size ((int)fmt.fmt.pix.width, (int)fmt.fmt.pix.height);
    bytes_per_line_ = (int)fmt.fmt.pix.bytesperline;
  }

  void setup_rate_and_controls (int fd, const std::string &who)
  {
    v4l2_streamparm parm{};
    parm.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    if (s_.frame_rate > 0) {
      parm.parm.capture.timeperframe.numerator = 1000;
      parm.parm.capture.timeperframe.denominator = (uint32_t)std::lround (s_.frame_rate * 1000);
      if (xioctl (fd, VIDIOC_S_PARM, &parm) < 0)
        throw Error (ErrorKind::kUnsupported, who + ": cannot set frame_rate: " + std::strerror (errno));
    }
    fps_ = 0;
    if (xioctl (fd, VIDIOC_G_PARM, &parm) == 0 && parm.parm.capture.timeperframe.numerator > 0)
      fps_ = double (parm.parm.capture.timeperframe.denominator) / parm.parm.capture.timeperframe.numerator;

    auto set_control = [&] (uint32_t id, int32_t value, const char *what) {
      v4l2_control c{id, value};
      if (xioctl (fd, VIDIOC_S_CTRL, &c) < 0)
        throw Error (ErrorKind::kUnsupported, who + ": cannot set " + what + ": " + std::strerror (errno));
    };
    if (s_.exposure_us >= 0) {
      set_control (V4L2_CID_EXPOSURE_AUTO, V4L2_EXPOSURE_MANUAL, "manual exposure");
      set_control (V4L2_CID_EXPOSURE_ABSOLUTE, (int32_t)std::lround (s_.exposure_us / 100.0),
                   "exposure_us (V4L2 counts 100 µs units)");
    }
    if (s_.gain >= 0)
      set_control (V4L2_CID_GAIN, s_.gain, "gain");
  }

  // Memory-mapped buffers, queued, and the stream on.
  void start_streaming (int fd, const std::string &who)
  {
    v4l2_requestbuffers req{};
    req.count = 4;
    req.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    req.memory = V4L2_MEMORY_MMAP;
    if (xioctl (fd, VIDIOC_REQBUFS, &req) < 0 || req.count < 2)
      throw Error (ErrorKind::kDevice, who + ": VIDIOC_REQBUFS: " + std::strerror (errno));
    for (uint32_t i = 0; i < req.count; i++) {
      v4l2_buffer b{};
      b.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
      b.memory = V4L2_MEMORY_MMAP;
      b.index = i;
      if (xioctl (fd, VIDIOC_QUERYBUF, &b) < 0)
        throw Error (ErrorKind::kDevice, who + ": VIDIOC_QUERYBUF: " + std::strerror (errno));
      void *p = mmap (nullptr, b.length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, b.m.offset);
      if (p == MAP_FAILED)
        throw Error (ErrorKind::kDevice, who + ": mmap: " + std::strerror (errno));
      maps_.push_back ({p, b.length});
      if (xioctl (fd, VIDIOC_QBUF, &b) < 0)
        throw Error (ErrorKind::kDevice, who + ": VIDIOC_QBUF: " + std::strerror (errno));
    }
    int type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    if (xioctl (fd, VIDIOC_STREAMON, &type) < 0)
      throw Error (ErrorKind::kDevice, who + ": VIDIOC_STREAMON: " + std::strerror (errno));
  }

  void unmap ()
  {
    for (auto &m : maps_)
      munmap (m.first, m.second);
    maps_.clear ();
  }

  void close ()
  {
    std::lock_guard<std::mutex> l (mutex_);
    if (fd_ >= 0) {
      int type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
      xioctl (fd_, VIDIOC_STREAMOFF, &type);
      unmap ();
      ::close (fd_);
      fd_ = -1;
    }
  }

  void lose (const std::string &why)
  {
    link_.lose (
        why, [this] { close (); }, [this] { connect (); });
  }

  FrameRecord grab (cv::Mat &rgb)
  {
    std::lock_guard<std::mutex> g (grab_mutex_);
    link_.check_online ();
    int fd;
    {
      std::lock_guard<std::mutex> l (mutex_);
      fd = fd_;
    }
    struct pollfd p = {fd, POLLIN, 0};
    int r = ::poll (&p, 1, s_.timeout_ms);
    if (r == 0 || (p.revents & (POLLERR | POLLHUP))) {
      lose (r == 0 ? "no frame for " + std::to_string (s_.timeout_ms) + " ms" : "the device hung up");
      link_.check_online ();
    }
    v4l2_buffer b{};
    b.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    b.memory = V4L2_MEMORY_MMAP;
    if (xioctl (fd, VIDIOC_DQBUF, &b) < 0) {
      lose (std::string ("VIDIOC_DQBUF: ") + std::strerror (errno));
      link_.check_online ();
    }
    // Newest frame: requeue older ones.
    v4l2_buffer next{};
    next.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    next.memory = V4L2_MEMORY_MMAP;
    while (xioctl (fd, VIDIOC_DQBUF, &next) == 0) {
      xioctl (fd, VIDIOC_QBUF, &b);
      b = next;
    }
    FrameRecord info;
    info.capture_unix_us = g_get_real_time ();
    info.frame_number = b.sequence;
    bool ok = v4l2_to_rgb (fourcc_, static_cast<const uint8_t *> (maps_[b.index].first), b.bytesused,
                           size_.width, size_.height, bytes_per_line_, rgb);
    xioctl (fd, VIDIOC_QBUF, &b);
    if (!ok)
      throw Error (ErrorKind::kCorrupt,
                   "camera " + s_.uri + " sent a frame that cannot be decoded as " + fourcc_text (fourcc_));
    return info;
  }

  Settings s_;
  std::string card_;
  uint32_t fourcc_ = 0;
  cv::Size size_;
  int bytes_per_line_ = 0;
  double fps_ = 0;
  std::vector<std::pair<void *, size_t>> maps_;
  DeviceLink link_;
  std::mutex mutex_; // fd_
  int fd_ = -1;
  std::mutex grab_mutex_;
};

V4l2Camera::V4l2Camera (std::unique_ptr<Impl> impl) : impl_ (std::move (impl)) {}
V4l2Camera::~V4l2Camera () = default;

std::unique_ptr<V4l2Camera>
V4l2Camera::open (const MicroscopeUri &uri)
{
  uri.check_keys (
      {"width", "height", "format", "frame_rate", "exposure_us", "gain", "timeout_ms", "reconnect_ms"});
  Settings s;
  s.uri = uri.text ();
  s.path = uri.path ();
  if (!uri.host ().empty () || s.path.size () < 2)
    throw Error (ErrorKind::kUnsupported,
                 "camera URI '" + uri.text () + "' names no device: v4l2:///dev/videoN (three slashes)");
  s.width = (int)uri.get_int ("width", 0, 16, 16384);
  s.height = (int)uri.get_int ("height", 0, 16, 16384);
  if ((s.width > 0) != (s.height > 0))
    throw Error (ErrorKind::kUnsupported, "camera URI '" + uri.text () + "': width and height go together");
  std::string f = uri.get_string ("format", "");
  if (!f.empty ()) {
    if (f.size () != 4)
      throw Error (ErrorKind::kUnsupported, "camera URI '" + uri.text () + "': format=" + f
                                                + " is not a FourCC (YUYV, MJPG, RGB3, BGR3, GREY, "
                                                  "RGGB, BGGR, GBRG, GRBG)");
    s.format = v4l2_fourcc (f[0], f[1], f[2], f[3]);
    if (!convertible (s.format))
      throw Error (ErrorKind::kUnsupported, "camera URI '" + uri.text () + "': format=" + f
                                                + " is not supported (YUYV, MJPG, RGB3, BGR3, GREY, "
                                                  "RGGB, BGGR, GBRG, GRBG)");
  }
  s.frame_rate = uri.get_double ("frame_rate", 0, 0.01, 1000);
  s.exposure_us = uri.get_double ("exposure_us", -1, 0, 1e8);
  s.gain = (int)uri.get_int ("gain", -1, 0, 100000);
  s.timeout_ms = (int)uri.get_int ("timeout_ms", 2000, 100, 600000);
  s.reconnect_ms = (int)uri.get_int ("reconnect_ms", 1000, 50, 600000);
  auto impl = std::make_unique<Impl> (s);
  impl->connect ();
  return std::unique_ptr<V4l2Camera> (new V4l2Camera (std::move (impl)));
}

cv::Size
V4l2Camera::min_size () const
{
  return impl_->size_;
}
cv::Size
V4l2Camera::max_size () const
{
  return impl_->size_;
}

void
V4l2Camera::configure (cv::Size size)
{
  if (size != impl_->size_)
    throw Error (ErrorKind::kUnsupported,
                 "camera " + impl_->s_.uri + " delivers only " + std::to_string (impl_->size_.width) + "x"
                     + std::to_string (impl_->size_.height) + " frames, not " + std::to_string (size.width)
                     + "x" + std::to_string (size.height)
                     + " (width=/height= in the camera URI choose the size)");
}

FrameRecord
V4l2Camera::grab (cv::Mat &rgb)
{
  return impl_->grab (rgb);
}
double
V4l2Camera::frame_rate () const
{
  return impl_->fps_;
}

std::string
V4l2Camera::description () const
{
  return "V4L2 camera " + impl_->card_ + " (" + impl_->s_.path + "), " + std::to_string (impl_->size_.width)
         + "x" + std::to_string (impl_->size_.height) + " " + fourcc_text (impl_->fourcc_);
}

DeviceStatus
V4l2Camera::status () const
{
  return impl_->link_.status ();
}

} // namespace livemicro::hw::camera
