#include "sim_microscope.h"

#include "noise.h"

#include <livemicro/hw/text.h>
#include <glib.h>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <sstream>

namespace livemicro::hw::sim {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int kNoiseMargin = 97; // distinct noise offsets per axis
constexpr int kMaxFrameSide = 8192;

std::string
range_text (const AxisLimits &l)
{
  return "[" + num (l.min_um) + ", " + num (l.max_um) + "] µm";
}

// Straight-line motion at constant speed from `from` to `to`, in one or two
// axes (a focus drive uses only the first; the second stays 0).
struct Motion {
  static constexpr int axes = 2;
  double from[2] = {0, 0};
  double to[2] = {0, 0};
  int64_t t0_us = 0;
  double speed = 1; // µm/s

  double length () const
  {
    double d = 0;
    for (int k = 0; k < axes; k++)
      d += (to[k] - from[k]) * (to[k] - from[k]);
    return std::sqrt (d);
  }
  // Position at t; returns true while still moving.
  bool at (int64_t t_us, double *pos) const
  {
    double len = length ();
    double travelled = speed * double (t_us - t0_us) / 1e6;
    if (len <= 1e-9 || travelled >= len) {
      for (int k = 0; k < axes; k++)
        pos[k] = to[k];
      return false;
    }
    double f = travelled < 0 ? 0 : travelled / len;
    for (int k = 0; k < axes; k++)
      pos[k] = from[k] + (to[k] - from[k]) * f;
    return true;
  }
  void start (int64_t now, const double *target)
  {
    double cur[2] = {0, 0};
    at (now, cur);
    for (int k = 0; k < axes; k++) {
      from[k] = cur[k];
      to[k] = target[k];
    }
    t0_us = now;
  }
  void halt (int64_t now)
  {
    double cur[2] = {0, 0};
    at (now, cur);
    for (int k = 0; k < axes; k++)
      from[k] = to[k] = cur[k];
    t0_us = now;
  }
};

} // namespace

class SimMicroscope::Parts : public Stage, public ObjectiveTurret, public Camera {
public:
  Parts (const Slide &slide, const SimOptions &o)
      : slide_ (slide), options_ (o), cache_ (slide, o.tile_px, o.cache_bytes),
        clock_ ([] { return g_get_monotonic_time (); })
  {
    cache_.set_prefetch (o.prefetch);
    // Plan achromats with their typical working distances.
    static const struct {
      int mag;
      double na, wd_um;
    } kObjectives[] = {{4, 0.10, 17000}, {10, 0.25, 7000}, {20, 0.40, 2100}, {40, 0.65, 600}};
    for (const auto &k : kObjectives)
      objectives_.push_back ({k.mag, k.na, o.pixel_pitch_um / (k.mag * o.adapter_magnification), k.wd_um});
    objective_ = objectives_[1];
    xy_.speed = o.stage_speed_um_per_s;
    z_.speed = o.focus_speed_um_per_s;
    cv::Size2d s = slide.size_um ();
    x_limits_ = {0.0, s.width};
    y_limits_ = {0.0, s.height};
    z_limits_ = {0.0, 2000.0};

    // The focal surface: ~1000 µm, tilted by up to ~0.35 µm/mm, curved, and
    // rippled by a micrometre, all fixed by the seed.
    Rng rng (mix64 (o.seed ^ 0xF0C05ULL));
    focus_.centre_x = s.width / 2;
    focus_.centre_y = s.height / 2;
    focus_.tilt_x = rng.uniform (0.15, 0.35) * (rng.uniform () < 0.5 ? -1 : 1) / 1000;
    focus_.tilt_y = rng.uniform (0.05, 0.25) * (rng.uniform () < 0.5 ? -1 : 1) / 1000;
    focus_.curvature = rng.uniform (0.004, 0.010) / 1e6;
    focus_.ripple = rng.uniform (0.6, 1.2);
    focus_.phase_x = rng.uniform (0, 2 * kPi);
    focus_.phase_y = rng.uniform (0, 2 * kPi);
    noise_seed_ = mix64 (o.seed ^ 0x5E550ULL);
    configure (cv::Size (1920, 1080));
  }

