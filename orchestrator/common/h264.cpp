// NAL scanning and SEI parsing through GStreamer's H.264 codecparsers
// (start codes, emulation prevention and SEI syntax are theirs); this file
// knows LiveMicro's two user-data payloads and writes them.
#include "h264.h"

#define GST_USE_UNSTABLE_API // codecparsers: stable in practice since 1.0
#include <gst/codecparsers/gsth264parser.h>

#include <algorithm>
#include <cstring>
#include <memory>

namespace livemicro::orchestrator::h264 {

namespace {

// 16-byte UUIDs identifying LiveMicro's SEI "user data unregistered" payloads.
const uint8_t kCaptureUuid[16] = {0x6c, 0x69, 0x76, 0x65, 0x6d, 0x69, 0x63, 0x72,
                                  0x6f, 0x2d, 0x63, 0x61, 0x70, 0x74, 0x2e, 0x31}; // "livemicro-capt.1"
const uint8_t kStageUuid[16] = {0x6c, 0x69, 0x76, 0x65, 0x6d, 0x69, 0x63, 0x72,
                                0x6f, 0x2d, 0x73, 0x74, 0x61, 0x67, 0x2e, 0x31}; // "livemicro-stag.1"
constexpr size_t kCaptureBytes = 8;                                              // int64 µs
constexpr size_t kStageBytes = 4 * 8 + 4 + 4;             // x, y, z, µm/px; objective; flags
constexpr size_t kStageBytesV2 = kStageBytes + 8 + 4 + 4; // then frame number, width, height

struct ParserFree {
  void operator() (GstH264NalParser *p) const { gst_h264_nal_parser_free (p); }
};

// One parser per thread: identifying NAL units and reading SEI keep no
// state this file relies on, and a parser is large (every SPS/PPS slot).
GstH264NalParser *
parser ()
{
  thread_local std::unique_ptr<GstH264NalParser, ParserFree> p (gst_h264_nal_parser_new ());
  return p.get ();
}

void
put_be (std::vector<uint8_t> &out, uint64_t v, int bytes)
{
  for (int k = bytes - 1; k >= 0; k--)
    out.push_back ((uint8_t)(v >> (8 * k)));
}

uint64_t
get_be (const uint8_t *p, int bytes)
{
  uint64_t v = 0;
  for (int k = 0; k < bytes; k++)
    v = (v << 8) | p[k];
  return v;
}

uint64_t
double_bits (double d)
{
  uint64_t u;
  std::memcpy (&u, &d, sizeof u);
  return u;
}

double
bits_double (uint64_t u)
{
  double d;
  std::memcpy (&d, &u, sizeof d);
  return d;
}

// RBSP → EBSP: insert 0x03 after two zeros when the next byte is <= 3.
void
append_escaped (std::vector<uint8_t> &out, const std::vector<uint8_t> &rbsp)
{
  int zeros = 0;
  for (uint8_t b : rbsp) {
    if (zeros == 2 && b <= 3) {
      out.push_back (0x03);
      zeros = 0;
    }
    out.push_back (b);
    zeros = b == 0 ? zeros + 1 : 0;
  }
}

// The Annex-B SEI NAL (4-byte start code) carrying `info` as two "user data
// unregistered" messages.  Written here: codecparsers' SEI writer
// (gst_h264_create_sei_memory) has no user-data-unregistered case, in 1.22
// or later.
std::vector<uint8_t>
sei_nal (const hw::FrameRecord &info)
{
  std::vector<uint8_t> rbsp;
  rbsp.push_back (GST_H264_SEI_USER_DATA_UNREGISTERED);
  rbsp.push_back (16 + kCaptureBytes);
  rbsp.insert (rbsp.end (), kCaptureUuid, kCaptureUuid + 16);
  put_be (rbsp, (uint64_t)info.capture_unix_us, 8);
  rbsp.push_back (GST_H264_SEI_USER_DATA_UNREGISTERED);
  rbsp.push_back (16 + kStageBytesV2);
  rbsp.insert (rbsp.end (), kStageUuid, kStageUuid + 16);
  for (double d : {info.stage_x_um, info.stage_y_um, info.stage_z_um, info.um_per_px})
    put_be (rbsp, double_bits (d), 8);
  put_be (rbsp, info.objective, 4);
  put_be (rbsp, info.moving ? 1 : 0, 4);
  put_be (rbsp, info.frame_number, 8);
  put_be (rbsp, (uint32_t)info.frame_width, 4);
  put_be (rbsp, (uint32_t)info.frame_height, 4);
  rbsp.push_back (0x80); // rbsp_trailing_bits
  std::vector<uint8_t> sei = {0, 0, 0, 1, GST_H264_NAL_SEI};
  append_escaped (sei, rbsp);
  return sei;
}

} // namespace

std::vector<Nal>
nal_units (const uint8_t *au, size_t len)
{
  std::vector<Nal> nals;
  GstH264NalUnit nalu;
  guint offset = 0;
  while (offset < len) {
    const GstH264ParserResult r = gst_h264_parser_identify_nalu (parser (), au, offset, len, &nalu);
    if (r == GST_H264_PARSER_BROKEN_DATA) { // a header that does not parse, or an empty NAL: skip it
      offset = nalu.offset + nalu.size;
      continue;
    }
    if (r != GST_H264_PARSER_OK && r != GST_H264_PARSER_NO_NAL_END)
      break;
    size_t end = nalu.offset + nalu.size;
    if (r == GST_H264_PARSER_NO_NAL_END) {
      // The last NAL: a start code that ends the buffer and the zero bytes
      // before it are not part of it (the parser only recognises a start
      // code with a byte after it, and trims zeros only before one).
      if (end >= nalu.offset + 3 && au[end - 3] == 0 && au[end - 2] == 0 && au[end - 1] == 1)
        end -= 3;
      while (end > nalu.offset && au[end - 1] == 0)
        end--;
    }
    // A NAL shorter than its own header (the parser reads an extension
    // header past the NAL's end) or without payload: skipped, as the parser
    // skips such NALs before a start code.
    if (end < nalu.offset + std::max<size_t> (2, nalu.header_bytes)) {
      if (r == GST_H264_PARSER_NO_NAL_END)
        break;
      offset = nalu.offset + nalu.size;
      continue;
    }
    nals.push_back ({nalu.sc_offset, nalu.offset, end, (uint8_t)nalu.type});
    if (r == GST_H264_PARSER_NO_NAL_END)
      break;
    offset = nalu.offset + nalu.size;
  }
  return nals;
}

bool
has_nal (const uint8_t *au, size_t len, uint8_t type)
{
  for (const Nal &n : nal_units (au, len))
    if (n.type == type)
      return true;
  return false;
}

std::vector<uint8_t>
with_frame_record (const uint8_t *au, size_t len, const hw::FrameRecord &info)
{
  const std::vector<uint8_t> sei = sei_nal (info);
  size_t at = len;
  for (const Nal &n : nal_units (au, len))
    if (n.type == kSlice || n.type == kIdr) {
      at = n.start;
      break;
    }
  std::vector<uint8_t> out;
  out.reserve (len + sei.size ());
  out.insert (out.end (), au, au + at);
  out.insert (out.end (), sei.begin (), sei.end ());
  out.insert (out.end (), au + at, au + len);
  return out;
}

std::vector<uint8_t>
with_capture_time (const uint8_t *au, size_t len, int64_t capture_unix_us)
{
  hw::FrameRecord info;
  info.capture_unix_us = capture_unix_us;
  return with_frame_record (au, len, info);
}

std::optional<hw::FrameRecord>
frame_record (const uint8_t *au, size_t len)
{
  hw::FrameRecord info;
  bool have_capture = false;
  GstH264NalUnit nalu;
  for (const Nal &n : nal_units (au, len)) {
    if (n.type != kSei)
      continue;
    std::memset (&nalu, 0, sizeof nalu);
    if (gst_h264_parser_identify_nalu_unchecked (parser (), au, (guint)n.start, n.end, &nalu)
        != GST_H264_PARSER_OK)
      continue;
    nalu.size = (guint)(n.end - n.payload);
    GArray *messages = nullptr;
    gst_h264_parser_parse_sei (parser (), &nalu, &messages); // the messages before any error
    for (guint k = 0; messages && k < messages->len; k++) {
      const GstH264SEIMessage &m = g_array_index (messages, GstH264SEIMessage, k);
      if (m.payloadType != GST_H264_SEI_USER_DATA_UNREGISTERED)
        continue;
      const GstH264UserDataUnregistered &u = m.payload.user_data_unregistered;
      if (u.size >= kCaptureBytes && !std::memcmp (u.uuid, kCaptureUuid, 16)) {
        info.capture_unix_us = (int64_t)get_be (u.data, 8);
        have_capture = true;
      } else if (u.size >= kStageBytes && !std::memcmp (u.uuid, kStageUuid, 16)) {
        info.stage_x_um = bits_double (get_be (u.data, 8));
        info.stage_y_um = bits_double (get_be (u.data + 8, 8));
        info.stage_z_um = bits_double (get_be (u.data + 16, 8));
        info.um_per_px = bits_double (get_be (u.data + 24, 8));
        info.objective = (int)(uint32_t)get_be (u.data + 32, 4);
        info.moving = get_be (u.data + 36, 4) & 1;
        if (u.size >= kStageBytesV2) {
          info.frame_number = get_be (u.data + 40, 8);
          info.frame_width = (int)(uint32_t)get_be (u.data + 48, 4);
          info.frame_height = (int)(uint32_t)get_be (u.data + 52, 4);
        }
      }
    }
    if (messages)
      g_array_unref (messages);
  }
  if (!have_capture)
    return std::nullopt;
  return info;
}

std::optional<int64_t>
capture_time (const uint8_t *au, size_t len)
{
  auto info = frame_record (au, len);
  if (!info)
    return std::nullopt;
  return info->capture_unix_us;
}

std::vector<uint8_t>
parameter_sets (const uint8_t *au, size_t len)
{
  std::vector<uint8_t> out;
  for (const Nal &n : nal_units (au, len))
    if (n.type == kSps || n.type == kPps) {
      static const uint8_t sc[4] = {0, 0, 0, 1};
      out.insert (out.end (), sc, sc + 4);
      out.insert (out.end (), au + n.payload, au + n.end);
    }
  return out;
}

std::vector<uint8_t>
with_parameter_sets (const uint8_t *au, size_t len, const std::vector<uint8_t> &parameter_sets)
{
  size_t at = 0;
  std::vector<Nal> nals = nal_units (au, len);
  if (!nals.empty () && nals[0].type == kAud)
    at = nals.size () > 1 ? nals[1].start : len;
  std::vector<uint8_t> out (au, au + at);
  out.insert (out.end (), parameter_sets.begin (), parameter_sets.end ());
  out.insert (out.end (), au + at, au + len);
  return out;
}

} // namespace livemicro::orchestrator::h264
