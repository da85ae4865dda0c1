// Small H.264 Annex-B helpers: NAL unit scanning and the LiveMicro capture
// time carried in an SEI "user data unregistered" message, so that any
// client (rtspsrc, a browser, ffprobe) can measure glass-to-glass latency.
#pragma once

#include <livemicro/hw/frame_record.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace livemicro::orchestrator::h264 {

enum NalType : uint8_t {
  kSlice = 1,
  kIdr = 5,
  kSei = 6,
  kSps = 7,
  kPps = 8,
  kAud = 9,
};

struct Nal {
  size_t start = 0;   // offset of the start code
  size_t payload = 0; // offset of the NAL header byte
  size_t end = 0;     // one past the last byte
  uint8_t type = 0;
};

// NAL units of an Annex-B access unit, in order.
std::vector<Nal> nal_units (const uint8_t *au, size_t len);
bool has_nal (const uint8_t *au, size_t len, uint8_t type);

// Returns `au` with an SEI NAL carrying the frame's record inserted before
// the first slice (SEI user data unregistered): message 1 (UUID
// "livemicro-capt.1") the capture time as a big-endian int64 of µs since
// the epoch; message 2 (UUID "livemicro-stag.1") x, y, z, µm/px as
// big-endian IEEE doubles, the objective as uint32, a flags uint32 (bit 0:
// moving), then the frame number as uint64 and the frame width and height
// as uint32 (a reader of the first 40 bytes alone still works).
std::vector<uint8_t> with_frame_record (const uint8_t *au, size_t len, const hw::FrameRecord &record);
std::vector<uint8_t> with_capture_time (const uint8_t *au, size_t len, int64_t capture_unix_us);
// The capture time / frame record of an access unit that carries the SEI.
std::optional<int64_t> capture_time (const uint8_t *au, size_t len);
std::optional<hw::FrameRecord> frame_record (const uint8_t *au, size_t len);

// The SPS and PPS NAL units (with start codes) found in `au`, if any.
std::vector<uint8_t> parameter_sets (const uint8_t *au, size_t len);
// `au` with `parameter_sets` (Annex-B SPS/PPS) in front of its NAL units,
// after its access unit delimiter if it starts with one (an AUD must come
// first: a parser such as ffmpeg's starts a new access unit at a
// delimiter or parameter set found later, and the frame loses its time).
std::vector<uint8_t> with_parameter_sets (const uint8_t *au, size_t len,
                                          const std::vector<uint8_t> &parameter_sets);

} // namespace livemicro::orchestrator::h264
