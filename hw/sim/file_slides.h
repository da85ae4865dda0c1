// Slides from files: whole-slide images through OpenSlide, plain images
// (PNG, JPEG, TIFF) through libpng, libjpeg and libtiff
// (livemicro/hw/image_codec.h).
#pragma once

#include "slide.h"

#include <memory>
#include <string>

namespace livemicro::hw::sim {

// Opens `path` as a slide.  mpp_override > 0 sets µm/px; otherwise it comes
// from the slide (openslide.mpp-x, or the TIFF resolution tags).  Throws
// Error naming the path: kNotFound, kCorrupt (unreadable, truncated, no
// µm/px) or kUnsupported.
std::unique_ptr<Slide> open_slide_file (const std::string &path, double mpp_override);

} // namespace livemicro::hw::sim
