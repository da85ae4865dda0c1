#include "aravis_camera.h"

#include "device_link.h"
#include "pixels.h"
#include <livemicro/hw/text.h>

#include <livemicro/hw/error.h>

#include <arv.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <sstream>
#include <thread>

namespace livemicro::hw::camera {

namespace {

struct Settings {
  std::string uri, id, interface_name, pixel_format;
  double exposure_us = -1, gain = -1, frame_rate = -1;
  bool has_roi = false;
  int roi[4] = {0, 0, 0, 0};
  int binning = 0;
  bool edge_aware = false;
  int timeout_ms = 0; // 0: from the frame rate
  int reconnect_ms = 1000;
};

// Throws Error(kind, "<what>: <GError message>") and frees the error.
void
check (GError *error, ErrorKind kind, const std::string &what)
{
  if (!error)
    return;
  std::string msg = what + ": " + error->message;
  g_error_free (error);
  throw Error (kind, msg);
}

} // namespace

class AravisCamera::Impl {
public:
  explicit Impl (Settings s) : s_ (std::move (s)), link_ (s_.uri, s_.reconnect_ms) {}
  ~Impl ()
  {
    link_.stop ();
    close ();
  }

  // Opens the device and starts acquisition with the settings.
  void connect ()
  {
    GError *error = nullptr;
    ArvDevice *device = nullptr;
    ArvInterface *iface = nullptr;
    std::string itf = s_.interface_name;
    if (itf.empty () && s_.id.rfind ("Fake_", 0) == 0)
      itf = "Fake";
    if (itf.empty () && g_hostname_is_ip_address (s_.id.c_str ()))
      itf = "GigEVision"; // unicast discovery of that address only
    if (itf == "Fake")
      iface = arv_fake_interface_get_instance ();
    else if (itf == "GigEVision")
      iface = arv_gv_interface_get_instance ();
    else if (itf == "USB3Vision")
      iface = arv_uv_interface_get_instance ();
    if (iface)
      device = arv_interface_open_device (iface, s_.id.c_str (), &error);
    else
      device = arv_open_device (s_.id.c_str (), &error);
    if (!device) {
      std::string msg = "no GenICam camera '" + s_.id + "'"
                        + (itf.empty () ? "" : " on the " + itf + " interface")
                        + (error ? std::string (" (") + error->message + ")" : "");
      g_clear_error (&error);
      throw Error (ErrorKind::kNotFound, msg);
    }
    ArvCamera *cam = arv_camera_new_with_device (device, &error);
    g_object_unref (device);
    check (error, ErrorKind::kDevice, "camera '" + s_.id + "'");
    try {
      setup (cam);
    } catch (...) {
      g_object_unref (cam);
      throw;
    }
    {
      std::lock_guard<std::mutex> l (mutex_);
      camera_ = cam;
    }
    link_.set_online ();
  }

  // The camera's pixel format, region, timing, then its stream.
  void setup (ArvCamera *cam)
  {
    const std::string who = "camera '" + s_.id + "'";
    vendor_ = arv_camera_get_vendor_name (cam, nullptr) ?: "";
    model_ = arv_camera_get_model_name (cam, nullptr) ?: "";
    setup_pixel_format (cam, who);
    setup_region (cam, who);
    setup_timing (cam, who);
    start_stream (cam, who);
  }

