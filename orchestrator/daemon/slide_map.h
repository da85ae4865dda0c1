// The slide map a viewer may see: the worker's overview (its macro image
// and the frames captured so far, unmasked) with what the viewer's profile
// masks filled on the server, so no masked pixel ever leaves the daemon.
// Plain C++ over OpenCV; PNG through livemicro/hw/image_codec.h.
#pragma once

#include "common/worker_protocol.h"

#include <opencv2/core.hpp>

#include <optional>
#include <string>
#include <vector>

namespace livemicro::orchestrator {

// The latest overview of a microscope, decoded once.
struct SlideMapImage {
  SlideOverview geometry; // png_base64 cleared
  cv::Mat rgb;
  int64_t updated_unix_us = 0;
};
// Decodes the worker's overview; nothing when its PNG does not decode or
// disagrees with its stated size.
std::optional<SlideMapImage> decode_overview (const SlideOverview &o, int64_t now_unix_us);

// The map as a PNG for a viewer: every pixel that touches a polygon of
// `masked_um` (slide µm) filled with the mask colour, and, when `coarse`,
// first reduced to at most `kCoarseUmPerPx` µm per pixel, where no print
// can be read (for profiles that mask print found anywhere on the slide:
// the map holds frames no detector saw).
constexpr double kCoarseUmPerPx = 500.0;
std::vector<unsigned char> masked_png (const SlideMapImage &map,
                                       const std::vector<std::vector<cv::Point2d>> &masked_um, bool coarse);

} // namespace livemicro::orchestrator