  // --- Stage
  AxisLimits x_limits () const override { return x_limits_; }
  AxisLimits y_limits () const override { return y_limits_; }
  double speed_um_per_s () const override
  {
    std::lock_guard<std::mutex> l (mutex_);
    return xy_.speed;
  }
  void set_speed_um_per_s (double speed) override
  {
    if (!(speed > 0 && speed <= 100000))
      throw Error (ErrorKind::kOutOfRange,
                   "stage speed " + num (speed) + " µm/s is outside (0, 100000] µm/s");
    std::lock_guard<std::mutex> l (mutex_);
    int64_t now = clock_ ();
    double target[2] = {xy_.to[0], xy_.to[1]};
    xy_.start (now, target);
    xy_.speed = speed;
  }
  void move_to (double x_um, double y_um) override
  {
    if (!std::isfinite (x_um) || !x_limits_.contains (x_um))
      throw Error (ErrorKind::kOutOfRange,
                   "stage x " + num (x_um) + " µm is outside the travel range " + range_text (x_limits_));
    if (!std::isfinite (y_um) || !y_limits_.contains (y_um))
      throw Error (ErrorKind::kOutOfRange,
                   "stage y " + num (y_um) + " µm is outside the travel range " + range_text (y_limits_));
    std::lock_guard<std::mutex> l (mutex_);
    double target[2] = {x_um, y_um};
    xy_.start (clock_ (), target);
  }
  void stop () override
  {
    std::lock_guard<std::mutex> l (mutex_);
    xy_.halt (clock_ ());
  }
  StageState state () const override
  {
    std::lock_guard<std::mutex> l (mutex_);
    return stage_state_locked (clock_ ());
  }
  StageState stage_state_locked (int64_t now) const
  {
    StageState s;
    double pos[2] = {0, 0};
    s.moving = xy_.at (now, pos);
    s.x_um = pos[0];
    s.y_um = pos[1];
    s.target_x_um = xy_.to[0];
    s.target_y_um = xy_.to[1];
    return s;
  }

  // --- FocusDrive (its names clash with Stage's: see FocusAdapter)
  FocusState focus_state_locked (int64_t now) const
  {
    FocusState s;
    double z[2] = {0, 0};
    s.moving = z_.at (now, z);
    s.z_um = z[0];
    s.target_z_um = z_.to[0];
    return s;
  }
  void focus_move_to (double z_um)
  {
    if (!std::isfinite (z_um) || !z_limits_.contains (z_um))
      throw Error (ErrorKind::kOutOfRange,
                   "focus z " + num (z_um) + " µm is outside the focus range " + range_text (z_limits_));
    std::lock_guard<std::mutex> l (mutex_);
    double target[2] = {z_um, 0};
    z_.start (clock_ (), target);
  }