  // Pixel format: the one asked for, else the camera's current one if we
  // can convert it, else the first convertible one it offers.
  void setup_pixel_format (ArvCamera *cam, const std::string &who)
  {
    GError *error = nullptr;
    guint n = 0;
    const char **formats = arv_camera_dup_available_pixel_formats_as_strings (cam, &n, &error);
    check (error, ErrorKind::kDevice, who + ": pixel formats");
    std::vector<std::string> offered, usable;
    for (guint i = 0; i < n; i++) {
      offered.push_back (formats[i]);
      PixelLayout l;
      if (layout_of_genicam (formats[i], l))
        usable.push_back (formats[i]);
    }
    g_free (formats);
    auto list = [] (const std::vector<std::string> &v) {
      std::string s;
      for (auto &x : v)
        s += (s.empty () ? "" : ", ") + x;
      return s;
    };
    std::string format = s_.pixel_format;
    if (!format.empty ()) {
      PixelLayout l;
      if (!layout_of_genicam (format, l))
        throw Error (ErrorKind::kUnsupported, who + ": pixel_format=" + format
                                                  + " is not supported (supported: Mono8/10/12/16, "
                                                    "RGB8, BGR8, Bayer{RG,BG,GB,GR}{8,10,12,16})");
      if (std::find (offered.begin (), offered.end (), format) == offered.end ())
        throw Error (ErrorKind::kUnsupported,
                     who + " does not offer pixel_format=" + format + " (it offers: " + list (offered) + ")");
    } else {
      const char *cur = arv_camera_get_pixel_format_as_string (cam, nullptr);
      if (cur && std::find (usable.begin (), usable.end (), cur) != usable.end ())
        format = cur;
      else if (!usable.empty ())
        format = usable.front ();
      else
        throw Error (ErrorKind::kUnsupported,
                     who + " offers no pixel format LiveMicro converts (it offers: " + list (offered) + ")");
    }
    arv_camera_set_pixel_format_from_string (cam, format.c_str (), &error);
    check (error, ErrorKind::kDevice, who + ": setting pixel format " + format);
    layout_of_genicam (format, layout_);
    format_ = format;
  }

  // Binning and the region of interest, exactly as asked.
  void setup_region (ArvCamera *cam, const std::string &who)
  {
    GError *error = nullptr;
    if (s_.binning > 0) {
      arv_camera_set_binning (cam, s_.binning, s_.binning, &error);
      check (error, ErrorKind::kUnsupported, who + ": binning=" + std::to_string (s_.binning));
    }
    if (s_.has_roi) {
      gint w0, w1, h0, h1;
      arv_camera_get_width_bounds (cam, &w0, &w1, nullptr);
      arv_camera_get_height_bounds (cam, &h0, &h1, nullptr);
      gint sw = 0, sh = 0;
      arv_camera_get_sensor_size (cam, &sw, &sh, nullptr);
      const int *r = s_.roi;
      if (r[2] < w0 || r[2] > w1 || r[3] < h0 || r[3] > h1 || r[0] < 0 || r[1] < 0
          || (sw > 0 && r[0] + r[2] > sw) || (sh > 0 && r[1] + r[3] > sh))
        throw Error (ErrorKind::kOutOfRange,
                     who + ": roi=" + std::to_string (r[0]) + "," + std::to_string (r[1]) + ","
                         + std::to_string (r[2]) + "," + std::to_string (r[3]) + " does not fit the sensor ("
                         + std::to_string (sw) + "x" + std::to_string (sh) + ", width " + std::to_string (w0)
                         + "-" + std::to_string (w1) + ", height " + std::to_string (h0) + "-"
                         + std::to_string (h1) + ")");
      arv_camera_set_region (cam, r[0], r[1], r[2], r[3], &error);
      check (error, ErrorKind::kUnsupported, who + ": roi");
    }
    gint x, y, w, h;
    arv_camera_get_region (cam, &x, &y, &w, &h, &error);
    check (error, ErrorKind::kDevice, who + ": region");
    if (s_.has_roi && (w != s_.roi[2] || h != s_.roi[3]))
      throw Error (ErrorKind::kUnsupported, who + " rounded roi " + std::to_string (s_.roi[2]) + "x"
                                                + std::to_string (s_.roi[3]) + " to " + std::to_string (w)
                                                + "x" + std::to_string (h)
                                                + ": give a size the camera's increments allow");
    size_ = cv::Size (w, h);
  }

