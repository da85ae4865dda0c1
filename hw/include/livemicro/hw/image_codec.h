// PNG, JPEG and TIFF to and from RGB cv::Mat, straight over libpng, libjpeg
// and libtiff.  Not OpenCV's imgcodecs: on Debian 12 that module brings ~139
// shared libraries (GDAL, GDCM, OpenEXR, ...) and ~200 ms in the dynamic
// loader into every process that links it, and a killed media worker must be
// back within 1 s.  libpng, libjpeg and libtiff are loaded through OpenSlide
// anyway.
//
// Decoding behaves like cv::imread (IMREAD_COLOR) but gives RGB: grey is
// expanded to RGB, alpha is dropped (TIFF: as libtiff's RGBA reader gives
// it), a palette is expanded, 16-bit samples become 8-bit (PNG: their high
// byte, as imread).  No EXIF orientation, colour profile or gamma is
// applied.  Bad input never crashes and prints nothing: it gives an error.
#pragma once

#include <opencv2/core.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace livemicro::hw {

enum class ImageFormat { kUnknown, kPng, kJpeg, kTiff };

// The format the first bytes of a file say (its magic bytes, never its
// name); kUnknown when they say none of these.
ImageFormat image_format_of (const uint8_t *head, size_t size);

// Decoded pixels, or why there are none.
struct DecodedImage {
  ImageFormat format = ImageFormat::kUnknown; // what the magic bytes said
  cv::Mat rgb;                                // CV_8UC3, R G B in this byte order; empty on error
  std::string error; // a sentence naming the format and the library's reason; empty on success
};

// A JPEG that libjpeg decodes only by getting past corrupt or missing data
// (it ends early, a bad Huffman code, ...; the pixels after it are grey or
// smeared): an error (decoding stops there), or the pixels anyway.
enum class DamagedJpeg { kRefuse, kAccept };

// What a caller of a decode from memory knows beforehand.
struct DecodeOptions {
  DamagedJpeg damaged_jpeg = DamagedJpeg::kRefuse;
  // When not empty, an image whose header states another size is refused
  // before it is decoded (a camera frame, a map of a stated size): a few
  // bytes cannot make it decode a bogus 60000x8000 picture.
  cv::Size expected_size;
};

// Images larger than this (per side or in total, as OpenCV's own limits)
// are refused before any pixel memory is allocated.
constexpr int kMaxImageSidePx = 1 << 20;
constexpr int64_t kMaxImagePixels = int64_t (1) << 30;

// A PNG, JPEG or TIFF file (TIFF: any that libtiff reads, first image).
DecodedImage decode_image_file (const std::string &path);
// A PNG or JPEG in memory.
DecodedImage decode_image (const uint8_t *data, size_t size, const DecodeOptions &options = {});
// A PNG in memory; anything else is an error.
DecodedImage decode_png (const uint8_t *data, size_t size, cv::Size expected_size = {});

// `rgb` (CV_8UC3, R G B) as a PNG, made for speed as cv::imencode makes it
// (the SUB filter, zlib's run-length matching, with which the level changes
// little): a 1000x600 slide map in ~20-25 ms on a 2 GHz core, the same size.
// Empty when rgb is not CV_8UC3 or empty, or memory runs out.
std::vector<uint8_t> encode_png (const cv::Mat &rgb, int compression_level = 3);

} // namespace livemicro::hw