  // --- ObjectiveTurret
  std::vector<Objective> objectives () const override { return objectives_; }
  void select (int magnification) override
  {
    for (const auto &o : objectives_)
      if (o.magnification == magnification) {
        std::lock_guard<std::mutex> l (mutex_);
        objective_ = o;
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
    return objective_;
  }

  // --- Camera
  cv::Size min_size () const override { return {16, 16}; }
  cv::Size max_size () const override { return {kMaxFrameSide, kMaxFrameSide}; }
  void configure (cv::Size size) override
  {
    if (size.width < 16 || size.height < 16 || size.width > kMaxFrameSide || size.height > kMaxFrameSide)
      throw Error (ErrorKind::kUnsupported, "frame size " + std::to_string (size.width) + "x"
                                                + std::to_string (size.height) + " is outside 16x16 to "
                                                + std::to_string (kMaxFrameSide) + "x"
                                                + std::to_string (kMaxFrameSide));
    std::lock_guard<std::mutex> l (camera_mutex_);
    frame_size_ = size;
  }

  // The exposure tables for the frame size, built by the first frame of that
  // size rather than at each configure: a microscope opens at 1920x1080 and
  // is usually configured to the stream's size before its first frame.
  void prepare_exposure (cv::Size size)
  {
    if (size == exposure_size_)
      return;
    exposure_size_ = size;
    // Illumination gain per pixel and channel (×64 fixed point, so a lamp up
    // to ~4x nominal fits in 8 bits), and the seeded noise bank split into
    // its positive and negative parts: frame += pos, frame −= neg is exact
    // with saturation because at most one of them is non-zero per sample.
    // The gain is dithered so its 1/64 steps do not show as rings.
    gain_.create (size, CV_8UC3);
    double cx = size.width / 2.0, cy = size.height / 2.0;
    double r2max = cx * cx + cy * cy;
    Rng dither (noise_seed_ ^ 0xD17E5ULL);
    for (int j = 0; j < size.height; j++) {
      cv::Vec3b *row = gain_.ptr<cv::Vec3b> (j);
      for (int i = 0; i < size.width; i++) {
        double dx = i + 0.5 - cx, dy = j + 0.5 - cy;
        double g = options_.brightness * (1.0 - options_.vignetting * (dx * dx + dy * dy) / r2max);
        for (int c = 0; c < 3; c++)
          row[i][c] = cv::saturate_cast<uchar> (std::floor (g * 64 + dither.uniform ()));
      }
    }
    unit_gain_ = options_.brightness == 1.0 && options_.vignetting == 0.0;
    cv::Mat noise (size.height + kNoiseMargin, size.width + kNoiseMargin, CV_32FC3);
    cv::RNG rng (noise_seed_);
    rng.fill (noise, cv::RNG::NORMAL, 0, options_.noise_sigma);
    noise.convertTo (noise_pos_, CV_8UC3); // saturates negatives to 0
    cv::Mat neg = -noise;
    neg.convertTo (noise_neg_, CV_8UC3);
  }

  FrameRecord grab (cv::Mat &rgb) override
  {
    std::lock_guard<std::mutex> cam (camera_mutex_);
    FrameRecord info;
    Objective obj;
    StageState st;
    FocusState fs;
    {
      std::lock_guard<std::mutex> l (mutex_);
      int64_t now = clock_ ();
      st = stage_state_locked (now);
      fs = focus_state_locked (now);
      obj = objective_;
    }
    info.capture_unix_us = g_get_real_time ();
    const cv::Size size = frame_size_;
    prepare_exposure (size);
    rgb.create (size, CV_8UC3);
    const double upp = obj.um_per_px;
    // The frame's pixel grid is the slide's grid at this scale; the reported
    // position is the exact slide point at the frame centre.
    int64_t x0 = std::llround (st.x_um / upp - size.width / 2.0);
    int64_t y0 = std::llround (st.y_um / upp - size.height / 2.0);
    const cv::Rect view ((int)x0, (int)y0, size.width, size.height);
    cache_.read (upp, view, rgb);
    if (options_.prefetch) {
      // Still: the ring of tiles around the view.  Moving: the tiles ahead,
      // those about to come into view first.
      const int t = cache_.tile_px ();
      cv::Point centre = (view.tl () + view.br ()) / 2;
      cv::Rect ahead (view.x - t, view.y - t, view.width + 2 * t, view.height + 2 * t);
      if (st.moving) {
        double dx = st.target_x_um - st.x_um, dy = st.target_y_um - st.y_um;
        double len = std::hypot (dx, dy);
        int sx = std::abs (dx) > 0.2 * len ? (dx > 0 ? 1 : -1) : 0;
        int sy = std::abs (dy) > 0.2 * len ? (dy > 0 ? 1 : -1) : 0;
        ahead = view;
        if (sx)
          ahead |= view + cv::Point (sx * 3 * t, 0);
        if (sy)
          ahead |= view + cv::Point (0, sy * 3 * t);
        centre += cv::Point (sx * (view.width / 2 + t), sy * (view.height / 2 + t));
      }
      cache_.prefetch (upp, ahead, centre);
    }
    info.stage_x_um = (x0 + size.width / 2.0) * upp;
    info.stage_y_um = (y0 + size.height / 2.0) * upp;
    info.stage_z_um = fs.z_um;
    info.objective = obj.magnification;
    info.um_per_px = upp;
    info.moving = st.moving || fs.moving;
    info.frame_number = frame_number_++;

    double dz = fs.z_um - focus_at (info.stage_x_um, info.stage_y_um);
    defocus (rgb, defocus_sigma_px (dz, obj));
    expose (rgb, info.frame_number);
    return info;
  }

  double focus_at (double x, double y) const
  {
    double dx = x - focus_.centre_x, dy = y - focus_.centre_y;
    return 1000.0 + focus_.tilt_x * dx + focus_.tilt_y * dy + focus_.curvature * (dx * dx + dy * dy)
           + focus_.ripple * std::sin (x / 7000.0 + focus_.phase_x) * std::cos (y / 5000.0 + focus_.phase_y);
  }

  void defocus (cv::Mat &rgb, double sigma)
  {
    if (sigma < 0.2)
      return; // below what 8-bit pixels can show
    if (sigma <= 2.0) {
      int k = std::max (3, 2 * (int)std::ceil (3 * sigma) + 1);
      cv::GaussianBlur (rgb, rgb, cv::Size (k, k), sigma, sigma, cv::BORDER_REFLECT);
      return;
    }
    // Large blur: area-downsample, blur the rest, upsample.  Downsampling by k
    // and linear upsampling blur by ≈ 0.5·k px themselves.
    int k = std::max (2, (int)(sigma / 2.0));
    double residual = std::sqrt (std::max (0.25, sigma * sigma - 0.25 * k * k)) / k;
    cv::resize (rgb, small_, cv::Size (std::max (1, rgb.cols / k), std::max (1, rgb.rows / k)), 0, 0,
                cv::INTER_AREA);
    cv::GaussianBlur (small_, small_, cv::Size (), residual, residual, cv::BORDER_REFLECT);
    cv::resize (small_, rgb, rgb.size (), 0, 0, cv::INTER_LINEAR);
  }

  // Illumination and sensor noise, as whole-frame saturating operations.
  void expose (cv::Mat &rgb, uint64_t frame_number)
  {
    if (!unit_gain_)
      cv::multiply (rgb, gain_, rgb, 1.0 / 64);
    if (options_.noise_sigma <= 0)
      return;
    uint64_t h = hash3 (noise_seed_, (int64_t)frame_number, 0);
    cv::Rect window ((int)(h % kNoiseMargin), (int)((h >> 32) % kNoiseMargin), rgb.cols, rgb.rows);
    cv::add (rgb, noise_pos_ (window), rgb);
    cv::subtract (rgb, noise_neg_ (window), rgb);
  }

  MicroscopeState snapshot () const
  {
    MicroscopeState s;
    std::lock_guard<std::mutex> l (mutex_);
    int64_t now = clock_ ();
    s.stage = stage_state_locked (now);
    s.focus = focus_state_locked (now);
    s.objective = objective_;
    s.x_limits = x_limits_;
    s.y_limits = y_limits_;
    s.z_limits = z_limits_;
    s.focal_plane_z_um = 1000.0;
    return s;
  }

  // Places stage and focus at once (no travel), e.g. when a session starts.
  void place (double x, double y, double z)
  {
    std::lock_guard<std::mutex> l (mutex_);
    int64_t now = clock_ ();
    xy_.from[0] = xy_.to[0] = x;
    xy_.from[1] = xy_.to[1] = y;
    xy_.t0_us = now;
    z_.from[0] = z_.to[0] = z;
    z_.t0_us = now;
  }

  const Slide &slide_;
  SimOptions options_;
  TileCache cache_;
  mutable std::mutex mutex_; // motion state and objective
  MonotonicClock clock_;
  Motion xy_, z_;
  Objective objective_;
  std::vector<Objective> objectives_;
  AxisLimits x_limits_, y_limits_, z_limits_;
  struct {
    double centre_x, centre_y, tilt_x, tilt_y, curvature, ripple, phase_x, phase_y;
  } focus_;
  uint64_t noise_seed_ = 0;

  std::mutex camera_mutex_; // frame size, buffers, frame counter
  cv::Size frame_size_, exposure_size_;
  cv::Mat gain_, noise_pos_, noise_neg_, small_;
  bool unit_gain_ = false;
  uint64_t frame_number_ = 0;

  // FocusDrive as a separate interface object (its names clash with Stage).
  class FocusAdapter : public FocusDrive {
  public:
    explicit FocusAdapter (Parts &p) : p_ (p) {}
    AxisLimits z_limits () const override { return p_.z_limits_; }
    double speed_um_per_s () const override
    {
      std::lock_guard<std::mutex> l (p_.mutex_);
      return p_.z_.speed;
    }
    void set_speed_um_per_s (double speed) override
    {
      if (!(speed > 0 && speed <= 10000))
        throw Error (ErrorKind::kOutOfRange,
                     "focus speed " + num (speed) + " µm/s is outside (0, 10000] µm/s");
      std::lock_guard<std::mutex> l (p_.mutex_);
      double target[2] = {p_.z_.to[0], 0};
      p_.z_.start (p_.clock_ (), target);
      p_.z_.speed = speed;
    }
    void move_to (double z_um) override { p_.focus_move_to (z_um); }
    void stop () override
    {
      std::lock_guard<std::mutex> l (p_.mutex_);
      p_.z_.halt (p_.clock_ ());
    }
    FocusState state () const override
    {
      std::lock_guard<std::mutex> l (p_.mutex_);
      return p_.focus_state_locked (p_.clock_ ());
    }

  private:
    Parts &p_;
  };
  FocusAdapter focus_adapter_{*this};
};

SimMicroscope::SimMicroscope (std::string uri, std::unique_ptr<Slide> slide, const SimOptions &options)
    : uri_ (std::move (uri)), slide_ (std::move (slide)), parts_ (std::make_unique<Parts> (*slide_, options))
{
  home ();
}

SimMicroscope::~SimMicroscope () = default;

std::string
SimMicroscope::description () const
{
  return "virtual microscope over " + slide_->description ();
}

Camera &
SimMicroscope::camera ()
{
  return *parts_;
}

Stage &
SimMicroscope::stage ()
{
  return *parts_;
}

FocusDrive &
SimMicroscope::focus ()
{
  return parts_->focus_adapter_;
}

ObjectiveTurret &
SimMicroscope::turret ()
{
  return *parts_;
}

MicroscopeState
SimMicroscope::state () const
{
  return parts_->snapshot ();
}

void
SimMicroscope::home ()
{
  cv::Point2d h = slide_->home_um ();
  parts_->place (h.x, h.y, parts_->focus_at (h.x, h.y));
}

std::optional<SlideOverview>
SimMicroscope::overview (int max_side_px) const
{
  const cv::Size2d size = slide_->size_um ();
  const double upp = std::max (size.width, size.height) / std::max (16, max_side_px);
  SlideOverview o;
  o.area_um = cv::Rect2d (0, 0, size.width, size.height);
  slide_->render (upp, cv::Rect (0, 0, (int)std::ceil (size.width / upp), (int)std::ceil (size.height / upp)),
                  o.rgb);
  return o;
}

double
SimMicroscope::focus_at (double x_um, double y_um) const
{
  return parts_->focus_at (x_um, y_um);
}

double
SimMicroscope::defocus_sigma_px (double dz_um, const Objective &o)
{
  double half_angle = std::asin (std::min (0.95, o.numerical_aperture));
  return 0.5 * std::abs (dz_um) * std::tan (half_angle) / o.um_per_px;
}

TileCache::Stats
SimMicroscope::cache_stats () const
{
  return parts_->cache_.stats ();
}

void
SimMicroscope::set_clock (MonotonicClock clock)
{
  std::lock_guard<std::mutex> l (parts_->mutex_);
  // Keep positions continuous across the switch: restart motions at the new
  // clock's "now" from where they are.
  int64_t old_now = parts_->clock_ ();
  int64_t new_now = clock ();
  parts_->xy_.t0_us += new_now - old_now;
  parts_->z_.t0_us += new_now - old_now;
  parts_->clock_ = std::move (clock);
}

} // namespace livemicro::hw::sim
