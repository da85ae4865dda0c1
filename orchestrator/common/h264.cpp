#include "h264.h"

#include <cstring>

namespace livemicro::orchestrator::h264 {

namespace {

// 16-byte UUID identifying LiveMicro's capture-time SEI payload.
const uint8_t kCaptureUuid[16] = {0x6c, 0x69, 0x76, 0x65, 0x6d, 0x69, 0x63, 0x72,
    0x6f, 0x2d, 0x63, 0x61, 0x70, 0x74, 0x2e, 0x31};  // "livemicro-capt.1"
const uint8_t kStageUuid[16] = {0x6c, 0x69, 0x76, 0x65, 0x6d, 0x69, 0x63, 0x72,
    0x6f, 0x2d, 0x73, 0x74, 0x61, 0x67, 0x2e, 0x31};  // "livemicro-stag.1"

// RBSP → EBSP: insert 0x03 after two zeros when the next byte is <= 3.
void
append_escaped (std::vector<uint8_t> &out, const uint8_t *p, size_t n)
{
  int zeros = 0;
  for (size_t i = 0; i < n; i++) {
    if (zeros == 2 && p[i] <= 3) {
      out.push_back (0x03);
      zeros = 0;
    }
    out.push_back (p[i]);
    zeros = p[i] == 0 ? zeros + 1 : 0;
  }
}

std::vector<uint8_t>
unescape (const uint8_t *p, size_t n)
{
  std::vector<uint8_t> out;
  out.reserve (n);
  int zeros = 0;
  for (size_t i = 0; i < n; i++) {
    if (zeros == 2 && p[i] == 0x03) {
      zeros = 0;
      continue;
    }
    out.push_back (p[i]);
    zeros = p[i] == 0 ? zeros + 1 : 0;
  }
  return out;
}

}  // namespace

std::vector<Nal>
nal_units (const uint8_t *au, size_t len)
{
  std::vector<Nal> nals;
  size_t i = 0;
  while (i + 3 <= len) {
    size_t sc_len = 0;
    if (au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1)
      sc_len = 3;
    else if (i + 4 <= len && au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 0 && au[i + 3] == 1)
      sc_len = 4;
    if (!sc_len) {
      i++;
      continue;
    }
    if (!nals.empty ())
      nals.back ().end = i;
    Nal n;
    n.start = i;
    n.payload = i + sc_len;
    n.type = n.payload < len ? (au[n.payload] & 0x1f) : 0;
    nals.push_back (n);
    i += sc_len;
  }
  if (!nals.empty ())
    nals.back ().end = len;
  // Trailing zero bytes belong to the next start code, not the NAL.
  for (auto &n : nals)
    while (n.end > n.payload + 1 && au[n.end - 1] == 0)
      n.end--;
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

namespace {

void
put_be (std::vector<uint8_t> &out, uint64_t v, int bytes)
{
  for (int k = bytes - 1; k >= 0; k--)
    out.push_back ((uint8_t) (v >> (8 * k)));
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

}  // namespace

std::vector<uint8_t>
with_frame_info (const uint8_t *au, size_t len, const FrameInfo &info)
{
  std::vector<uint8_t> rbsp;
  // sei_message 1: payloadType 5 (user data unregistered), 24 bytes.
  rbsp.push_back (5);
  rbsp.push_back (24);
  rbsp.insert (rbsp.end (), kCaptureUuid, kCaptureUuid + 16);
  put_be (rbsp, (uint64_t) info.capture_unix_us, 8);
  // sei_message 2: 16 + 4·8 + 4 + 4 = 56 bytes.
  rbsp.push_back (5);
  rbsp.push_back (56);
  rbsp.insert (rbsp.end (), kStageUuid, kStageUuid + 16);
  for (double d : {info.stage_x_um, info.stage_y_um, info.stage_z_um, info.um_per_px})
    put_be (rbsp, double_bits (d), 8);
  put_be (rbsp, info.objective, 4);
  put_be (rbsp, info.moving ? 1 : 0, 4);
  rbsp.push_back (0x80);  // rbsp_trailing_bits
  std::vector<uint8_t> sei = {0, 0, 0, 1, 0x06};
  append_escaped (sei, rbsp.data (), rbsp.size ());

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
  FrameInfo info;
  info.capture_unix_us = capture_unix_us;
  return with_frame_info (au, len, info);
}

std::optional<FrameInfo>
frame_info (const uint8_t *au, size_t len)
{
  FrameInfo info;
  bool have_capture = false;
  for (const Nal &n : nal_units (au, len)) {
    if (n.type != kSei)
      continue;
    std::vector<uint8_t> rbsp = unescape (au + n.payload + 1, n.end - n.payload - 1);
    size_t i = 0;
    while (i + 2 <= rbsp.size () && rbsp[i] != 0x80) {
      uint32_t type = 0, size = 0;
      while (i < rbsp.size () && rbsp[i] == 0xff)
        type += 255, i++;
      if (i >= rbsp.size ())
        break;
      type += rbsp[i++];
      while (i < rbsp.size () && rbsp[i] == 0xff)
        size += 255, i++;
      if (i >= rbsp.size ())
        break;
      size += rbsp[i++];
      if (i + size > rbsp.size ())
        break;
      const uint8_t *p = &rbsp[i];
      if (type == 5 && size >= 24 && !std::memcmp (p, kCaptureUuid, 16)) {
        info.capture_unix_us = (int64_t) get_be (p + 16, 8);
        have_capture = true;
      } else if (type == 5 && size >= 56 && !std::memcmp (p, kStageUuid, 16)) {
        info.stage_x_um = bits_double (get_be (p + 16, 8));
        info.stage_y_um = bits_double (get_be (p + 24, 8));
        info.stage_z_um = bits_double (get_be (p + 32, 8));
        info.um_per_px = bits_double (get_be (p + 40, 8));
        info.objective = (uint32_t) get_be (p + 48, 4);
        info.moving = get_be (p + 52, 4) & 1;
      }
      i += size;
    }
  }
  if (!have_capture)
    return std::nullopt;
  return info;
}

std::optional<int64_t>
capture_time (const uint8_t *au, size_t len)
{
  auto info = frame_info (au, len);
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

}  // namespace livemicro::orchestrator::h264
