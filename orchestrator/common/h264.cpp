#include "h264.h"

#include <cstring>

namespace livemicro::orchestrator::h264 {

namespace {

// 16-byte UUID identifying LiveMicro's capture-time SEI payload.
const uint8_t kCaptureUuid[16] = {0x6c, 0x69, 0x76, 0x65, 0x6d, 0x69, 0x63, 0x72,
    0x6f, 0x2d, 0x63, 0x61, 0x70, 0x74, 0x2e, 0x31};  // "livemicro-capt.1"

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

std::vector<uint8_t>
with_capture_time (const uint8_t *au, size_t len, int64_t capture_unix_us)
{
  // sei_message: payloadType 5, payloadSize 24, UUID, 8-byte big-endian time.
  uint8_t rbsp[2 + 16 + 8 + 1];
  rbsp[0] = 5;
  rbsp[1] = 24;
  std::memcpy (rbsp + 2, kCaptureUuid, 16);
  for (int k = 0; k < 8; k++)
    rbsp[18 + k] = (uint8_t) ((uint64_t) capture_unix_us >> (56 - 8 * k));
  rbsp[26] = 0x80;  // rbsp_trailing_bits
  std::vector<uint8_t> sei = {0, 0, 0, 1, 0x06};
  append_escaped (sei, rbsp, sizeof rbsp);

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

std::optional<int64_t>
capture_time (const uint8_t *au, size_t len)
{
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
      if (type == 5 && size >= 24 && !std::memcmp (&rbsp[i], kCaptureUuid, 16)) {
        uint64_t v = 0;
        for (int k = 0; k < 8; k++)
          v = (v << 8) | rbsp[i + 16 + k];
        return (int64_t) v;
      }
      i += size;
    }
  }
  return std::nullopt;
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

}  // namespace livemicro::orchestrator::h264