  // Exposure, gain and frame rate within the camera's bounds; the grab
  // timeout from the rate and exposure.
  void setup_timing (ArvCamera *cam, const std::string &who)
  {
    GError *error = nullptr;
    auto bounded = [&] (const char *key, double v, void (*get) (ArvCamera *, double *, double *, GError **),
                        void (*set) (ArvCamera *, double, GError **), const char *unit) {
      if (v < 0)
        return;
      double lo = 0, hi = 0;
      get (cam, &lo, &hi, &error);
      check (error, ErrorKind::kUnsupported, who + ": " + key + " is not available");
      if (v < lo || v > hi)
        throw Error (ErrorKind::kOutOfRange, who + ": " + key + "=" + num (v) + " is outside the camera's ["
                                                 + num (lo) + ", " + num (hi) + "]" + unit);
      set (cam, v, &error);
      check (error, ErrorKind::kDevice, who + ": setting " + key);
    };
    bounded ("exposure_us", s_.exposure_us, arv_camera_get_exposure_time_bounds, arv_camera_set_exposure_time,
             " µs");
    bounded ("gain", s_.gain, arv_camera_get_gain_bounds, arv_camera_set_gain, "");
    bounded ("frame_rate", s_.frame_rate, arv_camera_get_frame_rate_bounds, arv_camera_set_frame_rate,
             " frames/s");
    double fps
        = arv_camera_is_frame_rate_available (cam, nullptr) ? arv_camera_get_frame_rate (cam, nullptr) : 0.0;
    fps_ = std::isfinite (fps) && fps > 0 ? fps : 0.0;
    double exposure = arv_camera_is_exposure_time_available (cam, nullptr)
                          ? arv_camera_get_exposure_time (cam, nullptr)
                          : 0.0;
    timeout_ms_ = s_.timeout_ms > 0
                      ? s_.timeout_ms
                      : (int)std::max (2000.0, 3000.0 / std::max (fps_, 0.1) + exposure / 1000.0);
  }

  // Continuous acquisition into 8 buffers; a lost control link is noted.
  void start_stream (ArvCamera *cam, const std::string &who)
  {
    GError *error = nullptr;
    if (arv_camera_is_gv_device (cam)) {
      arv_camera_gv_auto_packet_size (cam,
                                      &error); // largest packet the path takes
      g_clear_error (&error);
    }
    arv_camera_set_acquisition_mode (cam, ARV_ACQUISITION_MODE_CONTINUOUS, &error);
    check (error, ErrorKind::kDevice, who + ": acquisition mode");
    ArvStream *stream = arv_camera_create_stream (cam, nullptr, nullptr, &error);
    check (error, ErrorKind::kDevice, who + ": stream");
    guint payload = arv_camera_get_payload (cam, nullptr);
    for (int i = 0; i < 8; i++)
      arv_stream_push_buffer (stream, arv_buffer_new (payload, nullptr));
    arv_camera_start_acquisition (cam, &error);
    if (error) {
      g_object_unref (stream);
      check (error, ErrorKind::kDevice, who + ": start acquisition");
    }
    lost_ = false;
    ArvDevice *dev = arv_camera_get_device (cam);
    g_signal_connect (dev, "control-lost",
                      G_CALLBACK (+[] (ArvDevice *, gpointer d) { static_cast<Impl *> (d)->lost_ = true; }),
                      this);
    stream_ = stream;
  }

  void close ()
  {
    ArvCamera *cam;
    ArvStream *stream;
    {
      std::lock_guard<std::mutex> l (mutex_);
      cam = camera_;
      stream = stream_;
      camera_ = nullptr;
      stream_ = nullptr;
    }
    if (cam) {
      g_signal_handlers_disconnect_by_data (arv_camera_get_device (cam), this);
      arv_camera_stop_acquisition (cam, nullptr);
    }
    if (stream)
      g_object_unref (stream);
    if (cam)
      g_object_unref (cam);
  }

