// Raw camera pixels → RGB (8 bit, 3 channels) for microscopesrc: mono,
// RGB/BGR and Bayer mosaics (demosaicing), 8 or 10/12/16 bits in 16-bit
// containers.  Plain functions over cv::Mat, shared by the Aravis and V4L2
// backends and unit-tested on synthetic mosaics.
#pragma once

#include <opencv2/core.hpp>

#include <string>

namespace livemicro::hw::camera {

// The colour filter of the sensor's top-left 2x2 block, named as GenICam
// and V4L2 do: RG = R G / G B.
enum class Bayer { kNone, kRG, kBG, kGB, kGR };

struct PixelLayout {
  enum Kind { kMono, kRGB, kBGR, kBayer } kind = kMono;
  Bayer bayer = Bayer::kNone;
  int bits = 8; // significant bits per sample (8, 10, 12, 16)
};

// GenICam PixelFormat names (Mono8, Mono10/12/16, RGB8, BGR8, RGB8Packed,
// BGR8Packed, BayerRG8 … BayerGR16).  False for anything else (packed 10/12
// bit formats, YUV …).
bool layout_of_genicam (const std::string &name, PixelLayout &out);

// Converts one frame.  `raw` is CV_8UC1 / CV_16UC1 (mono, Bayer) or CV_8UC3
// (RGB/BGR) of the frame size.  Demosaicing is bilinear, or edge-aware.
void to_rgb (const cv::Mat &raw, const PixelLayout &layout, bool edge_aware, cv::Mat &rgb);

} // namespace livemicro::hw::camera
