// A slide the virtual microscope looks at: anything that can render a region
// of itself at a given µm per pixel.
#pragma once

#include <opencv2/core.hpp>

#include <string>

namespace livemicro::hw::sim {

class Slide {
public:
  virtual ~Slide () = default;
  virtual std::string description () const = 0;
  virtual cv::Size2d size_um () const = 0;
  // The finest µm/px the slide holds real detail for.
  virtual double native_um_per_px () const = 0;
  // Where a session starts looking (e.g. the centre of the tissue).
  virtual cv::Point2d home_um () const { return {size_um ().width / 2, size_um ().height / 2}; }
  // Renders pixels region_px of the slide sampled at um_per_px into out_rgb
  // (CV_8UC3, RGB, region_px.size()).  Pixel (i, j) covers slide µm
  // [i·upp, (i+1)·upp) × [j·upp, (j+1)·upp).  Parts off the slide show the
  // empty light path.  Must be safe to call from several threads.
  virtual void render (double um_per_px, const cv::Rect &region_px, cv::Mat &out_rgb) const = 0;
};

// The colour of the light path where there is no slide.
inline const cv::Vec3b kNoSlideRgb (250, 250, 250);

} // namespace livemicro::hw::sim