  // The device went away: close it and reopen it in the background (closing
  // a vanished GigE camera waits for its control channel to time out; the
  // streaming thread must not).
  void lose (const std::string &why)
  {
    link_.lose (
        why, [this] { close (); }, [this] { connect (); });
  }

  FrameRecord grab (cv::Mat &rgb)
  {
    std::lock_guard<std::mutex> g (grab_mutex_);
    link_.check_online ();
    ArvStream *stream;
    {
      std::lock_guard<std::mutex> l (mutex_);
      stream = stream_;
    }
    ArvBuffer *newest = nullptr;
    gint64 deadline = g_get_monotonic_time () + (gint64)timeout_ms_ * 1000;
    while (!newest) {
      if (lost_) {
        lose ("control of the device was lost");
        link_.check_online ();
      }
      gint64 left = deadline - g_get_monotonic_time ();
      if (left <= 0) {
        lose ("no frame for " + std::to_string (timeout_ms_) + " ms (unplugged or powered off?)");
        link_.check_online ();
      }
      ArvBuffer *b = arv_stream_timeout_pop_buffer (stream, (guint64)std::min<gint64> (left, 100000));
      if (!b)
        continue;
      if (arv_buffer_get_status (b) == ARV_BUFFER_STATUS_SUCCESS)
        newest = b;
      else
        arv_stream_push_buffer (stream,
                                b); // incomplete frame: wait for the next
    }
    // Keep latency low: take the newest of what is queued.
    while (ArvBuffer *b = arv_stream_try_pop_buffer (stream)) {
      if (arv_buffer_get_status (b) == ARV_BUFFER_STATUS_SUCCESS) {
        arv_stream_push_buffer (stream, newest);
        newest = b;
      } else {
        arv_stream_push_buffer (stream, b);
      }
    }
    FrameRecord info;
    info.capture_unix_us = g_get_real_time ();
    info.frame_number = arv_buffer_get_frame_id (newest);
    size_t bytes = 0;
    const void *data = arv_buffer_get_data (newest, &bytes);
    int w = arv_buffer_get_image_width (newest), h = arv_buffer_get_image_height (newest);
    int type = layout_.kind == PixelLayout::kRGB || layout_.kind == PixelLayout::kBGR
                   ? CV_8UC3
                   : (layout_.bits > 8 ? CV_16UC1 : CV_8UC1);
    cv::Mat raw (h, w, type, const_cast<void *> (data));
    if (w != size_.width || h != size_.height || raw.total () * raw.elemSize () > bytes) {
      arv_stream_push_buffer (stream, newest);
      throw Error (ErrorKind::kDevice, "camera " + s_.uri + " sent a " + std::to_string (w) + "x"
                                           + std::to_string (h) + " frame, configured for "
                                           + std::to_string (size_.width) + "x"
                                           + std::to_string (size_.height));
    }
    if (rgb.size () != size_ || rgb.type () != CV_8UC3)
      rgb.create (size_, CV_8UC3);
    to_rgb (raw, layout_, s_.edge_aware, rgb);
    arv_stream_push_buffer (stream, newest);
    return info;
  }

  Settings s_;
  PixelLayout layout_;
  std::string format_, vendor_, model_;
  cv::Size size_;
  double fps_ = 0;
  int timeout_ms_ = 2000;

  DeviceLink link_;
  std::mutex mutex_; // camera_, stream_
  ArvCamera *camera_ = nullptr;
  ArvStream *stream_ = nullptr;
  std::atomic<bool> lost_{false};
  std::mutex grab_mutex_;
};

AravisCamera::AravisCamera (std::unique_ptr<Impl> impl) : impl_ (std::move (impl)) {}

AravisCamera::~AravisCamera () = default;

std::unique_ptr<AravisCamera>
AravisCamera::open (const MicroscopeUri &uri)
{
  uri.check_keys ({"pixel_format", "exposure_us", "gain", "frame_rate", "roi", "binning", "demosaic",
                   "interface", "timeout_ms", "reconnect_ms"});
  Settings s;
  s.uri = uri.text ();
  s.id = uri.host ();
  if (s.id.empty () && uri.path ().size () > 1)
    s.id = uri.path ().substr (1); // aravis:///Some%20Camera-123
  if (s.id.empty ())
    throw Error (ErrorKind::kUnsupported, "camera URI '" + uri.text ()
                                              + "' names no device: aravis://DEVICE-ID (e.g. "
                                                "aravis://Fake_1, aravis://192.168.1.20)");
  s.interface_name = uri.get_string ("interface", "");
  if (!s.interface_name.empty () && s.interface_name != "Fake" && s.interface_name != "GigEVision"
      && s.interface_name != "USB3Vision")
    throw Error (ErrorKind::kUnsupported, "camera URI '" + uri.text () + "': interface=" + s.interface_name
                                              + " is not one of Fake, GigEVision, USB3Vision");
  s.pixel_format = uri.get_string ("pixel_format", "");
  s.exposure_us = uri.get_double ("exposure_us", -1, 0, 1e8);
  s.gain = uri.get_double ("gain", -1, 0, 1000);
  s.frame_rate = uri.get_double ("frame_rate", -1, 0.01, 10000);
  s.binning = (int)uri.get_int ("binning", 0, 1, 16);
  s.timeout_ms = (int)uri.get_int ("timeout_ms", 0, 100, 600000);
  s.reconnect_ms = (int)uri.get_int ("reconnect_ms", 1000, 50, 600000);
  std::string demosaic = uri.get_string ("demosaic", "bilinear");
  if (demosaic != "bilinear" && demosaic != "edge")
    throw Error (ErrorKind::kUnsupported,
                 "camera URI '" + uri.text () + "': demosaic=" + demosaic + " is not one of bilinear, edge");
  s.edge_aware = demosaic == "edge";
  if (uri.has ("roi")) {
    std::string r = uri.get_string ("roi", "");
    int n = 0;
    char tail = 0;
    if (std::sscanf (r.c_str (), "%d,%d,%d,%d%n%c", &s.roi[0], &s.roi[1], &s.roi[2], &s.roi[3], &n, &tail)
            != 4
        || s.roi[2] <= 0 || s.roi[3] <= 0)
      throw Error (ErrorKind::kOutOfRange,
                   "camera URI '" + uri.text () + "': roi=" + r + " is not X,Y,WIDTH,HEIGHT in pixels");
    s.has_roi = true;
  }
  auto impl = std::make_unique<Impl> (s);
  impl->connect ();
  return std::unique_ptr<AravisCamera> (new AravisCamera (std::move (impl)));
}

cv::Size
AravisCamera::min_size () const
{
  return impl_->size_;
}

cv::Size
AravisCamera::max_size () const
{
  return impl_->size_;
}

void
AravisCamera::configure (cv::Size size)
{
  if (size != impl_->size_)
    throw Error (ErrorKind::kUnsupported,
                 "camera " + impl_->s_.uri + " delivers only " + std::to_string (impl_->size_.width) + "x"
                     + std::to_string (impl_->size_.height) + " frames, not " + std::to_string (size.width)
                     + "x" + std::to_string (size.height)
                     + " (roi= in the camera URI chooses the region; scale "
                       "downstream with videoscale)");
}

FrameRecord
AravisCamera::grab (cv::Mat &rgb)
{
  return impl_->grab (rgb);
}

double
AravisCamera::frame_rate () const
{
  return impl_->fps_;
}

std::string
AravisCamera::description () const
{
  return "GenICam camera " + impl_->vendor_ + " " + impl_->model_ + " (" + impl_->s_.id + "), "
         + std::to_string (impl_->size_.width) + "x" + std::to_string (impl_->size_.height) + " "
         + impl_->format_;
}

DeviceStatus
AravisCamera::status () const
{
  return impl_->link_.status ();
}

} // namespace livemicro::hw::camera
